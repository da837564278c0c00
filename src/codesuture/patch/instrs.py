"""Version shims and stack analysis over ``bytecode`` abstract instructions.

Everything that differs between 3.11, 3.12 and 3.13 and that guards need lives here:
jump opcode names, the call protocol (where the callable sits on the stack), method
loads, MAKE_FUNCTION, boolean compares, and string formatting. Guards are written once
against these helpers.

Stack walks use ``Instr.pre_and_post_stack_effect`` and stop at control-flow merges
(labels, jumps): a guard that cannot prove its operands' producer or consumer in
straight-line code is refused rather than guessed.
"""

from __future__ import annotations

import dis
import sys
import types
from functools import lru_cache
from typing import Any, Sequence

from bytecode import Compare, Instr, Label, SetLineno, TryBegin, TryEnd

PY = sys.version_info[:2]
PY311 = PY == (3, 11)
PY313 = PY >= (3, 13)

# Names whose first abstract-stack effect is a "call": the instructions that consume
# a callable and its arguments.
CALL_NAMES = frozenset({"CALL", "CALL_KW"})
PSEUDO = (Label, TryBegin, TryEnd, SetLineno)


def real_instructions(code: types.CodeType) -> list[dis.Instruction]:
    """The instructions of *code* that ``bytecode`` models one-to-one (no CACHE or
    EXTENDED_ARG entries), in order."""
    return [i for i in dis.get_instructions(code) if i.opname not in ("EXTENDED_ARG", "CACHE")]


def instruction_index(code: types.CodeType, offset: int) -> tuple[int, str]:
    """Map an instruction offset in bytes (``tb_lasti``) to ``(k, opname)``: the
    instruction is the k-th real instruction of ``Bytecode.from_code(code)``
    (CACHE and EXTENDED_ARG entries do not count). Raises PatchError."""
    for k, ins in enumerate(real_instructions(code)):
        if ins.offset == offset:
            return k, ins.opname
        if ins.offset > offset:
            break
    from codesuture.errors import PatchError

    raise PatchError(f"no instruction at offset {offset} in {code.co_qualname}")


_NOARG = object()


def _n(arg: Any) -> int:
    """An instruction's integer argument (bytecode types it as a union of everything)."""
    return int(arg)


def at(loc: Any, name: str, arg: Any = _NOARG) -> Instr:
    """An instruction carrying the failing instruction's source location *loc*."""
    if arg is _NOARG:
        return Instr(name, location=loc)
    return Instr(name, arg, location=loc)


def jump_if_not_none(target: Label, loc: Any) -> Instr:
    return at(loc, "POP_JUMP_FORWARD_IF_NOT_NONE" if PY311 else "POP_JUMP_IF_NOT_NONE", target)


def jump_if_none(target: Label, loc: Any) -> Instr:
    return at(loc, "POP_JUMP_FORWARD_IF_NONE" if PY311 else "POP_JUMP_IF_NONE", target)


def jump_if_false(target: Label, loc: Any) -> Instr:
    return at(loc, "POP_JUMP_FORWARD_IF_FALSE" if PY311 else "POP_JUMP_IF_FALSE", target)


def jump_if_true(target: Label, loc: Any) -> Instr:
    return at(loc, "POP_JUMP_FORWARD_IF_TRUE" if PY311 else "POP_JUMP_IF_TRUE", target)


def jump_forward(target: Label, loc: Any) -> Instr:
    return at(loc, "JUMP_FORWARD", target)


def jump_backward(target: Label, loc: Any) -> Instr:
    return at(loc, "JUMP_BACKWARD", target)


def compare(op: str, loc: Any) -> Instr:
    """COMPARE_OP yielding an exact bool on every version (3.13 pop-jumps need one)."""
    return at(loc, "COMPARE_OP", getattr(Compare, op + "_CAST") if PY313 else getattr(Compare, op))


def load_method(name: str, loc: Any) -> Instr:
    """Load ``TOS.name`` in method form (pushes two items, ready for CALL)."""
    return at(loc, "LOAD_METHOD", name) if PY311 else at(loc, "LOAD_ATTR", (True, name))


def load_attr(name: str, loc: Any) -> Instr:
    return at(loc, "LOAD_ATTR", name) if PY311 else at(loc, "LOAD_ATTR", (False, name))


def call(nargs: int, loc: Any) -> list[Instr]:
    return [at(loc, "PRECALL", nargs), at(loc, "CALL", nargs)] if PY311 else [at(loc, "CALL", nargs)]


def make_function(code: types.CodeType, loc: Any) -> list[Instr]:
    mf = at(loc, "MAKE_FUNCTION") if PY313 else at(loc, "MAKE_FUNCTION", 0)
    return [at(loc, "LOAD_CONST", code), mf]


