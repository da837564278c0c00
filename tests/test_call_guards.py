"""Call-site guards, skipped stores on None, consumer-first defaults, cascades and
take-backs (docs/guards.md).

In process (a :class:`Healer`, the patched function called again) and through the real
``codesuture run`` CLI in a subprocess, then ``python -m codesuture.boot --no-heal``
from the overlay alone.

* call_guard: a structural exception raised *by* a call (C code, the standard library,
  a dunder reached from C) yields a typed default through a handler scoped to that one
  call; the same exception from evaluating the call's arguments, from patchable code
  below the call, or handled by a live caller still propagates;
* null_guard/store: ``obj.x = v``, ``obj[k] = v``, ``obj[a:b] = v``, ``del obj[k]``,
  ``del obj.x`` with obj None are skipped;
* consumer first: the next instruction decides the default (``user["name"].upper()``
  on ``{"id": 2}`` is ``''``, not ``0``);
* a cascade (``ord(s[0])`` on ``''``: an index guard, then a call guard) is one heal;
* a heal whose replay fails at once on the default it placed is taken back: the code
  is as before and nothing is written.
"""

from __future__ import annotations

import collections
import datetime
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from codesuture.runtime.healer import Healer
from heal_helpers import import_source
from heal_helpers import TAG, boot, heal, overlays_in, snapshot, write
from heal_helpers import as_data as _data

_COUNTER = iter(range(10**6))


def _module(tmp_path: Path, source: str) -> Any:
    return import_source(tmp_path, source, "cgcase")


@pytest.fixture
def healer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Healer:
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    return Healer(None)


def _heal(healer: Healer, call: Callable[[], object]) -> Any:
    with pytest.raises(Exception) as crash:
        call()
    result = healer.heal(crash.value)
    assert result is not None, f"not healed: {crash.value!r}"
    return result


class Lowered(dict):
    """A mapping of the program's own whose dunder reaches C: ``dict.__getitem__``."""

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(key.lower())


# (source of f, failing args, healthy args, guard/form, value when healed, healthy value)
CALLS = [
    ("def f(x):\n    return len(x)\n", (None,), ([1, 2],), "call_guard/call", 0, 2),
    ("def f(x):\n    return len(x) + 1\n", (None,), ([1],), "call_guard/call", 1, 2),
    ("def f(xs):\n    return sorted(xs)\n", ([3, None, 1],), ([2, 1],), "call_guard/call", [], [1, 2]),
    ("def f(xs):\n    return max(xs)\n", ([3, None],), ([2, 5],), "call_guard/call", None, 5),
    ("def f(xs):\n    return ', '.join(sorted(xs))\n", (["b", None],), (["b", "a"],), "call_guard/call", "", "a, b"),
    ("def f(s):\n    return ord(s)\n", ("",), ("a",), "call_guard/call", 0, 97),
    ("def f(s):\n    return int(s)\n", ("7" * 5000,), ("42",), "type_coercion_guard", 0, 42),
    ("def f(n):\n    return str(n)\n", (10 ** 5000,), (12,), "call_guard/call", "", "12"),
    ("def f(d):\n    return d['k']\n", (collections.UserDict(),), (collections.UserDict(k=1),),
     "call_guard/subscript", None, 1),
    ("def f(x):\n    return f'{len(x):>3}'\n", (None,), ("ab",), "call_guard/call", "  0", "  2"),
    # int()/float() of a string that is no number, called through a table of parsers (m3u8's
    # `atribute_parser[name](value)`): the conversion's zero, whatever names the callable.
    ("def f(parsers, k, s):\n    v = parsers[k](s)\n    return [k, v]\n", ({"n": int}, "n", "6.5"),
     ({"n": int}, "n", "42"), "call_guard/call", ["n", 0], ["n", 42]),
    ("def f(cast, s):\n    return cast(s)\n", (float, "abc"), (float, "2.5"), "call_guard/call", 0.0, 2.5),
]


