"""What the live callers of a guarded frame say when its guard fires, in one walk.

Before a guard yields a default, two questions are asked of the frames that called the
guarded one (:mod:`codesuture.runtime.events`):

* **EAFP**: does a caller sit in a ``try`` whose handler names the exception or a
  specific ancestor (:func:`codesuture.crash.handled.handler_names`)? Then the genuine
  exception must be raised. Asked up to the first CodeSuture frame (the healing
  boundary).
* **value flow**, for a guard whose value is returned: does a caller decide with it
  (:func:`codesuture.patch.flow.caller_step`)? Then the guard declines. Asked while the
  value is returned on, up to :data:`codesuture.patch.flow.MAX_CALLERS` callers and the
  first CodeSuture frame.

:func:`check` answers both in one walk up ``f_back``. What it learns about a frame
depends only on the frame's code object and instruction offset (``f_lasti``), and is
cached per ``(id(code), f_lasti)``, so a warm firing pays little per frame:

* while the value is returned on (the value-flow phase: the first callers), one
  dictionary lookup per frame gives all of it (:data:`_CALLERS`): whether the frame
  is CodeSuture's own, the handler names at the offset
  (:func:`codesuture.crash.handled.live_handler_names`) and the value-flow step
  (:func:`codesuture.patch.flow.caller_step`);
* above them, only EAFP is asked, and a code object whose exception table is empty
  (most functions: no ``try``, no ``with``) catches nothing: it costs one attribute
  read. The others cost one lookup (:data:`_HANDLERS`), which also tells whether the
  frame is CodeSuture's own (the walk ends there). A CodeSuture frame with an empty
  exception table (a thin wrapper) ends the walk all the same: before a handler found
  above it counts, the frames in between are checked (:func:`_own_between`).

Entries hold their code object, and a hit must be that very object: a function
swapped by a later patch (a new code object) never reuses an entry of its old code,
and an id is not reused while its entry lives. The value-flow phase also keeps inline
caches: each entry remembers the caller the value was returned to from it last time,
``(code, f_lasti, entry)``, and the guard site remembers its first caller (*seed*);
the next frame at that very code object and offset takes that entry without a lookup.
They keep at most :data:`codesuture.patch.flow.MAX_CALLERS` + 1 entries alive per
guard site after a table is emptied.

A guard's first firing imports this module, so it stays light: the value-flow model
(:mod:`codesuture.patch.flow`, with ``bytecode``) is imported by the first walk that
asks about a returned value, never for a guard whose value is data (EAFP only), and
``typing`` only under ``TYPE_CHECKING``.
"""

from __future__ import annotations

from codesuture.crash.files import is_own_file
from codesuture.crash.handled import live_handler_names

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from types import CodeType, FrameType, ModuleType
    from typing import Any

#: Most entries kept per table; a table is emptied when full (entries are rebuilt on
#: demand).
MAX_ENTRIES = 4096

_CODE, _OWN, _NAMES, _FLOW_OWN, _VALUE, _TRUTH, _FLAG, _CONSUMER, _CHOICE, _UNCACHED, _LASTI, _NEXT, _PLAIN = range(13)
_SLOTS = {"value": _VALUE, "truth": _TRUTH, "choice": _CHOICE}
#: (id(code), f_lasti) -> [code, CodeSuture's own (:func:`codesuture.crash.files.is_own_file`:
#: ends the EAFP walk), handler names at the offset, CodeSuture's own
#: (:func:`codesuture.patch.flow.own_frame`: ends the value-flow walk), step for a
#: value, for a truth value, for a ``bool`` default (``"flag"``: strict), what the
#: caller needs of a value returned to it (:func:`consumer_default`), step for a value
#: a decision chose (``"choice"``), None (a slot never written: :func:`_step`), the
#: offset, the entry of the caller the value was last returned to from here as
#: ``(code, f_lasti, entry)`` (an inline cache: the next frame of a walk is most often
#: the one seen last time, and a hit costs two comparisons instead of a lookup), True
#: when the frame is not CodeSuture's own and has no handler at the offset (the walk
#: asks nothing else of it)]; a step is ``(why, next, the slot of next)``
#: (:func:`_step`), None until asked.
_CALLERS: dict[tuple[int, int], list[Any]] = {}
#: (id(code), f_lasti) -> (code, CodeSuture's own, handler names at the offset), for
#: code objects with an exception table.
_HANDLERS: dict[tuple[int, int], tuple[CodeType, bool, frozenset[str]]] = {}


