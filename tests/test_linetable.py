"""Location tables of patched code objects (:mod:`codesuture.patch.linetable`), on the
running Python.

``bytecode`` 0.19.1 writes columns 128-255 in the one-line form, whose bytes then have
bit 7 set and read as entry starts to CPython's line iterator: on 3.11 a tracer
corrupts the heap, on 3.12/3.13 ``co_lines()``, line events and the line numbers a
debugger shows are wrong after that entry. Each case below crashes for real in a file
under ``tmp_path``, is diagnosed and synthesized as the healer does, and the patched
code is checked against oracles that do not use the module under test:

* the original instructions, as ``(opname, co_positions(), co_lines() line)``, appear
  in the patched code in order (guards remove nothing), and ``co_firstlineno`` is kept;
* the guard's own instructions carry positions of the original instructions;
* ``co_lines()`` agrees with ``co_positions()`` in every code unit;
* the healed function returns the documented value; in a child process under
  ``sys.settrace`` with ``-X dev`` and ``PYTHONMALLOC=debug`` it exits cleanly and
  reports the right line events.
"""

from __future__ import annotations

import dis
import os
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from codesuture.crash.diagnose import diagnose
from codesuture.crash.site import find_crash_site
from codesuture.errors import PatchError
from codesuture.patch import linetable
from codesuture.patch.spec import PatchRecord
from codesuture.patch.synthesize import synthesize

MISSING = "/nonexistent-codesuture-dir/missing.txt"


