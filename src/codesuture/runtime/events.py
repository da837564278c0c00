"""What guards do on their slow path, and the unit of work they fire in.

A guard's healthy path never calls anything. Its slow path (the operation would raise)
calls this module, through instructions the guard carries:

* :func:`fire` ``(site, exc, rule, static, *evidence)`` for guards that yield a value:
  it returns ``(value,)``, the default to yield, decided now from run-time evidence
  (:func:`typed_default`), or None when the guard must let the original operation
  raise its genuine exception;
* :func:`fired` ``(site, exc)`` for guards whose result is not a default (a stand-in
  call, a coercion, a scoped handler): True means "raise the original exception";
* :func:`caught` ``(site, exc, static, error)`` from the handler of a call-site guard
  (:func:`codesuture.guards.calls.call_guard`): the default, ``(value,)``, or None
  when the caught exception must propagate;
* :func:`method_default` from the stand-in that replaces a method of ``None``
  (``None.strip()`` behaves like ``''.strip()``).

Either way the firing is counted for the process (:data:`COUNTS`) and, when a unit of
work is open in this context (a request, a script run: :func:`begin`), recorded there,
so an HTTP boundary says on the response exactly when a default was yielded (the
``X-CodeSuture`` header). Each counted firing is also handed to an *observer*, made on
the first firing from the settings by :func:`codesuture.runtime.incidents.guard_observer`
(incidents, Prometheus counters, OpenTelemetry span events; a no-op when none is on),
and in shadow mode each default yielded to :func:`codesuture.runtime.shadow.note`.

A guard whose value is returned (its *exc* ends in ``|value``, ``|truth`` or ``|flag``,
see :class:`codesuture.guards.base.Firing`) asks the value-flow model first (the
callers' steps of :func:`codesuture.patch.flow.callers_verdict`, on the live frames
above the guarded one): when a caller would decide with the default (a gate such as
``if is_banned(u): return 403``), the guard declines: the original exception
propagates, one log line per site and reason says why (:data:`DECLINED`), and no
default ever opens that gate.

The genuine exception wins when the live call stack handles it: if a caller of the
guarded frame sits in a ``try`` whose handler names the exception (or a specific
ancestor), the guard raises instead of yielding, so callers keep their EAFP behaviour
(:func:`codesuture.crash.handled.handler_names`). Both questions are answered in one
walk of the live frames, cached per code object and offset
(:func:`codesuture.runtime.callers.check`).

*site* is ``"<guard>@<module>:<line>"``. The typed-default rules are the table of
``docs/guards.md``. Kept import-light: patched code in production calls it, and only
what a firing needs is imported, on the first firing.
"""

from __future__ import annotations

import _thread
import contextvars
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable

#: site -> number of firings in this process.
COUNTS: dict[str, int] = {}
#: site -> why its guard last declined to yield (a caller decides with the value); read
#: (and cleared) by the healer that sees the original exception arrive.
DECLINED: dict[str, str] = {}
_DECLINE_LOGGED: set[tuple[str, str]] = set()
#: Per thread: ``value`` is ``(site, default)`` of the last default a guard yielded.
_LAST = _thread._local()


