"""The start-up path for Ed25519 public keys (codesuture.trust.ed25519): the bindings'
key objects when the capability check passes, the public API otherwise. Both must agree
on every verdict, on real keys written by the project and real envelopes it signs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cryptography
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from codesuture.errors import TrustError
from codesuture.ship.sign import write_envelope
from codesuture.trust import dsse, ed25519
from codesuture.trust import keys as keymod
from codesuture.trust.keys import TrustRoot
from codesuture.overlay.model import OverlayMeta

from trust_helpers import make_overlay

cryptography_version = cryptography.__version__
BINDINGS = int(cryptography_version.partition(".")[0]) >= ed25519.MIN_BINDINGS_MAJOR


@pytest.fixture
def signed(tmp_path: Path):
    """A key pair written by ``keys.generate`` and the real envelope ``write_envelope``
    signs for a real overlay: ``(keys dir, private key, envelope path)``."""
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    keymod.generate(tmp_path / "private" / "k.pem", keys_dir / "k.pem")
    private = keymod.load_private_key(tmp_path / "private" / "k.pem")
    overlay = make_overlay(tmp_path / "store", module="demo.sig")
    sidecar = overlay.with_suffix(".json")
    write_envelope(str(overlay), overlay.read_bytes(), sidecar.read_bytes(), OverlayMeta.loads(sidecar.read_bytes()), private)
    envelope = overlay.parent / (overlay.name[: -len(".overlay")] + ".dsse.json")
    assert envelope.is_file()
    return keys_dir, private, envelope


@pytest.fixture
def public_api_only(monkeypatch):
    """Force the fallback: the public API, as for a cryptography without the capability."""
    monkeypatch.setattr(ed25519, "_FROM_BINDINGS", None)


def _tampered(raw: bytes, what: str) -> bytes:
    data = json.loads(raw)
    if what == "payload":
        payload = bytearray(dsse._b64decode(data["payload"], "payload", "x"))
        payload[len(payload) // 2] ^= 1
        data["payload"] = dsse.base64.b64encode(bytes(payload)).decode()
    else:
        sig = bytearray(dsse._b64decode(data["signatures"][0]["sig"], "sig", "x"))
        sig[5] ^= 0x40
        data["signatures"][0]["sig"] = dsse.base64.b64encode(bytes(sig)).decode()
    return json.dumps(data).encode()


def _verdict(raw: bytes, root: TrustRoot) -> object:
    try:
        return dsse.verify(raw, root, path="env")
    except TrustError as exc:
        return exc.reason


@pytest.mark.skipif(not BINDINGS, reason="cryptography < 42: only the public API path exists")
def test_fast_path_keys_are_the_public_apis_own_objects(signed):
    keys_dir, private, _ = signed
    root = TrustRoot.load(keys_dir)
    (key,) = root.keys.values()
    raw = private.public_key().public_bytes_raw()
    via_api = Ed25519PublicKey.from_public_bytes(raw)
    assert type(key) is type(via_api)  # the same implementation, not a look-alike
    assert isinstance(key, Ed25519PublicKey) and key == via_api
    assert keymod.keyid(key) == keymod.keyid(private.public_key()) == next(iter(root.keys))


@pytest.mark.parametrize("path", ["default", "public_api"])
def test_both_paths_agree_on_good_and_tampered_envelopes(signed, path, request):
    if path == "public_api":
        request.getfixturevalue("public_api_only")
    keys_dir, private, envelope = signed
    root = TrustRoot.load(keys_dir)
    reference = TrustRoot.of(private.public_key())  # keys straight from the private key
    raw = envelope.read_bytes()
    good = _verdict(raw, root)
    assert isinstance(good, dsse.Verified) and good == _verdict(raw, reference)
    for what in ("payload", "signature"):
        bad = _tampered(raw, what)
        assert _verdict(bad, root) == _verdict(bad, reference) == f"bad signature (key {good.keyid})"


@pytest.mark.parametrize("path", ["default", "public_api"])
def test_key_verify_raises_invalid_signature_on_either_path(signed, path, request):
    if path == "public_api":
        request.getfixturevalue("public_api_only")
    _, private, _ = signed
    key = ed25519.public_key(private.public_key().public_bytes_raw())
    sig = private.sign(b"message")
    assert key.verify(sig, b"message") is None
    with pytest.raises(InvalidSignature) as caught:
        key.verify(sig, b"massage")
    assert ed25519.is_bad_signature(caught.value)
    assert not ed25519.is_bad_signature(RuntimeError("not a verdict"))
    with pytest.raises(ValueError):
        ed25519.public_key(b"\x01" * 31)


def test_a_signed_start_verifies_without_the_public_wrapper(signed, tmp_path):
    """In a fresh process: a good envelope verifies without importing the public
    ed25519 module or cryptography.exceptions (with cryptography >= 42), and a tampered
    one is still refused as a bad signature."""
    keys_dir, _, envelope = signed
    bad = tmp_path / "bad.dsse.json"
    bad.write_bytes(_tampered(envelope.read_bytes(), "signature"))
    code = (
        "import sys\n"
        "from codesuture.trust import dsse\n"
        "from codesuture.trust.keys import TrustRoot\n"
        f"root = TrustRoot.load({str(keys_dir)!r})\n"
        f"dsse.verify(open({str(envelope)!r}, 'rb').read(), root)\n"
        "print(sorted(m for m in ('cryptography.hazmat.primitives.asymmetric.ed25519', 'cryptography.exceptions')"
        " if m in sys.modules))\n"
        "try:\n"
        f"    dsse.verify(open({str(bad)!r}, 'rb').read(), root)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc.reason.split(' (')[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODESUTURE_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    if BINDINGS:
        assert first == "[]"
    assert second == "TrustError bad signature"


@pytest.mark.parametrize("version", ["41.0.7", "3.4.8", "not-a-version"])
def test_capability_check_refuses_other_cryptography_versions(monkeypatch, version, signed):
    """An older (or unparsable) cryptography version gets the public API: the check runs
    once per process and its verdict is what public_key uses."""
    keys_dir, private, envelope = signed
    monkeypatch.setattr(cryptography, "__version__", version)
    monkeypatch.setattr(ed25519, "_FROM_BINDINGS", ed25519._UNSET)
    assert ed25519._from_bindings() is None
    root = TrustRoot.load(keys_dir)
    assert isinstance(_verdict(envelope.read_bytes(), root), dsse.Verified)
    assert _verdict(_tampered(envelope.read_bytes(), "payload"), root).startswith("bad signature")
    if BINDINGS:  # the real version again: the bindings pass
        monkeypatch.setattr(cryptography, "__version__", cryptography_version)
        monkeypatch.setattr(ed25519, "_FROM_BINDINGS", ed25519._UNSET)
        assert ed25519._from_bindings() is not None
