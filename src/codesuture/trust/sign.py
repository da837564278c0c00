"""Sign and verify overlays on disk: what ``codesuture sign`` / ``verify`` call.

* :func:`sign_path`: for each ``<stem>.overlay`` (a file, or every one in a folder) read
  its ``<stem>.json`` metadata, check the overlay digest against it, build the in-toto
  Statement and write ``<stem>.dsse.json`` (DSSE v1, Ed25519) atomically.
* :func:`sign_path_sigstore`: the same, keyless, writing ``<stem>.sigstore.json``.
* :func:`verify_path`: verify overlays (files or folders) and bundles against a trust
  root exactly as the loader's policy would admit them.
* :func:`verify_path_sigstore`: verify files against Sigstore bundles beside them.

Results are data (:class:`SignResult`, :class:`VerifyResult`); nothing is printed.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from codesuture.logs import logger
from codesuture.errors import CodeSutureError, TrustError
from codesuture.overlay.model import OverlayMeta
from codesuture.overlay.store import (
    ENVELOPE_SUFFIX,
    MAX_ENVELOPE_BYTES,
    META_SUFFIX,
    MAX_META_BYTES,
    OVERLAY_SUFFIX,
    SIGSTORE_SUFFIX,
    DirEntry,
    atomic_write,
    parse_stem,
    read_capped,
)
from codesuture.overlay.format import MAX_OVERLAY_BYTES
from codesuture.patch.spec import parse_iso_utc

if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logger("codesuture.trust")


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc)


@dataclass(frozen=True)
class SignResult:
    """One overlay signed (``output`` written) or not (``reason``)."""

    overlay: Path
    ok: bool
    output: Path | None = None
    signer: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class VerifyResult:
    """One verified (or refused) file: an overlay, a bundle member, or an artifact."""

    path: str
    ok: bool
    reason: str = ""
    signer: str | None = None
    module: str | None = None
    expires: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "ok": self.ok, "reason": self.reason, "signer": self.signer,
            "module": self.module, "expires": self.expires,
        }


def find_overlays(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Overlay files named by *paths*: ``*.overlay`` files as given, and every
    ``*.overlay`` directly inside a folder. Raises :class:`TrustError` for a path that
    is neither (or does not exist)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.name.endswith(OVERLAY_SUFFIX) and q.is_file()))
        elif p.is_file() and p.name.endswith(OVERLAY_SUFFIX):
            out.append(p)
        elif not p.exists():
            raise TrustError("no such file or folder", p)
        else:
            raise TrustError(f"not an overlay ({OVERLAY_SUFFIX}) or a folder of overlays", p)
    return out


def _stem(overlay: Path) -> str:
    return overlay.name[: -len(OVERLAY_SUFFIX)]


def _read_overlay_and_meta(overlay: Path) -> tuple[bytes, OverlayMeta]:
    data = read_capped(overlay, MAX_OVERLAY_BYTES)
    if data is None:
        raise TrustError("overlay file is missing", overlay)
    meta_path = overlay.with_name(_stem(overlay) + META_SUFFIX)
    raw = read_capped(meta_path, MAX_META_BYTES)
    if raw is None:
        raise TrustError("metadata sidecar is missing", meta_path)
    meta = OverlayMeta.loads(raw, meta_path)
    if hashlib.sha256(data).hexdigest() != meta.overlay_sha256.lower():
        raise TrustError("overlay bytes do not match the digest in their metadata", overlay)
    return data, meta


def sign_overlay(
    overlay: str | os.PathLike[str],
    private_key: "Ed25519PrivateKey",
    *,
    ttl_seconds: float | None = None,
    now: float | None = None,
) -> SignResult:
    """Sign one overlay; write ``<stem>.dsse.json``. Raises :class:`CodeSutureError`
    (TrustError/OverlayError naming the file) when it cannot be signed."""
    from codesuture.trust import dsse
    from codesuture.trust.statement import build_statement

    path = Path(overlay)
    data, meta = _read_overlay_and_meta(path)
    statement = build_statement(meta, path.name, data, ttl_seconds, now=now)
    envelope = dsse.sign(statement, dsse.INTOTO_PAYLOAD_TYPE, private_key)
    out = atomic_write(path.with_name(_stem(path) + ENVELOPE_SUFFIX), envelope.dumps())
    kid = envelope.signatures[0].keyid
    log.info("signed %s with key %s -> %s", path, kid, out)
    return SignResult(path, True, out, kid)


def sign_path(
    paths: Iterable[str | os.PathLike[str]],
    private_key: "Ed25519PrivateKey",
    *,
    ttl_seconds: float | None = None,
    now: float | None = None,
) -> list[SignResult]:
    """Sign every overlay named by *paths* (files or folders); one result per overlay
    (or per bad path). For each folder, also sign the overlay set
    (``overlays.manifest.dsse.json``, see :mod:`codesuture.trust.manifest`) over every
    overlay it holds whose signature is current. Never raises for one bad overlay: the
    result says why."""
    paths = list(paths)
    results = _each_overlay(paths, lambda overlay: sign_overlay(overlay, private_key, ttl_seconds=ttl_seconds, now=now))
    for raw in paths:
        if Path(raw).is_dir():
            try:
                results.append(sign_overlay_set(Path(raw), private_key, now=now))
            except CodeSutureError as exc:
                results.append(SignResult(Path(raw), False, reason=_reason(exc)))
    return results


def sign_overlay_set(directory: Path, private_key: "Ed25519PrivateKey", *, now: float | None = None) -> SignResult:
    """Write ``DIR/overlays.manifest.dsse.json``: one signed in-toto Statement over every
    overlay in *directory* that has its own envelope, with the ``expiresAt`` of that
    envelope's statement. Raises :class:`CodeSutureError` naming the file."""
    from codesuture.trust import dsse
    from codesuture.trust.manifest import MANIFEST_NAME, build_set_statement
    from codesuture.trust.statement import meta_from_statement
    from codesuture.patch.spec import iso_utc

    items = []
    for overlay in find_overlays([directory]):
        raw = read_capped(overlay.with_name(_stem(overlay) + ENVELOPE_SUFFIX), MAX_ENVELOPE_BYTES)
        if raw is None:
            continue
        data, _ = _read_overlay_and_meta(overlay)
        meta, digest = meta_from_statement(dsse.Envelope.loads(raw, overlay).payload, overlay.name, strict=False)
        if hashlib.sha256(data).hexdigest() == digest:  # an overlay changed since it was signed stays out
            items.append((overlay.name, data, meta, raw))
    statement = build_set_statement(items, iso_utc(time.time() if now is None else now))
    envelope = dsse.sign(statement, dsse.INTOTO_PAYLOAD_TYPE, private_key)
    out = atomic_write(directory / MANIFEST_NAME, envelope.dumps())
    return SignResult(directory / MANIFEST_NAME, True, out, envelope.signatures[0].keyid)


