"""The overlays a review target names, and the metadata that vouches for each.

A target is one ``*.overlay`` file, a store folder or a bundle
(:func:`entries_of`); an overlay's metadata comes from its DSSE envelope's in-toto
Statement (verified against a trust root when one is given), its Sigstore bundle's
Statement, or, for an unsigned overlay only, its sidecar (:func:`signed_meta`). Shared
by the review commands (``explain``, ``audit``, ``rebuild``, ``rollback``, ``suggest``)
and the SBOM writer. Nothing is unmarshalled.
"""

from __future__ import annotations

import os
from typing import Any

from codesuture.errors import OverlayError, TrustError
from codesuture.overlay.model import OverlayMeta
from codesuture.overlay.names import ENVELOPE_SUFFIX, META_SUFFIX, OVERLAY_SUFFIX, SIGSTORE_SUFFIX, parse_stem


def entries_of(target: str) -> list[Any]:
    """The store entries *target* names: one ``*.overlay`` file, or every overlay of a
    folder or bundle. Raises :class:`~codesuture.errors.CodeSutureError` naming it."""
    from codesuture.store import Entry
    from codesuture.store.kinds import open_store
    from codesuture.store.directory import DirectoryStore

    if os.path.isfile(target) and target.endswith(OVERLAY_SUFFIX):
        stem = os.path.basename(target)[: -len(OVERLAY_SUFFIX)]
        parsed = parse_stem(stem)
        if parsed is None:
            raise OverlayError(target, "file name is not <key>.<cache_tag>.<source sha256[:16]>.overlay")
        return [Entry(DirectoryStore(os.path.dirname(os.path.abspath(target)), budget=None), stem, *parsed)]
    if not os.path.exists(target):
        raise OverlayError(target, "no such file or folder")
    store = open_store(target)
    if store.kind == "directory":
        store = DirectoryStore(target, budget=None)
    return [e for es in store.index().values() for e in es]


def signed_meta(entry: Any, keys_dir: str | None) -> tuple[OverlayMeta, str]:
    """``(metadata, where it came from)`` for *entry*: its envelope's Statement
    (verified with *keys_dir* when given), its Sigstore bundle's Statement (not
    verified here), or its sidecar for an unsigned overlay. Raises CodeSutureError."""
    from codesuture.trust.dsse import Envelope
    from codesuture.trust.statement import meta_from_statement

    envelope = entry.read(ENVELOPE_SUFFIX)
    if envelope is not None:
        if keys_dir:
            from codesuture.trust import dsse
            from codesuture.trust.keys import TrustRoot

            try:
                verified = dsse.verify(envelope, TrustRoot.load(keys_dir), dsse.INTOTO_PAYLOAD_TYPE, entry.path(ENVELOPE_SUFFIX))
            except TrustError as exc:
                raise TrustError(f"signed Statement does not verify: {exc.reason}", entry.path(ENVELOPE_SUFFIX)) from None
            payload, where = verified.payload, f"signed Statement (verified, key {verified.keyid})"
        else:
            payload, where = Envelope.loads(envelope, entry.path(ENVELOPE_SUFFIX)).payload, "signed Statement (not verified: pass --keys)"
        return meta_from_statement(payload, entry.name + OVERLAY_SUFFIX, strict=False)[0], where
    bundle = entry.read(SIGSTORE_SUFFIX)
    if bundle is not None:
        import base64
        import json

        try:
            payload = base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TrustError(f"malformed Sigstore bundle: {exc}", entry.path(SIGSTORE_SUFFIX)) from None
        return meta_from_statement(payload, entry.name + OVERLAY_SUFFIX, strict=False)[0], \
            "Sigstore-signed Statement (not verified here: codesuture verify --sigstore)"
    raw = entry.read(META_SUFFIX)
    if raw is None:
        raise OverlayError(entry.path(META_SUFFIX), "metadata file is missing (and the overlay is not signed)")
    return OverlayMeta.loads(raw, entry.path(META_SUFFIX)), "UNSIGNED: from the metadata sidecar, which nothing vouches for"


__all__ = ["entries_of", "signed_meta"]
