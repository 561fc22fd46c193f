"""Dynamic MIG's policy under random mixes of arrivals, sizes and ends (hypothesis), driven as plain data: the pure
policy over simulated A100-80GBs, its effects carried out at once, no worker process. After every step: no
partition in use was destroyed or changed; once the policy has settled, no task waits where destroying idle
partitions would make room for its size, and the policy counted no such wait (`placement_blocked`)."""

import itertools
import types
from concurrent.futures import Future

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migpool.mig.catalog import lookup
from migpool.mig.planner import max_addable
from migpool.pool.dynamic.policy import DynamicPolicy
from migpool.pool.dynamic.view import PoolState, WorkerState

A100 = lookup("A100-80GB")
SIZES = ["1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]
GPUS = [(0, 0), (0, 1)]


class Effects:
    """The policy's effects carried out at once on the plain pool: a partition exists as soon as it is asked for."""

    def __init__(self, pool: PoolState) -> None:
        self.pool = pool

    def make(self, gpu, inst):
        done: Future = Future()
        p = inst.profile
        done.set_result([types.SimpleNamespace(profile=p.name, memory_mib=p.memory_mib, node=gpu[0], gpu_index=gpu[1])])
        return done

    def unmake(self, gpu, instances, pids):
        pass

    def start_worker(self, part):
        w = WorkerState(partition=part, node=part.node)
        self.pool.workers.append(w)
        return w

    def retire(self, worker):
        assert not worker.outstanding, "a worker running a task was retired"
        self.pool.workers.remove(worker)

    def drain(self, workers, on=True):
        for w in workers:
            w.draining = on

    def pause(self, worker, job):
        pass

    def fail(self, failed):
        raise AssertionError(f"a task was failed: {failed}")

    def pump(self):
        pass


def _job(k: int, profile: str):
    task = types.SimpleNamespace(partition=profile, need_mib=None, checkpoint=False, node=None, fn=None)
    return types.SimpleNamespace(id=k, task=task, fid=0, started=0.0, pausing=False, moves=0, progress=None)


def _pump(pool: PoolState, now: float) -> None:
    """As the scheduler does: each waiting task, oldest first, on an idle worker of its profile."""
    for j in list(pool.pending):
        w = next(
            (
                w
                for w in pool.workers
                if not w.outstanding and not w.draining and w.partition.profile == j.task.partition
            ),
            None,
        )
        if w is not None:
            pool.pending.remove(j)
            j.started = now
            w.outstanding.append(j)


def _busy(policy: DynamicPolicy) -> dict[int, tuple]:
    return {id(s.worker): (s.gpu, s.instance) for s in policy.held.slots if s.worker.outstanding}


def _room_by_repacking(policy: DynamicPolicy, job) -> list:
    """The GPUs where `job`'s size fits once their idle partitions (none draining, none an earlier task takes)
    are destroyed, counted here from the planner alone; a GPU reserved for another task is left out."""
    held, reserved = policy.held, policy.reservations.reserved
    found = []
    for gpu in held.gpus:
        if reserved and reserved[0] == gpu and reserved[2] != job.id:
            continue
        kept = [
            s.instance
            for s in held.slots
            if s.gpu == gpu and (s.worker.outstanding or s.worker.draining or id(s.worker) in policy.promised)
        ]
        kept += [m.instance for m in held.making if m.gpu == gpu] + held.foreign[gpu] + held.stale.get(gpu, [])
        if max_addable(A100, A100.profile(job.task.partition), kept) >= 1:
            found.append(gpu)
    return found


events = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.sampled_from(SIZES)),
        st.tuples(st.just("end"), st.integers(0, 15)),
        st.tuples(st.just("wait"), st.floats(1.0, 40.0)),
    ),
    min_size=1,
    max_size=24,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_no_partition_in_use_is_touched_and_no_task_waits_where_repacking_would_hold_it(script):
    clock = [0.0]
    pool = PoolState(rule=lambda task, node, profile, mem: task.partition == profile, clock=lambda: clock[0])
    policy = DynamicPolicy([(g, A100, []) for g in GPUS], pool, Effects(pool), keep_idle=30.0)
    ids = itertools.count()
    for what, arg in script:
        if what == "arrive":
            job = _job(next(ids), arg)
            policy.admit(job.task)
            pool.pending.append(job)
        elif what == "end":
            running = [w for w in pool.workers if w.outstanding]
            if running:
                w = running[arg % len(running)]
                job = w.outstanding.pop()
                policy.finished(job, w, clock[0] - job.started)
        else:
            clock[0] += arg
        for _ in range(20):  # the policy steps until it has nothing more to do
            _pump(pool, clock[0])
            busy, changed = _busy(policy), policy.held.changed
            policy.step()
            now = {id(s.worker): (s.gpu, s.instance) for s in policy.held.slots}
            for w, (gpu, inst) in busy.items():
                assert w in now and now[w][0] == gpu and now[w][1] is inst, "a partition in use was destroyed"
            if policy.held.changed == changed and not policy.held.making:
                break
        _pump(pool, clock[0])
        policy.promised = {}  # what the last step promised was handed out by the pump above
        for job in pool.pending:
            assert not _room_by_repacking(policy, job), f"{job.task.partition} waits where repacking makes room"
        assert policy.placement_blocked == 0
