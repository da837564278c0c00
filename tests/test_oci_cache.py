"""One host's look at a registry tag (codesuture.ship.fleet_cache.look) against the real
CNCF Distribution registry: what it refuses (expired set, another key, over the size
cap, an artifact that is not a signed bundle), that a refusal changes nothing and is
not pulled again, and that a host makes one request per look."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import urllib.request

import pytest

from registry_helpers import registry  # noqa: F401  (fixture)
from trust_helpers import add_key, make_signed_set, sign_folder_raw

from codesuture import settings
from codesuture.errors import ConfigError
from codesuture.ship import oci
from codesuture.ship.bundle import create_bundle
from codesuture.ship.fleet_cache import HostCache, look
from codesuture.ship.publish import push_bundle
from codesuture.trust.policy import clear_trust_root_cache


def _settings(tmp_path, location, keys):
    return settings.load({"overlays": location, "keys": str(keys), "poll": "1"},
                         {"CODESUTURE_STATE_DIR": str(tmp_path / "state"), "CODESUTURE_CACHE_DIR": str(tmp_path / "cache")})


def _bundle(tmp_path, name, **kw):
    s = make_signed_set(tmp_path / name, ("demo.mod",), **kw)
    out = tmp_path / f"{name}.cso"
    create_bundle(s.directory, out)
    return s, out


def _resigned(tmp_path, s, name, **kw):
    """The fleet's folder signed again by the fleet's key (a newer set version), bundled."""
    folder = tmp_path / name
    shutil.copytree(s.directory, folder)
    sign_folder_raw(folder, s.key, **kw)
    out = tmp_path / f"{name}.cso"
    create_bundle(folder, out)
    return out


@pytest.fixture(autouse=True)
def _fresh():
    clear_trust_root_cache()
    yield
    clear_trust_root_cache()


def test_look_pulls_once_then_heads_only(tmp_path, registry):  # noqa: F811
    s, bundle = _bundle(tmp_path, "good")
    location = registry.location()
    digest = push_bundle(str(bundle), location).digest
    st = _settings(tmp_path, location, s.keys_dir)
    cache = HostCache(st.cache_dir, location)
    first = look(cache, st, force=True)
    assert (first.status, first.digest, first.requests) == ("new", digest, 4)  # HEAD, manifest, set, bundle
    assert cache.current().digest == digest
    assert look(cache, st).status == "not-due"  # the host looked less than a poll ago
    again = look(cache, st, force=True)
    assert (again.status, again.requests) == ("unchanged", 1)
    with open(cache.lock_path, "a") as fh:  # another process of the host is looking
        import fcntl

        fcntl.flock(fh, fcntl.LOCK_EX)
        assert look(cache, st, force=True).status == "busy"


@pytest.mark.parametrize("case", ["expired", "other-key", "oversized", "truncated", "not-signed"])
def test_look_refuses_and_keeps_current(tmp_path, registry, monkeypatch, case):  # noqa: F811
    s, good = _bundle(tmp_path, "good")
    location = registry.location()
    st = _settings(tmp_path, location, s.keys_dir)
    cache = HostCache(st.cache_dir, location)
    before = push_bundle(str(good), location).digest
    assert look(cache, st, force=True).status == "new"
    if case == "expired":
        bad = _resigned(tmp_path, s, "expired", expires="2001-01-01T00:00:00Z")
        digest = push_bundle(str(bad), location).digest
        why = "expired"
    elif case == "other-key":
        _, bad = _bundle(tmp_path, "attacker")
        digest = push_bundle(str(bad), location).digest
        why = "untrusted key"
    elif case == "oversized":
        bad = _resigned(tmp_path, s, "big")
        digest = push_bundle(str(bad), location).digest
        monkeypatch.setattr(oci, "MAX_PULL_BYTES", 64)
        why = "oversized"
    elif case == "truncated":  # the signed set of the good bundle, the bundle cut in half
        import zipfile

        raw = good.read_bytes()
        digest = _push_raw(registry, zipfile.ZipFile(good).read("overlays.manifest.dsse.json"), raw[: len(raw) // 2])
        why = "not a zip bundle"
    else:
        digest = _push_raw(registry, b"not a DSSE envelope", b"PK\x05\x06" + b"\x00" * 18)
        why = "malformed envelope"
    out = look(cache, st, force=True)
    assert out.status == "refused" and why in out.reason, out
    current = cache.current()
    assert current.digest == before and current.refused[digest] == out.reason
    blobs = len([r for r in registry.requests("cache/") if r[0] == "GET"])
    again = look(cache, st, force=True)
    assert again.status == "known-refused" and again.requests == 1
    assert len([r for r in registry.requests("cache/") if r[0] == "GET"]) == blobs  # not pulled again


def _push_raw(reg, set_bytes: bytes, bundle_bytes: bytes) -> str:
    """Push an artifact with CodeSuture's media types by hand (distribution API)."""
    base = f"http://{reg.host}/v2/app/overlays"
    layers = []
    for data, media in ((b"{}", oci.MEDIA_CONFIG), (set_bytes, oci.MEDIA_SET), (bundle_bytes, oci.MEDIA_BUNDLE)):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        req = urllib.request.Request(f"{base}/blobs/uploads/", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            upload = r.headers["Location"]
        upload = upload if upload.startswith("http") else f"http://{reg.host}{upload}"
        sep = "&" if "?" in upload else "?"
        req = urllib.request.Request(f"{upload}{sep}digest={digest}", data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(req, timeout=5).close()
        layers.append({"mediaType": media, "digest": digest, "size": len(data)})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.MEDIA_MANIFEST, "config": layers[0],
                           "layers": layers[1:]}).encode()
    req = urllib.request.Request(f"{base}/manifests/prod", data=manifest, method="PUT",
                                 headers={"Content-Type": oci.MEDIA_MANIFEST})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.headers["Docker-Content-Digest"]


