"""A guard's value returned to its callers: consumer first across the return, and a
take-back when the replay fails on it one or more frames up (docs/guards.md, "Typed
defaults" and "Taken back").

Through the real ``codesuture run`` CLI in a subprocess (the replay runs in a fresh
process), then ``python -m codesuture.boot --no-heal`` from the overlay alone, and in
process with a :class:`Healer`:

* a default that is returned unchanged (``return d[k]``) takes its type from the
  instruction of the caller that consumes the call's result: a comparison or arithmetic
  with a constant -> that constant's zero, a method -> the empty value of a type that
  has it, iteration/``len``/unpacking -> ``()``, ``str`` concatenation/formatting ->
  ``''``; through a caller that returns it on unchanged too, and each call site gets
  its own;
* where no consumer tells the type, the guard's own rule stands, and when the replay
  then fails at once on that value in a caller (a comparison, arithmetic, a method,
  iteration, unpacking; one or more frames up) the heal is taken back: the run ends
  with the program's own exit status and nothing is written to the store;
* the value-flow verdict is unchanged: a caller that decides with the value still makes
  the guard decline.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from codesuture.runtime.healer import Healer
from heal_helpers import crash_of, import_source
from heal_helpers import boot, heal, overlays_in, plain, write
from heal_helpers import as_data as _data

_COUNTER = iter(range(10**6))

# ------------------------------------------------------------------ take-back, CLI

TAKE_BACK = {
    # a comparison with a local whose type the code does not show
    "compare": ('''
        def level(u):
            return u["level"]
        def app(u, lim):
            allowed = ["read"]
            if level(u) >= lim:
                allowed = allowed + ["write"]
            print("perms", allowed)
        app({"name": "x"}, 0)
    ''', "TypeError: '>=' not supported between instances of 'str' and 'int'"),
    # arithmetic two frames up (returned on unchanged by `get`)
    "add-two-up": ('''
        def level(u):
            return u["level"]
        def get(u):
            return level(u)
        def app(u, bonus):
            total = get(u) + bonus
            print("total", total)
        app({"name": "x"}, 1)
    ''', 'TypeError: can only concatenate str (not "int") to str'),
    # unpacking: the consumer's () cannot fill two names
    "unpack": ('''
        def pair(u):
            return u["pair"]
        def app(u):
            a, b = pair(u)
            print("pair", a, b)
        app({"name": "x"})
    ''', "ValueError: not enough values to unpack (expected 2, got 0)"),
    # iteration the consumer analysis does not see (two locals), three frames up
    "iterate": ('''
        def count(u):
            return u["n"]
        def fetch(u):
            return count(u)
        def outer(u):
            return fetch(u)
        def app(u):
            n = outer(u)
            m = n
            for i in m:
                print(i)
            print("done")
        app({"a": 1})
    ''', "TypeError: 'int' object is not iterable"),
    # a method no built-in type has
    "method": ('''
        def name(u):
            return u["name"]
        def app(u):
            print(name(u).frobnicate())
        app({"id": "x"})
    ''', "AttributeError: 'str' object has no attribute 'frobnicate'"),
    # a call guard's default (len of None -> 0), iterated in the caller
    "call-guard": ('''
        def size(x):
            return len(x)
        def app(x):
            n = size(x)
            k = n
            for i in k:
                print(i)
        app(None)
    ''', "TypeError: 'int' object is not iterable"),
}


@pytest.mark.parametrize("shape", sorted(TAKE_BACK))
def test_cli_takes_back_a_default_that_fails_in_a_caller(tmp_path: Path, shape: str) -> None:
    source, error = TAKE_BACK[shape]
    script = write(tmp_path / "app" / "main.py", textwrap.dedent(source))
    overlays = tmp_path / "overlays"
    crashed = plain(script)
    assert crashed.returncode == 1, str(crashed)
    healed = heal(script, overlays)
    assert healed.returncode == crashed.returncode, str(healed)  # the program's own exit status
    assert "codesuture: WARNING patched " in healed.stderr, str(healed)  # healed, replayed...
    assert "took back the patch" in healed.stderr and "nothing written" in healed.stderr, str(healed)
    assert error in healed.stderr, str(healed)  # ...and the replay failed on the default
    assert "patch applied" not in healed.stderr and "0 patches applied" in healed.stderr, str(healed)
    assert overlays_in(overlays) == [] and (not overlays.exists() or not any(overlays.iterdir())), str(healed)


# ------------------------------------------------------------------ consumer first, CLI

SHAPES = '''
PROFILE = {"name": "ann", "tags": ("a", "b"), "age": 7}

def field(key):
    return PROFILE[key]

def via(key):
    return field(key)

def stored(key):
    v = PROFILE[key]
    return v

def bumps(key):
    score = 1
    if field(key) >= 18:
        score += 1
    return score

def shout(key):
    return field(key).upper()

def size(key):
    return len(field(key))

def walk(key):
    out = []
    for t in field(key):
        out.append(t)
    return out

def split(key):
    head, *rest = field(key)
    return rest

def greet(key):
    return "hi " + field(key)

def fmt(key):
    return f"<{field(key)}>"

def plus(key):
    return via(key) + 1

def ratio(key):
    n = stored(key)
    return n / 4

print("RESULT", bumps("level"), repr(shout("nick")), size("roles"), walk("groups"), repr(greet("title")),
      repr(fmt("motto")), plus("rank"), ratio("weight"), PROFILE["name"])
'''


def test_cli_consumer_first_across_the_return_and_boot_reloads(tmp_path: Path) -> None:
    """A mapping of mixed value types (str, tuple, int): its elements tell no type, each
    caller's consumer does, per call site, when the guard fires."""
    script = write(tmp_path / "app" / "shapes.py", SHAPES)
    overlays = tmp_path / "overlays"
    healed = heal(script, overlays)
    assert healed.returncode == 0, str(healed)
    assert healed.results() == ["RESULT 1 '' 0 [] 'hi ' '<>' 1 0.0 ann"], str(healed)
    patched = [line for line in healed.stderr.splitlines() if line.startswith("codesuture: WARNING patched ")]
    assert patched and all("what the caller's consumer needs, else the empty value from container elements" in line
                           for line in patched), str(healed)
    assert "took back" not in healed.stderr
    assert len(overlays_in(overlays)) == 1
    booted = boot(script, overlays)
    assert booted.returncode == 0 and booted.results() == healed.results(), str(booted)
    assert "patched" not in booted.stderr


