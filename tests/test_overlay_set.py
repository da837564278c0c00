"""The signed overlay set: one verification per directory, never disagreeing with the
overlays' own envelopes."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from codesuture.loader.finder import install, uninstall
from codesuture.trust import dsse, policy
from codesuture.trust.manifest import MANIFEST_NAME

MODS = ("seta", "setb", "setc")


def cs(*args, cwd=None):
    r = subprocess.run([sys.executable, "-m", "codesuture", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return r


@pytest.fixture
def signed(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    for m in MODS:
        (app / f"{m}.py").write_text("def get(d):\n    return d['k']\n")
    (app / "main.py").write_text("".join(f"import {m}\nprint({m}.get({{}}))\n" for m in MODS))
    ov, keys = tmp_path / "ov", tmp_path / "keys"
    assert cs("run", "--retries", "5", "--overlays", ov, app / "main.py").returncode == 0
    assert cs("keygen", "--private-key", tmp_path / "k.key", "--public-key", keys / "k.pem").returncode == 0
    r = cs("sign", "--key", tmp_path / "k.key", ov)
    assert r.returncode == 0 and MANIFEST_NAME in r.stdout, r.stdout + r.stderr
    return app, ov, keys


@pytest.fixture
def importer(signed, monkeypatch):
    """Import the app's modules in process through the finder; count DSSE verifications."""
    app, ov, keys = signed
    calls = []
    real = dsse.verify
    monkeypatch.setattr(dsse, "verify", lambda *a, **k: calls.append(a[3] if len(a) > 3 else k.get("path")) or real(*a, **k))
    monkeypatch.syspath_prepend(str(app))
    policy.clear_trust_root_cache()

    def run():
        finder = install(str(ov), policy.LoadPolicy(keys, require_signed=True))
        assert finder is not None
        try:
            return [importlib.import_module(m).get({}) for m in MODS]
        finally:
            uninstall()
            for m in MODS:
                sys.modules.pop(m, None)
            policy.clear_trust_root_cache()

    return run, calls, ov


def test_one_verification_for_the_whole_directory(importer):
    run, calls, _ = importer
    assert run() == [None, None, None]  # every module's overlay applied
    assert len(calls) == 1 and str(calls[0]).endswith(MANIFEST_NAME)


def test_tampered_set_falls_back_to_each_envelope(importer):
    run, calls, ov = importer
    manifest = ov / MANIFEST_NAME
    raw = bytearray(manifest.read_bytes())
    raw[raw.index(b'"sig": "') + 12] ^= 1
    manifest.write_bytes(bytes(raw))
    assert run() == [None, None, None]  # still loaded, each from its own verified envelope
    assert len(calls) == 1 + len(MODS)


def test_changed_envelope_is_verified_on_its_own(importer):
    run, calls, ov = importer
    env = next(ov.glob("seta.*.dsse.json"))
    env.write_bytes(env.read_bytes().replace(b'"sig": "', b'"sig": "A', 1))  # breaks its signature
    results = []
    try:
        results = run()
    except KeyError:
        results = ["refused"]
    # seta's overlay is refused (its own envelope is bad, the set no longer pins it),
    # so the original seta.get raises KeyError at import-time use.
    assert results == ["refused"]


def test_verify_reports_the_set(signed):
    _, ov, keys = signed
    r = cs("verify", "--keys", keys, ov)
    assert r.returncode == 0 and f"OK {ov / MANIFEST_NAME}" in r.stdout, r.stdout
    (ov / MANIFEST_NAME).write_text("{}")
    r = cs("verify", "--keys", keys, ov)
    assert r.returncode == 1 and MANIFEST_NAME in r.stdout + r.stderr