def test_unreachable_registry_is_not_a_refusal(tmp_path):
    pytest.importorskip("oras", reason="oras (codesuture[oci]) is not installed")
    from registry_helpers import free_port

    keys = tmp_path / "keys"
    add_key(keys)
    location = f"oci://127.0.0.1:{free_port()}/app/overlays:prod"
    st = _settings(tmp_path, location, keys)
    cache = HostCache(st.cache_dir, location)
    out = look(cache, st, force=True, deadline=time.monotonic() + 5)
    assert out.status == "unreachable" and "failed" in out.reason
    assert cache.current() is None


def test_settings_for_oci_locations(tmp_path):
    env = {"CODESUTURE_STATE_DIR": str(tmp_path / "state")}
    keys = str(tmp_path)
    s = settings.load({"overlays": " oci://Registry.Example:5000/app/overlays:prod ", "keys": keys}, env)
    assert s.overlays == "oci://Registry.Example:5000/app/overlays:prod" and s.is_oci and s.is_bundle and s.prod
    assert (s.poll, s.pull_timeout, s.plain_http) == (30.0, 2.0, False)
    assert s.cache_dir == str(tmp_path / "state" / "oci-cache")
    assert s.pending == str(tmp_path / "state" / "pending")
    s = settings.load({"keys": keys}, {**env, "CODESUTURE_OVERLAYS": "oci://127.0.0.1:5000/a/b@sha256:" + "0" * 64,
                                       "CODESUTURE_POLL": "2.5", "CODESUTURE_PULL_TIMEOUT": "0.5",
                                       "CODESUTURE_PLAIN_HTTP": "yes", "CODESUTURE_CACHE_DIR": str(tmp_path / "c")})
    assert (s.poll, s.pull_timeout, s.plain_http, s.cache_dir) == (2.5, 0.5, True, str(tmp_path / "c"))
    exported: dict[str, str] = {}
    s.export(exported)
    assert exported["CODESUTURE_OVERLAYS"].startswith("oci://") and exported["CODESUTURE_POLL"] == "2.5"
    for flags, env_extra, message in (
        ({"overlays": "oci://h/app:prod"}, {}, "trust root"),
        ({"overlays": "oci://h/app:prod", "keys": keys, "mode": "dev"}, {}, "prod mode"),
        ({"overlays": "oci://h/app", "keys": keys}, {}, "name a tag"),
        ({"overlays": "oci://h/app:prod", "keys": keys}, {"CODESUTURE_POLL": "0.01"}, "minimum"),
        ({"overlays": "oci://h/app:prod", "keys": keys}, {"CODESUTURE_PLAIN_HTTP": "maybe"}, "not a boolean"),
    ):
        with pytest.raises(ConfigError, match=message):
            settings.load(flags, {**env, **env_extra})
