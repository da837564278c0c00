"""Explain and audit overlays on disk.

:func:`explain` describes one overlay from its metadata (never unmarshalling it);
:func:`audit` checks every overlay in a store the way the loader would, and adds what
the loader cannot know in advance: whether the source at the recorded origin still
has the recorded bytes.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from codesuture.errors import CodeSutureError
from codesuture.overlay.index import MAX_META_BYTES, META_SUFFIX, index_directory
from codesuture.overlay.model import OverlayMeta
from codesuture.overlay.store import ENVELOPE_SUFFIX, SIGSTORE_SUFFIX, read_capped


@dataclass
class AuditRow:
    """One overlay's state. ``status``: ``ok`` or the first problem found
    (``refused: <reason>``, ``stale``, ``origin missing``, ``other python``).
    ``signed``: ``dsse``, ``sigstore`` or ``""``."""

    name: str
    module: str
    status: str
    signed: str
    patches: int
    expires: str
    notes: list[str] = field(default_factory=list)


def load_meta(overlay: Path) -> OverlayMeta:
    """Metadata of the overlay file *overlay* (``<stem>.overlay``); raises
    :class:`~codesuture.errors.OverlayError` naming the file when missing or malformed."""
    from codesuture.errors import OverlayError

    meta_path = overlay.with_name(overlay.name[: -len(".overlay")] + META_SUFFIX)
    raw = read_capped(meta_path, MAX_META_BYTES)
    if raw is None:
        raise OverlayError(meta_path, "metadata file is missing")
    return OverlayMeta.loads(raw, meta_path)


def explain(overlay: Path) -> dict[str, object]:
    """A JSON-ready description of one overlay: module, source, interpreter, signature
    files present, and every patch (guard, expression, value yielded, delta, expiry)."""
    meta = load_meta(overlay)
    stem = overlay.name[: -len(".overlay")]
    return {
        "overlay": str(overlay),
        "module": meta.module,
        "key": meta.key,
        "origin": meta.origin,
        "source_sha256": meta.source_sha256,
        "python": meta.python,
        "created": meta.created,
        "expires": meta.expires,
        "tier": meta.tier,
        "signed": [s for s in (ENVELOPE_SUFFIX, SIGSTORE_SUFFIX) if (overlay.parent / (stem + s)).exists()],
        "patches": [p.to_json() for p in meta.patches],
    }


def audit(directory: Path, keys_dir: Path | None = None, now: float | None = None) -> list[AuditRow]:
    """Check every overlay in *directory* under the load policy (``keys_dir``: the
    trust root; None: unsigned overlays are acceptable) and against its origin source.
    Raises :class:`~codesuture.errors.OverlayError` when the directory cannot be listed."""
    from codesuture.trust.policy import LoadPolicy, admit

    import logging

    policy = LoadPolicy(keys_dir=keys_dir)
    now = time.time() if now is None else now
    quiet = logging.getLogger("codesuture.trust")  # the audit reports "signed: no" itself
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    rows: list[AuditRow] = []
    try:
        index = index_directory(directory)
    except OSError as exc:
        from codesuture.errors import OverlayError

        raise OverlayError(directory, f"cannot list overlay store: {exc.strerror or exc}") from None
    for entries in index.values():
        for entry in entries:
            signed = "dsse" if os.path.exists(entry.path(ENVELOPE_SUFFIX)) else (
                "sigstore" if os.path.exists(entry.path(SIGSTORE_SUFFIX)) else "")
            row = AuditRow(entry.name, entry.key, "ok", signed, 0, "")
            try:
                meta = admit(entry, policy, now).meta
            except CodeSutureError as exc:
                row.status = f"refused: {getattr(exc, 'reason', exc)}"
                rows.append(row)
                continue
            row.module, row.patches, row.expires = meta.module, len(meta.patches), meta.expires
            import sys

            if meta.python.get("cache_tag") != sys.implementation.cache_tag:
                row.notes.append(f"built for {meta.python.get('cache_tag')} (this is {sys.implementation.cache_tag})")
            try:
                current = hashlib.sha256(Path(meta.origin).read_bytes()).hexdigest()
            except OSError:
                row.status = "origin missing"
                row.notes.append(f"{meta.origin} is not readable here (a deploy at another path is fine)")
            else:
                if current != meta.source_sha256:
                    row.status = "stale"
                    row.notes.append(f"{meta.origin} changed since the overlay was built")
            soon = [p for p in meta.patches if p.expires and p.expired(now + 7 * 86400)]
            if soon:
                row.notes.append(f"{len(soon)} patch(es) expire within 7 days")
            rows.append(row)
    quiet.setLevel(level)
    return rows