class Unit:
    """One unit of work: the sites that fired during it (in order, with repeats), and
    how many times it was replayed after a heal.

    Opened once per request on the healthy path, so it costs one small object and is
    read with one attribute: the defaults are class attributes, the lists are made on
    first use, and :attr:`degraded` is a plain flag set by the slow paths (a guard
    firing, a replay)."""

    #: True once a guard yielded a default or the unit was replayed.
    degraded = False
    _replayed = 0
    _fired: list[str] | None = None
    _patched: list[str] | None = None

    @property
    def fired(self) -> list[str]:
        """The sites that fired, in order, with repeats."""
        fired = self._fired
        if fired is None:
            fired = self._fired = []
        return fired

    @property
    def patched(self) -> list[str]:
        """The sites patched by heals during this unit."""
        patched = self._patched
        if patched is None:
            patched = self._patched = []
        return patched

    @property
    def replayed(self) -> int:
        """How many times the unit was replayed."""
        return self._replayed

    @replayed.setter
    def replayed(self, n: int) -> None:
        self._replayed = n
        if n:
            self.degraded = True

    def __repr__(self) -> str:
        return f"Unit(fired={self.fired!r}, replayed={self.replayed}, patched={self.patched!r})"

    def header(self, full: bool = False) -> str | None:
        """The ``X-CodeSuture`` header value, or None for a healthy unit:
        ``guards=N[; replayed=N]``; with *full* (the ``header = "full"`` setting) also
        ``guard=<name>; site=<module>:<line>`` of the first site that fired (or was
        patched) -- which tells every client where the patched code is."""
        if not self.degraded:
            return None
        fired, patched = self.fired, self.patched
        parts = [f"guards={len(fired)}"]
        first = fired[0] if fired else (patched[0] if patched else "")
        if first and full:
            guard, _, where = first.partition("@")
            parts += [f"guard={guard}", f"site={where}"]
        if self._replayed:
            parts.append(f"replayed={self._replayed}")
        return "; ".join(parts)


def header_level(value: bool | str | None = None) -> str | None:
    """What a boundary's ``X-CodeSuture`` header says: ``"counts"``, ``"full"`` or None
    (off). *value*: the boundary's own option (True: counts, False: off, or a level
    name); None reads ``CODESUTURE_HEADER`` (which boot exports from the ``header``
    setting), default counts. Raises :class:`~codesuture.errors.ConfigError` for a bad
    level given in code; a bad environment value is logged and counts is used."""
    from codesuture.settings import parse_header

    if value is None:
        import os

        raw = os.environ.get("CODESUTURE_HEADER")
        if raw is None:
            return "counts"
        from codesuture.errors import ConfigError

        try:
            level = parse_header("CODESUTURE_HEADER", raw)
        except ConfigError as exc:
            from codesuture.logs import logger

            logger("codesuture.web").warning("%s; the X-CodeSuture header says counts only", exc)
            return "counts"
    else:
        level = parse_header("header", value)
    return None if level == "off" else level


_UNIT: contextvars.ContextVar[Unit | None] = contextvars.ContextVar("codesuture_unit", default=None)


def _count(site: str, exc: str, frame: Any) -> None:
    """Count a firing of *site* in the guarded *frame* (see the module docstring)."""
    COUNTS[site] = COUNTS.get(site, 0) + 1
    unit = _UNIT.get()
    if unit is not None:
        unit.fired.append(site)
        unit.degraded = True
    try:
        _OBSERVE(site, exc, frame)
    except Exception:  # noqa: BLE001 - an observer never changes what the guard does
        pass


def _ignore(site: str, exc: str, frame: object) -> None:
    return None


def _load_observer(site: str, exc: str, frame: object) -> None:
    """The first firing (or the first after :func:`reset_observer`): make the observer
    the settings call for (:func:`codesuture.runtime.incidents.guard_observer`:
    incidents, metrics; :func:`_ignore` when none) and shadow mode's hook, keep them,
    and observe this firing."""
    global _OBSERVE, _SHADOW
    me = _thread.get_ident()
    if _MAKING and _MAKING[0] == me:
        return  # a firing inside the making of the observer itself (its imports) is not observed
    with _MAKE_LOCK:  # other threads firing meanwhile wait for it: every firing is observed
        if _OBSERVE is _load_observer:
            _MAKING.append(me)
            try:
                from codesuture.runtime.incidents import config, guard_observer

                observer = guard_observer() or _ignore
                if config().shadow:
                    from codesuture.runtime.shadow import note

                    _SHADOW = note
            except Exception:  # noqa: BLE001 - contained (rule 7)
                observer = _ignore
            finally:
                _MAKING.clear()
            _OBSERVE = observer
    _OBSERVE(site, exc, frame)


