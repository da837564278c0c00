"""The default store follows Python's own trust rule (docs/threat-model.md): `codesuture
run ~/me/app.py` started from a directory someone else controls neither loads nor
writes that directory's ``./overlays``; its default store is ``overlays/`` beside the
script (the directory Python puts first on ``sys.path``). ``-m`` and ``-c`` use the
current directory, which Python imports from for them anyway; a zip app has none.
``codesuture watch`` follows the same rule. Real CLI processes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from heal_helpers import PY, clean_env, heal, overlays_in, run, snapshot, write

APP = """
import helper

def handle(d):
    return d["missing"]

print("RESULT", handle({"present": 1}), helper.get({"present": 1}))
"""

HELPER = """
def get(d):
    return d["absent"]
"""


@pytest.fixture()
def layout(tmp_path: Path) -> dict[str, Path]:
    """``me/app.py`` (the user's script) and ``hostile/`` (someone else's directory)
    holding an ``overlays`` store that patches the very same app (so dev mode would
    load it, and the program would run code that directory chose)."""
    me, hostile = tmp_path / "me", tmp_path / "hostile"
    app = write(me / "app.py", APP)
    write(me / "helper.py", HELPER)
    hostile.mkdir()
    made = heal(app, hostile / "overlays", cwd=hostile)
    assert made.returncode == 0 and made.results() == ["RESULT 0 0"], str(made)
    assert len(overlays_in(hostile / "overlays")) == 2
    return {"me": me, "app": app, "hostile": hostile}


def test_run_from_a_hostile_directory_never_loads_its_overlays(layout: dict[str, Path]) -> None:
    hostile, me = layout["hostile"], layout["me"]
    before = snapshot(hostile)
    r = run([PY, "-m", "codesuture", "run", "--no-heal", str(layout["app"])], hostile)
    assert r.returncode == 1 and "KeyError: 'missing'" in r.stderr, str(r)  # nothing of hostile/ loaded
    assert "loading UNSIGNED" not in r.stderr and str(hostile) not in r.stderr, str(r)
    # Healing writes beside the script, never into the current directory.
    h = run([PY, "-m", "codesuture", "run", str(layout["app"])], hostile)
    assert h.returncode == 0 and h.results() == ["RESULT 0 0"], str(h)
    assert len(overlays_in(me / "overlays")) == 2
    assert snapshot(hostile) == before
    # The store beside the script is the one the next run loads, from anywhere.
    again = run([PY, "-m", "codesuture", "run", "--no-heal", str(layout["app"])], hostile)
    assert again.returncode == 0 and "2 overlays loaded" in again.stderr, str(again)
    assert snapshot(hostile) == before


def test_m_and_c_use_the_current_directory_python_imports_from(layout: dict[str, Path]) -> None:
    me = layout["me"]
    r = run([PY, "-m", "codesuture", "run", "-m", "app"], me)
    assert r.returncode == 0 and r.results() == ["RESULT 0 0"], str(r)
    assert len(overlays_in(me / "overlays")) == 2, str(r)
    # -c: the current directory too; -P (safe path): Python does not import from it, and run has no default store.
    work = layout["hostile"].parent / "work"
    work.mkdir()
    code = "import helper; print('RESULT', helper.get({'present': 1}))"
    env = clean_env(PYTHONPATH=str(me))
    c = run([PY, "-m", "codesuture", "run", "-c", code], work, env)
    assert c.returncode == 0 and c.results() == ["RESULT 0"], str(c)
    assert overlays_in(work / "overlays"), str(c)
    safe = work.parent / "safe"
    safe.mkdir()
    p = run([PY, "-P", "-m", "codesuture", "run", "-c", code], safe, env)
    assert "no overlay store is configured" in p.stderr, str(p)  # healed live only: no default store
    assert list(safe.iterdir()) == [], str(p)


def test_a_zip_app_has_no_default_store(layout: dict[str, Path]) -> None:
    """The zip is first on sys.path: no store can live there, so none is used (the
    module it imports is healed live; nothing is written in the current directory)."""
    work = layout["hostile"].parent / "zipwork"
    work.mkdir()
    archive = work / "app.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("__main__.py", "import helper\nprint('RESULT', helper.get({'present': 1}))\n")
    r = run([PY, "-m", "codesuture", "run", str(archive)], work, clean_env(PYTHONPATH=str(layout["me"])))
    assert "no overlay store is configured" in r.stderr, str(r)  # healed live only: no default store
    assert sorted(p.name for p in work.iterdir()) == ["app.zip"], str(r)  # nothing written anywhere


def test_watch_defaults_to_the_store_beside_the_script(layout: dict[str, Path]) -> None:
    hostile, me = layout["hostile"], layout["me"]
    before = snapshot(hostile)
    r = run([PY, "-m", "codesuture", "watch", str(layout["app"])], hostile, clean_env())
    assert r.returncode == 0 and "RESULT 0 0" in r.stdout, str(r)
    assert overlays_in(me / "overlays"), str(r)
    assert snapshot(hostile) == before
