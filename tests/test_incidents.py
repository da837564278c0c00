"""Incidents, fingerprints, the fingerprint registry, metrics and shadow mode (issue 9,
items 3 and 5): codesuture.runtime.incidents / metrics / shadow, codesuture.review.incidents
and ``codesuture incidents``.

* every crash, heal, refusal, guard firing (rate-limited per site) and live rollback is
  one JSON line, read back as written; messages are redacted unless record_messages;
  the file rotates once at its size cap; two processes append to one file without a
  torn line;
* fingerprints ignore names, lines and offsets: a renamed, moved copy of a function has
  its site's fingerprint, on 3.11, 3.12 and 3.13 alike for the constructs that compile
  alike;
* a crash whose fingerprint the store knows gets that guard without a diagnosis (and
  the log says so), after the EAFP check;
* ``codesuture incidents`` prints a digest or the incidents (``--json``), ``--since``;
* Prometheus counters (``get_sample_value`` on CodeSuture's registry) and OpenTelemetry
  span events (the SDK's ``InMemorySpanExporter``);
* shadow mode warns, naming the function and its caller, when a patched function
  returns a guard's default; in process and through ``boot --shadow --incidents``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from heal_helpers import crash_of, import_source
from heal_helpers import as_data as _data

from codesuture.runtime import events, incidents, shadow
from codesuture.runtime.healer import Healer
from codesuture.util.clock import is_iso_utc, iso_utc

import heal_helpers

COMMON = {"time", "kind", "fingerprint", "site", "guard", "exception", "pid"}


@pytest.fixture(autouse=True)
def _quiet_config():
    """Each test starts with everything off and leaves the settings to be read again."""
    incidents.configure(metrics=False)
    shadow.reset()
    yield
    incidents.configure()
    shadow.reset()


_N = iter(range(10**6))


def _module(tmp_path: Path, source: str, name: str | None = None) -> Any:
    return import_source(tmp_path, source, "incmod", name)


def _crash(call: Callable[[], object]) -> BaseException:
    return crash_of(call)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ incidents


def test_crash_heal_and_firing_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "incidents.jsonl"
    incidents.configure(path=str(path), metrics=False)
    mod = _module(tmp_path, "def get(d, k):\n    return d[k]\n", "incrt")
    result = Healer(None).heal(_crash(lambda: mod.get({"a": 1}, "secret-key")))
    assert result is not None
    for _ in range(5):
        assert _data(mod.get, {"a": 1}, "secret-key") == 0
    assert _data(mod.get, {"a": 1}, "a") == 1  # healthy: nothing recorded
    items = _lines(path)
    assert [i["kind"] for i in items] == ["crash", "heal", "guard_fired"]
    for item in items:
        assert COMMON <= set(item) and item["pid"] == os.getpid() and is_iso_utc(item["time"])
    crash, heal, fired = items
    assert crash["site"] == heal["site"] == fired["site"] == "incrt:2 get"
    assert crash["exception"] == "KeyError: <redacted key>" and "secret-key" not in path.read_text()
    fp = result.record.evidence["fingerprint"]
    assert len(fp) == 16 and crash["fingerprint"] == heal["fingerprint"] == fired["fingerprint"] == fp
    assert heal["status"] == "patched" and heal["guard"] == "key_guard" and heal["reused"] is False
    assert fired["guard"] == "key_guard" and fired["exception"] == "KeyError" and fired["firings"] == 1
    # The reader gives back exactly what was written.
    from codesuture.review.incidents import read

    assert read(str(path)).items == items


def test_messages_are_kept_only_with_record_messages(tmp_path: Path) -> None:
    path = tmp_path / "incidents.jsonl"
    incidents.configure(path=str(path), metrics=False, record_messages=True)
    mod = _module(tmp_path, "def get(d, k):\n    return d[k]\n")
    assert Healer(None, record_messages=True).heal(_crash(lambda: mod.get({"a": 1}, "secret-key"))) is not None
    assert _lines(path)[0]["exception"] == "KeyError: 'secret-key'"


def test_guard_firings_are_rate_limited_per_site(tmp_path: Path) -> None:
    path = tmp_path / "incidents.jsonl"
    incidents.configure(path=str(path), metrics=False)
    mod = _module(tmp_path, "def get(d, k):\n    return d[k]\n\ndef other(d, k):\n    return d[k]\n")
    healer = Healer(None)
    for fn in (mod.get, mod.other):
        assert healer.heal(_crash(lambda fn=fn: fn({}, "k"))) is not None
    for _ in range(100):
        mod.get({}, "k")
    mod.other({}, "k")
    fired = [i for i in _lines(path) if i["kind"] == "guard_fired"]
    assert [(i["site"], i["firings"]) for i in fired] == [(f"{mod.__name__}:2 get", 1), (f"{mod.__name__}:5 other", 1)]
    # A second later, the next firing writes one incident standing for the 99 held back and itself.
    site = f"key_guard@{mod.__name__}:2"
    incidents._LAST[site] -= incidents.GUARD_INTERVAL
    mod.get({}, "k")
    last = [i for i in _lines(path) if i["kind"] == "guard_fired"][-1]
    assert last["site"] == f"{mod.__name__}:2 get" and last["firings"] == 100 and last["total"] == events.COUNTS[site]


def test_refusals_and_rollback_are_incidents(tmp_path: Path) -> None:
    path = tmp_path / "incidents.jsonl"
    incidents.configure(path=str(path), metrics=False)
    mod = _module(tmp_path, """
        def get(d, k):
            return d[k]

        def eafp(d, box):
            try:
                return get(d, "x")
            except KeyError as exc:
                box.append(exc)

        def branch(d):
            if d["flag"]:
                return 1
            return 2

        def boom():
            raise ValueError("no guard for this")

        def attr(node):
            return node.kind

        def fine(d):
            return d["y"]
    """)
    healer = Healer(None)
    box: list[BaseException] = []
    mod.eafp({}, box)
    assert healer.heal(box[0]) is None
    assert healer.heal(_crash(lambda: mod.branch({}))) is None
    assert healer.heal(_crash(mod.boom)) is None
    assert Healer(None, report_only=True).heal(_crash(lambda: mod.attr(None))) is None
    assert healer.heal(_crash(lambda: mod.fine({}))) is not None
    assert healer.rollback() == 1
    items = _lines(path)
    refusals = [(i["reason"], i["site"]) for i in items if i["kind"] == "refusal"]
    name = mod.__name__
    assert refusals == [("eafp", f"{name}:3 get"), ("control_flow", f"{name}:12 branch"),
                        ("diagnosis", f"{name}:17 boom"), ("report_only", f"{name}:20 attr")]
    # Each refusal follows the crash it refuses, at the same site with the same fingerprint.
    for k, item in enumerate(items):
        if item["kind"] == "refusal":
            assert items[k - 1]["kind"] == "crash" and items[k - 1]["site"] == item["site"]
            assert items[k - 1]["fingerprint"] == item["fingerprint"]
    assert [i["kind"] for i in items][-3:] == ["crash", "heal", "rollback"] and items[-1]["functions"] == 1


def test_the_file_rotates_once_at_its_cap(tmp_path: Path) -> None:
    path = tmp_path / "incidents.jsonl"
    cap = 4096
    incidents.configure(path=str(path), metrics=False, max_bytes=cap)
    for seq in range(300):
        incidents.record("crash", site="m:1 f", seq=seq, detail="x" * 40)
    rotated = Path(str(path) + ".1")
    assert rotated.exists() and path.exists()
    longest = max(len(line) for p in (path, rotated) for line in p.read_bytes().splitlines(keepends=True))
    assert rotated.stat().st_size < cap + longest and path.stat().st_size < cap
    seqs = [i["seq"] for i in _lines(rotated) + _lines(path)]
    assert seqs == list(range(seqs[0], 300)) and seqs[0] > 0  # one rotation kept, the oldest gone
    from codesuture.review.incidents import read

    assert [i["seq"] for i in read(str(path)).items] == seqs


_WRITER = """
import os, sys, time
from codesuture.runtime import incidents
path, cap, tag, n, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
incidents.configure(path=path, max_bytes=cap, metrics=False)
while not os.path.exists(go):
    time.sleep(0.001)
