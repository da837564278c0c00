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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

from codesuture.errors import OverlayError
from codesuture.overlay.format import MAX_OVERLAY_BYTES

OVERLAY_SUFFIX = ".overlay"
META_SUFFIX = ".json"
ENVELOPE_SUFFIX = ".dsse.json"
SIGSTORE_SUFFIX = ".sigstore.json"
#: Size caps (bytes) for sidecars, checked before reading.
MAX_META_BYTES = 1024 * 1024
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024


def script_key(path: str | os.PathLike[str]) -> str:
    """Store key of a script run as ``__main__``: its resolved path's SHA-256, so two
    scripts never share patches."""
    real = os.path.realpath(os.fspath(path))
    return "__main__." + hashlib.sha256(real.encode("utf-8", "surrogatepass")).hexdigest()[:16]


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


def parse_stem(stem: str) -> tuple[str, str, str] | None:
    """``(key, cache_tag, source_prefix)`` of a stem, or None when it is not one."""
    parts = stem.rsplit(".", 2)
    if len(parts) != 3 or len(parts[2]) != 16 or not parts[0]:
        return None
    return parts[0], parts[1], parts[2]


def read_capped(path: Path, limit: int) -> bytes | None:
    """Read *path* refusing more than *limit* bytes (checked before and while reading).

    Returns None when the file does not exist; raises :class:`OverlayError` when it is
    oversized, a link to elsewhere that cannot be opened, or unreadable."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise OverlayError(path, f"oversized ({size} bytes > {limit})")
            data = fh.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OverlayError(path, f"unreadable: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise OverlayError(path, f"oversized (> {limit} bytes)")
    return data


@dataclass(frozen=True)
class DirEntry:
    directory: Path
    name: str
    key: str
    cache_tag: str
    source_prefix: str

    def path(self, suffix: str) -> Path:
        return self.directory / (self.name + suffix)

    def read(self, suffix: str, limit: int) -> bytes | None:
        return read_capped(self.path(suffix), limit)


class DirectoryStore:
    """Overlays in one directory. ``index()`` maps store key -> entries."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.directory)!r})"

    def entries(self) -> Iterator[DirEntry]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OverlayError(self.directory, f"cannot list overlay store: {exc.strerror or exc}") from None
        for fname in sorted(names):
            if not fname.endswith(OVERLAY_SUFFIX):
                continue
            stem = fname[: -len(OVERLAY_SUFFIX)]
            parsed = parse_stem(stem)
            if parsed:
                yield DirEntry(self.directory, stem, *parsed)

    def index(self) -> dict[str, list[DirEntry]]:
        out: dict[str, list[DirEntry]] = {}
        for entry in self.entries():
            out.setdefault(entry.key, []).append(entry)
        return out

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
