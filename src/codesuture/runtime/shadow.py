"""Shadow mode (``--shadow``, setting ``shadow``): warn when a patched function hands a
guard's default to its caller, before that value causes a second failure further on.

When a guard yields a default (:mod:`codesuture.runtime.events`), the guarded frame and
the default are noted; when that frame returns a value that *is* the default (the same
object: the fresh ``[]`` or ``{}`` a typed default made) or *holds* it (an item of a
returned tuple, list, set or dict, or an attribute of a returned plain object; an
immutable default such as ``''``, ``0`` or ``None`` matches by type and value), a
WARNING names the function, the caller that receives the value and the guard, at most
once per :data:`INTERVAL` seconds per (site, caller), and a ``shadow`` incident is
recorded. A function that returns a constant of its own (``return None``, implicit or
not) is not reported.

How the return is seen without touching the healthy path:

* Python 3.12+: ``sys.monitoring`` ``PY_RETURN``/``PY_YIELD`` events are switched on
  (``set_local_events``) for the one code object whose guard just fired, and off again
  when no frame that fired is pending in it. No other code is instrumented, and no code
  at all until a guard fires; no ``settrace``/``setprofile``.
* Python 3.11 (no ``sys.monitoring``), or when no tool id is free: the check is made
  when the guard fires, from the code: the default is reported when the guard's value
  goes straight into ``return`` (``return d[k]``); values returned later through a
  variable or inside a container are not seen there.
"""

from __future__ import annotations

import sys
import time

from codesuture.logs import logger

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from types import CodeType, FrameType
    from typing import Any

log = logger("codesuture.shadow")

#: Seconds between two warnings for one (guard site, caller).
INTERVAL = 60.0
#: Most code objects watched at once, and pending frames per code object.
MAX_CODES = 64
MAX_FRAMES = 64
#: Seconds after which a noted frame that has not returned (it raised, or a generator
#: was dropped) is forgotten; its code object is no longer watched once none is left.
STALE = 30.0
#: Items of a returned container looked at.
MAX_ITEMS = 64
#: ``sys.monitoring`` tool ids tried, in order (3 and 4 have no assigned role).
TOOL_IDS = (4, 3)

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, tuple, frozenset)

#: code object -> {id(frame): (guard site, default, monotonic time)}.
_PENDING: dict[Any, dict[int, tuple[str, object, float]]] = {}
#: (site, caller qualname) -> monotonic time of the last warning.
_WARNED: dict[tuple[str, str], float] = {}
_TOOL: list[int | None] = []


def reset() -> None:
    """Forget pending frames and warnings (tests; a new configuration)."""
    mon = getattr(sys, "monitoring", None)
    for code in list(_PENDING):
        _disarm(code, mon)
    _PENDING.clear()
    _WARNED.clear()


def _tool() -> int | None:
    """The ``sys.monitoring`` tool id shadow mode uses (claimed once), or None."""
    if _TOOL:
        return _TOOL[0]
    mon = getattr(sys, "monitoring", None)
    found = None
    if mon is not None:
        for tool in TOOL_IDS:
            try:
                if mon.get_tool(tool) is None:
                    mon.use_tool_id(tool, "codesuture-shadow")
                    mon.register_callback(tool, mon.events.PY_RETURN, _on_return)
                    mon.register_callback(tool, mon.events.PY_YIELD, _on_yield)
                    found = tool
                    break
            except (ValueError, RuntimeError):
                continue
        if found is None:
            log.warning("shadow mode: no free sys.monitoring tool id (%s); only direct returns are checked",
                        "/".join(map(str, TOOL_IDS)))
    _TOOL.append(found)
    return found


def note(site: str, frame: FrameType, value: object) -> None:
    """A guard at *site* yielded *value* in *frame*: watch what *frame* returns."""
    tool = _tool()
    if tool is None:
        if _returns_directly(frame.f_code, frame.f_lasti):
            _report(site, frame.f_code, frame, value, value)
        return
    mon: Any = getattr(sys, "monitoring")
    code = frame.f_code
    now = time.monotonic()
    pending = _PENDING.get(code)
    if pending is None:
        if len(_PENDING) >= MAX_CODES:
            _forget_stale(now, mon)
            if len(_PENDING) >= MAX_CODES:
                return
        pending = _PENDING[code] = {}
        mon.set_local_events(tool, code, mon.events.PY_RETURN | mon.events.PY_YIELD)
    if len(pending) >= MAX_FRAMES:
        for key in [k for k, v in pending.items() if now - v[2] > STALE]:
            del pending[key]
        if len(pending) >= MAX_FRAMES:
            return
    pending[id(frame)] = (site, value, now)


def _forget_stale(now: float, mon: Any) -> None:
    for code, pending in list(_PENDING.items()):
        for key in [k for k, v in pending.items() if now - v[2] > STALE]:
            del pending[key]
        if not pending:
            _disarm(code, mon)


def _disarm(code: Any, mon: Any) -> None:
    _PENDING.pop(code, None)
    tool = _TOOL[0] if _TOOL else None
    if mon is not None and tool is not None:
        try:
            mon.set_local_events(tool, code, 0)
        except ValueError:
            pass