def format_str(loc: Any) -> Instr:
    """Replace TOS with ``format(TOS, '')`` (what ``f'{x}'`` does: ``str(x)`` for most)."""
    return at(loc, "FORMAT_SIMPLE") if PY313 else at(loc, "FORMAT_VALUE", 0)


def push_method_pair(loc: Any, fn_code: types.CodeType) -> list[Instr]:
    """Push what a method-form attribute load of a plain function pushes: 3.11/3.12
    ``[NULL, fn]``, 3.13 ``[fn, NULL]``; *fn* is built from *fn_code*."""
    if PY313:
        return make_function(fn_code, loc) + [at(loc, "PUSH_NULL")]
    return [at(loc, "PUSH_NULL")] + make_function(fn_code, loc)


@lru_cache(maxsize=None)
def constant_function(default_repr: str) -> types.CodeType:
    """Code of ``lambda *args, **kwargs: <default>``: stands in for a method or callable
    that is None. Compiled by this interpreter, so it marshals with the overlay."""
    outer = compile(f"lambda *args, **kwargs: {default_repr}", "<codesuture>", "eval")
    code = next(c for c in outer.co_consts if isinstance(c, types.CodeType))
    return code.replace(co_name="<codesuture-none>", co_qualname="<codesuture-none>")


@lru_cache(maxsize=None)
def method_stand_in(site: str, name: str, static: str) -> types.CodeType:
    """Code of the function that stands in for method *name* of None at *site*:
    ``lambda *a, **k: codesuture.runtime.events.method_default(site, name, static, a, k)``
    (``None.strip()`` then yields ``''.strip()``). Compiled by this interpreter, so it
    marshals with the overlay."""
    src = (f"lambda *args, **kwargs: __import__('codesuture.runtime.events', fromlist=('method_default',))"
           f".method_default({site!r}, {name!r}, {static!r}, args, kwargs)")
    outer = compile(src, "<codesuture>", "eval")
    code = next(c for c in outer.co_consts if isinstance(c, types.CodeType))
    return code.replace(co_name="<codesuture-none>", co_qualname="<codesuture-none>")


def call_slots(instr: Instr) -> tuple[int, int]:
    """``(callable depth, deepest depth)`` as ``COPY`` depths when *instr*
    (CALL/CALL_KW) runs.

    3.11/3.12 stack: ``[NULL|method, callable|self, arg1..argN]``: callable at N+1,
    deepest at N+2. 3.13 stack: ``[callable, self|NULL, arg1..argN (, kwnames)]``:
    callable and deepest at N+2 (CALL_KW: N+3).
    """
    n = _n(instr.arg)
    if not PY313:
        return n + 1, n + 2
    d = n + 3 if instr.name == "CALL_KW" else n + 2
    return d, d


_ZERO = frozenset({"NOP", "RESUME", "PRECALL", "KW_NAMES", "EXTENDED_ARG", "CACHE"})
_PUSH1 = frozenset({
    "LOAD_CONST", "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR", "LOAD_DEREF",
    "LOAD_CLOSURE", "LOAD_NAME", "LOAD_CLASSDEREF", "PUSH_NULL", "LOAD_ASSERTION_ERROR",
    "LOAD_BUILD_CLASS", "LOAD_LOCALS",
})
_POP1 = frozenset({"POP_TOP", "STORE_FAST", "STORE_NAME", "STORE_GLOBAL", "STORE_DEREF",
                   "LIST_APPEND", "SET_ADD", "LIST_EXTEND", "SET_UPDATE", "DICT_UPDATE",
                   "DICT_MERGE"})
_UNARY = frozenset({"UNARY_NEGATIVE", "UNARY_POSITIVE", "UNARY_NOT", "UNARY_INVERT", "TO_BOOL",
                    "GET_ITER", "FORMAT_SIMPLE", "CONVERT_VALUE", "CALL_INTRINSIC_1",
                    "STORE_FAST_LOAD_FAST"})
_BINARY = frozenset({"BINARY_OP", "BINARY_SUBSCR", "COMPARE_OP", "IS_OP", "CONTAINS_OP",
                     "FORMAT_WITH_SPEC", "CALL_INTRINSIC_2", "IMPORT_NAME",
                     "SET_FUNCTION_ATTRIBUTE"})
_BUILD = frozenset({"BUILD_TUPLE", "BUILD_LIST", "BUILD_SET", "BUILD_STRING", "BUILD_SLICE"})


