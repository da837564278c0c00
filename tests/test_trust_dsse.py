"""DSSE v1: PAE, envelopes, verification reasons, and interop with securesystemslib."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from codesuture.errors import TrustError
from codesuture.trust import dsse
from codesuture.trust.keys import TrustRoot, keyid

PT = dsse.INTOTO_PAYLOAD_TYPE


def test_pae_matches_the_spec_example():
    # The worked example of the DSSE v1 protocol document.
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert dsse.pae("", b"") == b"DSSEv1 0  0 "
    # LEN counts bytes, not characters.
    assert dsse.pae("t\u00e9", b"\xff") == b"DSSEv1 3 t\xc3\xa9 1 \xff"


def test_envelope_shape_and_roundtrip():
    k = Ed25519PrivateKey.generate()
    env = dsse.sign(b'{"a": 1}', PT, k)
    data = json.loads(env.dumps())
    assert set(data) == {"payload", "payloadType", "signatures"}
    assert base64.b64decode(data["payload"]) == b'{"a": 1}'
    assert data["payloadType"] == PT
    assert data["signatures"][0]["keyid"] == keyid(k.public_key())
    k.public_key().verify(base64.b64decode(data["signatures"][0]["sig"]), dsse.pae(PT, b'{"a": 1}'))
    v = dsse.verify(env.dumps(), TrustRoot.of(k.public_key()))
    assert (v.payload, v.payload_type, v.keyid) == (b'{"a": 1}', PT, keyid(k.public_key()))


def _env(payload=b"{}", key=None, **overrides):
    key = key or Ed25519PrivateKey.generate()
    data = json.loads(dsse.sign(payload, PT, key).dumps())
    data.update(overrides)
    return key, data


def test_bad_signature():
    k, data = _env()
    sig = bytearray(base64.b64decode(data["signatures"][0]["sig"]))
    sig[0] ^= 1
    data["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(TrustError, match="bad signature"):
        dsse.verify(json.dumps(data).encode(), TrustRoot.of(k.public_key()))


def test_payload_changed_after_signing():
    k, data = _env(b'{"x": 1}')
    data["payload"] = base64.b64encode(b'{"x": 2}').decode()
    with pytest.raises(TrustError, match="bad signature"):
        dsse.verify(json.dumps(data).encode(), TrustRoot.of(k.public_key()))


def test_untrusted_key():
    _, data = _env()
    other = Ed25519PrivateKey.generate()
    with pytest.raises(TrustError, match="untrusted key"):
        dsse.verify(json.dumps(data).encode(), TrustRoot.of(other.public_key()))


def test_revoked_key():
    k, data = _env()
    root = TrustRoot(
        {keyid(k.public_key()): k.public_key()}, revoked_keys=frozenset({keyid(k.public_key())})
    )
    with pytest.raises(TrustError, match="revoked key"):
        dsse.verify(json.dumps(data).encode(), root)


def test_wrong_payload_type():
    k = Ed25519PrivateKey.generate()
    env = dsse.sign(b"{}", "text/plain", k)
    with pytest.raises(TrustError, match="wrong payloadType"):
        dsse.verify(env.dumps(), TrustRoot.of(k.public_key()))
    assert dsse.verify(env.dumps(), TrustRoot.of(k.public_key()), payload_type=None).payload == b"{}"


def test_keyid_is_only_a_hint():
    k, data = _env()
    data["signatures"][0]["keyid"] = ""  # absent/wrong hints still verify with a trusted key
    assert dsse.verify(json.dumps(data).encode(), TrustRoot.of(k.public_key())).keyid == keyid(k.public_key())
    data["signatures"][0]["keyid"] = "f" * 64
    assert dsse.verify(json.dumps(data).encode(), TrustRoot.of(k.public_key())).keyid == keyid(k.public_key())


def test_one_trusted_signature_among_several_suffices():
    trusted, untrusted = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    env1 = json.loads(dsse.sign(b"{}", PT, untrusted).dumps())
    env2 = json.loads(dsse.sign(b"{}", PT, trusted).dumps())
    env1["signatures"] += env2["signatures"]
    v = dsse.verify(json.dumps(env1).encode(), TrustRoot.of(trusted.public_key()))
    assert v.keyid == keyid(trusted.public_key())


def test_empty_trust_root():
    _, data = _env()
    with pytest.raises(TrustError, match="no public keys"):
        dsse.verify(json.dumps(data).encode(), TrustRoot())


@pytest.mark.parametrize(
    "raw",
    [
        b"", b"{", b"[]", b'{"payload": "e30=", "payloadType": "x"}',
        b'{"payload": "e30=", "payloadType": "x", "signatures": []}',
        b'{"payload": "!!", "payloadType": "x", "signatures": [{"sig": "AA=="}]}',
        b'{"payload": "e30=", "payloadType": 3, "signatures": [{"sig": "AA=="}]}',
        b'{"payload": "e30=", "payloadType": "x", "signatures": [{"sig": ""}]}',
        b'{"payload": "e30=", "payloadType": "x", "signatures": ["AA=="]}',
        b'{"payload": "e30=", "payloadType": "x", "signatures": [{"sig": "AA==", "keyid": 5}]}',
        b'{"payload": "e30=", "payloadType": "\\ud800", "signatures": [{"sig": "AA=="}]}',
    ],
)
def test_malformed_envelopes(raw):
    with pytest.raises(TrustError, match="malformed envelope"):
        dsse.verify(raw, TrustRoot.of(Ed25519PrivateKey.generate().public_key()), payload_type=None)


# ---------------------------------------------------------------- securesystemslib interop

sslib_dsse = pytest.importorskip("securesystemslib.dsse")
from securesystemslib.signer import CryptoSigner, SSlibKey  # noqa: E402


def test_codesuture_envelope_verifies_with_securesystemslib():
    k = Ed25519PrivateKey.generate()
    raw = dsse.sign(b'{"hello": "world"}', PT, k).dumps()
    env = sslib_dsse.Envelope.from_dict(json.loads(raw))
    sskey = SSlibKey.from_crypto(k.public_key(), keyid=keyid(k.public_key()))
    accepted = env.verify([sskey], 1)
    assert list(accepted) == [keyid(k.public_key())]
    assert env.pae() == dsse.pae(PT, b'{"hello": "world"}')


def test_securesystemslib_envelope_verifies_with_codesuture():
    k = Ed25519PrivateKey.generate()
    sskey = SSlibKey.from_crypto(k.public_key(), keyid=keyid(k.public_key()))
    signer = CryptoSigner(k, sskey)
    env = sslib_dsse.Envelope(b'{"from": "sslib"}', PT, {})
    env.sign(signer)
    raw = json.dumps(env.to_dict()).encode()
    v = dsse.verify(raw, TrustRoot.of(k.public_key()))
    assert v.payload == b'{"from": "sslib"}' and v.keyid == keyid(k.public_key())
    # and a foreign key id (securesystemslib's default scheme) still verifies: keyid is a hint
    env2 = sslib_dsse.Envelope(b"{}", PT, {})
    env2.sign(CryptoSigner(k, SSlibKey.from_crypto(k.public_key())))
    assert dsse.verify(json.dumps(env2.to_dict()).encode(), TrustRoot.of(k.public_key())).keyid == keyid(k.public_key())