@pytest.mark.parametrize(("source", "bad", "good", "guard", "value", "healthy"), CALLS)
def test_call_guard(healer: Healer, tmp_path: Path, source: str, bad: tuple[Any, ...], good: tuple[Any, ...],
                    guard: str, value: object, healthy: object) -> None:
    mod = _module(tmp_path, source)
    result = _heal(healer, lambda: mod.f(*bad))
    spec = result.record.guard
    assert spec.guard + (f"/{spec.form}" if spec.form else "") == guard
    got = _data(mod.f, *bad)
    assert got == value and type(got) is type(value)
    assert _data(mod.f, *good) == healthy  # the healthy path is the original call


def test_call_guard_in_a_dunder_of_a_dict_subclass(healer: Healer, tmp_path: Path) -> None:
    mod = _module(tmp_path, """
        class Lowered(dict):
            def __getitem__(self, key):
                return super().__getitem__(key.lower())

        def f(m, k):
            return m[k]
    """)
    result = _heal(healer, lambda: mod.f(mod.Lowered(a=1), "B"))
    assert (result.record.qualname, result.record.guard.guard) == ("Lowered.__getitem__", "call_guard")
    assert _data(mod.f, mod.Lowered(a=1), "B") is None
    assert _data(mod.f, mod.Lowered(a=1), "A") == 1


def test_the_handler_covers_only_the_call(healer: Healer, tmp_path: Path) -> None:
    """Not its arguments, not patchable code below it, not a caller's own handling."""
    mod = _module(tmp_path, """
        def f(x, g):
            return len(g(x))

        def sort(xs, key):
            return sorted(xs, key=key)

        def careful(x, g):
            try:
                return f(x, g)
            except TypeError:
                return "handled"
    """)
    _heal(healer, lambda: mod.f(None, lambda v: v))
    assert _data(mod.f, None, lambda v: v) == 0
    with pytest.raises(TypeError, match="descriptor 'strip'"):
        mod.f(None, str.strip)  # raised by the argument's own call
    assert mod.careful(None, lambda v: v) == "handled"  # EAFP on the live stack
    _heal(healer, lambda: mod.sort([1, None], None))
    assert _data(mod.sort, [1, None], None) == []

    def bad_key(v: int) -> int:
        return v + None  # type: ignore[operator]  # a bug in patchable code below the call

    with pytest.raises(TypeError, match="unsupported operand"):
        mod.sort([1, 2], bad_key)


@pytest.mark.parametrize("signature_bug", [
    "def f(x):\n    return len(x, 2)\n",
    "def f(x):\n    return int(x, bass=2)\n",
    "def g(a):\n    return a\n\ndef f(x):\n    return g(x, 1)\n",
])
def test_a_call_with_the_wrong_arguments_is_not_guarded(healer: Healer, tmp_path: Path, signature_bug: str) -> None:
    mod = _module(tmp_path, signature_bug)
    with pytest.raises(TypeError) as crash:
        mod.f("1")
    assert healer.heal(crash.value) is None and healer.history == []


@pytest.mark.parametrize(("source", "bad"), [
    # A ValueError that is no conversion's (the program's date format, not a number)...
    ("import datetime\n\ndef f(parsers, s):\n    return parsers['d'](s)\n",
     ({"d": datetime.date.fromisoformat}, "tomorrow")),
    # ...or a subclass the standard library defines: its own error, never guarded.
    ("import json\n\ndef f(parsers, s):\n    return parsers['j'](s)\n", ({"j": json.loads}, "{")),
])
def test_other_value_errors_of_a_call_are_not_guarded(healer: Healer, tmp_path: Path, source: str,
                                                       bad: tuple[Any, ...]) -> None:
    mod = _module(tmp_path, source)
    with pytest.raises(ValueError) as crash:
        mod.f(*bad)
    assert healer.heal(crash.value) is None and healer.history == []


def test_a_conversion_guard_lets_other_value_errors_of_the_same_call_through(healer: Healer, tmp_path: Path) -> None:
    """The guard placed for int()'s ValueError yields only for a conversion's: another
    callable at the same site raising another ValueError still raises it."""
    mod = _module(tmp_path, "def f(parsers, k, s):\n    return parsers[k](s)\n")
    parsers = {"n": int, "d": datetime.date.fromisoformat}
    _heal(healer, lambda: mod.f(parsers, "n", "x1"))
    assert _data(mod.f, parsers, "n", "x1") == 0
    with pytest.raises(ValueError, match="isoformat"):
        mod.f(parsers, "d", "tomorrow")


