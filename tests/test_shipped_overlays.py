"""The shipped artifacts: ``overlays/`` (the example app's overlays, a signed folder
with the signed overlay set ``inventory``) verify against ``keys/`` (public keys only)
and load through the real importer under the strictest policy on the running Python,
from the repository root and from any other working directory.

The overlays are bound to the exact bytes of ``examples/inventory/stock.py`` and to
Python 3.11, 3.12 and 3.13. When ``stock.py`` changes they go stale; the failure
messages below say so and point at keys/README.md for how to regenerate them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from heal_helpers import clean_env, other_pythons

REPO = Path(__file__).resolve().parents[1]
OVERLAYS = REPO / "overlays"
KEYS = REPO / "keys"
APP = REPO / "examples" / "inventory" / "app.py"
STOCK = REPO / "examples" / "inventory" / "stock.py"
TAG = sys.implementation.cache_tag
SET_NAME = "overlays.manifest.dsse.json"
HEALED = (
    "bolt   qty=3   note=order 10  supplier=ACME Corp\n"
    "nut    qty=50  note=None      supplier=None\n"
)
REGENERATE = (
    "regenerate and re-sign the shipped overlays as keys/README.md says (codesuture run --ttl 3650 with each of "
    "Python 3.11, 3.12, 3.13 into a new folder; codesuture sign --ttl 3650 --key <new private key> --app-root "
    "examples/inventory --set-name inventory --python ... <folder>; copy it to overlays/ and the new public key "
    "to keys/)"
)


def _run(*args: str | os.PathLike[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *map(os.fspath, args)], cwd=cwd, env=clean_env(),
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


def _strict(overlays: Path = OVERLAYS, keys: Path = KEYS) -> list[str]:
    return ["-m", "codesuture.boot", "--overlays", str(overlays), "--keys", str(keys), "--require-signed",
            "--require-overlays", "--no-heal"]


def _set_statement() -> dict:
    envelope = json.loads((OVERLAYS / SET_NAME).read_text())
    return json.loads(base64.b64decode(envelope["payload"]))


def test_keys_folder_holds_public_keys_only():
    pems = sorted(p for p in KEYS.iterdir() if p.suffix in (".pem", ".pub"))
    assert pems, "keys/ has no public key"
    for p in pems:
        text = p.read_text()
        assert "PRIVATE KEY" not in text, f"{p} contains a private key"
        assert "BEGIN PUBLIC KEY" in text, p
    assert {p.name for p in KEYS.iterdir()} <= {"README.md", "revoked.json"} | {p.name for p in pems}


def test_keys_readme_names_every_key():
    """keys/README.md stays true: its table lists each public key with its key id."""
    from codesuture.trust.keys import TrustRoot

    readme = (KEYS / "README.md").read_text()
    kids = set(TrustRoot.load(KEYS).keys)
    assert kids
    for kid in kids:
        assert kid in readme, f"keys/README.md does not list key id {kid}"


def test_shipped_overlays_cover_every_supported_python():
    tags = {p.name.split(".")[1] for p in _overlays()}
    assert {"cpython-311", "cpython-312", "cpython-313"} <= tags, (tags, REGENERATE)
    for overlay in _overlays():
        stem = overlay.name[: -len(".overlay")]
        assert (OVERLAYS / f"{stem}.dsse.json").is_file(), f"{overlay.name} is not signed; {REGENERATE}"
        assert overlay.name.startswith("stock."), "the example's overlays are keyed by module name, not by path"


def test_shipped_folder_is_exactly_its_signed_set():
    """The signed set ``inventory`` pins every file of the folder (and nothing else), and
    every overlay's own Statement names it."""
    statement = _set_statement()
    predicate = statement["predicate"]
    assert predicate["name"] == "inventory" and predicate["version"] >= 1, predicate
    pinned = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    present = {p.name for p in OVERLAYS.iterdir()} - {SET_NAME}
    assert set(pinned) == present, f"files not pinned or missing: {set(pinned) ^ present}; {REGENERATE}"
    for name, digest in pinned.items():
        assert hashlib.sha256((OVERLAYS / name).read_bytes()).hexdigest() == digest, f"{name} changed; {REGENERATE}"
    assert set(predicate["overlays"]) == {p.name[: -len(".overlay")] for p in _overlays()}
    for envelope in OVERLAYS.glob("*.dsse.json"):
        if envelope.name != SET_NAME:
            own = json.loads(base64.b64decode(json.loads(envelope.read_text())["payload"]))
            assert own["predicate"].get("overlaySet") == "inventory", envelope.name


