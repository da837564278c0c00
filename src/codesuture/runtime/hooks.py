"""Process-wide crash hooks: zero-code-change recovery under ``codesuture run`` and boot.

:func:`install` (called by :func:`codesuture.runtime.session.activate` when healing or
in prod mode) makes the standard library's own error paths heal, with no change in
the program:

* ``http.server``: every request to a ``BaseHTTPRequestHandler`` subclass is a unit of
  work that heals and replays safe methods, exactly as with
  :func:`codesuture.runtime.web.healing_handler` (its ``wrap_handler_method`` and
  header code): after the first successful ``parse_request`` of a command, the handler
  class gets a healing wrapper of its ``do_<COMMAND>`` and an ``end_headers`` that adds
  ``X-CodeSuture`` (set on that class, as the decorator would).
* ``socketserver``: a crash in any request handler reaches ``BaseServer.handle_error``;
  the server reports it as before, then it is healed for the next request (never
  replayed: the protocol is unknown).
* ``threading``: ``threading.excepthook`` is chained (the previous hook still prints
  the traceback), then the crash is healed for the next call; never replayed.
* ``concurrent.futures`` and ``asyncio`` awaits: nothing is healed in a worker before
  its Future resolves, since only the code that takes the result knows whether it
  handles the exception (``try: pool.submit(f).result() except KeyError: ...``,
  ``await asyncio.to_thread(f)``, ``run_in_executor``, ``gather``). The exception
  travels as it does without CodeSuture: through ``Future.result()`` or the ``await``
  into the caller's frames, with the worker's frames still in its traceback, and is
  healed only where it arrives unhandled (the script, a request, a thread: rule 12).
  A ``ProcessPoolExecutor`` worker notes its crash site on the exception before it is
  pickled (:func:`codesuture.crash.site.note_worker_site`), so that the parent can
  heal the site its copy of the exception has no frames for.
* ``asyncio``: ``BaseEventLoop.call_exception_handler`` (exceptions in callbacks, tasks
  and futures whose exception is never retrieved, logged when they are collected) runs
  the loop's handler as before (the usual log line), then heals. Exceptions that reach
  ``asyncio.run`` are the script boundary's.
* Flask, Django and Starlette turn a view's exception into a 500 themselves, before
  any hook sees it: the first time one does so with a structural crash no adapter
  saw, one WARNING names the adapter line to add (nothing is healed there).

Each hook is installed at most once, and only when the session heals or is in prod
mode; without ``--heal`` in prod, :meth:`~codesuture.runtime.session.Session.heal` only
logs what it would patch, so nothing is replayed. An exception is offered to the healer
once, whichever hooks it passes through.

Cost: this module is imported only with the first module it patches
(:mod:`codesuture.runtime.hookfinder` arms it at start-up), and nothing is imported to
install a hook. Modules already imported are patched at once; the others when the
program imports them, through a ``sys.meta_path`` finder that answers only for those
few names (one set lookup for every other import) and wraps the real loader's
``exec_module``. On the healthy path, an ``http.server``
request pays one extra call (the ``parse_request`` wrapper: two dictionary lookups and
one class attribute read) besides the unit of work of ``wrap_handler_method``; threads,
executors and event loops pay nothing (their hooks sit on error paths only). Nothing
per line, no tracing.
"""

from __future__ import annotations

import _thread
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any, Callable

#: The session whose healer the hooks use (None: hooks installed but inactive).
_SESSION: Any = None
#: Replays of a safe HTTP request after a heal (the session's ``retries``).
_RETRIES = 3
#: Set on an exception once it was offered to the healer (one exception, one heal).
_MARK = "__codesuture_offered__"
#: Thread idents inside a heal started by a hook (a crash reported on the same thread meanwhile,
#: by a finalizer the heal's own work triggered, is not healed: heals never nest).
_BUSY: set[int] = set()
#: Module name -> patcher; what is patched already.
_PATCHERS: dict[str, Callable[[Any], None]] = {}
INSTALLED: set[str] = set()
#: Hooked modules not imported yet (the post-import finder answers for these only).
_PENDING: set[str] = set()


def _log() -> Any:
    from codesuture.logs import logger

    return logger("codesuture.hooks")


