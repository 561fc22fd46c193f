"""Dynamic MIG: the site that owns partitions, sizes learned from run times, the policy and its controller.

How a decision flows (the controller's thread runs one step when work waits, a worker goes idle or a create
ends, and every 0.1 s; the scheduler's threads call rank/hold/finished/progress/paused in between):

    Scheduler (queue, workers)          controller.DynamicMig thread
            |  read, under its lock             |  policy.step()
            v                                   v
    controller.SchedulerView ---------> policy.DynamicPolicy (the core: held partitions, a step)
      (view.PoolView: pending jobs,       | asks its parts: placement.Placement, costs.Costs (rule 6),
       workers, clock, serving rule)      | reservations.Reservations (rule 4), resizing.Resizing,
                                          | moves.Moves (rule 7)
                                          v  decisions: make / destroy / drain / pause / fail / pump
                                   effects.Effects
                                          |
                                          v
    controller.SiteEffects --+--> site.Site.change (reconcile.change on a change thread per node), start_worker
                             +--> Scheduler: worker.draining, worker.pause, retire, pending jobs failed, pump

Tests build view.PoolState and view.WorkerState from plain data, and record the effects.
"""
