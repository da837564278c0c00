"""null_guard: operations on a None operand.

Forms:

* ``attr``: ``x.a`` yields a default; with ``links`` > 1 the attribute chain that reads
  the result (``x.a.b.c``) is guarded in the same patch, optional-chaining style: any
  link that is None makes the whole chain yield the default (its last link may be a
  method call, which then runs its stand-in);
* ``method``: ``x.m(args)`` runs a stand-in instead (``None.strip()`` behaves like
  ``''.strip()``, see :func:`codesuture.runtime.events.method_default`);
* ``operator`` / ``operand``: ``x op y`` / ``x op= y`` with x / y None: None reads as
  the empty value (or the identity, for ``*``) of the other operand's type, decided
  when the guard fires (``None + 1`` is 1, ``total += None`` leaves total);
* ``compare``: ``x < y`` (an ordering) with x or y None: the same reading
  (``None < 3`` is True); both operands are checked, first the one the crash had None
  (``spec.links`` 1 for the left operand, 2 for the right);
* ``membership``: ``k in x`` with x None is False (``not in``: True);
* ``format``: ``f"{x:.2f}"`` (a format spec) with x None yields ``''``;
* ``store``: ``x.a = v``, ``x[k] = v``, ``x[a:b] = v``, ``del x.a``, ``del x[k]`` with x
  None are skipped (the value goes nowhere: None has no reader of it).
"""

from __future__ import annotations

from typing import Any

from bytecode import Label

from codesuture.errors import PatchError
from codesuture.guards.base import Firing, Rewrite, branch, branch_value, check_opname, fire, hook
from codesuture.patch import instrs as I
from codesuture.patch.spec import GuardSpec

_BINARY = {
    "ADD": "+", "SUBTRACT": "-", "MULTIPLY": "*", "TRUE_DIVIDE": "/", "FLOOR_DIVIDE": "//", "REMAINDER": "%",
    "POWER": "**", "MATRIX_MULTIPLY": "@", "AND": "&", "OR": "|", "XOR": "^", "LSHIFT": "<<", "RSHIFT": ">>",
}
_COMPARE = {"LT": "<", "LE": "<=", "GT": ">", "GE": ">="}
#: Store/delete instruction -> (items it pops, stack depth of its target object).
_STORES = {"STORE_ATTR": (2, 1), "DELETE_ATTR": (1, 1), "STORE_SUBSCR": (3, 2), "DELETE_SUBSCR": (2, 2),
           "STORE_SLICE": (4, 3)}


def binary_symbol(arg: Any) -> str:
    """``+``, ``+=``, ... for a BINARY_OP argument. Raises PatchError for others."""
    name = getattr(arg, "name", str(arg))
    inplace = name.startswith("INPLACE_")
    sym = _BINARY.get(name[len("INPLACE_"):] if inplace else name)
    if sym is None:
        raise PatchError(f"null_guard has no operator for {name}")
    return sym + ("=" if inplace else "")


def compare_symbol(arg: Any) -> str:
    """``<``, ``<=``, ``>``, ``>=`` for a COMPARE_OP argument (3.13's ``*_CAST`` too).
    Raises PatchError for equality tests, which never raise on None."""
    name = getattr(arg, "name", str(arg)).removesuffix("_CAST")
    sym = _COMPARE.get(name)
    if sym is None:
        raise PatchError(f"null_guard has no ordering for {name}")
    return sym


def _method_name(ins: Any) -> str:
    return str(ins.arg[1] if isinstance(ins.arg, tuple) else ins.arg)


def _is_method(ins: Any) -> bool:
    return ins.name == "LOAD_METHOD" or (ins.name == "LOAD_ATTR" and isinstance(ins.arg, tuple) and bool(ins.arg[0]))


def _attr(ins: Any, firing: Firing, static: str) -> list[Any]:
    loc, do = ins.location, Label()
    check = [I.at(loc, "COPY", 1), I.jump_if_not_none(do, loc)]
    return branch_value(ins, check, firing, "static", static, (), 1, do)


def _method(ins: Any, firing: Firing, static: str) -> list[Any]:
    loc, do = ins.location, Label()
    check = [I.at(loc, "COPY", 1), I.jump_if_not_none(do, loc)]
    fn = I.method_stand_in(firing.site, _method_name(ins), static)
    return branch(ins, check, [I.at(loc, "POP_TOP"), *I.push_method_pair(loc, fn)], do, firing)


def attr_chain_links(instrs: list[Any], idx: int, limit: int = 8) -> list[int]:
    """Indices of the attribute loads that read, as their object, the result of the one
    at *idx*, then of that one, and so on (``x.a.b.c``); a method load ends the chain."""
    links: list[int] = []
    cur = idx
    while len(links) < limit and not _is_method(instrs[cur]):
        found = I.find_consumer(instrs, cur)
        if found is None:
            break
        j, position = found
        if getattr(instrs[j], "name", None) not in ("LOAD_ATTR", "LOAD_METHOD") or position != 1:
            break
        links.append(j)
        cur = j
    return links


