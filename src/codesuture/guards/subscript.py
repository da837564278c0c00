"""Subscript guards: ``container[key]`` at a BINARY_SUBSCR whose stack is
``[container, key]``.

* key_guard: ``key in container`` first; missing -> the default, typed when it fires
  by the container's values (``''`` when they are all strings).
* subscript_guard: container is None -> the default (also ``x[a:b]``, which 3.12+
  compile to one BINARY_SLICE with the stack ``[x, a, b]``).
* index_guard / list_bound_guard: ``-len(s) <= i < len(s)`` first (``len`` through
  ``s.__len__()``, so a module global named ``len`` cannot change it); out of range
  -> the default, typed by s's elements (``lines[i]`` on a list of str -> ``''``).
* chain_subscript_guard: the failing link gets the guard its exception calls for
  (``spec.form``: key, index or none); each of the following ``links - 1``
  subscripts that read the result gets a None check, so ``d[a][b][c]`` yields the
  default instead of failing one link later.
"""

from __future__ import annotations

from typing import Any

from bytecode import Label

from codesuture.errors import PatchError
from codesuture.guards.base import Firing, Rewrite, branch_value, check_opname, fire
from codesuture.patch import instrs as I
from codesuture.patch.spec import GuardSpec

_SUBSCR = ("BINARY_SUBSCR",)


def _key_body(ins: Any, static: str, firing: Firing) -> list[Any]:
    loc, do = ins.location, Label()
    # [m, k] -> [m, k, k, m] -> [m, k, (k in m)]; missing: a default typed by m's values
    check = [I.at(loc, "COPY", 1), I.at(loc, "COPY", 3), I.at(loc, "CONTAINS_OP", 0), I.jump_if_true(do, loc)]
    return branch_value(ins, check, firing, "container", static, (2,), 2, do)


def _none_body(ins: Any, static: str, firing: Firing) -> list[Any]:
    loc, do = ins.location, Label()
    if ins.name == "BINARY_SLICE":  # 3.12+ [x, start, stop]
        check = [I.at(loc, "COPY", 3), I.jump_if_not_none(do, loc)]
        return branch_value(ins, check, firing, "static", static, (), 3, do)
    check = [I.at(loc, "COPY", 2), I.jump_if_not_none(do, loc)]
    return branch_value(ins, check, firing, "static", static, (), 2, do)


def _index_body(ins: Any, static: str, firing: Firing) -> list[Any]:
    """Bounds check ``-n <= i < n`` with ``n = s.__len__()``; out of range: a default
    typed by s's elements."""
    loc, do, end = ins.location, Label(), Label()
    out_n, out = Label(), Label()
    seq = [
        I.at(loc, "COPY", 2),                     # [s, i, s]
        I.load_method("__len__", loc), *I.call(0, loc),  # [s, i, n]
        I.at(loc, "COPY", 1), I.at(loc, "COPY", 3),      # [s, i, n, n, i]
        I.compare("GT", loc),                      # [s, i, n, n > i]
        I.jump_if_false(out_n, loc),               # [s, i, n]
        I.at(loc, "UNARY_NEGATIVE"),               # [s, i, -n]
        I.at(loc, "COPY", 2),                      # [s, i, -n, i]
        I.compare("LE", loc),                      # [s, i, -n <= i]
        I.jump_if_true(do, loc),                   # [s, i]
        I.jump_forward(out, loc),
        out_n, I.at(loc, "POP_TOP"),               # [s, i]
        out, *fire(loc, firing, "container", static, (2,), 2, do, end),
        do, ins, end,
    ]
    return seq


def key_guard(instrs: list[Any], idx: int, spec: GuardSpec, firing: Firing) -> Rewrite:
    ins = check_opname(instrs[idx], *_SUBSCR)
    return Rewrite(idx, idx + 1, _key_body(ins, spec.default, firing))


def subscript_guard(instrs: list[Any], idx: int, spec: GuardSpec, firing: Firing) -> Rewrite:
    ins = check_opname(instrs[idx], *_SUBSCR, "BINARY_SLICE")
    return Rewrite(idx, idx + 1, _none_body(ins, spec.default, firing))


def index_guard(instrs: list[Any], idx: int, spec: GuardSpec, firing: Firing) -> Rewrite:
    ins = check_opname(instrs[idx], *_SUBSCR)
    return Rewrite(idx, idx + 1, _index_body(ins, spec.default, firing))


def chain_links(instrs: list[Any], idx: int, limit: int = 8) -> list[int]:
    """Indices of the subscripts that read, as their container, the result of the
    subscript at *idx*, then the result of that one, and so on (``d[a][b][c]``)."""
    links: list[int] = []
    cur = idx
    while len(links) < limit:
        found = I.find_consumer(instrs, cur)
        if found is None:
            break
        j, position = found
        ins = instrs[j]
        if getattr(ins, "name", None) != "BINARY_SUBSCR" or position != 2:
            break
        links.append(j)
        cur = j
    return links


def chain_subscript_guard(instrs: list[Any], idx: int, spec: GuardSpec, firing: Firing) -> Rewrite:
    ins = check_opname(instrs[idx], *_SUBSCR)
    later = chain_links(instrs, idx)[: max(spec.links - 1, 0)]
    if len(later) != spec.links - 1:
        raise PatchError(f"chain of {spec.links} subscripts not found at the crash site")
    first = {"key": _key_body, "index": _index_body, "none": _none_body}.get(spec.form)
    if first is None:
        raise PatchError(f"chain_subscript_guard has no form {spec.form!r}")
    stop = (later[-1] if later else idx) + 1
    # Links before the last yield None (which the next link's check passes on); the
    # last one yields the default.
    body: list[Any] = list(first(ins, "None" if later else spec.default, firing))
    prev = idx
    for n, j in enumerate(later, 1):
        body.extend(instrs[prev + 1 : j])
        body.extend(_none_body(instrs[j], spec.default if n == len(later) else "None", firing))
        prev = j
    return Rewrite(idx, stop, body)