for seq in range(n):
    incidents.record("guard_fired", site="m:1 f", child=tag, seq=seq, pad="y" * 60)
"""


def _two_writers(tmp_path: Path, cap: int, n: int) -> Path:
    path, go = tmp_path / "shared.jsonl", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(cap), tag, str(n), str(go)],
                              env=heal_helpers.clean_env(), stderr=subprocess.PIPE, text=True) for tag in "ab"]
    time.sleep(0.3)
    go.write_text("")
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    return path


def test_two_processes_append_to_one_file(tmp_path: Path) -> None:
    path = _two_writers(tmp_path, 0, 2000)
    items = _lines(path)  # every line parses: none torn
    assert len(items) == 4000 and len({i["pid"] for i in items}) == 2
    for tag in "ab":
        assert [i["seq"] for i in items if i["child"] == tag] == list(range(2000))
    tags = "".join(i["child"] for i in items)
    assert tags.count("ab") + tags.count("ba") > 1, "the writers did not interleave: nothing was tested"


def test_two_processes_rotate_without_tearing_a_line(tmp_path: Path) -> None:
    cap = 32 * 1024
    path = _two_writers(tmp_path, cap, 2000)
    rotated = Path(str(path) + ".1")
    # The last write may itself have rotated the file: then no current file exists yet.
    files = [p for p in (rotated, path) if p.exists()]
    items = [i for p in files for i in _lines(p)]
    longest = max(len(line) for p in files for line in p.read_bytes().splitlines(keepends=True))
    assert rotated.exists() and all(p.stat().st_size < cap + 2 * longest for p in files)
    assert {i["child"] for i in items} == {"a", "b"} or len(items) * longest >= cap  # rotated many times
    for tag in "ab":  # every line parsed (none torn); each writer's lines in order, none twice
        seqs = [i["seq"] for i in items if i["child"] == tag]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert any(i["seq"] == 1999 for i in items)  # the last line written is kept


def test_incidents_never_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    incidents.configure(path=str(tmp_path), metrics=False)  # a directory: cannot be written
    mod = _module(tmp_path, "def get(d, k):\n    return d[k]\n")
    with caplog.at_level("WARNING", logger="codesuture"):
        assert Healer(None).heal(_crash(lambda: mod.get({}, "k"))) is not None
        assert _data(mod.get, {}, "k") is None
        incidents.record("rollback", functions=0)
    assert sum("incidents not written" in r.getMessage() for r in caplog.records) == 1


def test_incident_settings_parse_strictly(tmp_path: Path) -> None:
    from codesuture import settings
    from codesuture.errors import ConfigError

    base = {"CODESUTURE_STATE_DIR": str(tmp_path / "state")}
    s = settings.load(environ=base, start_dir=str(tmp_path))
    assert (s.incidents, s.incidents_max_bytes, s.shadow, s.metrics) == (None, 10 * 1024 * 1024, False, True)
    s = settings.load(environ={**base, "CODESUTURE_INCIDENTS": " - ", "CODESUTURE_SHADOW": "on"}, start_dir=str(tmp_path))
    assert s.incidents == "-" and s.shadow is True
    for name, value in [("CODESUTURE_INCIDENTS", ""), ("CODESUTURE_SHADOW", "maybe"),
                        ("CODESUTURE_INCIDENTS_MAX_BYTES", "-1"), ("CODESUTURE_METRICS", "2")]:
        with pytest.raises(ConfigError, match=name):
            settings.load(environ={**base, name: value}, start_dir=str(tmp_path))
    (tmp_path / "codesuture.toml").write_text('incidents = "logs/incidents.jsonl"\nincidents_max_bytes = 1000\n')
    s = settings.load(environ=base, start_dir=str(tmp_path / "sub"))
    assert s.incidents == str(tmp_path / "logs" / "incidents.jsonl") and s.incidents_max_bytes == 1000
    env: dict[str, str] = {}
    s.export(env)
    assert env["CODESUTURE_INCIDENTS"] == s.incidents and env["CODESUTURE_SHADOW"] == "0"


def test_config_is_read_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.jsonl"
    monkeypatch.setenv("CODESUTURE_INCIDENTS", str(path))
    monkeypatch.setenv("CODESUTURE_METRICS", "0")
    incidents.configure()
    assert incidents.config().path == str(path) and incidents.config().metrics is False
    incidents.record("rollback", functions=0)
    assert _lines(path)[0]["kind"] == "rollback"
    monkeypatch.setenv("CODESUTURE_SHADOW", "maybe")
    incidents.configure()
    cfg = incidents.config()  # an invalid setting turns everything off, never the program
    assert cfg.path is None and cfg.metrics is False and cfg.shadow is False


# ------------------------------------------------------------------ fingerprints

_ORIGINAL = """
def get_name(user):
    name = user["name"]
    return name.strip()
