"""Healing is safe: what must never be patched, what must never be loaded, and what
must behave exactly like ``python script.py``.

Subprocess tests run ``python -m codesuture run`` / ``python -m codesuture.boot``;
propagation, containment and diff-gate tests call the library in-process.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import re
import sys
import textwrap
import types
from pathlib import Path

import pytest

from heal_helpers import crash_of
from heal_helpers import (
    PY, TAG, as_data, boot, clean_env, heal, other_pythons, overlays_in, plain, run, script_key, snapshot, write,
)

# A script that crashes (KeyError in f) only when its first argument is "crash", so the
# same source bytes can both build an overlay and run healthily.
SWITCHED = """
import sys
def f(d, k):
    return d[k]
print("START")
print("RESULT", repr(f({}, "x") if sys.argv[1:] == ["crash"] else f({"x": 1}, "x")))
"""


def _patched(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("codesuture: WARNING patched ")]


def _traceback(stderr: str) -> str:
    """The traceback in *stderr* (from ``Traceback (most recent call last):`` on),
    without CodeSuture's log lines: what plain python prints for the crash."""
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")), None)
    if start is None:
        return ""
    return "\n".join(line for line in lines[start:] if not line.startswith("codesuture:"))


@pytest.fixture
def switched(tmp_path: Path) -> tuple[Path, Path]:
    """(script, overlays) with an overlay built for the script's crash."""
    script = write(tmp_path / "app" / "switched.py", SWITCHED)
    overlays = tmp_path / "overlays"
    r = heal(script, overlays, args=("crash",))
    assert r.returncode == 0 and r.results() == ["RESULT None"], str(r)
    assert len(overlays_in(overlays)) == 1
    return script, overlays


# --- overlays that must not apply ----------------------------------------------------

def test_stale_overlay_is_not_applied(switched: tuple[Path, Path]) -> None:
    script, overlays = switched
    ok = boot(script, overlays, args=("crash",))
    assert ok.returncode == 0 and ok.results() == ["RESULT None"], str(ok)

    source = script.read_bytes()
    script.write_bytes(source.replace(b'"START"', b'"STARt"'))  # one byte changed
    stale = boot(script, overlays, args=("crash",))
    assert stale.returncode == 1, str(stale)
    assert "stale" in stale.stderr, str(stale)
    assert stale.stderr.rstrip().endswith("KeyError: 'x'"), str(stale)
    assert "patched" not in stale.stderr
    assert stale.stdout == "STARt\n"


def test_overlay_from_another_python_is_not_applied(tmp_path: Path) -> None:
    others = other_pythons()
    if not others:
        pytest.skip("no interpreter of another Python version (3.11-3.13) that imports codesuture: looked for the "
                    "repo's .venv-3.X, pyenv's and PATH's python3.X")
    script = write(tmp_path / "app" / "switched.py", SWITCHED)
    helper_script = write(tmp_path / "app" / "uses_helper.py", """
        import sys, helpermod
        print("RESULT", repr(helpermod.f({}, "x") if sys.argv[1:] == ["crash"] else helpermod.f({"x": 2}, "x")))
    """)
    write(tmp_path / "app" / "helpermod.py", "def f(d, k):\n    return d[k]\n")
    overlays = tmp_path / "overlays"
    for other in others:
        for s in (script, helper_script):
            built = heal(s, overlays, python=other, args=("crash",))
            assert built.returncode == 0, str(built)
    names = overlays_in(overlays)
    assert names and not any(f".{TAG}." in n for n in names), names

    for s, healthy in ((script, "RESULT 1"), (helper_script, "RESULT 2")):
        # Healthy path: runs normally, one clear log line, nothing crashes.
        r = boot(s, overlays)
        assert r.returncode == 0 and r.results() == [healthy], str(r)
        assert "another Python" in r.stderr, str(r)
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr, str(r)
        # The crash is the original one: the overlay was not applied.
        c = boot(s, overlays, args=("crash",))
        assert c.returncode == 1 and c.stderr.rstrip().endswith("KeyError: 'x'"), str(c)
        assert "internal error" not in c.stderr and "patched" not in c.stderr, str(c)


# --- what is never patched ------------------------------------------------------------

