"""Load policy at the admit() level: the tamper suite of the threat model, for
overlays signed one by one (no signed set; sets: ``test_overlay_set.py``).

Every refusal is an OverlayRefused with a precise reason, and marshal.loads is never
reached (admit never unmarshals; the fixture makes any call fail loudly).
"""

from __future__ import annotations

import base64
import json
import logging
import marshal
import os
import re
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from codesuture.errors import OverlayRefused
from codesuture.overlay.names import MAX_ENVELOPE_BYTES, MAX_OVERLAY_BYTES
from codesuture.trust import dsse, policy as policy_mod
from codesuture.trust.keys import keyid, public_pem
from codesuture.trust.policy import LoadPolicy, admit, clear_trust_root_cache, full_meta
from trust_helpers import add_key, entry_for, make_overlay, make_signed, sign_overlay

NOW = 1_800_000_000.0  # 2027-01-15


@pytest.fixture(scope="module")
def warmed_up(tmp_path_factory):
    """Run one full admit first: the lazy imports it triggers read .pyc files through
    marshal.loads, which is fine; after this only admit() itself could call it."""
    s = make_signed(tmp_path_factory.mktemp("warm"), ttl_seconds=86400, now=NOW)
    admit(s.entry, s.policy, NOW)
    from codesuture import settings  # noqa: F401  (LoadPolicy.from_env imports it lazily)
    from codesuture.trust import sigstore_support  # noqa: F401


@pytest.fixture(autouse=True)
def no_unmarshal(monkeypatch, warmed_up):
    calls = []

    def forbidden(*a, **k):
        calls.append(a)
        raise AssertionError("marshal.loads reached from admit()")

    monkeypatch.setattr(marshal, "loads", forbidden)
    clear_trust_root_cache()
    yield calls
    clear_trust_root_cache()
    assert calls == []


@pytest.fixture
def signed(tmp_path):
    return make_signed(tmp_path, ttl_seconds=86400, now=NOW)


def refused(s, reason, now=NOW, policy=None):
    with pytest.raises(OverlayRefused) as ei:
        admit(s.entry, policy or s.policy, now)
    assert ei.value.path == s.entry.name
    assert re.search(reason, ei.value.reason), ei.value.reason
    return ei.value


def test_admits_a_good_signed_overlay(signed):
    a = admit(signed.entry, signed.policy, NOW)
    assert a.overlay_bytes == signed.overlay.read_bytes()
    assert a.signer == signed.keyid
    assert a.meta.module == "demo.mod"
    assert a.meta.expires == "2027-01-16T08:00:00Z"
    assert a.meta.patches[0].qualname == "f"


def test_flipped_byte_in_overlay(signed):
    data = bytearray(signed.overlay.read_bytes())
    data[-1] ^= 0x40
    signed.overlay.write_bytes(bytes(data))
    refused(signed, "do not match the signed subject digest")


def test_flipped_byte_in_header(signed):
    data = bytearray(signed.overlay.read_bytes())
    data[20] ^= 1  # inside the source digest
    signed.overlay.write_bytes(bytes(data))
    refused(signed, "do not match the signed subject digest")


def _envelope(s):
    return json.loads(s.envelope.read_bytes())


def test_flipped_byte_in_payload(signed):
    env = _envelope(signed)
    payload = bytearray(base64.b64decode(env["payload"]))
    payload[payload.index(b"demo.mod")] ^= 1  # a module name change
    env["payload"] = base64.b64encode(bytes(payload)).decode()
    signed.envelope.write_text(json.dumps(env))
    refused(signed, "bad signature")


def test_flipped_byte_in_signature(signed):
    env = _envelope(signed)
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[10] ^= 0x80
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    signed.envelope.write_text(json.dumps(env))
    refused(signed, "bad signature")


