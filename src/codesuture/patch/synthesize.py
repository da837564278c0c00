"""Guard synthesis: code object + patch records -> patched code object.

:func:`synthesize_all` applies every record of one function *together* to the code
object compiled from the source (each record names an instruction of that unpatched
code): records are located first, then applied in source order, handler blocks
appended in that order. So the result depends only on the code and the *set* of
records, never on the order or the process they were made in: a patch made live, the
same patches merged from several processes, and an overlay rebuilt from source on the
reviewer's machine are the same code object, byte for byte once marshalled.

Each result carries an *origin map*: for every real instruction of the new code, the
index of the original instruction it is (or None for a guard's own instruction), so a
crash inside patched code is translated back to a site of the unpatched code.
"""

from __future__ import annotations

import dis
import types
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from bytecode import Bytecode, Instr
from bytecode.instr import UNSET

from codesuture.errors import PatchError
from codesuture.patch import linetable
from codesuture.patch.instrs import instruction_index, real_instructions  # noqa: F401 - re-exported
from codesuture.patch.spec import PatchRecord


@dataclass(frozen=True)
class Synthesis:
    """A patched code object, its instruction delta against the code it was made from
    (counts of instructions; ``before``/``after`` are listings for ``--verbose``), and
    ``origin``: per real instruction of ``code``, the index of the original instruction
    (as :func:`instruction_index` counts them) or None for an instruction a guard added."""

    code: types.CodeType
    added: int
    removed: int
    before: list[str]
    after: list[str]
    origin: tuple[int | None, ...] = ()


def offset_of(code: types.CodeType, k: int) -> int:
    """Offset in bytes of the k-th real instruction of *code* (inverse of
    :func:`instruction_index`). Raises PatchError."""
    real = real_instructions(code)
    if not 0 <= k < len(real):
        raise PatchError(f"{code.co_qualname} has no instruction {k}")
    return real[k].offset


def locate(
    bc: list[Any], code: types.CodeType, offset: int, opname: str, where: tuple[int | None, int | None] | None = None
) -> int:
    """Index in the abstract instruction list *bc* (of *code*, unchanged) of the
    instruction at *offset*; when *where* ``(line, col)`` is given the instruction's
    position must match too. Raises PatchError."""
    k, found = instruction_index(code, offset)
    if found != opname:
        raise PatchError(f"instruction at offset {offset} of {code.co_qualname} is {found}, expected {opname}")
    seen = -1
    for i, ins in enumerate(bc):
        if isinstance(ins, Instr):
            seen += 1
            if seen == k:
                if ins.name != opname:
                    raise PatchError(f"bytecode mismatch at offset {offset}: {ins.name} != {opname}")
                loc = ins.location
                if where is not None and where[0] is not None and loc is not None:
                    if (loc.lineno, loc.col_offset) != where and (loc.lineno, None) != where:
                        raise PatchError(
                            f"instruction at offset {offset} of {code.co_qualname} is at line {loc.lineno} "
                            f"col {loc.col_offset}, expected line {where[0]} col {where[1]}"
                        )
                return i
    raise PatchError(f"offset {offset} is past the end of {code.co_qualname}")


def _arg_text(arg: Any) -> str:
    """An instruction argument as text without object identities (labels, code)."""
    if isinstance(arg, types.CodeType):
        return f"<code {arg.co_qualname}>"
    if type(arg).__name__ in ("Label", "TryBegin", "TryEnd"):
        return "<label>"
    return repr(arg)


def listing(bc: Sequence[Any]) -> list[str]:
    """One line per real instruction (``NAME arg``), comparable across code objects."""
    return [f"{ins.name} {_arg_text(ins.arg)}" if ins.require_arg() else ins.name for ins in bc if isinstance(ins, Instr)]