def test_eafp_handled_is_never_patched(tmp_path: Path) -> None:
    script = write(tmp_path / "eafp.py", """
        def get(d, k):
            try:
                return d[k]
            except KeyError:
                return "fallback"
        print("RESULT", repr(get({}, "k")))
    """)
    overlays = tmp_path / "overlays"
    r = heal(script, overlays)
    assert r.returncode == 0 and r.results() == ["RESULT 'fallback'"], str(r)
    assert "patched" not in r.stderr
    assert snapshot(overlays) == {}


@pytest.mark.parametrize("handler", ["except KeyError:", "except LookupError:", "except (ValueError, KeyError) as e:"])
def test_eafp_reraised_is_never_patched(handler: str, tmp_path: Path) -> None:
    script = write(tmp_path / "reraise.py", f"""
        def get(d, k):
            try:
                return d[k]
            {handler}
                raise
        print("RESULT", repr(get({{}}, "k")))
    """)
    overlays = tmp_path / "overlays"
    r = heal(script, overlays)
    assert r.returncode == 1, str(r)
    assert r.stderr.rstrip().endswith("KeyError: 'k'"), str(r)
    assert "the program catches KeyError itself" in r.stderr, str(r)
    assert not _patched(r.stderr) and r.results() == []
    assert snapshot(overlays) == {}
    assert _traceback(r.stderr) == _traceback(plain(script).stderr) != ""


def test_broad_cleanup_handler_does_not_block_healing(tmp_path: Path) -> None:
    """``except Exception: cleanup; raise`` is cleanup, not EAFP (crash/handled.py)."""
    script = write(tmp_path / "cleanup.py", """
        def get(d, k):
            try:
                return d[k]
            except Exception:
                print("cleanup")
                raise
        print("RESULT", repr(get({}, "k")))
    """)
    r = heal(script, tmp_path / "overlays")
    assert r.returncode == 0 and r.results() == ["RESULT None"], str(r)
    assert len(_patched(r.stderr)) == 1


def test_two_scripts_never_share_patches(tmp_path: Path) -> None:
    source = "def f(d):\n    return d['k']\nprint('RESULT', repr(f({})))\n"
    a = write(tmp_path / "app" / "a.py", source)
    b = write(tmp_path / "app" / "b.py", source)
    overlays = tmp_path / "overlays"

    ra = heal(a, overlays)
    assert ra.returncode == 0 and ra.results() == ["RESULT None"], str(ra)
    [only] = overlays_in(overlays)
    assert only.startswith(script_key(a) + ".")

    rb = boot(b, overlays)  # B must not get A's patch
    assert rb.returncode == 1 and rb.stderr.rstrip().endswith("KeyError: 'k'"), str(rb)
    assert boot(a, overlays).results() == ["RESULT None"]

    rb2 = heal(b, overlays)
    assert rb2.returncode == 0 and len(_patched(rb2.stderr)) == 1, str(rb2)
    names = overlays_in(overlays)
    assert len(names) == 2
    keys = {n.split(f".{TAG}.")[0] for n in names}
    assert keys == {script_key(a), script_key(b)} and script_key(a) != script_key(b)
    assert len({n.split(f".{TAG}.")[1] for n in names}) == 1  # same source bytes, separate overlays


# --- the kill switch -------------------------------------------------------------------

def test_kill_switch_boot(switched: tuple[Path, Path], tmp_path: Path) -> None:
    script, overlays = switched
    env = clean_env(CODESUTURE_DISABLE="1")
    # The existing overlay is not loaded...
    p = plain(script, "crash")
    r = boot(script, overlays, args=("crash",), env=env)
    assert r.returncode == 1 and r.stderr.rstrip().endswith("KeyError: 'x'"), str(r)
    assert r.stdout == p.stdout and "codesuture:" not in r.stderr and "overlay" not in r.stderr, str(r)
    # ...and nothing is healed or written, even with healing on.
    fresh = tmp_path / "fresh"
    r = boot(script, fresh, args=("crash",), env=env, no_heal=False)
    assert (r.returncode, r.stdout) == (p.returncode, p.stdout), str(r)
    assert "patched" not in r.stderr and r.stderr.rstrip().endswith("KeyError: 'x'"), str(r)
    assert not fresh.exists()


