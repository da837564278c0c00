"""Data flows on; decisions fail closed: the value-flow model (``patch/flow.py``) and its
policy, on real code.

* The model: where the value an instruction makes goes (stored, returned, into a
  decision), and what each decision is (its sides rejoin; one side raises; the sides
  leave the function separately; the loop test of ``while``), on this interpreter's
  bytecode (the suite runs on 3.11, 3.12 and 3.13).
* The policy, healed in process: a decision that rejoins only shapes data (healed: the
  fixed releases' ``text[-1:]`` and ``formats.get(field)`` semantics); a decision whose
  one side raises takes that side (the program's own error); any other decision is not
  healed and the original exception propagates; a returned value is followed into the
  callers, at heal time and again each time the guard fires.
* A real WSGI service on 127.0.0.1 under ``python -m codesuture.boot --overlays D`` (dev
  mode, healing on) whose security gates call helpers that crash: every crafted
  request is refused (403/429/423/500, never 200), after the heals and on the next
  start from the overlay, and legitimate requests keep their answers.
"""

from __future__ import annotations

import dis
import http.client
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

from codesuture.patch import flow
from codesuture.runtime import events
from codesuture.runtime.healer import Healer
from heal_helpers import import_source
from heal_helpers import PY, clean_env

_COUNTER = itertools.count()


def _module(tmp_path: Path, source: str) -> Any:
    return import_source(tmp_path, source, "vfcase")


def _offset(fn: Any, opname: str, nth: int = 0) -> int:
    return [i.offset for i in dis.get_instructions(fn) if i.opname == opname][nth]


def data(fn: Callable[..., Any], *args: Any) -> Any:
    """Call *fn* and hand its result on as data (kept in a list, read back): a caller
    that only stores the value, as the model defines it."""
    box: list[Any] = []
    box.append(fn(*args))
    return box[0]


@pytest.fixture
def healer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Healer:
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    return Healer(None)


