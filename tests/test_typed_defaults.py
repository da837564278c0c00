"""Typed defaults, the EAFP check on live frames and the control-flow refusal, in process.

* Every rule of the typed-default table (``docs/guards.md``): the pure functions
  (:func:`codesuture.runtime.events.typed_default`, ``method_default``), the evidence
  name recorded per guard kind (:func:`codesuture.guards.families.default_rule`), and
  each rule end to end: a crash healed live by a :class:`Healer`, then the patched
  function called again yields the value the rule picks, and the record says which
  evidence chose it.
* EAFP at run time: once a callee is patched, a caller that handles the original
  exception (``try: lookup(...) except KeyError``, a base class, a handler two frames
  up) still gets the exception; a caller without a handler gets the default.
* Control flow: a guard whose default would decide a branch whose sides leave the
  function separately is not placed (the crash is reported, the code is unchanged, a
  proposal is written for review); ``control_flow`` patterns allow it per module;
  membership on a missing collection is healed where the decision only shapes data.
  The whole value-flow policy is ``tests/test_value_flow.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from heal_helpers import import_source
from heal_helpers import as_data as _data

from codesuture.guards.families import default_rule
from codesuture.patch.spec import GuardSpec
from codesuture.runtime import events
from codesuture.runtime.healer import Healer

# ------------------------------------------------------------------ the pure rules


@pytest.mark.parametrize(("rule", "static", "evidence", "value", "why"), [
    ("container", "None", (["a", "b"],), "", "container of str"),
    ("container", "None", ({"x": 1, "y": 2},), 0, "container of int"),
    ("container", "None", ({"x": [1], "y": []},), [], "container of list"),
    ("container", "None", ([1.5],), 0.0, "container of float"),
    ("container", "None", ("text",), "", "container of str"),
    ("container", "None", ([1, "a"],), None, "none known"),  # mixed: nothing is known
    ("container", "None", ([],), None, "none known"),  # empty: nothing to sample
    ("container", "None", ([object()],), None, "none known"),  # no empty value for the type
    ("container", "()", (["a"],), (), "consumer"),  # the consumer (len, iteration) knew better
    ("binop:+:left", "None", (1,), 1, "operand int"),  # None + 1 -> 0 + 1
    ("binop:+:left", "None", ("a",), "a", "operand str"),  # None + 'a' -> '' + 'a'
    ("binop:-:left", "None", (2.5,), -2.5, "operand float"),
    ("binop:+:right", "None", ("x",), "x", "operand str"),  # 'x' + None -> 'x' + ''
    ("binop:*:right", "None", (5,), 5, "operand int"),  # 5 * None -> 5 * 1
    ("binop:+=:right", "None", ([1],), [1], "operand list"),  # augmented assignment
    ("binop:+:left", "None", (None,), None, "none known"),
    ("binop:+:left", "None", (object(),), None, "none known"),
    ("static", "None", ("anything",), None, "none known"),
    ("static", "0", (), 0, "consumer"),
])
def test_typed_default_rules(rule: str, static: str, evidence: tuple[object, ...], value: object, why: str) -> None:
    got, decided = events.typed_default(rule, static, evidence)
    assert (got, type(got), decided) == (value, type(value), why)


@pytest.mark.parametrize(("name", "args", "kwargs", "value"), [
    ("strip", (), {}, ""),
    ("replace", ("a", "b"), {}, ""),
    ("split", (), {}, []),
    ("startswith", ("x",), {}, False),
    ("get", ("k",), {}, None),
    ("get", ("k", 5), {}, 5),  # dict semantics: the caller's default
    ("items", (), {}, {}.items()),
    ("append", (1,), {}, None),
    ("add", (1,), {}, None),
    ("popitem", (), {}, None),  # {}.popitem() raises: the static value
    ("remove", (1,), {}, None),  # [].remove(1) raises: the static value
    ("frobnicate", (), {}, None),  # a method of no known type
])
def test_method_default_rules(name: str, args: tuple[object, ...], kwargs: dict[str, object], value: object) -> None:
    got = events.method_default("site", name, "None", args, kwargs)
    assert got == value and type(got) is type(value)


def test_method_default_static_wins() -> None:
    assert events.method_default("site", "strip", "()", (), {}) == ()


@pytest.mark.parametrize(("spec", "rule"), [
    (GuardSpec("file_guard", "", "io.StringIO()"), "fixed"),
    (GuardSpec("type_coercion_guard", "", "0"), "fixed"),
    (GuardSpec("str_coerce_guard", "", "''"), "fixed"),
    (GuardSpec("callable_guard", "", "None"), "fixed"),
    (GuardSpec("key_guard", "", "()"), "consumer"),
    (GuardSpec("key_guard", "", "None"), "container elements"),
    (GuardSpec("index_guard", "", "None"), "container elements"),
    (GuardSpec("null_guard", "operator", "None"), "other operand"),
    (GuardSpec("null_guard", "compare", "None"), "other operand"),
    (GuardSpec("null_guard", "method", "None"), "method name"),
    (GuardSpec("null_guard", "attr", "None"), "none known"),
    (GuardSpec("division_guard", "", "0.0"), "consumer"),
])
def test_default_rule_names_the_evidence(spec: GuardSpec, rule: str) -> None:
    assert default_rule(spec) == rule


# ------------------------------------------------------------------ end to end, in process

_COUNTER = iter(range(10**6))


def _module(tmp_path: Path, source: str) -> Any:
    return import_source(tmp_path, source, "tdcase")


@pytest.fixture
def healer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Healer:
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    return Healer(None)


CALLER = "caller's consumer, then "


def _heal(healer: Healer, call: Callable[[], object]) -> Any:
    with pytest.raises(Exception) as crash:
        call()
    result = healer.heal(crash.value)
    assert result is not None, f"not healed: {crash.value!r}"
    return result


@pytest.mark.parametrize(("source", "args", "value", "rule"), [
    # container elements: a list of str gives '', a mapping of ints 0, of lists []; the
    # value is returned unchanged, so the caller's consumer comes first (here it stores
    # the value: it says nothing)
    ("def f(rows, i):\n    return rows[i]\n", (["a", "b"], 5), "", CALLER + "container elements"),
    ("def f(d, k):\n    return d[k]\n", ({"a": 1}, "b"), 0, CALLER + "container elements"),
    ("def f(d, k):\n    return d[k]\n", ({"a": [1]}, "b"), [], CALLER + "container elements"),
    ("def f(d, k):\n    return d[k]\n", ({"a": 1, "b": "x"}, "c"), None, CALLER + "container elements"),
    # the consumer: len() of a missing entry is len(())
    ("def f(d, k):\n    return len(d[k])\n", ({"a": [1]}, "b"), 0, "consumer"),
    ("def f(d, k):\n    return [x for x in d[k]]\n", ({"a": [1]}, "b"), [], "consumer"),
    # the method called on None
    ("def f(s):\n    return s.strip()\n", (None,), "", "method name"),
    ("def f(s):\n    return s.replace('a', 'b')\n", (None,), "", "method name"),
    ("def f(cfg):\n    return cfg.get('a', 5)\n", (None,), 5, "method name"),
    ("def f(xs):\n    return xs.append(1)\n", (None,), None, "method name"),
    # the other operand
    ("def f(x):\n    return x + 1\n", (None,), 1, "other operand"),
    ("def f(x):\n    return 'a' + x\n", (None,), "a", "other operand"),  # 'a' + ''
    ("def f(x):\n    return [1] + x\n", (None,), [1], "other operand"),
    ("def f(x):\n    return 'n=' + x\n", (1,), "n=1", "fixed"),  # str + int: str_coerce_guard
    ("def f(x):\n    return x - 2.5\n", (None,), -2.5, "other operand"),
    ("def f(x):\n    return 3 * x\n", (None,), 3, "other operand"),
    # fixed values
    ("def f(s):\n    return int(s)\n", ("abc",), 0, "fixed"),
    ("def f(s):\n    return float(s)\n", (None,), 0.0, "fixed"),
    # nothing known: an attribute of None
    ("def f(node):\n    return node.kind\n", (None,), None, "caller's consumer"),
])
def test_each_rule_end_to_end(healer: Healer, tmp_path: Path, source: str, args: tuple[object, ...], value: object,
                              rule: str) -> None:
    mod = _module(tmp_path, source)
    result = _heal(healer, lambda: mod.f(*args))
    assert result.record.evidence["default"] == rule  # beside it: the site's "fingerprint" (test_incidents.py)
    got = _data(mod.f, *args)
    assert got == value and type(got) is type(value)


def test_the_value_is_decided_when_the_guard_fires(healer: Healer, tmp_path: Path) -> None:
    """One patch, many types: the default follows each call's own container."""
    mod = _module(tmp_path, "def f(d, k):\n    return d[k]\n")
    _heal(healer, lambda: mod.f({"a": 1}, "b"))
    assert _data(mod.f, {"a": "x"}, "b") == ""
    assert _data(mod.f, {"a": (1,)}, "b") == ()
    assert _data(mod.f, {"a": 1.0}, "b") == 0.0
    assert _data(mod.f, {"a": 7}, "a") == 7  # the healthy path is the original code


