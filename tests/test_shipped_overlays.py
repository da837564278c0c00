"""The shipped artifacts: ``overlays/`` (signed overlays of the example app) verify
against ``keys/`` (public keys only) and load through the real importer under the
strictest policy on the running Python.

The overlays are bound to the exact bytes of ``examples/inventory/stock.py`` and to
Python 3.11, 3.12 and 3.13. When ``stock.py`` changes they go stale; the failure
messages below say so and point at keys/README.md for how to regenerate them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OVERLAYS = REPO / "overlays"
KEYS = REPO / "keys"
APP = REPO / "examples" / "inventory" / "app.py"
STOCK = REPO / "examples" / "inventory" / "stock.py"
TAG = sys.implementation.cache_tag
HEALED = (
    "bolt   qty=3   note=order 10  supplier=ACME Corp\n"
    "nut    qty=50  note=None      supplier=None\n"
)
REGENERATE = (
    "regenerate and re-sign the shipped overlays as described in keys/README.md "
    "(codesuture run --ttl 3650 --overlays overlays examples/inventory/app.py with each of "
    "Python 3.11, 3.12, 3.13; then codesuture sign --ttl 3650 --key <new private key> overlays)"
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODESUTURE_") and k != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *map(os.fspath, args)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)


def _stale_hint() -> str:
    """Say whether stock.py changed since the overlays were built (the usual cause)."""
    digest = hashlib.sha256(STOCK.read_bytes()).hexdigest()
    built_for = sorted({p.name.rsplit(".", 2)[1] for p in OVERLAYS.glob("stock.*.overlay")})
    if built_for and all(p != digest[:16] for p in built_for):
        return (f"examples/inventory/stock.py changed since the shipped overlays were built "
                f"(its SHA-256 starts {digest[:16]}, the overlays are for {', '.join(built_for)}): "
                f"the overlays are STALE; {REGENERATE}")
    return f"if examples/inventory/stock.py or the overlay format changed, {REGENERATE}"


def _overlays() -> list[Path]:
    return sorted(OVERLAYS.glob("*.overlay"))


def test_keys_folder_holds_public_keys_only():
    pems = sorted(p for p in KEYS.iterdir() if p.suffix in (".pem", ".pub"))
    assert pems, "keys/ has no public key"
    for p in pems:
        text = p.read_text()
        assert "PRIVATE KEY" not in text, f"{p} contains a private key"
        assert "BEGIN PUBLIC KEY" in text, p


def test_shipped_overlays_cover_every_supported_python():
    tags = {p.name.split(".")[1] for p in _overlays()}
    assert {"cpython-311", "cpython-312", "cpython-313"} <= tags, (tags, REGENERATE)
    for overlay in _overlays():
        stem = overlay.name[: -len(".overlay")]
        assert (OVERLAYS / f"{stem}.dsse.json").is_file(), f"{overlay.name} is not signed; {REGENERATE}"
        assert overlay.name.startswith("stock."), "the example's overlays are keyed by module name, not by path"


def test_shipped_overlays_match_the_example_source():
    prefix = hashlib.sha256(STOCK.read_bytes()).hexdigest()[:16]
    mine = OVERLAYS / f"stock.{TAG}.{prefix}.overlay"
    assert mine.is_file(), _stale_hint()


def test_verify_exits_0():
    p = _run("-m", "codesuture", "verify", "--keys", KEYS, OVERLAYS)
    assert p.returncode == 0, f"codesuture verify failed:\n{p.stdout}{p.stderr}\n{_stale_hint()}"
    # Each overlay, and the folder's signed overlay set (overlays.manifest.dsse.json).
    assert p.stdout.count("OK ") == len(_overlays()) + 1, p.stdout
    assert "overlays.manifest.dsse.json" in p.stdout, p.stdout


def test_verify_json_names_the_shipped_signer():
    p = _run("-m", "codesuture", "verify", "--json", "--keys", KEYS, OVERLAYS)
    report = json.loads(p.stdout)
    assert report["ok"], report
    from codesuture.trust.keys import TrustRoot

    kids = set(TrustRoot.load(KEYS).keys)
    assert {r["signer"] for r in report["results"]} <= kids
    overlays = [r for r in report["results"] if r["path"].endswith(".overlay")]
    assert {r["module"] for r in overlays} == {"stock"} and len(overlays) == len(_overlays())
    (the_set,) = [r for r in report["results"] if r["path"].endswith("overlays.manifest.dsse.json")]
    assert the_set["ok"] and the_set["signer"] in kids


def test_plain_example_crashes():
    """The control: without the overlays, the example crashes in stock.py."""
    p = _run(APP)
    assert p.returncode == 1 and "KeyError: 'note'" in p.stderr, p.stderr


def test_boot_loads_the_signed_overlay_on_this_python():
    p = _run("-m", "codesuture.boot", "--overlays", OVERLAYS, "--keys", KEYS, "--require-signed", "--no-heal", APP)
    assert p.returncode == 0 and p.stdout == HEALED, (
        f"the shipped overlay for {TAG} did not load (rc {p.returncode}):\n"
        f"-- stdout\n{p.stdout}-- stderr\n{p.stderr}\n{_stale_hint()}"
    )
    assert "not applied" not in p.stderr and "UNSIGNED" not in p.stderr, p.stderr


def test_boot_from_another_directory():
    """Overlays of a module are keyed by its name, so they apply wherever the app lives."""
    p = subprocess.run(
        [sys.executable, "-m", "codesuture.boot", "--overlays", str(OVERLAYS), "--keys", str(KEYS),
         "--require-signed", "--no-heal", "inventory/app.py"],
        cwd=APP.parent.parent, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0 and p.stdout == HEALED, f"{p.stdout}{p.stderr}\n{_stale_hint()}"


def test_bundle_of_the_shipped_overlays_loads(tmp_path):
    """The shipped overlays bundled (with a throwaway manifest key added to a copy of
    keys/) still load on this Python."""
    import shutil

    keys = tmp_path / "keys"
    shutil.copytree(KEYS, keys)
    priv = tmp_path / "private" / "bundle.key"
    priv.parent.mkdir()
    p = _run("-m", "codesuture", "keygen", "--private-key", priv, "--public-key", keys / "bundle.pem")
    assert p.returncode == 0, p.stderr
    bundle = tmp_path / "deploy.zip"
    p = _run("-m", "codesuture", "bundle", "create", OVERLAYS, "-o", bundle, "--key", priv)
    assert p.returncode == 0, p.stderr
    p = _run("-m", "codesuture", "bundle", "verify", "--keys", keys, bundle)
    assert p.returncode == 0, f"{p.stdout}{p.stderr}\n{_stale_hint()}"
    p = _run("-m", "codesuture.boot", "--overlays", bundle, "--keys", keys, "--require-signed", "--no-heal", APP)
    assert p.returncode == 0 and p.stdout == HEALED, f"{p.stdout}{p.stderr}\n{_stale_hint()}"


@pytest.mark.parametrize("what", ["overlay", "envelope"])
def test_a_tampered_copy_of_the_shipped_overlay_is_refused(tmp_path, what):
    """Sanity check that the positive test above is meaningful: one flipped byte in a
    copy and the original (crashing) module runs."""
    import shutil

    store = tmp_path / "overlays"
    shutil.copytree(OVERLAYS, store)
    prefix = hashlib.sha256(STOCK.read_bytes()).hexdigest()[:16]
    stem = f"stock.{TAG}.{prefix}"
    if what == "overlay":
        target = store / f"{stem}.overlay"
        data = bytearray(target.read_bytes())
        data[-3] ^= 0x01
        target.write_bytes(bytes(data))
        reason = "tampered"
    else:
        target = store / f"{stem}.dsse.json"
        env = json.loads(target.read_text())
        import base64

        sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
        sig[0] ^= 0x01
        env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
        target.write_text(json.dumps(env))
        reason = "bad signature"
    p = _run("-m", "codesuture.boot", "--overlays", store, "--keys", KEYS, "--require-signed", "--no-heal", APP)
    assert p.returncode == 1 and "KeyError: 'note'" in p.stderr, p.stderr
    assert reason in p.stderr and f"overlay {stem} not applied" in p.stderr, p.stderr