def synthesize(instrs: list[Any], idx: int, spec: GuardSpec, firing: Firing) -> Rewrite:
    ins = instrs[idx]
    loc = ins.location
    do = Label()
    if spec.form == "attr":
        check_opname(ins, "LOAD_ATTR")
        if spec.links <= 1:
            return Rewrite(idx, idx + 1, _attr(ins, firing, spec.default))
        later = attr_chain_links(instrs, idx)[: spec.links - 1]
        if len(later) != spec.links - 1:
            raise PatchError(f"chain of {spec.links} attribute loads not found at the crash site")
        body: list[Any] = _attr(ins, firing, "None")  # an intermediate link yields None...
        prev = idx
        for n, j in enumerate(later, 1):
            body.extend(instrs[prev + 1 : j])
            last = n == len(later)
            if _is_method(instrs[j]):
                body.extend(_method(instrs[j], firing, spec.default if last else "None"))
            else:  # ...which the next link's check turns into the chain's default
                body.extend(_attr(instrs[j], firing, spec.default if last else "None"))
            prev = j
        return Rewrite(idx, later[-1] + 1, body)
    if spec.form == "method":
        check_opname(ins, "LOAD_ATTR", "LOAD_METHOD")
        return Rewrite(idx, idx + 1, _method(ins, firing, spec.default))
    if spec.form in ("operator", "operand"):
        check_opname(ins, "BINARY_OP")
        sym = binary_symbol(ins.arg)
        if spec.form == "operator":  # [x, y], x None
            check = [I.at(loc, "COPY", 2), I.jump_if_not_none(do, loc)]
            return Rewrite(idx, idx + 1, branch_value(ins, check, firing, f"binop:{sym}:left", spec.default, (1,), 2, do))
        check = [I.at(loc, "COPY", 1), I.jump_if_not_none(do, loc)]  # [x, y], y None
        return Rewrite(idx, idx + 1, branch_value(ins, check, firing, f"binop:{sym}:right", spec.default, (2,), 2, do))
    if spec.form == "compare":
        # Both operands are checked, the recorded one first: the same comparison meets
        # None on either side (a sort's ``__lt__`` comparing a None key with a number
        # both ways round), and one site gets one patch.
        check_opname(ins, "COMPARE_OP")
        sym = compare_symbol(ins.arg)
        end, other = Label(), Label()
        sides = [(2, f"binop:{sym}:left", 1), (1, f"binop:{sym}:right", 2)]  # (depth of the None, rule, evidence)
        first, second = sides if spec.links == 1 else sides[::-1]
        body = [I.at(loc, "COPY", first[0]), I.jump_if_not_none(other, loc),
                *fire(loc, firing, first[1], spec.default, (first[2],), 2, do, end),
                other, I.at(loc, "COPY", second[0]), I.jump_if_not_none(do, loc),
                *fire(loc, firing, second[1], spec.default, (second[2],), 2, do, end),
                do, ins, end]
        return Rewrite(idx, idx + 1, body)
    if spec.form == "format":
        # [x, spec] -> f"{x:spec}" with x None: None.__format__ takes no spec.
        check_opname(ins, "FORMAT_VALUE", "FORMAT_WITH_SPEC")
        if ins.name == "FORMAT_VALUE" and not int(ins.arg) & 4:
            raise PatchError("FORMAT_VALUE without a format spec never fails on None")
        check = [I.at(loc, "COPY", 2), I.jump_if_not_none(do, loc)]
        return Rewrite(idx, idx + 1, branch_value(ins, check, firing, "static", spec.default, (), 2, do))
    if spec.form == "membership":
        check_opname(ins, "CONTAINS_OP")
        # [k, x]: when x is None the answer is "not contained".
        check = [I.at(loc, "COPY", 1), I.jump_if_not_none(do, loc)]
        on_none = [I.at(loc, "POP_TOP"), I.at(loc, "POP_TOP"), I.at(loc, "LOAD_CONST", bool(ins.arg))]
        return Rewrite(idx, idx + 1, branch(ins, check, on_none, do, firing))
    if spec.form == "store":
        check_opname(ins, *_STORES)
        popped, depth = _STORES[ins.name]
        check = [I.at(loc, "COPY", depth), I.jump_if_not_none(do, loc)]
        return Rewrite(idx, idx + 1, branch(ins, check, [I.at(loc, "POP_TOP") for _ in range(popped)], do, firing))
    raise PatchError(f"null_guard has no form {spec.form!r}")


__all__ = ["synthesize", "attr_chain_links", "binary_symbol", "compare_symbol", "hook"]
