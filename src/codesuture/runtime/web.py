"""HTTP boundaries: ``http.server`` handlers, WSGI and ASGI apps.

Every request is a unit of work (:mod:`codesuture.runtime.events`). A request that
crashes is healed. It is replayed only when that is safe: the method is safe (GET,
HEAD, OPTIONS; never POST, PUT, PATCH, DELETE) and no byte of the response body has
been sent yet. Otherwise the crash takes its usual course (500, or the server's error
handling) and the next request runs the patched code.

WSGI (PEP 3333): the app's ``start_response`` call is held until the app returns (or
first writes), which PEP 3333 allows; so when the app had called it before it crashed,
the replay calls it again, the server sees one call and the client gets one
well-formed response (some servers, gunicorn's among them, add the headers of every
call they see).

The ``X-CodeSuture`` header (on by default) is added to a response exactly when, before
its headers went out, a guard yielded a default during the request or the request was
replayed. It discloses counts only, ``guards=1; replayed=1``; the guard and the patched
site (``guard=key_guard; site=app.views:42``), which every client would see, only with
the ``header = "full"`` setting (``CODESUTURE_HEADER=full``, or ``header="full"`` on a
boundary); ``off`` drops it. A healthy response never carries it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Iterator

from codesuture.runtime import events, warmup
from codesuture.runtime.replay import Replays

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MUTATING = ("do_POST", "do_PUT", "do_PATCH", "do_DELETE")
HEADER = "X-CodeSuture"


#: Set in an exception's ``__dict__`` once a boundary offered it to a healer.
SEEN = "__codesuture_seen__"


def heal(healer: Any, exc: BaseException, unit: events.Unit | None = None) -> Any:
    """Heal *exc* with *healer* (default: the process-wide one); record a new patch in
    *unit*. Returns the heal result, or None."""
    state = getattr(exc, "__dict__", None)
    if state is not None:
        state[SEEN] = True  # a boundary saw it (the framework hooks stay quiet about it)
    if healer is None:
        from codesuture.runtime.healer import default_healer

        healer = default_healer()
    result = None if healer is None else healer.heal(exc)
    if result is not None and unit is not None:
        from codesuture.patch.synthesize import site_of

        unit.patched.append(site_of(result.record))
    return result


# ---------------------------------------------------------------------- http.server


class _HandlerRequest(events.Unit):
    """One request to a ``http.server`` handler (one object per request): its unit of
    work, and the handler's ``wfile`` while ``do_<METHOD>`` runs, to know whether any
    response byte went out. At the first non-empty write it puts the real file back on
    the handler, so later writes go straight to it; any other attribute is the real
    file's."""

    __slots__ = ("_handler", "_raw", "written")

    def __init__(self, handler: Any, raw: Any) -> None:
        self._handler = handler
        self._raw = raw
        self.written = 0

    def write(self, data: bytes) -> Any:
        if data:
            self.written += len(data)
            if self._handler.wfile is self:
                self._handler.wfile = self._raw
        return self._raw.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def healing_handler(cls: Any = None, *, healer: Any = None, retries: int = 8, header: bool | str | None = None) -> Any:
    """Class decorator for a ``http.server.BaseHTTPRequestHandler`` subclass: its
    ``do_GET``/``do_HEAD``/``do_OPTIONS`` heal and replay; ``do_POST``/``do_PUT``/
    ``do_PATCH``/``do_DELETE`` heal without replay; *header*: what ``X-CodeSuture`` says
    (:func:`codesuture.runtime.events.header_level`; default: the ``header`` setting)."""
    level = events.header_level(header)

    def decorate(klass: Any) -> Any:
        warmup.start()
        for name in ("do_GET", "do_HEAD", "do_OPTIONS", *MUTATING):
            method = klass.__dict__.get(name) or getattr(klass, name, None)
            if method is not None and not getattr(method, "__codesuture__", False):
                setattr(klass, name, wrap_handler_method(method, name not in MUTATING, healer, retries))
        if level and not getattr(klass.end_headers, "__codesuture__", False):
            klass.end_headers = _with_header(klass.end_headers, level == "full")
        return klass

    return decorate(cls) if cls is not None else decorate


def _with_header(end_headers: Callable[[Any], None], full: bool) -> Callable[[Any], None]:
    current = events.current  # bound once: no module attribute lookups per request

    @functools.wraps(end_headers)
    def run(self: Any) -> None:
        unit = current()
        if unit is not None and unit.degraded:
            value = unit.header(full)
            if value is not None:
                self.send_header(HEADER, value)
        end_headers(self)

    run.__codesuture__ = True  # type: ignore[attr-defined]
    return run


