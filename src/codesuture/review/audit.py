"""Audit a store (a folder or a bundle) as a deploy would load it.

Every overlay is admitted under the load policy of the given trust root
(:func:`codesuture.trust.policy.admit`; without ``--keys`` unsigned overlays are
acceptable), its full patch list read from what vouches for it, and its source found
here from the portable origin (``--app-root`` for ``app:`` origins, this interpreter's
site-packages for installed modules) and compared with the recorded SHA-256. A store
with a signed set gets one line for the set.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from codesuture.errors import CodeSutureError, TrustError


@dataclass
class AuditRow:
    """One overlay's state. ``status``: ``ok`` or the first problem found
    (``refused: <reason>``, ``stale``, ``source not found``). ``signed``: ``set``,
    ``dsse``, ``sigstore`` or ``""``."""

    name: str
    module: str
    status: str
    signed: str
    patches: int
    expires: str
    notes: list[str] = field(default_factory=list)


@dataclass
class AuditReport:
    """Rows per overlay, and the signed set's state (``None``: no set)."""

    rows: list[AuditRow]
    set_status: str | None = None
    set_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.set_ok and not any(r.status.startswith("refused") or r.status in ("stale", "source not found")
                                       for r in self.rows)


def _present(entry: object, suffix: str) -> bool:
    try:
        return entry.read(suffix) is not None  # type: ignore[attr-defined]
    except CodeSutureError:
        return True  # there, but unusable: it still claims a signature


def audit(target: str, keys_dir: str | None = None, app_root: str | None = None, now: float | None = None,
          state_dir: str | None = None) -> AuditReport:
    """Audit the store at *target*; with *state_dir*, also as this host would load it
    (overlays withdrawn here, a set older than one seen here), without writing the
    host state. Raises :class:`~codesuture.errors.CodeSutureError` naming the store
    when it cannot be listed or opened."""
    import logging

    from codesuture.overlay.names import OVERLAY_SUFFIX, resolve_origin
    from codesuture.ship.metadata import entries_of
    from codesuture.trust.policy import LoadPolicy, admit, full_meta, store_set

    policy = LoadPolicy(keys_dir=keys_dir, require_signed=keys_dir is not None)
    now = time.time() if now is None else now
    state = None
    if state_dir:
        from codesuture.trust.state import HostState

        state = HostState(state_dir)
    quiet = logging.getLogger("codesuture.trust")  # the audit reports "signed: no" itself
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        entries = entries_of(target)
        report = AuditReport([])
        for entry in entries:
            row = AuditRow(entry.name, entry.key, "ok", "", 0, "")
            report.rows.append(row)
            try:
                admitted = admit(entry, policy, now)
                meta = full_meta(entry, admitted, policy)
            except CodeSutureError as exc:
                row.status = f"refused: {getattr(exc, 'reason', exc)}"
                row.signed = next((kind for kind, suffix in (("dsse", ".dsse.json"), ("sigstore", ".sigstore.json"))
                                   if _present(entry, suffix)), "")
                continue
            row.signed = "" if admitted.via == "unsigned" else admitted.via
            withdrawn = state.withdrawn().get(hashlib.sha256(admitted.overlay_bytes).hexdigest()) if state else None
            if withdrawn is not None:
                row.status = f"refused: withdrawn by codesuture rollback on this host at {withdrawn.get('at', '?')}"
                continue
            row.module, row.patches, row.expires = meta.module, len(meta.patches), meta.expires
            if meta.python.get("cache_tag") != sys.implementation.cache_tag:
                row.notes.append(f"built for {meta.python.get('cache_tag')} (this is {sys.implementation.cache_tag}): "
                                 "its source is looked up for this interpreter")
            path = resolve_origin(meta.origin, app_root)
            if path is None:
                row.status = "source not found"
                row.notes.append(f"{meta.origin} is not found here (app root {app_root or '?'}; --app-root)")
            else:
                with open(path, "rb") as fh:
                    if hashlib.sha256(fh.read()).hexdigest() != meta.source_sha256:
                        row.status = "stale"
                        row.notes.append(f"{path} changed since the overlay was built: it will not load")
            soon = [p for p in meta.patches if p.expires and p.expired(now + 7 * 86400)]
            if soon:
                row.notes.append(f"{len(soon)} patch(es) expire within 7 days")
        if entries:
            try:
                vset = store_set(entries[0].store, policy)
            except TrustError as exc:
                report.set_status, report.set_ok = f"signed overlay set refused: {exc.reason}", False
            else:
                if vset is not None:
                    report.set_status = (f"signed overlay set {vset.name!r} v{vset.version}, {len(vset.overlays)} overlay(s), "
                                         f"expires {vset.expires}, key {vset.keyid}")
                    seen = state.seen_version(vset.keyid, vset.name) if state else 0
                    if vset.version < seen:
                        report.set_status += f": OLDER than version {seen} seen on this host (it will not load here)"
                        report.set_ok = False
        return report
    finally:
        quiet.setLevel(level)


__all__ = ["AuditRow", "AuditReport", "audit"]
