"""Launch forms, ``codesuture watch`` and the session summary, in subprocesses.

Each form runs the program exactly as plain Python would (argv, ``sys.path[0]``,
``__file__``), and heals a crash in the app's own module: ``boot -c CODE``, an app
folder and a zip app (``python app/``, ``python app.zip``), ``codesuture run -m
module``. ``codesuture watch`` restarts after runs that crashed and wrote a patch, and
stops when a run patched nothing. The one-line session summary appears exactly when
something was patched or loaded.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from heal_helpers import PY, boot, cli, overlays_in, plain, run, write

LIB = """
def get(d):
    return d["k"]
"""
PROBE = """
import os, sys, lib
print("RESULT", lib.get({}), sys.argv, repr(sys.path[0]), "__file__" in globals())
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    write(tmp_path / "app" / "lib.py", LIB)
    write(tmp_path / "app" / "__main__.py", PROBE)
    write(tmp_path / "app" / "tool.py", PROBE)
    return tmp_path / "app"


def _results(p) -> list[str]:
    return [line for line in p.stdout.splitlines() if line.startswith("RESULT")]


def test_boot_dash_c_runs_like_python_dash_c(app: Path) -> None:
    code = "import sys, lib; print('RESULT', lib.get({}), sys.argv, repr(sys.path[0]), '__file__' in globals())"
    py = run([PY, "-c", code.replace("lib.get({})", "None"), "x"], app)
    cs = run([PY, "-m", "codesuture.boot", "--overlays", app.parent / "ov", "-c", code, "x"], app)
    assert cs.returncode == 0, cs
    assert _results(cs) == _results(py) == ["RESULT None ['-c', 'x'] '' False"]
    assert overlays_in(app.parent / "ov") == [n for n in overlays_in(app.parent / "ov") if n.startswith("lib.")] != []


def test_app_folder_runs_like_python_folder(app: Path) -> None:
    py = plain(app, "y", cwd=app.parent)  # crashes: lib.get({}) raises
    assert py.returncode == 1 and "KeyError" in py.stderr
    cs = run([PY, "-m", "codesuture.boot", "--overlays", app.parent / "ov", "app", "y"], app.parent)
    assert cs.returncode == 0, cs
    assert _results(cs) == [f"RESULT None ['app', 'y'] {str(app)!r} True"]
    again = run([PY, "-m", "codesuture.boot", "--overlays", app.parent / "ov", "--no-heal", "app", "y"], app.parent)
    assert again.returncode == 0 and _results(again) == _results(cs), again


def test_zip_app_runs_and_its_importable_folder_module_heals(app: Path, tmp_path: Path) -> None:
    zipped = tmp_path / "app.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("__main__.py", "import sys, lib\nprint('RESULT', sys.argv, lib.get({}))\n")
    # lib comes from a folder on PYTHONPATH (code inside a zip has no file to patch).
    env = {"PYTHONPATH": str(app)}
    from heal_helpers import clean_env

    cs = run([PY, "-m", "codesuture.boot", "--overlays", tmp_path / "ov", zipped, "z"], tmp_path, clean_env(**env))
    assert cs.returncode == 0, cs
    assert _results(cs) == [f"RESULT [{str(zipped)!r}, 'z'] None"]


def test_run_dash_m_module(app: Path) -> None:
    cs = cli("run", "--overlays", app.parent / "ov", "-m", "tool", "a", "b", cwd=app)
    assert cs.returncode == 0, cs
    assert _results(cs) == [f"RESULT None [{str(app / 'tool.py')!r}, 'a', 'b'] {str(app)!r} True"]
    missing = cli("run", "-m", "no_such_module_here", cwd=app)
    assert missing.returncode == 1 and "No module named no_such_module_here" in missing.stderr


def test_watch_restarts_after_each_heal_then_stops(app: Path) -> None:
    write(app / "two.py", "import lib\nprint('A', lib.get({}))\nprint('B', {}.get('x').upper())\n")
    p = cli("watch", "--overlays", app.parent / "ov", "--max-restarts", "5", "two.py", cwd=app)
    assert p.returncode == 0, p
    assert p.stderr.count("after a patch: restart") == 2 and "2 restart(s), exit code 0" in p.stderr
    assert p.stdout.splitlines()[-2:] == ["A None", "B "]  # None.upper() reads as ''.upper()
    # A crash that cannot be healed: one run, no restart, its exit code.
    write(app / "bad.py", "raise RuntimeError('not structural')\n")
    p = cli("watch", "--overlays", app.parent / "ov", "bad.py", cwd=app)
    assert p.returncode == 1 and "0 restart(s), exit code 1" in p.stderr and "restart 1" not in p.stderr


def test_watch_stops_at_max_restarts(app: Path) -> None:
    write(app / "many.py", "import lib\nprint(lib.get({}))\nprint({}.get('x').upper())\n")
    p = cli("watch", "--overlays", app.parent / "ov", "--max-restarts", "0", "many.py", cwd=app)
    assert p.returncode == 1 and "0 restart(s), exit code 1" in p.stderr, p


def test_session_summary_only_when_something_happened(app: Path) -> None:
    write(app / "ok.py", "print('fine')\n")
    quiet = boot(app / "ok.py", app.parent / "ov", no_heal=False)
    assert quiet.returncode == 0 and "codesuture: session:" not in quiet.stderr, quiet
    healed = boot(app / "tool.py", app.parent / "ov", no_heal=False)
    # The replay is a fresh process: it loads the overlay the attempt before it wrote.
    assert healed.returncode == 0 and "codesuture: session: 1 patch applied, 1 overlay loaded" in healed.stderr
    loaded = boot(app / "tool.py", app.parent / "ov")
    assert "codesuture: session: 0 patches applied, 1 overlay loaded" in loaded.stderr, loaded


if sys.platform == "win32":  # pragma: no cover
    pytest.skip("POSIX only", allow_module_level=True)
