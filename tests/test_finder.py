"""The meta path finder: overlays apply at import and everything else about the module
stays ordinary (inspect, importlib.resources, -X importtime, pytest's import hook)."""

from __future__ import annotations

import builtins
import os
import textwrap

import pytest

from codesuture.loader.finder import OverlayFinder
from heal_helpers import PY, clean_env
from heal_helpers import run as _run

PKG_INIT = "from importlib.resources import files\n\ndef data():\n    return files(__name__).joinpath('data.txt').read_text()\n"
MOD = textwrap.dedent('''
    def first(xs):
        """Return the first item."""
        return xs[0]
''')


def run(*args, cwd, env=None):
    return _run([PY, *map(str, args)], cwd, clean_env(**(env or {})))


@pytest.fixture
def app(tmp_path):
    """An app with a package ``pkg`` (a resource file and module ``pkg.mod`` whose
    ``first([])`` crashes), healed once so that ``ov/`` holds pkg.mod's overlay."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PKG_INIT)
    (pkg / "data.txt").write_text("resource ok")
    (pkg / "mod.py").write_text(MOD)
    (tmp_path / "main.py").write_text(textwrap.dedent('''
        import inspect, pkg, pkg.mod
        print("first", pkg.mod.first([]))
        print("source", inspect.getsource(pkg.mod.first).splitlines()[0])
        print("resource", pkg.data())
        print("loader", type(pkg.mod.__loader__).__name__, pkg.mod.__file__.endswith("mod.py"))
    '''))
    r = run("-m", "codesuture", "run", "--overlays", "ov", "main.py", cwd=tmp_path)
    assert r.returncode == 0, str(r)
    assert [p.name.split(".cpython")[0] for p in (tmp_path / "ov").glob("*.overlay")] == ["pkg.mod"]
    return tmp_path


def test_overlay_module_stays_ordinary(app):
    r = run("-X", "importtime", "-m", "codesuture.boot", "--overlays", "ov", "--no-heal", "main.py", cwd=app)
    assert r.returncode == 0, r.stderr
    assert "first None" in r.stdout
    assert "source def first(xs):" in r.stdout
    assert "resource resource ok" in r.stdout
    assert "loader OverlayLoader True" in r.stdout
    assert "| pkg.mod" in r.stderr  # -X importtime still reports the module
    assert "patched" not in r.stderr


def test_pytest_import_hook_coexists(app):
    (app / "test_app.py").write_text(textwrap.dedent('''
        import pkg.mod

        def as_data(fn, *args):
            box = []
            box.append(fn(*args))  # handed on as data, not decided with
            return box[0]

        def test_patched():
            assert as_data(pkg.mod.first, []) is None

        def test_rewritten_assert():
            x = [1]
            assert pkg.mod.first(x) == 2
    '''))
    r = run("-m", "codesuture.boot", "--overlays", "ov", "--no-heal", "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "test_app.py", cwd=app)
    # One pass (the overlay applied; the healed value reaches the assert as data, since
    # a guard whose default a caller decides with declines) and one failure whose
    # message pytest's assertion rewriting produced (its own import hook ran on the
    # test module).
    assert "1 failed, 1 passed" in r.stdout, r.stdout + r.stderr
    assert "where 1 = <function first" in r.stdout


def test_module_without_overlay_costs_a_dict_lookup(monkeypatch):
    finder = OverlayFinder({"has.overlay": []}, policy=None)

    def no_io(*a, **k):
        raise AssertionError("the finder touched the filesystem for a module without an overlay")

    monkeypatch.setattr(builtins, "open", no_io)
    monkeypatch.setattr(os, "stat", no_io)
    monkeypatch.setattr(os, "listdir", no_io)
    assert finder.find_spec("json") is None
    assert finder.find_spec("some.other.module", None) is None


def test_stale_overlay_loads_original_with_one_log_line(app):
    mod = app / "pkg" / "mod.py"
    mod.write_bytes(mod.read_bytes() + b" ")  # one byte
    r = run("-m", "codesuture.boot", "--overlays", "ov", "--no-heal", "main.py", cwd=app)
    assert r.returncode == 1 and "IndexError" in r.stderr
    lines = [line for line in r.stderr.splitlines() if "not applied" in line]
    assert len(lines) == 1 and "stale" in lines[0] and "pkg.mod" in lines[0]


def test_corrupt_store_never_takes_the_program_down(app):
    for f in (app / "ov").glob("*.overlay"):
        f.write_bytes(b"garbage")
    r = run("-m", "codesuture.boot", "--overlays", "ov", "--no-heal", "main.py", cwd=app)
    assert r.returncode == 1 and "IndexError" in r.stderr  # the original code ran
    assert "not applied" in r.stderr


def test_overlay_code_names_the_real_file(app):
    """Overlays are compiled under a portable origin (no machine path in their bytes);
    loaded, their code names this machine's file again, so a traceback through patched
    code is the one plain python prints (file, line, carets)."""
    (app / "probe.py").write_text(textwrap.dedent('''
        import pkg.mod
        print("co_filename", pkg.mod.first.__code__.co_filename == pkg.mod.__file__)
        print("loader", type(pkg.mod.__loader__).__name__)
        class Odd:
            def __len__(self):
                return 1
            def __getitem__(self, i):
                raise ValueError("odd")
        pkg.mod.first(Odd())  # in range: the guard lets it through, the original subscript raises
    '''))
    data = b"".join(p.read_bytes() for p in (app / "ov").iterdir())
    assert str(app).encode() not in data
    r = run("-m", "codesuture.boot", "--overlays", "ov", "probe.py", cwd=app)
    p = run("probe.py", cwd=app)
    assert "co_filename True" in r.stdout and "loader OverlayLoader" in r.stdout, str(r)
    assert r.returncode == p.returncode == 1
    tb = lambda s: s[s.index("Traceback"):].splitlines()  # noqa: E731
    assert [ln for ln in tb(r.stderr) if not ln.startswith("codesuture:")] == tb(p.stderr)
    assert f'File "{app / "pkg" / "mod.py"}", line 4, in first' in p.stderr
