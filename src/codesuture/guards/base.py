"""What a guard synthesizer returns, and the branch shape most guards share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

from bytecode import Instr, Label, TryBegin
from bytecode.instr import UNSET

from codesuture.patch import instrs as I
from codesuture.patch.spec import DEFAULTS, MUTABLE_DEFAULTS


@dataclass
class Rewrite:
    """Replace ``instrs[start:stop]`` with ``body`` and append ``tail`` (handler
    blocks) at the end of the code object."""

    start: int
    stop: int
    body: list[Any]
    tail: list[Any] = field(default_factory=list)


class ScopedTry(TryBegin):
    """An exception-table range around one instruction (a call) whose handler runs
    with the stack as it was *before* that instruction's inputs were pushed: the
    depth ``bytecode`` computes (the least depth inside the range, i.e. after the
    instruction pushed its result) less :attr:`lower`. CPython unwinds a failing
    ``CALL`` to that depth (its inputs are gone), so a handler scoped to just the
    call, not to the evaluation of its arguments, can push the call's stand-in result
    (:mod:`codesuture.guards.calls`)."""

    __slots__ = ("lower",)

    def __init__(self, target: Any, push_lasti: bool, stack_depth: Any = UNSET, lower: int = 1) -> None:
        super().__init__(target, push_lasti, stack_depth)
        self.lower = lower

    def copy(self) -> "ScopedTry":
        return ScopedTry(self.target, self.push_lasti, self.stack_depth, self.lower)


def constant(default: str) -> Any:
    """The code constant of *default* (a key of :data:`DEFAULTS`). Raises ValueError
    for the defaults made anew on every firing (files, mutable containers)."""
    value = DEFAULTS[default]
    if default.startswith("io.") or default in MUTABLE_DEFAULTS:
        raise ValueError(f"{default} is not a constant")
    return value


def push_default(default: str, loc: Any) -> list[Any]:
    """Instructions pushing a new value of *default*: a constant, or an empty list,
    dict or set built on the spot (never a shared mutable constant)."""
    if default == "[]":
        return [I.at(loc, "BUILD_LIST", 0)]
    if default == "{}":
        return [I.at(loc, "BUILD_MAP", 0)]
    if default == "set()":
        return [I.at(loc, "BUILD_SET", 0)]
    return [I.at(loc, "LOAD_CONST", constant(default))]


#: The module whose functions every guard calls on its slow path (see its docstring).
EVENTS_MODULE = "codesuture.runtime.events"


class Firing(NamedTuple):
    """What a guard reports when it fires: its *site* (``"<guard>@<module>:<line>"``)
    and the built-in exception class it stands in for (``"KeyError"``; with
    ``"|value"``/``"|truth"`` appended when the value is returned, so the firing checks
    the callers first, see :func:`codesuture.runtime.events.fire`). ``takes``: for a
    guard that takes the raising side of the decision after it (``GuardSpec.flow``
    ``raise:...``), the label of that side and how many stack items to pop first."""

    site: str
    exc: str
    takes: tuple[Label, int] | None = None


def events_call(loc: Any, name: str) -> list[Any]:
    """Push ``codesuture.runtime.events.<name>`` ready to be called (2 stack items)."""
    return [I.at(loc, "LOAD_CONST", 0), I.at(loc, "LOAD_CONST", (name,)), I.at(loc, "IMPORT_NAME", EVENTS_MODULE),
            I.load_method(name, loc)]


def hook(loc: Any, firing: Firing, raise_label: Label) -> list[Any]:
    """``if events.fired(site, exc): goto raise_label`` (where the original instruction
    runs and raises its genuine exception); for guards whose result is not a default.
    Leaves the stack as it found it."""
    return [*events_call(loc, "fired"), I.at(loc, "LOAD_CONST", firing.site), I.at(loc, "LOAD_CONST", firing.exc),
            *I.call(2, loc), I.jump_if_true(raise_label, loc)]


def fire(loc: Any, firing: Firing, rule: str, static: str, evidence: Sequence[int], operands: int,
         raise_label: Label, end_label: Label) -> list[Any]:
    """The slow path of a guard that yields a value: ``r = events.fire(site, exc, rule,
    static, *evidence)``; when *r* is None jump to *raise_label* with the stack as it
    was (the original instruction raises), else replace the *operands* top stack items
    with ``r[0]`` and jump to *end_label*. *evidence*: stack depths (1 = top, at the
    guard) of the items passed as run-time evidence (see
    :func:`codesuture.runtime.events.typed_default`)."""
    raise_pop = Label()
    seq: list[Any] = [*events_call(loc, "fire"), I.at(loc, "LOAD_CONST", firing.site), I.at(loc, "LOAD_CONST", firing.exc),
                      I.at(loc, "LOAD_CONST", rule), I.at(loc, "LOAD_CONST", static)]
    pushed = 6
    for depth in evidence:
        seq.append(I.at(loc, "COPY", depth + pushed))
        pushed += 1
    seq += [*I.call(4 + len(evidence), loc), I.at(loc, "COPY", 1), I.jump_if_none(raise_pop, loc)]
    if firing.takes is not None:  # the raising side of the decision after the guard
        side, pops = firing.takes
        seq += [I.at(loc, "POP_TOP") for _ in range(1 + pops)] + [I.jump_forward(side, loc)]
        return [*seq, raise_pop, I.at(loc, "POP_TOP"), I.jump_forward(raise_label, loc)]
    seq.append(I.at(loc, "UNPACK_SEQUENCE", 1))
    if operands:
        seq += [I.at(loc, "SWAP", operands + 1)] + [I.at(loc, "POP_TOP") for _ in range(operands)]
    return [*seq, I.jump_forward(end_label, loc), raise_pop, I.at(loc, "POP_TOP"), I.jump_forward(raise_label, loc)]


def branch(failing: Instr, check: list[Any], on_fail: list[Any], do_label: Label, firing: Firing) -> list[Any]:
    """For guards whose result is not a default: ``check`` jumps to *do_label* when the
    operation is safe; otherwise the guard reports itself (:func:`hook`, which may also
    jump to *do_label*, where the operation raises as before) and ``on_fail`` runs and
    jumps past the original instruction::

        <check>  <hook>  <on_fail>  JUMP_FORWARD L_end
      L_do:
        <failing instruction>
      L_end:
    """
    loc = failing.location
    end = Label()
    return [*check, *hook(loc, firing, do_label), *on_fail, I.jump_forward(end, loc), do_label, failing, end]


def branch_value(failing: Instr, check: list[Any], firing: Firing, rule: str, static: str, evidence: Sequence[int],
                 operands: int, do_label: Label) -> list[Any]:
    """For guards that yield a default: ``check`` jumps to *do_label* when the operation
    is safe; otherwise :func:`fire` replaces its *operands* with the default (or jumps
    to *do_label* to let it raise)::

        <check>  <fire: ... JUMP_FORWARD L_end | JUMP_FORWARD L_do>
      L_do:
        <failing instruction>
      L_end:
    """
    loc = failing.location
    end = Label()
    return [*check, *fire(loc, firing, rule, static, evidence, operands, do_label, end), do_label, failing, end]


def check_opname(ins: Any, *names: str) -> Instr:
    from codesuture.errors import PatchError

    if not isinstance(ins, Instr) or ins.name not in names:
        raise PatchError(f"expected {'/'.join(names)} at the crash site, found {getattr(ins, 'name', ins)!r}")
    return ins
