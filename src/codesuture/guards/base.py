"""What a guard synthesizer returns, and the branch shape most guards share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


#: The module whose ``fired(site)`` every guard calls on its slow path.
EVENTS_MODULE = "codesuture.runtime.events"


def hook(loc: Any, site: str, raise_label: Label) -> list[Any]:
    """The slow-path report: ``if codesuture.runtime.events.fired(site): goto raise_label``
    (where the original instruction runs and raises). Runs only when the guard is
    about to yield its default; leaves the stack as it found it. 8 instructions on
    3.11 (PRECALL), 7 after."""
    return [
        I.at(loc, "LOAD_CONST", 0), I.at(loc, "LOAD_CONST", ("fired",)), I.at(loc, "IMPORT_NAME", EVENTS_MODULE),
        I.load_method("fired", loc), I.at(loc, "LOAD_CONST", site), *I.call(1, loc), I.jump_if_true(raise_label, loc),
    ]


def branch(failing: Instr, check: list[Any], on_fail: list[Any], do_label: Label, site: str) -> list[Any]:
    """``check`` jumps to *do_label* when the operation is safe; otherwise the guard
    reports itself (:func:`hook`: when told to, it also jumps to *do_label*, where the
    operation raises as before) and ``on_fail`` runs and jumps past the original
    instruction::

        <check>            (jumps to L_do when safe)
        <hook>             (jumps to L_do when the original exception must be raised)
        <on_fail>
        JUMP_FORWARD L_end
      L_do:
        <failing instruction>
      L_end:
    """
    loc = failing.location
    end = Label()
    return [*check, *hook(loc, site, do_label), *on_fail, I.jump_forward(end, loc), do_label, failing, end]


def check_opname(ins: Any, *names: str) -> Instr:
    from codesuture.errors import PatchError

    if not isinstance(ins, Instr) or ins.name not in names:
        raise PatchError(f"expected {'/'.join(names)} at the crash site, found {getattr(ins, 'name', ins)!r}")
    return ins
