"""Deploy bundles: create, verify, BundleStore for the loader, and the unsafe-bundle suite."""

from __future__ import annotations

import json
import re
import stat
import zipfile

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from codesuture.cli import main
from codesuture.errors import BundleError, OverlayRefused
from codesuture.overlay import bundle as bmod
from codesuture.overlay.bundle import MANIFEST_NAME, BundleStore, create_bundle, verify_bundle
from codesuture.overlay.store import open_store
from codesuture.trust import dsse
from codesuture.trust.policy import LoadPolicy, admit, clear_trust_root_cache
from codesuture.trust.sign import sign_overlay
from trust_helpers import forbid_unmarshal, make_overlay, make_signed

NOW = 1_800_000_000.0


@pytest.fixture(autouse=True)
def _fresh_roots():
    clear_trust_root_cache()
    yield
    clear_trust_root_cache()


@pytest.fixture
def built(tmp_path):
    s = make_signed(tmp_path, ttl_seconds=86400, now=NOW)
    second = make_overlay(tmp_path / "overlays", module="pkg.other", source=b"y = 2\n")
    sign_overlay(second, s.key, ttl_seconds=86400, now=NOW)
    out = tmp_path / "deploy.zip"
    info = create_bundle(tmp_path / "overlays", out, s.key, now=NOW)
    return s, out, info


def test_create_and_verify(built):
    s, out, info = built
    assert len(info.stems) == 2 and info.keyid == s.keyid
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
    assert MANIFEST_NAME in names and len(names) == 1 + 6  # 2 x (overlay, json, dsse.json)
    report = verify_bundle(out, s.keys_dir, now=NOW)
    assert report.ok, report
    assert report.manifest_keyid == s.keyid
    assert {m.stem for m in report.overlays} == set(info.stems)
    assert all(m.signer == s.keyid for m in report.overlays)


def test_bundle_store_is_a_store_for_the_loader(built, monkeypatch):
    s, out, info = built
    monkeypatch.setenv("CODESUTURE_KEYS", str(s.keys_dir))
    store = open_store(out)
    assert isinstance(store, BundleStore)
    index = store.index()
    assert set(index) == {"demo.mod", "pkg.other"}
    entry = index["demo.mod"][0]
    assert (entry.key, entry.name) == ("demo.mod", s.entry.name)
    assert entry.cache_tag == s.entry.cache_tag and entry.source_prefix == s.entry.source_prefix
    assert entry.read(".overlay", 1 << 20) == s.overlay.read_bytes()
    assert entry.read(".sigstore.json", 1 << 20) is None
    calls = forbid_unmarshal(monkeypatch)
    admitted = admit(entry, LoadPolicy.from_env(), NOW)
    assert admitted.overlay_bytes == s.overlay.read_bytes() and admitted.signer == s.keyid
    assert calls == []


def test_bundle_without_trust_root_is_refused(built, monkeypatch):
    _, out, _ = built
    monkeypatch.delenv("CODESUTURE_KEYS", raising=False)
    with pytest.raises(BundleError, match="always verified") as ei:
        BundleStore(out).index()
    assert ei.value.path == str(out)


def test_manifest_signed_by_untrusted_key(built, tmp_path):
    s, out, _ = built
    other = tmp_path / "other-keys"
    other.mkdir()
    from codesuture.trust.keys import public_pem

    (other / "x.pem").write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(BundleError, match="manifest does not verify: untrusted key"):
        BundleStore(out, LoadPolicy(other)).index()


