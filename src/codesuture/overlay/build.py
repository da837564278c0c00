"""Build an overlay from a patch: recompile the module's exact source, apply every
patch recorded for that source (previous ones first), marshal, write atomically.

Building from source rather than from the live module keeps the overlay honest: it
is what a fresh interpreter would produce from these source bytes plus these patches,
and it fails loudly (PatchError) if the live code and the file on disk disagree.
"""

from __future__ import annotations

import hashlib
import marshal
import time
from pathlib import Path
from typing import Callable

from codesuture.logs import logger
from codesuture.errors import OverlayError, PatchError
from codesuture.overlay import format as fmt
from codesuture.overlay.model import OverlayMeta, interpreter_info
from codesuture.overlay.store import (
    ENVELOPE_SUFFIX, MAX_META_BYTES, META_SUFFIX, OVERLAY_SUFFIX, SIGSTORE_SUFFIX, DirectoryStore, read_capped,
    stem_for,
)
from codesuture.patch.spec import PatchRecord, iso_utc
from codesuture.patch.synthesize import apply_to_module

log = logger("codesuture.overlay")


def compile_module(source: bytes, filename: str) -> "object":
    """Compile module *source* the way the import system does (``exec`` mode,
    ``dont_inherit``)."""
    return compile(source, filename, "exec", dont_inherit=True)


def existing_patches(store: DirectoryStore, stem: str) -> list[PatchRecord]:
    raw = read_capped(store.directory / (stem + META_SUFFIX), MAX_META_BYTES)
    if raw is None:
        return []
    return list(OverlayMeta.loads(raw, store.directory / (stem + META_SUFFIX)).patches)


def write_overlay(
    store: DirectoryStore,
    key: str,
    module: str,
    source_path: str,
    records: list[PatchRecord],
    *,
    source: bytes | None = None,
    tier: str = "auto",
    merge: bool = True,
) -> Path:
    """Write (or extend) the overlay of *module* (store key *key*) for the source at
    *source_path*, adding *records* after the patches already recorded for the same
    source bytes and interpreter when *merge* is true.

    Returns the overlay path. Raises :class:`PatchError` when the patches do not apply
    to the source (the file changed since it was imported), :class:`OverlayError` on
    a corrupt store.
    """
    if source is None:
        source = Path(source_path).read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    stem = stem_for(key, digest)
    with store.locked(key):
        previous = existing_patches(store, stem) if merge else []
        known = {(p.qualname, p.firstlineno, p.offset, p.guard) for p in previous}
        fresh = [r for r in records if (r.qualname, r.firstlineno, r.offset, r.guard) not in known]
        patches = previous + fresh
        code = apply_to_module(compile_module(source, source_path), patches)  # type: ignore[arg-type]
        data = fmt.pack(marshal.dumps(code), source)
        now = time.time()
        expires = min((p.expires for p in patches if p.expires), default="")
        meta = OverlayMeta(
            module=module,
            key=key,
            origin=str(source_path),
            source_sha256=digest,
            overlay_sha256=hashlib.sha256(data).hexdigest(),
            python=interpreter_info(),
            created=iso_utc(now),
            expires=expires,
            tier=tier,
            patches=patches,
        )
        path = store.write_member(stem, OVERLAY_SUFFIX, data)
        store.write_member(stem, META_SUFFIX, meta.dumps())
        # A signature over the previous bytes no longer applies: it must be re-signed.
        store.remove_member(stem, ENVELOPE_SUFFIX)
        store.remove_member(stem, SIGSTORE_SUFFIX)
    log.info("wrote overlay %s (%d patch%s)", path, len(patches), "" if len(patches) == 1 else "es")
    return path


def remove_patches(store: DirectoryStore, meta_path: Path, keep: "Callable[[PatchRecord], bool]") -> Path | None:
    """Rewrite the overlay whose metadata is *meta_path* keeping only the patches for
    which ``keep(record)`` is true; delete the overlay when none remain (rollback).
    Returns the overlay path, or None when it was deleted."""
    raw = read_capped(meta_path, MAX_META_BYTES)
    if raw is None:
        raise OverlayError(meta_path, "metadata file is missing")
    meta = OverlayMeta.loads(raw, meta_path)
    stem = meta_path.name[: -len(META_SUFFIX)]
    kept = [p for p in meta.patches if keep(p)]
    if kept:
        try:
            return write_overlay(store, meta.key, meta.module, meta.origin, kept, merge=False)
        except (OSError, PatchError) as exc:
            raise OverlayError(meta_path, f"cannot rebuild overlay: {exc}") from None
    with store.locked(meta.key):
        for suffix in (OVERLAY_SUFFIX, META_SUFFIX, ENVELOPE_SUFFIX, SIGSTORE_SUFFIX):
            store.remove_member(stem, suffix)
    return None


__all__ = ["write_overlay", "remove_patches", "compile_module"]