def _each_overlay(paths: Iterable[str | os.PathLike[str]], sign_one: Any) -> list[SignResult]:
    """``sign_one(overlay) -> SignResult`` for every overlay named by *paths*; a bad
    path or a :class:`CodeSutureError` becomes a failed result naming the file."""
    results: list[SignResult] = []
    for raw in paths:
        try:
            overlays = find_overlays([raw])
        except CodeSutureError as exc:
            results.append(SignResult(Path(raw), False, reason=_reason(exc)))
            continue
        for overlay in overlays:
            try:
                results.append(sign_one(overlay))
            except CodeSutureError as exc:
                results.append(SignResult(overlay, False, reason=_reason(exc)))
    return results


def sign_path_sigstore(
    paths: Iterable[str | os.PathLike[str]],
    *,
    identity_token: str | None = None,
    ttl_seconds: float | None = None,
    staging: bool = False,
    context: Any = None,
    now: float | None = None,
) -> list[SignResult]:
    """Sign overlays keyless with Sigstore; write ``<stem>.sigstore.json`` (a Sigstore
    bundle with a DSSE envelope over the same in-toto Statement). Needs the network and
    an OIDC token (*identity_token*, else an ambient credential). *context*: a
    ``sigstore.sign.SigningContext`` (default: production or staging). Raises
    :class:`TrustError` when no identity or no signing service is available; per-overlay
    failures are in the results."""
    from codesuture.trust import sigstore_support as ss
    from codesuture.trust.statement import build_statement

    token = ss.identity_token(identity_token)
    ctx = context if context is not None else ss.signing_context(staging)

    def sign_one(overlay: Path) -> SignResult:
        data, meta = _read_overlay_and_meta(overlay)
        statement = build_statement(meta, overlay.name, data, ttl_seconds, now=now)
        bundle = ss.sign_statement(statement, token, ctx)
        out = atomic_write(overlay.with_name(_stem(overlay) + SIGSTORE_SUFFIX), bundle)
        return SignResult(overlay, True, out, f"sigstore:{getattr(token, 'identity', '?')}")

    return _each_overlay(paths, sign_one)


