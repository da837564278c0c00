"""Call guards, at a CALL/CALL_KW instruction.

* callable_guard: ``f(...)`` with f None calls a stand-in ``lambda *a, **k: None``
  instead, so the call expression yields None; the arguments are still evaluated.
* type_coercion_guard: ``int(s)`` / ``float(s)`` raising ValueError yields 0 / 0.0.
* file_guard: ``open(path, ...)`` raising FileNotFoundError yields an empty in-memory
  file (``io.StringIO()``; ``io.BytesIO()`` when the mode is a constant with ``b``).

The last two cannot be decided before the call, so they add an exception-table range
that covers exactly the call expression (from loading the callable to CALL) and a
handler that matches only that one exception class; anything else re-raises through
the enclosing handlers exactly as before.
"""

from __future__ import annotations

from typing import Any

from bytecode import Label, TryBegin, TryEnd

from codesuture.errors import PatchError
from codesuture.guards.base import Firing, Rewrite, check_opname, constant, hook
from codesuture.patch import instrs as I
from codesuture.patch.spec import GuardSpec

_CALLS = tuple(I.CALL_NAMES)


def _call_group_start(instrs: list[Any], idx: int) -> int:
    """3.11/3.12 put PRECALL/KW_NAMES right before CALL: guards go in front of them."""
    j = idx
    while j > 0 and getattr(instrs[j - 1], "name", None) in ("PRECALL", "KW_NAMES"):
        j -= 1
    return j


def callable_guard(instrs: list[Any], idx: int, spec: GuardSpec, firing: Firing) -> Rewrite:
    ins = check_opname(instrs[idx], *_CALLS)
    loc, do = ins.location, Label()
    depth, _ = I.call_slots(ins)
    fn = I.constant_function(repr(constant(spec.default)))
    start = _call_group_start(instrs, idx)
    body = [
        I.at(loc, "COPY", depth), I.jump_if_not_none(do, loc),
        *hook(loc, firing, do),
        *I.make_function(fn, loc),            # [..., None, args..., stand-in]
        I.at(loc, "SWAP", depth + 1),         # the stand-in takes the None's slot
        I.at(loc, "POP_TOP"),
        do, *instrs[start : idx + 1],
    ]
    return Rewrite(start, idx + 1, body)


def _scoped_handler(
    instrs: list[Any], idx: int, exc_name: str, produce: list[Any], allowed: set[str], firing: Firing
) -> Rewrite:
    """Cover the call expression ending at ``instrs[idx]`` with an exception-table
    range whose handler turns *exc_name* into the value that *produce* pushes."""
    ins = check_opname(instrs[idx], *_CALLS)
    loc = ins.location
    name, start = I.callee_name(instrs, idx)
    if start is None or name not in allowed:
        raise PatchError(f"the failing call is not {' / '.join(sorted(allowed))}() in straight-line code")
    span = instrs[start : idx + 1]
    if any(isinstance(x, (TryBegin, TryEnd, Label)) for x in span):
        raise PatchError("the failing call expression has its own control flow; refusing to scope a handler")
    outer = I.active_try(instrs, start)
    handler, cleanup, reraise, after = Label(), Label(), Label(), Label()
    mine = TryBegin(handler, False)
    body: list[Any] = []
    if outer is not None:
        body.append(TryEnd(outer))
    body += [mine, *span, TryEnd(mine)]
    if outer is not None:
        reopen = TryBegin(outer.target, outer.push_lasti)
        body.append(reopen)
        # The range's original end now closes the re-opened copy.
        for later in instrs[idx + 1 :]:
            if isinstance(later, TryEnd) and later.entry is outer:
                later.entry = reopen
                break
    body.append(after)
    inner = TryBegin(cleanup, True)
    inner2 = TryBegin(cleanup, True)
    tail: list[Any] = [
        handler,
        inner,
        I.at(loc, "PUSH_EXC_INFO"),
        I.at(loc, "LOAD_GLOBAL", (False, exc_name)),
        I.at(loc, "CHECK_EXC_MATCH"),
        I.jump_if_false(reraise, loc),
        *hook(loc, firing, reraise),
        I.at(loc, "POP_TOP"),
        TryEnd(inner),
        I.at(loc, "POP_EXCEPT"),
        *produce,
        I.jump_backward(after, loc),
        reraise,
        inner2,
        I.at(loc, "RERAISE", 0),
        TryEnd(inner2),
        cleanup,
    ]
    if outer is not None:
        again = TryBegin(outer.target, outer.push_lasti)
        tail += [again, I.at(loc, "COPY", 3), I.at(loc, "POP_EXCEPT"), I.at(loc, "RERAISE", 1), TryEnd(again)]
    else:
        tail += [I.at(loc, "COPY", 3), I.at(loc, "POP_EXCEPT"), I.at(loc, "RERAISE", 1)]
    return Rewrite(start, idx + 1, body, tail)


def type_coercion_guard(instrs: list[Any], idx: int, spec: GuardSpec, firing: Firing) -> Rewrite:
    loc = instrs[idx].location
    return _scoped_handler(
        instrs, idx, firing.exc.partition("|")[0] or "ValueError", [I.at(loc, "LOAD_CONST", constant(spec.default))],
        {"int", "float"}, firing
    )


def file_guard(instrs: list[Any], idx: int, spec: GuardSpec, firing: Firing) -> Rewrite:
    loc = instrs[idx].location
    cls = "BytesIO" if spec.default == "io.BytesIO()" else "StringIO"
    produce: list[Any] = [
        I.at(loc, "LOAD_CONST", 0), I.at(loc, "LOAD_CONST", None), I.at(loc, "IMPORT_NAME", "io"),
        I.load_method(cls, loc), *I.call(0, loc),
    ]
    return _scoped_handler(instrs, idx, "FileNotFoundError", produce, {"open"}, firing)