#: The thread making the observer (a firing of its own is not observed), and the lock
#: the others wait on meanwhile.
_MAKING: list[int] = []
_MAKE_LOCK = _thread.allocate_lock()
#: Called as ``(site, exc, guarded frame)`` on every counted firing; made on the first.
_OBSERVE: Callable[[str, str, Any], None] = _load_observer
#: Shadow mode (:mod:`codesuture.runtime.shadow`): called as ``(site, guarded frame,
#: value)`` with each default a guard yields (:func:`fire`, :func:`method_default`);
#: None when shadow mode is off.
_SHADOW: Callable[[str, Any, object], None] | None = None


def _load_default_value(name: str) -> object:
    """The first use: bind :func:`codesuture.patch.spec.default_value` and call it."""
    global _DEFAULT_VALUE
    from codesuture.patch.spec import default_value

    _DEFAULT_VALUE = default_value
    return default_value(name)


#: :func:`codesuture.patch.spec.default_value` (the value of a default by name, a new
#: object for a mutable one), bound on first use.
_DEFAULT_VALUE: Callable[[str], object] = _load_default_value


def reset_observer() -> None:
    """Make the observer again on the next firing (after the settings changed)."""
    global _OBSERVE, _SHADOW
    _OBSERVE, _SHADOW = _load_observer, None


#: The *exc* argument of a firing, ``"<exc>[|<returned>[|<flags>]]"``
#: (:class:`codesuture.guards.base.Firing`) -> ``(the built-in exception's name, the
#: names a handler must test to catch it specifically
#: (:func:`codesuture.crash.handled.specific_names`; empty when it is not a built-in
#: exception class), the returned kind ("value"/"truth"/"choice"/"flag"/""), the flags)``.
#: Flags, comma-separated: ``notruth`` (a ``bool`` default declines), ``asis`` (the
#: guarded value is returned unchanged: the caller's consumer decides its default).
_EXCS: dict[str, tuple[str, frozenset[str], str, frozenset[str]]] = {}
#: :func:`codesuture.runtime.callers.check`, bound on the first firing that asks.
_CHECK: Callable[..., tuple[bool, str | None]] | None = None
#: site -> the inline cache of its guarded frame's first caller (the *seed* of
#: :func:`codesuture.runtime.callers.check`).
_SEEDS: dict[str, list[Any]] = {}
#: :func:`codesuture.runtime.callers.consumer_default`, bound on the first firing that asks.
_CONSUMER: Callable[[Any], str] | None = None


def _exc_info(exc: str) -> tuple[str, frozenset[str], str, frozenset[str]]:
    name, _, rest = exc.partition("|")
    returned, _, flag_text = rest.partition("|")
    flags = frozenset(f for f in flag_text.split(",") if f)
    handles: frozenset[str] = frozenset()
    if name:
        import builtins

        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            from codesuture.crash.handled import specific_names

            handles = specific_names(cls)
    info = _EXCS[exc] = (name, handles, returned, flags)
    return info


def _bind_check() -> Callable[..., tuple[bool, str | None]]:
    """The first firing that asks: bind :func:`codesuture.runtime.callers.check`."""
    global _CHECK
    from codesuture.runtime.callers import check

    _CHECK = check
    return check


def _refuses(site: str, handles: frozenset[str], returned: str, frame: Any, chain: Any = None) -> bool:
    """True when the guard at *site* must let the original exception propagate: a
    caller of the guarded frame (*frame* is its caller) handles it (EAFP), or the value
    is *returned* to a caller that decides with it (then the decline is noted in
    :data:`DECLINED` and logged once per site and reason). One walk of the live frames
    (:func:`codesuture.runtime.callers.check`, which fills *chain*, a list, with the
    callers the value is returned to). Never raises: a walk that fails counts as not
    handled and, for a returned value, declines (fail closed)."""
    try:
        check = _CHECK
        if check is None:
            check = _bind_check()
        handled, why = check(frame, handles, returned, chain)
    except Exception as err:  # noqa: BLE001 - unknown: not handled; a returned value fails closed
        handled, why = False, (f"the callers could not be checked ({type(err).__name__})" if returned else None)
    if handled:
        return True
    if not why:
        return False
    _decline(site, why)
    return True


