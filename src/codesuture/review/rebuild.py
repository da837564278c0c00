"""``codesuture rebuild --python PY STORE``: the store's patches, for another interpreter.

For every module (store key and source bytes) with an overlay in the store, the
records of its overlay (from the signed Statement when signed) are re-located by
source position in *PY*'s own compiled code and the overlay is built there
(:mod:`codesuture.ship.rebuild`, ``relocate``). The result is written unsigned, with
PY's cache tag, beside the others (or into ``--output``): review and sign it like any
overlay. Records that do not re-locate are reported, never guessed.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field

from codesuture.errors import CodeSutureError, OverlayError


@dataclass
class RebuildResult:
    """One module: the overlay the records came from (``source``), the overlay written
    (or None), how many patches re-located, those that did not, an error, or why
    nothing needed doing (``skipped``)."""

    source: str
    written: str | None = None
    patches: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""
    skipped: str = ""


def rebuild_for(store: str, python: str, app_root: str | None, output: str | None = None) -> list[RebuildResult]:
    """Rebuild every module of folder *store* for interpreter *python*. Raises
    :class:`~codesuture.errors.CodeSutureError` when *python* cannot be run."""
    from codesuture.overlay.model import OverlayMeta, overlay_expiry
    from codesuture.overlay.names import OVERLAY_SUFFIX, stem_for
    from codesuture.patch.spec import PatchRecord
    from codesuture.ship.metadata import entries_of, signed_meta
    from codesuture.ship.rebuild import interpreter_tag, run_worker
    from codesuture.store.directory import DirectoryStore
    from codesuture.util.clock import iso_utc

    tag = interpreter_tag(python)
    if tag is None:
        raise OverlayError(python, "cannot run this interpreter")
    out = DirectoryStore(output or store, budget=None)
    best: dict[tuple[str, str], tuple[object, OverlayMeta]] = {}
    for entry in entries_of(store):
        try:
            meta, _ = signed_meta(entry, None)
        except CodeSutureError:
            continue
        group = (entry.key, entry.source_prefix)
        if group not in best or len(meta.patches) > len(best[group][1].patches):
            best[group] = (entry, meta)
    results: list[RebuildResult] = []
    for (key, prefix), (entry, meta) in sorted(best.items()):
        result = RebuildResult(entry.path(OVERLAY_SUFFIX))  # type: ignore[attr-defined]
        results.append(result)
        stem = stem_for(key, meta.source_sha256, tag)
        if out.read(stem + OVERLAY_SUFFIX, 1 << 24) is not None:
            result.skipped = f"{stem}{OVERLAY_SUFFIX} already exists (nothing to rebuild)"
            continue
        try:
            answer = run_worker(python, "relocate", meta.origin, app_root, meta.source_sha256, meta.patches)
        except CodeSutureError as exc:
            result.error = str(getattr(exc, "reason", exc))
            continue
        result.failed = [(f["record"]["qualname"], f["reason"]) for f in answer["failed"]]
        if answer["overlay"] is None:
            continue
        data = base64.b64decode(answer["overlay"])
        records = [PatchRecord.from_json(r) for r in answer["records"]]
        now = time.time()
        new_meta = OverlayMeta(
            module=meta.module, key=key, origin=meta.origin, source_sha256=meta.source_sha256,
            overlay_sha256=hashlib.sha256(data).hexdigest(), python=answer["python"], created=iso_utc(now),
            expires=overlay_expiry(records), tier=meta.tier, patches=records,
            package=meta.package,
        )
        with out.locked(key):
            result.written = out.write_pair(stem, data, new_meta.dumps(), new_meta.overlay_sha256)
        result.patches = len(records)
    return results


__all__ = ["RebuildResult", "rebuild_for"]
