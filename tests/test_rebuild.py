"""``codesuture rebuild --python OTHER STORE``: one reviewed heal, overlays for another
interpreter (issue 6, item 9), and ``codesuture sign`` of what it wrote (the rebuild
check runs that interpreter).

The other interpreters are the repo's ``.venv-3.X`` (or ``python3.X`` from pyenv or
PATH) that import codesuture; a version without one is skipped with a message.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from heal_helpers import PY, TAG, boot, cli, heal, overlays_in, python_for, script_key, snapshot, write

SHOP = """
def price(item):
    return item["price"]


def label(item):
    return item.get("tag").upper()
"""

MAIN = """
import sys

import shop


def first(xs):
    return xs[0]


CALLS = {"price": lambda: shop.price({}), "label": lambda: shop.label({}), "first": lambda: first([])}
which = sys.argv[1:] or list(CALLS)
print("RESULT", " ".join(f"{w}={CALLS[w]()!r}" for w in which))
"""

HEALED = "RESULT price='' label='' first=''"
MINE = "%d.%d" % sys.version_info[:2]
OTHER_VERSIONS = [v for v in ("3.11", "3.12", "3.13") if v != MINE]


@functools.cache
def _python(version: str) -> str | None:
    return python_for(version)


@functools.cache
def _tag(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print(sys.implementation.cache_tag)"], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture(params=OTHER_VERSIONS)
def other(request: pytest.FixtureRequest) -> str:
    py = _python(request.param)
    if py is None:
        pytest.skip(f"no Python {request.param} that imports codesuture (.venv-{request.param}, pyenv or PATH): "
                    "rebuild for it not tested")
    return py


@dataclass
class App:
    root: Path
    store: Path

    @property
    def main(self) -> Path:
        return self.root / "main.py"

    def stems(self, tag: str) -> dict[str, str]:
        """Module ("shop" / "__main__") -> stem of its overlay for *tag*."""
        return {n.split(".")[0]: n[: -len(".overlay")] for n in overlays_in(self.store) if f".{tag}." in n}

    def meta(self, stem: str) -> dict:
        return json.loads((self.store / f"{stem}.json").read_text())


@pytest.fixture
def app(tmp_path: Path) -> App:
    """An app healed on this interpreter: shop (price, label) and the entry script (first)."""
    root = tmp_path / "app"
    write(root / "pyproject.toml", '[project]\nname = "rebuild-app"\nversion = "0"\n')
    write(root / "shop.py", SHOP)
    write(root / "main.py", MAIN)
    a = App(root, root / "overlays")
    r = heal(a.main, a.store, "--retries", "4")
    assert r.returncode == 0 and r.results() == [HEALED], str(r)
    assert sorted(a.stems(TAG)) == ["__main__", "shop"], overlays_in(a.store)
    return a


def test_rebuild_for_another_python_loads_there(app: App, other: str) -> None:
    tag = _tag(other)
    before = boot(app.main, app.store, "--no-heal", python=other)
    assert before.returncode == 1 and "KeyError" in before.stderr, str(before)
    assert f"built for another Python ({TAG}; this is {tag})" in before.stderr, str(before)
    mine = snapshot(app.store)

    r = cli("rebuild", "--python", other, app.store, cwd=app.root)
    assert r.returncode == 0 and r.stderr == "", str(r)
    stems = app.stems(tag)
    assert sorted(stems) == ["__main__", "shop"], overlays_in(app.store)
    assert r.stdout.splitlines() == sorted([
        f"wrote {app.store / stems['__main__']}.overlay (1 patch(es) re-located)",
        f"wrote {app.store / stems['shop']}.overlay (2 patch(es) re-located)",
    ]), str(r)
    # The overlays built for this interpreter are untouched; the new ones are unsigned
    # overlays of the same source and the same patches (by source position), for *tag*.
    assert {k: v for k, v in snapshot(app.store).items() if k in mine} == mine
    assert stems["__main__"].startswith(script_key(app.main) + ".")
    for module, stem in stems.items():
        new, old = app.meta(stem), app.meta(app.stems(TAG)[module])
        assert new["python"]["cache_tag"] == tag and new["source_sha256"] == old["source_sha256"], new
        assert new["origin"] == old["origin"] and new["key"] == old["key"], new
        assert [(p["qualname"], p["line"], p["col"], p["guard"]) for p in new["patches"]] == [
            (p["qualname"], p["line"], p["col"], p["guard"]) for p in old["patches"]]
        assert new["overlay_sha256"] == hashlib.sha256((app.store / f"{stem}.overlay").read_bytes()).hexdigest()
    # Each interpreter loads its own overlays, healing off.
    there = boot(app.main, app.store, "--no-heal", "-v", python=other)
    assert there.returncode == 0 and there.results() == [HEALED], str(there)
    assert sorted(ln.split()[4] for ln in there.stderr.splitlines() if " INFO loaded overlay " in ln) == sorted(stems.values())
    here = boot(app.main, app.store, "--no-heal")
    assert here.returncode == 0 and here.results() == [HEALED], str(here)
    # Asked again, nothing is rebuilt over what is there.
    built = snapshot(app.store)
    again = cli("rebuild", "--python", other, app.store, cwd=app.root)
    assert again.returncode == 0 and again.stdout.count("already exists (nothing to rebuild)") == 2, str(again)
    assert snapshot(app.store) == built


def test_a_patch_that_does_not_relocate_is_reported(app: App, other: str) -> None:
    tag = _tag(other)
    shop = app.stems(TAG)["shop"]
    side = app.store / f"{shop}.json"
    meta = json.loads(side.read_text())
    [label] = [p for p in meta["patches"] if p["qualname"] == "label"]
    label["line"] = label["end_line"] = 999  # a position that does not exist in shop.py
    side.write_text(json.dumps(meta))
    r = cli("rebuild", "--python", other, "-o", app.root / "rebuilt", app.store, cwd=app.root)
    assert r.returncode == 1, str(r)
    assert r.stderr.splitlines() == [
        f"{app.store / shop}.overlay: label: not re-located: no LOAD_ATTR/LOAD_METHOD at line 999 col {label['col']} of label"
    ], str(r)
    out = app.root / "rebuilt"
    new = {n.split(".")[0]: n for n in overlays_in(out)}
    assert sorted(new) == ["__main__", "shop"] and all(f".{tag}." in n for n in new.values()), new
    assert f"wrote {out / new['shop']} (1 patch(es) re-located)" in r.stdout, str(r)
    assert [p["qualname"] for p in json.loads((out / new["shop"].replace(".overlay", ".json")).read_text())["patches"]] == [
        "price"]
    # There, what re-located loads and heals; the patch that did not is not invented.
    ok = boot(app.main, out, "--no-heal", python=other, args=("price", "first"))
    assert ok.returncode == 0 and ok.results() == ["RESULT price='' first=''"], str(ok)
    crash = boot(app.main, out, "--no-heal", python=other, args=("label",))
    assert crash.returncode == 1 and "AttributeError" in crash.stderr, str(crash)


def _wrapper(tmp_path: Path, python: str) -> tuple[Path, Path]:
    """An executable that logs its arguments and runs *python* (to see that sign runs it)."""
    log = tmp_path / "wrapper.log"
    exe = tmp_path / "bin" / "python-other"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec "{python}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe, log


def test_sign_checks_the_rebuilt_overlay_on_the_other_python(app: App, other: str, tmp_path: Path) -> None:
    tag = _tag(other)
    r = cli("rebuild", "--python", other, app.store, cwd=app.root)
    assert r.returncode == 0, str(r)
    priv, keys = tmp_path / "secret" / "k.key", tmp_path / "keys"
    k = cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=tmp_path)
    assert k.returncode == 0, str(k)
    exe, log = _wrapper(tmp_path, other)

    # Planted: the other interpreter's shop overlay does something its records do not
    # say (a renamed function), its sidecar digest updated to match. Refused.
    planted = tmp_path / "planted"
    shutil.copytree(app.store, planted)
    stem = app.stems(tag)["shop"]
    data = (planted / f"{stem}.overlay").read_bytes()
    assert b"label" in data
    bad = data.replace(b"label", b"lAbel")
    (planted / f"{stem}.overlay").write_bytes(bad)
    side = json.loads((planted / f"{stem}.json").read_text())
    side["overlay_sha256"] = hashlib.sha256(bad).hexdigest()
    (planted / f"{stem}.json").write_text(json.dumps(side))
    refused = cli("sign", "--key", priv, "--app-root", app.root, "--python", exe, planted, cwd=app.root)
    assert refused.returncode == 1, str(refused)
    assert (f"{planted / stem}.overlay: rebuilding it from app:shop.py and its 2 recorded patch(es) gives different "
            "bytes: its code is not what its metadata says (not signed)") in refused.stderr, str(refused)
    assert "-m codesuture.ship.rebuild" in log.read_text()
    assert not (planted / "overlays.manifest.dsse.json").exists()

    # The real one: signed, after rebuilding on the other interpreter.
    log.unlink()
    s = cli("sign", "--key", priv, "--python", exe, app.store, cwd=app.root)
    assert s.returncode == 0 and "signed overlay set 'rebuild-app' v1: 4 overlay(s)" in s.stdout, str(s)
    runs = log.read_text().splitlines()
    assert sum("-m codesuture.ship.rebuild" in ln for ln in runs) == 2, runs  # shop and the script, for *tag*
    v = cli("verify", "--keys", keys, app.store, cwd=app.root)
    assert v.returncode == 0 and "FAIL" not in v.stdout, str(v)
    for python in (other, PY):
        prod = boot(app.main, app.store, "--keys", str(keys), "--require-signed", "--require-overlays", python=python)
        assert prod.returncode == 0 and prod.results() == [HEALED], str(prod)


def test_rebuild_arguments_and_interpreters_it_cannot_use(app: App, tmp_path: Path) -> None:
    before = snapshot(app.store)
    missing = cli("rebuild", app.store, cwd=app.root)
    assert missing.returncode == 2 and "Error: Missing option '--python'." in missing.stderr, str(missing)
    nowhere = cli("rebuild", "--python", tmp_path / "no-such-python", app.store, cwd=app.root)
    assert nowhere.returncode == 1 and nowhere.stderr.strip() == (
        f"codesuture: {tmp_path / 'no-such-python'}: cannot run this interpreter"), str(nowhere)
    # An interpreter without codesuture: each overlay reported, nothing written.
    bare = tmp_path / "bare"
    subprocess.run([PY, "-m", "venv", "--without-pip", str(bare)], check=True, capture_output=True)
    r = cli("rebuild", "--python", bare / "bin" / "python", "-o", tmp_path / "out", app.store, cwd=app.root)
    assert r.returncode == 1 and "Traceback" not in r.stderr, str(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and all("cannot rebuild overlays (is codesuture installed there?)" in ln for ln in lines), str(r)
    assert overlays_in(tmp_path / "out") == [] and snapshot(app.store) == before


def test_rollback_function_in_a_folder_for_two_pythons(app: App, other: str, tmp_path: Path) -> None:
    """rollback --function rewrites each interpreter's overlay on that interpreter (its
    records name that interpreter's instructions), or changes nothing when it cannot."""
    tag = _tag(other)
    r = cli("rebuild", "--python", other, app.store, cwd=app.root)
    assert r.returncode == 0, str(r)
    state = Path(os.environ["CODESUTURE_STATE_DIR"])
    before, state_before = snapshot(app.store), snapshot(state)
    # No interpreter for the other overlay here (PATH without it, no --python): refused
    # before anything is written, and nothing is recorded as withdrawn.
    from heal_helpers import clean_env

    alone = cli("rollback", "--function", "price", app.store, cwd=app.root, env=clean_env(PATH=str(Path(PY).parent)))
    assert alone.returncode == 1, str(alone)
    assert alone.stderr.startswith(f"codesuture: {app.store / app.stems(tag)['shop']}.overlay: cannot take out only some "
                                   f"patches: no {tag} interpreter to rebuild it with (pass --python PATH) (nothing was "
                                   "changed"), str(alone)
    assert snapshot(app.store) == before and snapshot(state) == state_before
    # With it: both overlays of shop lose price's patch, both old digests are withdrawn.
    old = {t: hashlib.sha256((app.store / f"{app.stems(t)['shop']}.overlay").read_bytes()).hexdigest() for t in (TAG, tag)}
    done = cli("rollback", "--function", "price", "--python", other, app.store, cwd=app.root)
    assert done.returncode == 0 and done.stdout.count("took out price from ") == 2, str(done)
    assert set(json.loads((state / "state.json").read_text())["withdrawn"]) == set(old.values())
    for t in (TAG, tag):
        meta = app.meta(app.stems(t)["shop"])
        assert [p["qualname"] for p in meta["patches"]] == ["label"] and meta["python"]["cache_tag"] == t, meta
    for python in (PY, other):
        kept = boot(app.main, app.store, "--no-heal", python=python, args=("label", "first"))
        assert kept.returncode == 0 and kept.results() == ["RESULT label='' first=''"], str(kept)
        gone = boot(app.main, app.store, "--no-heal", python=python, args=("price",))
        assert gone.returncode == 1 and "KeyError" in gone.stderr, str(gone)
    # What it wrote rebuilds to the same bytes on each interpreter: it signs.
    priv, keys = tmp_path / "secret" / "k.key", tmp_path / "keys"
    assert cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=tmp_path).returncode == 0
    s = cli("sign", "--key", priv, "--python", other, app.store, cwd=app.root)
    assert s.returncode == 0 and "4 overlay(s)" in s.stdout, str(s)
    prod = boot(app.main, app.store, "--keys", str(keys), python=other, args=("label", "first"))
    assert prod.returncode == 0 and prod.results() == ["RESULT label='' first=''"], str(prod)
