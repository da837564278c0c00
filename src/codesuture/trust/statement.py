"""The in-toto Statement v1 that attests one overlay.

Follows in-toto attestation spec v1 (``spec/v1/statement.md``). Shape::

    {
      "_type": "https://in-toto.io/Statement/v1",
      "subject": [{"name": "<overlay file name>", "digest": {"sha256": "<hex of overlay bytes>"}}],
      "predicateType": "https://codesuture.dev/attestation/overlay/v1",
      "predicate": {
        "module": "pkg.mod",                  import name, or "__main__"
        "key": "pkg.mod",                     store key
        "source": {"sha256": "<hex>", "origin": "<path when built>"},
        "interpreter": {"implementation": "cpython", "version": "3.12.7",
                        "cache_tag": "cpython-312", "magic": "<hex of MAGIC_NUMBER>"},
        "patches": [<PatchRecord.to_json()>, ...],
        "createdAt": "2026-11-21T09:00:00Z",  RFC 3339 UTC
        "expiresAt": "2026-12-21T09:00:00Z",  RFC 3339 UTC (created + TTL)
        "tier": "auto",                       observe | propose | auto
        "evidence": [ {...}, ... ],           e.g. repro results
        "overlaySet": "inventory",            only when signed with its folder: then the
                                              overlay loads only under that signed set
        "package": {"name": "requests",       only for a module an installed distribution
                    "version": "2.31.0"}      owns: that distribution when it was healed
      }
    }

The predicate type is CodeSuture's own (documented in ``docs/overlay-format.md``).
Statements are validated with ``sigstore.dsse.Statement`` when they are built and when
``codesuture verify`` checks them (``strict=True``). The import-time loader reads a
statement only after its DSSE signature verified against the trust root, and checks
the fields it uses itself: importing sigstore's models (pydantic) would cost more than
100 ms of start-up.
"""

from __future__ import annotations

import json
import re
import time

from codesuture.errors import TrustError
from codesuture.overlay.model import OverlayMeta, package_field
from codesuture.patch.spec import DEFAULT_TTL_SECONDS, PatchRecord
from codesuture.util.clock import is_iso_utc, iso_utc
from codesuture.util.digest import sha256

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: predicateType of an overlay attestation.
PREDICATE_TYPE = "https://codesuture.dev/attestation/overlay/v1"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _validate(statement: bytes, where: object) -> None:
    """Check a Statement we are about to sign against sigstore's in-toto Statement v1
    model (signing only; the loader reads the fields it uses itself). Raises
    TrustError when it does not validate, or when sigstore (part of the ``cli`` extra,
    with the review commands) is not installed."""
    try:
        from sigstore.dsse import Statement
        from sigstore.errors import Error
    except ImportError:
        raise TrustError("signing validates the in-toto Statement with the sigstore package, which is not installed "
                         "(install 'codesuture[cli]', the review tools)", where) from None

    try:
        Statement(statement)
    except Error as exc:
        raise TrustError(f"not an in-toto Statement v1: {str(exc).splitlines()[0]}", where) from None


def build_statement(
    meta: OverlayMeta,
    overlay_name: str,
    overlay_bytes: bytes,
    ttl_seconds: float | None = None,
    *,
    now: float | None = None,
    evidence: "list[dict[str, object]] | None" = None,
    overlay_set: str | None = None,
) -> bytes:
    """Return the Statement JSON bytes (UTF-8, sorted keys, compact) for an overlay.

    *overlay_name*: the overlay's file name (``<stem>.overlay``), the subject name.
    *ttl_seconds*: ``expiresAt`` = now + TTL; when None, ``meta.expires`` is kept if
    set, else the default TTL (30 days) applies. ``createdAt`` is ``meta.created`` or now.
    *overlay_set*: the name of the signed overlay set this overlay is signed into
    (``codesuture sign DIR``); the loader then refuses it outside that set.
    Raises :class:`TrustError` when *overlay_bytes* do not match ``meta.overlay_sha256``.
    """
    now = time.time() if now is None else now
    digest = sha256(overlay_bytes).hexdigest()
    if meta.overlay_sha256 and meta.overlay_sha256.lower() != digest:
        raise TrustError("overlay bytes do not match the digest in their metadata", overlay_name)
    if ttl_seconds is not None:
        if ttl_seconds <= 0:
            raise TrustError(f"TTL must be positive (got {ttl_seconds} s)", overlay_name)
        expires = iso_utc(now + ttl_seconds)
    else:
        expires = meta.expires or iso_utc(now + DEFAULT_TTL_SECONDS)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": overlay_name, "digest": {"sha256": digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "module": meta.module,
            "key": meta.key,
            "source": {"sha256": meta.source_sha256, "origin": meta.origin},
            "interpreter": dict(meta.python),
            "patches": [p.to_json() for p in meta.patches],
            "createdAt": meta.created or iso_utc(now),
            "expiresAt": expires,
            "tier": meta.tier,
            "evidence": list(evidence or []),
        },
    }
    if overlay_set is not None:
        statement["predicate"]["overlaySet"] = overlay_set  # type: ignore[index]
    if meta.package:
        statement["predicate"]["package"] = dict(meta.package)  # type: ignore[index]
    raw = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")
    _validate(raw, overlay_name)
    return raw


