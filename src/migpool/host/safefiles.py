"""Files that root may open safely in a directory other users can reach: directories checked before use, files
opened without following symbolic links, and writes that replace a file whole (a reader never sees half of one).

migpool's machine-wide state (statedirs.py) is written by root (the boot service, `sudo migpool apply`) and,
where an administrator allows it, by the members of a `migpool` group. A directory that someone else owns, that
everyone may write, or a symbolic link planted where a lock or the journal should be, could let another user
redirect root's writes; each is refused with one line that says what was found and what to do."""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import NoPermissionError, UnsafeFileError

GROUP = "migpool"  # members of this group may use the machine-wide state (see the README: Security)


def _grant(path: Path) -> str:
    return (
        f"an administrator grants it with `groupadd -f {GROUP}; install -d -m 2775 -g {GROUP} {path}; "
        f"usermod -aG {GROUP} USER` (README: Where migpool keeps state)"
    )


def _group_id() -> int | None:
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        return None


def checked_dir(path: Path, purpose: str, create: bool = True) -> Path:
    """`path` as a directory fit for `purpose`: made if missing (mode 2775 and group `migpool` when that group
    exists, else 0755), a real directory (no symbolic link), owned by root or by this user, not writable by
    everyone, and writable by this process. Raises UnsafeFileError or NoPermissionError with one line."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise
        _make(path, purpose)
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFileError(
            f"{path} ({purpose}) is a symbolic link; migpool refuses it, since it could redirect what root writes. "
            "Remove the link and let migpool create the directory"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeFileError(f"{path} ({purpose}) is not a directory; remove it or set another directory")
    me = os.geteuid()
    if st.st_uid not in (0, me):
        raise UnsafeFileError(
            f"{path} ({purpose}) belongs to user id {st.st_uid}, neither root nor you; migpool refuses a "
            "directory another user controls. Have root own it (chown root)"
        )
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise UnsafeFileError(
            f"{path} ({purpose}) is writable by every user (mode {stat.S_IMODE(st.st_mode):o}); migpool refuses "
            f"it. Make it mode 2775 with group {GROUP} (chmod o-w)"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise NoPermissionError(
            f"cannot write {path} ({purpose}): it needs write permission for you (user id {me}); run as root, "
            f"or {_grant(path)}"
        )
    return path


def _make(path: Path, purpose: str) -> None:
    gid = _group_id()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o755)
    except FileExistsError:
        return  # another process made it at the same moment: checked by the caller
    except PermissionError:
        raise NoPermissionError(
            f"cannot create {path} ({purpose}): its parent {path.parent} needs write permission for you "
            f"(user id {os.geteuid()}); run as root once, or {_grant(path)}"
        ) from None
    if gid is not None and os.geteuid() == 0:
        os.chown(path, 0, gid)
        os.chmod(path, 0o2775)
    else:
        os.chmod(path, 0o755 if os.geteuid() == 0 else 0o700)


def open_nofollow(path: Path, flags: int, mode: int = 0o664) -> int:
    """os.open without following a symbolic link at `path`, and only of a regular file; the descriptor is not
    inherited by child processes."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeFileError(
                f"{path} is a symbolic link; migpool refuses to open it, since it could redirect what root "
                "writes. Remove the link (migpool creates the file)"
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeFileError(f"{path} is not a regular file; remove it (migpool creates the file)")
    return fd


def read_text(path: Path) -> str:
    """The file's text, read without following a symbolic link (FileNotFoundError when it is missing)."""
    fd = open_nofollow(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    return data.decode("utf-8")


def atomic_write(path: Path, text: str, mode: int = 0o644, sync: bool = True) -> None:
    """Replace `path` whole: the text goes to a new file of a random name beside it (created exclusively, so
    never through a planted link), is synced, then renamed over it, and the directory is synced; a crash leaves
    the old file or the new one, never a part. `sync=False` skips the syncs (a cache, the simulator's state)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        with _dir_fd(path.parent) as d:
            os.fsync(d)


@contextlib.contextmanager
def _dir_fd(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)