def test_kill_switch_traceback_is_pythons(switched: tuple[Path, Path]) -> None:
    script, overlays = switched
    r = boot(script, overlays, args=("crash",), env=clean_env(CODESUTURE_DISABLE="1"))
    assert _traceback(r.stderr) == _traceback(plain(script, "crash").stderr)


def test_kill_switch_codesuture_run(tmp_path: Path) -> None:
    script = write(tmp_path / "app" / "switched.py", SWITCHED)
    overlays = tmp_path / "overlays"
    r = heal(script, overlays, args=("crash",), env=clean_env(CODESUTURE_DISABLE="1"))
    p = plain(script, "crash")
    assert overlays_in(overlays) == []
    assert (r.returncode, r.stdout) == (p.returncode, p.stdout)
    assert "patched" not in r.stderr


# --- CodeSuture's own failures are contained -----------------------------------------

def test_corrupt_overlay_file_runs_original_code(switched: tuple[Path, Path]) -> None:
    script, overlays = switched
    [name] = overlays_in(overlays)
    path = overlays / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    healthy = boot(script, overlays)
    assert healthy.returncode == 0 and healthy.results() == ["RESULT 1"], str(healthy)
    assert "not applied" in healthy.stderr and "Traceback" not in healthy.stderr, str(healthy)
    crash = boot(script, overlays, args=("crash",))
    assert crash.returncode == 1 and crash.stderr.rstrip().endswith("KeyError: 'x'"), str(crash)
    path.write_bytes(bytes(data[:7]))  # truncated
    truncated = boot(script, overlays)
    assert truncated.returncode == 0 and truncated.results() == ["RESULT 1"], str(truncated)


def test_corrupt_metadata_runs_original_code(switched: tuple[Path, Path]) -> None:
    script, overlays = switched
    [meta] = [p for p in overlays.iterdir() if p.name.endswith(".json")]
    meta.write_text("{not json")
    r = boot(script, overlays)
    assert r.returncode == 0 and r.results() == ["RESULT 1"], str(r)
    assert "not applied" in r.stderr
    # Healing still works live; the corrupt store is reported, not overwritten blindly.
    h = boot(script, overlays, args=("crash",), no_heal=False)
    assert h.returncode == 0 and h.results() == ["RESULT None"], str(h)


def test_corrupt_store_for_an_imported_module(tmp_path: Path) -> None:
    app = tmp_path / "app"
    script = write(app / "main.py", "import helpermod\nprint('RESULT', repr(helpermod.f({}, 'x')))\n")
    write(app / "helpermod.py", "def f(d, k):\n    return d[k]\n")
    overlays = tmp_path / "overlays"
    assert heal(script, overlays).returncode == 0
    [name] = overlays_in(overlays)
    assert name.startswith(f"helpermod.{TAG}.")
    (overlays / name).write_bytes(b"\x00garbage")
    r = boot(script, overlays)
    assert r.returncode == 1 and r.stderr.rstrip().endswith("KeyError: 'x'"), str(r)
    assert "not applied" in r.stderr


def test_junk_in_store_is_ignored(switched: tuple[Path, Path]) -> None:
    script, overlays = switched
    (overlays / f"switched.{TAG}.0123456789abcdef.overlay").write_bytes(b"junk")
    (overlays / f"helpermod.{TAG}.0123456789abcdef.overlay").mkdir()
    (overlays / "not-an-overlay.txt").write_text("hello")
    (overlays / f"sys.{TAG}.0123456789abcdef.json").write_text("[]")
    r = boot(script, overlays, args=("crash",))
    assert r.returncode == 0 and r.results() == ["RESULT None"], str(r)
    assert "Traceback" not in r.stderr