"""
_MOVED = """
import os


class Repository:
    '''Somewhere else, under another name.'''

    def fetch_display_name(self, user):
        name = user["name"]
        return name.strip()
"""
_OTHER = """
def get_email(user):
    name = user["email"]
    return name.strip()
"""


def _site_fingerprint(exc: BaseException) -> str:
    from codesuture.crash.site import find_crash_site

    site = find_crash_site(exc)
    return incidents.fingerprint(site.code, site.offset)


def test_fingerprint_survives_rename_and_move(tmp_path: Path) -> None:
    a = _module(tmp_path, _ORIGINAL)
    b = _module(tmp_path, _MOVED)
    c = _module(tmp_path, _OTHER)
    fa = _site_fingerprint(_crash(lambda: a.get_name({})))
    fb = _site_fingerprint(_crash(lambda: b.Repository().fetch_display_name({})))
    fc = _site_fingerprint(_crash(lambda: c.get_email({})))
    assert fa and fa == fb and fc != fa
    # The window is the site's own: the same function crashing at its next line differs.
    fd = _site_fingerprint(_crash(lambda: a.get_name({"name": None})))
    assert fd and fd != fa


#: Sources whose crash sites compile to the same normalized window on 3.11, 3.12 and 3.13.
_PORTABLE = {
    "subscript": "def f(d, k):\n    v = d[k]\n    return v + 1\n",
    "attr": "def f(u):\n    return u.profile.name\n",
    "method": "def f(u):\n    return u.name.strip().lower()\n",
    "binop": "def f(a, b):\n    total = a + b\n    return total / 2\n",
    "call_kw": "def f(x):\n    return int(x, base=10)\n",
    "compare": "def f(a):\n    if a < 3:\n        return 1\n    return 2\n",
    "fstring": "def f(u):\n    return f'{u.name!r}:{u.age:>4}'\n",
    "loop": "def f(rows):\n    out = []\n    for r in rows:\n        out.append(r['id'])\n    return out\n",
    "len": "def f(d):\n    return len(d['items'])\n",
    "slice": "def f(s):\n    return s[1:3]\n",
    "short_circuit": "def f(a, b):\n    return a and b.x\n",
    "is_none": "def f(a, d):\n    if a is None:\n        return d['x']\n    return a.y\n",
    "augmented": "def f(d, k):\n    d[k] += 1\n    return d\n",
    "dict_literal": "def f(u):\n    return {'name': u.name, 'age': u['age']}\n",
    "closure": "def f(u):\n    def g():\n        return u.name\n    return g() + u.x\n",
    "keyword_method": "def f(s):\n    return s.split(sep=',', maxsplit=1)[0]\n",
}
_FINGERPRINTS = """
import dis, json, sys
from codesuture.runtime.incidents import fingerprint
OPS = {"BINARY_SUBSCR", "BINARY_SLICE", "LOAD_ATTR", "LOAD_METHOD", "BINARY_OP", "CALL", "CALL_KW", "COMPARE_OP"}
out = {}
for name, src in json.loads(sys.argv[1]).items():
    ns = {}
    exec(compile(src, "<case>", "exec"), ns)
    code = ns["f"].__code__
    out[name] = [fingerprint(code, i.offset) for i in dis.get_instructions(code) if i.opname in OPS]
