"""Replays never repeat a side effect (runtime/effects.py, runtime/rerun.py): a run is
replayed after a heal only when, before its crash, it changed nothing outside the
process (PEP 578 audit events); a replay is a fresh process, so module-level code
never runs twice in one, and output written before the crash is not written again.
Real ``codesuture run`` / boot subprocesses, a real ``prometheus_client`` registry, a
real socket server on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import socket
import sys
import threading
from pathlib import Path

import pytest

from heal_helpers import PY, clean_env, overlays_in, run, write

PRICES = '''
PRICES = {"bolt": 3}


def price(name):
    return PRICES[name]
'''

#: Appends to a ledger and registers a metric at module level, then crashes.
CHARGE = '''
from prometheus_client import Counter

import prices

CHARGES = Counter("charges", "charges made")
with open("ledger.txt", "a") as fh:
    fh.write("charged\\n")
CHARGES.inc()
print("before the crash", flush=True)
print("RESULT", prices.price("nut"), flush=True)
'''

#: The same without the ledger: nothing outside the process changes before the crash.
PURE = '''
from prometheus_client import Counter

import prices

CHARGES = Counter("charges", "charges made")
CHARGES.inc()
print("before the crash", flush=True)
print("RESULT", prices.price("nut"), flush=True)
'''

RUN = [PY, "-m", "codesuture", "run"]
BOOT = [PY, "-m", "codesuture.boot", "--overlays", "overlays"]


def _app(tmp_path: Path, main: str) -> Path:
    write(tmp_path / "prices.py", PRICES)
    return write(tmp_path / "main.py", main)


def _lines(stderr: str, text: str) -> list[str]:
    return [line for line in stderr.splitlines() if text in line]


@pytest.mark.parametrize("launcher", [RUN, BOOT], ids=["run", "boot"])
def test_a_run_that_wrote_a_file_is_healed_for_the_next_run_not_replayed(tmp_path: Path, launcher: list[str]) -> None:
    script = _app(tmp_path, CHARGE)
    first = run([*launcher, script], tmp_path, clean_env())
    assert first.returncode == 1 and "\nKeyError: 'nut'\n" in first.stderr, first  # the program's own crash
    assert (tmp_path / "ledger.txt").read_text() == "charged\n", first
    [line] = _lines(first.stderr, "not replayed")
    assert line == "codesuture: WARNING healed for the next run; not replayed: the run had already written ledger.txt"
    assert "Duplicated timeseries" not in first.stderr and "replaying" not in first.stderr, first
    assert first.stdout.count("before the crash") == 1, first
    assert [n.split(".")[0] for n in overlays_in(tmp_path / "overlays")] == ["prices"], first
    second = run([*launcher, script], tmp_path, clean_env())
    assert second.returncode == 0 and second.results() == ["RESULT 0"], second
    assert (tmp_path / "ledger.txt").read_text() == "charged\n" * 2, second  # one line per run
    assert "patched" not in second.stderr, second


@pytest.mark.parametrize("launcher", [RUN, BOOT], ids=["run", "boot"])
def test_a_run_without_side_effects_is_replayed_in_a_fresh_process(tmp_path: Path, launcher: list[str]) -> None:
    """The metric registered at module level is registered once per process (a replay
    in the same process raised ``Duplicated timeseries``); what the run printed before
    its crash is printed once."""
    script = _app(tmp_path, PURE)
    r = run([*launcher, script], tmp_path, clean_env())
    assert r.returncode == 0 and r.results() == ["RESULT 0"], r
    assert r.stdout == "before the crash\nRESULT 0\n", r
    assert "Duplicated timeseries" not in r.stderr and len(_lines(r.stderr, "replaying main.py")) == 1, r
    assert "loading UNSIGNED overlay prices." in r.stderr, r  # the replay loaded the overlay at import
    assert "1 patch applied, 1 overlay loaded" in r.stderr, r
    if launcher is RUN:  # the report names the patch the process before the replay made
        assert len(_lines(r.stderr, "codesuture: WARNING patched prices:5 price: key_guard")) == 1, r
        # The replay starts in the user's environment, not the CODESUTURE_* the run exported:
        # the store it chose by default is still reported as the default.
        assert f"(store {tmp_path / 'overlays'}, the default; --overlays to change)" in r.stderr, r


def test_replay_always_and_never(tmp_path: Path) -> None:
    script = _app(tmp_path, CHARGE)
    never = run([*RUN, "--replay", "never", script], tmp_path, clean_env())
    assert never.returncode == 1 and _lines(never.stderr, "not replayed: --replay is never"), never
    (tmp_path / "ledger.txt").unlink()
    shutil.rmtree(tmp_path / "overlays")
    always = run(RUN + [script], tmp_path, clean_env(CODESUTURE_REPLAY="always"))
    assert always.returncode == 0 and always.results() == ["RESULT 0"], always
    assert (tmp_path / "ledger.txt").read_text() == "charged\n" * 2, always  # what "always" accepts


def test_replay_setting_from_the_config_file_and_a_bad_value(tmp_path: Path) -> None:
    script = _app(tmp_path, PURE)
    write(tmp_path / "codesuture.toml", 'replay = "never"\n')
    r = run(RUN + [script], tmp_path, clean_env())
    assert r.returncode == 1 and _lines(r.stderr, "not replayed: --replay is never"), r
    bad = run([*RUN, "--replay", "sometimes", script], tmp_path, clean_env())
    assert bad.returncode == 2 and "'sometimes' is not a replay mode" in bad.stderr, bad
    helped = run([*RUN, "--help"], tmp_path, clean_env())
    assert helped.returncode == 0 and "--replay auto|always|never" in helped.stdout and "env CODESUTURE_REPLAY; config replay; default: auto" in helped.stdout, helped


EFFECTS = {
    "remove": ("import os\nos.remove('victim.txt')\n", "removed victim.txt"),
    "append": ("open('victim.txt', 'a').close()\n", "written victim.txt"),
    "rename": ("import os\nos.rename('victim.txt', 'moved.txt')\n", "renamed victim.txt"),
    "mkdir": ("import os\nos.mkdir('made')\n", "created the folder made"),
    "subprocess": ("import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'pass'])\n", "started a subprocess"),
    "sqlite3": ("import sqlite3\nsqlite3.connect('shop.db').close()\n", "opened the sqlite3 database shop.db"),
    "socket": ("import socket, sys\nsocket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()\n",
               "connected to 127.0.0.1:"),
}


@pytest.mark.parametrize("effect", sorted(EFFECTS))
def test_each_kind_of_side_effect_stops_the_replay(tmp_path: Path, effect: str) -> None:
    code, said = EFFECTS[effect]
    script = _app(tmp_path, code + "import prices\nprint('RESULT', prices.price('nut'))\n")
    write(tmp_path / "victim.txt", "x")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = threading.Thread(target=lambda: server.accept()[0].close() if effect == "socket" else None, daemon=True)
    accepted.start()
    try:
        r = run([*RUN, script, str(server.getsockname()[1])], tmp_path, clean_env())
    finally:
        server.close()
    assert r.returncode == 1, r
    [line] = _lines(r.stderr, "not replayed")
    assert f"healed for the next run; not replayed: the run had already {said}" in line, r


def test_reading_files_and_importing_are_not_side_effects(tmp_path: Path) -> None:
    """Imports write bytecode caches and the program reads files: still replayed."""
    write(tmp_path / "data.txt", "bolt\n")
    write(tmp_path / "helper_mod.py", "X = 1\n")
    script = _app(tmp_path, "import helper_mod\nimport prices\nname = open('data.txt').read().strip()\n"
                            "print('RESULT', prices.price(name + 'x'))\n")
    r = run(RUN + [script], tmp_path, clean_env())
    assert r.returncode == 0 and r.results() == ["RESULT 0"] and "replaying" in r.stderr, r


def test_a_bytecode_cache_moved_by_pycacheprefix_is_no_side_effect(tmp_path: Path) -> None:
    """With ``PYTHONPYCACHEPREFIX`` (images and benchmarks set it) the interpreter
    writes the imported modules' ``.pyc`` into that tree, not ``__pycache__``: its own
    cache, not the program's side effect, so the run is still replayed."""
    write(tmp_path / "helper_mod.py", "X = 1\n")
    script = _app(tmp_path, "import helper_mod\nimport prices\nprint('RESULT', prices.price('nut'))\n")
    env = clean_env(PYTHONPYCACHEPREFIX=str(tmp_path / "pyc"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    r = run(RUN + [script], tmp_path, env)
    assert r.returncode == 0 and r.results() == ["RESULT 0"] and "replaying" in r.stderr, r
    assert list((tmp_path / "pyc").rglob("helper_mod.*.pyc")), r  # the cache really was written there


#: Prints the CodeSuture modules (and ``__future__``) a start imported before the script ran.
IMPORTED = ("import sys\nprint('RESULT', sorted(m for m in sys.modules if m.startswith('codesuture') "
            "or m == '__future__'))\n")


def test_a_start_that_cannot_replay_imports_no_replay_machinery(tmp_path: Path) -> None:
    """Without a store a replay could load nothing (a fresh process finds no patch), so
    boot prepares none: no output recorder, no audit hook, and neither the replay
    modules nor ``__future__`` are imported (start-up cost, benchmarks/callgrind_startup.py).
    With a store (dev) they are, and a side effect still stops the replay."""
    script = write(tmp_path / "main.py", IMPORTED)
    bare = run([PY, "-m", "codesuture.boot", script], tmp_path, clean_env())
    assert bare.returncode == 0, bare
    assert bare.results() == ["RESULT ['codesuture', 'codesuture.logs', 'codesuture.runtime', "
                              "'codesuture.runtime.hookfinder', 'codesuture.runtime.script', "
                              "'codesuture.runtime.session', 'codesuture.settings']"], bare
    stored = run([*BOOT, script], tmp_path, clean_env())
    assert stored.returncode == 0, stored
    [line] = stored.results()
    assert "'codesuture.runtime.effects'" in line and "'codesuture.runtime.rerun'" in line, stored


def test_the_script_boundary_names_the_replay_variables_as_their_modules_do() -> None:
    from codesuture.runtime import effects, rerun, script

    assert script._REPLAY_STATE_ENV == rerun.STATE_ENV
    assert script._EFFECTS_REPORT_ENV == effects.REPORT_ENV


def test_a_scratch_file_created_and_removed_again_is_no_side_effect(tmp_path: Path) -> None:
    """``tempfile.gettempdir()`` probes the temp folder by writing and removing a file; a
    program's own scratch file, written then deleted, leaves nothing either: replayed.
    A file it created and kept still stops the replay."""
    scratch = ("import os, tempfile\ntempfile.gettempdir()\n"
               "with open('scratch.tmp', 'w') as fh:\n    fh.write('x')\nos.remove('scratch.tmp')\n")
    script = _app(tmp_path, scratch + "import prices\nprint('RESULT', prices.price('nut'))\n")
    r = run(RUN + [script], tmp_path, clean_env())
    assert r.returncode == 0 and r.results() == ["RESULT 0"] and "replaying" in r.stderr, r
    kept = tmp_path / "kept"
    kept.mkdir()
    script = _app(kept, "with open('made.txt', 'w') as fh:\n    fh.write('x')\nimport prices\nprint('RESULT', prices.price('nut'))\n")
    r = run(RUN + [script], kept, clean_env())
    assert r.returncode == 1 and "not replayed: the run had already written made.txt" in r.stderr, r


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX exec")
def test_the_replay_starts_in_the_folder_the_run_started_in(tmp_path: Path) -> None:
    write(tmp_path / "sub" / ".keep", "")
    script = _app(tmp_path, "import os\nimport prices\nos.chdir('sub')\nprint('RESULT', prices.price('nut'))\n")
    r = run([*RUN, "main.py"], tmp_path, clean_env())
    assert r.returncode == 0 and r.results() == ["RESULT 0"], r
    assert script.exists()


def test_watch_does_not_start_a_run_with_side_effects_again(tmp_path: Path) -> None:
    script = _app(tmp_path, CHARGE)
    r = run([PY, "-m", "codesuture", "watch", script], tmp_path, clean_env())
    assert r.returncode == 1 and (tmp_path / "ledger.txt").read_text() == "charged\n", r
    assert "watch: healed for the next run; not restarted: the run had already written ledger.txt" in r.stderr, r
    assert "0 restart(s), exit code 1" in r.stderr, r
    again = run([PY, "-m", "codesuture", "watch", script], tmp_path, clean_env())
    assert again.returncode == 0 and again.results() == ["RESULT 0"], again
    assert (tmp_path / "ledger.txt").read_text() == "charged\n" * 2, again
    pure = _app(tmp_path, PURE)
    shutil.rmtree(tmp_path / "overlays")
    restarted = run([PY, "-m", "codesuture", "watch", pure], tmp_path, clean_env())
    assert restarted.returncode == 0 and "1 restart(s), exit code 0" in restarted.stderr, restarted


THREE_SITES = '''
def work(i):
    d = {}
    if i == 0:
        return d["k0"]
    if i == 1:
        return d["k1"]
    return d["k2"]
'''


def test_each_fresh_run_heals_one_more_site_of_a_function_loaded_from_its_overlay(tmp_path: Path) -> None:
    """A replay is a fresh run that loads the function from its overlay; healing another
    site there rebuilds the function from the overlay's records, which must give the code
    that was loaded (records read back from JSON and records made in the process build
    the same constant table)."""
    write(tmp_path / "shared.py", THREE_SITES)
    main = write(tmp_path / "main.py", "import sys\nimport shared\nprint('RESULT', [shared.work(int(a)) for a in sys.argv[1:]])\n")
    for sites in (["1"], ["0"], ["2"]):
        r = run([*RUN, "--retries", "0", main, *sites], tmp_path, clean_env())
        assert len(_lines(r.stderr, "WARNING patched shared:")) == 1 and "not healed" not in r.stderr, r
    r = run([*RUN, main, "0", "1", "2"], tmp_path, clean_env())
    assert r.returncode == 0 and r.results() == ["RESULT [None, None, None]"] and "patched" not in r.stderr, r
    audit = run([PY, "-m", "codesuture", "audit", tmp_path / "overlays"], tmp_path, clean_env())
    assert audit.returncode == 0 and audit.stdout.startswith("ok") and "(3 patch(es)" in audit.stdout, audit
