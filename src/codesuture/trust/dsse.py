"""DSSE v1 envelopes signed with Ed25519.

Follows the DSSE specification v1 (secure-systems-lab/dsse, ``envelope.md`` and
``protocol.md``):

* PAE(type, body) = ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, where LEN is
  the byte length as ASCII decimal without leading zeros and type is UTF-8.
* The signature is over PAE(payloadType, payload), never over the JSON.
* Envelope JSON: ``{"payload": <base64>, "payloadType": <str>, "signatures":
  [{"keyid": <str>, "sig": <base64>}, ...]}``. Base64 is standard or URL-safe, padded
  or not (the spec allows both). ``keyid`` is an unauthenticated hint.

Verification: at least one signature must verify under a key of the trust root that is
not revoked. Otherwise :class:`~codesuture.errors.TrustError` says why: malformed
envelope, wrong payloadType, untrusted key, revoked key, or bad signature.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import namedtuple

from codesuture.errors import TrustError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from codesuture.trust.keys import TrustRoot


#: payloadType of an in-toto Statement (in-toto attestation spec v1, envelope layer).
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: At most this many signatures are examined (bounds work on hostile input).
MAX_SIGNATURES = 16


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-Authentication Encoding of DSSE v1: the exact bytes that are signed."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def _b64decode(text: object, what: str, path: object) -> bytes:
    if not isinstance(text, str):
        raise TrustError(f"malformed envelope: {what} is not a base64 string", path)
    s = text.strip()
    s += "=" * (-len(s) % 4)
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s.encode("ascii"))
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise TrustError(f"malformed envelope: {what} is not valid base64", path) from None


class Signature(namedtuple("_Signature", "keyid sig")):
    """One DSSE signature: ``keyid`` (``""`` when absent) and ``sig`` bytes."""

    __slots__ = ()


class Envelope(namedtuple("_Envelope", "payload payload_type signatures")):
    """A parsed DSSE envelope (signatures not yet verified): ``payload`` bytes,
    ``payload_type`` str, ``signatures`` a tuple of :class:`Signature`."""

    __slots__ = ()

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def to_json(self) -> "dict[str, object]":
        return {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")} for s in self.signatures
            ],
        }

    def dumps(self) -> bytes:
        """Envelope JSON bytes (indented, newline-terminated)."""
        return (json.dumps(self.to_json(), indent=2) + "\n").encode("utf-8")

    @classmethod
    def loads(cls, raw: bytes, path: object = "<envelope>") -> "Envelope":
        """Parse envelope JSON strictly; raises :class:`TrustError` ("malformed
        envelope: ...") naming *path*. Nothing is verified here."""
        try:
            data = json.loads(raw.decode("utf-8"))  # JSON exchanged between systems is UTF-8 (RFC 8259)
        except UnicodeDecodeError:
            raise TrustError("malformed envelope: not UTF-8", path) from None
        except ValueError as exc:
            raise TrustError(f"malformed envelope: not JSON ({exc})", path) from None
        if not isinstance(data, dict):
            raise TrustError("malformed envelope: not a JSON object", path)
        payload_type = data.get("payloadType")
        if not isinstance(payload_type, str) or not payload_type:
            raise TrustError("malformed envelope: payloadType missing or not a string", path)
        try:
            payload_type.encode("utf-8")
        except UnicodeEncodeError:
            raise TrustError("malformed envelope: payloadType is not valid UTF-8", path) from None
        payload = _b64decode(data.get("payload"), "payload", path)
        sigs = data.get("signatures")
        if not isinstance(sigs, list) or not sigs:
            raise TrustError("malformed envelope: no signatures", path)
        if len(sigs) > MAX_SIGNATURES:
            raise TrustError(f"malformed envelope: too many signatures ({len(sigs)} > {MAX_SIGNATURES})", path)
        out = []
        for i, s in enumerate(sigs):
            if not isinstance(s, dict):
                raise TrustError(f"malformed envelope: signature {i} is not an object", path)
            kid = s.get("keyid", "")
            if kid is None:
                kid = ""
            if not isinstance(kid, str):
                raise TrustError(f"malformed envelope: signature {i} keyid is not a string", path)
            sig = _b64decode(s.get("sig"), f"signature {i}", path)
            if not sig:
                raise TrustError(f"malformed envelope: signature {i} is empty", path)
            out.append(Signature(kid, sig))
        return cls(payload, payload_type, tuple(out))


class Verified(namedtuple("_Verified", "payload payload_type keyid")):
    """A verified envelope: its payload, payload type, and the key id whose signature verified."""

    __slots__ = ()


def sign(payload: bytes, payload_type: str, private_key: "Ed25519PrivateKey") -> Envelope:
    """Sign *payload* under DSSE v1 with an Ed25519 *private_key*; the signature's
    ``keyid`` is the key id of its public key (see :func:`codesuture.trust.keys.keyid`)."""
    from codesuture.trust.keys import keyid

    sig = private_key.sign(pae(payload_type, payload))
    return Envelope(payload, payload_type, (Signature(keyid(private_key.public_key()), sig),))


def verify(
    raw: bytes,
    root: "TrustRoot",
    payload_type: str | None = INTOTO_PAYLOAD_TYPE,
    path: object = "<envelope>",
) -> Verified:
    """Verify envelope JSON *raw* against *root*; return the verified payload.

    *payload_type*: the required payloadType (None accepts any). Raises
    :class:`TrustError` naming *path* with the reason: ``malformed envelope: ...``,
    ``wrong payloadType ...``, ``revoked key ...``, ``bad signature ...``,
    ``untrusted key ...`` or ``trust root has no public keys``. The payload is not
    interpreted here.
    """
    from codesuture.trust.ed25519 import is_bad_signature

    env = Envelope.loads(raw, path)
    if payload_type is not None and env.payload_type != payload_type:
        raise TrustError(f"wrong payloadType {env.payload_type!r} (expected {payload_type!r})", path)
    if not root.keys:
        raise TrustError("trust root has no public keys", root.path or path)
    message = env.pae()
    revoked: list[str] = []
    bad: list[str] = []
    untrusted: list[str] = []
    for s in env.signatures:
        # keyid is only a hint: try the named key, or every key when it names none.
        candidates = [s.keyid] if s.keyid in root.keys else list(root.keys)
        verified_by = None
        for kid in candidates:
            try:
                root.keys[kid].verify(s.sig, message)
            except Exception as exc:  # InvalidSignature: classified without importing it first
                if not is_bad_signature(exc):
                    raise
                continue
            verified_by = kid
            break
        if verified_by is None:
            (bad if s.keyid in root.keys else untrusted).append(s.keyid or "<no keyid>")
        elif verified_by in root.revoked_keys:
            revoked.append(verified_by)
        else:
            return Verified(env.payload, env.payload_type, verified_by)
    if revoked:
        raise TrustError(f"revoked key {revoked[0]}", path)
    if bad:
        raise TrustError(f"bad signature (key {bad[0]})", path)
    raise TrustError(f"untrusted key {untrusted[0]} (no key of the trust root verifies the signature)", path)