def test_junk_file_as_store_is_a_bundle_and_prod(tmp_path: Path) -> None:
    """A file given as --overlays is a bundle, so the run is prod: a junk file is a
    WARNING and the program runs; a crash is not healed and the file is never touched;
    with --heal the patch is proposed in <file>.pending, never in the file."""
    script = write(tmp_path / "app" / "switched.py", SWITCHED)
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"\x00\x01 not a store")
    pending = tmp_path / "blocker.pending"
    r = boot(script, blocker)
    assert r.returncode == 0 and r.results() == ["RESULT 1"], str(r)
    assert "WARNING overlays not loaded from" in r.stderr and "not a zip bundle" in r.stderr, str(r)
    # Prod by default: the crash is the program's, one line says what would be patched.
    c = boot(script, blocker, args=("crash",), no_heal=False)
    assert c.returncode == 1 and c.stderr.rstrip().endswith("KeyError: 'x'"), str(c)
    assert "crash not healed (prod mode" in c.stderr and "would_patch=key_guard" in c.stderr, str(c)
    assert not pending.exists()
    # --heal: healed live and proposed for review beside the bundle, never inside it.
    # A replay is a fresh run, which never loads a proposal: the crash is the program's.
    h = boot(script, blocker, "--heal", args=("crash",), no_heal=False)
    assert h.returncode == 1 and h.results() == [] and h.stdout.count("START") == 1, str(h)
    assert "proposed overlay" in h.stderr and "proposed for review; not replayed" in h.stderr, str(h)
    assert len(overlays_in(pending)) == 1
    assert blocker.read_bytes() == b"\x00\x01 not a store"


def test_store_under_a_regular_file_never_takes_the_program_down(tmp_path: Path) -> None:
    script = write(tmp_path / "app" / "switched.py", SWITCHED)
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"\x00\x01 not a store")
    overlays = blocker / "overlays"
    # Loading: the program runs.
    r = boot(script, overlays)
    assert r.returncode == 0 and r.results() == ["RESULT 1"], str(r)
    # Healing (dev: no trust settings): patched live, the overlay cannot be written, so
    # no fresh run could load it: not replayed, the program's own crash, nothing else.
    h = boot(script, overlays, args=("crash",), no_heal=False)
    assert h.returncode == 1 and "\nKeyError: 'x'\n" in h.stderr, str(h)
    assert "no overlay written" in h.stderr and "patched in this process only; not replayed" in h.stderr, str(h)
    assert blocker.read_bytes() == b"\x00\x01 not a store"


# --- like `python script.py` --------------------------------------------------------------

PROBE = """
import os, sys
print("ARGV", sys.argv)
print("PATH0", sys.path[0])
print("NAME", __name__, "FILE", __file__, "MAIN", sys.modules["__main__"].__file__)
print("SPEC", __spec__, "PACKAGE", __package__)
import sibling
print("SIBLING", sibling.__file__)
mode = sys.argv[1] if len(sys.argv) > 1 else "0"
if mode == "str":
    sys.exit("bye")
if mode == "none":
    sys.exit()
if mode == "raise":
    def deeper():
        raise RuntimeError("boom")
    deeper()
sys.exit(int(mode))
"""


@pytest.mark.parametrize("args", [("0",), ("3",), ("str",), ("none",), ("raise",), ("7", "--retries", "x", "-v")],
                         ids=["exit0", "exit3", "exit-str", "exit-none", "uncaught", "argv-options"])
def test_behaves_like_python_script(args: tuple[str, ...], tmp_path: Path) -> None:
    app = tmp_path / "app"
    write(app / "probe.py", PROBE)
    write(app / "sibling.py", "")
    rel = Path("app") / "probe.py"
    overlays = tmp_path / "overlays"
    p = run([PY, str(rel), *args], tmp_path)
    r = run([PY, "-m", "codesuture", "run", "--overlays", str(overlays), str(rel), *args], tmp_path)
    b = run([PY, "-m", "codesuture.boot", "--overlays", str(overlays), str(rel), *args], tmp_path)
    for other in (r, b):
        assert other.returncode == p.returncode, f"{p}\n{other}"
        assert other.stdout == p.stdout, f"{p}\n{other}"
        assert _traceback(other.stderr) == _traceback(p.stderr), f"{p}\n{other}"
        if args[0] == "str":
            assert "bye" in other.stderr.splitlines()
    assert f"PATH0 {app}\n" in p.stdout
    assert f"ARGV {[str(rel), *args]!r}" in p.stdout
    if args[0] == "raise":
        assert _traceback(p.stderr).endswith("RuntimeError: boom")


# --- replay, dry run, verbose -------------------------------------------------------------

TWO_CRASHES = """
print("START")
def a(d):
    return d["x"]
def b(s):
    return s[5]
print("RESULT", repr(a({})), repr(b([1])))
"""


