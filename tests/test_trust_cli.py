"""``codesuture keygen / sign / verify`` through click.

``sign`` rebuilds every overlay from its source and recorded patches before signing,
so these tests sign real overlays, healed once per module by ``codesuture run``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat

import pytest
from click.testing import CliRunner

from codesuture.cli.group import cli as main
from codesuture.overlay.model import OverlayMeta
from codesuture.overlay.names import SET_NAME
from codesuture.trust.policy import clear_trust_root_cache
from trust_helpers import APP_MODULES, healed_app, make_overlay

MODULES = {m: APP_MODULES[m] for m in ("seta", "setb")}


@pytest.fixture(autouse=True)
def _fresh_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    clear_trust_root_cache()
    yield
    clear_trust_root_cache()


def run(*args, env=None):
    clear_trust_root_cache()
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def healed(tmp_path_factory):
    return healed_app(tmp_path_factory.mktemp("healed"), MODULES)


@pytest.fixture
def setup(healed, tmp_path):
    keys_dir = tmp_path / "keys"
    priv = tmp_path / "secret" / "signing.pem"
    r = run("keygen", "--private-key", priv, "--public-key", keys_dir / "ci.pem", "--passphrase-env", "PW", env={"PW": "s3cret"})
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    app = tmp_path / "app"
    shutil.copytree(healed[0], app)
    ov_dir = app / "overlays"
    a = next(ov_dir.glob("seta.*.overlay"))
    b = next(ov_dir.glob("setb.*.overlay"))
    return tmp_path, keys_dir, priv, ov_dir, a, b


def sibling(overlay, suffix):
    return overlay.with_name(overlay.name[: -len(".overlay")] + suffix)


def sign(priv, *paths, extra=()):
    return run("sign", "--key", priv, "--passphrase-env", "PW", *extra, *paths, env={"PW": "s3cret"})


def test_keygen_refuses_keys_folder(tmp_path):
    r = run("keygen", "--private-key", tmp_path / "keys" / "priv.pem", "--public-key", tmp_path / "pub.pem")
    assert r.exit_code == 1 and "inside a folder named 'keys'" in r.output


def test_sign_and_verify_folder(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    r = sign(priv, ov_dir, extra=("--ttl", "7"))
    assert r.exit_code == 0, r.output
    assert [line.split()[0] for line in r.output.splitlines()] == ["signed"] * 3  # two overlays and the folder's signed overlay set
    assert f"-> {ov_dir / SET_NAME}" in r.output and "signed overlay set 'demoapp' v1: 2 overlay(s)" in r.output
    assert sibling(a, ".dsse.json").is_file() and sibling(b, ".dsse.json").is_file()
    r = run("verify", "--keys", keys_dir, ov_dir)
    assert r.exit_code == 0, r.output
    assert r.output.count("OK ") == 3
    r = run("verify", "--keys", keys_dir, "--json", a)
    data = json.loads(r.output)
    assert data["ok"] is True and data["results"][0]["module"] == "seta"
    r = sign(priv, ov_dir)
    assert r.exit_code == 0 and "signed overlay set 'demoapp' v2" in r.output


def test_set_name_option(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    r = sign(priv, ov_dir, extra=("--set-name", "inventory"))
    assert r.exit_code == 0 and "signed overlay set 'inventory' v1" in r.output, r.output
    r = sign(priv, ov_dir, extra=("--set-name", "not a name"))
    assert r.exit_code == 1 and "invalid overlay set name" in r.output


def test_verify_reports_each_failure(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    assert run("sign", "--key", priv, ov_dir, env={"PW": "s3cret"}).exit_code == 1  # no passphrase given
    assert sign(priv, ov_dir).exit_code == 0
    a.write_bytes(a.read_bytes() + b"!")
    r = run("verify", "--keys", keys_dir, ov_dir)
    assert r.exit_code == 1
    assert f"FAIL {a}: overlay bytes do not match the signed overlay set 'demoapp' v1 (tampered or replaced)" in r.output
    assert f"OK {b}" in r.output
    r = run("verify", "--keys", keys_dir, "--json", ov_dir)
    data = json.loads(r.output)
    # The two overlays, then the folder's signed overlay set (which itself still verifies).
    assert data["ok"] is False and [x["ok"] for x in data["results"]] == [False, True, True]
    assert data["results"][2]["path"].endswith(SET_NAME)


def test_verify_checks_each_overlays_own_envelope(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    assert sign(priv, ov_dir).exit_code == 0
    env = sibling(b, ".dsse.json")
    env.write_bytes(env.read_bytes().replace(b'"sig": "', b'"sig": "A', 1))
    r = run("verify", "--keys", keys_dir, ov_dir)
    assert r.exit_code == 1
    assert f"FAIL {b}: {env.name} does not match the signed overlay set 'demoapp' v1" in r.output
    assert f"OK {a}" in r.output


def test_sign_refuses_overlay_not_matching_metadata(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    a.write_bytes(a.read_bytes() + b"!")
    r = sign(priv, a)
    assert r.exit_code == 1 and "do not match the digest in their metadata" in r.output
    assert not sibling(a, ".dsse.json").exists()


def test_sign_refuses_code_planted_behind_a_copied_sidecar(setup):
    # The attacker replaces the overlay's code and fixes the digest in the sidecar: the
    # sidecar still describes the reviewed patch, the code does something else.
    tmp, keys_dir, priv, ov_dir, a, b = setup
    from codesuture.overlay import format as ovformat

    source = (tmp / "app" / "seta.py").read_bytes()
    evil = ovformat.pack(__import__("marshal").dumps(compile("import os\n", "app:seta.py", "exec")), source)
    a.write_bytes(evil)
    meta = OverlayMeta.loads(sibling(a, ".json").read_bytes())
    sibling(a, ".json").write_bytes(meta._replace(overlay_sha256=hashlib.sha256(evil).hexdigest()).dumps())
    r = sign(priv, ov_dir)
    assert r.exit_code == 1
    assert "gives different bytes: its code is not what its metadata says (not signed)" in r.output
    # All or nothing: neither overlay nor the folder got signed.
    assert not list(ov_dir.glob("*.dsse.json"))
    assert "nothing signed: 1 overlay(s) failed their checks" in r.output


def test_sign_refuses_when_the_source_changed(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    (tmp / "app" / "seta.py").write_text("def get(d):\n    return d.get('k')\n")
    r = sign(priv, ov_dir)
    assert r.exit_code == 1 and "cannot rebuild it to check it" in r.output and "SHA-256 differs" in r.output
    assert not (ov_dir / SET_NAME).exists()


def test_sign_refuses_a_hand_made_overlay_without_source(tmp_path, setup):
    _, _, priv, _, _, _ = setup
    overlay = make_overlay(tmp_path / "loose")
    r = sign(priv, overlay)
    assert r.exit_code == 1 and "cannot rebuild it to check it" in r.output
    assert not sibling(overlay, ".dsse.json").exists()


def test_sign_refuses_a_withdrawn_overlay(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    from codesuture.trust.state import HostState

    HostState(str(tmp / "state")).withdraw({hashlib.sha256(a.read_bytes()).hexdigest(): a.name}, 1_800_000_000.0)
    r = sign(priv, ov_dir)
    assert r.exit_code == 1 and "was withdrawn with codesuture rollback on this host: not signed again" in r.output
    assert not (ov_dir / SET_NAME).exists()


def test_verify_unsigned_and_missing(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    r = run("verify", "--keys", keys_dir, a, tmp / "nope.overlay")
    assert r.exit_code == 1
    assert "unsigned overlay refused" in r.output and "no such file or folder" in r.output


def test_verify_bad_trust_root(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    (keys_dir / "revoked.json").write_text("{")
    r = run("verify", "--keys", keys_dir, a)
    assert r.exit_code == 1 and "revoked.json" in r.output and "not JSON" in r.output


def test_revocation_via_cli(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    assert sign(priv, ov_dir).exit_code == 0
    (keys_dir / "revoked.json").write_text(json.dumps({"overlays": [hashlib.sha256(a.read_bytes()).hexdigest()]}))
    r = run("verify", "--keys", keys_dir, ov_dir)
    assert r.exit_code == 1 and f"FAIL {a}: revoked overlay" in r.output and f"OK {b}" in r.output


def test_usage_errors(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    assert run("verify", a).exit_code == 2
    assert run("sign", a).exit_code == 2
    assert run("verify", "--sigstore", a).exit_code == 2
    r = run("sign", "--key", priv, "--sigstore", a)
    assert r.exit_code == 2 and "exclusive" in r.output