def install(session: Any) -> None:
    """Install the process-wide crash hooks for *session* (idempotent: a second call
    only changes the session they heal for). A no-op unless the session heals or is
    in prod mode."""
    global _SESSION, _RETRIES
    s = session.settings
    if not (s.heal or s.prod):
        return
    _SESSION, _RETRIES = session, s.retries
    for name in _PATCHERS:
        module = sys.modules.get(name)
        if module is not None:
            _patch(name, module)
        elif name not in INSTALLED:
            _PENDING.add(name)
    if _PENDING and not any(isinstance(f, _PostImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImport())


def heal(exc: BaseException) -> Any:
    """Offer *exc* to the session's healer, once per exception object. Returns the heal
    result or None; never raises."""
    session = _SESSION
    if session is None or not isinstance(exc, Exception) or sys.is_finalizing():
        return None
    me = _thread.get_ident()
    if me in _BUSY:  # a finalizer reporting a crash in the middle of a heal on this thread
        return None
    state = getattr(exc, "__dict__", None)
    if state is not None:
        if state.get(_MARK):
            return None
        state[_MARK] = True
    _BUSY.add(me)
    try:
        return session.heal(exc)
    except Exception as err:  # contained (rule 7): the program's own handling goes on
        _log().warning("not healed: internal error %r", err)
        return None
    finally:
        _BUSY.discard(me)


class _Healer:
    """The healer handed to :func:`codesuture.runtime.web.wrap_handler_method`."""

    __slots__ = ()
    heal = staticmethod(heal)


_HEALER = _Healer()


def _patch(name: str, module: Any) -> None:
    if name in INSTALLED:
        return
    INSTALLED.add(name)
    _PENDING.discard(name)
    try:
        _PATCHERS[name](module)
    except Exception as exc:  # contained (rule 7): the module works as it always did
        _log().warning("crash hooks for %s not installed: %r", name, exc)


def _wraps(wrapper: Any, wrapped: Any) -> Any:
    """functools.wraps without importing functools on the boot path."""
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, attr, getattr(wrapped, attr, None))
    wrapper.__wrapped__ = wrapped
    wrapper.__codesuture__ = True
    return wrapper


def _hooked(owner: Any, name: str) -> Any:
    """``owner.name`` as defined on *owner*, or None when CodeSuture wrapped it already."""
    original = owner.__dict__[name]
    return None if getattr(original, "__codesuture__", False) else original


def find_spec(fullname: str, path: Any = None, target: Any = None) -> Any:
    """What the hooks' post-import finder answers for *fullname* (the hand-over from
    :mod:`codesuture.runtime.hookfinder` at the first import of a hooked module)."""
    return _PostImport().find_spec(fullname, path, target)


# ---------------------------------------------------------------------- post-import