@pytest.mark.parametrize("retries,rc,starts,patches", [(0, 1, 1, 1), (1, 1, 2, 2), (2, 0, 3, 2)])
def test_retries(retries: int, rc: int, starts: int, patches: int, tmp_path: Path) -> None:
    """--retries N: every crash is healed (and written), the run is replayed at most N
    times; 0 heals without replaying."""
    script = write(tmp_path / "two.py", TWO_CRASHES)
    overlays = tmp_path / "overlays"
    r = heal(script, overlays, "--retries", str(retries))
    assert r.returncode == rc, str(r)
    assert r.stdout.count("START") == 1, str(r)  # each replay is a fresh run that does not print it again
    assert r.stderr.count("loading UNSIGNED overlay") == starts - 1, str(r)
    assert len(_patched(r.stderr)) == patches, str(r)
    assert r.stderr.count("replaying") == starts - 1, str(r)
    assert len(overlays_in(overlays)) == 1, str(r)
    meta = json.loads(next(overlays.glob("*.json")).read_text())
    assert [p["qualname"] for p in meta["patches"]] == ["a", "b"][:patches]
    if rc == 1:
        # The crash that was not replayed is reported as plain python reports it.
        assert _traceback(r.stderr).endswith("KeyError: 'x'" if retries == 0 else "IndexError: list index out of range")
    if retries == 0:
        assert _traceback(r.stderr) == _traceback(plain(script).stderr) != ""
    if rc == 0:
        assert r.results() == ["RESULT None 0"]  # b([1])[5]: a list of int yields 0
    # What was written heals the next run from the overlay alone.
    if patches == 2:
        b = boot(script, overlays)
        assert b.returncode == 0 and b.results() == ["RESULT None 0"] and "patched" not in b.stderr, str(b)


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    script = write(tmp_path / "app" / "switched.py", SWITCHED)
    overlays = tmp_path / "overlays"
    r = heal(script, overlays, "--dry-run", args=("crash",))
    assert r.returncode == 1 and _traceback(r.stderr).endswith("KeyError: 'x'"), str(r)
    assert r.stdout == "START\n"  # no replay
    assert "would patch __main__:3 f: key_guard on `d[k]` -> yields " in r.stderr, str(r)  # the expression, not ``
    assert not _patched(r.stderr)
    assert not overlays.exists() or snapshot(overlays) == {}
    assert script.read_text() == SWITCHED.lstrip("\n")
    b = boot(script, overlays, "--dry-run", args=("crash",), no_heal=False)
    assert b.returncode == 1 and "patched" not in b.stderr.replace("would patch", ""), str(b)
    assert not overlays.exists() or snapshot(overlays) == {}


