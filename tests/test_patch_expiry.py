"""Expiry per patch (docs/governance.md): one short-lived patch never expires the
module's whole overlay. The function whose patch expired runs its source's code; the
other patches of the same overlay stay, unsigned (dev) and under a signed set. Real
``codesuture run`` / ``sign`` / boot processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from heal_helpers import boot, cli, heal, overlays_in, write

LIB = """
def first(d):
    return d["missing"]


def second(d):
    return d["absent"]
"""

MAIN = """
import sys
import lib
fn = getattr(lib, sys.argv[1])
print("RESULT", fn({"present": 1}))
"""


def _app(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "app"
    write(root / "pyproject.toml", '[project]\nname = "expiry"\nversion = "0"\n')
    write(root / "lib.py", LIB)
    main = write(root / "main.py", MAIN)
    store = root / "overlays"
    for fn in ("first", "second"):
        r = heal(main, store, args=(fn,))
        assert r.returncode == 0 and r.results() == ["RESULT 0"], str(r)
    [name] = [n for n in overlays_in(store) if n.startswith("lib.")]
    sidecar = store / (name[: -len(".overlay")] + ".json")
    meta = json.loads(sidecar.read_text())
    assert sorted(p["qualname"] for p in meta["patches"]) == ["first", "second"]
    return main, store, sidecar


def _expire_first(sidecar: Path, at: str) -> None:
    """Give patch ``first`` its own, shorter lifetime (as ``--ttl`` at heal time would)."""
    meta = json.loads(sidecar.read_text())
    for p in meta["patches"]:
        if p["qualname"] == "first":
            p["expires"] = at
    sidecar.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def test_the_overlay_lives_as_long_as_its_latest_patch(tmp_path: Path) -> None:
    root = tmp_path / "app"
    write(root / "pyproject.toml", '[project]\nname = "expiry"\nversion = "0"\n')
    write(root / "lib.py", LIB)
    main = write(root / "main.py", MAIN)
    store = root / "overlays"
    assert heal(main, store, "--ttl", "1", args=("first",)).returncode == 0
    assert heal(main, store, "--ttl", "30", args=("second",)).returncode == 0
    [sidecar] = [p for p in store.glob("lib.*.json")]
    meta = json.loads(sidecar.read_text())
    expiries = {p["qualname"]: p["expires"] for p in meta["patches"]}
    assert expiries["first"] < expiries["second"] and meta["expires"] == expiries["second"], meta


def test_an_expired_patch_leaves_the_other_patches_of_its_overlay(tmp_path: Path) -> None:
    main, store, sidecar = _app(tmp_path)
    _expire_first(sidecar, "2020-01-01T00:00:00Z")
    ok = boot(main, store, args=("second",))
    assert ok.returncode == 0 and ok.results() == ["RESULT 0"], str(ok)
    assert "1 patch(es) expired (first at 2020-01-01T00:00:00Z)" in ok.stderr, str(ok)
    gone = boot(main, store, args=("first",))
    assert gone.returncode == 1 and "KeyError: 'missing'" in gone.stderr, str(gone)


def test_every_patch_expired_refuses_the_overlay(tmp_path: Path) -> None:
    main, store, sidecar = _app(tmp_path)
    meta = json.loads(sidecar.read_text())
    for p in meta["patches"]:
        p["expires"] = "2020-01-01T00:00:00Z"
    sidecar.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    r = boot(main, store, args=("second",))
    assert r.returncode == 1 and "KeyError: 'absent'" in r.stderr, str(r)


def test_per_patch_expiry_under_a_signed_set(tmp_path: Path) -> None:
    main, store, sidecar = _app(tmp_path)
    priv, keys = tmp_path / "secret" / "k.key", tmp_path / "keys"
    assert cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=tmp_path).returncode == 0
    lifetime = 15.0  # seconds: long enough for signing on a loaded machine, then it passes
    at = time.time() + lifetime
    _expire_first(sidecar, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)))
    s = cli("sign", "--key", priv, "--app-root", main.parent, store, cwd=main.parent)
    assert s.returncode == 0, str(s)
    before = boot(main, store, "--keys", str(keys), args=("first",))
    if time.time() < at - 1:  # still alive: loaded whole
        assert before.returncode == 0 and before.results() == ["RESULT 0"], str(before)
    time.sleep(max(0.0, at + 1.5 - time.time()))
    ok = boot(main, store, "--keys", str(keys), args=("second",))
    assert ok.returncode == 0 and ok.results() == ["RESULT 0"], str(ok)
    assert "1 patch(es) expired (first at" in ok.stderr, str(ok)
    gone = boot(main, store, "--keys", str(keys), args=("first",))
    assert gone.returncode == 1 and "KeyError: 'missing'" in gone.stderr, str(gone)
