"""What a value's consumer needs: the default a guard yields when the code around it
says (*consumer first*, docs/guards.md), read from a function's bytecode.

The instruction that consumes a value (:func:`codesuture.patch.instrs.find_consumer`)
tells what the value must be for the code to go on: an empty container for iteration,
sizing, unpacking and ``in``; the empty value of the type that has the attribute read
next; the other operand's zero for arithmetic and comparisons against a constant;
``''`` for formatting. The diagnosis asks it at heal time
(:mod:`codesuture.crash.diagnose`), and a guard whose value is returned unchanged asks
it of its live callers when it fires (:func:`caller_default`, through
:func:`codesuture.runtime.callers.consumer_default`). Kept apart from the diagnosis
so that a firing imports only this and ``bytecode``, not the guard families, ``inspect``
or ``re``. Defaults are keys of :data:`codesuture.patch.spec.DEFAULTS`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

#: Callables whose argument must be sized or iterable: guarded values they read get ().
SIZED_CALLS = frozenset({
    "len", "list", "tuple", "set", "frozenset", "sorted", "sum", "any", "all", "max", "min",
    "enumerate", "zip", "iter", "reversed", "dict", "map", "filter",
})

#: Built-in types whose empty value answers an attribute or method the consumer reads
#: (``x.upper()`` -> ``''``, ``x.items()`` -> ``{}``), most common first.
_OWNER_TYPES: tuple[tuple[type, str], ...] = (
    (str, "''"), (dict, "{}"), (list, "[]"), (set, "set()"), (bytes, "b''"), (int, "0"), (float, "0.0"),
)
#: Constants an operand may be, and the zero of their type.
_ZEROS: dict[type, str] = {int: "0", float: "0.0", str: "''", bytes: "b''", tuple: "()"}
#: Arithmetic whose operands, when not known, are numbers (``x - y``, ``x * 2``...).
_NUMERIC_OPS = frozenset({"SUBTRACT", "MULTIPLY", "TRUE_DIVIDE", "FLOOR_DIVIDE", "POWER"})
#: Format-spec conversion types that need a number (``f"{x:.2f}"``, ``f"{n:d}"``).
_INT_SPECS, _FLOAT_SPECS = frozenset("bcdoxXn"), frozenset("eEfFgG%")
_FORMATS = frozenset({"FORMAT_VALUE", "FORMAT_SIMPLE", "FORMAT_WITH_SPEC", "CONVERT_VALUE"})
_LOCAL_LOADS = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK"})
_LOCAL_STORES = frozenset({"STORE_FAST", "STORE_FAST_MAYBE_NULL"})
#: What the built-in callables return: a call-site guard's default when its consumer
#: says nothing (``len(None)`` -> 0, ``sorted([None, 1])`` -> []).
CALL_RESULTS: dict[str, str] = {
    "len": "0", "ord": "0", "int": "0", "abs": "0", "sum": "0", "round": "0", "hash": "0", "float": "0.0",
    "str": "''", "repr": "''", "chr": "''", "format": "''", "ascii": "''", "hex": "''", "oct": "''", "bin": "''",
    "bytes": "b''", "sorted": "[]", "list": "[]", "tuple": "()", "dict": "{}", "set": "set()",
}


def owner_default(name: str) -> str:
    """The empty value (a key of :data:`DEFAULTS`) of the first built-in type that has
    attribute *name* (``upper`` -> ``''``), or ``"None"``; dunders name no type."""
    if not name or name.startswith("__"):
        return "None"
    for t, default in _OWNER_TYPES:
        if hasattr(t, name):
            return default
    return "None"


def _consumer_default(bc: list[Any], idx: int, hops: int = 0) -> str:
    """The value the instruction that consumes ``bc[idx]``'s result needs, as a key of
    :data:`DEFAULTS` (consumer first, docs/guards.md): an empty container for iteration,
    sizing, unpacking and ``in``; the empty value of the type that has the attribute
    or method read next; the other operand's zero for arithmetic and ``+``, and for an
    ordering or equality test against a constant; ``''`` for formatting (a number for
    a numeric format spec); else ``"None"``. A value stored in a local is followed to
    its next load (once)."""
    from codesuture.patch import instrs as I

    found = I.find_consumer(bc, idx)
    if found is None:
        return "None"
    j, position = found
    ins = bc[j]
    name = ins.name
    if name in ("GET_ITER", "UNPACK_SEQUENCE", "UNPACK_EX"):
        return "()"
    if name == "CONTAINS_OP" and position == 1:
        return "()"
    if name in I.CALL_NAMES:
        callee, _ = I.callee_name(bc, j)
        return "()" if callee in SIZED_CALLS else "None"
    if name in ("LOAD_ATTR", "LOAD_METHOD") and position == 1:
        return owner_default(str(I.name_loaded(ins) or ""))
    if name in _FORMATS:
        return _format_default(bc, j, position)
    if name == "BINARY_OP":
        return _operand_default(bc, j, position)
    if name == "COMPARE_OP":
        return _compared_default(bc, j, position)
    if name in _LOCAL_STORES and hops == 0:
        load = _next_load(bc, j, ins.arg)
        return _consumer_default(bc, load, 1) if load is not None else "None"
    return "None"


def _format_default(bc: list[Any], j: int, position: int) -> str:
    """``f"{x}"`` needs a str; ``f"{x:.2f}"`` a float, ``f"{x:d}"`` an int."""
    from codesuture.patch import instrs as I

    spec_at = None
    if bc[j].name == "FORMAT_WITH_SPEC" or (bc[j].name == "FORMAT_VALUE" and int(bc[j].arg) & 4):
        if position != 2:
            return "''"  # the guarded value is the spec itself
        spec_at = I.find_producer(bc, j, 1)
    spec = bc[spec_at].arg if spec_at is not None and bc[spec_at].name == "LOAD_CONST" else ""
    kind = spec[-1:] if isinstance(spec, str) else ""
    return "0" if kind in _INT_SPECS else "0.0" if kind in _FLOAT_SPECS else "''"


def _operand_default(bc: list[Any], j: int, position: int) -> str:
    """The zero of the other operand's type when the code makes it certain (a
    constant, an f-string, a list or tuple display); ``0`` for ``- * / // **`` of
    an unknown operand; else ``"None"`` (which the operator guard reads at run time)."""
    from codesuture.patch import instrs as I

    op = getattr(bc[j].arg, "name", str(bc[j].arg)).removeprefix("INPLACE_")
    k = I.find_producer(bc, j, 1 if position == 2 else 2)
    other: Any = bc[k] if k is not None else None
    oname = getattr(other, "name", "")
    const = other.arg if oname == "LOAD_CONST" else None
    if type(const) in _ZEROS:
        if op == "REMAINDER" and isinstance(const, str) and position == 1:
            return "None"  # "%s" % x: x is the format's argument, None formats as itself
        return _ZEROS[type(const)]
    if oname in ("BUILD_STRING", "FORMAT_VALUE", "FORMAT_SIMPLE", "FORMAT_WITH_SPEC") and op == "ADD":
        return "''"
    if oname == "BUILD_LIST" and op == "ADD":
        return "[]"
    if oname == "BUILD_TUPLE" and op == "ADD":
        return "()"
    return "0" if op in _NUMERIC_OPS else "None"


def _compared_default(bc: list[Any], j: int, position: int) -> str:
    """``x >= 0`` needs a number: the zero of the other operand's type when it is a
    constant (``0``, ``0.0``, ``''``, ``b''``, ``()``); else ``"None"`` (an operand
    whose type is not known is not guessed)."""
    from codesuture.patch import instrs as I

    k = I.find_producer(bc, j, 1 if position == 2 else 2)
    other: Any = bc[k] if k is not None else None
    const = other.arg if getattr(other, "name", "") == "LOAD_CONST" else None
    return _ZEROS.get(type(const), "None")


def returned_as_is(bc: list[Any], idx: int) -> bool:
    """True when the value ``bc[idx]`` pushes is returned unchanged: its consumer is
    the ``return``, directly or through a local read once (``v = d[k]; return v``)."""
    j = _next_instr(bc, idx)
    if j is not None and bc[j].name in _LOCAL_STORES:
        load = _next_load(bc, j, bc[j].arg)
        j = _next_instr(bc, load) if load is not None else None
    return j is not None and bool(bc[j].name == "RETURN_VALUE")


def _next_instr(bc: list[Any], idx: int) -> int | None:
    """Index of the first real instruction after ``bc[idx]`` (labels and other pseudo
    instructions skipped: the value on top of the stack on this path is the same)."""
    from bytecode import Instr

    for k in range(idx + 1, len(bc)):
        if isinstance(bc[k], Instr):
            return k
    return None


def returned_unchanged(code: Any, offset: int) -> bool:
    """:func:`returned_as_is` for the instruction at *offset* (bytes) of *code*; False
    when it cannot be told. Never raises."""
    try:
        from bytecode import Bytecode

        bc: list[Any] = list(Bytecode.from_code(code))
        return returned_as_is(bc, _index_at(bc, code, offset))
    except Exception:  # noqa: BLE001 - not known: not returned as is
        return False


#: :func:`caller_default`'s answer for a caller that returns the value on unchanged.
RETURNED = "return"


def caller_default(code: Any, lasti: int) -> str:
    """What a caller standing at instruction offset *lasti* of *code* (the call that
    returns a guard's default to it) needs of that value (consumer first,
    docs/guards.md): a key of :data:`codesuture.patch.spec.DEFAULTS` (``"None"``: its
    consumer says nothing), or :data:`RETURNED` when it returns the value on unchanged
    (then its own caller decides). Read from the code object only; never raises."""
    try:
        from bytecode import Bytecode

        bc: list[Any] = list(Bytecode.from_code(code))
        idx = _index_at(bc, code, lasti)
        return RETURNED if returned_as_is(bc, idx) else _consumer_default(bc, idx)
    except Exception:  # noqa: BLE001 - not known: the guard's own rule decides
        return "None"


def _index_at(bc: list[Any], code: Any, lasti: int) -> int:
    """Index in *bc* (``Bytecode.from_code(code)``) of the instruction a frame stands
    at with ``f_lasti`` *lasti*: the last one starting at or before it (3.12 may point
    into a call's inline cache entries; 3.11 may stand at the PRECALL of its CALL).
    Raises ValueError."""
    from bytecode import Instr

    from codesuture.patch.instrs import real_instructions

    real = real_instructions(code)
    k = max((n for n, ins in enumerate(real) if ins.offset <= lasti), default=-1)
    if k < 0:
        raise ValueError(f"no instruction at offset {lasti}")
    if real[k].opname == "PRECALL" and k + 1 < len(real):
        k += 1
    seen = -1
    for i, ins in enumerate(bc):
        if isinstance(ins, Instr):
            seen += 1
            if seen == k:
                return i
    raise ValueError(f"offset {lasti} is past the end of {code.co_qualname}")


def _next_load(bc: list[Any], j: int, local: Any, limit: int = 48) -> int | None:
    """Index of the next instruction after ``bc[j]`` that loads local *local*, in
    program order within *limit* instructions; None when it is stored again first."""
    from bytecode import Instr

    want = getattr(local, "name", local)
    seen = 0
    for k in range(j + 1, len(bc)):
        ins = bc[k]
        if not isinstance(ins, Instr):
            continue
        seen += 1
        if seen > limit:
            return None
        arg = getattr(ins.arg, "name", ins.arg)
        if ins.name in _LOCAL_LOADS and arg == want:
            return k
        if ins.name == "LOAD_FAST_LOAD_FAST" and isinstance(ins.arg, tuple):
            names = [getattr(a, "name", a) for a in ins.arg]
            if names[-1] == want:
                return k
            if want in names:
                return None
        if ins.name in _LOCAL_STORES and arg == want:
            return None
    return None


def call_result_default(bc: list[Any], idx: int) -> str:
    """A call-site guard's default for the call at *idx*: what its consumer needs,
    else what the built-in it calls returns (:data:`CALL_RESULTS`), else ``"None"``."""
    from codesuture.patch import instrs as I

    default = _consumer_default(bc, idx)
    if bc[idx].name not in I.CALL_NAMES:
        return default
    found = I.find_consumer(bc, idx)
    formats_anything = default == "''" and found is not None and bc[found[0]].name in _FORMATS
    if default != "None" and not formats_anything:
        return default
    fn = I.find_producer(bc, idx, I.call_slots(bc[idx])[0])
    if fn is None or bc[fn].name not in ("LOAD_GLOBAL", "LOAD_NAME"):
        return default  # a method or a local: what it returns is not known
    # f"{len(x):>3}" formats any type: the built-in's own result type is the better guess.
    return CALL_RESULTS.get(str(I.name_loaded(bc[fn])), default)




__all__ = ["SIZED_CALLS", "CALL_RESULTS", "RETURNED", "owner_default", "returned_as_is", "returned_unchanged",
           "caller_default", "call_result_default"]