def test_shipped_artifacts_carry_no_machine_paths():
    """Origins are portable (``app:stock.py``); no file names a directory of the machine
    that built it (nor this checkout)."""
    for sidecar in OVERLAYS.glob("*.json"):
        if sidecar.name.endswith(".dsse.json"):
            continue
        assert json.loads(sidecar.read_text())["origin"] == "app:stock.py", sidecar.name
    for f in OVERLAYS.iterdir():
        data = f.read_bytes()
        if f.name.endswith(".dsse.json"):
            data += base64.b64decode(json.loads(data)["payload"])
        for needle in (str(REPO).encode(), b"/home/", b"/tmp/", b"/root/", b"/Users/"):
            assert needle not in data, f"{f.name} contains {needle!r}"


def test_shipped_overlays_match_the_example_source():
    prefix = hashlib.sha256(STOCK.read_bytes()).hexdigest()[:16]
    mine = OVERLAYS / f"stock.{TAG}.{prefix}.overlay"
    assert mine.is_file(), _stale_hint()


def test_verify_exits_0():
    p = _run("-m", "codesuture", "verify", "--keys", KEYS, OVERLAYS)
    assert p.returncode == 0, f"codesuture verify failed:\n{p.stdout}{p.stderr}\n{_stale_hint()}"
    # Each overlay, and the folder's signed overlay set (overlays.manifest.dsse.json).
    assert p.stdout.count("OK ") == len(_overlays()) + 1, p.stdout
    assert f"{SET_NAME} " in p.stdout and "signed overlay set 'inventory' v" in p.stdout, p.stdout


def test_verify_json_names_the_shipped_signer():
    p = _run("-m", "codesuture", "verify", "--json", "--keys", KEYS, OVERLAYS)
    report = json.loads(p.stdout)
    assert report["ok"], report
    from codesuture.trust.keys import TrustRoot

    kids = set(TrustRoot.load(KEYS).keys)
    assert {r["signer"] for r in report["results"]} <= kids
    overlays = [r for r in report["results"] if r["path"].endswith(".overlay")]
    assert {r["module"] for r in overlays} == {"stock"} and len(overlays) == len(_overlays())
    (the_set,) = [r for r in report["results"] if r["path"].endswith(SET_NAME)]
    assert the_set["ok"] and the_set["signer"] in kids


def test_audit_with_the_trust_root_is_ok():
    """``codesuture audit --keys`` from the signed Statements: every overlay admitted,
    two patches each, its source found from its origin and unchanged."""
    p = _run("-m", "codesuture", "audit", "--keys", KEYS, "--app-root", APP.parent, OVERLAYS)
    assert p.returncode == 0, f"{p.stdout}{p.stderr}\n{_stale_hint()}"
    rows = [line for line in p.stdout.splitlines() if line.startswith("ok ")]
    assert len(rows) == len(_overlays()) and all("(2 patch(es), signed: set" in r for r in rows), p.stdout


def test_shipped_overlays_still_rebuild_from_their_source(tmp_path):
    """Signing a copy again (with a throwaway key) passes ``sign``'s rebuild check on
    every interpreter: each shipped overlay is exactly what its source and recorded
    patches build today, so the folder can be re-signed as it is."""
    others = other_pythons()
    if len(others) < 2:
        pytest.skip(f"needs the two Pythons other than {TAG} with codesuture (found: {others or 'none'})")
    copy = tmp_path / "overlays"
    shutil.copytree(OVERLAYS, copy)
    key = tmp_path / "private" / "throwaway.key"
    p = _run("-m", "codesuture", "keygen", "--private-key", key, "--public-key", tmp_path / "pub" / "k.pem")
    assert p.returncode == 0, p.stderr
    pythons = [a for py in others for a in ("--python", py)]
    p = _run("-m", "codesuture", "sign", "--key", key, "--app-root", APP.parent, "--set-name", "inventory", *pythons,
             copy)
    assert p.returncode == 0 and "signed overlay set 'inventory' v2: 3 overlay(s)" in p.stdout, (
        f"{p.stdout}{p.stderr}\n{_stale_hint()}")
    for overlay in _overlays():
        assert (copy / overlay.name).read_bytes() == overlay.read_bytes()


