"""Deploy bundles: a zip of a signed folder whose signed overlay set pins every member
exactly. Create, verify, BundleStore for the loader, and the unsafe-bundle suite.

Refusals are checked where they happen: the zip's structure when the store is opened
(:class:`BundleError` from ``index()``), the set and its members in ``admit()`` (every
overlay refused, ``marshal.loads`` never reached), and ``codesuture verify`` reports.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import zipfile

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from codesuture.cli.group import cli as main
from codesuture.errors import BundleError, OverlayError, OverlayRefused
from codesuture.overlay.names import LIMITS, SET_NAME
from codesuture.ship.bundle import create_bundle
from codesuture.ship.verify import verify_paths
from codesuture.store import bundle as bmod
from codesuture.store.bundle import BundleStore
from codesuture.store.kinds import open_store
from codesuture.trust.keys import public_pem
from codesuture.trust.policy import LoadPolicy, admit, clear_trust_root_cache
from trust_helpers import (
    APP_MODULES, forbid_unmarshal, healed_app, make_overlay, make_signed_set, sign_folder_raw, sign_overlay,
)

NOW = 1_800_000_000.0
DAY = 86400
MODULES = ("demo.mod", "pkg.other")


@pytest.fixture(autouse=True)
def _fresh_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    clear_trust_root_cache()
    yield
    clear_trust_root_cache()


@pytest.fixture
def built(tmp_path):
    s = make_signed_set(tmp_path, MODULES, now=NOW, ttl_seconds=DAY)
    out = tmp_path / "deploy.zip"
    info = create_bundle(s.directory, out)
    return s, out, info


def bundle_entries(path):
    index = BundleStore(path).index()
    return {key: entries[0] for key, entries in index.items()}


def admit_all(s, path, policy=None):
    """Admit every overlay of bundle *path*: module -> Admitted or the refusal reason."""
    clear_trust_root_cache()
    out = {}
    for key, entry in bundle_entries(path).items():
        try:
            out[key] = admit(entry, policy or s.policy(), NOW)
        except OverlayRefused as exc:
            out[key] = exc.reason
    return out


def verified(s, path):
    clear_trust_root_cache()
    return verify_paths([path], s.keys_dir, now=NOW)


def test_create_and_verify(built):
    s, out, info = built
    assert set(info.stems) == {s.entry(m).name for m in MODULES}
    assert (info.keyid, info.set_name, info.version) == (s.keyid, "demo", 1)
    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
    names = {i.filename for i in infos}
    folder = {p.name for p in s.directory.iterdir() if not p.name.startswith(".")}  # not the lock files
    assert names == folder and SET_NAME in names and len(names) == 1 + 6  # 2 x (overlay, json, dsse.json)
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) and stat.S_ISREG(i.external_attr >> 16) for i in infos)
    assert info.members == {n: hashlib.sha256((s.directory / n).read_bytes()).hexdigest() for n in names}
    results = verified(s, out)
    assert [r.ok for r in results] == [True, True, True], results
    assert results[-1].path == f"{out}:{SET_NAME}" and "signed overlay set 'demo' v1 of 2 overlay(s)" in results[-1].reason
    assert all(r.signer == s.keyid for r in results)
    # The same folder gives the same bytes.
    again = create_bundle(s.directory, out.with_name("again.zip"))
    assert again.path != info.path and out.with_name("again.zip").read_bytes() == out.read_bytes()


def test_symlinked_release_bundle_loads(built, tmp_path):
    # deploy.cso -> releases/v7.cso: the operator names the bundle; the link is resolved.
    s, out, info = built
    release = tmp_path / "releases" / "v7.zip"
    release.parent.mkdir()
    out.rename(release)
    link = tmp_path / "current.zip"
    link.symlink_to(release)
    results = admit_all(s, link)
    assert {m: a.via for m, a in results.items()} == {m: "set" for m in MODULES}
    assert bundle_entries(link)["demo.mod"].path(".overlay").startswith(f"{link}:")


def test_bundle_store_is_a_store_for_the_loader(built, monkeypatch):
    s, out, info = built
    store = open_store(out)
    assert isinstance(store, BundleStore) and store.kind == "bundle"
    entries = bundle_entries(out)
    assert set(entries) == set(MODULES)
    entry = entries["demo.mod"]
    assert (entry.key, entry.name) == ("demo.mod", s.entry().name)
    assert entry.cache_tag == s.entry().cache_tag and entry.source_prefix == s.entry().source_prefix
    assert entry.read(".overlay") == s.overlay().read_bytes()
    assert entry.read(".sigstore.json") is None
    assert entry.path(".overlay") == f"{out}:{s.entry().name}.overlay"
    calls = forbid_unmarshal(monkeypatch)
    results = admit_all(s, out)
    assert {m: (a.via, a.signer) for m, a in results.items()} == {m: ("set", s.keyid) for m in MODULES}
    assert results["demo.mod"].overlay_bytes == s.overlay().read_bytes()
    assert calls == []


def test_bundle_without_trust_root_is_refused(built, monkeypatch):
    # A bundle is always verified: without a trust root nothing loads from it, even in
    # a configuration that would load unsigned overlays from a folder.
    s, out, _ = built
    forbid_unmarshal(monkeypatch)
    for policy in (LoadPolicy(), LoadPolicy(require_signed=True)):
        for reason in admit_all(s, out, policy).values():
            assert isinstance(reason, str) and "signed overlay set cannot be verified: no trust root configured" in reason


def test_set_signed_by_untrusted_key(built, tmp_path):
    s, out, _ = built
    other = tmp_path / "other-keys"
    other.mkdir()
    (other / "x.pem").write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    results = admit_all(s, out, LoadPolicy(other))
    assert all(r.startswith("signed overlay set refused: untrusted key") for r in results.values()), results
    clear_trust_root_cache()
    (res,) = [r for r in verify_paths([out], other, now=NOW) if r.path.endswith(SET_NAME)]
    assert not res.ok and res.reason.startswith("untrusted key")


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


def _refused_on_open(s, path, reason, monkeypatch):
    """The zip's structure is refused before any member is read: by the store, by
    admission (the set cannot be read), and by verify."""
    with pytest.raises(BundleError, match=reason) as ei:
        BundleStore(path).index()
    assert ei.value.path == str(path)
    calls = forbid_unmarshal(monkeypatch)
    clear_trust_root_cache()
    from trust_helpers import entry_for

    entry = entry_for(s.overlay())
    entry.store = BundleStore(path)
    with pytest.raises(OverlayRefused, match=reason):
        admit(entry, s.policy(), NOW)
    assert calls == []
    results = verified(s, path)
    assert len(results) == 1 and not results[0].ok and re.search(reason, results[0].reason), results


def _refused_by_set(s, path, reason, monkeypatch):
    """The structure is fine, the set refuses the bundle: every overlay refused."""
    calls = forbid_unmarshal(monkeypatch)
    results = admit_all(s, path)
    assert results and all(isinstance(r, str) and re.search(reason, r) for r in results.values()), results
    assert calls == []
    report = verified(s, path)
    assert not all(r.ok for r in report) and any(re.search(reason, r.reason) for r in report), report


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../evil.mod.cpython-311.0123456789abcdef.overlay", "contains '..'"),
        ("sub/../../x.overlay", "contains '..'"),
        ("/etc/evil.mod.cpython-311.0123456789abcdef.overlay", "absolute path"),
        ("C:/evil.overlay", "absolute path"),
        ("sub/evil.mod.cpython-311.0123456789abcdef.overlay", "no folders"),
        ("sub\\evil.mod.cpython-311.0123456789abcdef.overlay", "no folders"),
        ("README.txt", "is not an overlay file or the signed overlay set"),
    ],
)
def test_unsafe_names(built, tmp_path, monkeypatch, name, reason):
    s, out, _ = built
    bad = _rewrite(out, tmp_path / "bad.zip", add=[(_info(name), b"x")])
    _refused_on_open(s, bad, reason, monkeypatch)


@pytest.mark.parametrize(
    "mode, reason",
    [
        (stat.S_IFLNK | 0o777, "is a symlink"),
        (stat.S_IFCHR | 0o600, "is a device"),
        (stat.S_IFIFO | 0o600, "is a special file"),
        (stat.S_IFDIR | 0o755, "directory"),
    ],
)
def test_member_that_is_not_a_regular_file(built, tmp_path, monkeypatch, mode, reason):
    s, out, _ = built
    member = _info("evil.mod.cpython-311.0123456789abcdef.overlay", mode)
    _refused_on_open(s, _rewrite(out, tmp_path / "bad.zip", add=[(member, b"/etc/passwd")]), reason, monkeypatch)


def test_duplicate_member(built, tmp_path, monkeypatch):
    s, out, info = built
    name = info.stems[0] + ".overlay"
    with pytest.warns(UserWarning, match="Duplicate name"):
        bad = _rewrite(out, tmp_path / "bad.zip", add=[(_info(name), b"evil")])
    _refused_on_open(s, bad, "duplicate member", monkeypatch)


def test_encrypted_and_exotic_compression(built, tmp_path, monkeypatch):
    s, out, info = built
    name = info.stems[0] + ".json"
    enc = _rewrite(out, tmp_path / "enc.zip")
    raw = bytearray(enc.read_bytes())
    # Set the "encrypted" flag bit of that member in its central directory header.
    (cd,) = [m.start() for m in re.finditer(rb"PK\x01\x02", raw) if raw[m.start() + 46:].startswith(name.encode())]
    raw[cd + 8] |= 0x01
    enc.write_bytes(bytes(raw))
    _refused_on_open(s, enc, "is encrypted", monkeypatch)
    bz = _info("x.y.0123456789abcdef.json")
    bz.compress_type = zipfile.ZIP_BZIP2
    _refused_on_open(s, _rewrite(out, tmp_path / "bz.zip", add=[(bz, b"{}")]), "unsupported compression", monkeypatch)


def test_too_many_members(built, monkeypatch):
    s, out, _ = built
    monkeypatch.setattr(bmod, "MAX_MEMBERS", 6)
    _refused_on_open(s, out, r"too many members \(7 > 6, from its end-of-central-directory record\)", monkeypatch)


def test_oversized_member_refused_before_reading(built, monkeypatch):
    s, out, info = built
    monkeypatch.setitem(LIMITS, ".json", 10)
    _refused_on_open(s, out, "oversized member", monkeypatch)


def test_member_over_the_callers_limit(built):
    s, out, info = built
    store = BundleStore(out)
    with pytest.raises(OverlayError, match="oversized"):
        store.read(info.stems[0] + ".overlay", 5)


def test_not_a_zip(built, tmp_path, monkeypatch):
    s, out, _ = built
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really")
    _refused_on_open(s, junk, "not a zip bundle", monkeypatch)
    trunc = tmp_path / "trunc.zip"
    trunc.write_bytes(out.read_bytes()[:200])
    _refused_on_open(s, trunc, "not a zip bundle", monkeypatch)


def test_member_not_pinned_by_the_set(built, tmp_path, monkeypatch):
    s, out, _ = built
    extra = make_overlay(tmp_path / "extra", module="sneaky.mod")
    bad = _rewrite(out, tmp_path / "bad.zip", add=[(_info(extra.name), extra.read_bytes())])
    _refused_by_set(s, bad, rf"bundle member '{re.escape(extra.name)}' is not pinned by the signed overlay set", monkeypatch)


def test_extra_side_file_not_pinned(built, tmp_path, monkeypatch):
    # Even a file that is never loaded (a Sigstore bundle beside a pinned overlay).
    s, out, info = built
    name = info.stems[0] + ".sigstore.json"
    bad = _rewrite(out, tmp_path / "bad.zip", add=[(_info(name), b"{}")])
    _refused_by_set(s, bad, "is not pinned by the signed overlay set", monkeypatch)


@pytest.mark.parametrize("suffix", [".overlay", ".json", ".dsse.json"])
def test_member_pinned_but_missing(built, tmp_path, monkeypatch, suffix):
    s, out, info = built
    name = info.stems[1] + suffix
    bad = _rewrite(out, tmp_path / "bad.zip", drop={name})
    _refused_by_set(s, bad, rf"bundle lacks '{re.escape(name)}', which the signed overlay set pins", monkeypatch)


def test_set_listing_only_some_overlays(built, tmp_path, monkeypatch):
    # A correctly signed set (trusted key) that lists only one overlay; the zip carries two.
    s, out, info = built
    partial = tmp_path / "partial"
    shutil.copytree(s.directory, partial)
    sign_folder_raw(partial, s.key, now=NOW, ttl_seconds=DAY, stems={info.stems[0]}, envelopes=False)
    bad = _rewrite(out, tmp_path / "bad.zip", replace={SET_NAME: lambda _: (partial / SET_NAME).read_bytes()})
    _refused_by_set(s, bad, rf"bundle member '{re.escape(info.stems[1])}\..*' is not pinned", monkeypatch)


def test_bundle_without_a_set(built, tmp_path, monkeypatch):
    s, out, _ = built
    bad = _rewrite(out, tmp_path / "bad.zip", drop={SET_NAME})
    _refused_by_set(s, bad, r"bundle has no signed overlay set \(overlays.manifest.dsse.json\)", monkeypatch)


def test_tampered_set(built, tmp_path, monkeypatch):
    s, out, _ = built

    def flip(raw):
        env = json.loads(raw)
        env["payload"] = env["payload"][:-8] + ("A" if env["payload"][-8] != "A" else "B") + env["payload"][-7:]
        return json.dumps(env).encode()

    _refused_by_set(s, _rewrite(out, tmp_path / "bad.zip", replace={SET_NAME: flip}),
                    "signed overlay set refused: (bad signature|.*malformed)", monkeypatch)


def test_old_set_put_back_into_a_bundle(built, tmp_path, monkeypatch):
    # Rollback protection works for bundles too: a v1 bundle after v2 was seen here.
    s, out, _ = built
    s.resign()
    v2 = create_bundle(s.directory, tmp_path / "v2.zip")
    assert v2.version == 2
    assert all(a.via == "set" for a in admit_all(s, tmp_path / "v2.zip").values())
    calls = forbid_unmarshal(monkeypatch)
    results = admit_all(s, out)
    assert all(re.search("version 1 is older than version 2 already seen on this host", r) for r in results.values())
    assert calls == []
    # codesuture verify reviews the artifact, not this host: the old bundle is valid as such.
    assert all(r.ok for r in verified(s, out))


def test_tampered_member_refuses_that_overlay(built, tmp_path, monkeypatch):
    s, out, info = built
    name = s.entry().name + ".overlay"
    bad = _rewrite(out, tmp_path / "bad.zip", replace={name: lambda d: d[:-1] + bytes([d[-1] ^ 1])})
    calls = forbid_unmarshal(monkeypatch)
    results = admit_all(s, bad)
    assert re.search(r"overlay bytes do not match the signed overlay set 'demo' v1", results["demo.mod"])
    assert results["pkg.other"].via == "set"
    assert calls == []
    report = {r.path: r for r in verified(s, bad)}
    assert not report[f"{bad}:{name}"].ok and "do not match the signed overlay set" in report[f"{bad}:{name}"].reason


def test_tampered_sidecar_member_refuses_that_overlay(built, tmp_path, monkeypatch):
    s, out, info = built
    name = s.entry().name + ".json"
    bad = _rewrite(out, tmp_path / "bad.zip", replace={name: lambda d: d.replace(b'"tier": "auto"', b'"tier": "push"')})
    results = admit_all(s, bad)
    assert results["demo.mod"].startswith(f"{name} does not match the signed overlay set 'demo' v1")
    assert results["pkg.other"].via == "set"


def test_overlay_with_an_untrusted_own_envelope(built, tmp_path):
    # The trusted set pins an envelope signed by someone else: the loader trusts the set;
    # verify (the strictest policy) checks each envelope too and refuses it.
    s, _, _ = built
    sign_overlay(s.overlay(), Ed25519PrivateKey.generate(), ttl_seconds=DAY, now=NOW, set_name="demo")
    sign_folder_raw(s.directory, s.key, now=NOW, ttl_seconds=DAY, envelopes=False)
    out = create_bundle(s.directory, tmp_path / "b2.zip").path
    assert admit_all(s, out)["demo.mod"].via == "set"
    report = {r.path: r for r in verified(s, out)}
    bad = report[f"{out}:{s.entry().name}.overlay"]
    assert not bad.ok and bad.reason.startswith("untrusted key")


def test_create_refuses_an_unsigned_folder(tmp_path):
    make_overlay(tmp_path / "ov")
    with pytest.raises(BundleError, match=r"the folder has no signed overlay set \(run 'codesuture sign"):
        create_bundle(tmp_path / "ov", tmp_path / "b.zip")
    assert not (tmp_path / "b.zip").exists()
    with pytest.raises(BundleError, match="not a directory of overlays"):
        create_bundle(tmp_path / "nope", tmp_path / "b.zip")


@pytest.mark.parametrize("how", ["edited", "missing"])
def test_create_refuses_a_folder_changed_since_signing(built, tmp_path, how):
    s, _, _ = built
    target = s.file("pkg.other", ".json")
    if how == "edited":
        target.write_bytes(target.read_bytes() + b" ")
        reason = "changed since the folder was signed"
    else:
        target.unlink()
        reason = "pinned by the signed overlay set but missing"
    with pytest.raises(BundleError, match=reason) as ei:
        create_bundle(s.directory, tmp_path / "b.zip")
    assert ei.value.path == str(target)
    assert not (tmp_path / "b.zip").exists()


def test_create_bundles_only_what_the_set_pins(built, tmp_path):
    s, _, info = built
    planted = make_overlay(s.directory, module="evil.mod")
    out = create_bundle(s.directory, tmp_path / "b.zip")
    with zipfile.ZipFile(out.path) as zf:
        names = set(zf.namelist())
    assert planted.name not in names and names == set(info.members)


def test_create_with_a_key_signs_the_folder_first(tmp_path):
    # Hand-made overlays cannot be rebuilt from a source: signing (and so bundling) refuses.
    s = make_signed_set(tmp_path, MODULES, now=NOW, ttl_seconds=DAY)
    with pytest.raises(BundleError, match="signing failed: .*cannot rebuild it to check it"):
        create_bundle(s.directory, tmp_path / "b.zip", private_key=s.key)
    assert not (tmp_path / "b.zip").exists()


@pytest.fixture(scope="module")
def healed(tmp_path_factory):
    return healed_app(tmp_path_factory.mktemp("healed"), {m: APP_MODULES[m] for m in ("seta", "setb")})


def test_create_with_a_key_on_a_real_folder(healed, tmp_path, monkeypatch):
    from codesuture.ship.sign import SignOptions
    from codesuture.trust.keys import keyid

    app = tmp_path / "app"
    shutil.copytree(healed[0], app)
    key = Ed25519PrivateKey.generate()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ci.pem").write_bytes(public_pem(key.public_key()))
    info = create_bundle(app / "overlays", tmp_path / "b.zip", private_key=key,
                         options=SignOptions(state_dir=str(tmp_path / "state")))
    assert (info.set_name, info.version, info.keyid) == ("demoapp", 1, keyid(key.public_key()))
    assert len(info.stems) == 2 and len(info.members) == 1 + 6
    assert (app / "overlays" / SET_NAME).is_file()  # the folder itself got signed
    clear_trust_root_cache()
    assert all(r.ok for r in verify_paths([info.path], tmp_path / "keys")), verify_paths([info.path], tmp_path / "keys")


def test_cli_bundle_create_and_verify(tmp_path):
    # Signed at the real current time (default TTL): the CLI checks expiry on the real clock.
    s = make_signed_set(tmp_path, ("demo.mod",))
    out = tmp_path / "cli.zip"
    runner = CliRunner()
    r = runner.invoke(main, ["bundle", "create", str(s.directory), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert f"wrote {out}: 1 overlay(s), 4 member(s), signed overlay set 'demo' v1 (key {s.keyid})" in r.output
    clear_trust_root_cache()
    r = runner.invoke(main, ["bundle", "verify", "--keys", str(s.keys_dir), str(out)])
    assert r.exit_code == 0, r.output
    assert f"OK {out}:{s.entry().name}.overlay (signer {s.keyid}" in r.output and f"OK {out}:{SET_NAME}" in r.output
    clear_trust_root_cache()
    r = runner.invoke(main, ["bundle", "verify", "--keys", str(s.keys_dir), "--json", str(out)])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True
    bad = _rewrite(out, tmp_path / "bad.zip", add=[(_info("../x.overlay"), b"x")])
    clear_trust_root_cache()
    r = runner.invoke(main, ["bundle", "verify", "--keys", str(s.keys_dir), str(bad)])
    assert r.exit_code == 1 and f"FAIL {bad}: unsafe member name" in r.output
    r = runner.invoke(main, ["bundle", "verify", "--keys", str(s.keys_dir), str(tmp_path / "nope.zip")])
    assert r.exit_code == 1 and "no such file" in r.output
    unsigned = tmp_path / "unsigned"
    make_overlay(unsigned)
    r = runner.invoke(main, ["bundle", "create", str(unsigned), "-o", str(tmp_path / "u.zip")])
    assert r.exit_code == 1 and "no signed overlay set" in r.output


def test_cli_bundle_create_with_key(healed, tmp_path):
    app = tmp_path / "app"
    shutil.copytree(healed[0], app)
    key = Ed25519PrivateKey.generate()
    priv = tmp_path / "signing.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    out = tmp_path / "cli.zip"
    r = CliRunner().invoke(main, ["bundle", "create", str(app / "overlays"), "-o", str(out), "--key", str(priv),
                                  "--set-name", "shop"])
    assert r.exit_code == 0, r.output
    assert "2 overlay(s), 7 member(s), signed overlay set 'shop' v1" in r.output
