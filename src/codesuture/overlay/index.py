"""Indexing a directory of overlays by file name: one ``os.listdir``, no file opened.

Kept free of heavy imports: the finder uses it on every ``python -m codesuture.boot``.
"""

from __future__ import annotations

import os

OVERLAY_SUFFIX = ".overlay"
META_SUFFIX = ".json"
ENVELOPE_SUFFIX = ".dsse.json"
SIGSTORE_SUFFIX = ".sigstore.json"
#: Size caps (bytes) for sidecars, checked before reading.
MAX_META_BYTES = 1024 * 1024
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024


def script_key(path: str | os.PathLike[str]) -> str:
    """Store key of a script run as ``__main__``: ``__main__.`` + the first 16 hex
    digits of the SHA-256 of its resolved path, so two scripts never share patches."""
    import hashlib

    real = os.path.realpath(os.fspath(path))
    return "__main__." + hashlib.sha256(real.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def parse_stem(stem: str) -> tuple[str, str, str] | None:
    """``(key, cache_tag, source_prefix)`` of a stem, or None when it is not one.
    A stem is ``<key>.<cache_tag>.<first 16 hex digits of the source SHA-256>``."""
    parts = stem.rsplit(".", 2)
    if len(parts) != 3 or len(parts[2]) != 16 or not parts[0]:
        return None
    return parts[0], parts[1], parts[2]


def read_capped(path: str | os.PathLike[str], limit: int) -> bytes | None:
    """Read *path* refusing more than *limit* bytes (checked before and while reading).

    Returns None when the file does not exist; raises
    :class:`~codesuture.errors.OverlayError` when it is oversized or unreadable."""
    try:
        # os.open/os.read, not open(): no buffered file object per read (the loader
        # reads two files per admitted module).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        from codesuture.errors import OverlayError

        raise OverlayError(path, f"unreadable: {exc.strerror or exc}") from None
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            from codesuture.errors import OverlayError

            raise OverlayError(path, f"oversized ({size} bytes > {limit})")
        # Read what fstat reported plus one byte to notice growth; never ask for the
        # cap at once (os.read(fd, n) allocates n bytes, and the caps are megabytes).
        data = os.read(fd, size + 1)
        while size < len(data) <= limit:  # it grew since fstat: read on in chunks, to the cap
            more = os.read(fd, min(1 << 16, limit + 1 - len(data)))
            if not more:
                break
            data += more
    except OSError as exc:
        from codesuture.errors import OverlayError

        raise OverlayError(path, f"unreadable: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        from codesuture.errors import OverlayError

        raise OverlayError(path, f"oversized (> {limit} bytes)")
    return data


class DirEntry:
    """One overlay in a directory store (see :class:`~codesuture.overlay.store.Entry`)."""

    __slots__ = ("directory", "name", "key", "cache_tag", "source_prefix")

    def __init__(self, directory: str | os.PathLike[str], name: str, key: str, cache_tag: str, source_prefix: str) -> None:
        self.directory = os.fspath(directory)
        self.name = name
        self.key = key
        self.cache_tag = cache_tag
        self.source_prefix = source_prefix

    def __repr__(self) -> str:
        return f"DirEntry({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DirEntry) and (self.directory, self.name) == (other.directory, other.name)

    def __hash__(self) -> int:
        return hash((self.directory, self.name))

    def path(self, suffix: str) -> str:
        return os.path.join(self.directory, self.name + suffix)

    def read(self, suffix: str, limit: int) -> bytes | None:
        return read_capped(self.path(suffix), limit)


def index_directory(directory: str | os.PathLike[str]) -> dict[str, list[DirEntry]]:
    """Store key -> entries of every ``*.overlay`` in *directory* (sorted by name).
    A missing directory is an empty store; raises OSError when it cannot be listed."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return {}
    out: dict[str, list[DirEntry]] = {}
    for fname in names:
        if fname.endswith(OVERLAY_SUFFIX):
            stem = fname[: -len(OVERLAY_SUFFIX)]
            parsed = parse_stem(stem)
            if parsed:
                out.setdefault(parsed[0], []).append(DirEntry(directory, stem, *parsed))
    return out