def test_verbose_prints_the_instruction_delta(tmp_path: Path) -> None:
    script = write(tmp_path / "app" / "switched.py", SWITCHED)
    r = heal(script, tmp_path / "overlays", "--verbose", args=("crash",))
    assert r.returncode == 0, str(r)
    [line] = _patched(r.stderr)
    lines = r.stderr.splitlines()
    detail = lines[lines.index(line) + 1]  # -v: the patch's detail on the line after it
    added = int(re.search(r"^codesuture: INFO +BINARY_\w+ at offset \d+; \+(\d+) instructions", detail).group(1))
    assert "--- before" in lines and "+++ after" in lines, str(r)
    plus = [ln for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
    minus = [ln for ln in lines if ln.startswith("-") and not ln.startswith("---")]
    assert len(plus) == added and not minus, str(r)
    assert any("CONTAINS_OP" in ln for ln in plus), str(r)  # key_guard's `k in m` check
    quiet = heal(script, tmp_path / "overlays2", args=("crash",))
    assert "+++ after" not in quiet.stderr and "instructions" not in quiet.stderr, str(quiet)
    [line] = _patched(quiet.stderr)  # one line per patch, no detail
    assert re.fullmatch(r"codesuture: WARNING patched __main__:3 f: key_guard on `d\[k\]` -> yields .+; overlay \S+"
                        r"\.overlay", line), line


# --- the diff gate --------------------------------------------------------------------------

def test_diffgate_budgets() -> None:
    from codesuture.errors import PatchError
    from codesuture.guards.families import FAMILIES
    from codesuture.patch import diffgate
    from codesuture.patch.spec import GuardSpec

    for guard, row in FAMILIES.items():
        if row.first_link:
            continue  # a chain: its first link's family gives the budget (below)
        spec = GuardSpec(guard)
        diffgate.check(spec, row.budget, 0)  # at budget: fine
        with pytest.raises(PatchError, match="over its budget"):
            diffgate.check(spec, row.budget + 1, 0)
        with pytest.raises(PatchError, match="remove"):
            diffgate.check(spec, 1, 1)
    link = FAMILIES["chain_subscript_guard"].forms[0].link_budget
    chain = GuardSpec("chain_subscript_guard", "key", links=3)
    assert diffgate.budget(chain) == FAMILIES["key_guard"].budget + 2 * link
    diffgate.check(chain, diffgate.budget(chain), 0)
    with pytest.raises(PatchError):
        diffgate.check(chain, diffgate.budget(chain) + 1, 0)
    assert diffgate.budget(GuardSpec("chain_subscript_guard", "index", links=2)) == \
        FAMILIES["index_guard"].budget + link
    attr = FAMILIES["null_guard"].form("attr")
    assert attr is not None
    assert diffgate.budget(GuardSpec("null_guard", "attr", links=3)) == FAMILIES["null_guard"].budget + 2 * attr.link_budget
    compare = FAMILIES["null_guard"].form("compare")
    assert compare is not None and compare.extra_budget > 0  # both operands are checked
    assert diffgate.budget(GuardSpec("null_guard", "compare", links=2)) == \
        FAMILIES["null_guard"].budget + compare.extra_budget
    with pytest.raises(PatchError, match="unknown guard"):
        diffgate.budget(GuardSpec("nothing_guard"))


def test_every_guard_fits_its_budget() -> None:
    """The budgets leave room for every guard the matrix exercises (no false refusals)."""
    from codesuture.guards.families import FAMILIES

    assert {g for g, row in FAMILIES.items() if row.budget > 0} >= {
        "null_guard", "key_guard", "subscript_guard", "index_guard", "list_bound_guard", "division_guard",
        "str_coerce_guard", "callable_guard", "type_coercion_guard", "file_guard",
    }


# --- in-process: propagation, containment, the gate in the heal path -----------------------

def _load(tmp_path: Path, name: str, source: str) -> types.ModuleType:
    path = write(tmp_path / f"{name}.py", source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_crash = crash_of


@pytest.fixture
def mod(tmp_path: Path, request: pytest.FixtureRequest):  # noqa: ANN201
    name = "cs_prop_" + re.sub(r"\W", "_", request.node.name)
    module = _load(tmp_path, name, """
        import functools

        class Box:
            def __init__(self):
                self.d = {}
            def get(self, k):
                return self.d[k]

        def lookup(d, k):
            return d[k]

        def deco(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                return fn(*args, **kwargs)
            return wrapper

        @deco
        def fetch(d, k):
            return d[k]

        def make():
            d = {}
            def get(k):
                return d[k]
            return get

        table = {"pick": lambda s: s[3]}
    """)
    yield module
    sys.modules.pop(name, None)


def _heal(exc: BaseException):  # noqa: ANN202
    from codesuture.runtime.healer import Healer

    healer = Healer(overlays=None)
    result = healer.heal(exc)
    assert result is not None, "not healed"
    return result


def test_propagation_bound_method(mod: types.ModuleType) -> None:
    box = mod.Box()
    bound = box.get  # taken before the patch
    partial = functools.partial(mod.Box.get, box, "k")
    old = mod.Box.get.__code__
    _heal(_crash(bound, "k"))
    assert mod.Box.get.__code__ is not old
    assert as_data(bound, "k") is None and as_data(partial) is None and as_data(mod.Box().get, "zz") is None
    box.d["k"] = 1
    assert bound("k") == 1  # healthy path unchanged


def test_propagation_partial(mod: types.ModuleType) -> None:
    p = functools.partial(mod.lookup, {})
    _heal(_crash(p, "k"))
    assert as_data(p, "k") is None and p.func is mod.lookup and mod.lookup({"k": 2}, "k") == 2


def test_propagation_wrapped(mod: types.ModuleType) -> None:
    inner = mod.fetch.__wrapped__
    old = inner.__code__
    _heal(_crash(mod.fetch, {}, "k"))
    assert inner.__code__ is not old
    assert as_data(mod.fetch, {}, "k") is None and as_data(mod.fetch.__wrapped__, {}, "k") is None
    assert mod.fetch({"k": 3}, "k") == 3


def test_propagation_closures_created_later(mod: types.ModuleType) -> None:
    before = mod.make()
    alias = types.FunctionType(mod.make.__code__, mod.__dict__, "alias")  # another function on the parent code
    old = before.__code__
    _heal(_crash(before, "k"))
    assert before.__code__ is not old and as_data(before, "k") is None  # the existing closure, in place
    after = mod.make()  # a closure created after the patch: from the parent's new co_consts
    assert as_data(after, "k") is None and as_data(alias(), "k") is None
    assert after.__code__ is before.__code__
    nested = [c for c in mod.make.__code__.co_consts if isinstance(c, types.CodeType)]
    assert nested == [before.__code__]


def test_propagation_lambda_in_container(mod: types.ModuleType) -> None:
    fn = mod.table["pick"]
    _heal(_crash(fn, "ab"))
    assert as_data(mod.table["pick"], "ab") == "" and fn("abcd") == "d"  # a str yields its empty value


def test_free_variables_differ_is_refused() -> None:
    from codesuture.errors import PatchError
    from codesuture.patch.swap import swap

    def outer():
        x = 1

        def inner():
            return x
        return inner

    def other():
        return 1

    fn = outer()
    old = fn.__code__
    with pytest.raises(PatchError, match="free variables"):
        swap(old, other.__code__)
    assert fn.__code__ is old and fn() == 1


def test_diff_gate_refuses_in_the_heal_path(mod: types.ModuleType, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses

    from codesuture.guards.families import FAMILIES
    from codesuture.runtime.healer import Healer

    monkeypatch.setitem(FAMILIES, "key_guard", dataclasses.replace(FAMILIES["key_guard"], budget=1))
    old = mod.lookup.__code__
    with caplog.at_level(logging.WARNING, logger="codesuture"):
        assert Healer(overlays=None).heal(_crash(mod.lookup, {}, "k")) is None
    assert "over its budget" in caplog.text
    assert mod.lookup.__code__ is old


@pytest.mark.parametrize("target", ["codesuture.patch.swap.swap", "codesuture.crash.diagnose.diagnose",
                                    "codesuture.patch.synthesize.synthesize_all"])
def test_internal_failure_is_contained(target: str, mod: types.ModuleType, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    from codesuture.runtime.healer import Healer

    def broken(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("internal bug")

    monkeypatch.setattr(target, broken)
    old = mod.lookup.__code__
    healer = Healer(overlays=tmp_path / "overlays")
    assert healer.heal(_crash(mod.lookup, {}, "k")) is None
    assert mod.lookup.__code__ is old and not (tmp_path / "overlays").exists()


def test_overlay_bytes_do_not_depend_on_pending_garbage(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """``codesuture sign`` rebuilds an overlay and refuses any byte difference, so the
    bytes must not depend on the garbage collector: marshal flags objects with more
    than one reference, and the synthesis leaves cycles (control-flow graphs) that
    point at nested code objects until they are collected. (Seen with tabulate:
    ``bundle create --key`` refused an overlay ``sign`` had just accepted.)"""
    import gc
    import marshal

    from codesuture.overlay import format as fmt
    from codesuture.overlay.build import build_overlay
    from codesuture.runtime.healer import Healer

    name = "cs_gc_" + re.sub(r"\W", "_", request.node.name)
    source = textwrap.dedent("""
        def outer(rows):
            out = []
            for r in rows:
                out.append((lambda v: v)(r))
            return rows[0], out
    """).lstrip()
    module = _load(tmp_path, name, source)
    try:
        healer = Healer(overlays=None)
        assert healer.heal(_crash(module.outer, [])) is not None
        records = healer.ledger.records()
        was_enabled = gc.isenabled()
        gc.disable()  # what automatic collection may or may not have done by the time of marshal.dumps
        try:
            data, code = build_overlay(source.encode(), f"app:{name}.py", records)
            gc.collect()  # nothing but `code` refers to the code objects now
            assert data == fmt.pack(marshal.dumps(code), source.encode())
        finally:
            if was_enabled:
                gc.enable()
    finally:
        sys.modules.pop(name, None)