def test_wrong_key_resigned_by_attacker(signed, tmp_path):
    # An attacker re-signs a tampered overlay with their own key (hint names the trusted key).
    attacker = Ed25519PrivateKey.generate()
    env = _envelope(signed)
    payload = base64.b64decode(env["payload"])
    forged = dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, attacker)
    data = json.loads(forged.dumps())
    data["signatures"][0]["keyid"] = signed.keyid
    signed.envelope.write_text(json.dumps(data))
    refused(signed, "bad signature")


def test_untrusted_key(signed):
    attacker = Ed25519PrivateKey.generate()
    sign_overlay(signed.overlay, attacker, ttl_seconds=86400, now=NOW)
    refused(signed, "untrusted key " + keyid(attacker.public_key()))


def test_expired(signed):
    admit(signed.entry, signed.policy, NOW + 86400 - 1)
    refused(signed, r"expired at 2027-01-16T08:00:00Z", now=NOW + 86400)


def test_revoked_overlay_digest(signed):
    import hashlib

    digest = hashlib.sha256(signed.overlay.read_bytes()).hexdigest()
    (signed.keys_dir / "revoked.json").write_text(json.dumps({"overlays": [digest]}))
    refused(signed, f"revoked overlay \\(sha256 {digest}")


def test_revoked_key(signed):
    (signed.keys_dir / "revoked.json").write_text(json.dumps({"keys": [signed.keyid]}))
    refused(signed, f"revoked key {signed.keyid}")


def test_removed_public_key_is_untrusted(signed):
    (signed.keys_dir / "ci.pem").unlink()
    add_key(signed.keys_dir, "other")
    refused(signed, "untrusted key")