class Box(dict):
    x = 0


@pytest.mark.parametrize(("source", "real", "stored"), [
    ("def f(o):\n    o.x = 1\n    return 'done'\n", Box, lambda o: vars(o) == {"x": 1}),
    ("def f(o):\n    o['k'] = 1\n    return 'done'\n", Box, lambda o: o == {"k": 1}),
    ("def f(o):\n    o[1:2] = [3]\n    return 'done'\n", lambda: [0, 1, 2], lambda o: o == [0, 3, 2]),
    ("def f(o):\n    del o['k']\n    return 'done'\n", lambda: Box(k=0), lambda o: o == {}),
    ("def f(o):\n    del o.x\n    return 'done'\n", lambda: _with_x(Box()), lambda o: vars(o) == {}),
])
def test_a_store_on_none_is_skipped(healer: Healer, tmp_path: Path, source: str, real: Callable[[], Any],
                                    stored: Callable[[Any], bool]) -> None:
    mod = _module(tmp_path, source)
    result = _heal(healer, lambda: mod.f(None))
    assert (result.record.guard.guard, result.record.guard.form) == ("null_guard", "store")
    assert mod.f(None) == "done"
    obj = real()
    assert mod.f(obj) == "done" and stored(obj)  # a real object still gets the store


def _with_x(box: Box) -> Box:
    box.x = 5
    return box


@pytest.mark.parametrize(("source", "args", "value"), [
    ("def f(user):\n    return user['name'].upper()\n", ({"id": 2},), ""),  # not 0 from the other value
    ("def f(d):\n    return dict(d['opts'].items())\n", ({"a": 1},), {}),
    ("def f(d, k):\n    return f'{d[k]:.1f}'\n", ({"a": 2.5}, "b"), "0.0"),
    ("def f(d, k):\n    return f'{d[k]:>4d}'\n", ({"a": "x"}, "b"), "   0"),
    ("def f(d, k):\n    return d[k] - 1\n", ({}, "k"), -1),
    ("def f(d, k):\n    return 'id-' + d[k]\n", ({"a": 1}, "b"), "id-"),
    ("def f(d, k):\n    name = d[k]\n    return name.strip()\n", ({"a": 1}, "b"), ""),  # followed through a local
    ("def f(d, k):\n    return [x for x in d[k]]\n", ({"a": 1}, "b"), []),
    ("def f(d, k):\n    return d[k]\n", ({"a": "x"}, "b"), ""),  # no consumer: the container's one type
    ("def f(d, k):\n    return d[k]\n", ({"a": "x", "b2": 1}, "b"), None),  # mixed: None
])
def test_consumer_first_defaults(healer: Healer, tmp_path: Path, source: str, args: tuple[Any, ...],
                                 value: object) -> None:
    mod = _module(tmp_path, source)
    _heal(healer, lambda: mod.f(*args))
    got = _data(mod.f, *args)
    assert got == value and type(got) is type(value)


def _run_until_done(healer: Healer, call: Callable[[], object], limit: int = 4) -> object:
    """What a boundary does: heal and replay while heals make progress."""
    for _ in range(limit):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - the boundary
            if healer.heal(exc) is None:
                raise
    raise AssertionError("too many replays")


def test_a_cascade_is_one_heal(healer: Healer, tmp_path: Path) -> None:
    mod = _module(tmp_path, "def f(s):\n    return ord(s[0])\n")
    assert _run_until_done(healer, lambda: _data(mod.f, "")) == 0
    assert [(r.record.guard.guard, r.cascade) for r in healer.history] == [("list_bound_guard", 0), ("call_guard", 1)]
    assert healer.patches == 1
    assert _data(mod.f, "b") == 98


def test_a_default_that_fails_at_once_is_taken_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    store = tmp_path / "overlays"
    healer = Healer(store)
    mod = _module(tmp_path, "def f(d, k):\n    return d[k].frobnicate()\n")
    code = mod.f.__code__
    with pytest.raises(AttributeError, match="'int' object has no attribute 'frobnicate'"):
        _run_until_done(healer, lambda: mod.f({"a": 1}, "b"))
    assert mod.f.__code__ is code  # the code is as before
    with pytest.raises(KeyError):
        mod.f({"a": 1}, "b")
    assert healer.history == [] and healer.patches == 0
    assert not store.exists() or not any(store.iterdir())  # nothing written
    with pytest.raises(KeyError) as again:
        mod.f({"a": 1}, "b")
    assert healer.heal(again.value) is None  # never healed again in this process


