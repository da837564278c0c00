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

* call_guard: a structural exception raised *by* a call into C code, the standard
  library or a dunder (``len(None)``, ``sorted([None, 1])``, ``ord('')``,
  ``super().__getitem__(k)`` in a dict subclass; form ``call``), or by a subscript
  whose ``__getitem__`` fails inside the standard library (form ``subscript``):
  an exception-table range around just that instruction (not the evaluation of its
  operands: :class:`~codesuture.guards.base.ScopedTry`) and a handler that asks
  :func:`codesuture.runtime.events.caught` for the default. It yields only for the
  recorded exception class, raised by the call itself or below it in unpatchable
  code, and not handled by a live caller; anything else re-raises as before.
"""

from __future__ import annotations

import sys
from typing import Any

from bytecode import Instr, Label, TryBegin, TryEnd

from codesuture.errors import PatchError
from codesuture.guards.base import Firing, Rewrite, ScopedTry, check_opname, constant, events_call, hook
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


def _scope(instrs: list[Any], start: int, idx: int, mine: TryBegin, after: Label,
           lead: list[Any] | None = None) -> tuple[TryBegin | None, list[Any]]:
    """``instrs[start:idx + 1]`` (after *lead*) inside the guard's own range *mine*,
    then *after* (where the handler jumps back to). An enclosing range (the program's
    own ``try``) is closed before and re-opened after it; its original end then closes
    the re-opened copy. Returns (the enclosing range or None, the new instructions)."""
    outer = I.active_try(instrs, start)
    body: list[Any] = []
    if outer is not None:
        body.append(TryEnd(outer))
    body += [mine, *(lead or ()), *instrs[start : idx + 1], TryEnd(mine)]
    if outer is not None:
        reopen = TryBegin(outer.target, outer.push_lasti)
        body.append(reopen)
        for later in instrs[idx + 1 :]:
            if isinstance(later, TryEnd) and later.entry is outer:
                later.entry = reopen
                break
    body.append(after)
    return outer, body


def _handler_tail(loc: Any, handler: Label, cleanup: Label, reraise: Label, outer: TryBegin | None,
                  test: list[Any], unwind: list[Any], done: list[Any], scoped: bool = False) -> list[Any]:
    """The handler of a scoped guard, laid out as CPython's compiler lays out ``except``:
    one cleanup range (push_lasti) from PUSH_EXC_INFO over *test* (which jumps to
    *reraise* when the exception is not the guard's to take) and the re-raise, so that
    an exception leaving the handler restores the previously handled exception
    (``COPY 3; POP_EXCEPT; RERAISE 1``) at the depth just below the pushed one. A
    second range starting deeper would restore the guard's own exception as "being
    handled" and leak it into ``sys.exc_info()`` and the next exception's context.
    *unwind* runs at *reraise* before ``RERAISE 0``; *done* after the range (the
    exception is taken: pop it and go on). *scoped*: the guard's own range is a
    :class:`ScopedTry`, whose handler ``bytecode`` models one item deeper than it runs,
    so the cleanup range is lowered by one as well."""
    ok = Label()
    inner = ScopedTry(cleanup, True) if scoped else TryBegin(cleanup, True)
    tail: list[Any] = [
        handler,                                              # [base, exc]
        inner,
        I.at(loc, "PUSH_EXC_INFO"),                           # [base, prev, exc]
        *test,
        I.jump_forward(ok, loc),
        reraise,
        *unwind,
        I.at(loc, "RERAISE", 0),
        ok,
        TryEnd(inner),
        *done,
        cleanup,
    ]
    if outer is not None:
        again = TryBegin(outer.target, outer.push_lasti)
        tail += [again, I.at(loc, "COPY", 3), I.at(loc, "POP_EXCEPT"), I.at(loc, "RERAISE", 1), TryEnd(again)]
    else:
        tail += [I.at(loc, "COPY", 3), I.at(loc, "POP_EXCEPT"), I.at(loc, "RERAISE", 1)]
    return tail


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
    handler, cleanup, reraise, after = Label(), Label(), Label(), Label()
    outer, body = _scope(instrs, start, idx, TryBegin(handler, False), after)
    matched = [
        *hook(loc, firing, reraise),
        I.at(loc, "POP_TOP"),
    ]
    done = [I.at(loc, "POP_EXCEPT"), *produce, I.jump_backward(after, loc)]
    tail = _handler_tail(loc, handler, cleanup, reraise, outer, [
        I.at(loc, "LOAD_GLOBAL", (False, exc_name)),
        I.at(loc, "CHECK_EXC_MATCH"),
        I.jump_if_false(reraise, loc),
        *matched,
    ], [], done)
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




def _lead(loc: Any) -> list[Any]:
    """What a call_guard's range holds before the call itself. 3.13 looks up the
    handler of an exception that a Python callee (a frame the call pushed: a function
    of the standard library, a ``__getitem__`` the interpreter inlined) raised at the
    code unit *before* the calling instruction, so a range that starts at the call
    misses it; a ``NOP`` in front of the call, inside the range, is that code unit.
    3.11 and 3.12 look it up at the call's last inline cache entry: nothing is
    needed."""
    return [I.at(loc, "NOP")] if sys.version_info >= (3, 13) else []


#: Instructions a call_guard may scope: calls, and subscripts whose dunder failed.
CALL_GUARD_OPS = frozenset({*_CALLS, "CALL_FUNCTION_EX", "BINARY_SUBSCR"})


def call_guard(instrs: list[Any], idx: int, spec: GuardSpec, firing: Firing) -> Rewrite:
    """A handler scoped to the one instruction at *idx* (with its PRECALL/KW_NAMES)
    that turns *firing*'s exception into *spec*'s default."""
    ins = check_opname(instrs[idx], *CALL_GUARD_OPS)
    loc = ins.location
    start = _call_group_start(instrs, idx) if ins.name in _CALLS else idx
    group = instrs[start : idx + 1]
    if any(not isinstance(x, Instr) for x in group):
        raise PatchError("the failing call has its own control flow; refusing to scope a handler")
    handler, cleanup, reraise, after = Label(), Label(), Label(), Label()
    outer, body = _scope(instrs, start, idx, ScopedTry(handler, False), after, _lead(loc))
    tail = _handler_tail(loc, handler, cleanup, reraise, outer, [            # [base, prev, exc]
        *events_call(loc, "caught"),
        I.at(loc, "LOAD_CONST", firing.site), I.at(loc, "LOAD_CONST", firing.exc), I.at(loc, "LOAD_CONST", spec.default),
        I.at(loc, "COPY", 6),                                 # the exception
        *I.call(4, loc),                                      # [base, prev, exc, (value,) | None]
        I.at(loc, "COPY", 1), I.jump_if_none(reraise, loc),
        I.at(loc, "UNPACK_SEQUENCE", 1),                      # [base, prev, exc, value]
        I.at(loc, "SWAP", 2), I.at(loc, "POP_TOP"),           # [base, prev, value]
    ], [I.at(loc, "POP_TOP")],                                # at reraise: [base, prev, exc, None]
        [I.at(loc, "SWAP", 2), I.at(loc, "POP_EXCEPT"), I.jump_backward(after, loc)],   # [base, value]
        scoped=True)
    return Rewrite(start, idx + 1, body, tail)