def synthesize_all(code: types.CodeType, records: Sequence[PatchRecord], *, before: list[str] | None = None) -> Synthesis:
    """Apply every record in *records* (all of them for *code*, the function's code as
    compiled from source) and return the patched code.

    *before*: the listing to diff against (default: *code*'s), e.g. the function's
    previous patched code, so ``added``/``removed`` are the newest record's delta.
    Raises :class:`PatchError` when an instruction is not where a record says, two
    records name the same instruction, a guard does not fit its site, the result does
    not assemble, or its location table or instruction map fails validation.
    """
    from codesuture.guards.families import Synthesizer, synthesizer

    synths: dict[str, Synthesizer] = {}
    bc = Bytecode.from_code(code)
    work = list(bc)
    originals = [ins for ins in work if isinstance(ins, Instr)]
    index_of = {id(ins): k for k, ins in enumerate(originals)}
    targets: list[tuple[int, Any, PatchRecord]] = []
    for rec in records:
        synth = synthesizer(rec.guard.guard)
        if synth is None:
            raise PatchError(f"unknown guard {rec.guard.guard!r}")
        synths[rec.guard.guard] = synth
        i = locate(work, code, rec.offset, rec.opname, (rec.line, rec.col))
        targets.append((rec.offset, work[i], rec))
    targets.sort(key=lambda t: t[0])
    for (a, _, _), (b, _, rb) in zip(targets, targets[1:]):
        if a == b:
            raise PatchError(f"two patches for the instruction at offset {a} of {code.co_qualname}")
    tails: list[Any] = []
    firings = {id(target): _firing(code, work, originals, rec) for _, target, rec in targets}
    for _, target, rec in targets:
        idx = next(i for i, x in enumerate(work) if x is target)
        firing = firings[id(target)]
        rw = synths[rec.guard.guard](work, idx, rec.guard, firing)
        if firing.takes is not None and not any(getattr(x, "arg", None) is firing.takes[0] for x in rw.body):
            raise PatchError(f"{rec.guard.guard} cannot take the raising side of the decision after it")
        work[rw.start : rw.stop] = rw.body
        tails.extend(rw.tail)
    work.extend(tails)
    _intern_constants(work)
    bc.clear()
    bc.extend(work)
    names = ", ".join(sorted({r.guard.guard for r in records}))
    try:
        new = assemble(bc)
    except Exception as exc:  # the bytecode library raises several types here
        raise PatchError(f"{names} does not assemble in {code.co_qualname}: {exc}") from exc
    new = linetable.checked(new, work, firstlineno=code.co_firstlineno)
    now_real = [ins for ins in work if isinstance(ins, Instr)]
    origin = tuple(index_of.get(id(ins)) for ins in now_real)
    if len(real_instructions(new)) != len(origin):
        raise PatchError(f"{names} in {code.co_qualname}: assembled code does not map onto its instructions; refused")
    after = listing(now_real)
    added, removed = _delta(before if before is not None else listing(originals), after)
    return Synthesis(new, added, removed, before if before is not None else listing(originals), after, origin)


def _intern_constants(work: list[Any]) -> None:
    """Intern the identifier-like ``str`` constants loaded by *work* (also inside
    tuples), as the code object constructor will anyway. ``bytecode`` merges equal
    constants by their marshalled bytes, which differ between an interned string and an
    equal one that is not yet (``'None'`` written in CodeSuture's code, or read from a
    record's JSON): without this, one function healed at two sites got a different
    constant table depending on where each record came from, so a process that had
    loaded the overlay could not rebuild its code from the records (and refused to heal
    a third site), and ``sign`` could not rebuild the overlay."""
    for ins in work:
        if isinstance(ins, Instr) and ins.name == "LOAD_CONST" and type(ins.arg) in (str, tuple):
            ins.arg = _interned(ins.arg)


def _interned(value: Any) -> Any:
    """*value* with its identifier-like ``str`` (also inside tuples) interned; other
    values as they are."""
    import sys

    if type(value) is str:
        return sys.intern(value) if value.isascii() and value.replace("_", "a").isalnum() else value
    if type(value) is tuple:
        items = tuple(_interned(v) for v in value)
        return items if any(a is not b for a, b in zip(items, value)) else value
    return value


def _firing(code: types.CodeType, work: list[Any], originals: list[Any], rec: PatchRecord) -> Any:
    """What *rec*'s guard reports when it fires, with its value-flow plan
    (``GuardSpec.flow``): returned values check their callers; a guard that takes the
    raising side gets a label there (inserted into *work* after the jump for ``next``)."""
    from bytecode import Label

    from codesuture.guards.base import Firing

    from codesuture.patch.spec import AS_IS, NO_TRUTH

    plan = rec.guard.flow
    exc = exception_of(rec)
    flags = []  # events.fire: "<exc>|<returned>|<flag>,<flag>"
    if plan.endswith(NO_TRUTH):
        plan = plan[: -len(NO_TRUTH)]
        flags.append(NO_TRUTH[1:])
    if plan.startswith("return:") and plan.endswith(AS_IS):
        plan = plan[: -len(AS_IS)]
        flags.append(AS_IS[1:])
    returned = plan.partition(":")[2] if plan.startswith("return:") else ""
    if flags:
        return Firing(site_of(rec), f"{exc}|{returned}|{','.join(flags)}")
    if returned:
        return Firing(site_of(rec), f"{exc}|{returned}")
    if plan.startswith("raise:"):
        try:
            _, off, side, pops = plan.split(":")
            k, _ = instruction_index(code, int(off))
            jump = originals[k]
        except (ValueError, PatchError) as err:
            raise PatchError(f"bad value-flow plan {plan!r}: {err}") from None
        if not jump.has_jump() or jump.is_uncond_jump() or side not in ("jump", "next"):
            raise PatchError(f"the instruction at offset {off} of {code.co_qualname} is not a two-way branch")
        if side == "jump":
            label = jump.arg
        else:
            label = Label()
            at = next(i for i, x in enumerate(work) if x is jump)
            work.insert(at + 1, label)
        return Firing(site_of(rec), exc, (label, int(pops)))
    return Firing(site_of(rec), exc)


