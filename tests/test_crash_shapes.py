"""Crash shapes that depend on how the interpreter lays out and runs a call
(docs/guards.md, "Where the crash site is"), through the real CLI.

Each shape is a small program written to ``tmp_path``: it crashes when run plainly,
``codesuture run`` heals it and prints the healed result, and ``python -m
codesuture.boot --no-heal`` prints the same from the overlay alone.

* a call into a Python function of the standard library that raises there
  (``os.path.join(base, None)``, ``string.Template.substitute`` with a key missing):
  3.11 and 3.12 run such a call inlined, and the calling frame's instruction offset
  (``tb_lasti``) is the last inline cache entry of its ``CALL``, not an instruction;
* a built-in called often enough to be specialized (``len``, ``ord``, ``sorted``,
  ``round(x, ndigits=2)``, ``open``): 3.11's specialized ``PRECALL`` makes the call
  itself, so the exception stands at the ``PRECALL``, not at the ``CALL``;
* the same shapes reached cold (first call), which every version runs unspecialized;
* ``f"{x:.2f}"`` with x None (``None.__format__`` takes no spec): ``''`` as data,
  refused where the formatted text decides a branch;
* one ordering meeting None on either side (a sort's ``__lt__``): one guard checks
  both operands, so the second crash at the site is healed by the same patch.
"""

from __future__ import annotations

import dis
import sys
import textwrap
from pathlib import Path

import pytest

from codesuture.crash.site import find_crash_site, instruction_at
from heal_helpers import crash_of
from heal_helpers import boot, heal, overlays_in, plain, write

WARM = 30  # calls before the crash: enough for the specializing interpreter to adapt

# name -> (program, RESULT line after the heal)
SHAPES: dict[str, tuple[str, str]] = {
    "stdlib_python_call": ("""
        import os
        def where(base, name):
            return os.path.join(base, name)
        print("RESULT", [where("a", "b"), where("a", None)])
        """, "RESULT ['a/b', None]"),
    "stdlib_python_call_key": ("""
        import string
        def render(vals):
            return string.Template("$x").substitute(vals)
        out = [render({"x": i}) for i in range(WARM)]
        print("RESULT", [out[-1], render({})])
        """, "RESULT ['29', None]"),
    "warm_len": ("""
        def size(x):
            return len(x)
        out = [size([1] * i) for i in range(WARM)]
        print("RESULT", [out[-1], size(None)])
        """, "RESULT [29, 0]"),
    "warm_ord": ("""
        def code(s):
            return ord(s)
        out = [code("a") for i in range(WARM)]
        print("RESULT", [out[-1], code("")])
        """, "RESULT [97, 0]"),
    "warm_sorted": ("""
        def order(xs):
            return sorted(xs)
        out = [order([2, 1]) for i in range(WARM)]
        print("RESULT", [out[-1], order([None, 1])])
        """, "RESULT [[1, 2], []]"),
    "warm_round_keyword": ("""
        def rnd(x):
            return round(x, ndigits=2)
        out = [rnd(1.234) for i in range(WARM)]
        print("RESULT", [out[-1], rnd(None)])
        """, "RESULT [1.23, 0]"),
    "warm_open": ("""
        def load(p):
            with open(p) as f:
                return f.read()
        out = [load(__file__)[:6] for i in range(WARM)]
        print("RESULT", [out[-1], load(__file__ + ".missing")])
        """, "RESULT ['WARM =', '']"),
    "compare_none_either_side": ("""
        class V:
            def __init__(self, k):
                self.k = k
            def __lt__(self, other):
                return self.k < other.k
            def __repr__(self):
                return f"V({self.k})"
        print("RESULT", sorted([V(2), V(None), V(1)]))
        """, "RESULT [V(None), V(1), V(2)]"),
    "compare_none_both_ways": ("""
        def before(a, b):
            return a < b
        class K:
            def __init__(self, k):
                self.k = k
            def __lt__(self, other):
                return before(self.k, other.k)
        print("RESULT", [x.k for x in sorted([K(2), K(None), K(1)])], [x.k for x in sorted([K(None), K(3)])])
        """, "RESULT [None, 1, 2] [None, 3]"),
    "format_spec_none": ("""
        def money(x):
            return f"{x:.2f}"
        print("RESULT", [money(1.5), money(None)])
        """, "RESULT ['1.50', '']"),
    "cold_len": ("""
        def size(x):
            return len(x)
        print("RESULT", [size([1]), size(None)])
        """, "RESULT [1, 0]"),
}