print(json.dumps(out))
"""


def test_fingerprints_agree_across_python_versions() -> None:
    """Names that differ between versions (LOAD_METHOD, PRECALL, superinstructions,
    RETURN_CONST, KW_NAMES/CALL_KW, FORMAT_*, jump directions, 3.11's slices and short
    circuits, 3.13's END_FOR/POP_TOP) do not change a fingerprint. Not portable, by
    design of the compilers: comprehensions (a code object of their own on 3.11,
    inlined on 3.12+) and code next to a ``try`` whose exit 3.12+ duplicates."""
    pythons = {v: heal_helpers.python_for(v) for v in ("3.11", "3.12", "3.13")}
    found = {v: py for v, py in pythons.items() if py}
    if len(found) < 2:
        pytest.skip(f"needs two of Python 3.11/3.12/3.13 with codesuture installed; found {sorted(found) or 'none'}")
    results = {}
    for version, py in found.items():
        proc = heal_helpers.run([py, "-c", _FINGERPRINTS, json.dumps(_PORTABLE)], cwd=heal_helpers.REPO)
        assert proc.returncode == 0, str(proc)
        results[version] = json.loads(proc.stdout)
    first = next(iter(results.values()))
    assert all(len(v) >= 1 and all(v) for v in first.values())
    for version, got in results.items():
        assert got == first, f"fingerprints differ on {version}: " + ", ".join(
            k for k in first if got[k] != first[k])


# ------------------------------------------------------------------ registry


def test_a_known_fingerprint_reapplies_its_guard_without_diagnosis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    overlays, path = tmp_path / "overlays", tmp_path / "incidents.jsonl"
    incidents.configure(path=str(path), metrics=False)
    first = _module(tmp_path, _ORIGINAL, "regfirst")
    made = Healer(overlays).heal(_crash(lambda: first.get_name({"id": "7"})))
    assert made is not None and made.record.evidence["fingerprint"]
    # Another process (a fresh healer: the registry comes from the store) meets the same
    # code under another name in another module. No diagnosis may run.
    import codesuture.crash.diagnose as diagnose_module

    def no_diagnosis(*args: object) -> None:
        raise AssertionError("diagnosed although the fingerprint is known")

    monkeypatch.setattr(diagnose_module, "diagnose", no_diagnosis)
    second = _module(tmp_path, _MOVED, "regsecond")
    with caplog.at_level("INFO", logger="codesuture"):
        reused = Healer(overlays).heal(_crash(lambda: second.Repository().fetch_display_name({"id": "7"})))
    assert reused is not None, caplog.text
    assert reused.record.guard == made.record.guard and reused.record.qualname == "Repository.fetch_display_name"
    assert reused.record.evidence["fingerprint"] == made.record.evidence["fingerprint"]
    assert reused.record.evidence["registry"] == "regfirst:3 get_name"
    message = next(r.getMessage() for r in caplog.records if "is known" in r.getMessage())
    assert made.record.evidence["fingerprint"] in message and "regfirst:3 get_name" in message
    assert "without a new diagnosis" in message and "fetch_display_name" in message
    assert _data(second.Repository().fetch_display_name, {"id": "7"}) == ""  # the guard works here too
    heal = [i for i in _lines(path) if i["kind"] == "heal"][-1]
    assert heal["reused"] is True and heal["site"] == "regsecond:9 Repository.fetch_display_name"
    # The EAFP check still runs first: a caller that handles KeyError gets no patch.
    third = _module(tmp_path, _ORIGINAL.replace("get_name", "lookup") + textwrap.dedent("""
        def careful(user, box):
            try:
                return lookup(user)
            except KeyError as exc:
                box.append(exc)
    """), "regthird")
    box: list[BaseException] = []
    third.careful({}, box)
    assert Healer(overlays).heal(box[0]) is None
    assert [i for i in _lines(path) if i["kind"] == "refusal"][-1]["reason"] == "eafp"


def test_a_known_fingerprint_needs_the_same_kind_of_exception(tmp_path: Path) -> None:
    registry = incidents.Registry([])
    mod = _module(tmp_path, "def get(d, k):\n    return d[k]\n")
    made = Healer(None).heal(_crash(lambda: mod.get({}, "k")))
    assert made is not None
    registry.add(made.record)
    fp = made.record.evidence["fingerprint"]
    assert registry.lookup(fp, KeyError("k")) is made.record
    assert registry.lookup(fp, IndexError("list index out of range")) is None
    assert registry.lookup(fp, TypeError("'NoneType' object is not subscriptable")) is None
    assert registry.lookup("0" * 16, KeyError("k")) is None


# ------------------------------------------------------------------ no flapping


@pytest.fixture
def _fresh_rollbacks():
    """Rollbacks recorded in this process are this test's (another process starts empty)."""
    from codesuture.runtime import governance

    saved = dict(governance.FINGERPRINTS), set(governance.ROLLED_BACK)
    governance.FINGERPRINTS.clear()
    governance.ROLLED_BACK.clear()
    yield governance
    governance.FINGERPRINTS.clear()
    governance.FINGERPRINTS.update(saved[0])
    governance.ROLLED_BACK.clear()
    governance.ROLLED_BACK.update(saved[1])


def _store_records(directory: Path) -> list[Any]:
    return incidents.records_in(str(directory)) if directory.exists() else []


def test_a_patch_automatic_rollback_took_out_is_never_reapplied_from_the_registry(
        tmp_path: Path, _fresh_rollbacks: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Automatic rollback reverts a guard; the same code met again (here, and in another
    process under another name: the registry would know its fingerprint) is observed,
    not patched: the rolled-back record stays a candidate for review only."""
    governance = _fresh_rollbacks
    from codesuture.patch.synthesize import site_of

    overlays = tmp_path / "overlays"
    first = _module(tmp_path, _ORIGINAL, "flapfirst")
    healer = Healer(overlays)
    made = healer.heal(_crash(lambda: first.get_name({"id": "7"})))
    assert made is not None and _data(first.get_name, {"id": "7"}) == ""
    assert governance.revert_site(healer, site_of(made.record), 3)
    _crash(lambda: first.get_name({"id": "7"}))  # the original code runs again
    marked = [r for r in _store_records(tmp_path / "overlays.pending")
              if (r.evidence or {}).get("review") == "auto-rolled-back"]
    assert [r.qualname for r in marked] == ["get_name"]
    second = _module(tmp_path, _MOVED, "flapsecond")
    for fresh in (False, True):  # this process; another process (only the pending mark tells)
        if fresh:
            governance.FINGERPRINTS.clear()
            governance.ROLLED_BACK.clear()
        h = Healer(overlays) if fresh else healer
        with caplog.at_level("INFO", logger="codesuture"):
            assert h.heal(_crash(lambda: second.Repository().fetch_display_name({"id": "7"}))) is None, caplog.text
        assert "reapplying its guard" not in caplog.text and made.record.evidence["fingerprint"] in caplog.text
        _crash(lambda: second.Repository().fetch_display_name({"id": "7"}))  # still the original code
        caplog.clear()
    # The registry never offers a record marked as rolled back as a known fix.
    registry = incidents.Registry([str(tmp_path / "overlays.pending")])
    assert registry.lookup(made.record.evidence["fingerprint"], KeyError("name")) is None


def test_a_patch_codesuture_rollback_took_out_is_never_reapplied(tmp_path: Path, _fresh_rollbacks: Any) -> None:
    """``codesuture rollback`` takes a patch out of the store; a later crash at that site
    (or at a copy with its fingerprint), in a process with the same host state, is not
    patched again: no overlay comes back."""
    from codesuture.review.rollback import rollback

    overlays, state = tmp_path / "overlays", tmp_path / "state"
    first = _module(tmp_path, _ORIGINAL, "flaprb")
    made = Healer(overlays).heal(_crash(lambda: first.get_name({"id": "7"})))
    assert made is not None and _store_records(overlays)
    results = rollback(str(overlays), function="get_name", state_dir=str(state), app_root=str(tmp_path))
    assert results and results[0].deleted and not _store_records(overlays)
    from codesuture.trust.state import HostState

    assert made.record.evidence["fingerprint"] in HostState(str(state)).rolled_back(fresh=True)
    healer = Healer(overlays)
    healer.state_dir = str(state)
    moved = _module(tmp_path, _MOVED, "flaprbmoved")
    assert healer.heal(_crash(lambda: moved.Repository().fetch_display_name({"id": "7"}))) is None
    assert not _store_records(overlays)
    # Without that host state (another machine), the crash is healed as usual.
    assert Healer(overlays).heal(_crash(lambda: moved.Repository().fetch_display_name({"id": "7"}))) is not None


def test_a_patch_reverted_by_healer_rollback_is_not_reapplied(tmp_path: Path, _fresh_rollbacks: Any) -> None:
    mod = _module(tmp_path, _ORIGINAL, "flaplive")
    healer = Healer(tmp_path / "overlays")
    assert healer.heal(_crash(lambda: mod.get_name({}))) is not None
    assert healer.rollback() == 1
    assert healer.heal(_crash(lambda: mod.get_name({}))) is None
    _crash(lambda: mod.get_name({}))


# ------------------------------------------------------------------ the CLI


def _write(path: Path, items: list[dict[str, Any]], extra: str = "") -> None:
    path.write_bytes(b"".join(incidents.line(i) for i in items) + extra.encode())


def test_incidents_command_digest_json_and_since(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from codesuture.cli.group import cli

    old, now = "2025-01-01T00:00:00Z", iso_utc(time.time())

    def item(when: str, kind: str, site: str, fp: str = "", **fields: Any) -> dict[str, Any]:
        return {"time": when, "kind": kind, "fingerprint": fp, "site": site, "guard": fields.pop("guard", ""),
                "exception": "KeyError", "pid": fields.pop("pid", 1), **fields}

    path = tmp_path / "inc.jsonl"
    _write(Path(str(path) + ".1"), [item(old, "crash", "app.a:3 f", "aaaa")])
    _write(path, [
        item(old, "heal", "app.a:3 f", "aaaa", guard="key_guard", status="patched"),
        item(now, "crash", "app.b:9 g", "bbbb", pid=2),
        item(now, "refusal", "app.b:9 g", "bbbb", reason="eafp", pid=2),
        item(now, "guard_fired", "app.a:3 f", "aaaa", guard="key_guard", firings=40),
        item(now, "guard_fired", "app.c:7 h", "aaaa", guard="key_guard", firings=2),
        item(now, "rollback", "", functions=1),
    ], extra='not json\n["a list"]\n')
    runner = CliRunner()
    out = runner.invoke(cli, ["incidents", str(path)])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "7 incident(s) from 2025-01-01T00:00:00Z to" in text and "2 process(es)" in text
    assert "2 malformed line(s) skipped" in text
    assert "by kind: crash 2, guard_fired 2, heal 1, refusal 1, rollback 1" in text
    assert "refusals: eafp 1" in text
    sites = [line.split() for line in text.splitlines() if line.startswith("  ") and ":" in line and "(" in line]
    assert sites[0][:2] == ["42", "app.a:3"] and "fingerprint aaaa" in " ".join(sites[0])
    assert "aaaa  44 event(s) at 2 site(s) [key_guard]: app.a:3 f; app.c:7 h" in text
    out = runner.invoke(cli, ["incidents", "--json", str(path)])
    assert out.exit_code == 0
    listed = [json.loads(line) for line in out.stdout.splitlines()]
    assert [i["kind"] for i in listed] == ["crash", "heal", "crash", "refusal", "guard_fired", "guard_fired", "rollback"]
    for since in ("1h", "2025-06-01T00:00:00Z", "2025-06-01T00:00:00", "2025-06-01T02:00:00+02:00"):
        out = runner.invoke(cli, ["incidents", "--json", "--since", since, str(path)])
        assert out.exit_code == 0, (since, out.output)
        assert [i["time"] for i in map(json.loads, out.stdout.splitlines())] == [now] * 5, since
    out = runner.invoke(cli, ["incidents", "--since", "yesterday", str(path)])
    assert out.exit_code == 2 and "'yesterday' is neither an ISO 8601 time" in out.output
    out = runner.invoke(cli, ["incidents", str(tmp_path / "missing.jsonl")])
    assert out.exit_code == 1 and "missing.jsonl" in out.output


def test_parse_since_durations() -> None:
    from codesuture.review.incidents import parse_since

    assert parse_since("90s", now=1000.0) == 910.0
    assert parse_since("1h30m", now=10000.0) == 10000.0 - 5400
    assert parse_since("2d", now=200000.0) == 200000.0 - 172800
    assert parse_since("2025-01-01T00:00:00Z") == 1735689600.0
    with pytest.raises(ValueError):
        parse_since("5 minutes")


# ------------------------------------------------------------------ metrics


def _value(registry: Any, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_prometheus_counters(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import generate_latest

    from codesuture.runtime.metrics import registry

    incidents.configure(metrics=True)
    mod = _module(tmp_path, """
        def get(d, k):
            return d[k]

        def eafp(d, box):
            try:
                return get(d, "x")
            except KeyError as exc:
                box.append(exc)
    """)
    heals, rollbacks = _value(registry, "codesuture_heals_total"), _value(registry, "codesuture_rollbacks_total")
    eafp = _value(registry, "codesuture_refusals_total", reason="eafp")
    healer = Healer(None)
    assert healer.heal(_crash(lambda: mod.get({}, "k"))) is not None
    site = f"key_guard@{mod.__name__}:3"
    for _ in range(3):
        mod.get({}, "k")
    mod.get({"k": 1}, "k")  # healthy: not counted
    box: list[BaseException] = []
    mod.eafp({}, box)
    assert Healer(None).heal(box[0]) is None
    healer.rollback()
    assert _value(registry, "codesuture_heals_total") == heals + 1
    assert _value(registry, "codesuture_guard_firings_total", site=site) == 3
    assert _value(registry, "codesuture_refusals_total", reason="eafp") == eafp + 1
    assert _value(registry, "codesuture_rollbacks_total") == rollbacks + 1
    assert f'codesuture_guard_firings_total{{site="{site}"}} 3.0' in generate_latest(registry).decode()


def test_opentelemetry_span_events(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)
    incidents.configure(metrics=True)
    mod = _module(tmp_path, "def get(d, k):\n    return d[k]\n")
    with tracer.start_as_current_span("first request"):
        assert Healer(None).heal(_crash(lambda: mod.get({}, "k"))) is not None
        mod.get({}, "k")
        mod.get({}, "k")  # the same site again in this span: no second event
    with tracer.start_as_current_span("second request"):
        mod.get({}, "k")
        mod.get({"k": 1}, "k")
    mod.get({}, "k")  # no span: nothing to add to, nothing fails
    first, second = exporter.get_finished_spans()
    names = [e.name for e in first.events]
    assert names == ["codesuture.crash", "codesuture.heal", "codesuture.guard_fired"]
    heal = first.events[1].attributes
    assert heal["codesuture.guard"] == "key_guard" and heal["codesuture.status"] == "patched"
    assert heal["codesuture.site"] == f"{mod.__name__}:2 get" and len(heal["codesuture.fingerprint"]) == 16
    assert [e.name for e in second.events] == ["codesuture.guard_fired"]
    fired = second.events[0].attributes
    assert dict(fired) == {"codesuture.site": f"key_guard@{mod.__name__}:2"}


# ------------------------------------------------------------------ shadow mode

_SHADOWED = """
def get_name(user):
    return user["name"]


def display(user):
    name = get_name(user)
    return name.title()


def shout(user):
    print(user["name"])
    return "done"


def card(user):
    name = user["name"]
    return {"name": name, "id": user["id"]}


def tags(d):
    found = d["tags"]
    return found
"""


def _shadow_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("shadow:")]


def test_shadow_mode_names_the_function_and_its_caller(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "incidents.jsonl"
    incidents.configure(shadow=True, metrics=False, path=str(path))
    mod = _module(tmp_path, _SHADOWED)
    name = mod.__name__
    healer = Healer(None)
    for call in (lambda: mod.get_name({"id": "7"}), lambda: mod.shout({"id": "7"})):
        assert healer.heal(_crash(call)) is not None
    with caplog.at_level("WARNING", logger="codesuture"):
        assert _data(mod.display, {"id": "7"}) == ""
        assert _data(mod.display, {"id": "7"}) == ""  # rate-limited: one warning per site and caller
        assert _data(mod.shout, {"id": "7"}) == "done"  # the default went to print(), not back to the caller
        assert _data(mod.display, {"id": "7", "name": "ada"}) == "Ada"  # healthy
    assert sys.gettrace() is None and sys.getprofile() is None
    warnings = _shadow_warnings(caplog)
    assert warnings == [f"shadow: get_name ({name}:3) returned the default '' that its key_guard yielded, to its "
                        f"caller display ({name}:7); it may fail or mislead there"]
    (item,) = [i for i in _lines(path) if i["kind"] == "shadow"]
    assert item["site"] == f"{name}:3 get_name" and item["caller"] == f"display ({name}:7)" and item["value"] == "''"
    assert item["fingerprint"] == healer.history[0].record.evidence["fingerprint"]
    if sys.version_info >= (3, 12):  # nothing stays instrumented after the return
        tool = shadow._TOOL[0]
        assert tool is not None and sys.monitoring.get_local_events(tool, mod.get_name.__code__) == 0
        assert not shadow._PENDING


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python 3.11 has no sys.monitoring: shadow mode sees only "
                                                        "defaults that go straight into `return`")
def test_shadow_mode_sees_defaults_inside_returned_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    incidents.configure(shadow=True, metrics=False)
    mod = _module(tmp_path, _SHADOWED)
    healer = Healer(None)
    for call in (lambda: mod.card({"id": "7"}), lambda: mod.tags({"a": [1]})):
        assert healer.heal(_crash(call)) is not None
    with caplog.at_level("WARNING", logger="codesuture"):
        assert _data(mod.card, {"id": "7"}) == {"name": "", "id": "7"}
        fresh = _data(mod.tags, {"a": [1]})
    assert fresh == []
    warnings = _shadow_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert "card" in warnings[0] and "a value holding the default ''" in warnings[0]
    assert "tags" in warnings[1] and "returned the default []" in warnings[1]
    assert "_data" in warnings[1]  # the caller


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python 3.11 has no sys.monitoring: nothing is watched")
def test_shadow_mode_stops_watching_a_frame_that_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    incidents.configure(shadow=True, metrics=False)
    mod = _module(tmp_path, "def get(d, k, fail=False):\n    v = d[k]\n    if fail:\n        raise ValueError(v)\n"
                            "    return v\n")
    assert Healer(None).heal(_crash(lambda: mod.get({"a": 1}, "k"))) is not None
    with pytest.raises(ValueError):
        mod.get({"a": 1}, "k", fail=True)  # fired, then raised: never returns
    code = mod.get.__code__
    tool = shadow._TOOL[0]
    assert tool is not None and sys.monitoring.get_local_events(tool, code) != 0
    monkeypatch.setattr(shadow, "STALE", 0.0)
    assert _data(mod.get, {"a": 1}, "a") == 1  # the next return of that code forgets it
    assert sys.monitoring.get_local_events(tool, code) == 0 and code not in shadow._PENDING


def test_shadow_mode_through_boot(tmp_path: Path) -> None:
    script = heal_helpers.write(tmp_path / "app.py", _SHADOWED + '\nprint("RESULT", repr(display({"id": "7"})))\n')
    inc = tmp_path / "incidents.jsonl"
    proc = heal_helpers.run([sys.executable, "-m", "codesuture.boot", "--overlays", str(tmp_path / "overlays"),
                             "--shadow", "--incidents", str(inc), str(script)], cwd=tmp_path)
    assert proc.returncode == 0, str(proc)
    assert proc.results() == ["RESULT ''"]
    # heal_helpers.write drops the source's leading blank line: get_name's return is line 2
    assert "shadow: get_name (__main__:2) returned the default '' that its key_guard yielded, to its caller " \
           "display (__main__:6)" in proc.stderr, proc.stderr
    kinds = [i["kind"] for i in _lines(inc)]
    assert kinds == ["crash", "heal", "guard_fired", "shadow"], kinds


# ------------------------------------------------------------------ the firing's cost


def test_a_firing_does_not_cost_in_proportion_to_the_callers_code(tmp_path: Path) -> None:
    """The EAFP check on the live stack looks each caller's handlers up by code object:
    hashing a code object reads all of its bytecode, so a cache keyed by it made every
    firing under a large caller (a framework's dispatch function, a long script) cost
    microseconds per kilobyte of that caller's code."""
    mod = _module(tmp_path, "def get(d, k):\n    return d[k]\n")
    assert Healer(None).heal(_crash(lambda: mod.get({}, "k"))) is not None
    loop = "    for _ in range(n):\n        get(d, 'k')\n"
    body = "".join(f"    x{i} = d.get({i})\n" for i in range(6000))
    callers = _module(tmp_path, f"def small(get, d, n):\n{loop}\n\ndef big(get, d, n):\n{loop}{body}")
    assert len(callers.big.__code__.co_code) > 50_000

    def cost(fn: Callable[..., None]) -> float:
        runs = []
        for _ in range(7):
            t0 = time.perf_counter()
            fn(mod.get, {}, 200)
            runs.append((time.perf_counter() - t0) / 200)
        return sorted(runs)[3]

    cost(callers.small), cost(callers.big)  # warm the caches up
    small, big = cost(callers.small), cost(callers.big)
    assert big < 3 * small + 20e-6, f"a firing costs {small * 1e6:.1f} us under a small caller, {big * 1e6:.1f} us under a large one"
