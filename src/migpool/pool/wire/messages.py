"""The messages between the pool and a worker, parent to worker and back. Each travels pickled in one frame
(protocol.py) or, to a Ray actor, in a batch. A value (arguments, a result, a stream's item, a shared value)
travels as `pickle` bytes, or as a segments.Packed whose large buffers lie in shared memory."""

from __future__ import annotations

from typing import Any, NamedTuple

ONE_TASK_ENV = "MIGPOOL_ONE_TASK"  # in a worker's environment for Worker(reuse_processes=False): one task, then exit
THREADS_ENV = "MIGPOOL_THREADS"  # in a worker's environment: tasks it runs at once, in threads (the thread executor)


# --- parent to worker ---
class DefineFunction(NamedTuple):
    """The pickled function that later RunTask messages name by `fid`."""

    fid: int
    data: bytes


class RunTask(NamedTuple):
    tid: int
    fid: int
    payload: Any  # the packed (args, kwargs)
    streams: int  # STREAM_OUT: a generator, its items come back as Yielded; STREAM_IN: it reads an iterator;
    # CHECKPOINTS: a generator whose items are checkpoints (task.Checkpoint), its return value the result
    resume: bytes | None = None  # CHECKPOINTS: the pickled state to resume from (the task's `resume=`), or None


STREAM_OUT, STREAM_IN, CHECKPOINTS = 1, 2, 4


class Stop(NamedTuple):
    """Finish the task at hand, then exit."""


class StoreValue(NamedTuple):
    """A value that `put` stored, which tasks name through a Ref: kept by the worker until ForgetValue."""

    vid: int
    data: Any


class ForgetValue(NamedTuple):
    vid: int


class Credit(NamedTuple):
    """The consumer of task `tid`'s stream took `n` more items: the worker may send `n` more."""

    tid: int
    n: int


class Cancel(NamedTuple):
    """The consumer of task `tid`'s stream stopped early: close its generator."""

    tid: int


class Feed(NamedTuple):
    """One item of input stream `sid` of task `tid` (FEED_ITEM), its end (FEED_END, data None), or the error that
    the parent's iterator raised (FEED_ERROR, data its pickled exception)."""

    tid: int
    sid: int
    data: Any
    state: int


FEED_ITEM, FEED_END, FEED_ERROR = 0, 1, 2


class Pause(NamedTuple):
    """Stop task `tid` at its next checkpoint and send that checkpoint back (Paused): it resumes elsewhere."""

    tid: int


# --- worker to parent ---
class Ready(NamedTuple):
    pid: int
    executable: str


class TaskDone(NamedTuple):
    tid: int
    result: Any  # packed; for a stream, None once its generator is done


class TaskFailed(NamedTuple):
    tid: int
    exception: bytes | None  # the pickled exception, None where it could not be pickled
    chain: list[Any]  # its traceback chain (tracebacks.capture)
    text: str  # "TypeName: message", for when it cannot be rebuilt


class Yielded(NamedTuple):
    """One item of task `tid`'s stream, packed."""

    tid: int
    item: Any


class Checkpointed(NamedTuple):
    """Task `tid` yielded a checkpoint, `done` of `total` units of its work (each None where it did not say)."""

    tid: int
    done: float | None
    total: float | None


class Paused(NamedTuple):
    """Task `tid` stopped at a checkpoint, as asked (Pause): its pickled state, to resume from."""

    tid: int
    state: bytes


class Want(NamedTuple):
    """Task `tid` may take `n` more items of its input stream `sid`."""

    tid: int
    sid: int
    n: int


class Released(NamedTuple):
    """Both ways: the sender's segments that this side has unmapped, each (segment id, reusable); reusable is
    false where this side forked while it had the segment mapped."""

    items: list[tuple[int, bool]]


class Call(NamedTuple):
    """A task's call on a pool collection (shared.py): `op` on collection `name` of `kind`, from `thread`."""

    cid: int
    kind: str
    name: str
    op: str
    args: tuple[Any, ...]
    thread: int


class Withdraw(NamedTuple):
    """The task stopped waiting for its call `cid` (its timeout passed); an Answer still comes: the value, if the
    call was answered first, else shared_state.TIMED_OUT."""

    cid: int
    thread: int


class Answer(NamedTuple):
    """The parent's answer to Call `cid`: ok and its value, or not ok and a shared_state.Refusal."""

    cid: int
    ok: bool
    value: Any


ToWorker = (
    DefineFunction | RunTask | Stop | StoreValue | ForgetValue | Credit | Cancel | Feed | Pause | Released | Answer
)
FromWorker = Ready | TaskDone | TaskFailed | Paused | Yielded | Checkpointed | Want | Released | Call | Withdraw
