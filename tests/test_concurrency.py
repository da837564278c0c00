"""Concurrency-safe healing (issue 6, "Done means"): threads crashing together at one
site or at many sites of one function, processes patching one function into one
store, ``kill -9`` of healers while they write overlays, and corrupt sidecars.

The thread tests heal in this process through ``@boundary`` with a shared
:class:`~codesuture.runtime.healer.Healer`; every thread crashes inside the function's
*original* code (a barrier inside the function holds them there until all are in), so
the heals really race. What is written is then loaded through the loader's own code
(:func:`codesuture.loader.resolve.resolve`) and through the real importer
(``python -m codesuture.boot`` in a subprocess).
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable

import pytest

from heal_helpers import PY, as_data, boot, clean_env, cli, heal, overlays_in, run, write

THREADS = 16
TRIALS = 20


def _app(root: Path) -> Path:
    write(root / "pyproject.toml", '[project]\nname = "concurrency-app"\nversion = "0"\n')
    return root


def _sites_module(n: int, *, sync: bool) -> str:
    """A function ``work(i[, sync])`` with *n* KeyError sites, one per ``i``."""
    head = "def work(i, sync):\n    sync()\n" if sync else "def work(i):\n"
    body = "    d = {}\n" + "".join(f"    if i == {i}:\n        return d['k{i}']\n" for i in range(n))
    return head + body + "    return 'no site'\n"


def _site_lines(source: str) -> dict[int, int]:
    """Source line of each site -> its ``i``."""
    return {n: int(m.group(1)) for n, line in enumerate(source.splitlines(), 1) if (m := re.search(r"d\['k(\d+)'\]", line))}


def _temps(store: Path) -> list[str]:
    return sorted(n for n in os.listdir(store) if n.startswith(".") and n.endswith(".tmp")) if store.is_dir() else []


def _sidecar(store: Path, stem: str) -> dict | None:
    p = store / (stem + ".json")
    return json.loads(p.read_bytes()) if p.exists() else None


def _only_overlay(store: Path) -> tuple[str, dict]:
    """(stem, parsed sidecar) of the single overlay in *store*."""
    names = overlays_in(store)
    assert len(names) == 1, names
    stem = names[0][: -len(".overlay")]
    meta = _sidecar(store, stem)
    assert meta is not None, f"{stem}.json is missing"
    assert meta["overlay_sha256"] == hashlib.sha256((store / names[0]).read_bytes()).hexdigest()
    return stem, meta


def _load_in_process(store: Path, key: str, source: Path) -> dict[str, Any]:
    """The module namespace the loader gives for *source* from *store* (resolve: the
    load policy, then the header checks, then ``marshal.loads``). Fails when no
    overlay applies."""
    from codesuture.loader.resolve import LOADED, resolve
    from codesuture.store.directory import DirectoryStore
    from codesuture.trust.policy import LoadPolicy

    entries = DirectoryStore(store).index().get(key)
    assert entries, f"no overlay of {key} in {store}"
    try:
        found = resolve(key, entries, source.read_bytes(), str(source), LoadPolicy(state_dir=os.environ["CODESUTURE_STATE_DIR"]))
    finally:
        LOADED.pop(key, None)
    assert found is not None, f"the overlay of {key} in {store} does not load"
    ns: dict[str, Any] = {"__name__": key}
    exec(found.code, ns)
    return ns


def _import_fresh(app: Path, name: str, source: str) -> types.ModuleType:
    write(app / f"{name}.py", source)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def _race(n: int, call: Callable[[int, Callable[[], None]], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run ``call(i, sync)`` in *n* threads; ``sync()`` holds each thread at a barrier
    the first time it is called (inside the function under test), so all *n* are in
    its original code before any of them crashes."""
    barrier = threading.Barrier(n)
    results: list[Any] = ["not run"] * n
    errors: list[BaseException] = []

    def one(i: int) -> None:
        first = [True]

        def sync() -> None:
            if first[0]:
                first[0] = False
                barrier.wait(timeout=30)

        try:
            results[i] = call(i, sync)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread is still running after 60 s"
    return results, errors