def _crash(call: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as crash:
        call()
    return crash.value


# ------------------------------------------------------------------ the model

MODEL = '''
class Denied(Exception):
    pass

def abort(code):
    raise Denied(code)

def gate(u):
    if u.banned:
        return 403
    return 200

def shape(text):
    if text[-1] != "\\n":
        text += "\\n"
    return text

def stored_then_gate(d, k):
    v = d[k]
    if v:
        return "yes"
    return "no"

def raises(x, k):
    if x[k] > 3:
        raise Denied(k)
    return "ok"

def aborts(u):
    if u.banned:
        abort(403)
    return "ok"

def asserts(d, k):
    assert d[k] > 0
    return "ok"

def waits(locks, name):
    n = 0
    while locks[name]:
        n += 1
    return n

def loops(d, k):
    total = 0
    for x in d[k]:
        total += x
    return total

def searches(d, k, u):
    for x in d[k]:
        if x == u:
            return "found"
    return "missing"

def predicate(u):
    return not u.active

def keeps_truth(u, out):
    out["admin"] = u.role == "admin"

def returns_choice(u):
    return "ok" if u.admin else "no"

def returns_or(u):
    return u.name or "anon"

def flags_truth(u):
    return {"admin": u.role == "admin", "id": 1}

def send(status):
    return status

def chooses_code(u):
    code = 403
    if not u.banned:
        code = 200
    return send(code)

def chooses_status(u):
    status = "429" if u.rate > 5 else "200"
    return send(f"{status} status")

def returns_chosen(u):
    level = "none"
    if u.uid in (0, 7):
        level = "full"
    return level

def keeps_choice(u, req):
    mode = "admin" if u.role == "admin" else "user"
    req.mode = mode

def logs_choice(u, log):
    what = "banned" if u.banned else "ok"
    log.debug("user is %s", what)
    return "done"

def names_fallback(u):
    name = u.name
    if not name:
        name = "anonymous"
    return send("hello " + name)

def picks_mode(u):
    multiline = False
    if u.lines > 1:
        multiline = True
    return send(multiline)

def grants_if(ok):
    if ok:
        return "200 OK"
    return "403 Forbidden"

def passes_truth(u):
    return grants_if(u.uid not in (0, 7))

def centred(text, wide):
    if wide:
        text = text.center(40)
    return text

def passes_flag(u):
    return centred("row", u.size > 80)

def label(n, plural):
    return f"{n} item" + ("s" if plural else "")

def labels(u):
    n = u.n
    return label(n, n != 1)

def prints_truth(u):
    print(u.n > 10)

def shows_truth(u):
    return str(u.n > 10)

def sorts_truth(u, out):
    newest = u.n > 10
    out.sort(reverse=newest)

def looks_up_choice(u):
    return send({True: "200 OK", False: "403 Forbidden"}[u.uid in (0, 7)])

def prints_choice(u):
    allowed = u.n <= 10
    print("GRANTED" if allowed else "denied")

def logs_choice_inline(u, log):
    big = u.size > 10
    log.warning("big=%s", "yes" if big else "no")
    return "done"

def prints_mixed(u):
    value = u.n
    print("MARKER patched" if value == 0 else f"MARKER unexpected {value!r}")

def counts_items(u):
    n = u.count
    suffix = "s" if n != 1 else ""
    return f"{n} item{suffix}"

def keeps_flags(u, req):
    req.flags = [u.role == "admin"]

def keeps_attr(u, req):
    req.admin = u.role == "admin"

GRANTED = []

def grants(u):
    if not u.banned:
        GRANTED.append(u)
    return "ok"

FLAGGED = False

def marks(u, seen):
    global FLAGGED
    if u.flag:
        FLAGGED = True
    return seen

def keeps_cell(d, k):
    multi = False
    if d[k]:
        multi = True
    CALLBACKS.append(lambda: multi)
    return 0

CALLBACKS = []

def _make_sets_outer():
    hit = False

    def sets_outer(d, k):
        nonlocal hit
        if d[k]:
            hit = True
        return 1
    return sets_outer

sets_outer = _make_sets_outer()

def collects(d, k, out):
    if d[k]:
        out.append(k)
    return out

def sends(d, k, out):
    for x in d[k]:
        out.append(x)
    return out

def drains(d, k, todo, out):
    while todo:
        if out:
            out.pop()
        todo -= d[k]
    return todo

def breaks(d, k, items):
    n = 0
    while True:
        for x in items:
            n += x
        if not d[k]:
            break
        n += 2
    return n

def configures(opts, obj):
    obj.loose = True
    if not opts["allowed"]:
        obj.loose = False
        obj.strict = True

def returns_early(opts, obj):
    if not opts["allowed"]:
        return
    obj.strict = True

def tidies(opts, items):
    for x in items:
        yield x
    if not opts["allowed"]:
        yield "strict"

LOW = {7: 0}
AUDIT = []

NOTES = []

def reads_block(lines, n):
    block = []
    while n < len(lines):
        if not lines[n] and lines[n + 1] == "--":
            break
        block.append(lines[n])
        n += 1
    return block, n

def break_and_test(d, k):
    v = d[k]
    i = 0
    while i < v:
        if v == 3:
            break
        i += 1
    return i

def break_acts(lines, n):
    while n < len(lines):
        if not lines[n] and lines[n + 1] == "--":
            NOTES.append(n)
            break
        n += 1
    return n

def stay_acts(lines, n):
    while n < len(lines):
        if not lines[n] and lines[n + 1] == "--":
            break
        NOTES.append(n)
        n += 1
    return n

def later_raise(d, k):
    t = d[k]
    try:
        t = int(t)
    except (TypeError, ValueError):
        pass
    if t in LOW:
        t = LOW[t]
    if t != "*" and (int(t) < 0 or int(t) > 59):
        raise Denied(k)
    return t

def later_single(d, k):
    t = d[k]
    if t in LOW:
        t = LOW[t]
    if t > 59:
        raise Denied(k)
    return t

def later_acts(d, k):
    t = d[k]
    AUDIT.append(t)
    if t != "*" and t < 0:
        raise Denied(k)
    return t

def later_reads(d, k):
    t = d[k]
    n = t
    if n != "*" and n < 0:
        raise Denied(n)
    return n

def later_both(d, k):
    t = d[k]
    if t in LOW:
        t = LOW[t]
    if t != "*" and t < 0:
        raise Denied(k)
    raise KeyError(k)

def later_after_exit(d, k):
    t = d[k]
    if t is None:
        return "none"
    if t < 0:
        raise Denied(k)
    return t

def later_in_try(d, k):
    t = d[k]
    if t != "*" and t < 0:
        try:
            raise Denied(k)
        except Denied:
            return t
    return t
'''


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _module(tmp_path_factory.mktemp("model"), MODEL)


@pytest.mark.parametrize(("name", "opname", "action", "outcome", "returned"), [
    ("gate", "LOAD_ATTR", "refuse", flow.EXITS, ""),
    ("shape", "BINARY_SUBSCR", "heal", flow.REJOIN, "value"),  # text, changed on one side, is returned
    ("stored_then_gate", "BINARY_SUBSCR", "refuse", flow.EXITS, ""),
    ("raises", "BINARY_SUBSCR", "raise", flow.RAISES, ""),
    ("aborts", "LOAD_ATTR", "raise", flow.RAISES, ""),  # abort() never returns (its code has no return)
    ("asserts", "BINARY_SUBSCR", "raise", flow.RAISES, ""),
    ("waits", "BINARY_SUBSCR", "refuse", flow.EXITS, ""),  # the loop test of while
    ("loops", "BINARY_SUBSCR", "heal", flow.REJOIN, "value"),  # a for loop that rejoins after it
    ("searches", "BINARY_SUBSCR", "refuse", flow.EXITS, ""),  # a for loop whose body returns
    ("predicate", "LOAD_ATTR", "heal", None, "truth"),  # not: a truth value, returned to the callers
    # A truth value stored outside the frame's locals (or put into a container) would
    # decide where the model cannot follow: `self.admin = ...`, tested in another method.
    ("keeps_truth", "LOAD_ATTR", "refuse", flow.EXITS, ""),
    # ...and a container holding one is a truth value too: returned, the callers decide.
    ("flags_truth", "LOAD_ATTR", "heal", None, "truth"),
    ("keeps_flags", "LOAD_ATTR", "refuse", flow.EXITS, ""),
    # A conditional expression returned: the sides leave with what each chose (3.11
    # joins them at one RETURN_VALUE, 3.12+ gives each its own return): a gate. A
    # short-circuit `x or y` returns the value itself on one side: data, returned.
    ("returns_choice", "LOAD_ATTR", "refuse", flow.EXITS, ""),
    # A decision written down as a value (a constant chosen on one side, or by a
    # conditional expression): passed on or stored it decides there; returned, the
    # callers are asked about a choice; logged, or a default met by the program's own
    # fallback (`if not name: name = "anonymous"`), or mixed into data, it is data.
    ("chooses_code", "LOAD_ATTR", "refuse", flow.REJOIN, ""),
    ("chooses_status", "LOAD_ATTR", "refuse", flow.REJOIN, ""),
    ("returns_chosen", "LOAD_ATTR", "heal", flow.REJOIN, "choice"),
    ("keeps_choice", "LOAD_ATTR", "refuse", flow.REJOIN, ""),
    ("logs_choice", "LOAD_ATTR", "heal", flow.REJOIN, ""),
    ("names_fallback", "LOAD_ATTR", "heal", flow.REJOIN, "value"),
    ("counts_items", "LOAD_ATTR", "heal", flow.REJOIN, "value"),
    ("logs_choice_inline", "LOAD_ATTR", "heal", flow.REJOIN, ""),  # the logging method loaded before the branch
    ("looks_up_choice", "LOAD_ATTR", "refuse", flow.EXITS, ""),  # a truth value as the key: a choice
    # 3.12+ copies the call after the join into each side (one exit tail): still after it.
    ("prints_choice", "LOAD_ATTR", "refuse", flow.REJOIN, ""),
    ("prints_mixed", "LOAD_ATTR", "heal", flow.REJOIN, ""),  # one copy hands on data: joined, data
    # True/False chosen on the sides is the test's own truth value (tabulate 0.9.0's
    # `is_multiline`, handed to `_choose_width_fn`): followed into the callee, which
    # returns it here.
    ("picks_mode", "LOAD_ATTR", "heal", flow.REJOIN, "truth"),
    # A truth value passed to a function is followed into it: a gate there fails closed,
    # a decision there that rejoins shapes data (a choice mixed into the value too); a
    # built-in type keeps it a truth value (`str(ok)`); print() writes it out, no branch
    # is taken (a choice printed is a decision already taken); any other callee (a
    # method of another object, a C function) is not followed: fail closed.
    ("passes_truth", "LOAD_ATTR", "refuse", flow.EXITS, ""),
    ("passes_flag", "LOAD_ATTR", "heal", None, "value"),
    ("labels", "LOAD_ATTR", "heal", None, "value"),
    ("prints_truth", "LOAD_ATTR", "heal", None, ""),
    ("shows_truth", "LOAD_ATTR", "heal", None, "truth"),
    ("sorts_truth", "LOAD_ATTR", "refuse", flow.EXITS, ""),
    ("returns_or", "LOAD_ATTR", "heal", flow.REJOIN, "value"),
    ("keeps_attr", "LOAD_ATTR", "refuse", flow.EXITS, ""),
    ("grants", "LOAD_ATTR", "refuse", flow.ACTS, ""),  # the sides rejoin, one acts: a call for its effect
    ("marks", "LOAD_ATTR", "refuse", flow.ACTS, ""),  # ... or a store to a global
    ("collects", "BINARY_SUBSCR", "heal", flow.REJOIN, ""),  # a call on the frame's own object shapes data
    ("keeps_cell", "BINARY_SUBSCR", "heal", flow.REJOIN, ""),  # a cell of its own (a closure reads it)
    ("sets_outer", "BINARY_SUBSCR", "refuse", flow.ACTS, ""),  # an enclosing function's cell (nonlocal)
    ("sends", "BINARY_SUBSCR", "heal", flow.REJOIN, ""),  # a for loop's body over an empty default: no time
    # Only the test at the bottom of the loop sees the value (3.12+ jumps back from a
    # block of its own; a default 0 would loop for ever): the loop test on every version.
    ("drains", "BINARY_SUBSCR", "refuse", flow.EXITS, ""),
    ("breaks", "BINARY_SUBSCR", "refuse", flow.EXITS, ""),  # `if not v: break` decides the loop too
    # The sides end only at the end of the body (the implicit `return None` the compiler
    # copies into each): they rejoin there; an explicit early `return` stays a gate.
    ("configures", "BINARY_SUBSCR", "heal", flow.REJOIN, ""),  # stores to the objects the frame holds shape data
    ("tidies", "BINARY_SUBSCR", "heal", flow.REJOIN, "value"),  # what it yields is the callers' data
    ("returns_early", "BINARY_SUBSCR", "refuse", flow.EXITS, ""),
    # A branch out of a while loop that has a test of its own the value does not reach: the
    # loop still ends by that test, the break side does not act: it shapes data (the block read).
    ("reads_block", "BINARY_SUBSCR", "heal", flow.REJOIN, "value"),
    ("break_and_test", "BINARY_SUBSCR", "refuse", flow.EXITS, ""),  # the value reaches the loop test too
    ("break_acts", "BINARY_SUBSCR", "refuse", flow.EXITS, ""),  # the break side acts (NOTES.append)
    ("stay_acts", "BINARY_SUBSCR", "refuse", flow.EXITS, ""),  # staying in the loop acts: a default would decide it
])
def test_the_model_classifies_where_the_value_goes(model: Any, name: str, opname: str, action: str,
                                                   outcome: str | None, returned: str) -> None:
    fn = getattr(model, name)
    nth = 1 if name in ("reads_block", "break_acts", "stay_acts") else 0
    found = flow.analyze(fn.__code__, _offset(fn, opname, nth), "value", vars(model))
    assert not found.unknown, found
    verdict = flow.verdict(found)
    assert verdict.action == action, (found, verdict)
    if outcome is not None:
        assert found.decisions and found.decisions[0].outcome == outcome, found
    else:
        assert not found.decisions
    assert verdict.returned == returned or verdict.action != "heal"
    if name in ("waits", "drains"):
        assert found.decisions[0].what == flow.LOOP_TEST == "the loop test of while"
    if name == "breaks":
        assert found.decisions[0].what == flow.LOOP_EXIT
        assert "whether the while loop runs again" in verdict.reason
    if name in ("break_acts", "stay_acts"):
        assert found.decisions[0].what == flow.LOOP_EXIT
    if name == "break_and_test":
        assert flow.LOOP_TEST in {d.what for d in found.decisions}, found
    if name == "reads_block":
        assert found.decisions[0].what == flow.BREAK_DATA
        assert not any(d.what in (flow.LOOP_TEST, flow.LOOP_EXIT) for d in found.decisions), found


@pytest.mark.parametrize(("name", "takes"), [
    ("later_raise", True),  # a try/except and a rejoining branch, then a compound test with a raising side
    ("later_single", True),  # a rejoining branch, then a plain `if ...: raise`
    ("later_acts", False),  # the skipped code acts (a call made for its effect on a module name)
    ("later_reads", False),  # the raise block reads a local the skipped code writes
    ("later_both", False),  # the other side raises too: no continuation
    ("later_after_exit", False),  # a decision before it leaves the function (`return "none"`)
    ("later_in_try", False),  # the raise is in a try block: its handler (here it returns) reads what was skipped
])
def test_a_raising_side_reached_later_is_taken_only_over_code_without_effect(model: Any, name: str,
                                                                             takes: bool) -> None:
    fn = getattr(model, name)
    found = flow.analyze(fn.__code__, _offset(fn, "BINARY_SUBSCR"), "value", vars(model))
    assert not found.unknown, found
    assert not (found.decisions and found.decisions[0].first and found.decisions[0].outcome == flow.RAISES)
    verdict = flow.verdict(found)
    assert verdict.action == ("raise" if takes else "refuse"), (found, verdict)
    assert (found.later is not None) == takes, found
    if takes:
        assert verdict.decision is found.later and found.later.outcome == flow.RAISES
        first_line = fn.__code__.co_firstlineno
        assert found.later.skips.startswith(f"{first_line + 1}-"), found.later
        assert "only shapes data" in verdict.reason
        # The raising side is a side of a real conditional jump of the function.
        jump = next(i for i in dis.get_instructions(fn) if i.offset == found.later.offset)
        assert "JUMP" in jump.opname and found.later.raising in ("jump", "next")
        assert found.later.net <= 0 and found.later.low >= found.later.net
    assert flow.verdict(found, raise_side=False).action == "refuse"


def test_a_returned_value_is_judged_in_its_callers(model: Any, tmp_path: Path) -> None:
    mod = _module(tmp_path, """
        def flag(u):
            return u.flag
        def decides(u):
            if flag(u):
                return 403
            return 200
        def shows(u):
            return "flag=%s" % flag(u)
        def counts(u):
            n = 0
            if flag(u):
                n += 1
            return n
    """)
    for caller, expected in (("decides", "decides a truth test" if sys.version_info >= (3, 13) else "decides a branch"),
                             ("shows", None), ("counts", None)):
        fn = getattr(mod, caller)
        frames = [(fn.__code__, _offset(fn, "CALL"), vars(mod))]
        why = flow.callers_verdict(frames, "value")
        if expected is None:
            assert why is None, (caller, why)
        else:
            assert why is not None and expected in why and caller in why, why


# ------------------------------------------------------------------ the policy, healed in process

@pytest.mark.parametrize(("source", "args", "value"), [
    # The fixed releases' text[-1:]: an empty text gets its newline.
    ("def f(text):\n    if text[-1] != '\\n':\n        text += '\\n'\n    return text\n", ("",), "\n"),
    # The fixed releases' formats.get(field): a missing format leaves the line empty.
    ("def f(formats, field):\n    line = ''\n    if formats[field] is not None:\n        line = formats[field]\n"
     "    return line\n", ({"a": "%s", "c": None}, "b"), ""),
    # A counter that a missing entry does not bump.
    ("def f(d, k):\n    n = 0\n    if d[k] > 2:\n        n += 1\n    return n\n", ({"a": 5}, "b"), 0),
    # A break out of a while loop that ends by its own test (griffe's numpy block reader):
    # the fix's bounds check `n < len(lines) - 1 and ...` gives the same block.
    ("def f(lines, n):\n    block = []\n    while n < len(lines):\n        if not lines[n] and lines[n + 1] == '--':\n"
     "            break\n        block.append(lines[n])\n        n += 1\n    return block, n\n", (["a", ""], 0), (["a", ""], 2)),
])
def test_a_decision_that_rejoins_only_shapes_data(healer: Healer, tmp_path: Path, source: str,
                                                  args: tuple[object, ...], value: object) -> None:
    mod = _module(tmp_path, source)
    assert healer.heal(_crash(lambda: mod.f(*args))) is not None
    assert data(mod.f, *args) == value
    # What the decision shaped is returned: its callers are checked each time it fires
    # (and a default that turned out to be a bool, which the decision would decide
    # with, would decline: ';notruth').
    assert healer.history[-1].record.guard.flow == "return:value;notruth"


def test_sides_that_end_at_the_end_of_the_body_rejoin(healer: Healer, tmp_path: Path) -> None:
    """The last statement of a body: each side runs into the implicit ``return None``
    (one copy per side in the bytecode), so the sides meet at the end of the function;
    when neither acts, the decision only shapes data (here: what a generator yields)."""
    mod = _module(tmp_path, "def f(opts, items):\n    for x in items:\n        yield x\n"
                            "    if not opts['allowed']:\n        yield 'strict'\n")
    assert healer.heal(_crash(lambda: list(mod.f({}, ["a"])))) is not None
    assert data(lambda: list(mod.f({}, ["a"]))) == ["a", "strict"]  # the default None: `not None` takes the branch
    assert data(lambda: list(mod.f({"allowed": True}, ["a"]))) == ["a"]


@pytest.mark.parametrize(("source", "args", "error"), [
    ("class Denied(Exception):\n    pass\n\ndef f(x, k):\n    if x[k] > 3:\n        raise Denied(k)\n    return 'ok'\n",
     ({"a": 1}, "b"), "Denied"),
    ("def f(d, k):\n    assert d[k] > 0, 'no such entry'\n    return 'ok'\n", ({"a": 1}, "b"), "AssertionError"),
    ("class Denied(Exception):\n    pass\n\ndef f(d, k):\n    if not d[k]:\n        raise Denied(k)\n    return 'ok'\n",
     ({"a": 1}, "b"), "Denied"),
    # A raising side reached later: a try/except and a rejoining branch before a compound test
    # (croniter 0.3.12's field check; its fix raises CroniterBadCronError).
    ("class Denied(Exception):\n    pass\n\nLOW = {7: 0}\n\ndef f(d, k):\n    t = d[k]\n    try:\n"
     "        t = int(t)\n    except (TypeError, ValueError):\n        pass\n    if t in LOW:\n        t = LOW[t]\n"
     "    if t != '*' and (int(t) < 0 or int(t) > 59):\n        raise Denied(k)\n    return 'ok'\n",
     ({"a": 1}, "b"), "Denied"),
])
def test_a_decision_with_a_raising_side_takes_it(healer: Healer, tmp_path: Path, source: str,
                                                 args: tuple[object, ...], error: str) -> None:
    mod = _module(tmp_path, source)
    assert healer.heal(_crash(lambda: mod.f(*args))) is not None
    record = healer.history[-1].record
    assert record.guard.flow.startswith("raise:") and "takes the raising side" in record.evidence["flow"]
    assert ("skipping lines" in record.evidence["flow"]) == ("LOW" in source), record.evidence
    with pytest.raises(Exception) as got:
        mod.f(*args)
    assert type(got.value).__name__ == error
    assert data(mod.f, {"a": 1, "b": 2}, "b") == "ok"  # the healthy path is unchanged


@pytest.mark.parametrize(("source", "args"), [
    ("def f(user):\n    if user.banned:\n        return 'deny'\n    return 'allow'\n", (None,)),
    ("def f(acl, who):\n    ok = acl[who]\n    if ok:\n        return 'allow'\n    return 'deny'\n", ({}, "eve")),
    ("def f(d, k):\n    while d[k]:\n        d.pop(k)\n    return 'done'\n", ({}, "k")),
    ("def f(d, k):\n    n = 0\n    while True:\n        n += 1\n        if not d[k]:\n            break\n"
     "        n += 2\n    return n\n", ({}, "k")),
    ("def f(opts, obj):\n    if not opts['allowed']:\n        return\n    obj.append(1)\n", ({}, [])),
    ("def f(d, k, u):\n    for x in d[k]:\n        if x == u:\n            return 'banned'\n    return 'welcome'\n",
     ({}, "k", "eve")),
    ("def f(tag, classes):\n    if tag in classes:\n        return 'class'\n    return 'plain'\n", ("pre", None)),
    # A raising side reached later, but the code before it acts, or the raise reads what it skips.
    ("LOG = []\n\ndef f(d, k):\n    t = d[k]\n    LOG.append(t)\n    if t != '*' and t < 0:\n        raise ValueError(k)\n"
     "    return t\n", ({}, "k")),
    ("def f(d, k):\n    t = d[k]\n    n = t\n    if n != '*' and n < 0:\n        raise ValueError(n)\n    return n\n",
     ({}, "k")),
])
def test_any_other_decision_is_not_healed(healer: Healer, tmp_path: Path, source: str, args: tuple[object, ...],
                                          caplog: pytest.LogCaptureFixture) -> None:
    mod = _module(tmp_path, source)
    code = mod.f.__code__
    crash = _crash(lambda: mod.f(*args))
    with caplog.at_level("WARNING", logger="codesuture"):
        assert healer.heal(crash) is None
    assert mod.f.__code__ is code and healer.history == []
    lines = [r.getMessage() for r in caplog.records if "not healed" in r.getMessage()]
    assert len(lines) == 1 and "decides control flow" in lines[0], lines
    with pytest.raises(type(crash)):
        mod.f(*args)  # the original crash, unchanged


HELPERS = """
def is_banned(u):
    return u.banned

def gate(u):
    if is_banned(u):
        return 403
    return 200

def page(u):
    return "banned=%s" % is_banned(u)
"""


def test_a_returned_default_never_opens_a_gate_in_a_caller(healer: Healer, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    mod = _module(tmp_path, HELPERS)
    # The gate's crash: the value would be returned to `if is_banned(u)`: not healed.
    assert healer.heal(_crash(lambda: mod.gate(None))) is None and healer.history == []
    # A data use heals the helper...
    assert healer.heal(_crash(lambda: mod.page(None))) is not None
    record = healer.history[-1].record
    # Returned unchanged (";asis"): the caller's consumer decides its default when it
    # fires; `"banned=%s" % v` formats anything, so it says nothing: None.
    assert record.guard.flow == "return:value;asis"
    assert data(mod.page, None) == "banned=None"
    # ...and when the guard fires under the gate, it declines: the original exception.
    with caplog.at_level("WARNING", logger="codesuture"):
        with pytest.raises(AttributeError):
            mod.gate(None)
    declined = [r.getMessage() for r in caplog.records if "declined" in r.getMessage()]
    assert len(declined) == 1 and "gate" in declined[0], declined
    assert data(mod.gate, type("U", (), {"banned": True})()) == 403


def test_a_bool_default_stored_for_later_declines(healer: Healer, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The empty value of a container of flags is ``False``, a truth value: stored on an
    object and tested in another function, it would open the gate (``u.banned``
    False). The guard learns its default's type only when it fires: then it declines."""
    mod = _module(tmp_path, """
        BANS = {"alice": False, "mallory": True}
        NAMES = {"alice": "Alice", "mallory": "Mallory"}
        class User:
            def __init__(self, key):
                self.banned = BANS[key]
        class Card:
            def __init__(self, key):
                self.title = NAMES[key]
        def gate(key):
            if User(key).banned:
                return 403
            return 200
        def card(key):
            return Card(key).title
    """)
    assert healer.heal(_crash(lambda: mod.gate("eve"))) is not None
    assert healer.history[-1].record.guard.flow.endswith(";notruth")
    with caplog.at_level("WARNING", logger="codesuture"):
        with pytest.raises(KeyError):
            mod.gate("eve")
    assert any("declined" in r.getMessage() and "truth value" in r.getMessage() for r in caplog.records)
    assert mod.gate("mallory") == 403 and mod.gate("alice") == 200
    # Returned to a caller that stores it for later: the same.
    mod2 = _module(tmp_path, """
        BANS = {"alice": False}
        def banned(key):
            return BANS[key]
        class User:
            def __init__(self, key):
                self.banned = banned(key)
        def gate(key):
            return 403 if User(key).banned else 200
    """)
    assert healer.heal(_crash(lambda: mod2.gate("eve"))) is not None
    assert healer.history[-1].record.guard.flow == "return:value;asis;notruth"
    with pytest.raises(KeyError):
        mod2.gate("eve")
    # A flag is what it decides: even a decision whose sides rejoin (a status chosen
    # by a conditional expression, here or in the caller it is returned to).
    mod3 = _module(tmp_path, """
        BLOCKED = {"1.2.3.4": True}
        def blocked(ip):
            return BLOCKED[ip]
        def status(ip):
            code = 403 if blocked(ip) else 200
            return code
        def status_here(ip):
            code = 403 if BLOCKED[ip] else 200
            return code
    """)
    for gate in (mod3.status, mod3.status_here):
        assert healer.heal(_crash(lambda: gate("9.9.9.9"))) is not None
        assert healer.history[-1].record.guard.flow.endswith(";notruth")
        with pytest.raises(KeyError):
            gate("9.9.9.9")
        assert gate("1.2.3.4") == 403
    # The same shape over a container of strings is data: the default '' is placed.
    assert healer.heal(_crash(lambda: mod.card("eve"))) is not None
    assert data(mod.card, "eve") == ""


def test_a_bool_default_that_cannot_help_its_own_run_is_taken_back(tmp_path: Path) -> None:
    """``codesuture run``: the heal's replay declines at once (the flag would decide a
    gate elsewhere): the patch is taken back and nothing is written; the run ends with
    the program's own KeyError."""
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        BANS = {"alice": False, "mallory": True}
        class User:
            def __init__(self, name):
                self.banned = BANS[name]
        def handle(name):
            return "denied" if User(name).banned else "GRANTED"
        print(handle("eve"))
    """))
    r = subprocess.run([PY, "-m", "codesuture", "run", "app.py"], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "GRANTED" not in r.stdout
    assert r.stderr.rstrip().splitlines()[-2].startswith("KeyError: 'eve'"), r.stderr
    assert "took back the patch at __main__:5" in r.stderr and "declined at once" in r.stderr, r.stderr
    assert not any(p.suffix == ".overlay" for p in (tmp_path / "overlays").glob("*")), r.stderr


# ------------------------------------------------------------------ a real service

SERVICE = r'''
import os
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

ADMINS = {1}
STAFF = {0, 7}
BANNED_UIDS = {13}
LIMIT = 5.0
USERS = {"alice": type("User", (), {"banned": False, "role": "member", "suspended": False})(),
         "mallory": type("User", (), {"banned": True, "role": "guest", "suspended": True})()}
GRANTS = []
LOCKS = {"doc1": False, "doc2": True}
LEVELS = {"/level/public": 0, "/level/secret": 3}
OWNERS = {"a": "alice"}
HERE = os.path.dirname(os.path.abspath(__file__))


def is_banned(u):
    return u.banned


def request_uid(env):
    return int(env.get("HTTP_X_UID", "-1"))


def rate(env):
    hits = int(env.get("HTTP_X_HITS", "0"))
    window = int(env.get("HTTP_X_WINDOW", "1"))
    return hits / window


def denied_names():
    with open(os.path.join(HERE, "denied.txt")) as fh:
        return set(fh.read().split())


def is_member(u):
    return u.role == "member"


def is_suspended(u):
    return u.suspended


def is_locked(name):
    return LOCKS[name]


def level(path):
    return LEVELS[path]


def owner(doc):
    return OWNERS[doc]


def token_ok(env):
    return env["HTTP_X_TOKEN"] == "s3cret"


CLEARANCE_STATUS = {"full": "200 OK", "none": "403 Forbidden"}


def clearance(env):  # a constant chosen on one side, returned after the join
    level = "none"
    if request_uid(env) in STAFF:
        level = "full"
    return level


class Request:
    def __init__(self, env):
        self.staff = int(env.get("HTTP_X_STAFF_ID", "-1")) in STAFF  # decided later, in app()


def respond(start_response, status, body):
    start_response(status, [("Content-Type", "text/plain")])
    return [body.encode()]


def answer(start_response, allowed):  # decides with a truth value its caller made
    if allowed:
        return respond(start_response, "200 OK", "let in")
    return respond(start_response, "403 Forbidden", "kept out")


def app(env, start_response):
    path = env["PATH_INFO"]
    user = USERS.get(env.get("HTTP_X_USER", ""))
    if path == "/profile":  # data: the flag is shown, nothing is decided with it
        return respond(start_response, "200 OK", "banned: %s" % is_banned(user))
    if path == "/ban":
        if is_banned(user):
            return respond(start_response, "403 Forbidden", "banned")
        return respond(start_response, "200 OK", "welcome")
    if path == "/admin":
        if request_uid(env) in ADMINS:
            return respond(start_response, "200 OK", "admin console")
        return respond(start_response, "403 Forbidden", "not an admin")
    if path == "/rate":
        if rate(env) > LIMIT:
            return respond(start_response, "429 Too Many Requests", "slow down")
        return respond(start_response, "200 OK", "ok")
    if path == "/deny":
        name = env.get("HTTP_X_NAME", "")
        if name in denied_names():
            return respond(start_response, "403 Forbidden", "denied")
        return respond(start_response, "200 OK", "hello " + name)
    if path == "/member":
        if not is_member(user):
            return respond(start_response, "403 Forbidden", "members only")
        return respond(start_response, "200 OK", "member area")
    if path == "/lock":
        waited = 0
        while is_locked(env.get("HTTP_X_DOC", "")):
            waited += 1
            if waited > 2:
                return respond(start_response, "423 Locked", "locked")
            time.sleep(0.01)
        return respond(start_response, "200 OK", "document")
    if path.startswith("/level/"):
        if level(path) == 0:
            return respond(start_response, "200 OK", "public")
        return respond(start_response, "403 Forbidden", "restricted")
    if path == "/doc":
        if owner(env.get("HTTP_X_DOC", "")) is None:
            return respond(start_response, "200 OK", "public document")
        return respond(start_response, "403 Forbidden", "private document")
    if path == "/grant":  # the sides rejoin, but one acts (a grant recorded)
        status = "403 Forbidden"
        if not is_suspended(user):
            GRANTS.append(user)
            status = "200 OK"
        return respond(start_response, status, "granted" if status == "200 OK" else "suspended")
    if path == "/staff":  # a truth value stored on an object, tested here
        if Request(env).staff:
            return respond(start_response, "200 OK", "staff room")
        return respond(start_response, "403 Forbidden", "staff only")
    if path == "/quota":  # a decision written down as a value, then handed on
        status = "429 Too Many Requests" if rate(env) > LIMIT else "200 OK"
        return respond(start_response, status, "quota checked")
    if path == "/clearance":  # the helper's choice, looked up here
        return respond(start_response, CLEARANCE_STATUS[clearance(env)], "clearance")
    if path == "/verdict":  # a truth value handed to a helper that decides with it
        return answer(start_response, allowed=request_uid(env) not in BANNED_UIDS)
    if path == "/api":
        assert token_ok(env), "bad token"
        return respond(start_response, "200 OK", "api")
    return respond(start_response, "404 Not Found", "no such page")


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


if __name__ == "__main__":
    from codesuture.runtime.web import HealingWSGIMiddleware

    server = make_server("127.0.0.1", 0, HealingWSGIMiddleware(app), handler_class=Quiet)
    print("PORT", server.server_port, flush=True)
    server.serve_forever()
'''

#: (path, headers, statuses allowed): crafted requests first, each crashes in a helper.
CRAFTED = [
    ("/ban", {}, {403, 500}),                       # user None: `return u.banned`
    ("/admin", {"X-UID": "abc"}, {403, 500}),       # int('abc') in the helper
    ("/rate", {"X-Window": "0", "X-Hits": "9"}, {429, 500}),  # hits / 0 in the helper
    ("/deny", {"X-Name": "eve"}, {403, 500}),       # the deny-list file is missing
    ("/member", {}, {403, 500}),                    # `not is_member(None)`
    ("/lock", {"X-Doc": "nope"}, {423, 500}),       # `while is_locked(...)`, missing lock entry
    ("/level/nope", {}, {403, 500}),                # `level(path) == 0`, missing entry
    ("/doc", {"X-Doc": "zzz"}, {403, 500}),         # `owner(doc) is None`, missing entry
    ("/api", {}, {403, 500}),                       # `assert token_ok(env)`, no token header
    ("/grant", {}, {403, 500}),                     # `if not is_suspended(None): GRANTS.append(...)`
    ("/staff", {"X-Staff-Id": "abc"}, {403, 500}),  # int('abc') -> 0 would be in STAFF, stored as a flag
    ("/quota", {"X-Window": "0", "X-Hits": "9"}, {429, 500}),  # 0 would choose "200 OK", passed to respond()
    ("/clearance", {"X-UID": "abc"}, {403, 500}),   # 0 in STAFF would choose "full" in the helper
    ("/verdict", {"X-UID": "abc"}, {403, 500}),     # 0 not in BANNED_UIDS, passed to answer(), would let in
]
LEGIT = [
    ("/ban", {"X-User": "alice"}, 200, "welcome"),
    ("/ban", {"X-User": "mallory"}, 403, "banned"),
    ("/admin", {"X-UID": "1"}, 200, "admin console"),
    ("/admin", {"X-UID": "7"}, 403, "not an admin"),
    ("/rate", {"X-Hits": "3"}, 200, "ok"),
    ("/rate", {"X-Hits": "9"}, 429, "slow down"),
    ("/member", {"X-User": "alice"}, 200, "member area"),
    ("/lock", {"X-Doc": "doc1"}, 200, "document"),
    ("/lock", {"X-Doc": "doc2"}, 423, "locked"),
    ("/level/public", {}, 200, "public"),
    ("/level/secret", {}, 403, "restricted"),
    ("/doc", {"X-Doc": "a"}, 403, "private document"),
    ("/api", {"X-Token": "s3cret"}, 200, "api"),
    ("/grant", {"X-User": "alice"}, 200, "granted"),
    ("/grant", {"X-User": "mallory"}, 403, "suspended"),
    ("/staff", {"X-Staff-Id": "7"}, 200, "staff room"),
    ("/staff", {"X-Staff-Id": "3"}, 403, "staff only"),
    ("/quota", {"X-Hits": "3"}, 200, "quota checked"),
    ("/quota", {"X-Hits": "9"}, 429, "quota checked"),
    ("/clearance", {"X-UID": "7"}, 200, "clearance"),
    ("/clearance", {"X-UID": "3"}, 403, "clearance"),
    ("/verdict", {"X-UID": "5"}, 200, "let in"),
    ("/verdict", {"X-UID": "13"}, 403, "kept out"),
]


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


class Service:
    def __init__(self, app_dir: Path, overlays: Path) -> None:
        self.proc = subprocess.Popen([PY, "-m", "codesuture.boot", "--overlays", str(overlays), "service.py"],
                                     cwd=app_dir, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        self.port = int(line.split()[1])

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, str]:
        return _get(self.port, path, headers)

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err


def test_security_gates_hold_in_a_real_wsgi_service(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "service.py").write_text(SERVICE)
    overlays = tmp_path / "overlays"
    seen: dict[str, list[int]] = {}
    for run in range(2):  # the first start heals; the second loads what the first wrote
        svc = Service(app_dir, overlays)
        try:
            if run == 0:  # a data use of is_banned first: it is healed (the flag is shown)
                assert svc.get("/profile", {}) == (200, "banned: None")
            for path, headers, allowed in CRAFTED:
                for _ in range(2):  # the crash (heal attempt, replay), then once more
                    status, body = svc.get(path, headers)
                    seen.setdefault(path, []).append(status)
                    assert status in allowed and status != 200, (run, path, status, body)
            for path, headers, status, body in LEGIT:
                assert svc.get(path, headers) == (status, body), (run, path)
            assert svc.get("/profile", {}) == (200, "banned: None")  # the data use stays healed
        finally:
            err = svc.stop()
        if run == 0:
            assert "patched" in err and "declined" in err, err[-3000:]
            assert "not healed" in err and "decides control flow" in err, err[-3000:]
    assert any(p.suffix == ".overlay" for p in overlays.iterdir())  # the helper healed for /profile
    assert all(200 not in statuses for statuses in seen.values()), seen


def test_a_truth_value_passed_to_a_method_is_followed_into_every_definition(tmp_path: Path) -> None:
    # `self.answer(ok)` runs the class's own answer() or a loaded subclass's override:
    # each is followed, and one that decides with the flag makes the call a gate.
    mod = _module(tmp_path, """
        class Shaper:
            def pad(self, text, wide):
                if wide:
                    text = text.center(12)
                return text
            def show(self, d):
                return self.pad("row", d.w > 3) + "|"
            @staticmethod
            def mark(flag):
                sign = ""
                if flag:
                    sign = "*"
                return sign
            def marked(self, d):
                return self.mark(d.w > 3) + "row"
        class Strict(Shaper):
            def pad(self, text, wide):
                if not wide:
                    raise ValueError("too narrow")
                return text
        class Handler:
            def answer(self, ok):
                if ok:
                    return "GRANTED"
                return "denied"
            def handle(self, d):
                return self.answer(d.user not in ("mallory",))
        class Plain:
            def pad(self, text, wide):
                if wide:
                    text = text.center(12)
                return text
            def show(self, d):
                return self.pad("row", d.w > 3) + "|"
        """)
    def judged(fn: Any) -> Any:  # the value: `d.w` or `d.user`
        at = next(i.offset for i in dis.get_instructions(fn) if i.opname == "LOAD_ATTR" and i.argval in ("w", "user"))
        return flow.verdict(flow.analyze(fn.__code__, at, "value", vars(mod)))
    assert judged(mod.Plain.show).action == "heal"          # the one definition shapes data
    refused = judged(mod.Shaper.show)                       # Strict's override raises on the flag
    assert refused.action == "refuse" and "Strict.pad" in refused.reason, refused
    refused = judged(mod.Handler.handle)
    assert refused.action == "refuse" and "Handler.answer" in refused.reason, refused
    marked = judged(mod.Shaper.marked)                      # a static method returns a choice,
    assert marked.action == "heal" and marked.returned == "choice", marked  # returned to the callers


def test_an_awaited_value_is_judged_in_its_awaiting_callers(model: Any, tmp_path: Path) -> None:
    # A coroutine's return value reaches its caller as the result of ``await`` (SEND's
    # taken edge): followed there on every version, never "not known".
    mod = _module(tmp_path, """
        async def flag(u):
            return u.flag
        async def decides(u):
            if await flag(u):
                return 403
            return 200
        async def shows(u):
            return "flag=%s" % await flag(u)
    """)
    for caller, expected in (("decides", "decides"), ("shows", None)):
        fn = getattr(mod, caller)
        frames = [(fn.__code__, _offset(fn, "SEND"), vars(mod))]
        why = flow.callers_verdict(frames, "value")
        if expected is None:
            assert why is None, (caller, why)
        else:
            assert why is not None and expected in why and caller in why and "not known" not in why, why
