"""Is the crash the program's own business? Decided from code objects, no source read.

EAFP code (``try: d[k] except KeyError: ...``) expects the exception; patching it
would change the program's meaning. A crash is left alone when some frame it passes
through sits in a ``try`` whose handler names the exception's class or one of its
specific ancestors (``KeyError``, ``LookupError``). Broad handlers (bare ``except``,
``Exception``, ``BaseException``) are cleanup, not EAFP: a crash re-raised through them
may still be patched.

How (3.11+ exception tables): the frame's instruction offset (``tb_lasti``, or
``f_lasti`` for a live frame) falls in at most one range of the code object's exception
table; that range's handler, when it is an ``except`` clause chain, starts with
``PUSH_EXC_INFO`` and tests each clause with ``CHECK_EXC_MATCH`` (``CHECK_EG_MATCH``
for ``except*``) against the classes loaded just before, jumping to the next clause
when it does not match. :func:`handler_names` follows that chain and returns the names
it tests (the last attribute of ``module.Error``). ``with`` blocks, ``finally`` bodies
and the compiler's own cleanup handlers catch nothing. Results are cached per
(code object, offset).

A guard's slow path imports this module on its first firing: at module level it needs
only :mod:`codesuture.crash.files` (``dis`` is imported by the first table read,
:mod:`codesuture.crash.site` by the heal-time functions).
"""

from __future__ import annotations

from functools import lru_cache
from types import CodeType, FrameType, TracebackType

from codesuture.crash.files import is_own_file

_BROAD = frozenset({"Exception", "BaseException", "object"})
_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF", "LOAD_CLASSDEREF",
                    "LOAD_FROM_DICT_OR_GLOBALS", "LOAD_FROM_DICT_OR_DEREF", "LOAD_CONST", "LOAD_FAST_LOAD_FAST"})
_BARE = frozenset({"BaseException"})


@lru_cache(maxsize=1024)
def _table(code: CodeType) -> tuple[tuple[tuple[int, int, int], ...], dict[int, tuple[int, str, object]]]:
    """(exception table ranges ``(start, end, target)``, offset -> (index, opname, argval))."""
    import dis

    bc = dis.Bytecode(code)
    entries = bc.exception_entries  # type: ignore[attr-defined]  # public since 3.11; not in typeshed
    ranges = tuple((e.start, e.end, e.target) for e in entries)
    instrs = {i.offset: (n, i.opname, i.argval) for n, i in enumerate(dis.get_instructions(code))}
    return ranges, instrs


@lru_cache(maxsize=4096)
def handler_names(code: CodeType, lasti: int) -> frozenset[str]:
    """The exception class names the handlers of *code* test for an exception raised
    at instruction offset *lasti* (``{"BaseException"}`` for a bare ``except``): the
    ``except`` clause chain that covers it and, where that chain (or a ``with``,
    ``finally`` or compiler cleanup) re-raises, the handlers covering the re-raise
    (a nested ``try``, an inlined comprehension). Empty when nothing in *code* catches
    it."""
    names: set[str] = set()
    seen: set[int] = set()
    while lasti not in seen and len(seen) < 16:
        seen.add(lasti)
        caught, reraise_at = _chain(code, lasti)
        names |= caught
        if reraise_at is None:
            break
        lasti = reraise_at
    return frozenset(names)


def _chain(code: CodeType, lasti: int) -> tuple[set[str], int | None]:
    """(names tested by the handler covering *lasti*, offset where that handler re-raises
    what it did not catch, or None)."""
    ranges, instrs = _table(code)
    target = next((t for start, end, t in ranges if start <= lasti < end), None)
    if target is None:
        return set(), None
    by_index = sorted(instrs.items())
    order = {off: n for n, (off, _) in enumerate(by_index)}
    if target not in order:
        return set(), None
    if by_index[order[target]][1][1] != "PUSH_EXC_INFO":
        return set(), _first_reraise(by_index, order[target])  # the compiler's cleanup
    k = order[target] + 1
    if k < len(by_index) and by_index[k][1][1] == "POP_TOP":
        return set(_BARE), None  # `except:`
    names: set[str] = set()
    start = k
    visited: set[int] = set()
    while k < len(by_index) and k not in visited:
        visited.add(k)
        stack: list[list[str]] = []
        matched = False
        while k < len(by_index):
            _, (_, op, arg) = by_index[k]
            if op in _LOADS:
                stack.append(list(arg) if isinstance(arg, tuple) and op == "LOAD_FAST_LOAD_FAST" else [str(arg)])
            elif op == "LOAD_ATTR" and stack:
                stack[-1] = [str(arg)]
            elif op == "BUILD_TUPLE" and isinstance(arg, int) and 0 < arg <= len(stack):
                merged = [n for part in stack[len(stack) - arg:] for n in part]
                del stack[len(stack) - arg:]
                stack.append(merged)
            elif op in ("BUILD_LIST", "COPY", "SWAP") and not stack:
                pass  # `except*` keeps its own bookkeeping before the test
            elif op in ("CHECK_EXC_MATCH", "CHECK_EG_MATCH") and stack:
                names.update(stack[-1])
                matched = True
            else:
                break
            k += 1
            if matched:
                break
        if not matched:  # a `with` / `finally` body, or the chain's final re-raise
            return names, _first_reraise(by_index, start if not names else k)
        # After the test: a conditional jump to the next clause (or to the re-raise).
        while k < len(by_index) and not by_index[k][1][1].startswith("POP_JUMP"):
            if by_index[k][1][1] not in ("COPY", "TO_BOOL", "CACHE", "EXTENDED_ARG"):
                return names, None
            k += 1
        nxt = by_index[k][1][2] if k < len(by_index) else None
        if not isinstance(nxt, int) or nxt not in order:
            return names, None
        k = order[nxt]
    return names, None


