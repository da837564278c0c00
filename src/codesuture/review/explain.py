"""Explain overlays: what each patch does, from the metadata that vouches for it.

For a signed overlay that is the in-toto Statement in its envelope (verified against
``--keys`` when given, and said so); only an unsigned overlay is described from its
sidecar, and the description says so. Nothing is unmarshalled.
"""

from __future__ import annotations

from typing import Any

from codesuture.overlay.names import ENVELOPE_SUFFIX, OVERLAY_SUFFIX, SIGSTORE_SUFFIX
from codesuture.ship.metadata import entries_of, signed_meta


def matches_function(qualname: str, name: str) -> bool:
    """True when *name* is the qualified name or the plain name of *qualname*."""
    return qualname == name or qualname.rsplit(".", 1)[-1] == name


def explain(target: str, keys_dir: str | None = None, function: str | None = None) -> list[dict[str, Any]]:
    """JSON-ready descriptions of the overlays *target* names (a file, folder or
    bundle): module, source, interpreter, where the description comes from, and every
    patch (guard, expression, value yielded, delta, expiry); *function* keeps only its
    patches (and overlays that have some). Raises CodeSutureError naming the file."""
    docs = []
    for entry in entries_of(target):
        meta, where = signed_meta(entry, keys_dir)
        patches = [p for p in meta.patches if function is None or matches_function(p.qualname, function)]
        if function is not None and not patches:
            continue
        docs.append({
            "overlay": entry.path(OVERLAY_SUFFIX), "module": meta.module, "key": meta.key, "origin": meta.origin,
            "source_sha256": meta.source_sha256, "python": meta.python, "created": meta.created,
            "expires": meta.expires, "tier": meta.tier, "metadata_from": where,
            "signed": [s for s in (ENVELOPE_SUFFIX, SIGSTORE_SUFFIX) if entry.read(s) is not None],
            "patches": [p.to_json() for p in patches],
        })
    return docs


__all__ = ["explain", "entries_of", "signed_meta", "matches_function"]
