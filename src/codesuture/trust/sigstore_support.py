"""Sigstore (keyless) signing and offline verification, through ``sigstore``.

Signing: the overlay's in-toto Statement (see :mod:`codesuture.trust.statement`) is
signed as a DSSE envelope by :meth:`sigstore.sign.Signer.sign_dsse` with an ephemeral
key certified by Fulcio for an OIDC identity and logged in Rekor. The result is a
Sigstore bundle written as ``<stem>.sigstore.json``. This needs the network (the TUF
trust root refresh, Fulcio, Rekor, a timestamp authority) and an OIDC identity token
(``--identity-token`` or an ambient CI credential); no browser flow is started.

Verification is offline: against the trust root embedded in the ``sigstore`` package
(``Verifier.production(offline=True)`` / ``Verifier.staging(offline=True)``), with a
:class:`sigstore.verify.policy.Identity` (certificate SAN + OIDC issuer). Offline
verification copies that trust root into the user's cache/data dirs
(``XDG_CACHE_HOME``/``XDG_DATA_HOME``) on first use.

Every ``sigstore`` import is inside a function. Failures are
:class:`~codesuture.errors.TrustError` naming the bundle file.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from codesuture.logs import logger
from codesuture.errors import TrustError
from codesuture.trust.dsse import INTOTO_PAYLOAD_TYPE

log = logger("codesuture.trust")

_VERIFIERS: dict[bool, Any] = {}
_VERIFIERS_LOCK = threading.Lock()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _require() -> None:
    """Raise TrustError when the ``sigstore`` package (the ``sigstore`` extra) is absent."""
    try:
        import sigstore  # noqa: F401
    except ImportError:
        raise TrustError("Sigstore signatures need the sigstore package, which is not installed "
                         "(install 'codesuture[sigstore]')") from None


def _verifier(staging: bool) -> Any:
    """One offline ``sigstore.verify.Verifier`` per process (production or staging)."""
    with _VERIFIERS_LOCK:
        v = _VERIFIERS.get(staging)
        if v is None:
            from sigstore.verify import Verifier

            try:
                v = Verifier.staging(offline=True) if staging else Verifier.production(offline=True)
            except Exception as exc:  # TUF/cache errors of the sigstore package
                raise TrustError(f"cannot load Sigstore's embedded trust root: {_first_line(exc)}") from None
            _VERIFIERS[staging] = v
        return v


def _load_bundle(raw: bytes, path: object) -> Any:
    _require()
    from sigstore.models import Bundle

    try:
        return Bundle.from_json(raw)
    except Exception as exc:  # InvalidBundle, pydantic/JSON errors
        raise TrustError(f"malformed Sigstore bundle: {_first_line(exc)}", path) from None


def _identity_policy(identity: str, issuer: str, path: object) -> Any:
    from sigstore.verify.policy import Identity

    if not identity or not issuer:
        raise TrustError("Sigstore verification needs both a certificate identity and an OIDC issuer", path)
    return Identity(identity=identity, issuer=issuer)


def bundle_has_envelope(raw: bytes) -> bool:
    """True when Sigstore bundle JSON *raw* carries a DSSE envelope (else a message
    signature over an artifact). Malformed input gives False."""
    try:
        data = json.loads(raw)
    except ValueError:
        return False
    return isinstance(data, dict) and "dsseEnvelope" in data


def verify_statement_bundle(
    raw: bytes, *, identity: str, issuer: str, staging: bool = False, path: object = "<sigstore bundle>"
) -> bytes:
    """Verify a Sigstore bundle holding a DSSE envelope offline; return the verified
    in-toto Statement bytes (payloadType must be ``application/vnd.in-toto+json``).

    Raises :class:`TrustError` naming *path*: malformed bundle, certificate/identity
    mismatch, bad signature, inconsistent log entry, wrong payloadType.
    """
    bundle = _load_bundle(raw, path)
    policy = _identity_policy(identity, issuer, path)
    try:
        payload_type, payload = _verifier(staging).verify_dsse(bundle, policy)
    except TrustError:
        raise
    except Exception as exc:  # VerificationError and friends
        raise TrustError(f"Sigstore verification failed: {_first_line(exc)}", path) from None
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise TrustError(f"wrong payloadType {payload_type!r} (expected {INTOTO_PAYLOAD_TYPE!r})", path)
    return bytes(payload)


def verify_artifact_bundle(
    artifact: bytes,
    raw: bytes,
    *,
    identity: str,
    issuer: str,
    staging: bool = False,
    path: object = "<sigstore bundle>",
) -> None:
    """Verify that Sigstore bundle *raw* (a message signature) signs *artifact* bytes,
    offline. Raises :class:`TrustError` naming *path* on any failure."""
    bundle = _load_bundle(raw, path)
    policy = _identity_policy(identity, issuer, path)
    try:
        _verifier(staging).verify_artifact(artifact, bundle, policy)
    except TrustError:
        raise
    except Exception as exc:
        raise TrustError(f"Sigstore verification failed: {_first_line(exc)}", path) from None


def statement_subject_matches(statement: bytes, artifact: bytes) -> bool:
    """True when an in-toto Statement has a subject whose sha256 is that of *artifact*
    (the subject name is not compared, as in sigstore's own check)."""
    digest = hashlib.sha256(artifact).hexdigest()
    try:
        data = json.loads(statement)
        return any(
            isinstance(s, dict) and isinstance(s.get("digest"), dict) and s["digest"].get("sha256") == digest
            for s in data.get("subject", [])
        )
    except (ValueError, AttributeError, TypeError):
        return False


def identity_token(token: str | None) -> Any:
    """A ``sigstore.oidc.IdentityToken`` from *token*, or from an ambient credential
    (CI OIDC) when *token* is None. Raises :class:`TrustError` when there is none or
    it is malformed/expired. Never starts an interactive browser flow."""
    _require()
    from sigstore.oidc import IdentityToken, detect_credential

    try:
        raw = token or detect_credential()
    except Exception as exc:
        raise TrustError(f"ambient OIDC credential detection failed: {_first_line(exc)}") from None
    if not raw:
        raise TrustError("no OIDC identity token: pass --identity-token or run where an ambient credential exists")
    try:
        return IdentityToken(raw)
    except Exception as exc:
        raise TrustError(f"unusable identity token: {_first_line(exc)}") from None


def signing_context(staging: bool = False) -> Any:
    """A ``sigstore.sign.SigningContext`` for production or staging. Needs the network
    (refreshes the trust configuration over TUF); raises :class:`TrustError` when the
    services cannot be reached."""
    _require()
    from sigstore.models import ClientTrustConfig
    from sigstore.sign import SigningContext

    try:
        config = ClientTrustConfig.staging() if staging else ClientTrustConfig.production()
        return SigningContext.from_trust_config(config)
    except Exception as exc:
        raise TrustError(f"cannot reach Sigstore services: {_first_line(exc)}") from None


def sign_statement(statement: bytes, token: Any, context: Any) -> bytes:
    """Sign in-toto Statement bytes keyless; return the Sigstore bundle JSON bytes.

    *token*: from :func:`identity_token`; *context*: from :func:`signing_context`.
    Raises :class:`TrustError` on a malformed statement or any signing failure.
    """
    from sigstore.dsse import Statement
    from sigstore.errors import Error

    try:
        stmt = Statement(statement)
    except Error as exc:
        raise TrustError(f"not an in-toto Statement v1: {_first_line(exc)}") from None
    try:
        with context.signer(token, cache=True) as signer:
            bundle = signer.sign_dsse(stmt)
    except Exception as exc:
        raise TrustError(f"Sigstore signing failed: {_first_line(exc)}") from None
    out = bundle.to_json()
    return out.encode("utf-8") if isinstance(out, str) else bytes(out)