def _decline(site: str, why: str) -> None:
    """Note that the guard at *site* declined for reason *why*; one log line per site
    and reason."""
    DECLINED[site] = why
    if (site, why) not in _DECLINE_LOGGED:
        _DECLINE_LOGGED.add((site, why))
        from codesuture.logs import logger

        guard, _, where = site.partition("@")
        logger("codesuture.heal").warning(
            "guard %s at %s declined: %s; the original exception propagates (proposed for review)", guard, where, why)


def fired(site: str, exc: str = "") -> bool:
    """A guard at *site* is about to replace an operation that would raise *exc*.
    Returns True when it must raise it instead (the stack handles it, or the value is
    returned to a caller that decides with it). Never raises."""
    name, handles, returned, _ = _EXCS.get(exc) or _exc_info(exc)
    frame = sys._getframe(1)  # the guarded frame
    if (handles or returned) and _refuses(site, handles, returned, frame.f_back):
        return True
    _count(site, name, frame)
    return False


def _yielded(site: str, value: object, frame: Any, chain: Any = None) -> None:
    """Remember, for this thread, the last default a guard yielded, the frame it
    yielded it in and the callers it is returned to (*chain*, from
    :func:`codesuture.runtime.callers.check`): a heal whose replay fails at once on it,
    there or in one of those callers, is taken back (:func:`last_yield`). Frames are
    kept as ``(id, code)``, never themselves."""
    _LAST.value = (site, value, id(frame), frame.f_code, chain)


def last_yield() -> tuple[str, object, tuple[tuple[int, Any], ...]] | None:
    """``(site, value, frames)``: the last default a guard yielded in this thread, and
    ``(id(frame), code)`` of the frame it yielded it in followed by those of the
    callers it is returned to (innermost first); or None."""
    last = getattr(_LAST, "value", None)
    if last is None:
        return None
    site, value, fid, code, chain = last
    if not chain:
        return site, value, ((fid, code),)
    from codesuture.runtime.callers import frames

    return site, value, ((fid, code), *frames(chain))


def caught(site: str, exc: str, static: str, error: BaseException) -> tuple[object] | None:
    """A call-site guard at *site* caught *error* from its call: the default to yield
    instead, ``(value,)`` (*static*, a key of :data:`codesuture.patch.spec.DEFAULTS`,
    made anew when mutable), or None when *error* must propagate: it is not the
    built-in class *exc* or not structural (the test diagnosis uses:
    :func:`codesuture.crash.structural.structural_call_error`, so a wrong signature or
    a ValueError other than a conversion's passes), it was raised in patchable code
    below the call (that site is healed, or not, on its own), or a live caller handles
    it. Never raises."""
    try:
        import builtins

        name, handles, returned, flags = _EXCS.get(exc) or _exc_info(exc)
        cls = getattr(builtins, name, None)
        if not (isinstance(cls, type) and isinstance(error, cls)):
            return None
        from codesuture.crash.structural import structural_call_error

        if not structural_call_error(error):
            return None  # a wrong signature, a subclass of the program's, another ValueError
        if not _raised_by_the_call(error):
            return None
        frame = sys._getframe(1)  # the guarded frame (the guard's handler runs in it)
        chain: list[Any] | None = [] if returned else None
        if (handles or returned) and _refuses(site, handles, returned, frame.f_back, chain):
            return None
        value = _DEFAULT_VALUE(static)
        if chain and value is None and "asis" in flags:
            value = _caller_default(chain, value)
        _count(site, name, frame)
        _yielded(site, value, frame, chain)
        return (value,)
    except Exception:  # noqa: BLE001 - contained: the original exception propagates
        return None


