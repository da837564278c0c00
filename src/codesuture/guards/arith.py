"""Arithmetic guards at a BINARY_OP whose stack is ``[a, b]``.

* division_guard: ``a / b``, ``a // b``, ``a % b`` (and the in-place forms) with
  ``b == 0`` yield the default (0.0 for true division, else 0) instead of raising.
* str_coerce_guard: ``a + b`` / ``a += b`` where exactly one side is a ``str``
  formats both sides (``format(x, '')``, i.e. ``str(x)`` for ordinary objects) and
  concatenates. The str test is ``type(x) is type('')`` done with ``__class__`` and a
  constant, so no global name is consulted.
"""

from __future__ import annotations

from typing import Any

from bytecode import BinaryOp, Label

from codesuture.errors import PatchError
from codesuture.guards.base import Firing, Rewrite, branch_value, check_opname, hook
from codesuture.patch import instrs as I
from codesuture.patch.spec import GuardSpec

DIVISIONS = {
    BinaryOp.TRUE_DIVIDE, BinaryOp.FLOOR_DIVIDE, BinaryOp.REMAINDER,
    BinaryOp.INPLACE_TRUE_DIVIDE, BinaryOp.INPLACE_FLOOR_DIVIDE, BinaryOp.INPLACE_REMAINDER,
}
ADDS = {BinaryOp.ADD, BinaryOp.INPLACE_ADD}


def division_guard(instrs: list[Any], idx: int, spec: GuardSpec, firing: Firing) -> Rewrite:
    ins = check_opname(instrs[idx], "BINARY_OP")
    if ins.arg not in DIVISIONS:
        raise PatchError(f"division_guard needs a division, found {ins.arg!r}")
    loc, do = ins.location, Label()
    check = [I.at(loc, "COPY", 1), I.at(loc, "LOAD_CONST", 0), I.compare("EQ", loc), I.jump_if_false(do, loc)]
    return Rewrite(idx, idx + 1, branch_value(ins, check, firing, "static", spec.default, (), 2, do))


def _is_str(depth: int, loc: Any) -> list[Any]:
    return [
        I.at(loc, "COPY", depth), I.load_attr("__class__", loc),
        I.at(loc, "LOAD_CONST", ""), I.load_attr("__class__", loc),
        I.at(loc, "IS_OP", 0),
    ]


def str_coerce_guard(instrs: list[Any], idx: int, spec: GuardSpec, firing: Firing) -> Rewrite:
    ins = check_opname(instrs[idx], "BINARY_OP")
    if ins.arg not in ADDS:
        raise PatchError(f"str_coerce_guard needs +, found {ins.arg!r}")
    loc, do = ins.location, Label()
    # [a, b] -> [a, b, a_is_str] -> [a, b, a_is_str, b_is_str] -> mixed?
    check = [*_is_str(2, loc), *_is_str(2, loc), I.compare("NE", loc), I.jump_if_false(do, loc)]
    coerce = [
        I.format_str(loc),                                   # [a, str(b)]
        I.at(loc, "SWAP", 2), I.format_str(loc), I.at(loc, "SWAP", 2),  # [str(a), str(b)]
    ]
    # Both paths end in the original +; the hook may skip the coercion (then + raises).
    body = [*check, *hook(loc, firing, do), *coerce, do, ins]
    return Rewrite(idx, idx + 1, body)