def test_take_back_keeps_the_store_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module whose overlay already had a patch: the take-back restores it byte for byte."""
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    store = tmp_path / "overlays"
    healer = Healer(store)
    mod = _module(tmp_path, """
        def first(x):
            return x.name

        def second(d, k):
            return d[k].frobnicate()
    """)
    assert _run_until_done(healer, lambda: _data(mod.first, None)) is None
    before = snapshot(store)
    assert len(overlays_in(store)) == 1
    with pytest.raises(AttributeError):
        _run_until_done(healer, lambda: mod.second({"a": 1}, "b"))
    assert snapshot(store) == before
    assert _data(mod.first, None) is None  # the earlier patch stays


# ------------------------------------------------------------------ through the CLI

CLI_SCRIPT = '''
import collections

class Lowered(dict):
    def __getitem__(self, key):
        return super().__getitem__(key.lower())

def size(x):
    return len(x)

def ranked(xs):
    return sorted(xs)

def first_code(s):
    return ord(s[0])

def shout(user):
    return user["name"].upper()

def tag(m):
    return m["MISSING"]

def forget(session):
    session.user = "x"
    session["k"] = 1
    return "kept going"

print("RESULT", size(None), ranked([2, None]), first_code(""), repr(shout({"id": 2})), tag(Lowered(a=1)),
      forget(None))
'''


def test_cli_heals_calls_and_stores_and_boot_reloads(tmp_path: Path) -> None:
    script = write(tmp_path / "app" / "calls.py", CLI_SCRIPT)
    overlays = tmp_path / "overlays"
    healed = heal(script, overlays)
    assert healed.returncode == 0, str(healed)
    assert healed.results() == ["RESULT 0 [] 0 '' None kept going"], str(healed)
    lines = healed.stderr.splitlines()
    # One run of a script is one unit of work: every guard its replays needed is one heal.
    guards = [line for line in lines if line.startswith("codesuture: WARNING patched ")]
    patched = [line for line in guards if "of the heal of" not in line]
    assert len(patched) == 1 and "call_guard/call on `len(x)` -> yields 0" in patched[0], str(healed)
    more = [line for line in guards if "of the heal of" in line]
    for expected in ("call_guard/call on `sorted(xs)` -> yields []", "list_bound_guard on `s[0]`",
                     "call_guard/call on `ord(s[0])` -> yields 0", "key_guard on `user[\"name\"]` -> yields ''",
                     "Lowered.__getitem__: call_guard/call on `super().__getitem__(key.lower())`",
                     "null_guard/store on `session.user`", "null_guard/store on `session[\"k\"]`"):
        assert sum(expected in line for line in more) == 1, (expected, str(healed))
    assert "codesuture: session: 1 patch applied (8 guards)" in healed.stderr, str(healed)
    assert len(overlays_in(overlays)) == 1 and overlays_in(overlays)[0].endswith(".overlay")
    assert overlays_in(overlays)[0].split(".")[2] == TAG
    before = snapshot(overlays)
    booted = boot(script, overlays)
    assert booted.returncode == 0 and booted.results() == healed.results(), str(booted)
    assert "patched" not in booted.stderr
    assert snapshot(overlays) == before


def test_cli_take_back_writes_nothing(tmp_path: Path) -> None:
    script = write(tmp_path / "app" / "frob.py", 'counts = {"a": 1}\nprint("RESULT", counts["b"].frobnicate())\n')
    overlays = tmp_path / "overlays"
    healed = heal(script, overlays)
    assert healed.returncode == 1, str(healed)
    assert "took back the patch" in healed.stderr and "nothing written" in healed.stderr, str(healed)
    assert "AttributeError: 'int' object has no attribute 'frobnicate'" in healed.stderr
    assert overlays_in(overlays) == [] and (not overlays.exists() or not any(overlays.iterdir()))
    assert "patch applied" not in healed.stderr  # the session summary counts no patch
