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

