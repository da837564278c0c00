"""Diagnosis: which guard answers a crash at a crash site, and what it yields.

Decided from the exception (type and message) and the failing instruction only;
the healthy path is never observed. Defaults are chosen from how the guarded value is
used right after (its consumer): ``()`` when it is sized or iterated (``len()``,
``for``, ``in``), ``''`` when a constant index reads the list a string splitter made
(``re.findall``, ``str.split``...), else None. See :mod:`codesuture.guards`.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from codesuture.crash.consumer import (  # noqa: F401 - re-exported: the diagnosis's consumer-first defaults
    CALL_RESULTS,
    RETURNED,
    SIZED_CALLS,
    _consumer_default,
    call_result_default,
    caller_default,
    owner_default,
    returned_as_is,
    returned_unchanged,
)
from codesuture.crash.site import CrashSite
from codesuture.crash.structural import conversion_zero, structural_call_error
from codesuture.errors import DiagnosisError
from codesuture.guards import families
from codesuture.guards.calls import CALL_GUARD_OPS
from codesuture.patch.spec import GuardSpec

#: Producers of lists of strings: a constant index into their empty result yields ''.
STR_LIST_PRODUCERS = frozenset({"findall", "split", "rsplit", "splitlines"})


def diagnose(exc: BaseException, site: CrashSite) -> GuardSpec:
    """The guard for *exc* at *site*, or :class:`DiagnosisError` saying why none fits.
    The guard chosen is one of the families table (:mod:`codesuture.guards.families`)
    and *exc* one of the exceptions its row answers."""
    spec = _choose(exc, site)
    if not families.answers(spec.guard, exc):
        raise DiagnosisError(f"{spec.guard} does not answer {type(exc).__name__} (the families table)")
    return spec


def _choose(exc: BaseException, site: CrashSite) -> GuardSpec:
    from bytecode import Bytecode

    from codesuture.guards import subscript
    from codesuture.guards.arith import ADDS, DIVISIONS
    from codesuture.patch import instrs as I
    from codesuture.patch.synthesize import locate
    from codesuture.errors import PatchError

    try:
        bc: list[Any] = list(Bytecode.from_code(site.code))
        idx = locate(bc, site.code, site.offset, site.opname)
    except PatchError as err:
        raise DiagnosisError(str(err)) from None
    ins: Any = bc[idx]
    op, msg = ins.name, str(exc)
    if not site.raised_here:
        # Raised below this frame, in code that cannot be patched (the standard
        # library, a dunder called from C): only a handler scoped to the call fits.
        if op in CALL_GUARD_OPS and structural_call_error(exc):
            return _call_guard(bc, idx, exc)
        raise DiagnosisError(f"{type(exc).__name__} was raised inside a library call, not at {site.describe()}")

    if op in _STORES and _store_on_none(exc, op):
        return GuardSpec("null_guard", "store", "None")

    if isinstance(exc, AttributeError) and msg.startswith("'NoneType' object has no attribute") and op in ("LOAD_ATTR", "LOAD_METHOD"):
        method = op == "LOAD_METHOD" or (isinstance(ins.arg, tuple) and ins.arg[0])
        if method:
            # The stand-in method's result is what the guarded call yields.
            call = I.find_consumer(bc, idx)
            default = _consumer_default(bc, call[0]) if call and bc[call[0]].name in I.CALL_NAMES else "None"
            return GuardSpec("null_guard", "method", default)
        # Optional chaining: the attribute loads reading this result (x.a.b.c) in one patch.
        from codesuture.guards.null import attr_chain_links

        links = attr_chain_links(bc, idx)
        last = links[-1] if links else idx
        if links and (bc[last].name == "LOAD_METHOD" or (isinstance(bc[last].arg, tuple) and bc[last].arg[0])):
            call = I.find_consumer(bc, last)
            default = _consumer_default(bc, call[0]) if call and bc[call[0]].name in I.CALL_NAMES else "None"
        else:
            default = _consumer_default(bc, last)
        return GuardSpec("null_guard", "attr", default, links=1 + len(links))

    if op == "BINARY_SUBSCR":
        if isinstance(exc, KeyError):
            form = "key"
        elif isinstance(exc, IndexError):
            form = "index"
        elif isinstance(exc, TypeError) and msg.startswith("'NoneType' object is not subscriptable"):
            form = "none"
        else:
            raise DiagnosisError(f"no guard for {type(exc).__name__} on a subscript")
        links = subscript.chain_links(bc, idx)
        last = links[-1] if links else idx
        default = _consumer_default(bc, last)
        if links:
            return GuardSpec("chain_subscript_guard", form, default, links=1 + len(links))
        if form == "key":
            return GuardSpec("key_guard", "", default)
        if form == "none":
            return GuardSpec("subscript_guard", "", default)
        key_at = I.find_producer(bc, idx, 1)
        const_index = key_at is not None and bc[key_at].name == "LOAD_CONST" and type(bc[key_at].arg) is int
        if const_index:
            if default == "None" and _container_from_str_splitter(bc, idx):
                default = "''"
            return GuardSpec("list_bound_guard", "", default)
        return GuardSpec("index_guard", "", default)

    if op == "BINARY_SLICE" and isinstance(exc, TypeError) and msg.startswith("'NoneType' object is not subscriptable"):
        # 3.12+: ``x[a:b]`` is one instruction (3.11 builds a slice and subscripts).
        return GuardSpec("subscript_guard", "", _consumer_default(bc, idx))

    if op in ("FORMAT_VALUE", "FORMAT_WITH_SPEC") and isinstance(exc, TypeError) and \
            msg.startswith("unsupported format string passed to NoneType.__format__"):
        return GuardSpec("null_guard", "format", "''")  # f"{x:.2f}" with x None

    if op == "CONTAINS_OP" and isinstance(exc, TypeError) and msg.startswith("argument of type 'NoneType'"):
        return GuardSpec("null_guard", "membership", "True" if ins.arg else "False")

    if op == "BINARY_OP":
        if isinstance(exc, ZeroDivisionError) and ins.arg in DIVISIONS:
            true_div = "TRUE_DIVIDE" in ins.arg.name
            return GuardSpec("division_guard", "", "0.0" if true_div else "0")
        if isinstance(exc, TypeError) and msg.startswith("unsupported operand type(s)") and ": 'NoneType' and" in msg:
            return GuardSpec("null_guard", "operator", "None")
        if isinstance(exc, TypeError) and ins.arg not in DIVISIONS and (
                (msg.startswith("unsupported operand type(s)") and msg.endswith("and 'NoneType'"))
                or (msg.startswith("can only concatenate") and '(not "NoneType")' in msg)):  # 'a' + None, [1] + None
            return GuardSpec("null_guard", "operand", "None")
        if isinstance(exc, TypeError) and ins.arg in ADDS and (
            "can only concatenate str" in msg or (msg.startswith("unsupported operand type(s) for +") and "'str'" in msg)
        ):
            return GuardSpec("str_coerce_guard", "", "''")

    if op == "COMPARE_OP" and isinstance(exc, TypeError) and "not supported between instances of" in msg:
        # `None < 3`: 'NoneType' first means the left operand is None.
        left_none = "instances of 'NoneType' and" in msg
        if left_none or msg.endswith("and 'NoneType'"):
            return GuardSpec("null_guard", "compare", "None", links=1 if left_none else 2)

    if op in I.CALL_NAMES:
        if isinstance(exc, TypeError) and msg.startswith("'NoneType' object is not callable"):
            return GuardSpec("callable_guard", "", "None")
        name, start = I.callee_name(bc, idx)
        if isinstance(exc, ValueError) and name in ("int", "float") and (
            "invalid literal for int()" in msg or "could not convert string to float" in msg
        ):
            return GuardSpec("type_coercion_guard", "", "0" if name == "int" else "0.0")
        if isinstance(exc, TypeError) and name in ("int", "float") and msg.endswith("not 'NoneType'"):
            return GuardSpec("type_coercion_guard", "", "0" if name == "int" else "0.0")  # int(None)
        if isinstance(exc, ValueError) and name == "int" and "for integer string conversion" in msg and _builtin_global(bc, idx):
            return GuardSpec("type_coercion_guard", "", "0")  # over sys.get_int_max_str_digits()
        if isinstance(exc, FileNotFoundError) and name == "open" and start is not None and _builtin_open(bc, idx):
            return GuardSpec("file_guard", "", "io.BytesIO()" if _binary_mode(bc, idx) else "io.StringIO()")

    if op in CALL_GUARD_OPS and op != "BINARY_SUBSCR" and structural_call_error(exc):
        return _call_guard(bc, idx, exc)

    raise DiagnosisError(f"no guard for {type(exc).__name__}({msg!r}) at {op}")


#: Stores and deletes whose target object may be None (the store is skipped).
_STORES = frozenset({"STORE_ATTR", "DELETE_ATTR", "STORE_SUBSCR", "DELETE_SUBSCR", "STORE_SLICE"})


def _call_guard(bc: list[Any], idx: int, exc: BaseException | None = None) -> GuardSpec:
    if bc[idx].name == "BINARY_SUBSCR":
        return GuardSpec("call_guard", "subscript", _consumer_default(bc, idx))
    default = call_result_default(bc, idx)
    zero = conversion_zero(exc) if exc is not None else None
    if default == "None" and zero is not None:
        default = zero  # the int()/float() the message names, reached through any expression
    return GuardSpec("call_guard", "call", default)


def _store_on_none(exc: BaseException, op: str) -> bool:
    """``obj.x = v`` / ``del obj.x`` / ``obj[k] = v`` / ``del obj[k]`` with obj None."""
    msg = str(exc)
    if op in ("STORE_ATTR", "DELETE_ATTR"):
        return isinstance(exc, AttributeError) and msg.startswith("'NoneType' object has no attribute")
    return isinstance(exc, TypeError) and msg.startswith("'NoneType' object does not support item")


def _builtin_global(bc: list[Any], idx: int) -> bool:
    """True when the call at *idx* calls a global or builtin name (not a method)."""
    from codesuture.patch import instrs as I

    fn = I.find_producer(bc, idx, I.call_slots(bc[idx])[0])
    return fn is not None and bc[fn].name in ("LOAD_GLOBAL", "LOAD_NAME")


def yielded_at(code: Any, offset: int, opname: str, spec: GuardSpec) -> tuple[int, str] | None:
    """``(offset, kind)`` of the instruction whose result is the value the guard of
    *spec* at *offset* yields (the failing instruction; the last link of a chain; the
    call of a guarded method), *kind* ``"truth"`` when that value is already a truth
    value (a guarded comparison or membership test); None when no such instruction is
    known (a stand-in method whose call is not found)."""
    from bytecode import Bytecode, Instr

    from codesuture.guards.null import attr_chain_links
    from codesuture.guards.subscript import chain_links
    from codesuture.patch import instrs as I
    from codesuture.patch.synthesize import locate, offset_of

    if spec.guard == "null_guard" and spec.form == "store":
        return None  # the guard yields no value: it skips a store that has no reader
    bc: list[Any] = list(Bytecode.from_code(code))
    idx = locate(bc, code, offset, opname)
    last = idx
    if spec.guard == "chain_subscript_guard":
        last = (chain_links(bc, idx)[: spec.links - 1] or [idx])[-1]
    elif spec.guard == "null_guard" and spec.form == "attr" and spec.links > 1:
        last = (attr_chain_links(bc, idx)[: spec.links - 1] or [idx])[-1]
    ins = bc[last]
    if spec.guard == "callable_guard" or (spec.guard == "null_guard" and spec.form == "method") or \
            getattr(ins, "name", "") == "LOAD_METHOD" or (
            getattr(ins, "name", "") == "LOAD_ATTR" and isinstance(ins.arg, tuple) and ins.arg[0]):
        call = I.find_consumer(bc, last) if spec.guard != "callable_guard" else (last, 0)
        if call is None or bc[call[0]].name not in I.CALL_NAMES:
            return None
        last = call[0]
    k = sum(1 for x in bc[:last] if isinstance(x, Instr))
    kind = "truth" if bc[last].name in ("COMPARE_OP", "IS_OP", "CONTAINS_OP") else "value"
    return offset_of(code, k), kind


def value_verdict(exc: BaseException, site: CrashSite, spec: GuardSpec, live_code: Any = None) -> Any:
    """What the value-flow policy (:mod:`codesuture.patch.flow`, ``docs/guards.md``)
    says about the guard *spec* at *site* (its code as compiled from source): a
    :class:`codesuture.patch.flow.Verdict`. A returned value is followed into the
    callers recorded in *exc*'s traceback (above the frame running *live_code*, the
    code that crashed; default ``site.code``) and above it. Never raises."""
    from codesuture.patch import flow

    try:
        at = yielded_at(site.code, site.offset, site.opname, spec)
    except Exception as err:  # noqa: BLE001 - no model of the site: fail closed
        return flow.Verdict("refuse", f"the value flow at {site.describe()} is not known ({err})")
    if at is None:
        return flow.Verdict("heal", "a stand-in's result that is not called")
    offset, kind = at
    namespace = _frame_globals(exc, live_code or site.code)
    found = flow.analyze(site.code, offset, kind, namespace)
    can_raise = offset == site.offset and families.raise_side(spec)
    verdict = flow.verdict(found, raise_side=can_raise)
    receivers = None
    if verdict.action == "heal" and verdict.returned:
        frame = _site_frame(exc, live_code or site.code)
        callers = flow.traceback_callers(exc.__traceback__, frame) if frame is not None else []
        receivers = _receivers(live_code or site.code, callers)
        why = flow.callers_verdict(receivers, verdict.returned)
        if why:
            return flow.Verdict("refuse", why, returned=verdict.returned)
    if verdict.action == "heal" and kind == "value":
        # A default that is itself a bool (a container of flags) is a truth value: a
        # store of it outside the frame, here or in a caller it is returned to, is a
        # decision made elsewhere (fail closed when the guard fires).
        as_truth = flow.analyze(site.code, offset, "truth", namespace)
        gate = flow.flag_verdict(as_truth)
        if not gate and as_truth.returned and receivers is not None:
            gate = flow.callers_verdict(receivers, "flag") or ""
        if gate:
            verdict = flow.Verdict(verdict.action, verdict.reason, verdict.decision, verdict.returned,
                                   truth_gate=gate)
    return verdict


#: Code flags of a generator, coroutine or async generator: its ``return`` value ends
#: in ``StopIteration.value`` (or a Task's result), not in the result of a call.
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _receivers(code: Any, callers: list[Any]) -> list[Any]:
    """The prefix of *callers* (``(code, lasti, globals)``, innermost first) that
    receive the value *code* returns, each from the one below it. A coroutine or
    generator returns to the coroutine awaiting it (``await`` / ``yield from``, a
    SEND in that frame); the plain frame above the outermost one (an event loop's
    ``Handle._run``, a ``for`` loop, a caller of ``send()``) gets ``StopIteration`` or
    the value lands in a Task's result: it is no receiver, and the walk stops there.
    That frame may also have finished already (a Task reported at garbage collection):
    its instruction offset then is no call at all."""
    out: list[Any] = []
    inner = code
    for entry in callers:
        if getattr(inner, "co_flags", 0) & _RESUMABLE and not entry[0].co_flags & _RESUMABLE:
            break
        out.append(entry)
        inner = entry[0]
    return out


def _site_frame(exc: BaseException, code: Any) -> Any:
    tb, found = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code is code:
            found = tb.tb_frame
        tb = tb.tb_next
    return found


def _frame_globals(exc: BaseException, code: Any) -> Any:
    frame = _site_frame(exc, code)
    return frame.f_globals if frame is not None else None


def returned_unchanged_at(site: CrashSite, spec: GuardSpec) -> bool:
    """True when the value the guard *spec* at *site* yields (:func:`yielded_at`) is
    returned unchanged (:func:`returned_as_is`). Never raises."""
    try:
        at = yielded_at(site.code, site.offset, site.opname, spec)
    except Exception:  # noqa: BLE001 - not known: not returned as is
        return False
    return at is not None and at[1] == "value" and returned_unchanged(site.code, at[0])


def _container_from_str_splitter(bc: list[Any], idx: int) -> bool:
    from codesuture.patch import instrs as I

    producer = I.find_producer(bc, idx, 2)
    if producer is None or bc[producer].name not in I.CALL_NAMES:
        return False
    name, _ = I.callee_name(bc, producer)
    return name in STR_LIST_PRODUCERS


def _builtin_open(bc: list[Any], idx: int) -> bool:
    """True when the call at *idx* calls the built-in ``open`` (a global or builtin
    name, or ``io.open``): ``os.open`` returns a file descriptor, and a stand-in file
    object would only move the crash."""
    from codesuture.patch import instrs as I

    fn = I.find_producer(bc, idx, I.call_slots(bc[idx])[0])
    if fn is None:
        return False
    ins = bc[fn]
    if ins.name in ("LOAD_GLOBAL", "LOAD_NAME"):
        return True
    if ins.name in ("LOAD_ATTR", "LOAD_METHOD"):
        owner = I.find_producer(bc, fn, 1)
        return owner is not None and I.name_loaded(bc[owner]) == "io" and bc[owner].name in ("LOAD_GLOBAL", "LOAD_NAME")
    return False


def _binary_mode(bc: list[Any], idx: int) -> bool:
    """True when the mode argument of the ``open(...)`` call at *idx* (the second
    positional argument, or ``mode=``) is a constant with ``b`` in it. Only that
    argument is read: a path constant such as ``"ab"`` is not a mode."""
    from codesuture.patch import instrs as I

    call = bc[idx]
    n = int(call.arg)
    kwnames: tuple[str, ...] = ()
    base = 1  # stack depth of the last argument
    if call.name == "CALL_KW":  # 3.13: the names tuple is on top of the arguments
        k = I.find_producer(bc, idx, 1)
        if k is None or bc[k].name != "LOAD_CONST" or not isinstance(bc[k].arg, tuple):
            return False
        kwnames, base = bc[k].arg, 2
    else:  # 3.11/3.12: KW_NAMES (and PRECALL) right before CALL
        j = idx - 1
        while j >= 0 and getattr(bc[j], "name", None) in ("PRECALL", "KW_NAMES"):
            if bc[j].name == "KW_NAMES":
                kwnames = tuple(bc[j].arg)
            j -= 1
    positional = n - len(kwnames)
    if "mode" in kwnames:
        pos = positional + kwnames.index("mode")
    elif positional >= 2:
        pos = 1
    else:
        return False
    at = I.find_producer(bc, idx, base + (n - 1 - pos))
    if at is None:
        return False
    x = bc[at]
    return x.name == "LOAD_CONST" and isinstance(x.arg, str) and "b" in x.arg and set(x.arg) <= set("rwxabt+")
