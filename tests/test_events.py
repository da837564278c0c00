"""The guards' slow-path report (codesuture.runtime.events), in process, every guard.

Each case of the guard matrix is healed live; then, inside a unit of work, the patched
function is called with the failing input: the guard reports its site exactly once,
and the unit's ``X-CodeSuture`` header names it. When ``fired`` answers True (and
``fire`` and ``caught``, the call-site guards' entry, answer None) the guard lets the
original operation raise its genuine exception. A healthy call reports nothing.
"""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from codesuture.runtime import events
from codesuture.runtime.healer import Healer
from test_guard_matrix import CASES


def _module(tmp_path, case):
    """A module ``evcase_<id>`` whose ``target(<locals>)`` computes the case's value."""
    name = "evcase_" + case.fn
    params = ", ".join(n for n, _ in case.locals_)
    body = "".join(f"    {s}\n" for s in case.stmts)
    (tmp_path / f"{name}.py").write_text(f"import re, io\n\ndef target({params}):\n{body}    return value\n")
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def as_data(fn, *args):
    """Call *fn* and hand its result on as data (kept in a list): the value-flow model
    sees a caller that stores it, not the ``assert`` below that decides with it (a
    guard whose value would decide a caller's assert declines: tests/test_value_flow.py)."""
    box = []
    box.append(fn(*args))
    return box[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_guard_reports_when_it_fires(case, tmp_path, monkeypatch):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    mod = _module(tmp_path, case)
    args = [eval(lit) for _, lit in case.locals_]  # noqa: S307 - the matrix's own literals
    with pytest.raises(Exception) as first:
        mod.target(*args)
    assert type(first.value).__name__ == case.exc
    healer = Healer(None)
    result = healer.heal(first.value)
    assert result is not None and result.record.guard.guard == case.guard
    site = f"{case.guard}@{mod.__name__}:{result.record.line}"
    before = events.COUNTS.get(site, 0)
    unit, token = events.begin()
    try:
        if case.expect in ("True", "False"):
            # A truth value made from a default is a decision wherever it goes (stored,
            # passed): its caller may only drop it (tests/test_value_flow.py).
            mod.target(*args)
        else:
            value = as_data(mod.target, *args)
    finally:
        events.end(token)
    if case.expect not in ("True", "False"):
        assert repr(value.read() if hasattr(value, "read") else value) == case.expect
    # A chain guard reports each link that yields: the failing one and the None after it.
    n = 2 if case.guard == "chain_subscript_guard" else 1
    assert unit.fired == [site] * n and events.COUNTS[site] == before + n
    assert unit.header() == f"guards={n}"  # counts only, unless the header setting says full
    assert unit.header(full=True) == f"guards={n}; guard={case.guard}; site={mod.__name__}:{result.record.line}"
    # Told to, the guard lets the operation raise its genuine exception.
    monkeypatch.setattr(events, "fired", lambda *a: True)
    monkeypatch.setattr(events, "fire", lambda *a: None)
    monkeypatch.setattr(events, "caught", lambda *a: None)  # the call-site guards' entry
    with pytest.raises(Exception) as again:
        mod.target(*args)
    assert type(again.value) is type(first.value) and str(again.value) == str(first.value)
    # The genuine exception left the guard's handler as CPython's own ``except`` would:
    # nothing is still "being handled", so nothing chains onto the next exception.
    assert sys.exc_info() == (None, None, None)
    try:
        raise LookupError("next")
    except LookupError as nxt:
        assert nxt.__context__ is None, repr(nxt.__context__)
    sys.modules.pop(mod.__name__, None)


def test_a_healthy_call_reports_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "evhealthy.py").write_text(textwrap.dedent("""
        def get(d, k):
            return d[k]
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("evhealthy")
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(KeyError) as exc:
        mod.get({}, "k")
    assert Healer(None).heal(exc.value) is not None
    unit, token = events.begin()
    try:
        assert mod.get({"k": 1}, "k") == 1
    finally:
        events.end(token)
    assert unit.fired == [] and unit.header() is None and not unit.degraded
    assert events.current() is None
    sys.modules.pop("evhealthy", None)


def test_units_are_per_context():
    """A unit opened in one context (a request) does not see another's firings."""
    import contextvars

    seen = []

    def other():
        events.fired("key_guard@x:1")
        seen.append(events.current())

    unit, token = events.begin()
    try:
        contextvars.Context().run(other)
    finally:
        events.end(token)
    assert seen == [None] and unit.fired == []