def test_an_attribute_chain_is_one_patch(healer: Healer, tmp_path: Path) -> None:
    mod = _module(tmp_path, "def f(node):\n    return node.kind.name\n")

    class Node:
        kind = None

    result = _heal(healer, lambda: mod.f(None))  # the first link fails...
    assert result.record.guard.form == "attr" and result.record.guard.links == 2
    assert _data(mod.f, Node()) is None and _data(mod.f, None) is None  # ...and any later link None is covered
    assert len(healer.history) == 1


def test_none_cascade_arithmetic_then_int(healer: Healer, tmp_path: Path) -> None:
    mod = _module(tmp_path, "def f(d):\n    n = d.get('n')\n    return int(n) + 1\n")
    _heal(healer, lambda: mod.f({}))
    assert _data(mod.f, {}) == 1 and _data(mod.f, {"n": "4"}) == 5


# ------------------------------------------------------------------ EAFP on live frames

EAFP_SRC = """
def lookup(d, k):
    return d[k]

def handled(d, k):
    try:
        return lookup(d, k)
    except KeyError:
        return "handled"

def handled_by_base(d, k):
    try:
        return lookup(d, k)
    except LookupError:
        return "base"

def inner(d, k):
    return lookup(d, k)

def two_up(d, k):
    try:
        return inner(d, k)
    except (ValueError, KeyError):
        return "two up"

def other_handler(d, k):
    try:
        return lookup(d, k)
    except ValueError:
        return "wrong class"

def unhandled(d, k):
    return lookup(d, k)
"""