# --- helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One guard scenario: *setup* lines, then *stmt* (computes ``value``) starting a
    physical line at column *col* (None: at the body's indentation), then *after*
    lines."""

    id: str
    setup: tuple[str, ...]
    stmt: str
    expect: object
    col: int | None = 130
    after: tuple[str, ...] = ()


def source(case: Case) -> str:
    """``def target(): ...; return value``. With ``case.col`` the statement follows a
    backslash continuation, so its first instruction opens a new line in the location
    table at a wide column (``bytecode`` writes such entries in the one-line form:
    the bug)."""
    lines = case.stmt.splitlines()
    if case.col is not None:
        assert case.col >= 4, case
        lines = ["pad = 0; \\", " " * (case.col - 4) + lines[0], *lines[1:]]
    body = [*case.setup, *lines, *case.after, "tail = 1", "return value"]
    return "import io\n\n\ndef target():\n" + "".join(f"    {line}\n" for line in body)


def real(code: types.CodeType) -> list[tuple[str, tuple, int | None]]:
    """``(opname, co_positions() of the instruction, co_lines() line)`` per real
    instruction (CACHE and EXTENDED_ARG not counted)."""
    positions = list(code.co_positions())
    lines: dict[int, int | None] = {}
    for start, end, line in code.co_lines():
        for off in range(start, end, 2):
            lines[off] = line
    return [(i.opname, tuple(positions[i.offset // 2]), lines.get(i.offset))
            for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG")]


def assert_lines_agree(code: types.CodeType) -> None:
    """``co_lines()`` (CPython's line iterator) and ``co_positions()`` (its full
    decoder) give the same line in every code unit."""
    positions = list(code.co_positions())
    assert len(positions) == len(code.co_code) // 2
    seen = 0
    for start, end, line in code.co_lines():
        for unit in range(start // 2, end // 2):
            assert unit < len(positions), f"co_lines() runs past the code: unit {unit}"
            assert line == positions[unit][0], (
                f"code unit {unit}: co_lines() says line {line}, co_positions() {positions[unit]}")
            seen += 1
    assert seen == len(positions)


def assert_kept(orig: types.CodeType, new: types.CodeType) -> None:
    """Every original instruction keeps its name, positions and line, in order; the
    guard's instructions sit at original positions; co_firstlineno is unchanged."""
    assert new.co_firstlineno == orig.co_firstlineno
    before, after = real(orig), real(new)
    it = iter(after)
    for ins in before:
        assert any(ins == got for got in it), f"original {ins} lost or moved in the patched code:\n{after}"
    known = {pos for _, pos, _ in before}
    for name, pos, line in after:
        assert pos in known, f"{name} at {pos}: not a position of the original code"
        assert line == pos[0], f"{name}: co_lines() line {line}, co_positions() {pos}"
    assert_lines_agree(new)


@dataclass
class Healed:
    ns: dict
    orig: types.CodeType  # the crashing function's code
    raw: types.CodeType  # as bytecode assembled it, before linetable.checked
    new: types.CodeType  # what synthesize returned
    record: PatchRecord

    @property
    def raw_table_broken(self) -> bool:
        """bytecode's own table had a byte with bit 7 set inside an entry."""
        try:
            linetable.decode(self.raw.co_linetable, self.raw.co_firstlineno)
        except ValueError as exc:
            return "bit 7" in str(exc)
        return False


def crash_and_patch(case_src: str, tmp_path: Path, call: str = "target()") -> Healed:
    """Run *case_src* from a real file, crash, diagnose and synthesize as the healer
    does."""
    path = tmp_path / f"lt_{abs(hash(case_src)) % 10**8}.py"
    path.write_text(case_src)
    ns: dict = {"__name__": path.stem}
    exec(compile(case_src, str(path), "exec"), ns)
    with pytest.raises(Exception) as info:
        eval(call, ns)
    exc = info.value
    site = find_crash_site(exc)
    spec = diagnose(exc, site)
    line, _end, col, end_col = site.positions
    rec = PatchRecord(
        module=path.stem, qualname=site.code.co_qualname, firstlineno=site.code.co_firstlineno,
        offset=site.offset, opname=site.opname, line=line, col=col, end_col=end_col,
        expression=site.expression, exception=f"{type(exc).__name__}: {exc}", guard=spec,
    )
    raw: list[types.CodeType] = []
    real_checked = linetable.checked

    def spy(code, instrs, **kw):
        raw.append(code)
        return real_checked(code, instrs, **kw)

    linetable.checked = spy
    try:
        new = synthesize(site.code, rec).code
    finally:
        linetable.checked = real_checked
    return Healed(ns, site.code, raw[0], new, rec)


def patched_result(ns: dict, orig: types.CodeType, new: types.CodeType, call: str = "target()") -> object:
    """Swap *new* into every function running *orig* (as the healer's swap does) and
    evaluate *call*."""
    import gc

    for fn in gc.get_referrers(orig):
        if isinstance(fn, types.FunctionType) and fn.__code__ is orig:
            fn.__code__ = new
    for fn in ns.values():  # parents create closures from their co_consts
        if isinstance(fn, types.FunctionType) and orig in fn.__code__.co_consts:
            consts = tuple(new if c is orig else c for c in fn.__code__.co_consts)
            fn.__code__ = fn.__code__.replace(co_consts=consts)
    return eval(call, ns)


# --- every guard family, the crashing statement opening a line at a wide column -----

CASES = [
    Case("null-attr", ("x = None",), "value = x.real", None),
    Case("null-method", ("x = None",), "value = x.upper()", ""),  # None.upper() reads as ''.upper()
    Case("null-operator", ("x = None", "y = 3"), "x *= y", 0, after=("value = x",)),  # None reads as 0
    Case("null-operand", ("total = 10", "n = None"), "total += n", 10, after=("value = total",)),
    Case("null-membership", ("k = 'k'", "x = None"), "value = k in x", False),
    Case("key", ("d = {}", "k = 'missing'"), "value = d[k]", None),
    Case("subscript", ("x = None", "k = 'a'"), "value = x[k]", None),
    Case("subscript-slice", ("x = None", "i = 1"), "value = x[i:3]", None),
    Case("chain", ("d = {}",), "value = d['a']['b']", None),
    Case("index", ("s = [1, 2]", "i = 5"), "value = s[i]", 0),  # the empty value of the list's elements
    Case("list-bound", ("s = []",), "value = s[0]", None),
    Case("type-coercion-int", ("s = 'abc'",), "value = int(s)", 0),
    Case("type-coercion-float", ("s = 'abc'",), "value = float(s)", 0.0),
    Case("division", ("a = 1", "b = 0"), "value = a / b", 0.0),
    Case("floor-division", ("a = 7", "b = 0"), "value = a // b", 0),
    Case("str-coerce", ("n = 5",), "value = 'n=' + n", "n=5"),
    Case("file", (f"p = {MISSING!r}",), "value = open(p).read()", ""),
    Case("callable", ("f = None",), "value = f(1)", None),
    Case("callable-kw", ("f = None",), "value = f(1, key=2)", None),
]

# Multi-line expressions: the failing instruction spans lines, or sits at a wide
# column on a continuation line.
MULTILINE = [
    Case("attr-spans-lines", ("x = None",), "value = (x\n         .real)", None),
    Case("attr-on-wide-continuation", ("x = None",), "value = (0,\n" + " " * 140 + "x.real)[1]", None, col=None),
    Case("call-spans-lines", ("s = 'abc'",), "value = int(\n    s,\n)", 0, col=140),
    Case("key-spans-lines", ("d = {}", "k = 'k'"), "value = d[\n" + " " * 150 + "k\n]", None, col=200),
    Case("file-spans-lines", (f"p = {MISSING!r}",), "value = open(\n    p,\n).read()", "", col=131),
    Case("chain-on-wide-continuation", ("d = {}",), "value = (d['a']\n" + " " * 130 + "['b'])", None, col=None),
]

# Long lines: columns past 255 take the long form (several varint chunks); bytecode
# gets those right, and they must stay right.
LONG = [Case(f"attr-col-{c}", ("x = None",), "value = x.real", None, col=c) for c in (256, 300, 1000, 5000)]


@pytest.mark.parametrize("case", CASES + MULTILINE + LONG, ids=lambda c: c.id)
def test_guard_keeps_locations(case: Case, tmp_path: Path) -> None:
    healed = crash_and_patch(source(case), tmp_path)
    if case not in LONG:
        assert healed.raw_table_broken, "this case no longer exercises bytecode's one-line form bug"
    assert_lines_agree(healed.orig)  # the oracle holds for the compiler's own table
    assert_kept(healed.orig, healed.new)
    assert patched_result(healed.ns, healed.orig, healed.new) == case.expect


@pytest.mark.parametrize("col", range(120, 136))
def test_columns_around_the_one_line_form_limit(col: int, tmp_path: Path) -> None:
    """``value = x.real`` with ``x`` at *col*, first on its line: the line's first
    location entry starts or ends on both sides of 128."""
    case = Case(f"col-{col}", ("x = None",), "value = x.real", None, col=col - len("value = "))
    healed = crash_and_patch(source(case), tmp_path)
    assert healed.record.col == col
    if col >= 127:  # the line's first entry ends at >= 128 whatever its instruction
        assert healed.raw_table_broken
    assert_kept(healed.orig, healed.new)
    assert patched_result(healed.ns, healed.orig, healed.new) is None


# --- contexts and unchanged line numbers -----------------------------------------------

WIDE = "pad = 0; \\\n" + " " * 140

CONTEXTS = {
    # decorated: co_firstlineno is the decorator's line, not the def's
    "decorated": (textwrap.dedent("""
        import functools


        def deco(fn):
            @functools.wraps(fn)
            def inner(*a, **k):
                return fn(*a, **k)
            return inner


        @deco
        def target(x=None):
            '''Doc.'''
            first = 1

            WIDEvalue = x.real
            second = (first +
                      2)
            for i in range(2):
                second += i
            return value, second
        """).replace("WIDE", WIDE), "target()", (None, 4)),
    "method": (textwrap.dedent("""
        class C:
            def target(self, x=None):
                a = 1
                WIDEvalue = x.real
                b = a + 1
                return value, b
        """).replace("WIDE", WIDE), "C().target()", (None, 2)),
    "generator": (textwrap.dedent("""
        def gen(x=None):
            a = 1
            WIDEvalue = x.real
            yield value
            yield a
        """).replace("WIDE", WIDE), "list(gen())", [None, 1]),
    "closure": (textwrap.dedent("""
        def outer():
            tag = 7
            def target(x=None):
                WIDEvalue = x.real
                return value, tag
            return target
        """).replace("WIDE", WIDE), "outer()()", (None, 7)),
}


@pytest.mark.parametrize("ctx", sorted(CONTEXTS))
def test_unchanged_line_numbers(ctx: str, tmp_path: Path) -> None:
    """Every unchanged instruction keeps its positions and its line (as
    ``co_lines()``/``dis`` see it), also after the guard, and co_firstlineno is kept."""
    src, call, expect = CONTEXTS[ctx]
    healed = crash_and_patch(src, tmp_path, call=call)
    assert healed.raw_table_broken
    orig, new = healed.orig, healed.new
    assert_kept(orig, new)
    assert {line for _, line in dis.findlinestarts(new)} == {line for _, line in dis.findlinestarts(orig)}
    assert patched_result(healed.ns, orig, new, call) == expect


# --- a patched function under a tracer, in a child process -----------------------------

TRACED_APP = r'''import sys

class Obj:
    attr = None

def target(x, s, d):
    y = 1
    pad = 0; \
{pad_a}v = x.attr
    pad = 0; \
{pad_b}n = int(s)
    pad = 0; \
{pad_c}m = d["k"]
    w = (y +
         1)
    return v, n, m, w

def traced(*args):
    lines = []
    def tracer(frame, event, arg):
        if event == "line" and frame.f_code.co_name == "target":
            lines.append(frame.f_lineno - frame.f_code.co_firstlineno)
        return tracer
    sys.settrace(tracer)
    try:
        return target(*args), lines
    finally:
        sys.settrace(None)

good = (Obj(), "0", {{"k": None}})
first = traced(*(good if sys.argv[1:] == ["good"] else (None, "abc", {{}})))
second = traced(*good)
print("RESULT", first[0], first[1], second[1])
'''


def _child(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODESUTURE_") and k != "PYTHONPATH"}
    env.update(PYTHONMALLOC="debug", PYTHONUNBUFFERED="1", CODESUTURE_STATE_DIR=str(tmp_path / "state"))
    return subprocess.run([sys.executable, "-X", "dev", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def _result(out: str) -> tuple[str, list[int], list[int]]:
    """``RESULT (value) [lines] [lines again]`` -> its three parts."""
    line = out.strip().splitlines()[-1]
    assert line.startswith("RESULT "), out
    value, rest = line[len("RESULT "):].split(") [", 1)
    first, second = rest.rstrip("]").split("] [")
    ints = lambda text: [int(v) for v in text.split(", ") if v]  # noqa: E731
    return value + ")", ints(first), ints(second)


def _collapsed(lines: list[int]) -> list[int]:
    """Line events without immediate repeats (a guard's handler jumps back into its
    line, and CPython reports a line again after a backward jump)."""
    return [v for i, v in enumerate(lines) if i == 0 or lines[i - 1] != v]


@pytest.mark.parametrize("cols", [(130, 200, 240), (124, 127, 128), (300, 140, 1000)], ids=str)
def test_traced_after_heal_and_from_overlay(cols: tuple[int, int, int], tmp_path: Path) -> None:
    """Three crashes in one function, their statements opening lines at the columns
    *cols* (null_guard, then type_coercion_guard, then key_guard), healed by
    ``codesuture run`` while the script traces itself, then loaded from the overlay by
    ``codesuture.boot --no-heal``: both exit 0 under ``-X dev`` and
    ``PYTHONMALLOC=debug``, with the healed values and the original code's line events
    (plain Python, inputs that do not crash)."""
    pads = {key: " " * col for key, col in zip(("pad_a", "pad_b", "pad_c"), cols)}
    script = tmp_path / "app.py"
    script.write_text(TRACED_APP.format(**pads))
    reference = _child([str(script), "good"], tmp_path)
    assert reference.returncode == 0, reference.stderr
    value, lines, again = _result(reference.stdout)
    assert value == "(None, 0, None, 2)" and lines == again and lines[0] == 1 and lines[-1] == 10, reference.stdout
    overlays = tmp_path / "overlays"
    run = _child(["-m", "codesuture", "run", "--retries", "5", "--overlays", str(overlays), str(script)], tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("codesuture: WARNING patched") == 3, run.stderr
    boot = _child(["-m", "codesuture.boot", "--overlays", str(overlays), "--no-heal", str(script)], tmp_path)
    assert boot.returncode == 0, boot.stderr
    for child in (run, boot):
        assert "Fatal Python error" not in child.stderr and "Debug memory block" not in child.stderr, child.stderr
        got_value, got_lines, got_again = _result(child.stdout)
        assert got_value == value, child.stdout
        assert _collapsed(got_lines) == lines, child.stdout  # the healed (crashing) path
        assert got_again == lines, child.stdout  # the patched code on good inputs


def test_traced_in_a_child(tmp_path: Path) -> None:
    """The original report: a patched function whose ``x.attr`` is at column 136 (its
    line's first instruction at 129), run under ``sys.settrace`` in ``-X dev`` with
    ``PYTHONMALLOC=debug``."""
    child = textwrap.dedent(r'''
        import dis, sys
        from codesuture.patch.spec import GuardSpec, PatchRecord
        from codesuture.patch.synthesize import synthesize

        src = "def f():\n    x = None\n    " + "_" * 122 + " = 0; v = x.attr\n    w = 2\n    return v, w\n"
        ns = {}
        exec(compile(src, "<traced>", "exec"), ns)
        f = ns["f"]
        code = f.__code__
        site = next(i for i in dis.get_instructions(code) if i.opname == "LOAD_ATTR")
        pos = site.positions
        assert pos.col_offset == 136, pos
        rec = PatchRecord(module="m", qualname=code.co_qualname, firstlineno=code.co_firstlineno,
                          offset=site.offset, opname=site.opname, line=pos.lineno, col=pos.col_offset,
                          end_col=pos.end_col_offset, expression="x.attr", exception="AttributeError",
                          guard=GuardSpec("null_guard", "attr", "None"))
        f.__code__ = synthesize(code, rec).code
        lines = []
        def tracer(frame, event, arg):
            if event == "line" and frame.f_code is f.__code__:
                lines.append(frame.f_lineno)
            return tracer
        sys.settrace(tracer)
        result = f()
        sys.settrace(None)
        print("RESULT", result, lines)
    ''')
    r = _child(["-c", child], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "RESULT (None, 2) [2, 3, 4, 5]", r.stdout + r.stderr


# --- checked(): validation, repair, refusal --------------------------------------------

WIDE_CASE = Case("wide", ("x = None",), "value = x.real", None, col=130)


@pytest.fixture()
def assembled(tmp_path: Path):
    """``(raw code as bytecode assembled it, abstract instructions, original code)`` for
    a case where bytecode's table is wrong."""
    seen: dict = {}
    real_checked = linetable.checked

    def spy(code, instrs, **kw):
        seen.setdefault("raw", (code, list(instrs)))
        return real_checked(code, instrs, **kw)

    linetable.checked = spy
    try:
        healed = crash_and_patch(source(WIDE_CASE), tmp_path)
    finally:
        linetable.checked = real_checked
    assert healed.raw_table_broken
    code, instrs = seen["raw"]
    return code, instrs, healed.orig


def test_library_table_is_repaired(assembled) -> None:
    raw, instrs, orig = assembled
    fixed = linetable.checked(raw, instrs)
    assert fixed is not raw and fixed.co_code == raw.co_code and fixed.co_firstlineno == orig.co_firstlineno
    assert_kept(orig, fixed)
    assert linetable.checked(fixed, instrs) is fixed  # a right table is returned as is


def test_broken_tables_are_refused(assembled) -> None:
    """Each broken table is refused by validation (``repair=False``), and repaired from
    the instructions otherwise."""
    raw, instrs, _ = assembled
    good = linetable.checked(raw, instrs)
    table = good.co_linetable
    spans = linetable.instruction_spans(good)
    want = linetable.expected_positions(instrs, good.co_firstlineno)
    runs = [(end - start, pos) for (start, end, _), pos in zip(spans, want)]
    last = want[-1]
    broken = {
        "bit 7 inside an entry (bytecode's own table)": raw.co_linetable,
        "truncated": table[:-2],
        "too long": table + table[-2:],
        "lines shifted": linetable.encode(runs, good.co_firstlineno - 1),
        "a column wrong": linetable.encode(runs[:-1] + [(runs[-1][0], (last[0], last[1], 0, 1))], good.co_firstlineno),
        "empty": b"",
        "no entry start": bytes([table[0] & 0x7F]) + table[1:],
    }
    for what, bad in broken.items():
        code = good.replace(co_linetable=bad)
        with pytest.raises(PatchError, match="location table"):
            linetable.checked(code, instrs, repair=False)
        assert linetable.checked(code, instrs).co_linetable == table, what


def test_unrepairable_table_is_refused(assembled, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """When re-encoding does not give a right table (here: a broken encoder) the code
    object is refused, also by synthesize, so it is never installed."""
    raw, instrs, _ = assembled
    monkeypatch.setattr(linetable, "encode", lambda runs, firstlineno, **kw: b"\x80\xff" * len(runs))
    with pytest.raises(PatchError, match="re-encoding did not fix it"):
        linetable.checked(raw, instrs)
    (tmp_path / "again").mkdir()
    with pytest.raises(PatchError, match="location table"):
        crash_and_patch(source(WIDE_CASE), tmp_path / "again")


def test_instructions_that_do_not_match_are_refused(assembled) -> None:
    from bytecode import Instr

    raw, instrs, _ = assembled
    k = max(i for i, ins in enumerate(instrs) if isinstance(ins, Instr) and ins.name == "POP_TOP")
    dropped = instrs[:k] + instrs[k + 1 :]
    with pytest.raises(PatchError, match="location table"):
        linetable.checked(raw, dropped)
    renamed = [Instr("NOP", location=ins.location) if i == k else ins for i, ins in enumerate(instrs)]
    with pytest.raises(PatchError, match="location table"):
        linetable.checked(raw, renamed)


def test_wrong_firstlineno(assembled) -> None:
    raw, instrs, orig = assembled
    good = linetable.checked(raw, instrs)
    moved = good.replace(co_firstlineno=good.co_firstlineno + 2)
    # Original unknown: the prologue (RESUME) is on the real first line -> refused.
    with pytest.raises(PatchError, match="co_firstlineno"):
        linetable.checked(moved, instrs)
    # Original known: restored, and the table encoded against it.
    fixed = linetable.checked(moved, instrs, firstlineno=orig.co_firstlineno)
    assert fixed.co_firstlineno == orig.co_firstlineno
    assert_kept(orig, fixed)
    with pytest.raises(PatchError, match="co_firstlineno"):
        linetable.checked(good, instrs, firstlineno=orig.co_firstlineno + 1, repair=False)


def test_right_tables_are_left_byte_for_byte(tmp_path: Path) -> None:
    """Narrow columns: bytecode's table is right and is returned untouched (overlays
    are rebuilt and compared byte for byte before signing)."""
    for case in CASES:
        healed = crash_and_patch(source(Case(case.id, case.setup, case.stmt, case.expect, col=None)), tmp_path)
        assert healed.new is healed.raw, case.id


# --- the codec against CPython's own tables ---------------------------------------------


def _codes() -> list[types.CodeType]:
    import json.decoder

    out: list[types.CodeType] = []
    modules = (dis, textwrap, json.decoder, linetable)
    sources = [(Path(m.__file__).read_text(encoding="utf-8"), m.__file__) for m in modules]
    sources += [(source(c), "<case>") for c in CASES + MULTILINE + LONG]
    sources += [(src, "<ctx>") for src, _, _ in CONTEXTS.values()]
    for text, filename in sources:
        stack = [compile(text, filename, "exec")]
        while stack:
            c = stack.pop()
            out.append(c)
            stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return out


def test_codec_matches_cpython() -> None:
    """decode() reads what co_positions() reads; encode() writes the bytes CPython's
    assembler writes for the same positions (3.11: an entry per instruction; 3.12+:
    runs of instructions at one position share entries)."""
    for code in _codes():
        units = linetable.decode(code.co_linetable, code.co_firstlineno)
        assert units == [tuple(p) for p in code.co_positions()], code.co_qualname
        runs = [(e - s, units[s]) for s, e, _ in linetable.instruction_spans(code)]
        assert linetable.encode(runs, code.co_firstlineno) == code.co_linetable, code.co_qualname


@pytest.mark.parametrize("col", [0, 7, 8, 79, 80, 126, 127, 128, 129, 200, 255, 256, 4095, 4096, 100000])
@pytest.mark.parametrize("delta", [-70, -1, 0, 1, 2, 3, 64, 5000])
def test_encode_each_form(col: int, delta: int) -> None:
    """Every position decodes back (the strict decoder refuses any byte after an
    entry's first with bit 7 set)."""
    first = 10000
    line = first + delta
    positions = [
        (line, line, col, col + 5),
        (line, line + 3, col, 2),
        (line, line, None, None),
        (None, None, None, None),
        (line, line + 1, None, None),
    ]
    for pos in positions:
        for size in (1, 3, 8, 9, 20):
            table = linetable.encode([(size, pos)], first)
            assert linetable.decode(table, first) == [pos] * size