def test_cli_unpacking_in_the_caller_is_taken_back_not_filled(tmp_path: Path) -> None:
    """`head, *rest = f(k)` needs at least one item: the consumer's () fails at once in
    the caller, so the heal is taken back (nothing invents items)."""
    script = write(tmp_path / "app" / "heads.py", textwrap.dedent('''
        ROWS = {"a": ("x", "y")}
        def row(k):
            return ROWS[k]
        def head(k):
            first, *rest = row(k)
            return first
        print("RESULT", head("b"))
    '''))
    overlays = tmp_path / "overlays"
    healed = heal(script, overlays)
    assert healed.returncode == 1, str(healed)
    assert "took back the patch" in healed.stderr and "got 0" in healed.stderr, str(healed)
    assert overlays_in(overlays) == []


# ------------------------------------------------------------------ in process


def _module(tmp_path: Path, source: str) -> Any:
    return import_source(tmp_path, source, "tbcase")


@pytest.fixture
def healer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Healer:
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    return Healer(None)


def _crash(call: Any) -> BaseException:
    return crash_of(call)


def test_one_guard_gives_each_caller_what_it_needs(healer: Healer, tmp_path: Path) -> None:
    mod = _module(tmp_path, """
        CONF = {"a": 1, "b": "x"}
        def get(k):
            return CONF[k]
        def number(k):
            return get(k) * 2 + 1
        def text(k):
            return get(k).strip()
        def many(k):
            return sorted(get(k))
        def loose(k):
            box = [get(k)]
            return box
    """)
    assert healer.heal(_crash(lambda: mod.number("z"))) is not None
    record = healer.history[-1].record
    assert record.guard.flow.startswith("return:value;asis") and record.guard.default == "None"
    assert record.evidence["default"] == "caller's consumer, then container elements"
    assert "caller's consumer" in record.evidence["flow"]
    assert _data(mod.number, "z") == 1
    assert _data(mod.text, "z") == ""
    assert _data(mod.many, "z") == []
    assert _data(mod.loose, "z") == [None]  # stored: no consumer, mixed elements: None
    assert _data(mod.number, "a") == 3 and _data(mod.text, "b") == "x"  # the healthy path


def test_own_consumer_still_comes_first(healer: Healer, tmp_path: Path) -> None:
    """Not returned unchanged: the guarded frame's own consumer decides (no ';asis')."""
    mod = _module(tmp_path, """
        CONF = {"a": "x"}
        def get(k):
            return len(CONF[k])
        def cmp(k):
            bumps = 0
            if CONF[k] >= 10:
                bumps += 1
            return bumps
    """)
    assert healer.heal(_crash(lambda: mod.get("z"))) is not None
    assert ";asis" not in healer.history[-1].record.guard.flow
    assert _data(mod.get, "z") == 0
    # a comparison with a constant: that constant's zero, not the elements' ''
    assert healer.heal(_crash(lambda: mod.cmp("z"))) is not None
    assert healer.history[-1].record.guard.default == "0"
    assert _data(mod.cmp, "z") == 0


def test_a_caller_that_decides_still_makes_the_guard_decline(healer: Healer, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """The consumer-typed default changes no verdict: `if level(u) >= 3: return 403`
    (sides that leave the function separately) declines, whatever the default."""
    mod = _module(tmp_path, """
        LEVELS = {"root": 9}
        def level(u):
            return LEVELS[u]
        def page(u):
            return "level %s" % level(u)
        def gate(u):
            if level(u) >= 3:
                return 200
            return 403
    """)
    assert healer.heal(_crash(lambda: mod.gate("eve"))) is None  # refused at heal time
    assert healer.heal(_crash(lambda: mod.page("eve"))) is not None
    assert healer.history[-1].record.guard.flow.startswith("return:value;asis")
    assert _data(mod.page, "eve") == "level 0"  # `"%s" % v` says nothing: the elements, int
    with caplog.at_level("WARNING", logger="codesuture"):
        with pytest.raises(KeyError):
            mod.gate("eve")  # the guard declines under the gate: the original exception
    assert any("declined" in r.getMessage() for r in caplog.records)
    assert mod.gate("root") == 200


def test_the_callers_table_names_the_diagnosis_marker() -> None:
    """runtime/callers.py keeps its own copy of the marker so that reading a cached
    answer imports no diagnosis module."""
    from codesuture.crash.diagnose import RETURNED
    from codesuture.runtime import callers

    assert callers._RETURNED == RETURNED
