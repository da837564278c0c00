"""SHA-256 (FIPS 180-4) for the load path, without loading OpenSSL for a few kilobytes.

``hashlib`` loads OpenSSL's ``_hashlib`` on import: about 11.7 M instructions and several
milliseconds of a start (3.12, benchmarks (b')), while the SHA-256 the interpreter builds
in (``_sha2`` on 3.12+, ``_sha256`` on 3.11: the HACL* implementation ``hashlib`` itself
falls back to) costs 0.8 M to import but hashes about 5x slower per byte than OpenSSL.
So :func:`sha256` uses the built-in one for the first :data:`BUILTIN_BUDGET` bytes a
process hashes (a signed start of 20 overlays hashes about 220 KB: sources, overlays,
sidecars, envelopes) and ``hashlib`` from then on, and wherever the built-in module is
missing. Both compute the same function; only the cost differs. A hostile store (64 MiB
hashed at most, design rule 14) costs at most :data:`BUILTIN_BUDGET` bytes at the slower
rate. A deliberate start-up choice (see ``docs/overlay-format.md``, "Start-up cost").
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any, Callable

#: Bytes per process hashed with the interpreter's built-in SHA-256 before ``hashlib``.
BUILTIN_BUDGET = 512 * 1024



def _find_builtin() -> "Callable[[bytes], Any] | None":
    for name in ("_sha2", "_sha256"):  # 3.12 and later; 3.11
        try:
            return getattr(__import__(name), "sha256", None)
        except ImportError:
            continue
    return None  # pragma: no cover - depends on the interpreter's build


_builtin = _find_builtin()
_left = BUILTIN_BUDGET


def sha256(data: bytes) -> Any:
    """A SHA-256 hash object of *data* (bytes-like), as ``hashlib.sha256(data)`` returns:
    ``.digest()`` (32 bytes), ``.hexdigest()`` (64 lowercase hex characters)."""
    global _left
    n = len(data)
    if _builtin is not None and n <= _left:
        _left -= n  # a race only moves the switch to hashlib by a few bytes
        return _builtin(data)
    import hashlib

    return hashlib.sha256(data)
