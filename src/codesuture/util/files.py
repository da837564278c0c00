"""Files, read and written safely.

Reading (:func:`read_regular`): files are opened ``O_NOFOLLOW | O_NONBLOCK`` (opening a
FIFO cannot block), and a byte is read only when ``fstat`` on that very descriptor says
regular file and its size is under the cap (it must stay under it while reading). A
symlink is followed only when its resolved target is a regular file inside the given
root. So no file in a hostile store can hang or exhaust the reader.

Writing (:func:`atomic_write`): a temporary file in the same directory, ``fsync``, then
``os.replace``: readers see the old or the new file, never a torn one. Temporary files
are named ``.<name>.<pid>.<random>.tmp``; :func:`remove_stale_temps` deletes those a
killed writer left behind.

Locking (:func:`locked`): ``fcntl.flock`` on a lock file, across processes. Lock and
temporary files are opened ``O_NOFOLLOW`` (temporary files also ``O_EXCL``): a link
planted in a store is never followed for writing.

Only the standard library and :mod:`codesuture.errors` are imported.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from codesuture.errors import FileError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Iterator

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: A temporary file: created new, never through a symlink.
_WRITE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: A lock file: created if missing, never through a symlink, never blocking on a FIFO.
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
TEMP_SUFFIX = ".tmp"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def inside(path: str, root: str) -> bool:
    """True when resolved *path* is *root* or below it (both already resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_regular(path: str | os.PathLike[str], limit: int, *, root: str | None = None,
                 dir_fd: int | None = None, dir_path: str | None = None) -> bytes | None:
    """The bytes of the regular file *path* (at most *limit* bytes), or None when it
    does not exist.

    *root*: a resolved directory (``os.path.realpath``); when given, a symlink is
    accepted only if its target resolves to a regular file inside *root*; without
    it, symlinks to regular files are followed as usual. *dir_fd*: an open directory
    that a relative *path* is opened in (no path walk per file), whose path is
    *dir_path* (for symlinks and messages).

    The file is opened ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO cannot block the open), its
    type checked with ``fstat`` on that descriptor before a byte is read, and its size
    before and while reading. Raises :class:`~codesuture.errors.FileError` naming
    *path* when it is not a regular file (``is a FIFO``, ``is a device``, ...), a
    symlink leaving *root* or to something else than a regular file, larger than
    *limit* bytes, or unreadable.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, _OPEN_FLAGS | _NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        p = os.path.join(dir_path, name) if dir_path is not None else name
        if exc.errno != errno.ELOOP:
            raise FileError(p, f"unreadable: {exc.strerror or exc}") from None
        found = _open_symlink(p, root)
        if found is None:
            return None
        fd = found
    p = name  # replaced by the full path in messages (below)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileError(p, f"is {_kind(st.st_mode)}, not a regular file")
        size = st.st_size
        if size > limit:
            raise FileError(p, f"oversized ({size} bytes > {limit})")
        # One read of what fstat reported plus one byte to notice growth; never ask for
        # the cap at once (os.read(fd, n) allocates n bytes, and caps are megabytes).
        data = os.read(fd, size + 1)
        while size < len(data) <= limit:
            more = os.read(fd, min(1 << 16, limit + 1 - len(data)))
            if not more:
                break
            data += more
    except FileError as exc:
        raise FileError(os.path.join(dir_path, name) if dir_path is not None else name, exc.reason) from None
    except BlockingIOError:
        raise FileError(os.path.join(dir_path, name) if dir_path else name, "would block (not a regular file)") from None
    except OSError as exc:
        raise FileError(os.path.join(dir_path, name) if dir_path else name, f"unreadable: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileError(os.path.join(dir_path, name) if dir_path else name, f"oversized (> {limit} bytes)")
    return data


def _open_symlink(p: str, root: str | None) -> int | None:
    """Open the target of symlink *p* when it is a regular file (inside *root* when
    given); None when the target does not exist. Raises FileError."""
    real = os.path.realpath(p)
    if root is not None and not inside(real, root):
        raise FileError(p, "is a symlink pointing outside its store")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileError(p, f"unreadable: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileError(p, f"is a symlink to {_kind(st.st_mode).replace('not a regular file', 'something other than a regular file')}")
    try:
        fd = os.open(real, _OPEN_FLAGS | _NOFOLLOW)
    except OSError as exc:
        raise FileError(p, f"unreadable: {exc.strerror or exc}") from None
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise FileError(p, "changed while being opened (not the regular file that was checked)")
    return fd


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> str:
    """Write *data* to *path* through a temporary file in the same directory, ``fsync``
    and ``os.replace``; returns the path. Creates missing parent directories. Raises
    ``OSError`` (the temporary file is removed)."""
    import secrets

    p = os.fspath(path)
    directory, name = os.path.split(p)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    # O_EXCL: a new file or nothing (a planted name, even a dangling symlink, fails);
    # O_NOFOLLOW as well, for systems where O_EXCL alone would follow a final symlink.
    fd = os.open(tmp, _WRITE_NEW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)  # the descriptor: never a file swapped in under the name
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return p


def remove_stale_temps(directory: str | os.PathLike[str], name: str) -> int:
    """Delete the temporary files :func:`atomic_write` left for *name* in *directory*
    (a writer killed mid-write). Call it only while holding the lock that every
    writer of *name* holds, so no live writer's file is removed. Returns how many."""
    d = os.fspath(directory)
    prefix = f".{name}."
    n = 0
    try:
        names = os.listdir(d)
    except OSError:
        return 0
    for entry in names:
        rest = entry[len(prefix):].split(".") if entry.startswith(prefix) else ()
        if len(rest) == 3 and rest[0].isdigit() and rest[2] == TEMP_SUFFIX[1:]:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(d, entry))
                n += 1
    return n


@contextlib.contextmanager
def locked(lock_path: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on *lock_path* (created if missing) for the block.
    Yields True; with ``blocking=False`` yields False at once when another process
    holds it. The lock file is opened ``O_NOFOLLOW | O_NONBLOCK`` and must be a
    regular file: a symlink planted under its name is never followed (nothing is
    created where it points). Raises ``OSError`` when the lock file cannot be created
    or opened, is a symlink (``ELOOP``) or is not a regular file."""
    import fcntl

    p = os.fspath(lock_path)
    directory = os.path.dirname(p)
    if directory:
        os.makedirs(directory, exist_ok=True)
    try:
        fd = os.open(p, _LOCK_FLAGS, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "lock file is a symlink (never followed)", p) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"lock file is {_kind(st.st_mode)}", p)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
