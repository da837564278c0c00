"""A folder of overlays.

Indexing is one ``os.scandir``: no file is opened until a module with an overlay is
imported, and at most :data:`MAX_ENTRIES` names are looked at (a store with more is
refused whole). Reads go through :func:`codesuture.util.files.read_regular`: regular
files only (a symlink only when it resolves to a regular file inside the store),
non-blocking, size-capped, and together at most :data:`READ_BUDGET` bytes per store
per process, of which at most :data:`~codesuture.overlay.names.UNVETTED_BUDGET` (4 MiB)
are signature material read before a signature vouched for anything (envelopes,
Sigstore bundles, the signed set). So a hostile folder, without the signing key, costs
at most one listing of 4096 names, 4 MiB read and parsed, and the failed signature
checks, whatever it holds; only files a verified signature pins (64 MiB in all) are
read and hashed beyond that.

Writes (dev mode only) are atomic and serialized per store key with ``flock`` on
``.<key>.lock``; temporary files a killed writer left are removed under that lock. An
overlay and its sidecar are written as a durable pair (:meth:`DirectoryStore.write_pair`):
a kill at any point leaves the previous pair or the new one readable, never neither.
"""

from __future__ import annotations

import contextlib
import os

from codesuture.errors import FileError, OverlayError
from codesuture.overlay.names import (
    META_SUFFIX, OVERLAY_SUFFIX, SET_NAME, UNVETTED_BUDGET, parse_stem, split_member, unvetted,
)
from codesuture.store import Entry
from codesuture.util import files

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Iterator

#: At most this many directory entries are indexed; a store with more is refused.
MAX_ENTRIES = 4096
#: At most this many bytes are read from one store per process (then reads are refused).
READ_BUDGET = 64 * 1024 * 1024
#: Suffix of the content-addressed copy of an overlay being written (:meth:`DirectoryStore.write_pair`).
NEXT_SUFFIX = ".next"


