"""Writing overlays into a directory store (dev mode, and the pending directory).

:func:`write_overlay` merges under the store's per-key lock: the records already on
disk for the same source and interpreter (written by this or another process) and the
new ones are merged by site (:func:`codesuture.overlay.build.merge_records`: a newer
record of a site replaces the older one, which renews its expiry; expired records are
dropped), and the whole overlay is rebuilt from source. So processes patching
different sites of one function all keep their patches. A corrupt sidecar is logged
and replaced, never a reason not to write; temporary files of killed writers are
removed under the same lock.
"""

from __future__ import annotations

import hashlib
import time
from typing import Callable, Sequence

from codesuture.errors import CodeSutureError, OverlayError, PatchError
from codesuture.logs import logger
from codesuture.overlay.build import build_overlay, merge_records
from codesuture.overlay.model import OverlayMeta, interpreter_info, overlay_expiry
from codesuture.overlay.names import (
    ENVELOPE_SUFFIX, MAX_META_BYTES, META_SUFFIX, OVERLAY_SUFFIX, SIGSTORE_SUFFIX, stem_for,
)
from codesuture.patch.spec import PatchRecord
from codesuture.store.directory import DirectoryStore
from codesuture.util.clock import iso_utc

log = logger("codesuture.overlay")


def stored_records(store: DirectoryStore, stem: str) -> list[PatchRecord]:
    """The records in the sidecar of *stem* in directory store *store*; [] when there
    is none or it is unreadable or corrupt (logged)."""
    try:
        raw = store.read(stem + META_SUFFIX, MAX_META_BYTES)
        return [] if raw is None else list(OverlayMeta.loads(raw, stem + META_SUFFIX).patches)
    except CodeSutureError as exc:
        log.warning("ignoring unusable metadata %s: %s", stem + META_SUFFIX, getattr(exc, "reason", exc))
        return []


def write_overlay(
    store: DirectoryStore,
    key: str,
    module: str,
    source_path: str,
    records: Sequence[PatchRecord],
    *,
    origin: str,
    source: bytes | None = None,
    tier: str = "auto",
    merge: bool = True,
    now: float | None = None,
    package: "dict[str, str] | None | str" = "lookup",
) -> str:
    """Write (or extend) the overlay of *module* (store key *key*) for the source at
    *source_path* into :class:`~codesuture.store.directory.DirectoryStore` *store*.
    *origin*: the portable origin to record (see :mod:`codesuture.overlay.names`).

    With *merge*, the records already stored for the same source bytes and interpreter
    are merged in (see :func:`merge_records`); records that no longer apply are dropped
    (logged). *package*: the distribution that owns the module (``{"name", "version"}``
    or None); by default looked up from *source_path* and *origin*
    (:func:`codesuture.overlay.package.owner`: none for ``app:``). Returns the overlay
    path. Raises :class:`PatchError` when *records* do not apply to the source (it
    changed since it was imported), ``OSError`` when the store cannot be written.
    """
    if source is None:
        with open(source_path, "rb") as fh:
            source = fh.read()
    digest = hashlib.sha256(source).hexdigest()
    stem = stem_for(key, digest)
    now = time.time() if now is None else now
    if package == "lookup":
        from codesuture.overlay.package import owner

        package = owner(source_path, origin)
    with store.locked(key):
        previous = stored_records(store, stem) if merge else []
        patches = merge_records(previous, records, now)
        if not patches:
            raise PatchError(f"every patch of {stem} has expired: nothing to write")
        try:
            data, _ = build_overlay(source, origin, patches)
        except PatchError as exc:
            if not previous:
                raise
            log.warning("stored patches of %s no longer apply (%s): rewriting it with this process's patches", stem, exc)
            patches = merge_records([], records, now)
            data, _ = build_overlay(source, origin, patches)
        meta = OverlayMeta(
            module=module, key=key, origin=origin, source_sha256=digest,
            overlay_sha256=hashlib.sha256(data).hexdigest(), python=interpreter_info(), created=iso_utc(now),
            expires=overlay_expiry(patches), tier=tier, patches=patches,
            package=package,
        )
        path = store.write_pair(stem, data, meta.dumps(), meta.overlay_sha256)  # durable: never a mismatched pair
        # A signature over earlier bytes no longer applies (the healer never writes
        # where a signed overlay lives; this covers a hand-made store).
        store.remove_member(stem, ENVELOPE_SUFFIX)
        store.remove_member(stem, SIGSTORE_SUFFIX)
    log.info("wrote overlay %s (%d patch%s)", path, len(patches), "" if len(patches) == 1 else "es")
    return str(path)


def remove_patches(store: DirectoryStore, stem: str, keep: Callable[[PatchRecord], bool], meta: OverlayMeta,
                   source_path: str) -> str | None:
    """Rewrite overlay *stem* of *store* keeping only the records for which
    ``keep(record)`` is true (rebuilt from *source_path*), or delete its files when
    none remain. Returns the overlay path, or None when it was deleted. Raises
    :class:`OverlayError` when it cannot be rebuilt."""
    kept = [p for p in meta.patches if keep(p)]
    if kept:
        try:
            return write_overlay(store, meta.key, meta.module, source_path, kept, origin=meta.origin, tier=meta.tier,
                                 merge=False, package=meta.package)
        except (OSError, PatchError, SyntaxError) as exc:
            raise OverlayError(stem + OVERLAY_SUFFIX, f"cannot rebuild overlay: {exc}") from None
    with store.locked(meta.key):
        for suffix in (OVERLAY_SUFFIX, META_SUFFIX, ENVELOPE_SUFFIX, SIGSTORE_SUFFIX):
            store.remove_member(stem, suffix)
    return None


__all__ = ["write_overlay", "remove_patches", "stored_records"]
