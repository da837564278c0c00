"""A folder of overlays.

Indexing is one ``os.scandir``: no file is opened until a module with an overlay is
imported, and at most :data:`MAX_ENTRIES` names are looked at (a store with more is
refused whole). Reads go through :func:`codesuture.util.files.read_regular`: regular
files only (a symlink only when it resolves to a regular file inside the store),
non-blocking, size-capped, and together at most :data:`READ_BUDGET` bytes per store
per process. So a hostile folder costs at most one listing of 4096 names plus 64 MiB
read and hashed, whatever it holds.

Writes (dev mode only) are atomic and serialized per store key with ``flock`` on
``.<key>.lock``; temporary files a killed writer left are removed under that lock.
"""

from __future__ import annotations

import contextlib
import os

from codesuture.errors import FileError, OverlayError
from codesuture.overlay.names import OVERLAY_SUFFIX, SET_NAME, parse_stem, split_member
from codesuture.store import Entry
from codesuture.util import files

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Iterator

#: At most this many directory entries are indexed; a store with more is refused.
MAX_ENTRIES = 4096
#: At most this many bytes are read from one store per process (then reads are refused).
READ_BUDGET = 64 * 1024 * 1024


class DirectoryStore:
    """Overlays in the folder *directory* (which need not exist: an empty store).
    *budget*: bytes this object may read in all (None: no limit, for writers and
    review tools; the loader keeps the default)."""

    kind = "directory"

    def __init__(self, directory: str | os.PathLike[str], *, budget: int | None = READ_BUDGET) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.location = self.directory
        self._root: str | None = None
        self._limited = budget is not None
        self._budget = READ_BUDGET if budget is None else budget
        self._fd: int | None = None
        self.stale_temps: list[str] = []

    def __repr__(self) -> str:
        return f"DirectoryStore({self.directory!r})"

    @property
    def root(self) -> str:
        """The resolved folder (symlinked releases resolve here once)."""
        if self._root is None:
            self._root = os.path.realpath(self.directory)
        return self._root

    def display(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _dir_fd(self) -> int | None:
        """The folder opened once (``O_DIRECTORY``), so each read is one path step;
        None when it cannot be opened (reads then use full paths)."""
        if self._fd is None:
            try:
                self._fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                return None
        return self._fd

    def close(self) -> None:
        """Close the folder's descriptor (reads reopen it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def exists(self) -> bool:
        return os.path.isdir(self.directory)

    def index(self) -> dict[str, list[Entry]]:
        """Store key -> entries of every ``<stem>.overlay`` (sorted by name). A missing
        folder is an empty store. Raises :class:`OverlayError` naming the folder when
        it cannot be listed or holds more than :data:`MAX_ENTRIES` entries."""
        names: list[str] = []
        self.stale_temps = []
        try:
            with os.scandir(self.directory) as it:
                for n, de in enumerate(it):
                    if n >= MAX_ENTRIES:
                        raise OverlayError(self.directory, f"holds more than {MAX_ENTRIES} entries: refusing to index it")
                    if de.name.endswith(files.TEMP_SUFFIX) and de.name.startswith("."):
                        self.stale_temps.append(de.name)
                    elif de.name.endswith(OVERLAY_SUFFIX):
                        names.append(de.name)
        except FileNotFoundError:
            return {}
        except NotADirectoryError:
            raise OverlayError(self.directory, "not a directory") from None
        except OSError as exc:
            raise OverlayError(self.directory, f"cannot list overlay store: {exc.strerror or exc}") from None
        out: dict[str, list[Entry]] = {}
        for fname in sorted(names):
            stem = fname[: -len(OVERLAY_SUFFIX)]
            parsed = parse_stem(stem)
            if parsed:
                out.setdefault(parsed[0], []).append(Entry(self, stem, *parsed))
        return out

    def entries(self) -> Iterator[Entry]:
        for entries in self.index().values():
            yield from entries

    def read(self, name: str, limit: int) -> bytes | None:
        """Bytes of member *name* (None when absent). Raises :class:`OverlayError`
        naming it when it is not a regular file inside the store, over *limit*, or over
        the store's read budget."""
        if "/" in name or os.sep in name or name in ("", ".", ".."):
            raise OverlayError(self.display(name), "not a member name")
        if self._limited and self._budget <= 0:
            raise OverlayError(self.display(name), f"store read budget exhausted ({READ_BUDGET} bytes per process)")
        try:
            cap = min(limit, self._budget) if self._limited else limit
            fd = self._dir_fd()
            if fd is None:
                data = files.read_regular(os.path.join(self.directory, name), cap, root=self.root)
            else:
                data = files.read_regular(name, cap, root=self.root, dir_fd=fd, dir_path=self.directory)
        except FileError as exc:
            if self._limited and exc.reason.startswith("oversized") and self._budget < limit:
                raise OverlayError(exc.path, f"store read budget exhausted ({READ_BUDGET} bytes per process)") from None
            raise OverlayError(exc.path, exc.reason) from None
        if data is not None and self._limited:
            self._budget -= len(data)
        return data

    def has_set(self) -> bool:
        """True when the folder holds a signed overlay set file (of any kind)."""
        return os.path.lexists(os.path.join(self.directory, SET_NAME))

    # ------------------------------------------------------------------ writing (dev)

    def lock_path(self, key: str) -> str:
        return os.path.join(self.directory, f".{key}.lock")

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Serialize read-modify-write of store key *key* across processes; removes
        the temporary files killed writers of this key left. Raises ``OSError``."""
        os.makedirs(self.directory, exist_ok=True)
        with files.locked(self.lock_path(key)):
            self._remove_temps(key)
            yield

    def _remove_temps(self, key: str) -> None:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for n in names:
            if n.startswith(f".{key}.") and n.endswith(files.TEMP_SUFFIX):
                member = n[1:].rsplit(".", 3)[0]
                split = split_member(member)
                if split is not None and parse_stem(split[0]) and parse_stem(split[0])[0] == key:  # type: ignore[index]
                    files.remove_stale_temps(self.directory, member)

    def clean_stale_temps(self) -> int:
        """Remove temporary files (seen by the last :meth:`index`) whose key is not
        locked by a live writer. Returns how many keys were cleaned."""
        done = 0
        for n in sorted(set(self.stale_temps)):
            split = split_member(n[1:].rsplit(".", 3)[0])
            parsed = parse_stem(split[0]) if split else None
            if parsed is None:
                continue
            with contextlib.suppress(OSError), files.locked(self.lock_path(parsed[0]), blocking=False) as got:
                if got:
                    self._remove_temps(parsed[0])
                    done += 1
        return done

    def write_member(self, stem: str, suffix: str, data: bytes) -> str:
        """Atomically write ``<stem><suffix>``; returns its path. Raises ``OSError``."""
        return files.atomic_write(os.path.join(self.directory, stem + suffix), data)

    def remove_member(self, stem: str, suffix: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, stem + suffix))


__all__ = ["DirectoryStore", "MAX_ENTRIES", "READ_BUDGET"]
