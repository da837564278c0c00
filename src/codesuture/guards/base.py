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


def branch(failing: Instr, check: list[Any], on_fail: list[Any], do_label: Label) -> list[Any]:
    """``check`` jumps to *do_label* when the operation is safe; otherwise ``on_fail``
    runs and jumps past the original instruction::

        <check>            (jumps to L_do when safe)
        <on_fail>
        JUMP_FORWARD L_end
      L_do:
        <failing instruction>
      L_end:
    """
    loc = failing.location
    end = Label()
    return [*check, *on_fail, I.jump_forward(end, loc), do_label, failing, end]


def check_opname(ins: Any, *names: str) -> Instr:
    from codesuture.errors import PatchError

    if not isinstance(ins, Instr) or ins.name not in names:
        raise PatchError(f"expected {'/'.join(names)} at the crash site, found {getattr(ins, 'name', ins)!r}")
    return ins