def effect(instr: Instr) -> tuple[int, int] | None:
    """``(items popped, items pushed)`` of a straight-line instruction on this
    interpreter, or None when unknown (callers then refuse to guess)."""
    name, arg = instr.name, instr.arg
    if name in _ZERO:
        return 0, 0
    if name.startswith("POP_JUMP_"):  # every form pops the value it tests
        return 1, 0
    if name in _PUSH1:
        return 0, 1
    if name in _POP1:
        return 1, 0
    if name in _UNARY:
        return 1, 1
    if name in _BINARY:
        return 2, 1
    if name in _BUILD:
        return _n(arg), 1
    if name == "LOAD_FAST_LOAD_FAST":
        return 0, 2
    if name == "STORE_FAST_STORE_FAST":
        return 2, 0
    if name == "LOAD_GLOBAL":
        return 0, (2 if isinstance(arg, tuple) and arg[0] else 1)
    if name == "LOAD_ATTR":
        return 1, (2 if isinstance(arg, tuple) and arg[0] else 1)
    if name == "LOAD_METHOD":
        return 1, 2
    if name in ("STORE_ATTR", "MAP_ADD"):
        return 2, 0
    if name == "STORE_SUBSCR":
        return 3, 0
    if name == "BINARY_SLICE":
        return 3, 1
    if name == "COPY":
        return _n(arg), _n(arg) + 1
    if name == "SWAP":
        return _n(arg), _n(arg)
    if name == "FORMAT_VALUE":
        return (2 if _n(arg) & 4 else 1), 1
    if name == "BUILD_MAP":
        return 2 * _n(arg), 1
    if name == "BUILD_CONST_KEY_MAP":
        return _n(arg) + 1, 1
    if name in CALL_NAMES:
        return call_slots(instr)[1], 1
    if name == "CALL_FUNCTION_EX":
        return 3 + (_n(arg) & 1), 1
    if name == "MAKE_FUNCTION":
        return (1 if PY313 else 1 + bin(_n(arg) & 0xF).count("1")), 1
    if name == "GET_LEN":
        return 1, 2
    if name == "IMPORT_FROM":
        return 1, 2
    if name == "UNPACK_SEQUENCE":
        return 1, _n(arg)
    return None


def find_producer(instrs: Sequence[Any], idx: int, depth: int) -> int | None:
    """Index of the instruction that pushed the stack item *depth* deep (1 = TOS)
    just before ``instrs[idx]`` runs; None if a label or jump is crossed first."""
    need = depth
    j = idx - 1
    while j >= 0:
        ins = instrs[j]
        if isinstance(ins, Label):
            return None
        if isinstance(ins, PSEUDO):
            j -= 1
            continue
        eff = None if ins.has_jump() else effect(ins)
        if eff is None:
            return None
        popped, pushed = eff
        if need <= pushed:
            return j
        need = need - pushed + popped
        j -= 1
    return None


def find_consumer(instrs: Sequence[Any], idx: int) -> tuple[int, int] | None:
    """The instruction that consumes the top item pushed by ``instrs[idx]``:
    ``(index, position)`` where position counts from the top of that instruction's
    inputs (1 = TOS). None when control flow merges or branches first."""
    above = 0  # items stacked above our value
    j = idx + 1
    while j < len(instrs):
        ins = instrs[j]
        if isinstance(ins, Label):
            return None
        if isinstance(ins, PSEUDO):
            j += 1
            continue
        eff = effect(ins)
        if eff is None:
            return None
        popped, pushed = eff
        if popped > above:
            return j, above + 1
        if ins.has_jump():
            return None
        above = above - popped + pushed
        j += 1
    return None


def name_loaded(ins: Any) -> Any:
    """The global/local name an instruction loads (LOAD_GLOBAL/LOAD_NAME/LOAD_FAST/
    LOAD_DEREF), or None."""
    if not isinstance(ins, Instr):
        return None
    if ins.name == "LOAD_GLOBAL":
        return ins.arg[1] if isinstance(ins.arg, tuple) else ins.arg
    if ins.name in {"LOAD_NAME", "LOAD_FAST", "LOAD_DEREF", "LOAD_FAST_CHECK", "LOAD_CLASSDEREF"}:
        return ins.arg if isinstance(ins.arg, str) else getattr(ins.arg, "name", None)
    if ins.name in {"LOAD_ATTR", "LOAD_METHOD"}:
        return ins.arg[1] if isinstance(ins.arg, tuple) else ins.arg
    return None


def callee_name(instrs: Sequence[Any], call_idx: int) -> tuple[str | None, int | None]:
    """For a CALL at *call_idx*: the name of the callable and the index of the
    instruction that loaded it (the start of the call expression)."""
    callable_at, deepest = call_slots(instrs[call_idx])
    fn = find_producer(instrs, call_idx, callable_at)
    start = find_producer(instrs, call_idx, deepest)
    if fn is None or start is None:
        return None, None
    return name_loaded(instrs[fn]), start


def active_try(instrs: Sequence[Any], idx: int) -> TryBegin | None:
    """The exception-table range (TryBegin) open at ``instrs[idx]``, if any."""
    current: TryBegin | None = None
    for ins in instrs[:idx]:
        if isinstance(ins, TryBegin):
            current = ins
        elif isinstance(ins, TryEnd) and ins.entry is current:
            current = None
    return current