def wrap_handler_method(method: Callable[[Any], Any], replayable: bool, healer: Any, retries: int) -> Callable[[Any], Any]:
    """A ``do_<METHOD>`` that runs as a unit of work, heals, and replays when safe.

    The healthy path makes one object (:class:`_HandlerRequest`, the unit and the
    ``wfile`` stand-in), sets and resets the unit's context variable, and looks nothing
    up in module globals; what a crash needs is made in the ``except`` branch."""
    enter, end, request = events.enter, events.end, _HandlerRequest

    @functools.wraps(method)
    def run(self: Any) -> Any:
        unit = request(self, self.wfile)
        token = enter(unit)
        replays = None
        try:
            while True:
                self.wfile = unit
                try:
                    return method(self)
                except Exception as exc:
                    if replays is None:
                        replays = Replays(retries)
                    sent = unit.written > 0
                    healed = heal(healer, exc, unit) if replays.done <= retries else None
                    if not replayable or sent or not replays.allow(healed):
                        raise
                    unit.replayed += 1
                    self._headers_buffer = []  # headers queued but not flushed: start over
                finally:
                    self.wfile = unit._raw
        finally:
            end(token)

    run.__codesuture__ = True  # type: ignore[attr-defined]
    return run


# ---------------------------------------------------------------------- WSGI


class HealingWSGIMiddleware:
    """WSGI middleware: each request a unit of work; heal crashes of *app*; replay safe
    requests that crashed while the server had not seen ``start_response`` (the app's
    call is held until it returns or writes: a replay after it called
    ``start_response`` gives the server one call). Exceptions while the body streams
    are healed for the next request, not replayed. *header*: add ``X-CodeSuture`` to
    degraded responses."""

    def __init__(self, app: Any, *, healer: Any = None, retries: int = 8, header: bool | str | None = None) -> None:
        self.app = app
        self.healer = healer
        self.retries = retries
        self.header = events.header_level(header)
        warmup.start()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        state = unit = _WSGIState(start_response, self.header)  # the request's unit of work
        token = events.enter(unit)
        replays = None  # made on the first crash: the healthy path allocates nothing more
        try:
            while True:
                try:
                    body = self.app(environ, state.start_response)
                except Exception as exc:
                    if replays is None:
                        replays = Replays(self.retries)
                    healed = heal(self.healer, exc, unit) if replays.done <= self.retries else None
                    safe = str(environ.get("REQUEST_METHOD", "GET")).upper() in SAFE_METHODS
                    if not safe or state.passed or not replays.allow(healed):
                        raise
                    unit.replayed += 1
                    state.replaying()
                    continue
                try:
                    state.release()
                except BaseException:
                    close = getattr(body, "close", None)
                    if close is not None:
                        close()
                    raise
                if type(body) is not list and type(body) is not tuple:
                    return _HealingBody(body, self, unit, token, state)
                break  # a list or tuple: none of the app's code runs any more
        except BaseException:
            events.end(token)
            raise
        events.end(token)
        return body


class _WSGIState(events.Unit):
    """The request's unit of work (one object per request), and ``start_response`` as
    the app sees it. While the app runs, its call is held, not passed to the server
    (PEP 3333 lets headers wait for the first body byte): a replay simply calls it
    again and the server sees one call, with the ``X-CodeSuture`` header as of the
    moment it goes out. The held call is passed on when the app returns, or at its
    first ``write``; later calls go straight through. Counts the bytes written."""

    __slots__ = ("_start_response", "_header", "_holding", "_held", "_write", "passed", "sent")

    def __init__(self, start_response: Callable[..., Any], header: str | None) -> None:
        self._start_response = start_response
        self._header = header
        self._holding = True
        self._held: tuple[str, list[tuple[str, str]]] | None = None
        self._write: Callable[[bytes], Any] | None = None
        self.passed = False  # the server's start_response was called
        self.sent = 0

    def replaying(self) -> None:
        self._held = None  # nothing reached the server: the replay starts over

    def release(self) -> None:
        """The app returned: pass the held call on (later calls go straight through).
        Once per request: :meth:`_pass` written out, for the healthy path."""
        self._holding = False
        held = self._held
        if held is not None:
            self._held = None
            status, headers = held
            if self._header and self.degraded:
                headers = _with_header_value(headers, self.header(self._header == "full"))
            self.passed = True
            self._write = self._start_response(status, headers)

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
        if self._holding and not self.passed:
            self._held = (status, headers)  # the app's own list, as the server would get it
        else:
            self._pass(status, headers, exc_info)
        return self.write

    def _pass(self, status: str, headers: list[tuple[str, str]], exc_info: Any) -> None:
        if self._header and self.degraded:
            headers = _with_header_value(headers, self.header(self._header == "full"))
        self.passed = True
        self._write = self._start_response(status, headers, exc_info) if exc_info is not None else self._start_response(status, headers)

    def write(self, data: bytes) -> Any:
        if self._held is not None:
            status, headers = self._held
            self._held = None
            self._pass(status, headers, None)
        if self._write is None:
            raise AssertionError("write() before start_response()")
        self.sent += len(data)
        return self._write(data)