def _names(code: CodeType, lasti: int, own: bool) -> frozenset[str]:
    if own or not code.co_exceptiontable:
        return frozenset()
    try:
        return live_handler_names(code, lasti)
    except Exception:  # noqa: BLE001 - a table that cannot be read catches nothing
        return frozenset()


#: :mod:`codesuture.patch.flow`, bound by the first walk that asks about a returned value.
_FLOW: ModuleType | None = None


def _bind_flow() -> ModuleType:
    global _FLOW
    from codesuture.patch import flow

    _FLOW = flow
    return flow


def _caller(code: CodeType, lasti: int) -> list[Any]:
    own = is_own_file(code.co_filename)
    names = _names(code, lasti, own)
    flow_own = (_FLOW or _bind_flow()).own_frame(code)
    entry = [code, own, names, flow_own, None, None, None, None, None, None, lasti, None,
             not (own or names or flow_own)]
    if len(_CALLERS) >= MAX_ENTRIES:
        _CALLERS.clear()
    _CALLERS[(id(code), lasti)] = entry
    return entry


def _handlers(code: CodeType, lasti: int) -> tuple[CodeType, bool, frozenset[str]]:
    own = is_own_file(code.co_filename)
    entry = (code, own, _names(code, lasti, own))
    if len(_HANDLERS) >= MAX_ENTRIES:
        _HANDLERS.clear()
    _HANDLERS[(id(code), lasti)] = entry
    return entry


def _own_between(frame: FrameType | None, stop: FrameType) -> bool:
    """True when a CodeSuture frame lies from *frame* up to, not including, *stop*."""
    while frame is not None and frame is not stop:
        if is_own_file(frame.f_code.co_filename):
            return True
        frame = frame.f_back
    return False


