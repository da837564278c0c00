"""The kill switch has no exceptions (docs/governance.md): a kill file present when a
process starts stops every overlay (the entry script's own ``__main__`` overlay
included), every heal and every launch form (a script, ``-m``, an app folder,
``codesuture run``, spawned children through the start-up hook, a ``@boundary`` in a
process CodeSuture never activated). Real processes, real stores."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from heal_helpers import PY, boot, clean_env, heal, overlays_in, run, snapshot, write

LIB = """
def lookup(d):
    return d["missing"]
"""

MAIN = """
import lib

def own(d):
    return d["absent"]

print("RESULT", own({"present": 1}), lib.lookup({"present": 1}))
"""


@pytest.fixture(scope="module")
def healed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An app whose entry script and module were both healed once: a ``__main__``
    overlay and a ``lib`` overlay in the store; the same app as a package run with -m
    and as a folder with ``__main__.py``, each healed into its own store."""
    root = tmp_path_factory.mktemp("kill") / "app"
    write(root / "pyproject.toml", '[project]\nname = "kill-app"\nversion = "0"\n')
    write(root / "lib.py", LIB)
    main = write(root / "main.py", MAIN)
    store = root / "overlays"
    r = heal(main, store)
    assert r.returncode == 0 and r.results() == ["RESULT 0 0"], str(r)
    assert any(n.startswith("__main__.") for n in overlays_in(store)), overlays_in(store)
    # -m form
    write(root / "pkg" / "__init__.py", "")
    write(root / "pkg" / "lib.py", LIB)
    write(root / "pkg" / "__main__.py", MAIN.replace("import lib", "from pkg import lib"))
    mstore = root / "m-overlays"
    r = run([PY, "-m", "codesuture", "run", "--overlays", str(mstore), "-m", "pkg"], root)
    assert r.returncode == 0 and r.results() == ["RESULT 0 0"], str(r)
    # app folder form
    folder = root / "folderapp"
    write(folder / "lib.py", LIB)
    write(folder / "__main__.py", MAIN)
    fstore = root / "f-overlays"
    r = run([PY, "-m", "codesuture", "run", "--overlays", str(fstore), str(folder)], root)
    assert r.returncode == 0 and r.results() == ["RESULT 0 0"], str(r)
    return {"root": root, "main": main, "store": store, "mstore": mstore, "folder": folder, "fstore": fstore}


def _crashed_plain(r) -> None:  # noqa: ANN001
    assert r.returncode == 1 and "KeyError: 'absent'" in r.stderr, str(r)
    assert r.results() == [], str(r)
    assert "kill switch (kill file" in r.stderr, str(r)


def test_without_a_kill_file_every_form_loads_its_overlays(healed: dict[str, Path]) -> None:
    r = boot(healed["main"], healed["store"])
    assert r.returncode == 0 and r.results() == ["RESULT 0 0"], str(r)
    r = run([PY, "-m", "codesuture.boot", "--overlays", str(healed["mstore"]), "--no-heal", "-m", "pkg"], healed["root"])
    assert r.returncode == 0 and r.results() == ["RESULT 0 0"], str(r)
    r = run([PY, "-m", "codesuture.boot", "--overlays", str(healed["fstore"]), "--no-heal", str(healed["folder"])],
            healed["root"])
    assert r.returncode == 0 and r.results() == ["RESULT 0 0"], str(r)


@pytest.mark.parametrize("form", ["boot-script", "boot-m", "boot-folder", "run-script", "run-m", "run-folder"])
def test_a_kill_file_present_at_start_up_stops_the_main_overlay_in_every_form(healed: dict[str, Path], tmp_path: Path,
                                                                              form: str) -> None:
    kill = tmp_path / "kill"
    kill.touch()
    env = clean_env(CODESUTURE_KILL_FILE=str(kill))
    launcher, kind = form.split("-")
    head = [PY, "-m", "codesuture.boot", "--no-heal"] if launcher == "boot" else [PY, "-m", "codesuture", "run"]
    store, target = {"script": (healed["store"], [str(healed["main"])]),
                     "m": (healed["mstore"], ["-m", "pkg"]),
                     "folder": (healed["fstore"], [str(healed["folder"])])}[kind]
    before = snapshot(store)
    r = run([*head, "--overlays", str(store), *target], healed["root"], env)
    _crashed_plain(r)
    assert "patched" not in r.stderr and "replaying" not in r.stderr, str(r)
    assert snapshot(store) == before  # `run` healed nothing and wrote nothing


def test_a_kill_file_stops_heals_in_a_fresh_store(healed: dict[str, Path], tmp_path: Path) -> None:
    kill = tmp_path / "kill"
    kill.touch()
    store = tmp_path / "fresh"
    r = heal(healed["main"], store, env=clean_env(CODESUTURE_KILL_FILE=str(kill)))
    _crashed_plain(r)
    assert not store.exists() or overlays_in(store) == [], overlays_in(store)


def test_a_spawned_child_loads_nothing_under_a_kill_file(healed: dict[str, Path], tmp_path: Path) -> None:
    """The start-up hook activates CodeSuture in children: with a kill file it does not
    (the parent itself crashes plain, the child too)."""
    child = write(healed["root"] / "child.py", """
        import lib
        print("RESULT", lib.lookup({"present": 1}))
        """)
    parent = write(healed["root"] / "parent.py", f"""
        import subprocess, sys
        r = subprocess.run([sys.executable, {str(child)!r}], capture_output=True, text=True)
        print("CHILD", r.returncode, r.stdout.strip(), r.stderr.strip().splitlines()[-1:])
        """)
    r = boot(parent, healed["store"])
    assert r.returncode == 0 and "CHILD 0 RESULT 0" in r.stdout, str(r)  # the hook works
    kill = tmp_path / "kill"
    kill.touch()
    r = boot(parent, healed["store"], env=clean_env(CODESUTURE_KILL_FILE=str(kill)))
    assert r.returncode == 0 and "CHILD 1  [\"KeyError: 'missing'\"]" in r.stdout, str(r)


def test_a_boundary_heals_nothing_in_a_process_never_activated(tmp_path: Path) -> None:
    """A ``@boundary`` in plain python (no boot, no watcher) heals through the healer
    from the environment; a kill file present stops that heal too."""
    write(tmp_path / "pyproject.toml", '[project]\nname = "b"\nversion = "0"\n')
    script = write(tmp_path / "svc.py", """
        from codesuture.runtime.boundary import boundary

        @boundary
        def handle(d):
            return d["absent"]

        try:
            print("RESULT", handle({}))
        except KeyError:
            print("RESULT crashed")
        """)
    store = tmp_path / "overlays"
    env = clean_env(CODESUTURE_OVERLAYS=str(store), CODESUTURE_KILL_FILE=str(tmp_path / "kill"))
    r = run([PY, str(script)], tmp_path, env)
    assert r.returncode == 0 and r.results() == ["RESULT None"], str(r)  # heals without the kill file
    (tmp_path / "kill").touch()
    write(tmp_path / "svc.py", script.read_text().replace("absent", "gone"))
    r = run([PY, str(script)], tmp_path, env)
    assert r.returncode == 0 and r.results() == ["RESULT crashed"], str(r)
    assert "kill switch (kill file" in r.stderr and "patched" not in r.stderr, str(r)


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="POSIX processes")
