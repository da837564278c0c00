"""Decide whether one of a module's overlays applies to its source, and unmarshal it.

Order (design rules 1 and 2, ``docs/design-rules.md``): pick the overlays built for
this interpreter's cache tag and these exact source bytes (by file name, no reads);
admit one through the load policy (:func:`codesuture.trust.policy.admit`: signed set,
signature, digest, revocation, expiry; no unmarshalling); check the header's magic
number and source SHA-256 and the metadata's key and cache tag; only then
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

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any, Sequence

log = logger("codesuture.loader")


class Loaded(namedtuple("_Loaded", "entry admitted policy")):
    """An overlay this process loaded: its store entry, what admission returned, and
    the policy that admitted it (:func:`loaded_patches` reads its patch list lazily)."""

    __slots__ = ()


#: store key -> the overlay this process loaded for it (for the healer and review).
LOADED: dict[str, Loaded] = {}


class Resolved(namedtuple("_Resolved", "code meta entry_name signer")):
    """The overlay that applies: its code object, metadata, entry name and signer."""

    __slots__ = ()


def resolve(key: str, entries: Sequence[Any], source: bytes, source_path: str, policy: Any) -> Resolved | None:
    """The overlay code for *source* (the module's exact bytes at *source_path*), or
    None after logging why no overlay applies. Never raises for bad overlays."""
    from codesuture.trust.policy import admit

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
            admitted = admit(entry, policy)
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
        except OverlayError as exc:  # a canary that does not select this process is no fault: INFO
            (log.info if getattr(exc, "quiet", False) else log.warning)("overlay %s not applied: %s", entry.name, exc.reason)
            continue
        except Exception as exc:  # contained: the original module loads (rule 7)
            log.warning("overlay %s not applied: internal error %r", entry.name, exc)
            continue
        _fix_filename(code, source_path)
        if meta.package:  # advisory: the distribution around these source bytes changed since the heal
            from codesuture.overlay.package import check_installed

            check_installed(key, meta.package, source_path, log)
        LOADED[key] = Loaded(entry, admitted, policy)
        log.info("loaded overlay %s for %s (%s)", entry.name, key, admitted.via)
        return Resolved(code, meta, entry.name, admitted.signer)
    return None


def loaded_patches(key: str) -> list[Any]:
    """The patch records of the overlay loaded for *key* in this process ([] when none
    or when its signed metadata cannot be read again)."""
    found = LOADED.get(key)
    if found is None:
        return []
    from codesuture.errors import CodeSutureError
    from codesuture.trust.policy import full_meta

    try:
        return list(full_meta(found.entry, found.admitted, found.policy).patches)
    except CodeSutureError as exc:
        log.warning("patches of the overlay loaded for %s unknown: %s", key, getattr(exc, "reason", exc))
        return []


def _fix_filename(code: types.CodeType, path: str) -> None:
    """Point ``co_filename`` of the tree at *path* (the overlay may have been built
    in another checkout), as the import system does for pycs."""
    import _imp

    if code.co_filename != path:
        _imp._fix_co_filename(code, path)  # type: ignore[attr-defined]