def assemble(bc: Bytecode) -> types.CodeType:
    """``bc.to_code()``, with the depth of every
    :class:`~codesuture.guards.base.ScopedTry` range lowered as it
    says (computed by ``bytecode`` first, then adjusted). Raises what ``bytecode`` raises."""
    from codesuture.guards.base import ScopedTry

    if not any(isinstance(ins, ScopedTry) for ins in bc):
        return bc.to_code()
    from bytecode import ControlFlowGraph

    cfg = ControlFlowGraph.from_bytecode(bc)
    stacksize = cfg.compute_stacksize()
    flat = cfg.to_bytecode()
    for ins in flat:
        if isinstance(ins, ScopedTry) and ins.stack_depth is not UNSET:
            ins.stack_depth = max(ins.stack_depth - ins.lower, 0)
    return flat.to_code(stacksize=stacksize, compute_exception_stack_depths=False)


def site_of(record: PatchRecord) -> str:
    """What a record's guard reports when it fires: ``"<guard>@<module>:<line>"``."""
    return f"{record.guard.guard}@{record.module}:{record.line}"


def exception_of(record: PatchRecord) -> str:
    """The built-in exception class a record's guard stands in for (``"KeyError"``)."""
    return str(record.exception or "").partition(":")[0].strip()


def synthesize(code: types.CodeType, record: PatchRecord) -> Synthesis:
    """Apply *record*'s guard to *code* (``synthesize_all(code, [record])``)."""
    return synthesize_all(code, [record])


def _delta(before: list[str], after: list[str]) -> tuple[int, int]:
    import difflib

    added = removed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return added, removed


def walk_code(code: types.CodeType) -> Iterator[types.CodeType]:
    """*code* and every code object nested in its constants, depth first."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from walk_code(const)


def find_code(root: types.CodeType, qualname: str, firstlineno: int) -> types.CodeType | None:
    for c in walk_code(root):
        if c.co_qualname == qualname and c.co_firstlineno == firstlineno:
            return c
    return None


def replace_in_tree(root: types.CodeType, old: types.CodeType, new: types.CodeType) -> types.CodeType:
    """Return *root* with *old* replaced by *new* wherever it is nested (rebuilding
    each parent's ``co_consts``); *root* itself if *old* is not inside."""
    if root is old:
        return new
    changed = False
    consts = []
    for const in root.co_consts:
        if isinstance(const, types.CodeType):
            repl = replace_in_tree(const, old, new)
            changed |= repl is not const
            consts.append(repl)
        else:
            consts.append(const)
    return root.replace(co_consts=tuple(consts)) if changed else root


def group_by_function(records: Sequence[PatchRecord]) -> dict[tuple[str, int], list[PatchRecord]]:
    """Records by ``(qualname, firstlineno)``, each list in offset order, functions in
    source order."""
    out: dict[tuple[str, int], list[PatchRecord]] = {}
    for rec in sorted(records, key=lambda r: (r.firstlineno, r.qualname, r.offset)):
        out.setdefault((rec.qualname, rec.firstlineno), []).append(rec)
    return out


def apply_to_module(module_code: types.CodeType, records: Sequence[PatchRecord]) -> types.CodeType:
    """Apply *records* to the code objects nested in *module_code* (compiled from
    source), each function's records together (:func:`synthesize_all`); the overlay
    builder uses this. Raises :class:`PatchError`."""
    for (qualname, firstlineno), recs in group_by_function(records).items():
        target = find_code(module_code, qualname, firstlineno)
        if target is None:
            raise PatchError(f"{qualname} (line {firstlineno}) not found in {module_code.co_filename}")
        module_code = replace_in_tree(module_code, target, synthesize_all(target, recs).code)
    return module_code