def test_truncated_overlay(signed):
    data = signed.overlay.read_bytes()
    signed.overlay.write_bytes(data[: len(data) // 2])
    refused(signed, "do not match the signed subject digest")


def test_truncated_envelope(signed):
    raw = signed.envelope.read_bytes()
    signed.envelope.write_bytes(raw[: len(raw) // 2])
    refused(signed, "malformed envelope")


def test_oversized_overlay_refused_before_reading(signed):
    with open(signed.overlay, "r+b") as fh:  # sparse: costs no disk
        fh.truncate(MAX_OVERLAY_BYTES + 1)
    refused(signed, "oversized")


def test_oversized_envelope(signed):
    with open(signed.envelope, "r+b") as fh:
        fh.truncate(MAX_ENVELOPE_BYTES + 1)
    refused(signed, "oversized")


def test_overlay_for_another_file_name(signed, tmp_path):
    # A valid signed overlay copied under another module's name: the subject name differs.
    other = make_overlay(tmp_path / "overlays", module="other.mod")
    stem = other.name[: -len(".overlay")]
    other.write_bytes(signed.overlay.read_bytes())
    other.with_name(stem + ".dsse.json").write_bytes(signed.envelope.read_bytes())
    with pytest.raises(OverlayRefused, match="is not this overlay"):
        admit(entry_for(other), signed.policy, NOW)


def test_envelope_swapped_between_overlays(tmp_path):
    s = make_signed(tmp_path, ttl_seconds=86400, now=NOW)
    other = make_overlay(tmp_path / "overlays", module="demo.mod", source=b"x = 1\n")
    sign_overlay(other, s.key, ttl_seconds=86400, now=NOW)
    s.envelope.write_bytes(other.with_name(other.name[: -len(".overlay")] + ".dsse.json").read_bytes())
    refused(s, "is not this overlay")


def test_wrong_payload_type(signed):
    env = dsse.sign(b"{}", "text/plain", signed.key)
    signed.envelope.write_bytes(env.dumps())
    refused(signed, "wrong payloadType")


def test_signed_garbage_statement(signed):
    env = dsse.sign(b'{"_type": "nope"}', dsse.INTOTO_PAYLOAD_TYPE, signed.key)
    signed.envelope.write_bytes(env.dumps())
    refused(signed, "not an in-toto Statement v1")


def test_unsigned_refused_under_a_trust_root(signed):
    signed.envelope.unlink()
    refused(signed, "unsigned overlay refused")


def test_unsigned_refused_under_require_signed(tmp_path):
    overlay = make_overlay(tmp_path)
    with pytest.raises(OverlayRefused, match="unsigned overlay refused"):
        admit(entry_for(overlay), LoadPolicy(require_signed=True), NOW)


def test_signed_without_trust_root_under_require_signed(signed):
    # Nothing to verify its envelope against: refused, and the reason says so.
    refused(signed, r"signed, but no trust root is configured to verify it \(--keys\)",
            policy=LoadPolicy(require_signed=True))


def test_unsigned_loads_with_warning_without_trust_root(tmp_path, caplog):
    overlay = make_overlay(tmp_path)
    with caplog.at_level(logging.WARNING, logger="codesuture.trust"):
        a = admit(entry_for(overlay), LoadPolicy(), NOW)
    assert a.signer is None
    assert any("UNSIGNED" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_unsigned_tampered_still_caught_by_metadata_digest(tmp_path):
    overlay = make_overlay(tmp_path)
    overlay.write_bytes(overlay.read_bytes() + b"\0")
    with pytest.raises(OverlayRefused, match="overlay bytes do not match the digest in its metadata"):
        admit(entry_for(overlay), LoadPolicy(), NOW)


def test_malformed_trust_root_refuses(signed):
    (signed.keys_dir / "junk.pem").write_bytes(b"junk")
    refused(signed, "not a PEM public key")


def test_trust_root_loaded_once_per_process(signed, monkeypatch):
    from codesuture.trust import keys

    loads = []
    real = keys.TrustRoot.load.__func__

    def counting(cls, d):
        loads.append(d)
        return real(cls, d)

    monkeypatch.setattr(keys.TrustRoot, "load", classmethod(counting))
    for _ in range(5):
        admit(signed.entry, signed.policy, NOW)
    assert loads == [os.fspath(signed.keys_dir)]
    assert policy_mod.trust_root(signed.policy) is policy_mod.trust_root(LoadPolicy(signed.keys_dir))


def test_policy_from_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config file of this repository's
    st = str(tmp_path / "state")
    p = LoadPolicy.from_env({"CODESUTURE_KEYS": str(tmp_path), "CODESUTURE_REQUIRE_SIGNED": "yes",
                             "CODESUTURE_STATE_DIR": st, "CODESUTURE_MIN_SET_VERSION": "4"})
    assert os.fspath(p.keys_dir) == os.fspath(tmp_path) and p.require_signed and not p.allows_unsigned
    assert (p.state_dir, p.min_set_version, p.strict_statements) == (st, 4, False)
    assert LoadPolicy.from_env({"CODESUTURE_STATE_DIR": st}).allows_unsigned
    p = LoadPolicy.from_env({"CODESUTURE_SIGSTORE_IDENTITY": "me@example.org", "CODESUTURE_SIGSTORE_ISSUER": "https://issuer",
                             "CODESUTURE_STATE_DIR": st})
    assert p.sigstore_identity == "me@example.org" and not p.allows_unsigned
    # A trust root means prod, and prod means require_signed unless said otherwise.
    assert LoadPolicy.from_env({"CODESUTURE_KEYS": str(tmp_path), "CODESUTURE_STATE_DIR": st}).require_signed


@pytest.mark.parametrize("value", ["", "2", "required", "maybe"])
def test_policy_from_env_is_strict(tmp_path, monkeypatch, value):
    from codesuture.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="CODESUTURE_REQUIRE_SIGNED"):
        LoadPolicy.from_env({"CODESUTURE_REQUIRE_SIGNED": value, "CODESUTURE_STATE_DIR": str(tmp_path)})


def test_admitted_says_what_vouched(signed, tmp_path):
    a = admit(signed.entry, signed.policy, NOW)
    assert a.via == "dsse" and a.signer == signed.keyid
    assert full_meta(signed.entry, a, signed.policy) is a.meta  # the verified Statement has the patch list
    overlay = make_overlay(tmp_path / "plain")
    u = admit(entry_for(overlay), LoadPolicy(), NOW)
    assert (u.via, u.signer) == ("unsigned", None) and [p.qualname for p in u.meta.patches] == ["f"]


def test_full_meta_refuses_an_envelope_swapped_after_admission(signed):
    import hashlib

    from codesuture.overlay.model import OverlayMeta

    a = admit(signed.entry, signed.policy, NOW)
    a = a._replace(meta=a.meta._replace(patches=[]))  # what full_meta must complete
    assert [p.qualname for p in full_meta(signed.entry, a, signed.policy).patches] == ["f"]
    # A validly signed envelope for other bytes under this name, planted after admission.
    original = signed.overlay.read_bytes()
    sidecar = signed.overlay.with_name(signed.entry.name + ".json")
    meta_bytes = sidecar.read_bytes()
    other = original + b"\0"
    signed.overlay.write_bytes(other)
    sidecar.write_bytes(OverlayMeta.loads(meta_bytes)._replace(overlay_sha256=hashlib.sha256(other).hexdigest()).dumps())
    sign_overlay(signed.overlay, signed.key, ttl_seconds=86400, now=NOW)
    signed.overlay.write_bytes(original)
    sidecar.write_bytes(meta_bytes)
    with pytest.raises(OverlayRefused, match="its envelope is not the one that admitted it"):
        full_meta(signed.entry, a, signed.policy)


def test_signed_into_a_set_refused_in_a_store_without_it(tmp_path):
    s = make_signed(tmp_path, ttl_seconds=86400, now=NOW)
    sign_overlay(s.overlay, s.key, ttl_seconds=86400, now=NOW, set_name="demo")
    refused(s, r"signed as part of overlay set 'demo', which this store does not have")


def test_unsigned_sidecar_problems_name_the_sidecar(tmp_path):
    overlay = make_overlay(tmp_path)
    sidecar = overlay.with_name(overlay.name[: -len(".overlay")] + ".json")
    sidecar.write_text("{not json")
    with pytest.raises(OverlayRefused) as ei:
        admit(entry_for(overlay), LoadPolicy(), NOW)
    assert ei.value.reason.startswith(sidecar.name + ": metadata is not JSON")
    sidecar.unlink()
    with pytest.raises(OverlayRefused, match="metadata file is missing"):
        admit(entry_for(overlay), LoadPolicy(), NOW)


def test_unsigned_expiry(tmp_path):
    overlay = make_overlay(tmp_path, expires="2027-01-15T09:00:00Z")
    assert admit(entry_for(overlay), LoadPolicy(), NOW).meta.expires == "2027-01-15T09:00:00Z"
    with pytest.raises(OverlayRefused, match="expired at 2027-01-15T09:00:00Z"):
        admit(entry_for(overlay), LoadPolicy(), NOW + 3600)
    bad = make_overlay(tmp_path / "bad", expires="next tuesday")
    with pytest.raises(OverlayRefused, match="is not an RFC 3339 UTC time"):
        admit(entry_for(bad), LoadPolicy(), NOW)


def test_withdrawn_signed_overlay(signed, tmp_path):
    import hashlib

    from codesuture.trust.state import HostState

    digest = hashlib.sha256(signed.overlay.read_bytes()).hexdigest()
    HostState(str(tmp_path / "state")).withdraw({digest: signed.entry.name}, NOW)
    refused(signed, "withdrawn by codesuture rollback at 2027-01-15T08:00:00Z",
            policy=LoadPolicy(signed.keys_dir, state_dir=str(tmp_path / "state")))
    assert admit(signed.entry, signed.policy, NOW).via == "dsse"  # no host state, no memory


def test_importing_policy_stays_cheap():
    code = (
        "import sys, codesuture.trust.policy\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('cryptography', 'sigstore', 'pydantic', 'click', 'bytecode')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ})
    assert out.stdout.strip() == "[]"


def test_public_key_helper_roundtrip(tmp_path):
    k = Ed25519PrivateKey.generate()
    assert public_pem(k.public_key()).startswith(b"-----BEGIN PUBLIC KEY-----")
