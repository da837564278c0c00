"""The signed overlay set: one in-toto Statement over every overlay of a directory.

``codesuture sign DIR`` signs each overlay (``<stem>.dsse.json``, the reviewable
attestation) and also writes ``overlays.manifest.dsse.json``: a DSSE envelope over an
in-toto Statement v1 whose subjects are all the overlays in DIR (name and SHA-256) and
whose predicate (type :data:`PREDICATE_TYPE`) repeats, per overlay, what the loader
checks::

    {"overlays": {"<stem>.overlay": {"key": ..., "module": ..., "source_sha256": ...,
                  "cache_tag": ..., "magic": ..., "expiresAt": ...,
                  "envelope_sha256": "<hex of <stem>.dsse.json>"}, ...},
     "createdAt": "<RFC 3339 UTC>"}

The loader verifies this one envelope once per directory, then admits each overlay by
comparing SHA-256 digests of the overlay *and of its own envelope* with the set: one
Ed25519 verification per deploy instead of one per module, and the set can never
disagree with an overlay's own attestation (a changed, re-signed or tampered envelope
no longer matches, and that envelope is verified on its own). Revocation and expiry
apply exactly as for single overlays. ``codesuture verify`` checks every envelope itself.
"""

from __future__ import annotations

import hashlib
import json
import os

from codesuture.errors import TrustError
from codesuture.overlay.index import MAX_ENVELOPE_BYTES, read_capped

MANIFEST_NAME = "overlays.manifest.dsse.json"
PREDICATE_TYPE = "https://codesuture.dev/attestation/overlay-set/v1"
_FIELDS = ("key", "module", "source_sha256", "cache_tag", "magic", "expiresAt", "envelope_sha256")


def build_set_statement(items: "list[tuple[str, bytes, object, bytes]]", created: str) -> bytes:
    """Statement JSON bytes for *items* ``(overlay file name, overlay bytes,
    OverlayMeta from its signed statement, its envelope bytes)``. Raises
    :class:`TrustError` when an overlay's bytes do not match its metadata digest."""
    subjects, overlays = [], {}
    for name, data, meta, envelope in sorted(items, key=lambda i: i[0]):
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta.overlay_sha256:  # type: ignore[attr-defined]
            raise TrustError("overlay bytes do not match the digest in their metadata", name)
        subjects.append({"name": name, "digest": {"sha256": digest}})
        overlays[name] = {
            "key": meta.key, "module": meta.module, "source_sha256": meta.source_sha256,  # type: ignore[attr-defined]
            "cache_tag": meta.python.get("cache_tag", ""), "magic": meta.python.get("magic", ""),  # type: ignore[attr-defined]
            "expiresAt": meta.expires,  # type: ignore[attr-defined]
            "envelope_sha256": hashlib.sha256(envelope).hexdigest(),
        }
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {"overlays": overlays, "createdAt": created},
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def parse_set_statement(payload: bytes, where: object) -> "dict[str, dict[str, str]]":
    """``{overlay file name: fields + "sha256"}`` from a verified set statement.
    Raises :class:`TrustError` naming *where* when it is not one."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise TrustError(f"overlay set statement is not JSON: {exc}", where) from None
    if not isinstance(data, dict) or data.get("_type") != "https://in-toto.io/Statement/v1":
        raise TrustError("overlay set is not an in-toto Statement v1", where)
    if data.get("predicateType") != PREDICATE_TYPE:
        raise TrustError(f"wrong predicateType {data.get('predicateType')!r} (expected {PREDICATE_TYPE})", where)
    subjects, pred = data.get("subject"), data.get("predicate")
    overlays = pred.get("overlays") if isinstance(pred, dict) else None
    if not isinstance(subjects, list) or not isinstance(overlays, dict):
        raise TrustError("overlay set statement lacks subjects or predicate.overlays", where)
    out: dict[str, dict[str, str]] = {}
    for subject in subjects:
        name = subject.get("name") if isinstance(subject, dict) else None
        digest = subject.get("digest", {}).get("sha256") if isinstance(subject, dict) and isinstance(subject.get("digest"), dict) else None
        info = overlays.get(name) if isinstance(name, str) else None
        if not isinstance(digest, str) or len(digest) != 64 or not isinstance(info, dict):
            raise TrustError(f"overlay set subject {name!r} is malformed", where)
        if not all(isinstance(info.get(f), str) for f in _FIELDS):
            raise TrustError(f"overlay set entry {name!r} lacks {', '.join(_FIELDS)}", where)
        out[name] = {**{f: info[f] for f in _FIELDS}, "sha256": digest}
    return out


def load_verified_set(directory: "str | os.PathLike[str]", root: object) -> "tuple[dict[str, dict[str, str]], str]":
    """Verify ``DIR/overlays.manifest.dsse.json`` against *root*; return (entries, signer
    key id), or ``({}, "")`` when there is none. Raises :class:`TrustError`."""
    from codesuture.trust import dsse

    path = os.path.join(os.fspath(directory), MANIFEST_NAME)
    raw = read_capped(path, MAX_ENVELOPE_BYTES)
    if raw is None:
        return {}, ""
    verified = dsse.verify(raw, root, dsse.INTOTO_PAYLOAD_TYPE, path)  # type: ignore[arg-type]
    return parse_set_statement(verified.payload, path), verified.keyid