def _raised_by_the_call(error: BaseException) -> bool:
    """True when *error* was raised by the guarded call itself (C code) or below it
    only in code that is not patchable (the standard library)."""
    from codesuture.crash.files import is_patchable_file

    tb = error.__traceback__
    tb = tb.tb_next if tb is not None else None  # the head is the guarded frame itself
    while tb is not None:
        if is_patchable_file(tb.tb_frame.f_code.co_filename):
            return False
        tb = tb.tb_next
    return True


def _bind_consumer() -> Callable[[Any], str]:
    """The first firing that asks: bind :func:`codesuture.runtime.callers.consumer_default`."""
    global _CONSUMER
    from codesuture.runtime.callers import consumer_default

    _CONSUMER = consumer_default
    return consumer_default


def _caller_default(chain: Any, fallback: object) -> object:
    """The default the callers in *chain* need (the value is returned to them
    unchanged: :func:`codesuture.runtime.callers.consumer_default`), else *fallback*.
    Never raises."""
    try:
        consumer = _CONSUMER
        key = consumer(chain) if consumer is not None else _bind_consumer()(chain)
    except Exception:  # noqa: BLE001 - not known: the guard's own rule decides
        return fallback
    return fallback if key == "None" else _DEFAULT_VALUE(key)


def fire(site: str, exc: str, rule: str, static: str, *evidence: object) -> tuple[object] | None:
    """A guard at *site* is about to yield a default instead of raising *exc*: the
    default, ``(value,)``, chosen by :func:`typed_default` from *rule*, *static* (the
    default decided at heal time, a key of :data:`codesuture.patch.spec.DEFAULTS`) and
    *evidence*; or None when the guard must raise *exc* (the stack handles it, or the
    value is returned to a caller that decides with it, or *exc* ends in ``|notruth``
    and the default is a ``bool``: a truth value that would decide where it is stored).

    Every firing runs it, so what :func:`_refuses`, :func:`_count` and the container
    rule of :func:`typed_default` do is written inline here (benchmark (j)); those
    functions stay the reference for the other entry points."""
    info = _EXCS.get(exc)
    if info is None:
        info = _exc_info(exc)
    name, handles, returned, flags = info
    frame = sys._getframe(1)  # the guarded frame
    chain: list[Any] | None = None
    if handles or returned:  # _refuses, inlined
        seed = None
        if returned:
            chain = []
            seed = _SEEDS.get(site)
            if seed is None:
                seed = _SEEDS[site] = [None]
        check = _CHECK
        try:
            if check is None:
                check = _bind_check()
            handled, why = check(frame.f_back, handles, returned, chain, seed)
        except Exception as err:  # noqa: BLE001 - unknown: not handled; a returned value fails closed
            handled, why = False, (f"the callers could not be checked ({type(err).__name__})" if returned else None)
        if handled:
            return None
        if why:
            _decline(site, why)
            return None
    value: object = None
    if static != "None":  # decided at heal time from the value's consumer
        value = _DEFAULT_VALUE(static)
    elif chain and "asis" in flags:  # returned unchanged: its caller's consumer first
        consumer = _CONSUMER  # _caller_default, inlined
        try:
            key = consumer(chain) if consumer is not None else _bind_consumer()(chain)
            if key != "None":
                value = _DEFAULT_VALUE(key)
        except Exception:  # noqa: BLE001 - not known: the guard's own rule decides
            pass
    if value is None and evidence and rule != "static":
        try:
            if rule == "container":  # typed_default's rule, inlined
                t = _element_type(evidence[0])
                if t is not None:
                    value = t() if t in _ZERO_EXACT else _empty_of(t)
            else:
                value = typed_default(rule, static, evidence)[0]
        except Exception:  # noqa: BLE001 - no value from the evidence: the static default (None)
            value = None
    if value is not None and "notruth" in flags and isinstance(value, bool):
        # a flag is what it decides (the heal found a decision)
        _decline(site, f"its default would be {value!r}, a truth value that would decide")
        return None
    COUNTS[site] = COUNTS.get(site, 0) + 1  # _count, inlined
    unit = _UNIT.get()
    if unit is not None:
        unit.fired.append(site)
        unit.degraded = True
    observe = _OBSERVE
    if observe is not _ignore:
        try:
            observe(site, name, frame)
        except Exception:  # noqa: BLE001 - an observer never changes what the guard does
            pass
    _LAST.value = (site, value, id(frame), frame.f_code, chain)  # _yielded, inlined
    shadow = _SHADOW
    if shadow is not None:
        try:
            shadow(site, frame, value)
        except Exception:  # noqa: BLE001 - shadow mode never changes what the guard yields
            pass
    return (value,)