def _exhausted(vetting: bool) -> str:
    if vetting:
        return f"store read budget for signature material exhausted ({UNVETTED_BUDGET} bytes per process)"
    return f"store read budget exhausted ({READ_BUDGET} bytes per process)"


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
        self._unvetted = min(UNVETTED_BUDGET, self._budget)
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
                    if de.name.startswith(".") and de.name.endswith((files.TEMP_SUFFIX, NEXT_SUFFIX)):
                        self.stale_temps.append(de.name)  # a killed writer's temp file or unfinished pair
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
        the store's read budget (:data:`READ_BUDGET`; for signature material,
        :data:`~codesuture.overlay.names.UNVETTED_BUDGET`)."""
        if "/" in name or os.sep in name or name in ("", ".", ".."):
            raise OverlayError(self.display(name), "not a member name")
        vetting = self._limited and unvetted(name)
        left = min(self._budget, self._unvetted) if vetting else self._budget
        if self._limited and left <= 0:
            raise OverlayError(self.display(name), _exhausted(vetting))
        try:
            cap = min(limit, left) if self._limited else limit
            fd = self._dir_fd()
            if fd is None:
                data = files.read_regular(os.path.join(self.directory, name), cap, root=self.root)
            else:
                data = files.read_regular(name, cap, root=self.root, dir_fd=fd, dir_path=self.directory)
        except FileError as exc:
            if self._limited and exc.reason.startswith("oversized") and left < limit:
                raise OverlayError(exc.path, _exhausted(vetting)) from None
            raise OverlayError(exc.path, exc.reason) from None
        if data is not None and self._limited:
            self._budget -= len(data)
            if vetting:
                self._unvetted -= len(data)
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
            if n.endswith(NEXT_SUFFIX):  # an unfinished pair: .<stem>.<digest16>.next
                stem = n[1:-len(NEXT_SUFFIX)].rsplit(".", 1)[0]
                parsed = parse_stem(stem)
                if parsed is not None:
                    with contextlib.suppress(Exception), \
                            files.locked(self.lock_path(parsed[0]), blocking=False) as got:  # contained (rule 7)
                        if got:
                            self._finish_pair(stem)
                            done += 1
                continue
            split = split_member(n[1:].rsplit(".", 3)[0])
            parsed = parse_stem(split[0]) if split else None
            if parsed is None:
                continue
            with contextlib.suppress(OSError), files.locked(self.lock_path(parsed[0]), blocking=False) as got:
                if got:
                    self._remove_temps(parsed[0])
                    done += 1
        return done

    def _finish_pair(self, stem: str) -> None:
        """Step 3 of :meth:`write_pair` for a writer killed after its commit point: the
        ``.next`` copy the sidecar names becomes ``<stem>.overlay``; copies the sidecar
        does not name are dropped. Under the key's lock. Raises OSError, FileError."""
        import hashlib
        import json

        from codesuture.overlay.names import MAX_META_BYTES, MAX_OVERLAY_BYTES

        raw = files.read_regular(os.path.join(self.directory, stem + META_SUFFIX), MAX_META_BYTES, root=self.root)
        digest = json.loads(raw).get("overlay_sha256", "") if raw else ""
        if isinstance(digest, str) and len(digest) == 64:
            data = self.pending_overlay(stem, digest, MAX_OVERLAY_BYTES)
            if data is not None and hashlib.sha256(data).hexdigest() == digest:
                self.write_member(stem, OVERLAY_SUFFIX, data)
        self._remove_next(stem)

    def write_member(self, stem: str, suffix: str, data: bytes) -> str:
        """Atomically write ``<stem><suffix>``; returns its path. Raises ``OSError``."""
        return files.atomic_write(os.path.join(self.directory, stem + suffix), data)

    def write_pair(self, stem: str, overlay: bytes, sidecar: bytes, digest: str) -> str:
        """Write overlay *stem*'s bytes and its metadata sidecar (whose
        ``overlay_sha256`` is *digest*) so that a reader always finds a valid pair, even
        after a kill at any point: the previous pair stays valid until the new one is
        complete. Call it under :meth:`locked` for the stem's key.

        1. the new overlay bytes, content-addressed, in ``.<stem>.<digest[:16]>.next``;
        2. the sidecar (the commit point: it names the new digest);
        3. ``<stem>.overlay``;
        4. the ``.next`` copies of *stem* removed.

        A reader that finds the sidecar's digest differing from ``<stem>.overlay``
        (killed between 2 and 3) reads the ``.next`` copy the sidecar names instead
        (:meth:`pending_overlay`). Each file is written atomically (:func:`files.atomic_write`).
        Returns the overlay path. Raises ``OSError``."""
        self.write_member(f".{stem}", f".{digest[:16]}{NEXT_SUFFIX}", overlay)
        self.write_member(stem, META_SUFFIX, sidecar)
        path = self.write_member(stem, OVERLAY_SUFFIX, overlay)
        self._remove_next(stem)
        return path

    def pending_overlay(self, stem: str, digest: str, limit: int) -> bytes | None:
        """The overlay bytes a :meth:`write_pair` killed after its commit point left in
        ``.<stem>.<digest[:16]>.next``, or None. Raises :class:`OverlayError` as
        :meth:`read` does."""
        if len(digest) < 16 or any(c not in "0123456789abcdef" for c in digest[:16]):
            return None
        return self.read(f".{stem}.{digest[:16]}{NEXT_SUFFIX}", limit)

    def _remove_next(self, stem: str) -> None:
        """Remove *stem*'s ``.next`` copies and the temporary files of killed writers of
        them (the caller holds the key's lock, so none is a live writer's)."""
        prefix = f".{stem}."
        with contextlib.suppress(OSError):
            for n in os.listdir(self.directory):
                copy = n.startswith(prefix) and n.endswith(NEXT_SUFFIX) and len(n) == len(prefix) + 16 + len(NEXT_SUFFIX)
                temp = n.startswith("." + prefix) and n.endswith(files.TEMP_SUFFIX) and NEXT_SUFFIX + "." in n
                if copy or temp:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.directory, n))

    def remove_member(self, stem: str, suffix: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, stem + suffix))


__all__ = ["DirectoryStore", "MAX_ENTRIES", "READ_BUDGET", "NEXT_SUFFIX"]
