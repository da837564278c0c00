"""``codesuture bundle push``: a signed bundle becomes an OCI artifact in a real
registry (the CNCF Distribution registry on 127.0.0.1); unsigned bundles, bad
locations and passwords on the command line are refused before any request."""

from __future__ import annotations

import hashlib
import json
import urllib.request
import zipfile

import pytest

from heal_helpers import cli
from registry_helpers import auth_registry, registry  # noqa: F401  (fixtures)
from trust_helpers import make_overlay, make_signed_set

from codesuture.overlay.names import SET_NAME
from codesuture.ship.bundle import create_bundle


def _manifest(reg, digest: str) -> dict:
    req = urllib.request.Request(f"http://{reg.host}/v2/app/overlays/manifests/{digest}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        raw = r.read()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    return json.loads(raw)


def test_push_signed_bundle(tmp_path, registry):  # noqa: F811
    s = make_signed_set(tmp_path, ("demo.mod",))
    bundle = tmp_path / "deploy.cso"
    create_bundle(s.directory, bundle)
    p = cli("bundle", "push", "--keys", s.keys_dir, bundle, registry.location(), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    digest = p.stdout.strip().splitlines()[-1]
    assert digest.startswith("sha256:") and len(digest) == 71
    m = _manifest(registry, digest)
    assert m["config"]["mediaType"] == "application/vnd.codesuture.bundle.config.v1+json"
    types = {layer["mediaType"]: layer for layer in m["layers"]}
    assert set(types) == {"application/vnd.codesuture.overlay-set.v1+dsse+json", "application/vnd.codesuture.bundle.v1+zip"}
    assert m["annotations"]["dev.codesuture.set.version"] == "1"
    bundle_bytes = bundle.read_bytes()
    assert types["application/vnd.codesuture.bundle.v1+zip"]["digest"] == "sha256:" + hashlib.sha256(bundle_bytes).hexdigest()
    set_bytes = zipfile.ZipFile(bundle).read(SET_NAME)
    assert types["application/vnd.codesuture.overlay-set.v1+dsse+json"]["size"] == len(set_bytes)
    # the tag resolves to the printed digest
    req = urllib.request.Request(f"http://{registry.host}/v2/app/overlays/manifests/prod", method="HEAD",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["Docker-Content-Digest"] == digest


def test_push_refuses_unsigned_bundle(tmp_path, registry):  # noqa: F811
    overlay = make_overlay(tmp_path / "plain")
    bundle = tmp_path / "unsigned.cso"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.write(overlay, overlay.name)
        zf.write(overlay.with_suffix(".json"), overlay.with_suffix(".json").name)
    p = cli("bundle", "push", bundle, registry.location(), cwd=tmp_path)
    assert p.returncode == 1
    assert "unsigned bundle" in p.stderr
    assert not [r for r in registry.requests("codesuture") if r[0] in ("PUT", "POST")]


def test_push_refuses_bad_bundle_and_location(tmp_path, registry):  # noqa: F811
    junk = tmp_path / "junk.cso"
    junk.write_bytes(b"not a zip")
    p = cli("bundle", "push", junk, registry.location(), cwd=tmp_path)
    assert p.returncode == 1 and "not a zip bundle" in p.stderr
    s = make_signed_set(tmp_path, ("demo.mod",))
    bundle = tmp_path / "deploy.cso"
    create_bundle(s.directory, bundle)
    p = cli("bundle", "push", bundle, f"oci://{registry.host}/App/overlays", cwd=tmp_path)
    assert p.returncode == 1 and "name a tag" in p.stderr
    p = cli("bundle", "push", bundle, registry.location(), "--username", "ci", cwd=tmp_path)
    assert p.returncode == 2 and "--password-env" in p.stderr
    assert registry.requests("codesuture") == []


def test_push_to_unreachable_registry_fails_cleanly(tmp_path):
    pytest.importorskip("oras", reason="oras (codesuture[oci]) is not installed")
    from registry_helpers import free_port

    s = make_signed_set(tmp_path, ("demo.mod",))
    bundle = tmp_path / "deploy.cso"
    create_bundle(s.directory, bundle)
    p = cli("bundle", "push", bundle, f"oci://127.0.0.1:{free_port()}/app/overlays:prod", cwd=tmp_path, timeout=60)
    assert p.returncode == 1
    assert "push failed" in p.stderr and "Traceback" not in p.stderr


def test_review_commands_read_the_registry(tmp_path, registry):  # noqa: F811
    s = make_signed_set(tmp_path, ("demo.mod",))
    bundle = tmp_path / "deploy.cso"
    create_bundle(s.directory, bundle)
    location = registry.location()
    assert cli("bundle", "push", bundle, location, cwd=tmp_path).returncode == 0
    for args in (("verify", "--keys", s.keys_dir, location), ("bundle", "verify", "--keys", s.keys_dir, location)):
        p = cli(*args, cwd=tmp_path)
        assert p.returncode == 0 and "OK " in p.stdout and "pulled " + location in p.stderr, p
    other = tmp_path / "other-keys"
    from trust_helpers import add_key

    add_key(other)
    p = cli("verify", "--keys", other, location, cwd=tmp_path)
    assert p.returncode == 1 and "FAIL" in p.stdout, p
    p = cli("explain", "--json", location, cwd=tmp_path)
    assert p.returncode == 0 and json.loads(p.stdout)[0]["module"] == "demo.mod", p
    p = cli("audit", "--keys", s.keys_dir, location, cwd=tmp_path)
    assert "demo.mod" in p.stdout or "demo" in p.stdout, p
    p = cli("sbom", "-o", tmp_path / "sbom.json", "--keys", s.keys_dir, location, cwd=tmp_path)
    assert p.returncode == 0 and json.loads((tmp_path / "sbom.json").read_text())["bomFormat"] == "CycloneDX", p
    # the temporary folders are gone; a tag that does not exist is a clear error
    assert not list(tmp_path.glob("codesuture-pull-*"))
    p = cli("verify", "--keys", s.keys_dir, registry.location(tag="nope"), cwd=tmp_path)
    assert p.returncode == 1 and "no such tag" in p.stderr and "Traceback" not in p.stderr, p


def test_credentials_from_env_and_docker_config(tmp_path, auth_registry):  # noqa: F811
    """An htpasswd registry: push with --username and the password from an environment
    variable; read with the credentials of ~/.docker/config.json; without any, a clear
    error."""
    import base64
    import os

    from heal_helpers import clean_env

    s = make_signed_set(tmp_path, ("demo.mod",))
    bundle = tmp_path / "deploy.cso"
    create_bundle(s.directory, bundle)
    location = auth_registry.location()
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    env = clean_env(HOME=str(home), REG_PW="s3cret")
    p = cli("bundle", "push", bundle, location, "--username", "ci", "--password-env", "REG_PW", cwd=tmp_path, env=env)
    assert p.returncode == 0, p
    assert "s3cret" not in p.stdout + p.stderr
    p = cli("verify", "--keys", s.keys_dir, location, cwd=tmp_path, env=env)
    assert p.returncode == 1 and "wants credentials" in p.stderr and "Traceback" not in p.stderr, p
    token = base64.b64encode(b"ci:s3cret").decode()
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    p = cli("verify", "--keys", s.keys_dir, location, cwd=tmp_path, env=env)
    assert p.returncode == 0 and "OK " in p.stdout, p
    env["REG_PW"] = "wrong"
    os.unlink(home / ".docker" / "config.json")
    p = cli("bundle", "push", bundle, location, "--username", "ci", "--password-env", "REG_PW", cwd=tmp_path, env=env)
    assert p.returncode == 1 and "push failed" in p.stderr, p
