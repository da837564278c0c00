"""Location tables (``co_linetable``) of patched code objects: validated, and repaired
when the ``bytecode`` library wrote them wrong.

Spec followed: CPython ``Objects/locations.md``. The format is the same in 3.11, 3.12
and 3.13. The table is a run of entries; each covers 1-8 code units (2-byte units of
``co_code``, an instruction's EXTENDED_ARG prefix and CACHE entries included) and
starts with a byte ``1 cccc lll`` (bit 7 set, code, length - 1). **Every further byte
of an entry has bit 7 clear.** The codes:

=====  ===========  ======================  ===============  ==========================
code   form         start line              end line         columns (start, end)
=====  ===========  ======================  ===============  ==========================
0-9    short        previous                start            ``code*8 + (b>>4 & 7)``, ``start + (b & 15)``
10-12  one line     previous + (code - 10)  start            one byte each, < 128
13     no column    previous + svarint      start            None, None
14     long         previous + svarint      start + varint   varint - 1 each (-1: None)
15     no location  None                    None             None, None
=====  ===========  ======================  ===============  ==========================

varint: 6-bit chunks, least significant first, bit 6 = more follows; svarint: ``v<<1``
or ``(-v)<<1 | 1``. "Previous" is the start line of the last entry that had one, and
``co_firstlineno`` before the first.

Per version: the format and the form choices are the same in 3.11, 3.12 and 3.13;
only the grouping differs. 3.11's assembler writes each instruction's own entries,
3.12 and 3.13 merge consecutive instructions at one position (:func:`encode`
follows the running version; its bytes equal CPython's for every code object of the
standard library on all three).

Why bit 7 matters. ``locations.md`` calls the one-line columns "unsigned byte", but
CPython reads the table two ways: ``co_positions()`` decodes entry by entry, while
``co_lines()``, ``PyCode_Addr2Line`` (tracebacks, ``f_lineno``), line tracing and 3.11's
per-code-unit line array (``_PyCode_CreateLineArray``, built when a tracer runs) find
the next entry by skipping to the next byte with bit 7 set (``advance()`` in
``Objects/codeobject.c``). CPython's own assembler (``write_location_info_entry`` in
``Python/compile.c`` 3.11, ``Python/assemble.c`` 3.12/3.13) therefore uses the
one-line form only for columns < 128. ``bytecode`` 0.19.1 uses it up to 255 (for an
entry one or two lines below the previous one: typically a line's first instruction),
and a column of 128-255 then reads as an entry header. On 3.11 the tracer's line array is written
past its end (heap corruption, ``malloc(): invalid size``). On 3.12/3.13, ``co_lines()``
and line events after that entry have the wrong line numbers and lengths, while
``co_positions()`` still looks right.

:func:`checked` is the one entry point (called in :mod:`codesuture.patch.synthesize`
right after ``Bytecode.to_code()``, before the code object is used anywhere).
Positions are ``(lineno, end_lineno, col_offset, end_col_offset)`` tuples as
``co_positions()`` yields them: lines 1-based (0 is the module's RESUME), columns 0-based UTF-8 byte
offsets, None where absent.
"""

from __future__ import annotations

import dis
import sys
import types
from typing import Any, Optional, Sequence

from bytecode import Instr, SetLineno

from codesuture.errors import PatchError

Position = tuple[Optional[int], Optional[int], Optional[int], Optional[int]]

NO_POSITION: Position = (None, None, None, None)

_NOT_REAL = ("CACHE", "EXTENDED_ARG")
_SHORT_MAX_COL = 80      # short form: code = col // 8 must be 0-9
_SHORT_MAX_SPAN = 16     # short form: end - start in 4 bits
_ONE_LINE_MAX_COL = 128  # one-line form: column bytes must keep bit 7 clear


# --- the format --------------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"varint of a negative number {value}")
    out = bytearray()
    while True:
        chunk = value & 0x3F
        value >>= 6
        if value:
            out.append(chunk | 0x40)
        else:
            out.append(chunk)
            return bytes(out)


def _svarint(value: int) -> bytes:
    return _varint(((-value) << 1) | 1 if value < 0 else value << 1)


