"""The parent side of the workers: the queue, job packing, one slot per worker, owned threads.

How one task flows (caller's thread on the left; each slot's own threads on the right):

    task >> compute
        |  Scheduler.submit (core.py): function numbered once (jobs.Functions), arguments packed
        v  (wire/segments: bytes, or a memfd segment), iterator arguments made streams
    Scheduler.pending (a deque, in order)
        |  Scheduler.pump: the least-loaded slot that serves the job (jobs.serves) and has room
        v  (slot.Slot.capacity: the one gate for every kind of slot: ready, not dead, not draining,
    slot.Slot.take                       one task at a time under dynamic MIG or behind a stream)
        |
        +--> process_slot.ProcessSlot: writer thread --frames--> worker process (pool/worker/main.py)
        |                              reader thread <--frames-- TaskDone / TaskFailed / Yielded / Call
        |                              (a pidfd says when the process exits: jobs retried or failed,
        |                               the spawning thread (threads.Spawner) starts its successor)
        +--> raypool/slot.RaySlot: batches to a Ray actor, results fetched from Ray's object store
        v
    Job.future (concurrent.futures.Future) ended once: result, exception, WorkerLostError, timeout
"""