def _with_header_value(headers: list[tuple[str, str]], value: str | None) -> list[tuple[str, str]]:
    """*headers* with ``X-CodeSuture: value`` (replacing any), or as they are for None."""
    if value is None:
        return headers
    return [h for h in headers if h[0].lower() != HEADER.lower()] + [(HEADER, value)]


class _HealingBody:
    """The app's response iterable: counts bytes sent; a crash while iterating is
    healed (for the next request) and re-raised; closing it ends the unit of work."""

    def __init__(self, body: Iterable[bytes], owner: HealingWSGIMiddleware, unit: events.Unit, token: Any,
                 state: _WSGIState) -> None:
        self._body = body
        self._owner = owner
        self._unit = unit
        self._token = token
        self._state = state
        self._ended = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._body:
                self._state.sent += len(chunk)
                yield chunk
        except Exception as exc:
            heal(self._owner.healer, exc, self._unit)
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._ended:
                self._ended = True
                try:
                    events.end(self._token)
                except ValueError:  # closed from another context (a server's own thread)
                    pass


# ---------------------------------------------------------------------- ASGI


class HealingASGIMiddleware:
    """ASGI middleware (HTTP scopes): each request a unit of work; heal crashes of
    *app*; replay safe requests that crashed before ``http.response.start`` was sent,
    feeding the app the request messages it already received. *header*: add
    ``X-CodeSuture`` to degraded responses."""

    def __init__(self, app: Any, *, healer: Any = None, retries: int = 8, header: bool | str | None = None) -> None:
        self.app = app
        self.healer = healer
        self.retries = retries
        self.header = events.header_level(header)
        warmup.start()

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> Any:
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        method = scope.get("method", "GET")
        safe = method in SAFE_METHODS or str(method).upper() in SAFE_METHODS
        exchange = unit = _Exchange(self.header, receive, send)  # the request's unit of work
        token = events.enter(unit)
        replays = None  # made on the first crash: the healthy path allocates nothing more
        # Only a safe request is replayed: only its request messages are recorded.
        recv: Callable[[], Any] = exchange.receive if safe else receive
        try:
            while True:
                try:
                    return await self.app(scope, recv, exchange.send)
                except Exception as exc:
                    if replays is None:
                        replays = Replays(self.retries)
                    healed = heal(self.healer, exc, unit) if replays.done <= self.retries else None
                    if not safe or exchange.started or not replays.allow(healed):
                        raise
                    unit.replayed += 1
                    recv = _replaying(list(exchange.received or ()), exchange.receive)
        finally:
            events.end(token)


class _Exchange(events.Unit):
    """One ASGI request: its unit of work, and the channel as the app sees it:
    ``receive`` records the request messages (for a replay), ``send`` notes when the
    response started and adds ``X-CodeSuture`` to its start message. One small object
    per request (cheaper than a unit and two closures)."""

    __slots__ = ("_header", "_receive", "_send", "received", "started")

    def __init__(self, header: str | None, receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        self._header = header
        self._receive = receive
        self._send = send
        self.received: list[Any] | None = None  # made at the first message
        self.started = False

    async def receive(self) -> Any:
        message = await self._receive()
        if self.received is None:
            self.received = []
        self.received.append(message)
        return message

    def send(self, message: dict[str, Any]) -> Any:
        """A plain function returning the server's awaitable: no extra coroutine per message."""
        if not self.started and message.get("type") == "http.response.start":
            self.started = True
            value = self.header(self._header == "full") if self._header and self.degraded else None
            if value is not None:
                headers = [h for h in message.get("headers", []) if bytes(h[0]).lower() != HEADER.lower().encode()]
                message = {**message, "headers": [*headers, (HEADER.lower().encode(), value.encode("latin-1"))]}
        return self._send(message)


def _replaying(messages: list[Any], then: Callable[[], Any]) -> Callable[[], Any]:
    async def receive() -> Any:
        if messages:
            return messages.pop(0)
        return await then()

    return receive


__all__ = ["HealingWSGIMiddleware", "HealingASGIMiddleware", "healing_handler", "wrap_handler_method", "heal",
           "SAFE_METHODS", "HEADER"]