def test_plain_example_crashes():
    """The control: without the overlays, the example crashes in stock.py."""
    p = _run(APP)
    assert p.returncode == 1 and "KeyError: 'note'" in p.stderr, p.stderr


def test_boot_loads_the_signed_overlay_on_this_python():
    p = _run(*_strict(), APP)
    assert p.returncode == 0 and p.stdout == HEALED, (
        f"the shipped overlay for {TAG} did not load (rc {p.returncode}):\n"
        f"-- stdout\n{p.stdout}-- stderr\n{p.stderr}\n{_stale_hint()}"
    )
    assert p.stderr.splitlines() == ["codesuture: session: 0 patches applied, 1 overlay loaded"], p.stderr


@pytest.mark.parametrize("where", ["examples", "elsewhere"])
def test_boot_from_another_directory(where, tmp_path):
    """Overlays of a module are keyed by its name and origin, so they apply wherever the
    app is started from: the examples folder (relative paths), or an unrelated folder."""
    if where == "examples":
        cwd = APP.parent.parent
        args = _strict(Path(os.path.relpath(OVERLAYS, cwd)), Path(os.path.relpath(KEYS, cwd))) + ["inventory/app.py"]
    else:
        cwd = tmp_path
        args = _strict() + [str(APP)]
    p = _run(*args, cwd=cwd)
    assert p.returncode == 0 and p.stdout == HEALED, f"{p.stdout}{p.stderr}\n{_stale_hint()}"


def test_bundle_of_the_shipped_overlays_loads(tmp_path):
    """The shipped signed folder, bundled as it is (no new signature), verifies and loads."""
    bundle = tmp_path / "deploy.cso"
    p = _run("-m", "codesuture", "bundle", "create", OVERLAYS, "-o", bundle)
    assert p.returncode == 0 and "signed overlay set 'inventory'" in p.stdout, p.stdout + p.stderr
    p = _run("-m", "codesuture", "bundle", "verify", "--keys", KEYS, bundle)
    assert p.returncode == 0, f"{p.stdout}{p.stderr}\n{_stale_hint()}"
    p = _run(*_strict(bundle), APP, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout == HEALED, f"{p.stdout}{p.stderr}\n{_stale_hint()}"


@pytest.mark.parametrize("what", ["overlay", "envelope"])
def test_a_tampered_copy_of_the_shipped_overlay_is_refused(tmp_path, what):
    """Sanity check that the positive test above is meaningful: one flipped byte in a
    copy and the original (crashing) module runs."""
    store = tmp_path / "overlays"
    shutil.copytree(OVERLAYS, store)
    prefix = hashlib.sha256(STOCK.read_bytes()).hexdigest()[:16]
    stem = f"stock.{TAG}.{prefix}"
    if what == "overlay":
        target = store / f"{stem}.overlay"
        data = bytearray(target.read_bytes())
        data[-3] ^= 0x01
        target.write_bytes(bytes(data))
        reason = "overlay bytes do not match the signed overlay set 'inventory'"
    else:
        target = store / f"{stem}.dsse.json"
        env = json.loads(target.read_text())
        sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
        sig[0] ^= 0x01
        env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
        target.write_text(json.dumps(env))
        reason = f"{stem}.dsse.json does not match the signed overlay set 'inventory'"
    p = _run(*_strict(store), APP)
    assert p.returncode == 1 and "KeyError: 'note'" in p.stderr, p.stderr
    assert reason in p.stderr and f"overlay {stem} not applied" in p.stderr, p.stderr