@pytest.fixture
def fresh_modules(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Modules imported by a test are dropped from sys.modules afterwards."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("conc_"):
            del sys.modules[name]


# --- threads -------------------------------------------------------------------------------

def test_16_threads_on_one_site_make_one_patch_in_20_of_20_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    fresh_modules: None) -> None:
    from codesuture.runtime.boundary import boundary
    from codesuture.runtime.healer import Healer

    app = _app(tmp_path / "app")
    monkeypatch.syspath_prepend(str(app))
    source = "def work(d, sync):\n    sync()\n    return d['k']\n"
    failures = []
    for trial in range(TRIALS):
        name = f"conc_one_{trial}"
        mod = _import_fresh(app, name, source)
        store = tmp_path / f"store{trial}"
        healer = Healer(store, app_root=str(app))
        guarded = boundary(mod.work, healer=healer)
        results, errors = _race(THREADS, lambda i, sync: guarded({}, sync))
        statuses = collections.Counter(r.status for r in healer.history)
        problems = []
        if errors or results != [None] * THREADS:
            problems.append(f"results {results}, errors {errors!r}")
        if healer.patches != 1 or statuses != {"patched": 1, "already": THREADS - 1}:
            problems.append(f"patches {healer.patches}, statuses {dict(statuses)}")
        try:
            _, meta = _only_overlay(store)
            assert [p["qualname"] for p in meta["patches"]] == ["work"], meta["patches"]
            assert as_data(_load_in_process(store, name, app / f"{name}.py")["work"], {}, lambda: None) is None
        except AssertionError as exc:
            problems.append(f"overlay: {exc}")
        assert not _temps(store)
        if problems:
            failures.append((trial, problems))
    assert not failures, f"{len(failures)} of {TRIALS} trials failed: {failures}"
    # The first trial's overlay, through the real importer in a fresh process.
    check = write(app / "check_one.py", "import conc_one_0\nprint('RESULT', conc_one_0.work({}, lambda: None))\n")
    r = boot(check, tmp_path / "store0", "-v")
    assert r.returncode == 0 and r.results() == ["RESULT None"], str(r)
    assert "loaded overlay conc_one_0." in r.stderr, str(r)


@pytest.mark.parametrize("trial", range(3))
def test_16_threads_on_16_sites_of_one_function_keep_16_patches(trial: int, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch, fresh_modules: None) -> None:
    from codesuture.runtime.boundary import boundary
    from codesuture.runtime.healer import Healer

    app = _app(tmp_path / "app")
    monkeypatch.syspath_prepend(str(app))
    source = _sites_module(THREADS, sync=True)
    name = f"conc_sites_{trial}"
    mod = _import_fresh(app, name, source)
    store = tmp_path / "store"
    healer = Healer(store, app_root=str(app))
    guarded = boundary(mod.work, healer=healer)
    results, errors = _race(THREADS, lambda i, sync: guarded(i, sync))
    assert not errors and results == [None] * THREADS, (results, errors)
    assert healer.patches == THREADS, [(r.status, r.record.line) for r in healer.history]
    assert all(r.status == "patched" for r in healer.history)
    # Every patch is live in this process, and every one is in the written overlay.
    assert [as_data(mod.work, i, lambda: None) for i in range(THREADS)] == [None] * THREADS
    _, meta = _only_overlay(store)
    lines = _site_lines(source)
    assert sorted(lines[p["line"]] for p in meta["patches"]) == list(range(THREADS)), meta["patches"]
    ns = _load_in_process(store, name, app / f"{name}.py")
    assert [as_data(ns["work"], i, lambda: None) for i in range(THREADS)] == [None] * THREADS
    assert not _temps(store)
    # A fresh process, through the importer, healing off: all 16 inputs survive.
    check = write(app / "check_sites.py",
                  f"import {name}\nprint('RESULT', [{name}.work(i, lambda: None) for i in range({THREADS})])\n")
    r = boot(check, store, "-v")
    assert r.returncode == 0 and r.results() == [f"RESULT {[None] * THREADS}"], str(r)
    assert r.stderr.count("loaded overlay") == 1, str(r)


# --- processes -------------------------------------------------------------------------------

PROCS = 8

WORKER = """
import os, sys, time
import shared
i, n, sync = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
open(os.path.join(sync, str(i)), "w").close()
deadline = time.time() + 30
while len(os.listdir(sync)) < n and time.time() < deadline:  # a barrier across processes
    time.sleep(0.002)
print("RESULT", i, shared.work(i))
"""

CHECK = """
import sys
import shared
print("RESULT", [shared.work(i) for i in range(int(sys.argv[1]))])
"""


