"""null_guard: operations on a None operand.

Forms: ``attr`` (``x.a`` yields the default), ``method`` (``x.m(args)``: the call
runs a stand-in that returns the default, so ``x.m(...)`` is None), ``operator``
(``x op y``/``x op= y`` with x None yields None: x stays None), ``operand``
(``x op y``/``x op= y`` with y None yields x unchanged: an absent right operand
contributes nothing; not for divisions), ``membership``
(``k in x`` with x None is False; ``k not in x`` is True).
"""

from __future__ import annotations

from typing import Any

from bytecode import Label

from codesuture.errors import PatchError
from codesuture.guards.base import Rewrite, branch, check_opname, constant
from codesuture.patch import instrs as I
from codesuture.patch.spec import GuardSpec


def synthesize(instrs: list[Any], idx: int, spec: GuardSpec, site: str) -> Rewrite:
    ins = instrs[idx]
    loc = ins.location
    do = Label()
    if spec.form == "attr":
        check_opname(ins, "LOAD_ATTR")
        check = [I.at(loc, "COPY", 1), I.jump_if_not_none(do, loc)]
        on_none = [I.at(loc, "POP_TOP"), I.at(loc, "LOAD_CONST", constant(spec.default))]
    elif spec.form == "method":
        check_opname(ins, "LOAD_ATTR", "LOAD_METHOD")
        check = [I.at(loc, "COPY", 1), I.jump_if_not_none(do, loc)]
        fn = I.constant_function(repr(constant(spec.default)))
        on_none = [I.at(loc, "POP_TOP"), *I.push_method_pair(loc, fn)]
    elif spec.form == "operator":
        check_opname(ins, "BINARY_OP")
        # [x, y]: when x is None drop y and leave x (None) as the result.
        check = [I.at(loc, "COPY", 2), I.jump_if_not_none(do, loc)]
        on_none = [I.at(loc, "POP_TOP")]
    elif spec.form == "operand":
        check_opname(ins, "BINARY_OP")
        # [x, y]: when y is None drop it and leave x as the result.
        check = [I.at(loc, "COPY", 1), I.jump_if_not_none(do, loc)]
        on_none = [I.at(loc, "POP_TOP")]
    elif spec.form == "membership":
        check_opname(ins, "CONTAINS_OP")
        # [k, x]: when x is None the answer is "not contained".
        check = [I.at(loc, "COPY", 1), I.jump_if_not_none(do, loc)]
        on_none = [I.at(loc, "POP_TOP"), I.at(loc, "POP_TOP"), I.at(loc, "LOAD_CONST", bool(ins.arg))]
    else:
        raise PatchError(f"null_guard has no form {spec.form!r}")
    return Rewrite(idx, idx + 1, branch(ins, check, on_none, do, site))