def _rewrite(src, dst, *, drop=(), add=(), replace=None):
    """Copy zip *src* to *dst*, dropping/adding/replacing members (infos kept)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info)
            if replace and info.filename in replace:
                data = replace[info.filename](data)
            zout.writestr(info, data)
        for info, data in add:
            zout.writestr(info, data)
    return dst


def _info(name, mode=stat.S_IFREG | 0o644):
    i = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
    i.create_system = 3
    i.external_attr = mode << 16
    return i


def _refused(s, path, reason):
    with pytest.raises(BundleError, match=reason) as ei:
        BundleStore(path, s.policy).index()
    assert ei.value.path == str(path)
    report = verify_bundle(path, s.keys_dir, now=NOW)
    assert not report.ok and re.search(reason, report.reason), report


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../evil.mod.cpython-311.0123456789abcdef.overlay", "contains '..'"),
        ("sub/../../x.overlay", "contains '..'"),
        ("/etc/evil.mod.cpython-311.0123456789abcdef.overlay", "absolute path"),
        ("C:/evil.overlay", "absolute path"),
        ("sub/evil.mod.cpython-311.0123456789abcdef.overlay", "no folders"),
    ],
)
def test_unsafe_names(built, tmp_path, name, reason):
    s, out, _ = built
    bad = _rewrite(out, tmp_path / "bad.zip", add=[(_info(name), b"x")])
    _refused(s, bad, reason)


def test_symlink_member(built, tmp_path):
    s, out, info = built
    link = _info("evil.mod.cpython-311.0123456789abcdef.overlay", stat.S_IFLNK | 0o777)
    bad = _rewrite(out, tmp_path / "bad.zip", add=[(link, b"/etc/passwd")])
    _refused(s, bad, "is a symlink")


def test_device_member(built, tmp_path):
    s, out, _ = built
    dev = _info("evil.mod.cpython-311.0123456789abcdef.overlay", stat.S_IFCHR | 0o600)
    _refused(s, _rewrite(out, tmp_path / "bad.zip", add=[(dev, b"")]), "is a device")


def test_directory_member(built, tmp_path):
    s, out, _ = built
    d = _info("evil.mod.cpython-311.0123456789abcdef.overlay", stat.S_IFDIR | 0o755)
    _refused(s, _rewrite(out, tmp_path / "bad.zip", add=[(d, b"")]), "directory")


def test_duplicate_member(built, tmp_path):
    s, out, info = built
    name = info.stems[0] + ".overlay"
    with pytest.warns(UserWarning, match="Duplicate name"):
        bad = _rewrite(out, tmp_path / "bad.zip", add=[(_info(name), b"evil")])
    _refused(s, bad, "duplicate member")


def test_member_not_in_manifest(built, tmp_path):
    s, out, _ = built
    extra = make_overlay(tmp_path / "extra", module="sneaky.mod")
    bad = _rewrite(out, tmp_path / "bad.zip", add=[(_info(extra.name), extra.read_bytes())])
    _refused(s, bad, "is not in the signed manifest")


def test_overlay_missing_from_manifest(built, tmp_path):
    # A correctly signed manifest that lists only one overlay; the zip carries two.
    s, out, info = built
    dropped = info.stems[1]
    manifest = {
        "_type": bmod.BUNDLE_FORMAT, "createdAt": "2027-01-15T08:00:00Z", "overlays": [info.stems[0]],
        "members": {k: v for k, v in info.members.items() if not k.startswith(dropped)},
    }
    env = dsse.sign(json.dumps(manifest).encode(), bmod.MANIFEST_PAYLOAD_TYPE, s.key).dumps()
    bad = _rewrite(out, tmp_path / "bad.zip", replace={MANIFEST_NAME: lambda _: env})
    _refused(s, bad, f"member '{dropped}.* is not in the signed manifest")


def test_member_listed_but_missing(built, tmp_path):
    s, out, info = built
    bad = _rewrite(out, tmp_path / "bad.zip", drop={info.stems[1] + ".json"})
    _refused(s, bad, "listed in the manifest is missing")


def test_tampered_member_refused_on_read(built, tmp_path):
    s, out, info = built
    name = info.stems[0] + ".overlay"
    bad = _rewrite(out, tmp_path / "bad.zip", replace={name: lambda d: d[:-1] + bytes([d[-1] ^ 1])})
    store = BundleStore(bad, s.policy)
    entry = store.index()["demo.mod"][0]  # the manifest itself is fine
    with pytest.raises(BundleError, match="does not match its digest in the signed manifest"):
        entry.read(".overlay", 1 << 20)
    with pytest.raises(OverlayRefused, match="does not match its digest"):
        admit(entry, s.policy, NOW)
    report = verify_bundle(bad, s.keys_dir, now=NOW)
    assert not report.ok and "does not match its digest" in report.reason


def test_tampered_manifest(built, tmp_path):
    s, out, _ = built

    def flip(raw):
        env = json.loads(raw)
        env["payload"] = env["payload"][:-8] + ("A" if env["payload"][-8] != "A" else "B") + env["payload"][-7:]
        return json.dumps(env).encode()

    _refused(s, _rewrite(out, tmp_path / "bad.zip", replace={MANIFEST_NAME: flip}), "manifest does not verify")


def test_no_manifest(built, tmp_path):
    s, out, _ = built
    _refused(s, _rewrite(out, tmp_path / "bad.zip", drop={MANIFEST_NAME}), "no signed manifest")


def test_oversized_member_refused_before_reading(built, tmp_path, monkeypatch):
    s, out, info = built
    monkeypatch.setitem(bmod._LIMITS, ".json", 10)
    _refused(s, out, "oversized member")


def test_not_a_zip(built, tmp_path):
    s, _, _ = built
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really")
    _refused(s, junk, "not a zip bundle")
    trunc = tmp_path / "trunc.zip"
    trunc.write_bytes(built[1].read_bytes()[:200])
    _refused(s, trunc, "not a zip bundle")


def test_create_refuses_unsigned_overlays(tmp_path):
    make_overlay(tmp_path / "ov")
    with pytest.raises(BundleError, match="not signed"):
        create_bundle(tmp_path / "ov", tmp_path / "b.zip", Ed25519PrivateKey.generate())
    assert not (tmp_path / "b.zip").exists()


def test_overlay_in_bundle_still_needs_its_own_valid_signature(built, tmp_path):
    # The manifest is re-signed by the trusted key, but one overlay's own envelope is
    # from an untrusted key: the bundle opens, that overlay is refused.
    s, _, _ = built
    stray = make_overlay(tmp_path / "overlays2", module="m2")
    sign_overlay(stray, Ed25519PrivateKey.generate(), ttl_seconds=86400, now=NOW)
    out = create_bundle(tmp_path / "overlays2", tmp_path / "b2.zip", s.key, now=NOW).path
    report = verify_bundle(out, s.keys_dir, now=NOW)
    assert not report.ok and report.overlays[0].reason.startswith("untrusted key")


def test_cli_bundle_create_and_verify(tmp_path):
    # Signed at the real current time (default TTL): the CLI checks expiry on the real clock.
    s = make_signed(tmp_path)
    priv = tmp_path / "signing.pem"
    priv.write_bytes(
        s.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    runner = CliRunner()
    out = tmp_path / "cli.zip"
    r = runner.invoke(main, ["bundle", "create", str(tmp_path / "overlays"), "-o", str(out), "--key", str(priv)])
    assert r.exit_code == 0, r.output
    assert "1 overlay(s)" in r.output
    r = runner.invoke(main, ["bundle", "verify", "--keys", str(s.keys_dir), str(out)])
    assert r.exit_code == 0, r.output
    assert f"OK {out}:{s.entry.name}" in r.output and "verified" in r.output
    r = runner.invoke(main, ["bundle", "verify", "--keys", str(s.keys_dir), "--json", str(out)])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True
    bad = _rewrite(out, tmp_path / "bad.zip", add=[(_info("../x.overlay"), b"x")])
    r = runner.invoke(main, ["bundle", "verify", "--keys", str(s.keys_dir), str(bad)])
    assert r.exit_code == 1 and f"FAIL {bad}: unsafe member name" in r.output