@pytest.mark.parametrize("trial", range(2))
def test_8_processes_on_8_sites_of_one_function_keep_all_8(trial: int, tmp_path: Path) -> None:
    app = _app(tmp_path / "app")
    source = _sites_module(PROCS, sync=False)
    write(app / "shared.py", source)
    worker = write(app / "worker.py", WORKER)
    check = write(app / "check.py", CHECK)
    store, sync = app / "overlays", tmp_path / "sync"
    sync.mkdir()
    # --replay always: the sync file the barrier writes is the harness's, not a side effect of the work
    procs = [subprocess.Popen([PY, "-m", "codesuture", "run", "--replay", "always", "--overlays", str(store), str(worker), str(i), str(PROCS),
                               str(sync)], cwd=app, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(PROCS)]
    outs = [p.communicate(timeout=120) for p in procs]
    for i, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0 and f"RESULT {i} None" in out, f"worker {i}: rc {p.returncode}\n{out}\n{err}"
        assert "session: 1 patch applied" in err, f"worker {i}:\n{err}"
    stem, meta = _only_overlay(store)
    lines = _site_lines(source)
    assert sorted(lines[p["line"]] for p in meta["patches"]) == list(range(PROCS)), meta["patches"]
    assert not _temps(store)
    a = cli("audit", store, cwd=app)
    assert a.returncode == 0 and a.stdout.startswith("ok") and f"({PROCS} patch(es)" in a.stdout, str(a)
    r = boot(check, store, "-v", args=(str(PROCS),))
    assert r.returncode == 0 and r.results() == [f"RESULT {[None] * PROCS}"], str(r)
    assert f"loaded overlay {stem} for shared" in r.stderr, str(r)


# --- kill -9 while writing ---------------------------------------------------------------------

#: Kills per run (CODESUTURE_TEST_KILLS: more, for a longer soak).
KILLS = int(os.environ.get("CODESUTURE_TEST_KILLS", "16"))
KILL_SITES = 4

CRASH = f"""
import kmod
for i in range({KILL_SITES}):
    print("RESULT", i, kmod.work(i))
"""

SURVIVORS = f"""
import kmod
ok = []
for i in range({KILL_SITES}):
    try:
        kmod.work(i)
    except Exception:
        continue
    ok.append(i)
print("RESULT", ok)
"""


def _killed_heal(app: Path, store: Path, after: int, delay: float) -> int:
    """Start ``codesuture run`` on the crashing script (one heal and one replay per
    site); SIGKILL it *delay* seconds after its *after*-th "patched" line (the overlay
    write follows that line). Returns how many patch lines it printed."""
    p = subprocess.Popen([PY, "-m", "codesuture", "run", "--overlays", str(store), "--retries", str(KILL_SITES), "crash.py"],
                         cwd=app, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = 0
    assert p.stderr is not None
    try:
        for line in p.stderr:
            if " WARNING patched " in line:
                seen += 1
                if seen >= after:
                    break
        time.sleep(delay)
        p.kill()
        p.wait(30)
    finally:
        p.stderr.close()
        if p.poll() is None:
            p.kill()
    return seen


def test_kill_9_during_overlay_writes_never_loads_a_partial_overlay(tmp_path: Path) -> None:
    """KILLS healers (16; CODESUTURE_TEST_KILLS) killed at random moments around their overlay writes. After each,
    a boot loads a complete overlay (what its sidecar describes and nothing else) or
    refuses it with one line and runs the original code; the next dev boot, or the
    next write, leaves no temporary file behind."""
    app = _app(tmp_path / "app")
    source = _sites_module(KILL_SITES, sync=False)
    write(app / "kmod.py", source)
    write(app / "crash.py", CRASH)
    write(app / "check.py", SURVIVORS)
    lines = _site_lines(source)
    seed = int(os.environ.get("CODESUTURE_TEST_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    outcomes: collections.Counter[str] = collections.Counter()
    cleaned_by_write = 0
    for n in range(KILLS):
        store = tmp_path / "stores" / f"s{n}"
        where = f"seed {seed}, kill {n}"
        after = rng.randint(1, KILL_SITES)
        delay = rng.uniform(0, 0.02)
        _killed_heal(app, store, after, delay)
        overlays = overlays_in(store)
        assert len(overlays) <= 1, (where, overlays)
        temps = _temps(store)
        stem = overlays[0][: -len(".overlay")] if overlays else None
        data = (store / overlays[0]).read_bytes() if overlays else None
        try:
            meta = _sidecar(store, stem) if stem else None
        except ValueError:  # a sidecar is written atomically: never torn
            pytest.fail(f"{where}: torn sidecar {stem}.json")
        complete = meta is not None and data is not None and meta["overlay_sha256"] == hashlib.sha256(data).hexdigest()
        outcomes["temp files left" if temps else "no temp file"] += 1
        outcomes["complete" if complete else "no overlay" if data is None else "overlay not matching its sidecar"] += 1
        if meta is None or len(meta["patches"]) < KILL_SITES:
            outcomes["killed before the last write"] += 1
        if temps and cleaned_by_write < 3:
            # The next write into the store (the same heal, run to the end) removes them.
            done = heal(app / "crash.py", store, "--retries", str(KILL_SITES))
            assert done.returncode == 0 and "Traceback" not in done.stderr, f"{where}\n{done}"
            assert not _temps(store), (where, _temps(store))
            cleaned_by_write += 1
            stem, meta = _only_overlay(store)
            data = (store / (stem + ".overlay")).read_bytes()
            complete = True
        # A dev boot (healing on, which cleans temporary files; the check script
        # catches its own exceptions, so nothing is healed).
        r = run([PY, "-m", "codesuture.boot", "--overlays", str(store), "-v", "check.py"], app)
        assert r.returncode == 0 and "Traceback" not in r.stderr and "internal error" not in r.stderr, f"{where}\n{r}"
        [result] = r.results()
        survived = json.loads(result.split(" ", 1)[1])
        if "loaded overlay" in r.stderr:
            assert complete, f"{where}: an overlay its sidecar does not describe was loaded\n{r}"
            assert meta is not None and survived == sorted(lines[p["line"]] for p in meta["patches"]), f"{where}\n{r}"
        else:
            assert survived == [], f"{where}: original code expected\n{r}"
            if data is not None:
                assert f"overlay {stem} not applied: " in r.stderr, f"{where}\n{r}"
        assert not _temps(store), (where, _temps(store))
    # The kills landed while the healers were at work, not after they were done (how
    # many landed inside a write depends on the file system's fsync: see the counts).
    assert outcomes["killed before the last write"] >= KILLS // 4, (seed, dict(outcomes))
    print(f"kill -9 x {KILLS} (seed {seed}): {dict(outcomes)}")


# --- corrupt sidecars --------------------------------------------------------------------------

CORRUPT = {
    "garbage": lambda raw: b"\x00\xff not json at all",
    "truncated": lambda raw: raw[: len(raw) // 2],
    "wrong shape": lambda raw: b'{"format": 2, "patches": "none"}',
    "empty": lambda raw: b"",
}


@pytest.mark.parametrize("how", sorted(CORRUPT))
def test_a_corrupt_sidecar_never_blocks_the_next_write(how: str, tmp_path: Path) -> None:
    app = _app(tmp_path / "app")
    source = _sites_module(3, sync=False)
    write(app / "shared.py", source)
    main = write(app / "main.py", "import sys\nimport shared\nprint('RESULT', [shared.work(int(a)) for a in sys.argv[1:]])\n")
    store = app / "overlays"
    first = heal(main, store, args=("0",))
    assert first.returncode == 0 and first.results() == ["RESULT [None]"], str(first)
    stem, _ = _only_overlay(store)
    sidecar = store / (stem + ".json")
    sidecar.write_bytes(CORRUPT[how](sidecar.read_bytes()))
    # The corrupt sidecar refuses the overlay (site 0 crashes again, unhealed)...
    refused = boot(main, store, args=("0",))
    assert refused.returncode == 1 and "KeyError" in refused.stderr, str(refused)
    assert f"overlay {stem} not applied" in refused.stderr, str(refused)
    # ...and the next heal rewrites it.
    second = heal(main, store, args=("1",))
    assert second.returncode == 0 and second.results() == ["RESULT [None]"], str(second)
    assert f"ignoring unusable metadata {stem}.json" in second.stderr, str(second)
    stem2, meta = _only_overlay(store)
    assert stem2 == stem and [_site_lines(source)[p["line"]] for p in meta["patches"]] == [1], meta["patches"]
    assert not _temps(store)
    # And the store keeps growing normally from there.
    third = heal(main, store, args=("0", "1", "2"))
    assert third.returncode == 0 and third.results() == ["RESULT [None, None, None]"], str(third)
    ok = boot(main, store, args=("0", "1", "2"))
    assert ok.returncode == 0 and ok.results() == ["RESULT [None, None, None]"], str(ok)
    assert "patched" not in ok.stderr, str(ok)
