"""The one walk of a guard firing over its live callers (runtime/callers.py): EAFP and
the value-flow verdict together, and caches that a swapped function never reuses."""

from __future__ import annotations

import importlib

from codesuture.crash.handled import specific_names
from codesuture.runtime import callers

SOURCE = """
import sys
from codesuture.runtime import callers

SEEN = []
HANDLES = None

def get(d, k):
    SEEN.append(callers.check(sys._getframe(1), HANDLES, "value"))
    return d.get(k)

def use(d, k, out):
    out.append(get(d, k))

def gate_src(d, k, out):
    if get(d, k):
        out.append(1)
        return 403
    return 200

def eafp_src(d, k, out):
    try:
        out.append(get(d, k))
    except KeyError:
        pass

def top(fn, d, k):
    return fn(d, k, [])
"""


def _module(tmp_path, monkeypatch, name: str):
    (tmp_path / f"{name}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module(name)
    mod.HANDLES = specific_names(KeyError)
    return mod


def test_one_walk_answers_eafp_and_flow(tmp_path, monkeypatch):
    mod = _module(tmp_path, monkeypatch, "callers_case_a")
    for fn in (mod.use, mod.gate_src, mod.eafp_src):
        mod.top(fn, {}, "k")
        mod.top(fn, {}, "k")  # warm: the cached entries give the same answers
    data, data2, gate, gate2, eafp, eafp2 = mod.SEEN
    assert data == data2 == (False, None)
    assert gate == gate2 and gate[0] is False and "gate_src" in gate[1]
    assert eafp == eafp2 == (True, None)


def test_a_swapped_function_never_reuses_a_stale_entry(tmp_path, monkeypatch):
    mod = _module(tmp_path, monkeypatch, "callers_case_b")
    mod.top(mod.use, {}, "k")
    assert mod.SEEN[-1] == (False, None)
    # A later patch swaps the caller's code: the same function object, a new code
    # object (a gate, then an EAFP handler) at whatever offset: never the old verdict.
    mod.use.__code__ = mod.gate_src.__code__.replace(co_name="use", co_qualname="use")
    mod.top(mod.use, {}, "k")
    assert mod.SEEN[-1][0] is False and "use" in (mod.SEEN[-1][1] or "")
    mod.use.__code__ = mod.eafp_src.__code__.replace(co_name="use", co_qualname="use")
    mod.top(mod.use, {}, "k")
    assert mod.SEEN[-1] == (True, None)
    mod.use.__code__ = mod.gate_src.__code__.replace(co_name="use", co_qualname="use").replace()
    mod.top(mod.use, {}, "k")
    assert mod.SEEN[-1][1] is not None



SEEDED = """
import sys
from codesuture.runtime import callers

SEEN = []
SEED = [None]

def get(d, k):
    chain = []
    verdict = callers.check(sys._getframe(1), frozenset(), "value", chain, SEED)
    SEEN.append((verdict, [code.co_name for _, code in callers.frames(chain)]))
    return d.get(k)

def mid(d, k):
    return get(d, k)

def use(d, k, out):
    out.append(mid(d, k))

def gate_src(d, k, out):
    if mid(d, k):
        return 403
    return 200

def top(fn, d, k):
    return fn(d, k, [])
"""


def test_the_inline_caches_never_give_a_swapped_callers_old_verdict(tmp_path, monkeypatch):
    """The walk keeps, per guard site (*seed*) and per caller entry, the next caller it
    saw last time; a hit needs that very code object at that offset. Warm caches, then
    the outer caller swapped for a gate and back: each verdict follows the live code."""
    (tmp_path / "callers_seeded.py").write_text(SEEDED)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("callers_seeded")
    for _ in range(3):
        mod.top(mod.use, {}, "k")
    assert mod.SEEN[-1] == mod.SEEN[0] == ((False, None), ["mid", "use"])
    assert mod.SEED[0] is not None and mod.SEED[0][0] is mod.mid.__code__  # the site's inline cache is warm
    data_code = mod.use.__code__
    mod.use.__code__ = mod.gate_src.__code__.replace(co_name="use", co_qualname="use")
    for _ in range(2):
        mod.top(mod.use, {}, "k")
        (handled, why), names = mod.SEEN[-1]
        assert handled is False and why and "use" in why
        assert names == ["mid", "use"]
    mod.use.__code__ = data_code
    mod.top(mod.use, {}, "k")
    assert mod.SEEN[-1] == ((False, None), ["mid", "use"])