def _verify_overlay(overlay: Path, keys_dir: Path, root: Any, now: float | None) -> VerifyResult:
    from codesuture.trust.policy import LoadPolicy, admit

    parsed = parse_stem(_stem(overlay))
    if parsed is None:
        return VerifyResult(str(overlay), False, "file name is not <key>.<cache_tag>.<source sha256[:16]>.overlay")
    entry = DirEntry(overlay.parent, _stem(overlay), *parsed)
    try:
        admitted = admit(entry, LoadPolicy(keys_dir, require_signed=True, strict_statements=True), now, root=root)
    except CodeSutureError as exc:
        return VerifyResult(str(overlay), False, _reason(exc))
    return VerifyResult(str(overlay), True, "", admitted.signer, admitted.meta.module, admitted.meta.expires)


def verify_path(
    paths: Iterable[str | os.PathLike[str]],
    keys_dir: str | os.PathLike[str],
    *,
    now: float | None = None,
) -> list[VerifyResult]:
    """Verify overlays (``*.overlay`` files, folders of them) and bundles (any other
    file) against the trust root in *keys_dir*, loaded fresh, under the strictest load
    policy (signed required; signature, subject name and digest, revocation, expiry).
    *now*: epoch seconds for expiry. One result per overlay, bundle member, or bad path;
    never raises for bad input."""
    from codesuture.overlay.bundle import verify_bundle
    from codesuture.trust.keys import TrustRoot

    kd = Path(keys_dir)
    try:
        root = TrustRoot.load(kd)
    except TrustError as exc:
        return [VerifyResult(str(exc.path or kd), False, f"trust root: {exc.reason}")]
    now = time.time() if now is None else now
    results: list[VerifyResult] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() and not p.name.endswith(OVERLAY_SUFFIX):
            report = verify_bundle(p, kd, now=now)
            if report.reason and not report.overlays:
                results.append(VerifyResult(str(p), False, report.reason))
            for m in report.overlays:
                results.append(VerifyResult(f"{p}:{m.stem}{OVERLAY_SUFFIX}", m.ok, m.reason, m.signer, m.module, m.expires))
            continue
        try:
            overlays = find_overlays([p])
        except CodeSutureError as exc:
            results.append(VerifyResult(str(p), False, _reason(exc)))
            continue
        if not overlays:
            results.append(VerifyResult(str(p), False, "no overlays found"))
        results.extend(_verify_overlay(o, kd, root, now) for o in overlays)
        if p.is_dir():
            results.extend(_verify_set(p, root))
    return results