# ------------------------------------------------------------------ typed defaults

_ZERO_TYPES = (str, bytes, list, dict, tuple, set, frozenset, int, float, complex, bytearray)
_ZERO_EXACT = frozenset((*_ZERO_TYPES, bool))
_ONE_OPS = frozenset({"*", "/", "//", "**", "@"})


def _empty_of(t: type) -> object:
    """The empty (zero) value of built-in type *t*: ``''``, ``0``, ``[]``... Raises
    TypeError for other types."""
    if t in _ZERO_EXACT:
        return t()  # bool() is False
    for base in _ZERO_TYPES:
        if issubclass(t, base):
            return base()
    raise TypeError(t)


#: How many elements of a container :func:`_element_type` looks at, at most (the first
#: ones in iteration order): a firing costs the same for a list of ten and of a million.
ELEMENT_SAMPLE = 8


def _element_type(container: Any) -> type | None:
    """The one type the first :data:`ELEMENT_SAMPLE` elements of a container (values of
    a mapping) share, or None (no elements, several types, not iterable)."""
    ct = type(container)
    if ct is dict:  # the common containers first, without isinstance and hasattr
        it = iter(container.values())
    elif ct is list or ct is tuple:
        it = iter(container)
    elif isinstance(container, (str, bytes)):
        return type(container)
    else:
        try:
            it = iter(container.values() if isinstance(container, dict) or hasattr(container, "values") else container)
        except Exception:  # noqa: BLE001 - evidence is optional
            return None
    try:
        t = type(next(it))
        n = 1
        for v in it:
            if n >= ELEMENT_SAMPLE:
                break
            if type(v) is not t:
                return None
            n += 1
    except Exception:  # noqa: BLE001 - evidence is optional (StopIteration: no elements)
        return None
    return t


def _binary(op: str, left: object, right: object) -> object:
    import operator

    table = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "//": operator.floordiv,
             "%": operator.mod, "**": operator.pow, "@": operator.matmul, "&": operator.and_, "|": operator.or_,
             "^": operator.xor, "<<": operator.lshift, ">>": operator.rshift, "<": operator.lt, "<=": operator.le,
             ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}
    return table[op.rstrip("=") if op.endswith("=") and op not in ("<=", ">=", "==", "!=") else op](left, right)


def typed_default(rule: str, static: str, evidence: tuple[object, ...]) -> tuple[object, str]:
    """``(value, what decided it)`` for a guard about to yield a default.

    Rules (``docs/guards.md``):

    * ``container``, evidence ``(container,)``: the empty value of the type all sampled
      elements share (mapping values; a ``str`` gives ``''``);
    * ``binop:<op>:left`` (the left operand is None), evidence ``(right,)``: the
      operation with None read as the empty value of the right operand's type
      (``None + 1`` is ``1``, ``None + 'a'`` is ``'a'``, ``None < 3`` is ``True``);
    * ``binop:<op>:right`` (the right operand is None), evidence ``(left,)``: None read
      as the operation's identity for the left operand's type (``x + None`` and
      ``x * None`` are ``x``);
    * ``static``, or no usable evidence: the heal-time default (*static*: chosen from
      the value's consumer, e.g. ``()`` before ``len()`` or iteration).

    A static default other than None (the consumer knew better) wins over evidence.
    """
    fallback = _DEFAULT_VALUE(static)
    if fallback is not None or rule == "static":
        return fallback, "consumer" if fallback is not None else "none known"
    if rule == "container" and evidence:
        t = _element_type(evidence[0])
        if t is not None:
            try:
                return _empty_of(t), f"container of {t.__name__}"
            except TypeError:
                pass
        return None, "none known"
    if rule.startswith("binop:") and evidence:
        _, op, side = rule.split(":", 2)
        other = evidence[0]
        if other is None:
            return None, "none known"
        try:
            if side == "left":
                return _binary(op, _empty_of(type(other)), other), f"operand {type(other).__name__}"
            ident = (type(other)(1) if isinstance(other, (int, float, complex)) else 1) if op.rstrip("=") in _ONE_OPS \
                else _empty_of(type(other))
            return _binary(op, other, ident), f"operand {type(other).__name__}"
        except Exception:  # noqa: BLE001 - no sensible value: the static one
            return None, "none known"
    return fallback, "none known"