def _entry(size: int, pos: Position, line: int) -> tuple[bytes, int]:
    """One entry of *size* (1-8) code units at *pos*; *line* is the previous start
    line. Returns ``(bytes, start line for the next entry)``. The form is the one
    CPython's assembler picks for the same position."""
    head = lambda code: bytes([0x80 | (code << 3) | (size - 1)])  # noqa: E731
    lineno, end_lineno, col, end_col = pos
    if lineno is None:
        return head(15), line
    delta = lineno - line
    end_lineno = lineno if end_lineno is None else end_lineno
    if end_lineno < lineno:
        raise ValueError(f"end line {end_lineno} before start line {lineno}")
    if col is None or end_col is None:
        if end_lineno == lineno:
            return head(13) + _svarint(delta), lineno
        return head(14) + _svarint(delta) + _varint(end_lineno - lineno) + _varint(0) + _varint(0), lineno
    if col < 0 or end_col < 0:
        raise ValueError(f"negative column in {pos}")
    if end_lineno == lineno:
        if delta == 0 and col < _SHORT_MAX_COL and 0 <= end_col - col < _SHORT_MAX_SPAN:
            return head(col // 8) + bytes([((col % 8) << 4) | (end_col - col)]), lineno
        if 0 <= delta < 3 and col < _ONE_LINE_MAX_COL and end_col < _ONE_LINE_MAX_COL:
            return head(10 + delta) + bytes([col, end_col]), lineno
    return (head(14) + _svarint(delta) + _varint(end_lineno - lineno)
            + _varint(col + 1) + _varint(end_col + 1)), lineno


def encode(runs: Sequence[tuple[int, Position]], firstlineno: int, *, merge: bool | None = None) -> bytes:
    """The location table for *runs*: ``(code units, position)`` per instruction, in
    code order (an instruction's units include its EXTENDED_ARG prefix and CACHE
    entries); line deltas start from *firstlineno*. Entries cover at most 8 units, so
    a longer run takes several. *merge* (default: on 3.12+) lets consecutive
    instructions at the same position share entries, as CPython's assembler does from
    3.12 on; 3.11's writes each instruction's own. With that, the bytes are the ones
    CPython writes for the same positions. Raises ``ValueError`` for a position the
    format cannot hold (end line before start line, negative column)."""
    if merge is None:
        merge = sys.version_info >= (3, 12)
    grouped: list[list[Any]] = []
    for size, pos in runs:
        if merge and grouped and grouped[-1][1] == pos:
            grouped[-1][0] += size
        elif size > 0:
            grouped.append([size, pos])
    out = bytearray()
    line = firstlineno
    for size, pos in grouped:
        while size > 0:
            data, line = _entry(min(size, 8), pos, line)
            out += data
            size -= 8
    return bytes(out)


def decode(table: bytes, firstlineno: int) -> list[Position]:
    """One position per code unit, strictly by the spec (above). Raises
    ``ValueError`` on a malformed table: an entry not starting with bit 7 set, a byte
    inside an entry with bit 7 set, an unknown code or a truncated entry."""
    out: list[Position] = []
    line = firstlineno
    i = 0
    n = len(table)

    def byte() -> int:
        nonlocal i
        if i >= n:
            raise ValueError(f"entry truncated at byte {i}")
        b = table[i]
        if b & 0x80:
            raise ValueError(f"byte {i} (0x{b:02x}) inside an entry has bit 7 set; it reads as an entry start")
        i += 1
        return b

    def varint() -> int:
        b = byte()
        value, shift = b & 0x3F, 0
        while b & 0x40:
            b = byte()
            shift += 6
            value |= (b & 0x3F) << shift
        return value

    def svarint() -> int:
        u = varint()
        return -(u >> 1) if u & 1 else u >> 1

    while i < n:
        b = table[i]
        if not b & 0x80:
            raise ValueError(f"byte {i} (0x{b:02x}) should start an entry but has bit 7 clear")
        i += 1
        code, size = (b >> 3) & 0x0F, (b & 7) + 1
        pos: Position
        if code == 15:
            pos = NO_POSITION
        elif code == 14:
            line += svarint()
            end = line + varint()
            col, end_col = varint() - 1, varint() - 1
            pos = (line, end, col if col >= 0 else None, end_col if end_col >= 0 else None)
        elif code == 13:
            line += svarint()
            pos = (line, line, None, None)
        elif code >= 10:
            line += code - 10
            col = byte()
            pos = (line, line, col, byte())
        else:
            second = byte()
            col = code * 8 + ((second >> 4) & 7)
            pos = (line, line, col, col + (second & 15))
        out.extend([pos] * size)
    return out


# --- what the table must say ----------------------------------------------------


def _normal(loc: Any) -> Position:
    """The position ``co_positions()`` reports for an instruction at *loc* (an
    ``InstrLocation``): no line -> all None; no columns -> end line = start line
    unless given."""
    lineno, end_lineno = loc.lineno, loc.end_lineno
    if lineno is None:
        return NO_POSITION
    end_lineno = lineno if end_lineno is None else end_lineno
    if loc.col_offset is None or loc.end_col_offset is None:
        return (lineno, end_lineno, None, None)
    return (lineno, end_lineno, loc.col_offset, loc.end_col_offset)


def expected_positions(instrs: Sequence[Any], firstlineno: int) -> list[Position]:
    """One position per ``Instr`` of *instrs* (CACHE/EXTENDED_ARG skipped): its
    ``location``; an instruction without one inherits the current location the way
    ``bytecode``'s assembler does (the last located instruction, or a later
    ``SetLineno`` as a line without columns, or *firstlineno* at the start)."""
    current: Position = (firstlineno, firstlineno, None, None)
    out: list[Position] = []
    for ins in instrs:
        if isinstance(ins, SetLineno):
            current = (ins.lineno, ins.lineno, None, None)
        elif isinstance(ins, Instr):
            loc = ins.location
            if loc is not None:
                current = _normal(loc)
            if ins.name not in _NOT_REAL:
                out.append(current)
    return out


def instruction_spans(code: types.CodeType) -> list[tuple[int, int, str]]:
    """``(first unit, end unit, opname)`` of each real instruction of *code*, as
    ``dis.get_instructions`` lists them without CACHE and EXTENDED_ARG; a span covers
    the instruction's EXTENDED_ARG prefix and its CACHE entries (units, not bytes)."""
    starts: list[tuple[int, str]] = []
    prefix: int | None = None
    for ins in dis.get_instructions(code):
        if ins.opname == "EXTENDED_ARG":
            prefix = ins.offset if prefix is None else prefix
            continue
        if ins.opname == "CACHE":
            continue
        starts.append(((ins.offset if prefix is None else prefix) // 2, ins.opname))
        prefix = None
    units = len(code.co_code) // 2
    return [(s, starts[k + 1][0] if k + 1 < len(starts) else units, name) for k, (s, name) in enumerate(starts)]


def _table_problem(code: types.CodeType, spans: Sequence[tuple[int, int, str]], want: Sequence[Position]) -> str | None:
    """Why *code*'s location table does not say *want* (one position per real
    instruction), or None when it does. CPython's own readers (``co_positions()``,
    ``co_lines()``) are consulted only once the strict decode passed, so they never
    see a malformed table."""
    units = len(code.co_code) // 2
    try:
        decoded = decode(code.co_linetable, code.co_firstlineno)
    except ValueError as exc:
        return f"malformed: {exc}"
    if len(decoded) != units:
        return f"covers {len(decoded)} code units, the code has {units}"
    for k, ((start, end, name), pos) in enumerate(zip(spans, want)):
        for u in range(start, end):
            if decoded[u] != pos:
                return f"instruction {k} ({name}, code unit {u}) is at {decoded[u]}, expected {pos}"
    if [tuple(p) for p in code.co_positions()] != decoded:
        return "co_positions() disagrees with the table"
    lines: list[Optional[int]] = [None] * units
    for s, e, line in code.co_lines():
        for u in range(s // 2, e // 2):
            if u < units:
                lines[u] = line
    for u, (line, pos) in enumerate(zip(lines, decoded)):
        if line != pos[0]:
            return f"co_lines() gives line {line} at code unit {u}, the table says {pos[0]}"
    return None


def _firstlineno_problem(code: types.CodeType, opnames: Sequence[str], want: Sequence[Position],
                         original: int | None) -> str | None:
    first = code.co_firstlineno
    if original is not None and first != original:
        return f"co_firstlineno is {first}, the original code's is {original}"
    if first < 0:
        return f"co_firstlineno is {first}"
    # CPython puts the prologue's RESUME on co_firstlineno (line 0 in module code) and
    # no instruction on an earlier line (true of every code object of the standard
    # library on 3.11, 3.12 and 3.13).
    resume = next((p for p, op in zip(want, opnames) if op == "RESUME"), None)
    if resume is not None and resume[0] not in (None, 0, first):
        return f"co_firstlineno is {first}, the prologue (RESUME) is on line {resume[0]}"
    early = [p[0] for p in want if p[0] and p[0] < first]
    if early:
        return f"co_firstlineno is {first}, an instruction is on line {min(early)}"
    return None


# --- the entry point -----------------------------------------------------------------


def checked(code: types.CodeType, instrs: Sequence[Any], *, firstlineno: int | None = None,
            repair: bool = True) -> types.CodeType:
    """Return *code* (assembled from the abstract *instrs*: ``Instr``, ``Label``,
    ``TryBegin``, ``TryEnd``, ``SetLineno``) once its locations are right: the k-th real
    instruction (CACHE and EXTENDED_ARG not counted), in every code unit it spans, is at
    the position of the k-th ``Instr`` (see :func:`expected_positions`), as read by this
    module's strict decoder, ``co_positions()`` and ``co_lines()`` alike; and
    ``co_firstlineno`` is the original code's (*firstlineno*, or
    ``instrs.first_lineno`` when *instrs* is a ``Bytecode``; without either, it must at
    least agree with the prologue and precede every line).

    A wrong table is re-encoded (:func:`encode`, CPython's form choices) and the result
    checked again; a wrong ``co_firstlineno`` is replaced when the original is known.
    A table that is already right is returned untouched, byte for byte (overlays are
    rebuilt and compared before signing). ``repair=False`` only validates.

    Raises :class:`PatchError` when the instructions do not match *instrs* or the
    locations cannot be made right: such a code object must never be installed.
    """
    name = getattr(code, "co_qualname", code.co_name)
    if firstlineno is None:
        firstlineno = getattr(instrs, "first_lineno", None)
    spans = instruction_spans(code)
    want = expected_positions(instrs, code.co_firstlineno if firstlineno is None else firstlineno)
    if len(spans) != len(want):
        raise PatchError(
            f"location table of {name}: the code has {len(spans)} instructions, the patch assembled {len(want)}"
        )
    opnames = [op for _, _, op in spans]
    names = [ins.name for ins in instrs if isinstance(ins, Instr) and ins.name not in _NOT_REAL]
    for k, (opname, expected) in enumerate(zip(opnames, names)):
        if opname != expected:  # the assembler renamed or reordered something: positions cannot be paired
            raise PatchError(f"location table of {name}: instruction {k} is {opname}, the patch assembled {expected}")

    problem = _firstlineno_problem(code, opnames, want, firstlineno)
    if problem is None:
        problem = _table_problem(code, spans, want)
        if problem is None:
            return code
    if not repair:
        raise PatchError(f"location table of {name} is wrong: {problem}")
    first = code.co_firstlineno if firstlineno is None else firstlineno
    if _firstlineno_problem(code.replace(co_firstlineno=first), opnames, want, firstlineno) is not None:
        raise PatchError(f"location table of {name} cannot be repaired: {problem}")
    try:
        table = encode([(end - start, pos) for (start, end, _), pos in zip(spans, want)], first)
    except ValueError as exc:
        raise PatchError(f"location table of {name} cannot be encoded: {exc}") from exc
    fixed = code.replace(co_firstlineno=first, co_linetable=table)
    still = _firstlineno_problem(fixed, opnames, want, firstlineno) or _table_problem(fixed, spans, want)
    if still is not None:
        raise PatchError(f"location table of {name} is wrong ({problem}) and re-encoding did not fix it: {still}")
    return fixed

