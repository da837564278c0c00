"""Guard synthesis: code object + patch record -> patched code object.

Deterministic: the same code object and the same :class:`PatchRecord` give the same
patched code in any process on the same interpreter, which is what lets a live patch
and an overlay built later from source agree.
"""

from __future__ import annotations

import dis
import types
from dataclasses import dataclass
from typing import Any, Iterator

from bytecode import Bytecode, Instr

from codesuture.errors import PatchError
from codesuture.patch.spec import PatchRecord


@dataclass(frozen=True)
class Synthesis:
    """A patched code object and its instruction delta (counts of instructions;
    ``before``/``after`` are listings for ``--verbose``)."""

    code: types.CodeType
    added: int
    removed: int
    before: list[str]
    after: list[str]


def instruction_index(code: types.CodeType, offset: int) -> tuple[int, str]:
    """Map an instruction offset in bytes (``tb_lasti``) to ``(k, opname)``: the
    instruction is the k-th real instruction of ``Bytecode.from_code(code)``
    (CACHE and EXTENDED_ARG entries do not count)."""
    k = 0
    for ins in dis.get_instructions(code):
        if ins.offset == offset:
            return k, ins.opname
        if ins.offset > offset:
            break
        if ins.opname != "EXTENDED_ARG":
            k += 1
    raise PatchError(f"no instruction at offset {offset} in {code.co_qualname}")


def locate(
    bc: list[Any], code: types.CodeType, offset: int, opname: str, where: tuple[int | None, int | None] | None = None
) -> int:
    """Index in the abstract instruction list *bc* of the instruction at *offset*;
    when *where* ``(line, col)`` is given the instruction's position must match too."""
    k, found = instruction_index(code, offset)
    if found != opname:
        raise PatchError(f"instruction at offset {offset} of {code.co_qualname} is {found}, expected {opname}")
    seen = -1
    for i, ins in enumerate(bc):
        if isinstance(ins, Instr):
            seen += 1
            if seen == k:
                if ins.name != opname:
                    raise PatchError(f"bytecode mismatch at offset {offset}: {ins.name} != {opname}")
                loc = ins.location
                if where is not None and where[0] is not None and loc is not None:
                    if (loc.lineno, loc.col_offset) != where and (loc.lineno, None) != where:
                        raise PatchError(
                            f"instruction at offset {offset} of {code.co_qualname} is at line {loc.lineno} "
                            f"col {loc.col_offset}, expected line {where[0]} col {where[1]}"
                        )
                return i
    raise PatchError(f"offset {offset} is past the end of {code.co_qualname}")


def listing(bc: list[Any]) -> list[str]:
    return [f"{ins.name} {ins.arg!r}" if ins.require_arg() else ins.name for ins in bc if isinstance(ins, Instr)]


def synthesize(code: types.CodeType, record: PatchRecord) -> Synthesis:
    """Apply *record*'s guard to *code*.

    Raises :class:`PatchError` when the instruction is not where the record says, the
    guard does not fit the site, or the result does not assemble.
    """
    from codesuture.guards import registry

    guard = registry().get(record.guard.guard)
    if guard is None:
        raise PatchError(f"unknown guard {record.guard.guard!r}")
    bc = Bytecode.from_code(code)
    before = listing(bc)
    idx = locate(bc, code, record.offset, record.opname, (record.line, record.col))
    work = list(bc)
    rw = guard(work, idx, record.guard)
    work[rw.start : rw.stop] = rw.body
    work.extend(rw.tail)
    bc.clear()
    bc.extend(work)
    try:
        new = bc.to_code()
    except Exception as exc:  # the bytecode library raises several types here
        raise PatchError(f"{record.guard.guard} does not assemble in {code.co_qualname}: {exc}") from exc
    after = listing(bc)
    added, removed = _delta(before, after)
    return Synthesis(new, added, removed, before, after)


def _delta(before: list[str], after: list[str]) -> tuple[int, int]:
    import difflib

    added = removed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return added, removed


def walk_code(code: types.CodeType) -> Iterator[types.CodeType]:
    """*code* and every code object nested in its constants, depth first."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from walk_code(const)


def find_code(root: types.CodeType, qualname: str, firstlineno: int) -> types.CodeType | None:
    for c in walk_code(root):
        if c.co_qualname == qualname and c.co_firstlineno == firstlineno:
            return c
    return None


def replace_in_tree(root: types.CodeType, old: types.CodeType, new: types.CodeType) -> types.CodeType:
    """Return *root* with *old* replaced by *new* wherever it is nested (rebuilding
    each parent's ``co_consts``); *root* itself if *old* is not inside."""
    if root is old:
        return new
    changed = False
    consts = []
    for const in root.co_consts:
        if isinstance(const, types.CodeType):
            repl = replace_in_tree(const, old, new)
            changed |= repl is not const
            consts.append(repl)
        else:
            consts.append(const)
    return root.replace(co_consts=tuple(consts)) if changed else root


def apply_to_module(module_code: types.CodeType, records: list[PatchRecord]) -> types.CodeType:
    """Apply *records* in order to the code objects nested in *module_code*; the
    overlay builder and the loader's checks use this. Raises :class:`PatchError`."""
    for rec in records:
        target = find_code(module_code, rec.qualname, rec.firstlineno)
        if target is None:
            raise PatchError(f"{rec.qualname} (line {rec.firstlineno}) not found in {module_code.co_filename}")
        module_code = replace_in_tree(module_code, target, synthesize(target, rec).code)
    return module_code
