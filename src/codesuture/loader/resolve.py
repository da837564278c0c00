"""Decide whether one of a module's overlays applies to its source, and unmarshal it.

Order (rule 1 and 2 of the design): pick the overlays built for this interpreter's
cache tag and these exact source bytes (by file name, no reads); admit one through
the load policy (signature, digest, expiry, revocation; no unmarshalling); check the
header's magic number and source SHA-256 and the metadata's key; only then
``marshal.loads``. Every refusal is one log line naming the overlay and the reason,
and the caller loads the original module.
"""

from __future__ import annotations

import hashlib
import marshal
import sys
import types
from collections import namedtuple
from importlib.util import MAGIC_NUMBER

from codesuture.errors import OverlayError
from codesuture.logs import logger
from codesuture.overlay import format as fmt
from codesuture.overlay.model import OverlayMeta

log = logger("codesuture.loader")

#: key -> metadata of the overlay this process loaded for it (for the healer and review).
LOADED: dict[str, OverlayMeta] = {}


class Resolved(namedtuple("_Resolved", "code meta entry_name signer")):
    """The overlay that applies: its code object, metadata, entry name and signer."""

    __slots__ = ()


def resolve(
    key: str, entries: "Sequence[Entry]", source: bytes, source_path: str, policy: "object"
) -> Resolved | None:
    """The overlay code for *source* (the module's exact bytes at *source_path*), or
    None after logging why no overlay applies. Never raises for bad overlays."""
    from codesuture.trust.policy import admit

    if policy is None:
        policy = _env_policy()

    digest = hashlib.sha256(source).digest()
    prefix = digest.hex()[:16]
    tag = sys.implementation.cache_tag
    mine = [e for e in entries if e.cache_tag == tag and e.source_prefix == prefix]
    if not mine:
        tags = sorted({e.cache_tag for e in entries})
        if tag not in tags:
            log.warning("overlay for %s not applied: built for another Python (%s; this is %s)", key, ", ".join(tags), tag)
        else:
            log.warning("overlay for %s not applied: stale, source %s changed since it was built", key, source_path)
        return None
    for entry in mine:
        try:
            admitted = admit(entry, policy)  # type: ignore[arg-type]
            ov = fmt.parse(admitted.overlay_bytes, entry.name)
            if ov.magic_number != MAGIC_NUMBER:
                raise OverlayError(entry.name, "built for another Python (magic number differs)")
            meta = admitted.meta
            if ov.source_sha256 != digest or meta.source_sha256 != digest.hex():
                raise OverlayError(entry.name, f"stale: source {source_path} changed since it was built")
            if meta.key != key:
                raise OverlayError(entry.name, f"built for {meta.key}, not {key}")
            if meta.python.get("cache_tag") != tag:
                raise OverlayError(entry.name, "built for another Python (cache tag differs)")
            code = marshal.loads(ov.payload)
            if not isinstance(code, types.CodeType):
                raise OverlayError(entry.name, "payload is not a code object")
        except OverlayError as exc:
            log.warning("overlay %s not applied: %s", entry.name, exc.reason)
            continue
        except Exception as exc:  # contained: the original module loads (rule 7)
            log.warning("overlay %s not applied: internal error %r", entry.name, exc)
            continue
        _fix_filename(code, source_path)
        LOADED[key] = meta
        log.info("loaded overlay %s for %s (%d patch%s)", entry.name, key, len(meta.patches), "" if len(meta.patches) == 1 else "es")
        return Resolved(code, meta, entry.name, admitted.signer)
    return None


_POLICY: list[object] = []


def _env_policy() -> object:
    """The policy from the environment, read once per process."""
    if not _POLICY:
        from codesuture.trust.policy import LoadPolicy

        _POLICY.append(LoadPolicy.from_env())
    return _POLICY[0]


def _fix_filename(code: types.CodeType, path: str) -> None:
    """Point ``co_filename`` of the tree at *path* (the overlay may have been built
    in another checkout), as the import system does for pycs."""
    import _imp

    if code.co_filename != path:
        _imp._fix_co_filename(code, path)