def test_guards_raise_when_a_live_caller_handles_the_exception(healer: Healer, tmp_path: Path) -> None:
    mod = _module(tmp_path, EAFP_SRC)
    _heal(healer, lambda: mod.lookup({"a": 1}, "b"))
    assert _data(mod.lookup, {"a": 1}, "b") == 0  # nobody handles it: the default
    assert _data(mod.handled, {"a": 1}, "b") == "handled"
    assert _data(mod.handled_by_base, {"a": 1}, "b") == "base"
    assert _data(mod.two_up, {"a": 1}, "b") == "two up"
    assert _data(mod.other_handler, {"a": 1}, "b") == 0  # `except ValueError` does not handle KeyError
    assert _data(mod.unhandled, {"a": 1}, "b") == 0


def test_a_handled_firing_is_not_counted(healer: Healer, tmp_path: Path) -> None:
    mod = _module(tmp_path, EAFP_SRC)
    _heal(healer, lambda: mod.lookup({"a": 1}, "b"))
    unit, token = events.begin()
    try:
        assert mod.handled({"a": 1}, "b") == "handled"
    finally:
        events.end(token)
    assert unit.fired == [] and unit.header() is None


def test_a_handler_in_a_generator_frame_counts(healer: Healer, tmp_path: Path) -> None:
    mod = _module(tmp_path, EAFP_SRC + """
def gen(d, keys):
    for k in keys:
        try:
            yield lookup(d, k)
        except KeyError:
            yield "gen handled"
""")
    _heal(healer, lambda: mod.lookup({"a": 1}, "b"))
    assert list(mod.gen({"a": 1}, ["a", "b"])) == [1, "gen handled"]