def _str(obj: "dict[str, object]", name: str, where: object, *, required: bool = True) -> str:
    value = obj.get(name, None if required else "")
    if not isinstance(value, str):
        raise TrustError(f"statement predicate field {name!r} missing or not a string", where)
    return value


def meta_from_statement(
    statement_bytes: bytes, overlay_name: str, *, strict: bool = True
) -> "tuple[OverlayMeta, str, str | None]":
    """Read a (verified) Statement; return ``(metadata, subject sha256 hex, overlay
    set name or None)``.

    Checks: in-toto Statement v1, :data:`PREDICATE_TYPE`, exactly one subject, whose
    name is *overlay_name* and whose digest is a SHA-256 hex. ``meta.overlay_sha256`` is
    the subject digest, ``meta.expires`` is ``expiresAt``. Raises :class:`TrustError`
    naming *overlay_name*. Comparing the digest with the overlay bytes is the caller's job.
    """
    where = overlay_name
    if strict:
        _validate(statement_bytes, where)
    try:
        data = json.loads(statement_bytes.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrustError(f"statement is not JSON: {exc}", where) from None
    if not isinstance(data, dict) or data.get("_type") != STATEMENT_TYPE:
        raise TrustError(f"not an in-toto Statement v1 (_type must be {STATEMENT_TYPE})", where)
    if data.get("predicateType") != PREDICATE_TYPE:
        raise TrustError(f"wrong predicateType {data.get('predicateType')!r} (expected {PREDICATE_TYPE})", where)
    subjects = data.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise TrustError("statement must have exactly one subject object", where)
    subject = subjects[0]
    if subject.get("name") != overlay_name:
        raise TrustError(f"statement subject {subject.get('name')!r} is not this overlay ({overlay_name!r})", where)
    digest = subject.get("digest", {}).get("sha256") if isinstance(subject.get("digest"), dict) else None
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise TrustError("statement subject has no lowercase SHA-256 hex digest", where)
    pred = data.get("predicate")
    if not isinstance(pred, dict):
        raise TrustError("statement has no predicate", where)
    source = pred.get("source")
    interp = pred.get("interpreter")
    if not isinstance(source, dict) or not isinstance(interp, dict):
        raise TrustError("statement predicate lacks source/interpreter objects", where)
    source_sha = _str(source, "sha256", where)
    if not _HEX64.fullmatch(source_sha):
        raise TrustError("statement source.sha256 is not a SHA-256 hex digest", where)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in interp.items()):
        raise TrustError("statement interpreter fields must be strings", where)
    expires = _str(pred, "expiresAt", where)
    created = _str(pred, "createdAt", where)
    for name, value in (("createdAt", created), ("expiresAt", expires)):
        if not is_iso_utc(value):
            raise TrustError(f"statement {name} {value!r} is not an RFC 3339 UTC time", where)
    overlay_set = pred.get("overlaySet")
    if overlay_set is not None and (not isinstance(overlay_set, str) or not overlay_set):
        raise TrustError("statement overlaySet must be a set name", where)
    try:
        package = package_field(pred.get("package"))
    except ValueError as exc:
        raise TrustError(f"statement {exc}", where) from None
    patches_json = pred.get("patches", [])
    if not isinstance(patches_json, list):
        raise TrustError("statement patches must be a list", where)
    try:
        patches = [PatchRecord.from_json(p) for p in patches_json]
    except (KeyError, TypeError, ValueError) as exc:
        raise TrustError(f"statement has a malformed patch record: {exc}", where) from None
    meta = OverlayMeta(
        module=_str(pred, "module", where),
        key=_str(pred, "key", where),
        origin=_str(source, "origin", where, required=False),
        source_sha256=source_sha,
        overlay_sha256=digest,
        python=dict(interp),
        created=created,
        expires=expires,
        tier=_str(pred, "tier", where, required=False) or "auto",
        patches=patches,
        package=package,
    )
    return meta, digest, overlay_set
