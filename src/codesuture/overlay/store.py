"""Where overlays live: a directory of ``<stem>.overlay`` files with their sidecars.

File names (the *stem* is ``<key>.<cache_tag>.<source sha256, first 16 hex>``)::

    httpie.sessions.cpython-311.3f2a9c0d1e2b4a5f.overlay     overlay bytes (see format)
    httpie.sessions.cpython-311.3f2a9c0d1e2b4a5f.json        metadata (see model)
    httpie.sessions.cpython-311.3f2a9c0d1e2b4a5f.dsse.json   DSSE envelope, once signed

Indexing a store is one ``os.listdir``: no file is opened until a module with an
overlay is imported. Writes are atomic (temp file + ``os.replace``) and serialized per
key with ``fcntl.flock``, so several processes may heal into one store at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Protocol

from codesuture.errors import OverlayError
from codesuture.overlay.format import MAX_OVERLAY_BYTES
from codesuture.overlay.index import (  # re-exported: the store's public names
    ENVELOPE_SUFFIX, MAX_ENVELOPE_BYTES, MAX_META_BYTES, META_SUFFIX, OVERLAY_SUFFIX, SIGSTORE_SUFFIX, DirEntry,
    index_directory, parse_stem, read_capped, script_key,
)



def stem_for(key: str, source_sha256_hex: str, cache_tag: str | None = None) -> str:
    return f"{key}.{cache_tag or sys.implementation.cache_tag}.{source_sha256_hex[:16]}"


class Entry(Protocol):
    """One overlay in a store (a directory or a bundle)."""

    key: str
    cache_tag: str
    source_prefix: str
    name: str  # the stem, used in log lines

    def read(self, suffix: str, limit: int) -> bytes | None:
        """Bytes of the member ``<stem><suffix>``, or None when absent.
        Raises :class:`OverlayError` when it is larger than *limit* bytes or unreadable."""
        ...


class DirectoryStore:
    """Overlays in one directory. ``index()`` maps store key -> entries."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.directory)!r})"

    def entries(self) -> Iterator[DirEntry]:
        for entries in self.index().values():
            yield from entries

    def index(self) -> dict[str, list[DirEntry]]:
        try:
            return index_directory(self.directory)
        except OSError as exc:
            raise OverlayError(self.directory, f"cannot list overlay store: {exc.strerror or exc}") from None

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Serialize read-modify-write of one key across processes."""
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / f".{key}.lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def write_member(self, stem: str, suffix: str, data: bytes) -> Path:
        """Atomically write ``<stem><suffix>``; returns its path."""
        return atomic_write(self.directory / (stem + suffix), data)

    def remove_member(self, stem: str, suffix: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / (stem + suffix))


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write *data* to *path* through a temp file in the same directory and ``os.replace``,
    so readers see the old or the new file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def open_store(location: str | os.PathLike[str]) -> "DirectoryStore":
    """Open a store: a directory, or (see :mod:`codesuture.overlay.bundle`) a bundle file."""
    p = Path(location)
    if p.is_file():
        from codesuture.overlay.bundle import BundleStore  # only deploys pay for it

        return BundleStore(p)  # type: ignore[return-value]
    return DirectoryStore(p)


__all__ = [
    "DirectoryStore", "DirEntry", "Entry", "open_store", "script_key", "stem_for", "parse_stem",
    "atomic_write", "read_capped", "MAX_OVERLAY_BYTES", "MAX_META_BYTES", "MAX_ENVELOPE_BYTES",
    "OVERLAY_SUFFIX", "META_SUFFIX", "ENVELOPE_SUFFIX", "SIGSTORE_SUFFIX",
]