def _on_return(code: CodeType, offset: int, retval: object) -> None:
    try:
        pending = _PENDING.get(code)
        if pending:
            frame = sys._getframe(1)  # the returning frame
            entry = pending.pop(id(frame), None)
            if entry is not None:
                _check(code, offset, retval, frame, entry)
            elif pending:  # frames that fired and then raised never return: forget them in time
                now = time.monotonic()
                for key in [k for k, v in pending.items() if now - v[2] > STALE]:
                    del pending[key]
        if not pending:
            _disarm(code, getattr(sys, "monitoring"))
    except Exception:  # noqa: BLE001 - shadow mode never changes what the program does
        pass


def _on_yield(code: CodeType, offset: int, retval: object) -> None:
    try:
        pending = _PENDING.get(code)
        if pending:
            frame = sys._getframe(1)
            entry = pending.get(id(frame))
            if entry is not None:
                _check(code, offset, retval, frame, entry)
    except Exception:  # noqa: BLE001
        pass


def _check(code: CodeType, offset: int, retval: object, frame: FrameType, entry: tuple[str, object, float]) -> None:
    site, value, _ = entry
    if _is_return_const(code, offset):
        return  # a constant of the function's own (`return None`, the implicit return)
    if _holds(retval, value):
        _report(site, code, frame, value, retval)


def _is_return_const(code: CodeType, offset: int) -> bool:
    import dis

    op = dis.opmap.get("RETURN_CONST")
    return op is not None and 0 <= offset < len(code.co_code) and code.co_code[offset] == op


def _same(a: object, b: object) -> bool:
    if a is b:
        return True
    if type(b) in _IMMUTABLE and type(a) is type(b):
        try:
            return bool(a == b)
        except Exception:  # noqa: BLE001
            return False
    return False


def _holds(retval: object, value: object) -> bool:
    """*retval* is *value*, or holds it one level down."""
    if _same(retval, value):
        return True
    items: Any
    if isinstance(retval, dict):
        items = retval.values()
    elif isinstance(retval, (tuple, list, set, frozenset)):
        items = retval
    else:
        attrs = getattr(retval, "__dict__", None)
        if type(attrs) is not dict:
            return False
        items = attrs.values()
    for n, item in enumerate(items):
        if n >= MAX_ITEMS:
            break
        if _same(item, value):
            return True
    return False


def _returns_directly(code: CodeType, lasti: int) -> bool:
    """Without ``sys.monitoring``: whether the value of the call at *lasti* (the guard's
    call into :mod:`codesuture.runtime.events`) goes straight into ``RETURN_VALUE``."""
    return _direct(code, lasti)


_DIRECT: dict[tuple[Any, int], bool] = {}


def _direct(code: CodeType, lasti: int) -> bool:
    key = (code, lasti)
    found = _DIRECT.get(key)
    if found is None:
        found = _DIRECT[key] = _scan(code, lasti)
        if len(_DIRECT) > 4096:
            _DIRECT.clear()
    return found


def _scan(code: CodeType, lasti: int) -> bool:
    import dis

    ins = [i for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG", "NOP")]
    # The instruction running at *lasti* (3.11 reports the last inline cache entry of a call).
    at = max((k for k, i in enumerate(ins) if i.offset <= lasti), default=None)
    if at is None:
        return False
    k = at + 1
    # A value guard: COPY 1, POP_JUMP_IF_NONE, UNPACK_SEQUENCE 1, [SWAP, POP_TOP...], JUMP_FORWARD end.
    if k + 1 < len(ins) and ins[k].opname == "COPY" and "NONE" in ins[k + 1].opname:
        for j in range(k, min(k + 16, len(ins))):
            if ins[j].opname == "JUMP_FORWARD":
                target = ins[j].argval
                k = next((n for n, i in enumerate(ins) if i.offset == target), len(ins))
                break
        else:
            return False
    return k < len(ins) and ins[k].opname == "RETURN_VALUE"


def _report(site: str, code: CodeType, frame: FrameType, value: object, retval: object) -> None:
    caller = frame.f_back
    caller_code = caller.f_code if caller is not None else None
    key = (site, caller_code.co_qualname if caller_code is not None else "")
    now = time.monotonic()
    last = _WARNED.get(key)
    if last is not None and now - last < INTERVAL:
        return
    _WARNED[key] = now
    guard, _, at = site.partition("@")
    if caller is not None and caller_code is not None:
        receiver = f"{caller_code.co_qualname} ({caller.f_globals.get('__name__', '?')}:{caller.f_lineno})"
    else:
        receiver = "(no caller)"
    what = "the default" if retval is value or _same(retval, value) else "a value holding the default"
    log.warning("shadow: %s (%s) returned %s %r that its %s yielded, to its caller %s; it may fail or mislead there",
                code.co_qualname, at, what, value, guard, receiver)
    from codesuture.runtime import incidents

    incidents.record("shadow", site=f"{at} {code.co_qualname}", guard=guard, caller=receiver, value=_short(value),
                     holds=what != "the default", fingerprint=incidents.site_fingerprint(site))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = ["note", "reset", "INTERVAL"]