#: Method names -> the type whose empty value answers them on None, most specific first.
_METHOD_TYPES: tuple[tuple[type, frozenset[str]], ...] = (
    (str, frozenset({"strip", "lstrip", "rstrip", "lower", "upper", "title", "capitalize", "casefold", "replace",
                     "split", "rsplit", "splitlines", "startswith", "endswith", "join", "format", "encode",
                     "partition", "rpartition", "zfill", "center", "ljust", "rjust", "isdigit", "isalpha",
                     "isalnum", "isspace", "islower", "isupper", "find", "rfind", "expandtabs", "swapcase",
                     "removeprefix", "removesuffix", "translate", "isnumeric", "isdecimal", "isidentifier"})),
    (dict, frozenset({"get", "items", "keys", "values", "setdefault", "update", "popitem"})),
    (list, frozenset({"append", "extend", "insert", "remove", "sort", "reverse"})),
    (set, frozenset({"add", "discard", "union", "intersection", "difference", "issubset", "issuperset"})),
)


def method_default(site: str, name: str, static: str, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
    """What ``None.<name>(*args, **kwargs)`` yields once a method guard replaced it: the
    method of the empty value of the type that has it (``None.strip()`` is
    ``''.strip()``, ``None.get(k, d)`` is ``d``, ``None.append(x)`` is None), else the
    static default. Never raises."""
    value = _method_value(name, static, args, kwargs)
    shadow = _SHADOW
    if shadow is not None:
        try:
            shadow(site, sys._getframe(2), value)  # the guarded frame: this <- the stand-in <- it
        except Exception:  # noqa: BLE001 - shadow mode never changes what the guard yields
            pass
    return value


def _method_value(name: str, static: str, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
    fallback = _DEFAULT_VALUE(static)
    if fallback is not None:
        return fallback
    for t, names in _METHOD_TYPES:
        if name in names:
            try:
                return getattr(t(), name)(*args, **kwargs)
            except Exception:  # noqa: BLE001 - arguments that do not fit: the static value
                return fallback
    return fallback


# ------------------------------------------------------------------ units of work


def begin() -> tuple[Unit, contextvars.Token[Unit | None]]:
    """Open a unit of work in the current context; returns it and the token for
    :func:`end`."""
    unit = Unit()
    return unit, _UNIT.set(unit)


#: ``enter(unit)``: open *unit*, a :class:`Unit` (subclass) a boundary made itself as
#: its per-request object, in the current context; returns the token for :func:`end`
#: (the context variable's own ``set``: no call, no second object on the hot path).
enter = _UNIT.set

#: ``end(token)``: close the unit opened with *token* (the context variable's own
#: ``reset``, called directly: one call per request on the healthy path).
end = _UNIT.reset

#: ``current()``: the unit of work open in this context, if any.
current = _UNIT.get


__all__ = ["COUNTS", "Unit", "fire", "fired", "caught", "last_yield", "method_default", "typed_default", "begin", "enter", "end", "current",
           "reset_observer"]