# ------------------------------------------------------------------ control flow

@pytest.mark.parametrize(("source", "args", "decider"), [
    ("def f(user):\n    if user.banned:\n        return 'deny'\n    return 'allow'\n", (None,), "a branch"),
    ("def f(a, b):\n    if a / b == 0:\n        return 'none'\n    return 'some'\n", (1, 0), "a comparison"),
    ("def f(acl, who):\n    if acl[who]:\n        return 'allow'\n    return 'deny'\n", ({}, "eve"), "a branch"),
    ("def f(u):\n    if u.role.admin:\n        return 'allow'\n    return 'deny'\n", (None,), "a branch"),
])
def test_a_default_never_decides_control_flow(healer: Healer, tmp_path: Path, source: str, args: tuple[object, ...],
                                              decider: str | tuple[str, ...], caplog: pytest.LogCaptureFixture) -> None:
    mod = _module(tmp_path, source)
    code = mod.f.__code__
    with pytest.raises(Exception) as crash:
        mod.f(*args)
    with caplog.at_level("WARNING", logger="codesuture"):
        assert healer.heal(crash.value) is None
    assert mod.f.__code__ is code and healer.history == []
    deciders = (decider,) if isinstance(decider, str) else decider
    if "a branch" in deciders:
        deciders = (*deciders, "a truth test")  # 3.13 tests truth with TO_BOOL before the jump
    assert any("decides control flow" in r.getMessage() and any(f"decides {d}" in r.getMessage() for d in deciders)
               for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
    with pytest.raises(type(crash.value)):
        mod.f(*args)  # the original crash, unchanged


def test_control_flow_proposal_is_written_for_review(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    healer = Healer(tmp_path / "overlays")
    mod = _module(tmp_path, "def f(user):\n    if user.banned:\n        return 'deny'\n    return 'allow'\n")
    with pytest.raises(AttributeError) as crash:
        mod.f(None)
    assert healer.heal(crash.value) is None
    assert not (tmp_path / "overlays").exists() or not list((tmp_path / "overlays").glob("*.overlay"))
    proposals = list((tmp_path / "overlays.pending").glob("*.overlay"))
    assert len(proposals) == 1


def test_control_flow_allowed_per_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    mod = _module(tmp_path, "def f(user):\n    if user.banned:\n        return 'deny'\n    return 'allow'\n")
    other = Healer(None, control_flow=("some_other_*",))
    with pytest.raises(AttributeError) as crash:
        mod.f(None)
    assert other.heal(crash.value) is None
    allowed = Healer(None, control_flow=("tdcase_*",))
    assert allowed.heal(crash.value) is not None
    assert mod.f(None) == "allow"


@pytest.mark.parametrize(("source", "args", "value"), [
    # None as a missing collection: nothing is a member (x in (c or ())), where the
    # decision only shapes data (a gate on it is not healed: tests/test_value_flow.py)
    ("def f(tag, classes):\n    n = 0\n    if tag in classes:\n        n += 1\n    return n\n", ("pre", None), 0),
    # a missing entry used as the container of `in` is an empty collection
    ("def f(d, k):\n    hits = []\n    if 'v' in d[k]:\n        hits.append(k)\n    return hits\n", ({"a": ["v"]}, "b"),
     []),
    # a default flowing on as data is healed
    ("def f(user):\n    name = user.name\n    return f'hi {name}'\n", (None,), "hi "),
])
def test_membership_and_data_flow_are_healed(healer: Healer, tmp_path: Path, source: str, args: tuple[object, ...],
                                             value: object) -> None:
    mod = _module(tmp_path, source)
    _heal(healer, lambda: mod.f(*args))
    assert _data(mod.f, *args) == value
