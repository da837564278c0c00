"""``codesuture bundle push``: a signed bundle becomes an OCI artifact in a real
registry (the CNCF Distribution registry on 127.0.0.1); unsigned bundles, bad
locations and passwords on the command line are refused before any request."""

from __future__ import annotations

import hashlib
import json
import urllib.request
import zipfile

from heal_helpers import cli
from registry_helpers import registry  # noqa: F401  (fixture)
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
    from registry_helpers import free_port

    s = make_signed_set(tmp_path, ("demo.mod",))
    bundle = tmp_path / "deploy.cso"
    create_bundle(s.directory, bundle)
    p = cli("bundle", "push", bundle, f"oci://127.0.0.1:{free_port()}/app/overlays:prod", cwd=tmp_path, timeout=60)
    assert p.returncode == 1
    assert "push failed" in p.stderr and "Traceback" not in p.stderr
