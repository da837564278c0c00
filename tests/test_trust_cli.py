"""``codesuture keygen / sign / verify`` through click."""

from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner

from codesuture.cli import main
from codesuture.trust.policy import clear_trust_root_cache
from trust_helpers import make_overlay


@pytest.fixture(autouse=True)
def _fresh_roots():
    clear_trust_root_cache()
    yield
    clear_trust_root_cache()


def run(*args, env=None):
    r = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return r


@pytest.fixture
def setup(tmp_path):
    keys_dir = tmp_path / "keys"
    priv = tmp_path / "secret" / "signing.pem"
    r = run("keygen", "--private-key", priv, "--public-key", keys_dir / "ci.pem", "--passphrase-env", "PW", env={"PW": "s3cret"})
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    ov_dir = tmp_path / "overlays"
    a = make_overlay(ov_dir, module="a.mod")
    b = make_overlay(ov_dir, module="b.mod", source=b"z = 3\n")
    return tmp_path, keys_dir, priv, ov_dir, a, b


def test_keygen_refuses_keys_folder(tmp_path):
    r = run("keygen", "--private-key", tmp_path / "keys" / "priv.pem", "--public-key", tmp_path / "pub.pem")
    assert r.exit_code == 1 and "inside a folder named 'keys'" in r.output


def test_sign_and_verify_folder(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    r = run("sign", "--key", priv, "--passphrase-env", "PW", "--ttl", "7", ov_dir, env={"PW": "s3cret"})
    assert r.exit_code == 0, r.output
    assert r.output.count("signed ") == 3  # two overlays and the folder's signed overlay set
    assert "overlays.manifest.dsse.json" in r.output
    assert a.with_name(a.name.replace(".overlay", ".dsse.json")).is_file()
    r = run("verify", "--keys", keys_dir, ov_dir)
    assert r.exit_code == 0, r.output
    assert r.output.count("OK ") == 3
    r = run("verify", "--keys", keys_dir, "--json", a)
    data = json.loads(r.output)
    assert data["ok"] is True and data["results"][0]["module"] == "a.mod"


def test_verify_reports_each_failure(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    assert run("sign", "--key", priv, ov_dir, env={"PW": "s3cret"}).exit_code == 1  # no passphrase given
    r = run("sign", "--key", priv, "--passphrase-env", "PW", ov_dir, env={"PW": "s3cret"})
    assert r.exit_code == 0
    a.write_bytes(a.read_bytes() + b"!")
    r = run("verify", "--keys", keys_dir, ov_dir)
    assert r.exit_code == 1
    assert f"FAIL {a}: overlay bytes do not match the signed subject digest" in r.output
    assert f"OK {b}" in r.output
    r = run("verify", "--keys", keys_dir, "--json", ov_dir)
    data = json.loads(r.output)
    # The two overlays, then the folder's signed overlay set, stale since `a` changed.
    assert data["ok"] is False and [x["ok"] for x in data["results"]] == [False, True, False]
    assert data["results"][2]["path"].endswith("overlays.manifest.dsse.json")
    assert "stale for " + a.name in data["results"][2]["reason"]


def test_sign_refuses_overlay_not_matching_metadata(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    a.write_bytes(a.read_bytes() + b"!")
    r = run("sign", "--key", priv, "--passphrase-env", "PW", a, env={"PW": "s3cret"})
    assert r.exit_code == 1 and "do not match the digest in their metadata" in r.output
    assert not a.with_name(a.name.replace(".overlay", ".dsse.json")).exists()


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
    import hashlib

    tmp, keys_dir, priv, ov_dir, a, b = setup
    run("sign", "--key", priv, "--passphrase-env", "PW", ov_dir, env={"PW": "s3cret"})
    (keys_dir / "revoked.json").write_text(json.dumps({"overlays": [hashlib.sha256(a.read_bytes()).hexdigest()]}))
    r = run("verify", "--keys", keys_dir, ov_dir)
    assert r.exit_code == 1 and f"FAIL {a}: revoked overlay" in r.output


def test_usage_errors(setup):
    tmp, keys_dir, priv, ov_dir, a, b = setup
    assert run("verify", a).exit_code == 2
    assert run("sign", a).exit_code == 2
    assert run("verify", "--sigstore", a).exit_code == 2
