"""Entry-script overlays are keyed by the script's path relative to the app root (the
nearest folder with pyproject.toml, else the script's folder): they load from a copy of
the app anywhere, through a symlinked release folder, from any current directory; a
script of the same name at another relative path gets a WARNING; ``-v -v`` shows the
key looked up."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from heal_helpers import PY, boot, heal, overlays_in, run, script_key, snapshot, write

TOOL = """
def f(d):
    return d["k"]
print("RESULT", repr(f({})))
"""


def _healed_app(root: Path, *, pyproject: bool = True, rel: str = "bin/tool.py") -> Path:
    """An app at *root* whose script *rel* was healed into ``root/overlays``."""
    if pyproject:
        write(root / "pyproject.toml", '[project]\nname = "keyed"\nversion = "0"\n')
    script = write(root / rel, TOOL)
    r = heal(script, root / "overlays")
    assert r.returncode == 0 and r.results() == ["RESULT None"], str(r)
    [name] = overlays_in(root / "overlays")
    app_root = root if pyproject else script.parent
    assert name.startswith(script_key(script, app_root) + "."), name
    meta = json.loads((root / "overlays" / name.replace(".overlay", ".json")).read_text())
    assert meta["origin"] == "app:" + (rel if pyproject else Path(rel).name)
    return script


def _loads(script: Path, store: Path, cwd: Path | None = None) -> None:
    before = snapshot(store)
    r = boot(script, store, "-v", cwd=cwd)
    assert r.returncode == 0 and r.results() == ["RESULT None"], str(r)
    assert "patched" not in r.stderr and "1 overlay loaded" in r.stderr, str(r)
    assert f"for {script_key(script)} (unsigned)" in r.stderr, str(r)
    assert snapshot(store) == before


def test_overlay_loads_in_a_copy_of_the_app_elsewhere(tmp_path: Path) -> None:
    _healed_app(tmp_path / "dev" / "app")
    copy = tmp_path / "srv" / "deep" / "other-name"
    shutil.copytree(tmp_path / "dev" / "app", copy)
    shutil.rmtree(tmp_path / "dev")
    _loads(copy / "bin" / "tool.py", copy / "overlays")
    # From any current directory, with a relative script path too.
    _loads(copy / "bin" / "tool.py", copy / "overlays", cwd=tmp_path)
    r = run([PY, "-m", "codesuture.boot", "--overlays", "overlays", "--no-heal", "bin/tool.py"], copy)
    assert r.returncode == 0 and r.results() == ["RESULT None"], str(r)


def test_overlay_loads_through_a_symlinked_release(tmp_path: Path) -> None:
    _healed_app(tmp_path / "build")
    release = tmp_path / "releases" / "v1"
    shutil.copytree(tmp_path / "build", release)
    current = tmp_path / "current"
    current.symlink_to(release, target_is_directory=True)
    _loads(current / "bin" / "tool.py", current / "overlays")
    # A second release behind the same link: still found.
    shutil.copytree(release, tmp_path / "releases" / "v2")
    current.unlink()
    current.symlink_to(tmp_path / "releases" / "v2", target_is_directory=True)
    _loads(current / "bin" / "tool.py", current / "overlays")


def test_without_pyproject_the_script_folder_is_the_app_root(tmp_path: Path) -> None:
    _healed_app(tmp_path / "a" / "scripts", pyproject=False, rel="tool.py")
    moved = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / "scripts", moved)
    _loads(moved / "tool.py", moved / "overlays")


@pytest.mark.parametrize("how", ["moved inside the app", "app root changed"])
def test_same_script_name_at_another_relative_path_is_a_near_miss(how: str, tmp_path: Path) -> None:
    _healed_app(tmp_path / "app")
    other = tmp_path / "other"
    if how == "moved inside the app":
        shutil.copytree(tmp_path / "app" / "overlays", other / "overlays")
        shutil.copy(tmp_path / "app" / "pyproject.toml", other)
        script = write(other / "tools" / "tool.py", TOOL)
        expected = "app:tools/tool.py"
    else:  # no pyproject.toml in the copy: the app root is bin/, the origin app:tool.py
        shutil.copytree(tmp_path / "app" / "overlays", other / "overlays")
        script = write(other / "bin" / "tool.py", TOOL)
        expected = "app:tool.py"
    r = boot(script, other / "overlays")
    assert r.returncode == 1 and r.stderr.rstrip().endswith("KeyError: 'k'"), str(r)
    [line] = [ln for ln in r.stderr.splitlines() if "no overlay for script" in ln]
    assert line.startswith("codesuture: WARNING ") and f"no overlay for script {expected}:" in line, line
    assert "the store has one for app:bin/tool.py" in line, line
    # A script of another name gets no such line.
    unrelated = write(other / "tools" / "report.py", TOOL)
    r = boot(unrelated, other / "overlays")
    assert r.returncode == 1 and "no overlay for script" not in r.stderr, str(r)


@pytest.mark.parametrize("command", ["boot", "run"])
def test_verbose_verbose_shows_the_key_looked_up(command: str, tmp_path: Path) -> None:
    _healed_app(tmp_path / "app")
    script = write(tmp_path / "app" / "tools" / "tool.py", TOOL)
    store = tmp_path / "app" / "overlays"
    key = script_key(script)
    if command == "boot":
        r = boot(script, store, "-v", "-v")
        quiet = boot(script, store)
    else:
        r = heal(script, store, "--no-heal", "-v", "-v")
        quiet = heal(script, store, "--no-heal")
    m = re.search(r"^codesuture: DEBUG no overlay for (\S+) \(store key (\S+)\)$", r.stderr, re.M)
    assert m and m.groups() == ("app:tools/tool.py", key), str(r)
    assert "DEBUG" not in quiet.stderr and key not in quiet.stderr, str(quiet)