class _PostImport:
    """``sys.meta_path`` finder that answers only for the modules still to be patched:
    it asks the rest of ``sys.meta_path`` for the real spec and wraps its loader, so
    the module is patched right after it executed. Every other import costs one set
    lookup."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<codesuture hooks finder {sorted(_PENDING)}>"

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _PENDING:
            return None
        try:
            for finder in sys.meta_path:
                if isinstance(finder, _PostImport):
                    continue
                find = getattr(finder, "find_spec", None)
                spec = find(fullname, path, target) if find is not None else None
                if spec is not None:
                    if hasattr(spec.loader, "exec_module"):
                        spec.loader = _Then(spec.loader, fullname)
                    return spec
        except Exception as exc:  # contained (rule 7): the normal finders run
            _log().warning("crash hooks for %s not installed: %r", fullname, exc)
        return None

    def invalidate_caches(self) -> None:
        pass


class _Then:
    """The real loader, then the patch; it puts the real loader back on the module."""

    __slots__ = ("loader", "name")

    def __init__(self, loader: Any, name: str) -> None:
        self.loader, self.name = loader, name

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        try:
            self.loader.exec_module(module)
        finally:
            if getattr(module, "__loader__", None) is self:
                module.__loader__ = self.loader
            spec = getattr(module, "__spec__", None)
            if spec is not None and spec.loader is self:
                spec.loader = self.loader
        if sys.modules.get(self.name) is module:  # an import, not a module made from a spec on the side
            _patch(self.name, module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader...: the real loader's
        return getattr(object.__getattribute__(self, "loader"), name)


# ---------------------------------------------------------------------- http.server


def _http_server(module: Any) -> None:
    cls = module.BaseHTTPRequestHandler
    parse = _hooked(cls, "parse_request")
    if parse is None:
        return
    from codesuture.runtime import web

    def parse_request(self: Any) -> bool:
        ok = parse(self)
        if ok and _SESSION is not None:
            handler = type(self)
            armed = _ARMED.get(handler)
            entry = armed.get(self.command) if armed is not None else None
            # one or two dictionary lookups and one class attribute read per request:
            # no name built, no tuple, no mapping proxy
            if entry is None or getattr(handler, entry[0], None) is not entry[1]:
                try:
                    _arm(handler, "do_" + self.command, web)
                except Exception as exc:  # contained (rule 7): the request runs unwrapped
                    _log().warning("request not healed: internal error %r", exc)
        return ok

    cls.parse_request = _wraps(parse_request, parse)


#: handler class -> {command: ("do_<COMMAND>", what ``handler.do_<COMMAND>`` is once
#: armed: the healing wrapper set on that class, or what it was when it could not be
#: wrapped)}.
_ARMED: dict[type, dict[str, tuple[str, Any]]] = {}


def _arm(cls: type, name: str, web: Any) -> None:
    """Put a healing wrapper of ``cls.do_<COMMAND>`` (and an ``end_headers`` that adds
    ``X-CodeSuture``) on the handler class itself, the first time it serves that
    command: later requests pay two dictionary lookups, and the handler instance is left
    alone (a per-instance attribute would cost every attribute access of the request
    the interpreter's inline-values fast path)."""
    armed = _ARMED.setdefault(cls, {})
    raw = _raw(cls, name)
    if raw is None:  # no such method (a 501), or not a plain function, or wrapped already
        armed[name[3:]] = (name, getattr(cls, name, None))
        return
    wrapper = _wraps(web.wrap_handler_method(raw, name[3:] in web.SAFE_METHODS, _HEALER, _RETRIES), raw)
    end_headers = _raw(cls, "end_headers")
    level = web.events.header_level()  # the header setting (CODESUTURE_HEADER), as every boundary
    if end_headers is not None and level:
        cls.end_headers = web._with_header(end_headers, level == "full")  # type: ignore[attr-defined]
    setattr(cls, name, wrapper)
    armed[name[3:]] = (name, wrapper)


def _raw(cls: type, name: str) -> Any:
    """``cls.name`` as defined (a function, not bound), when it is a plain function
    that CodeSuture did not wrap already; else None."""
    from types import FunctionType

    raw = next((c.__dict__[name] for c in cls.__mro__ if name in c.__dict__), None)
    return raw if type(raw) is FunctionType and not getattr(raw, "__codesuture__", False) else None


# ---------------------------------------------------------------------- socketserver


def _socketserver(module: Any) -> None:
    cls = module.BaseServer
    handle_error = _hooked(cls, "handle_error")
    if handle_error is None:
        return

    def hook(self: Any, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        try:
            handle_error(self, request, client_address)
        finally:
            if exc is not None:
                heal(exc)

    cls.handle_error = _wraps(hook, handle_error)
    from codesuture.runtime import warmup

    warmup.start()


# ---------------------------------------------------------------------- threading


def _threading(module: Any) -> None:
    previous = module.excepthook
    if getattr(previous, "__codesuture__", False):
        return

    def excepthook(args: Any, /) -> None:
        try:
            previous(args)
        finally:
            if args.exc_value is not None:
                heal(args.exc_value)

    module.excepthook = _wraps(excepthook, previous)


# ---------------------------------------------------------------------- concurrent.futures


def _futures_process(module: Any) -> None:
    cls = module._ExceptionWithTraceback
    init = _hooked(cls, "__init__")
    if init is None:
        return
    worker = module._process_worker.__code__

    def hook(self: Any, exc: Any, tb: Any) -> None:
        if sys._getframe(1).f_code is worker:  # the work item's crash, in the worker process
            from codesuture.crash.site import note_worker_site

            note_worker_site(exc, tb)  # the parent heals it, if its Future's result goes unhandled
        init(self, exc, tb)

    cls.__init__ = _wraps(hook, init)


# ---------------------------------------------------------------------- asyncio


def _asyncio(module: Any) -> None:
    cls = module.BaseEventLoop
    call_exception_handler = _hooked(cls, "call_exception_handler")
    if call_exception_handler is None:
        return

    def hook(self: Any, context: dict[str, Any]) -> None:
        try:
            call_exception_handler(self, context)
        finally:
            exc = context.get("exception") if isinstance(context, dict) else None
            if isinstance(exc, Exception) and _SESSION is not None:
                _loop_heal(self, context, exc)

    cls.call_exception_handler = _wraps(hook, call_exception_handler)


def _loop_heal(loop: Any, context: dict[str, Any], exc: Exception) -> None:
    """Heal now for a callback's crash; a task or future reported from its finalizer
    (exception never retrieved) is healed on the loop's next turn while it runs, not
    inside the garbage collector."""
    if "handle" not in context and loop.is_running():
        try:
            loop.call_soon_threadsafe(heal, exc)
            return
        except RuntimeError:  # closed meanwhile
            pass
    heal(exc)


# ---------------------------------------------------------------------- web frameworks

#: Structural exceptions: what an adapter could have healed.
_STRUCTURAL = ("AttributeError", "KeyError", "IndexError", "ZeroDivisionError", "TypeError", "ValueError",
               "FileNotFoundError")
#: The adapter line per framework, for the one warning.
ADAPTER_LINES = {
    "Flask": "from codesuture.runtime.adapters.flask import CodeSuture; CodeSuture(app)",
    "Django": 'MIDDLEWARE = ["codesuture.runtime.adapters.django.CodeSutureMiddleware", *MIDDLEWARE]',
    "Starlette": "from codesuture.runtime.adapters.starlette import install; install(app)",
}
#: Frameworks already warned about in this process.
_WARNED: set[str] = set()


def _unhealed_500(framework: str, exc: Any) -> None:
    """The framework turned *exc* into a 500: once per framework and process, warn when
    no CodeSuture boundary ever saw it (the app has no adapter) and it is a crash an
    adapter could heal. Never raises."""
    try:
        if framework in _WARNED or _SESSION is None or not isinstance(exc, Exception):
            return
        if not any(k.__name__ in _STRUCTURAL for k in type(exc).__mro__):
            return
        state = getattr(exc, "__dict__", {})
        if state.get("__codesuture_seen__") or state.get(_MARK):
            return
        _WARNED.add(framework)
        tb, where = exc.__traceback__, ""
        while tb is not None:
            where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
            tb = tb.tb_next
        _log().warning("%s turned %s%s into a 500 without CodeSuture's adapter, so it was not healed (the framework "
                       "handles the exception before any CodeSuture hook sees it); add the adapter: %s", framework,
                       type(exc).__name__, where, ADAPTER_LINES[framework])
    except Exception:  # noqa: BLE001 - only a hint (rule 7)
        pass


def _flask(module: Any) -> None:
    cls = module.Flask
    handle_exception = _hooked(cls, "handle_exception")
    if handle_exception is None:
        return

    def hook(self: Any, e: Any) -> Any:
        _unhealed_500("Flask", e)
        return handle_exception(self, e)

    cls.handle_exception = _wraps(hook, handle_exception)


def _django(module: Any) -> None:
    handle = getattr(module, "handle_uncaught_exception", None)
    if handle is None or getattr(handle, "__codesuture__", False):
        return

    def hook(request: Any, resolver: Any, exc_info: Any) -> Any:
        _unhealed_500("Django", exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None)
        return handle(request, resolver, exc_info)

    module.handle_uncaught_exception = _wraps(hook, handle)


def _starlette(module: Any) -> None:
    cls = module.ServerErrorMiddleware
    for name in ("error_response", "debug_response"):
        original = _hooked(cls, name) if name in cls.__dict__ else None
        if original is None:
            continue

        def hook(self: Any, request: Any, exc: Any, _original: Any = original) -> Any:
            _unhealed_500("Starlette", exc)
            return _original(self, request, exc)

        setattr(cls, name, _wraps(hook, original))


_PATCHERS.update({
    "flask.app": _flask,
    "django.core.handlers.exception": _django,
    "starlette.middleware.errors": _starlette,
    "threading": _threading,
    "socketserver": _socketserver,
    "http.server": _http_server,
    "concurrent.futures.process": _futures_process,
    "asyncio.base_events": _asyncio,
})

__all__ = ["install", "heal", "find_spec", "INSTALLED"]