def _first_reraise(by_index: list[tuple[int, tuple[int, str, object]]], k: int) -> int | None:
    """Offset of the first ``RERAISE`` from index *k* on (a handler's re-raise of what it
    did not catch), or None."""
    for off, (_, op, _) in by_index[k:]:
        if op == "RERAISE":
            return off
    return None


def catches(names: frozenset[str], exc_type: type[BaseException]) -> bool:
    """True when a handler testing *names* handles *exc_type* specifically (it names the
    class or a specific ancestor; broad handlers do not count)."""
    return bool(names) and not names.isdisjoint(specific_names(exc_type))


def specific_names(exc_type: type[BaseException]) -> frozenset[str]:
    """The names a handler must test to handle *exc_type* specifically: the class's and
    its ancestors' (``{"KeyError", "LookupError"}``), broad ones excepted; empty for a
    broad class itself (``Exception``). Cached per class."""
    names = _SPECIFIC.get(exc_type)
    if names is None:
        if len(_SPECIFIC) >= 256:
            _SPECIFIC.clear()
        names = _SPECIFIC[exc_type] = frozenset(c.__name__ for c in exc_type.__mro__).difference(_BROAD)
    return names


_SPECIFIC: dict[type, frozenset[str]] = {}


def _where(code: CodeType, lasti: int) -> str:
    from codesuture.crash.site import positions_at

    line = positions_at(code, lasti)[0]
    return f"{code.co_filename}:{line}"


def caught_by_program(exc: BaseException) -> str | None:
    """Where the program catches *exc* itself (``"file:line"``), from the frames of its
    traceback (CodeSuture's own frames excepted), or None."""
    from codesuture.crash.site import frames

    tb: TracebackType
    for tb in frames(exc.__traceback__):
        code = tb.tb_frame.f_code
        if is_own_file(code.co_filename):
            continue
        if catches(handler_names(code, tb.tb_lasti), type(exc)):
            return _where(code, tb.tb_lasti)
    return None


def caught_on_stack(frame: FrameType | None, exc_type: type[BaseException]) -> str | None:
    """Where a live frame, or one of its callers, catches *exc_type* specifically
    (``"file:line"``), or None: the same analysis on the live call stack (``f_lasti``).

    The walk ends at the first CodeSuture frame: that is the healing boundary (a script
    run, a request), and what lies above it (the command line's own ``except OSError``,
    runpy) is not the program's handling of this exception."""
    while frame is not None:
        code = frame.f_code
        if is_own_file(code.co_filename):
            return None
        if catches(live_handler_names(code, frame.f_lasti), exc_type):
            return _where(code, frame.f_lasti)
        frame = frame.f_back
    return None


#: (id(code), lasti) -> (code, handler names): :func:`handler_names` for the live stack,
#: looked up by identity. Hashing a code object reads all of its bytecode, so a cache
#: keyed by the code object itself costs microseconds per kilobyte of every caller's code
#: on each guard firing. The entry holds the code, so its id is not reused meanwhile.
_LIVE: dict[tuple[int, int], tuple[CodeType, frozenset[str]]] = {}


def live_handler_names(code: CodeType, lasti: int) -> frozenset[str]:
    """:func:`handler_names` cached by the identity of *code* (for live frames: a dict
    lookup per frame when warm, with no hashing of the bytecode)."""
    key = (id(code), lasti)
    found = _LIVE.get(key)
    if found is not None and found[0] is code:
        return found[1]
    if len(_LIVE) >= 4096:
        _LIVE.clear()
    names = handler_names(code, lasti)
    _LIVE[key] = (code, names)
    return names


__all__ = ["handler_names", "live_handler_names", "specific_names", "catches", "caught_by_program", "caught_on_stack"]
