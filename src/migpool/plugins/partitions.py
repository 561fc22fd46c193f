"""Plugins that give each worker its devices: `mig` (MIG partitions, fixed or dynamic) and `gpus` (whole GPUs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LayoutError, LeasedError, PluginError
from ..host.leases import LeaseKey, Leases, lease_env
from ..mig.catalog import profiles_holding, warn_if_estimated
from ..mig.layout import GpuLayout, Layout, MachineLayout, choose_profile, parse_memory_mib
from ..mig.planner import max_addable, max_devices
from ..pool.api.info import Partition
from ..pool.api.providers import DynamicMigOptions, Node, WorkerSpec
from ..pool.dynamic.remembered import default_path
from .base import Plugin
from .sharing import Made, ShortageError

if TYPE_CHECKING:
    from .sharing import GpuRoom


class mig(Plugin):  # noqa: N801 - named like the reference document's `plugins.mig`
    """Partition the node's GPUs with MIG and pin one worker to each partition.

    mig(profile="3g.40gb")                      one partition of this profile per worker (Worker(concurrency=N):
                                                N of them; left out: 1, as in the reference)
    mig(profile="1g.10gb", count="all")         as many of this profile as the GPUs hold (count=N: N of them)
    mig(layout={"3g.40gb": 1, "1g.10gb": 4})    mixed partitions; route tasks with task.on("1g.10gb")
    mig(partitions=4, min_memory="16GB")        the largest profile giving 4 partitions of >= 16GB
    mig(dynamic=True, keep_idle=30.0)           partitions made on demand for each task's profile (pool/policy.py)
      remember=True                             start from the run times earlier pools learned, and keep this one's
                                                (False: start from nothing, keep nothing; or a file's path)
    gpus=0 | [0, 1] | "all"                     which GPUs to partition (default: GPU 0)
    exclusive=True                              the whole GPUs are the pool's: their layout becomes the pool's,
                                                idle partitions of other profiles destroyed (default: reuse idle
                                                partitions of the profiles wanted, make the rest beside what is
                                                there, and leave every other partition as it is; sharing.py)
    restore=True                                return the GPUs to their prior state when the pool closes (not
                                                exclusive: remove the partitions the pool made)
    force=True                                  stop processes on partitions that must be destroyed (exclusive)
    progress=print                              called with each operation that changes a GPU, as it is done
    wait=60.0                                   wait up to 60 s for partitions another pool leases (or, not
                                                exclusive, for room; default: refuse at once, naming the holder)

    The pool leases each partition it uses (leases.py) until it closes: no other pool, `migpool run` or
    `migpool apply` destroys or uses it meanwhile. One mig() object serves one open pool at a time.
    """

    needs_mig = True
    needs_processes = True

    def __init__(
        self,
        profile: str | None = None,
        *,
        count: int | str | None = None,
        layout: Mapping[str, int] | None = None,
        partitions: int | None = None,
        min_memory: str | None = None,
        gpus: int | Sequence[int] | str = 0,
        restore: bool = False,
        force: bool = False,
        dynamic: bool = False,
        keep_idle: float = 30.0,
        remember: bool | str | Path = True,
        wait: float = 0.0,
        exclusive: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        given = [k for k, x in (("profile", profile), ("layout", layout), ("partitions", partitions)) if x is not None]
        if dynamic and given:
            raise PluginError(
                f"mig(dynamic=True) makes partitions for each task's profile: drop {given[0]}= (or drop "
                "dynamic=True for a fixed layout)"
            )
        if not dynamic and len(given) != 1:
            raise PluginError(
                "mig() needs exactly one of profile='3g.40gb', layout={...} or partitions=N, or dynamic=True"
            )
        if count is not None and (
            profile is None or not (count == "all" or (isinstance(count, int) and not isinstance(count, bool)))
        ):
            raise PluginError(
                f"count={count!r}: count goes with profile=, as a number of partitions or 'all' (as many as fit)"
            )
        if isinstance(count, int) and count < 1:
            raise PluginError(f"count must be at least 1, not {count}")
        self.count = count
        if keep_idle < 0:
            raise PluginError(f"keep_idle must be a number of seconds >= 0, not {keep_idle}")
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait >= 0:
            raise PluginError(f"wait must be a number of seconds >= 0, not {wait!r}")
        self.wait = float(wait)
        self.lease = LeaseKey.new()
        if not isinstance(remember, (bool, str, Path)):
            raise PluginError(f"remember= is True, False or a file's path, not {remember!r}")
        self.dynamic = dynamic
        self.keep_idle = keep_idle
        self.remember = remember
        if min_memory is not None:
            if partitions is None:
                raise PluginError("min_memory goes with partitions=N")
            parse_memory_mib(min_memory)
        self.profile = profile
        self.layout = dict(layout) if layout is not None else None
        self.partitions = partitions
        self.min_memory = min_memory
        self.gpus = gpus
        self.restore = restore
        self.force = force
        self.selected: list[int] = []  # the GPUs of its node that it partitions (chosen by validate)
        self.exclusive = exclusive
        self.progress = progress
        self.made = Made()  # not exclusive: the partitions the pool made, and where it turned MIG mode on

    def __repr__(self) -> str:
        what = (
            f"profile={self.profile!r}"
            if self.profile
            else f"layout={self.layout!r}"
            if self.layout
            else f"partitions={self.partitions}, min_memory={self.min_memory!r}"
        )
        return f"mig({what}, gpus={self.gpus!r}{', exclusive=True' if self.exclusive else ''})"

    def _gpu_indices(self, node: Node) -> list[int]:
        gpus = node.backend.gpus()
        if self.gpus == "all":
            chosen = [g.index for g in gpus if g.mig_capable]
        elif isinstance(self.gpus, int):
            chosen = [self.gpus]
        else:
            chosen = list(self.gpus)  # type: ignore[arg-type]
        known = {g.index for g in gpus}
        bad = [i for i in chosen if i not in known]
        if bad or not chosen:
            raise PluginError(
                f"mig(gpus={self.gpus!r}): no such GPU(s) {bad or ''}; this node has GPUs {sorted(known)}"
            )
        return chosen

    def workers(self, node: Node) -> int | None:
        return len(node.partitions) or None

    def validate(self, node: Node) -> None:
        if node.worker is not None and node.worker.executor == "thread":
            raise PluginError(
                "the mig plugin needs Worker(executor='process'): CUDA_VISIBLE_DEVICES selects one MIG "
                "device per process, before CUDA starts, so threads of one process cannot each have their own "
                "partition"
            )
        from ..reconcile.core import check_may_change, plan_apply

        try:
            desired, rooms = self._wants(node)  # concurrency and profile must agree: refuse before anything changes
        except ShortageError:
            if not self.wait or self.exclusive:
                raise
            return  # too few now: bootstrap waits for other holders' partitions to come free
        if self.dynamic:
            from ..backend.base import read_only
            from ..errors import NoPermissionError, NotSupportedError, ReadOnlyError

            if read_only():
                raise ReadOnlyError(
                    "mig(dynamic=True) creates and destroys partitions as tasks need them, but "
                    "MIGPOOL_READ_ONLY is set: unset it, or use a fixed layout made beforehand"
                )
            for i in self.selected:
                if not node.backend.gpu(i).mig_capable:
                    raise NotSupportedError(f"GPU {i} ({node.backend.gpu(i).name}) does not support MIG")
            why = node.backend.permission_problem()
            if why:
                raise NoPermissionError(why)
        # read-only mode, missing permission: refused now, before images are built or workers started
        if rooms is None:
            check_may_change(plan_apply(desired, node.backend, gpus=self.selected, force=self.force), node.backend)
            return
        from .sharing import check_undisturbed, share

        s = share(rooms, desired)
        check_undisturbed(node.backend, s, None, repr(self))
        if s.changes:
            check_may_change(plan_apply(s.desired, node.backend, gpus=s.changes), node.backend)

    def plan(self, node: Node) -> MachineLayout:
        """The partitions the pool takes on each GPU (exclusive: each GPU's whole layout), checked against
        `concurrency` before anything changes."""
        return self._wants(node)[0]

    def _wants(self, node: Node) -> tuple[MachineLayout, list[GpuRoom] | None]:
        """`plan`, and, unless exclusive, each GPU as the pool finds it (sharing.py)."""
        backend = node.backend
        indices = self._gpu_indices(node)
        self.selected = indices
        models = {i: backend.model(i) for i in indices}
        rooms: list[GpuRoom] | None = None
        if not self.exclusive and not self.dynamic:
            from .sharing import look

            rooms = [look(backend, i, self.leases(node)) for i in indices]
        want = node.worker.concurrency if node.worker is not None else None
        entries: list[GpuLayout] = []
        if self.layout is not None:
            total = sum(self.layout.values()) * len(indices)
            if want is not None and want != total:
                raise PluginError(
                    f"concurrency={want} but mig(layout={self.layout}) makes {total} partitions "
                    f"({sum(self.layout.values())} per GPU × {len(indices)} GPU(s)); set concurrency={total}"
                )
            return MachineLayout(tuple(GpuLayout(Layout.of(self.layout), (i,)) for i in indices)), rooms
        if self.dynamic:
            if want is not None:
                raise PluginError(
                    "mig(dynamic=True) starts one worker per partition as tasks need them: leave "
                    "Worker(concurrency=...) out"
                )
            return MachineLayout(()), None
        if self.partitions is not None:
            want = self.partitions if want is None else want
            if want != self.partitions:
                raise PluginError(f"concurrency={want} but mig(partitions={self.partitions}); they must agree")
            profile = self._profile_for(models, want, self.min_memory)
        else:
            assert self.profile is not None  # exactly one of profile, layout and partitions (checked in __init__)
            profile = self.profile
        whole = {i: max_devices(models[i], profile) for i in indices}
        capacity = whole if rooms is None else {r.gpu: r.room(profile) for r in rooms}
        total = sum(capacity.values())
        asked = "concurrency" if want is not None else "count"
        if want is None and self.count is None:
            asked = "Worker(concurrency)"  # one partition, as in the reference, unless concurrency says more
        if want is not None and isinstance(self.count, int) and want != self.count:
            raise PluginError(f"concurrency={want} but mig(count={self.count}); they must agree")
        if want is None:
            want = total if self.count == "all" else self.count if isinstance(self.count, int) else 1
        if want > total or want < 1:
            self._refuse(node, models, profile, asked, want, (capacity, whole))
        if rooms is not None:
            from .sharing import spread

            return spread(rooms, profile, want), rooms
        left = want
        for i in indices:
            k = min(left, capacity[i])
            left -= k
            if k:
                entries.append(GpuLayout(Layout.of({models[i].device(profile).name: k}), (i,)))
        return MachineLayout(tuple(entries)), None

    def _refuse(self, node: Node, models: Any, profile: str, asked: str, want: int, room: tuple[Any, Any]) -> None:
        """Raise ShortageError: `want` partitions of `profile` asked (concurrency= or count=), the GPUs hold fewer
        (`room`: how many each may give the pool, and each would hold emptied)."""
        from .sharing import shortage

        hint = ""
        try:
            hint = f"; mig(profile={self._profile_for(models, want)!r}) gives {want}"
        except LayoutError:
            pass
        said = f"count={self.count!r}" if asked == "count" else f"{asked}={want}"
        raise shortage(node.backend, profile, *room, self.exclusive, (said, hint, asked), want)

    @staticmethod
    def _profile_for(models: Mapping[int, Any], n: int, min_memory: str | None = None) -> str:
        """The largest profile (by memory) holding `min_memory` of which the GPUs together hold n."""
        first = next(iter(models.values()))
        if min_memory:
            for m in models.values():
                warn_if_estimated(m, stacklevel=4)
        best = None
        for p in profiles_holding(first, parse_memory_mib(min_memory) if min_memory else 0.0):
            if sum(max_addable(m, m.profile(p.name)) for m in models.values()) >= n and (
                best is None or (p.memory_mib, p.slices) > (best.memory_mib, best.slices)
            ):
                best = p
        if best is None:
            choose_profile(first, n, min_memory)  # raises the explanatory LayoutError
            raise LayoutError(f"no profile gives {n} partitions")
        return best.name

    def leases(self, node: Node) -> Leases:
        """This pool's leases on `node` (held in the process that runs this plugin's hooks there)."""
        return self.lease.open(node.backend.state_dirs().leases())

    def bootstrap(self, node: Node) -> None:
        from ..reconcile.core import change

        if self.leases(node).held:
            raise PluginError("this mig() object already serves an open pool: make one mig() per pool")
        if self.dynamic:
            for i in self.selected:  # MIG mode on, the prior state journaled; partitions come later
                if not node.backend.gpu(i).mig_current:
                    change(node.backend, i)
            node.partitions = []
            return
        deadline = time.monotonic() + self.wait
        while True:
            try:
                node.partitions = self._claim(node)
                return
            except (LeasedError, ShortageError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.5, max(0.01, deadline - time.monotonic())))

    def _claim(self, node: Node) -> list[Partition]:
        """Make the partitions and lease them, as one step under the GPUs' locks. Exclusive, the layout is the
        whole GPU's, so a partition there that another holder leases is refused before anything changes; else
        idle partitions are reused and the rest made beside what is there (_share)."""
        from ..host.leases import refusal
        from ..reconcile.core import apply, leased, locked

        backend = node.backend
        mine = self.leases(node)
        with locked(backend, [backend.gpu(i) for i in self.selected], 60.0, self.progress):
            desired, rooms = self._wants(node)  # read under the locks
            if rooms is not None:
                from .sharing import claim

                return claim(node, self.selected, desired, rooms, mine, repr(self), self.made, self.progress)
            for i in self.selected:
                g = backend.gpu(i)
                devices = backend.mig_devices(i) if g.mig_current else []
                for u, who in leased(backend, [g.uuid, *(d.uuid for d in devices)], mine).items():
                    raise refusal(u, who, f"{self!r} cannot partition GPU {i}")
            apply(desired, backend, gpus=self.selected, force=self.force, leases=mine, progress=self.progress)
            parts = self._partitions(node, desired)
            for p in parts:
                mine.take(p.uuid)
        return parts

    def _partitions(self, node: Node, desired: MachineLayout) -> list[Partition]:
        parts: list[Partition] = []
        for i in self.selected:
            if desired.for_gpu(i) is not None:
                parts += [Partition.of(d, node.index) for d in node.backend.mig_devices(i)]
        return parts

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        """The partition's device, and its lease's descriptor: the worker holds the lease too, and passes it to
        every program it starts, so the kernel holds it until the last of them is gone (leases.py)."""
        if worker.partition is None:
            return lease_env(None, "")
        uuid = worker.partition.uuid
        return {"CUDA_VISIBLE_DEVICES": uuid, **lease_env(self.lease.fd(uuid), uuid)}

    def worker_started(self, worker: WorkerSpec, pid: int, node: Node) -> None:
        from ..backend.simulated import SimulatedBackend

        b = node.backend
        if isinstance(b, SimulatedBackend) and worker.partition is not None:
            b.register_process(worker.partition.gpu_index, pid, "migpool-worker", worker.partition.uuid, 0)

    def dynamic_mig(self) -> DynamicMigOptions | None:
        if not self.dynamic:
            return None
        return DynamicMigOptions(tuple(self.selected), self.keep_idle, self.run_times_file(), lease=self.lease)

    def run_times_file(self) -> Path | None:
        """Where dynamic MIG keeps learned run times (pool/remembered.py), per `remember=`."""
        if self.remember is False:
            return None
        return default_path() if self.remember is True else Path(self.remember)

    def teardown(self, node: Node) -> None:
        self._end(node, restore=self.restore, remove=self.restore or self.dynamic)

    def rollback(self, node: Node) -> None:
        self._end(node, restore=True, remove=True)

    def _end(self, node: Node, restore: bool, remove: bool, wait_s: float = 30.0) -> None:
        """Remove (and restore) what the pool made, sparing what other holders lease, then end its leases.
        Processes still on its own partitions (its workers, as they exit) are waited for first."""
        from ..host.proc import wait_gone
        from ..reconcile.core import teardown

        mine = self.leases(node)
        try:
            if remove and not self.exclusive and not self.dynamic:
                from .sharing import release

                release(node.backend, self.made, mine, restore, wait_s, self.progress)
            elif remove and self.selected:
                held = set(mine.held)
                backend = node.backend
                wait_gone([p.pid for i in self.selected for p in backend.processes(i) if p.device_uuid in held], wait_s)
                # dynamic partitions are the pool's own: removed at the end (restore=True also restores MIG mode)
                teardown(backend, gpus=self.selected, restore=restore, leases=mine, spare_leased=True)
        finally:
            self.lease.close()
            self.made = Made()


class gpus(Plugin):  # noqa: N801
    """Pin workers to whole GPUs by UUID, without MIG: worker i gets GPU `indices[i % len(indices)]`.

    gpus([0])        every worker on GPU 0 (several workers may share it)
    gpus("all")      workers spread over all GPUs (one per GPU unless Worker(concurrency=...) says otherwise)
    """

    needs_processes = True

    def workers(self, node: Node) -> int | None:
        return len(self._uuids) or None

    def __init__(self, indices: int | Sequence[int] | str = "all") -> None:
        self.indices = indices
        self._uuids: list[str] = []

    def bootstrap(self, node: Node) -> None:
        found = node.backend.gpus()
        if self.indices == "all":
            chosen = found
        else:
            want = [self.indices] if isinstance(self.indices, int) else [int(i) for i in self.indices]
            chosen = [g for i in want for g in found if g.index == i]
            if len(chosen) != len(want):
                raise PluginError(f"gpus({self.indices!r}): this node has GPUs {[g.index for g in found]}")
        if not chosen:
            raise PluginError("gpus(): this node has no GPU")
        self._uuids = [g.uuid for g in chosen]

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        return {"CUDA_VISIBLE_DEVICES": self._uuids[worker.index % len(self._uuids)]}
