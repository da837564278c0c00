"""What a guard synthesizer returns, and the branch shape most guards share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

from bytecode import Instr, Label

from codesuture.patch import instrs as I
from codesuture.patch.spec import DEFAULTS


@dataclass
class Rewrite:
    """Replace ``instrs[start:stop]`` with ``body`` and append ``tail`` (handler
    blocks) at the end of the code object."""

    start: int
    stop: int
    body: list[Any]
    tail: list[Any] = field(default_factory=list)


def constant(default: str) -> Any:
    value = DEFAULTS[default]
    if default.startswith("io."):
        raise ValueError(f"{default} is not a constant")
    return value


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


def _events(loc: Any, name: str) -> list[Any]:
    """Push ``codesuture.runtime.events.<name>`` ready to be called (2 stack items)."""
    return [I.at(loc, "LOAD_CONST", 0), I.at(loc, "LOAD_CONST", (name,)), I.at(loc, "IMPORT_NAME", EVENTS_MODULE),
            I.load_method(name, loc)]


def hook(loc: Any, firing: Firing, raise_label: Label) -> list[Any]:
    """``if events.fired(site, exc): goto raise_label`` (where the original instruction
    runs and raises its genuine exception); for guards whose result is not a default.
    Leaves the stack as it found it."""
    return [*_events(loc, "fired"), I.at(loc, "LOAD_CONST", firing.site), I.at(loc, "LOAD_CONST", firing.exc),
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
    seq: list[Any] = [*_events(loc, "fire"), I.at(loc, "LOAD_CONST", firing.site), I.at(loc, "LOAD_CONST", firing.exc),
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
