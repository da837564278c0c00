"""Decide whether one of a module's overlays applies to its source, and unmarshal it.

Order (design rules 1 and 2, ``docs/design-rules.md``): pick the overlays built for
this interpreter's cache tag and these exact source bytes (by file name, no reads);
admit one through the load policy (:func:`codesuture.trust.policy.admit`: signed set,
signature, digest, revocation, expiry; no unmarshalling); check the header's magic
number and source SHA-256 and the metadata's key and cache tag; only then
``marshal.loads``. Every refusal is one log line naming the overlay and the reason,
and the caller loads the original module. Expiry is per patch: a function whose
patch expired runs its source's code, the overlay's other patches stay (one line).
"""

from __future__ import annotations

import marshal
import sys
import types
from collections import namedtuple
from importlib.util import MAGIC_NUMBER

from codesuture.errors import OverlayError
from codesuture.logs import logger
from codesuture.overlay import format as fmt
from codesuture.util.digest import sha256

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
#: store key -> overlays loaded for it before the one in :data:`LOADED`, newest first
#: (at most 4): a frame that started before the fleet watcher's swap still runs their code.
EARLIER: dict[str, list[Loaded]] = {}


class Resolved(namedtuple("_Resolved", "code meta entry_name signer")):
    """The overlay that applies: its code object, metadata, entry name and signer."""

    __slots__ = ()


def resolve(key: str, entries: Sequence[Any], source: bytes, source_path: str, policy: Any) -> Resolved | None:
    """The overlay code for *source* (the module's exact bytes at *source_path*), or
    None after logging why no overlay applies. Never raises for bad overlays."""
    from codesuture.trust.policy import admit

    digest = sha256(source).digest()
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
        code = _without_expired(code, entry, admitted, policy, source, source_path)
        if code is None:
            continue
        _fix_filename(code, source_path)
        if meta.package:  # advisory: the distribution around these source bytes changed since the heal
            from codesuture.overlay.package import check_installed

            check_installed(key, meta.package, source_path, log)
        earlier = LOADED.get(key)
        if earlier is not None:  # the fleet watcher applied a newer overlay live: code of this one may still run
            EARLIER.setdefault(key, []).insert(0, earlier)
            del EARLIER[key][4:]
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


def loaded_patch_sets(key: str) -> list[list[Any]]:
    """The patch lists of the overlays this process loaded for *key*: the current one
    (:data:`LOADED`) first, then the earlier ones (:data:`EARLIER`); lists that cannot
    be read again are left out (logged)."""
    from codesuture.errors import CodeSutureError
    from codesuture.trust.policy import full_meta

    out = []
    for found in [LOADED.get(key), *EARLIER.get(key, [])]:
        if found is None:
            continue
        try:
            out.append(list(full_meta(found.entry, found.admitted, found.policy).patches))
        except CodeSutureError as exc:
            log.warning("patches of an overlay loaded for %s unknown: %s", key, getattr(exc, "reason", exc))
    return out


def _without_expired(code: types.CodeType, entry: Any, admitted: Any, policy: Any, source: bytes,
                     source_path: str) -> types.CodeType | None:
    """Expiry per patch: *code* (an admitted overlay's module code) with every function
    whose patch has expired given its source's code back (compiled from the same
    *source* bytes: the code that runs with no overlay), the other patches kept. None
    (logged) when every patch expired. Costs nothing while no patch has expired: under
    a signed set, the patch list is read only when the set's ``patchesExpireAt`` (the
    earliest patch expiry) has passed."""
    import time

    from codesuture.util.clock import iso_utc

    now = time.time()
    patches = admitted.meta.patches
    if not patches and admitted.via == "set":
        from codesuture.trust.policy import full_meta, store_set

        try:
            vset = store_set(entry.store, policy)
            first = (vset.overlays.get(entry.name) or {}).get("patchesExpireAt") if vset is not None else None
            if not first or first > iso_utc(now):
                return code
            patches = full_meta(entry, admitted, policy).patches
        except Exception as exc:  # noqa: BLE001 - unknown patch expiries: the overlay's own expiry held
            log.warning("overlay %s: patch expiries not read (%s): loaded whole", entry.name, getattr(exc, "reason", exc))
            return code
    expired = [p for p in patches if p.expires and p.expired(now)]
    if not expired:
        return code
    if len(expired) == len(patches):
        log.warning("overlay %s not applied: every patch expired (the last at %s)", entry.name,
                    max(p.expires for p in expired))
        return None
    gone = {(p.qualname, p.firstlineno) for p in expired}
    original = compile(source, source_path, "exec", dont_inherit=True)
    by_site: dict[tuple[str, int], types.CodeType] = {}

    def index(co: types.CodeType) -> None:
        for c in co.co_consts:
            if isinstance(c, types.CodeType):
                by_site.setdefault((c.co_qualname, c.co_firstlineno), c)
                index(c)

    index(original)

    def swap(co: types.CodeType) -> types.CodeType:
        consts = []
        for c in co.co_consts:
            if isinstance(c, types.CodeType):
                site = (c.co_qualname, c.co_firstlineno)
                c = by_site[site] if site in gone and site in by_site else swap(c)
            consts.append(c)
        new = tuple(consts)
        return co if all(a is b for a, b in zip(new, co.co_consts)) else co.replace(co_consts=new)

    log.warning("overlay %s: %d patch(es) expired (%s): their function(s) run the source's code, the other %d "
                "patch(es) stay", entry.name, len(expired), ", ".join(sorted(f"{p.qualname} at {p.expires}" for p in expired)),
                len(patches) - len(expired))
    return swap(code)


def _fix_filename(code: types.CodeType, path: str) -> None:
    """Point ``co_filename`` of the tree at *path* (the overlay may have been built
    in another checkout), as the import system does for pycs."""
    import _imp

    if code.co_filename != path:
        _imp._fix_co_filename(code, path)  # type: ignore[attr-defined]
