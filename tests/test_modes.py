"""Modes on real files (subprocesses): prod never changes the store, prod --heal
proposes, dev beside signed overlays proposes, the interpreter gate, TTL renewal,
--retries 0, Ctrl-C, redacted exception messages, no machine paths in what a heal
writes."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from heal_helpers import PY, as_data, boot, clean_env, cli, heal, overlays_in, run, snapshot, write

HELPER = """
def a(d):
    return d["x"]


def b(s):
    return s[5]
"""

OTHER = """
def c(d):
    return d.name
"""

MAIN = """
import sys
import helper
import other
which = sys.argv[1:]
print("START")
ra = helper.a({}) if "a" in which else helper.a({"x": 1})
rb = helper.b([1]) if "b" in which else helper.b(list(range(6)))
rc = other.c(None) if "c" in which else "c-ok"
print("RESULT", repr(ra), repr(rb), repr(rc))
"""

PROD_LINE = re.compile(
    r"^codesuture: WARNING crash not healed \(prod mode, healing off\): site=(?P<site>\S+):(?P<line>\d+) "
    r"function=(?P<function>\S+) instruction=(?P<instruction>[A-Z_]+)@(?P<offset>\d+) exception=(?P<exception>\w+) "
    r"would_patch=(?P<would_patch>[\w/]+) yields=(?P<yields>\S+)$", re.M)


@dataclass
class App:
    root: Path
    main: Path
    store: Path
    pending: Path
    priv: Path
    keys: Path

    def meta(self, folder: Path, module: str = "helper") -> dict:
        [path] = [p for p in folder.glob(f"{module}.*.json") if not p.name.endswith(".dsse.json")]
        return json.loads(path.read_text())


def _app(tmp_path: Path) -> App:
    root = tmp_path / "app"
    write(root / "pyproject.toml", '[project]\nname = "modes-app"\nversion = "0"\n')
    write(root / "helper.py", HELPER)
    write(root / "other.py", OTHER)
    main = write(root / "main.py", MAIN)
    priv, keys = tmp_path / "secret" / "k.key", tmp_path / "keys"
    r = cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=tmp_path)
    assert r.returncode == 0, str(r)
    store = root / "overlays"
    return App(root, main, store, root / "overlays.pending", priv, keys)


@pytest.fixture
def app(tmp_path: Path) -> App:
    """The app healed in dev for crash ``a`` (helper's overlay, one patch); unsigned."""
    a = _app(tmp_path)
    r = heal(a.main, a.store, args=("a",))
    assert r.returncode == 0 and r.results() == ["RESULT None 5 'c-ok'"], str(r)
    assert [n.split(".")[0] for n in overlays_in(a.store)] == ["helper"]
    return a


@pytest.fixture
def signed(app: App) -> App:
    """... and its store signed as a folder (envelopes and the signed set)."""
    r = cli("sign", "--key", app.priv, app.store, cwd=app.root)
    assert r.returncode == 0 and "signed overlay set 'modes-app' v1" in r.stdout, str(r)
    return app


def _error(stderr: str) -> str:
    """The last line of *stderr* that is not CodeSuture's (the program's error)."""
    return [ln for ln in stderr.splitlines() if not ln.startswith("codesuture:")][-1]


def _verified(a: App, store: Path) -> None:
    v = cli("verify", "--keys", a.keys, store, cwd=a.root)
    assert v.returncode == 0 and "FAIL" not in v.stdout, str(v)


# --- prod ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["boot", "run"])
def test_prod_crash_is_one_structured_line_and_changes_nothing(command: str, signed: App) -> None:
    a = signed
    before = snapshot(a.root)
    go = boot if command == "boot" else heal
    kw = {"no_heal": False} if command == "boot" else {}
    r = go(a.main, a.store, "--keys", str(a.keys), args=("a", "b"), **kw)
    # a: healed at import by the signed overlay; b: the program's own crash.
    assert r.returncode == 1 and r.stdout == "START\n", str(r)
    assert _error(r.stderr) == "IndexError: list index out of range", str(r)
    [m] = list(PROD_LINE.finditer(r.stderr))
    assert m["site"] == str(a.root / "helper.py") and m["line"] == "6" and m["function"] == "b", m.group(0)
    assert m["instruction"].startswith("BINARY_") and m["exception"] == "IndexError", m.group(0)
    assert (m["would_patch"], m["yields"]) == ("list_bound_guard", "None"), m.group(0)
    assert "patched" not in r.stderr and "replaying" not in r.stderr, str(r)
    assert snapshot(a.root) == before
    assert not a.pending.exists()
    _verified(a, a.store)


def test_prod_heal_proposes_in_pending_and_never_loads_it(signed: App) -> None:
    a = signed
    before = snapshot(a.store)
    r = boot(a.main, a.store, "--keys", str(a.keys), "--heal", args=("a", "b"), no_heal=False)
    # A replay is a fresh run, which never loads a proposal: the crash is the program's.
    assert r.returncode == 1 and r.results() == [] and "\nIndexError: list index out of range\n" in r.stderr, str(r)
    assert r.stdout.count("START") == 1 and "proposed for review; not replayed" in r.stderr, str(r)
    assert f"proposed overlay {a.pending}/helper." in r.stderr, str(r)
    assert snapshot(a.store) == before
    _verified(a, a.store)
    # The proposal: unsigned, tier "propose", and complete: the signed overlay's patch
    # (a) that this module ran plus the new one (b), so it can replace it after review.
    assert [n.split(".")[0] for n in overlays_in(a.pending)] == ["helper"]
    meta = a.meta(a.pending)
    assert meta["tier"] == "propose" and [p["qualname"] for p in meta["patches"]] == ["a", "b"]
    assert not list(a.pending.glob("*.dsse.json"))
    # A later prod boot never reads the pending folder.
    later = boot(a.main, a.store, "--keys", str(a.keys), args=("a", "b"), no_heal=False)
    assert later.returncode == 1 and len(list(PROD_LINE.finditer(later.stderr))) == 1, str(later)
    assert "pending" not in later.stderr, str(later)
    # Pointed at it, prod refuses it (unsigned), and the program's crash is back.
    direct = boot(a.main, a.pending, "--keys", str(a.keys), args=("a",), no_heal=False)
    assert direct.returncode == 1 and "unsigned overlay refused" in direct.stderr, str(direct)
    # Reviewed and signed, the proposal heals both crashes in prod.
    s = cli("sign", "--key", a.priv, "--app-root", a.root, a.pending, cwd=a.root)
    assert s.returncode == 0, str(s)
    ok = boot(a.main, a.pending, "--keys", str(a.keys), args=("a", "b"), no_heal=False)
    assert ok.returncode == 0 and ok.results() == ["RESULT None 0 'c-ok'"], str(ok)
    assert "patched" not in ok.stderr, str(ok)


# --- dev beside signed overlays -----------------------------------------------------------

def test_dev_with_a_signed_folder_proposes_in_pending(signed: App) -> None:
    a = signed
    before = snapshot(a.store)
    r = heal(a.main, a.store, args=("a", "b", "c"))  # codesuture run, no trust settings: dev
    assert r.returncode == 1 and "proposed for review; not replayed" in r.stderr, str(r)  # no run loads a proposal
    r = heal(a.main, a.store, args=("a", "c"))
    assert r.returncode == 1 and "proposed for review; not replayed" in r.stderr, str(r)
    assert snapshot(a.store) == before
    _verified(a, a.store)
    # Every new patch is proposed, even in a module the signed set does not list.
    assert sorted(n.split(".")[0] for n in overlays_in(a.pending)) == ["helper", "other"]
    assert a.meta(a.pending)["tier"] == "propose"
    assert [p["qualname"] for p in a.meta(a.pending)["patches"]] == ["a", "b"]
    # The signed store still loads in prod.
    p = boot(a.main, a.store, "--keys", str(a.keys), args=("a",), no_heal=False)
    assert p.returncode == 0 and p.results() == ["RESULT None 5 'c-ok'"], str(p)


def test_dev_with_an_individually_signed_overlay_proposes_in_pending(app: App) -> None:
    a = app
    [overlay] = overlays_in(a.store)
    s = cli("sign", "--key", a.priv, a.store / overlay, cwd=a.root)
    assert s.returncode == 0 and (a.store / overlay.replace(".overlay", ".dsse.json")).is_file(), str(s)
    assert not (a.store / "overlays.manifest.dsse.json").exists()
    signed_files = snapshot(a.store)
    r = heal(a.main, a.store, args=("a", "b", "c"))
    assert r.returncode == 1 and "proposed for review; not replayed" in r.stderr, str(r)  # no run loads a proposal
    r = heal(a.main, a.store, args=("a", "c"))
    assert r.returncode == 0 and r.results() == ["RESULT None 5 None"], str(r)  # other's patch is in the store
    # helper's overlay is signed: its new patch is proposed, its files untouched.
    assert overlays_in(a.pending) == [overlay]
    assert [p["qualname"] for p in a.meta(a.pending)["patches"]] == ["a", "b"]
    after = snapshot(a.store)
    assert {k: v for k, v in after.items() if k in signed_files} == signed_files
    # other's overlay is not signed by anyone: written into the store as usual.
    new = sorted(n for n in set(after) - set(signed_files) if not n.endswith(".lock"))  # .<key>.lock: write locks
    assert [n.split(".")[0] for n in new] == ["other", "other"] and [n.rsplit(".", 1)[1] for n in new] == [
        "json", "overlay"], new


# --- the interpreter gate (in process) ----------------------------------------------------

def test_heal_gate_turns_healing_off_but_not_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from codesuture import settings
    from codesuture.loader import finder
    from codesuture.runtime.healer import Healer
    from codesuture.store.directory import DirectoryStore
    from codesuture.trust.policy import LoadPolicy

    name = f"gate_mod_{tmp_path.name.replace('-', '_')}"
    write(tmp_path / f"{name}.py", "def get(d):\n    return d['k']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    store = tmp_path / "ov"

    def crash(mod: types.ModuleType) -> BaseException:
        try:
            mod.get({})
        except Exception as exc:  # broad on purpose: `except KeyError` would be EAFP
            return exc
        raise AssertionError("no crash")

    import importlib

    mod = importlib.import_module(name)
    assert Healer(store).heal(crash(mod)) is not None  # the gate admits this Python: an overlay
    assert len(overlays_in(store)) == 1
    sys.modules.pop(name)

    above = "%d.%d" % (sys.version_info[0], sys.version_info[1] + 1)
    monkeypatch.setattr(settings, "HEAL_PYTHONS", f">={above}")  # this Python is outside
    mod = importlib.import_module(name)
    original = mod.get.__code__
    healer = Healer(store)
    with caplog.at_level(logging.WARNING, logger="codesuture"):
        assert healer.heal(crash(mod)) is None
        assert healer.heal(crash(mod)) is None
    lines = [r.getMessage() for r in caplog.records if "healing is off" in r.getMessage()]
    assert len(lines) == 1 and f"Python {sys.version.split()[0]}" in lines[0] and f">={above}" in lines[0], lines
    assert mod.get.__code__ is original and healer.history == []
    sys.modules.pop(name)
    # Loading is unaffected: the overlay applies at import.
    ds = DirectoryStore(str(store))
    installed = finder.install(ds, LoadPolicy(), finder.build_index(ds))
    assert installed is not None
    try:
        mod = importlib.import_module(name)
        assert type(mod.__loader__).__name__ == "OverlayLoader" and as_data(mod.get, {}) is None
    finally:
        finder.uninstall()
        sys.modules.pop(name, None)


# --- TTL renewal --------------------------------------------------------------------------

#: Runs ``codesuture`` (or boot with ``boot`` as first argument) with the clock moved
#: forward by argv[1] days: every time.time() of CodeSuture sees the future.
FAKE_CLOCK = """
import sys, time
_offset = float(sys.argv.pop(1)) * 86400.0
_real = time.time
time.time = lambda: _real() + _offset
if sys.argv[1:2] == ["boot"]:
    from codesuture.boot import main
    sys.exit(main(sys.argv[2:]))
sys.argv[0] = "codesuture"
from codesuture.cli.group import cli as main
main()
"""

TTL = """
import sys
def a(d):
    return d["x"]
def b(s):
    return s[5]
print("RESULT", repr(a({})), repr(b([1]) if "both" in sys.argv else "-"))
"""


def test_expired_overlay_is_refused_then_renewed_by_the_next_run(tmp_path: Path) -> None:
    script = write(tmp_path / "app" / "ttl.py", TTL)
    clock = write(tmp_path / "clock.py", FAKE_CLOCK)
    store = tmp_path / "ov"
    first = heal(script, store, "--ttl", "1", args=("both",))
    assert first.returncode == 0 and first.results() == ["RESULT None 0"], str(first)
    [meta_path] = store.glob("*.json")
    old = json.loads(meta_path.read_text())
    assert [p["qualname"] for p in old["patches"]] == ["a", "b"] and old["expires"]

    def later(*args: str) -> subprocess.CompletedProcess:  # two days on
        return run([PY, str(clock), "2", *args], script.parent)

    refused = later("boot", "--overlays", str(store), "--no-heal", str(script))
    assert refused.returncode == 1 and f"not applied: expired at {old['expires']}" in refused.stderr, str(refused)
    renewed = later("run", "--overlays", str(store), str(script))
    assert renewed.returncode == 0 and renewed.results() == ["RESULT None '-'"], str(renewed)
    assert "codesuture: WARNING patched __main__:3 a: key_guard" in renewed.stderr, str(renewed)  # healed anew, not adopted
    new = json.loads(meta_path.read_text())
    # Fresh expiry (the run's 30-day default from the faked now), b's expired record dropped.
    assert [p["qualname"] for p in new["patches"]] == ["a"]
    from codesuture.util.clock import parse_iso_utc

    assert parse_iso_utc(new["expires"]) - parse_iso_utc(old["expires"]) > 30 * 86400
    assert new["patches"][0]["expires"] == new["expires"]
    ok = later("boot", "--overlays", str(store), "--no-heal", str(script))
    assert ok.returncode == 0 and ok.stdout.strip() == "RESULT None '-'", str(ok)


# --- --retries 0, Ctrl-C ------------------------------------------------------------------

ONE_CRASH = """
print("START")
def a(d):
    return d["x"]
print("RESULT", repr(a({})))
"""


@pytest.mark.parametrize("how", ["run flag", "boot flag", "environment"])
def test_retries_0_heals_writes_and_does_not_replay(how: str, tmp_path: Path) -> None:
    script = write(tmp_path / "app" / "one.py", ONE_CRASH)
    store = tmp_path / "ov"
    if how == "run flag":
        r = heal(script, store, "--retries", "0")
    elif how == "boot flag":
        r = boot(script, store, "--retries", "0", no_heal=False)
    else:
        r = boot(script, store, env=clean_env(CODESUTURE_RETRIES="0"), no_heal=False)
    assert r.returncode == 1 and r.stdout == "START\n", str(r)
    assert _error(r.stderr) == "KeyError: 'x'" and "replaying" not in r.stderr, str(r)
    assert "patched" in r.stderr and len(overlays_in(store)) == 1, str(r)
    nxt = boot(script, store)
    assert nxt.returncode == 0 and nxt.results() == ["RESULT None"], str(nxt)


SLEEPER = """
import time
print("READY", flush=True)
time.sleep(60)
print("NOT REACHED")
"""


@pytest.mark.parametrize("command", ["run", "boot"])
def test_ctrl_c_exits_130(command: str, tmp_path: Path) -> None:
    script = write(tmp_path / "app" / "sleeper.py", SLEEPER)
    store = tmp_path / "ov"
    args = (["-m", "codesuture", "run", "--overlays", str(store)] if command == "run"
            else ["-m", "codesuture.boot", "--overlays", str(store)])
    p = subprocess.Popen([PY, *args, str(script)], cwd=script.parent, env=clean_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "READY\n"
        time.sleep(0.2)  # into time.sleep
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    assert _error(err) == "KeyboardInterrupt" and "NOT REACHED" not in out, err
    assert "patched" not in err and "not healed" not in err and not store.exists(), err


# --- what a heal writes: no user data, no machine paths -----------------------------------

REDACT = """
import sys
key, literal, path = sys.argv[1:4]
def get(d, k):
    return d[k]
def num(s):
    return int(s)
def read(p):
    with open(p) as fh:
        return fh.read()
print("RESULT", repr(get({}, key)), repr(num(literal)), repr(read(path)))
"""


@pytest.mark.parametrize("record", [False, True], ids=["default", "record-messages"])
def test_exception_messages_are_redacted_unless_asked(record: bool, tmp_path: Path) -> None:
    script = write(tmp_path / "app" / "redact.py", REDACT)
    store = tmp_path / "ov"
    secrets = ["key-Zq81-secret", "hunter2-literal", str(tmp_path / "private" / "salary-2026.txt")]
    r = heal(script, store, *(["--record-messages"] if record else []), args=tuple(secrets))
    assert r.returncode == 0 and r.results() == ["RESULT None 0 ''"], str(r)
    [meta_path] = store.glob("*.json")
    meta = json.loads(meta_path.read_text())
    exceptions = [p["exception"] for p in meta["patches"]]
    assert [e.split(":")[0] for e in exceptions] == ["KeyError", "ValueError", "FileNotFoundError"]
    files = {name: data.decode("utf-8", "replace") for name, data in snapshot(store).items()}
    for secret in secrets:
        found = [name for name, text in files.items() if secret in text]
        if record:
            assert found == [meta_path.name], (secret, found)
        else:
            assert found == [], (secret, found)
    if not record:
        assert exceptions[0] == "KeyError: <redacted key>"
        assert "'<redacted>'" in exceptions[1] and "'<redacted>'" in exceptions[2], exceptions


def test_no_absolute_path_in_what_a_heal_writes(tmp_path: Path) -> None:
    """Overlay bytes and metadata of a script and of an imported module name their
    source relative to the app root: the tmp path never appears in them."""
    a = _app(tmp_path)
    r = heal(a.main, a.store, args=("a", "b", "c"))
    assert r.returncode == 0 and r.results() == ["RESULT None 0 None"], str(r)
    # The script itself crashes too (its own __main__ overlay).
    script = write(a.root / "tools" / "report.py", "def f(d):\n    return d['k']\nprint('RESULT', f({}))\n")
    r2 = heal(script, a.store)
    assert r2.returncode == 0, str(r2)
    files = snapshot(a.store)
    assert sorted(n.split(".")[0] for n in files if n.endswith(".overlay")) == ["__main__", "helper", "other"]
    needles = {str(tmp_path).encode(), str(tmp_path.resolve()).encode()}
    for name, data in files.items():
        for needle in needles:
            assert needle not in data, (name, needle)
    origins = sorted(json.loads(d)["origin"] for n, d in files.items() if n.endswith(".json"))
    assert origins == ["app:helper.py", "app:other.py", "app:tools/report.py"]


@pytest.mark.parametrize("spec", [">=3.11,<3.14", ">=3.11", "<3.13", ">=3.12.2,<3.13", ">=3,<4", " >=3.11 , <3.14 "])
def test_heal_gate_agrees_with_packaging(spec: str) -> None:
    """The in-process gate evaluates its specifier subset exactly as packaging does."""
    from packaging.specifiers import SpecifierSet

    from codesuture.settings import heal_python_allowed

    for v in [(3, 10, 13), (3, 11, 0), (3, 11, 7), (3, 12, 1), (3, 12, 2), (3, 13, 0), (3, 13, 9), (3, 14, 0), (4, 0, 0)]:
        assert heal_python_allowed(v, spec) == SpecifierSet(spec).contains("%d.%d.%d" % v), (spec, v)


@pytest.mark.parametrize("spec", ["!=3.12.*", ">3.11", "~=3.11", ">=3.11,<=3.13", ">=3.11rc1", "==3.12", ""])
def test_heal_gate_refuses_what_it_cannot_evaluate(spec: str) -> None:
    from codesuture.settings import heal_python_allowed

    assert heal_python_allowed((3, 12, 1), spec) is None
