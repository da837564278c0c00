"""Rollback: take patches back out of a store, for good.

In a running process, :meth:`codesuture.runtime.healer.Healer.rollback` restores the
original code objects. On disk, :func:`rollback` rewrites each overlay of a folder
without the selected patches (rebuilt from its source, found from the portable origin,
on the interpreter the overlay is for: a folder may hold overlays for several Pythons,
see ``codesuture rebuild``) and deletes an overlay left with none; every rewrite is
built before anything is written, so a rollback that cannot be done changes nothing.
A bundle cannot be rewritten, so its selected overlays are withdrawn whole. Either way
the SHA-256 of every overlay taken out is recorded as *withdrawn* in the host state
(:mod:`codesuture.trust.state`): the loader refuses those bytes from then on, even when
the old files (and an old signed set listing them) are put back, and ``codesuture
sign`` never signs them again. A rewritten overlay is unsigned until the folder is
signed again.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

from codesuture.errors import OverlayError
from codesuture.overlay.model import overlay_expiry


@dataclass
class RollbackResult:
    """``overlay``: the overlay concerned; ``removed``: patches taken out (qualnames);
    ``deleted``: no patch left (its files are gone, or for a bundle: withdrawn whole);
    ``withdrawn``: the SHA-256 recorded as withdrawn; ``note``: what else to know."""

    overlay: str
    removed: list[str]
    deleted: bool
    withdrawn: str
    note: str = ""


def rollback(
    target: str,
    *,
    module: str | None = None,
    function: str | None = None,
    every: bool = False,
    dry_run: bool = False,
    state_dir: str | None = None,
    app_root: str | None = None,
    now: float | None = None,
    pythons: Sequence[str] = (),
) -> list[RollbackResult]:
    """Take out the patches of *module* (a store key or module name) and/or *function*
    (qualified or plain name), or *every* patch, from the store at *target* (a folder or
    a bundle). *dry_run*: report, change nothing. *pythons*: interpreters to rebuild
    other Pythons' overlays with (as ``codesuture sign --python``). Raises
    :class:`~codesuture.errors.CodeSutureError` when nothing is selected, an overlay
    cannot be read or rebuilt (then nothing was changed), or the withdrawal cannot be
    recorded."""
    from codesuture.overlay.build import merge_records
    from codesuture.overlay.names import OVERLAY_SUFFIX
    from codesuture.review.explain import matches_function
    from codesuture.ship.metadata import entries_of, signed_meta
    from codesuture.store.writer import remove_patches

    if not (module or function or every):
        raise OverlayError(target, "nothing selected: give --module, --function or --all")
    now = time.time() if now is None else now
    results: list[RollbackResult] = []
    # First every rewrite is built (nothing written), then the folder changes.
    plans: list[tuple[Any, Any, RollbackResult, list[Any], bytes | None]] = []
    # The site fingerprints of what is taken out: a healer never patches such a crash
    # again on its own (no flapping; the fix goes back through review).
    fingerprints: dict[str, str] = {}
    for entry in entries_of(target):
        meta, _ = signed_meta(entry, None)
        if module is not None and module not in (entry.key, meta.module):
            continue
        chosen = [p for p in meta.patches if function is None or matches_function(p.qualname, function)]
        if not chosen:
            continue
        fingerprints.update({str(p.evidence["fingerprint"]): f"{p.module}:{p.line} {p.qualname}"
                             for p in chosen if (p.evidence or {}).get("fingerprint")})
        data = entry.read(OVERLAY_SUFFIX)
        digest = hashlib.sha256(data or b"").hexdigest()
        kept = [p for p in meta.patches if p not in chosen]
        result = RollbackResult(entry.path(OVERLAY_SUFFIX), [p.qualname for p in chosen], not kept, digest)
        new = None
        if entry.store.kind == "bundle":
            result.deleted = True
            if kept:
                result.note = "a bundle cannot be rewritten: the whole overlay is withdrawn on this host"
        elif not dry_run and kept:
            kept = merge_records([], kept, now)  # expired records are dropped, as every write does
            new = _rebuilt(entry, meta, kept, app_root, pythons) if kept else None
        plans.append((entry, meta, result, kept, new))
        results.append(result)
    if dry_run:
        return results
    withdrawn: dict[str, str] = {}
    try:
        for entry, meta, result, kept, new in plans:
            if entry.store.kind != "bundle":
                if new is None:
                    remove_patches(entry.store, entry.name, lambda p: False, meta, "")
                    result.deleted = True
                else:
                    _rewrite(entry, meta, kept, new, now)
                    result.note = "rewritten unsigned: sign the folder again"
            withdrawn[result.withdrawn] = entry.name
    finally:
        if withdrawn and state_dir:
            from codesuture.trust.state import HostState

            try:
                HostState(state_dir).withdraw(withdrawn, now, fingerprints)
            except OSError as exc:
                raise OverlayError(os.path.join(state_dir, "state.json"),
                                   f"cannot record the withdrawal: {exc.strerror or exc}") from None
    return results


def _rebuilt(entry: Any, meta: Any, kept: list[Any], app_root: str | None, pythons: Sequence[str]) -> bytes:
    """The bytes of *entry*'s overlay with only the records *kept*, built from its
    source (checked against the recorded SHA-256) on the interpreter it is for. Raises
    :class:`OverlayError` naming it when that cannot be done."""
    from codesuture.errors import TrustError
    from codesuture.overlay.names import OVERLAY_SUFFIX
    from codesuture.ship.rebuild import rebuild_bytes

    try:
        return rebuild_bytes(meta.origin, app_root, meta.source_sha256, kept, entry.cache_tag, pythons)
    except TrustError as exc:
        raise OverlayError(entry.path(OVERLAY_SUFFIX), f"cannot take out only some patches: {exc.reason} (nothing was "
                           "changed; see --app-root and --python, or roll back the whole overlay: --module or --all)") from None


def _rewrite(entry: Any, meta: Any, kept: list[Any], data: bytes, now: float) -> None:
    """Replace *entry*'s overlay with *data* (its records: *kept*), unsigned."""
    from codesuture.overlay.model import interpreter_info
    from codesuture.overlay.names import ENVELOPE_SUFFIX, OVERLAY_SUFFIX, SIGSTORE_SUFFIX
    from codesuture.util.clock import iso_utc

    python = interpreter_info() if entry.cache_tag == sys.implementation.cache_tag else meta.python
    new = meta._replace(overlay_sha256=hashlib.sha256(data).hexdigest(), python=python, created=iso_utc(now),
                        expires=overlay_expiry(kept), patches=kept)
    with entry.store.locked(meta.key):
        entry.store.write_pair(entry.name, data, new.dumps(), new.overlay_sha256)
        entry.store.remove_member(entry.name, ENVELOPE_SUFFIX)
        entry.store.remove_member(entry.name, SIGSTORE_SUFFIX)


__all__ = ["RollbackResult", "rollback"]