def _program(tmp_path: Path, name: str) -> Path:
    source = textwrap.dedent(SHAPES[name][0]).lstrip()
    return write(tmp_path / "app" / f"{name}.py", f"WARM = {WARM}\n{source}")


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shape_heals_and_reloads(tmp_path: Path, name: str) -> None:
    script, expected = _program(tmp_path, name), SHAPES[name][1]
    overlays = tmp_path / "overlays"
    crashed = plain(script)
    assert crashed.returncode != 0 and not crashed.results(), str(crashed)
    healed = heal(script, overlays)
    assert healed.returncode == 0, str(healed)
    assert healed.results() == [expected], str(healed)
    assert "not healed" not in healed.stderr, str(healed)
    assert len(overlays_in(overlays)) == 1, str(healed)
    again = boot(script, overlays)
    assert again.returncode == 0 and again.results() == [expected], str(again)


# name -> (program, the exception it keeps raising): a default would decide a branch.
REFUSED: dict[str, tuple[str, str]] = {
    "format_spec_gate": ("""
        def level(x):
            if f"{x:>3}" == "  0":
                return "GRANTED"
            return "denied"
        print("RESULT", level(None))
        """, "TypeError: unsupported format string passed to NoneType.__format__"),
    "stdlib_python_call_gate": ("""
        import os
        def allowed(path):
            if os.path.basename(path) == "":
                return "GRANTED"
            return "denied"
        print("RESULT", [allowed("/a/b") for _ in range(WARM)][-1], allowed(None))
        """, "TypeError: expected str, bytes or os.PathLike object, not NoneType"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_shape_deciding_a_branch_is_refused(tmp_path: Path, name: str) -> None:
    source, error = REFUSED[name]
    script = write(tmp_path / "app" / f"{name}.py", f"WARM = {WARM}\n{textwrap.dedent(source).lstrip()}")
    overlays = tmp_path / "overlays"
    refused = heal(script, overlays)
    assert refused.returncode == 1 and not refused.results(), str(refused)
    assert "a default must not choose a branch" in refused.stderr, str(refused)
    assert refused.stderr.rstrip().splitlines()[-1].startswith(error) or error in refused.stderr, str(refused)
    assert not overlays_in(overlays), str(refused)


_crash = crash_of


def _calls_at(code: object, offset: int) -> bool:
    return any(i.offset == offset and i.opname in ("CALL", "CALL_KW") for i in dis.get_instructions(code))  # type: ignore[arg-type]


def test_site_of_an_inlined_python_call_is_the_call(tmp_path: Path) -> None:
    """The frame that called a Python function which raised below it stands at its
    CALL, whatever offset the interpreter reported for it."""
    import os

    def where(base: str, name: object) -> str:
        return os.path.join(base, name)  # type: ignore[arg-type]

    for _ in range(WARM):
        where("a", "b")
    exc = _crash(where, "a", None)
    site = find_crash_site(exc)
    assert site.code is where.__code__ and not site.raised_here
    assert _calls_at(where.__code__, site.offset), (site.offset, site.opname)
    assert site.opname in ("CALL", "CALL_KW")


def test_site_of_a_specialized_builtin_call_is_the_call() -> None:
    def size(x: object) -> int:
        return len(x)  # type: ignore[arg-type]

    for i in range(WARM):
        size([1] * i)
    exc = _crash(size, None)
    site = find_crash_site(exc)
    assert site.raised_here and site.opname == "CALL", (site.offset, site.opname)
    assert _calls_at(size.__code__, site.offset)


def test_instruction_at_maps_cache_entries_and_precall() -> None:
    def f(x: object) -> int:
        return len(x)  # type: ignore[arg-type]

    code = f.__code__
    calls = [i for i in dis.get_instructions(code) if i.opname == "CALL"]
    assert len(calls) == 1
    call = calls[0]
    assert instruction_at(code, call.offset) == (call.offset, "CALL")
    caches = [i.offset for i in dis.get_instructions(code, show_caches=True)
              if i.opname == "CACHE" and i.offset > call.offset] if sys.version_info < (3, 13) else []
    for offset in caches[:1]:  # an offset inside the CALL's inline cache
        assert instruction_at(code, offset) == (call.offset, "CALL")
    for ins in dis.get_instructions(code):
        if ins.opname == "PRECALL":  # 3.11
            assert instruction_at(code, ins.offset) == (call.offset, "CALL")