def check(frame: FrameType | None, handles: frozenset[str], returned: str,
          chain: list[Any] | None = None, seed: list[Any] | None = None) -> tuple[bool, str | None]:
    """Walk *frame* (the guarded frame's caller) and the frames above it once.

    *handles*: the names a handler must test to catch the guard's exception
    specifically (:func:`codesuture.crash.handled.specific_names`; empty: do not ask);
    *returned*: ``"value"``/``"truth"``/``"choice"``/``"flag"`` when the guard's value
    is returned (``""``: do not ask; see :func:`codesuture.patch.flow.callers_verdict`).
    Returns ``(True, None)`` when a caller handles the exception (that wins over a
    decline: the program expects the exception), else ``(False, why)`` with *why* the
    reason a caller decides with the returned value (None: none does). *chain*, when
    given, receives ``(id(frame), entry)`` of each caller the value is returned to,
    innermost first (*entry*: its cache entry, which holds its code object and
    offset) (the frames where a replay
    can fail on it: :mod:`codesuture.runtime.takeback`; where its consumer is read:
    :func:`consumer_default`). *seed*, when given, is a one-item list the caller keeps
    per guard site: the inline cache of the first caller (as an entry's ``_NEXT`` is of
    the next one). Raises whatever the frame walk raises (the caller contains it).

    Every guard firing runs these loops, so they are written for its cost (benchmark
    (j)): locals instead of module attributes, one cache lookup per frame, and a step
    cached together with the slot of the kind it leads to (:func:`_step`)."""
    eafp = bool(handles)
    why = None
    if returned:  # the value-flow phase: the callers the value is returned to
        strict = returned == "flag"  # a bool default: every decision decides (it stays a truth value)
        kind = "truth" if strict else returned
        slot = _FLAG if strict else _SLOTS.get(kind, _TRUTH)
        flow = _FLOW or _bind_flow()
        limit = flow.MAX_CALLERS
        callers = _CALLERS
        n = 0
        holder: list[Any] = seed if seed is not None else [None]  # where this frame's inline cache is kept
        at = 0
        while frame is not None:
            code = frame.f_code
            lasti = frame.f_lasti
            seen = holder[at]
            if seen is not None and seen[0] is code and seen[1] == lasti:
                entry = seen[2]
            else:
                entry = callers.get((id(code), lasti))
                if entry is None or entry[_CODE] is not code:
                    entry = _caller(code, lasti)
                holder[at] = (code, lasti, entry)
            if not entry[_PLAIN]:
                if eafp:
                    if entry[_OWN]:
                        eafp = False
                    elif entry[_NAMES] and not handles.isdisjoint(entry[_NAMES]):
                        return True, None
                if entry[_FLOW_OWN]:
                    break
            if chain is not None:
                chain.append((id(frame), entry))
            n += 1
            if n > limit:
                why = flow.too_deep(kind)
                break
            step = entry[slot]
            if step is None:
                step = _step(code, lasti, kind, frame.f_globals, strict)
                if slot != _UNCACHED:
                    entry[slot] = step
            why, kind, slot = step
            holder, at = entry, _NEXT
            frame = frame.f_back
            if not kind:
                break
        if not eafp:
            return False, why
    elif not eafp:
        return False, None
    start = frame
    handlers = _HANDLERS
    while frame is not None:  # EAFP only: frames with an exception table
        code = frame.f_code
        if code.co_exceptiontable:
            lasti = frame.f_lasti
            hit = handlers.get((id(code), lasti))
            if hit is None or hit[0] is not code:
                hit = _handlers(code, lasti)
            if hit[1]:
                break
            if hit[2] and not handles.isdisjoint(hit[2]):
                if _own_between(start, frame):
                    break
                return True, None
        frame = frame.f_back
    return False, why


def _step(code: CodeType, lasti: int, kind: str, namespace: dict[str, Any], strict: bool) -> tuple[str | None, str, int]:
    """:func:`codesuture.patch.flow.caller_step` and the slot of the next caller's entry
    that caches the step of the kind it leads to: a strict walk (a ``bool`` default)
    caches only the steps of a truth value (:data:`_FLAG`), the others are asked anew
    (:data:`_UNCACHED`, a slot that stays None)."""
    why, kind = (_FLOW or _bind_flow()).caller_step(code, lasti, kind, namespace, strict)
    if strict:
        return why, kind, (_FLAG if kind == "truth" else _UNCACHED)
    return why, kind, _SLOTS.get(kind, _TRUTH)


#: :data:`codesuture.crash.consumer.RETURNED` (not imported: consumer is imported only
#: when a caller's code is first read).
_RETURNED = "return"
def consumer_default(chain: list[Any]) -> str:
    """The default the callers in *chain* (from :func:`check`: the callers a guard's
    value is returned to, innermost first) need: the first one that does not return
    it on unchanged says (a key of :data:`codesuture.patch.spec.DEFAULTS`, ``"None"``
    when its consumer says nothing or the chain ends first). Read from the callers'
    code objects at their offsets (:func:`codesuture.crash.consumer.caller_default`),
    cached in each caller's entry (:data:`_CALLERS`); only a guard that fires asks.
    Never raises."""
    for item in chain:
        entry = item[1]
        need = entry[_CONSUMER]
        if need is None:
            from codesuture.crash.consumer import caller_default

            need = entry[_CONSUMER] = caller_default(entry[_CODE], entry[_LASTI])
        if need != _RETURNED:
            return str(need)
    return "None"


def frames(chain: list[Any]) -> tuple[tuple[int, CodeType], ...]:
    """``(id(frame), code)`` of each caller in *chain* (from :func:`check`)."""
    return tuple((item[0], item[1][_CODE]) for item in chain)


__all__ = ["check", "consumer_default", "frames", "MAX_ENTRIES"]