def _verify_set(directory: Path, root: Any) -> list[VerifyResult]:
    """Check the directory's signed overlay set, when there is one: its signature, and
    that every overlay and envelope it pins is still the one on disk."""
    from codesuture.trust.manifest import MANIFEST_NAME, load_verified_set

    path = directory / MANIFEST_NAME
    if not path.exists():
        return []
    try:
        entries, signer = load_verified_set(directory, root)
    except TrustError as exc:
        return [VerifyResult(str(path), False, exc.reason)]
    for name, info in sorted(entries.items()):
        overlay = directory / name
        try:
            data = read_capped(overlay, MAX_OVERLAY_BYTES)
            envelope = read_capped(overlay.with_name(_stem(overlay) + ENVELOPE_SUFFIX), MAX_ENVELOPE_BYTES)
        except CodeSutureError as exc:
            return [VerifyResult(str(path), False, f"covers {name}, which cannot be read: {_reason(exc)}")]
        if data is None or envelope is None or hashlib.sha256(data).hexdigest() != info["sha256"] \
                or hashlib.sha256(envelope).hexdigest() != info["envelope_sha256"]:
            return [VerifyResult(str(path), False, f"stale for {name}: sign the folder again (codesuture sign --key KEY {directory})")]
    return [VerifyResult(str(path), True, f"signed overlay set of {len(entries)} overlay(s)", signer)]


def _sigstore_bundle_for(path: Path) -> Path | None:
    candidates = [path.with_name(path.name + SIGSTORE_SUFFIX)]
    if path.name.endswith(OVERLAY_SUFFIX):
        candidates.append(path.with_name(_stem(path) + SIGSTORE_SUFFIX))
    return next((c for c in candidates if c.is_file()), None)


def verify_path_sigstore(
    paths: Iterable[str | os.PathLike[str]],
    *,
    identity: str,
    issuer: str,
    staging: bool = False,
) -> list[VerifyResult]:
    """Verify files against the Sigstore bundle beside each (``<file>.sigstore.json``,
    or ``<stem>.sigstore.json`` for an overlay), offline, for certificate *identity*
    and OIDC *issuer*. A DSSE bundle must carry an in-toto Statement with a subject
    whose sha256 is the file's; for an overlay the statement is also checked like the
    loader does (subject name, predicate). Never raises for bad input."""
    from codesuture.trust import sigstore_support as ss

    results: list[VerifyResult] = []
    for raw in paths:
        p = Path(raw)
        files = find_overlays([p]) if p.is_dir() else [p]
        for f in files:
            results.append(_verify_sigstore_file(f, identity, issuer, staging, ss))
    return results


def _verify_sigstore_file(f: Path, identity: str, issuer: str, staging: bool, ss: Any) -> VerifyResult:
    from codesuture.trust.statement import meta_from_statement

    bundle_path = _sigstore_bundle_for(f)
    if bundle_path is None:
        return VerifyResult(str(f), False, f"no Sigstore bundle beside it ({f.name}{SIGSTORE_SUFFIX})")
    try:
        artifact = read_capped(f, 1 << 30)
        raw = read_capped(bundle_path, 16 * 1024 * 1024)
        if artifact is None or raw is None:
            raise TrustError("file vanished", f)
        signer = f"sigstore:{identity}"
        if ss.bundle_has_envelope(raw):
            statement = ss.verify_statement_bundle(raw, identity=identity, issuer=issuer, staging=staging, path=bundle_path)
            if f.name.endswith(OVERLAY_SUFFIX):
                meta, digest = meta_from_statement(statement, f.name)
                if digest != hashlib.sha256(artifact).hexdigest():
                    raise TrustError("overlay bytes do not match the signed subject digest (tampered)", f)
                if parse_iso_utc(meta.expires) <= time.time():
                    raise TrustError(f"expired at {meta.expires}", f)
                return VerifyResult(str(f), True, "", signer, meta.module, meta.expires)
            if not ss.statement_subject_matches(statement, artifact):
                raise TrustError("no statement subject has this file's sha256 (signature is valid, but for other bytes)", f)
        else:
            ss.verify_artifact_bundle(artifact, raw, identity=identity, issuer=issuer, staging=staging, path=bundle_path)
    except CodeSutureError as exc:
        return VerifyResult(str(f), False, _reason(exc))
    return VerifyResult(str(f), True, "", signer)
