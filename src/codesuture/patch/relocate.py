"""Re-locate patch records on another interpreter, by source position.

A record's ``offset`` and ``opname`` belong to the interpreter that made it: bytecode
differs between 3.11, 3.12 and 3.13 (``LOAD_METHOD`` became a form of ``LOAD_ATTR``,
``x[a:b]`` became ``BINARY_SLICE``, ``CALL_KW`` appeared). Its source position
(``line``, ``end_line``, ``col``, ``end_col``) and its guard do not change. To apply it
elsewhere, find in that interpreter's code object of the same function the
instruction with exactly that position whose name is one of the failing
instruction's equivalents (:data:`EQUIVALENT`), and give the record that instruction's
offset and name. A record that matches no instruction, or more than one, or whose
guard then does not synthesize, does not re-locate, and is reported.
"""

from __future__ import annotations

import dis
import types
from typing import Sequence

from codesuture.errors import PatchError
from codesuture.patch.spec import PatchRecord

#: Instructions that do the same operation on 3.11-3.13, by family.
EQUIVALENT: dict[str, frozenset[str]] = {}
for _family in (
    {"LOAD_ATTR", "LOAD_METHOD"},
    {"BINARY_SUBSCR", "BINARY_SLICE"},
    {"BINARY_OP"},
    {"CALL", "CALL_KW"},
    {"CONTAINS_OP"},
):
    for _name in _family:
        EQUIVALENT[_name] = frozenset(_family)


def relocate(code: types.CodeType, record: PatchRecord) -> PatchRecord:
    """*record* re-located in *code* (the function's code object compiled here).
    Raises :class:`PatchError` when no single instruction matches its position."""
    family = EQUIVALENT.get(record.opname, frozenset({record.opname}))
    want = (record.line, record.end_line, record.col, record.end_col)
    matches = [
        ins for ins in dis.get_instructions(code)
        if ins.opname in family and ins.positions is not None
        and (ins.positions.lineno, ins.positions.end_lineno if record.end_line is not None else None,
             ins.positions.col_offset, ins.positions.end_col_offset) == want
    ]
    if not matches:
        raise PatchError(f"no {'/'.join(sorted(family))} at line {record.line} col {record.col} of {record.qualname}")
    if len(matches) > 1:
        raise PatchError(f"{len(matches)} instructions at line {record.line} col {record.col} of {record.qualname}")
    ins = matches[0]
    return record._replace(offset=ins.offset, opname=ins.opname)


def relocate_all(module_code: types.CodeType, records: Sequence[PatchRecord]) -> tuple[list[PatchRecord], list[tuple[PatchRecord, str]]]:
    """Re-locate every record in *module_code*; ``(re-located, [(record, reason)])``.
    Each function's re-located records must synthesize together, else all of that
    function's records are reported."""
    from codesuture.patch.synthesize import find_code, group_by_function, synthesize_all

    moved: list[PatchRecord] = []
    failed: list[tuple[PatchRecord, str]] = []
    for (qualname, firstlineno), recs in group_by_function(records).items():
        code = find_code(module_code, qualname, firstlineno)
        if code is None:
            failed += [(r, f"{qualname} (line {firstlineno}) is not in this source") for r in recs]
            continue
        here: list[PatchRecord] = []
        for rec in recs:
            try:
                here.append(relocate(code, rec))
            except PatchError as exc:
                failed.append((rec, str(exc)))
        if not here:
            continue
        try:
            synth = synthesize_all(code, here)
        except PatchError as exc:
            failed += [(r, f"does not synthesize here: {exc}") for r in here]
            continue
        moved += [r._replace(added=synth.added if len(here) == 1 else r.added, removed=0) for r in here]
    return moved, failed


__all__ = ["relocate", "relocate_all", "EQUIVALENT"]
