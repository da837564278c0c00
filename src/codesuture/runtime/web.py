"""HTTP boundaries: ``http.server`` handlers, WSGI and ASGI apps.

Every request is a unit of work (:mod:`codesuture.runtime.events`). A request that
crashes is healed. It is replayed only when that is safe: the method is safe (GET,
HEAD, OPTIONS; never POST, PUT, PATCH, DELETE) and no byte of the response body has
been sent yet. Otherwise the crash takes its usual course (500, or the server's error
handling) and the next request runs the patched code.

WSGI (PEP 3333): when the app had already called ``start_response`` before it
crashed, the replay's ``start_response`` is passed on with ``exc_info``, which PEP 3333
allows while no header has been sent, so the client gets one well-formed response.

The ``X-CodeSuture`` header (on by default) is added to a response exactly when, before
its headers went out, a guard yielded a default during the request or the request was
replayed: ``guards=1; guard=key_guard; site=app.views:42; replayed=1``. A healthy
response never carries it.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Iterable, Iterator

from codesuture.runtime import events, warmup

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MUTATING = ("do_POST", "do_PUT", "do_PATCH", "do_DELETE")
HEADER = "X-CodeSuture"


def heal(healer: Any, exc: BaseException, unit: events.Unit | None = None) -> Any:
    """Heal *exc* with *healer* (default: the process-wide one); record a new patch in
    *unit*. Returns the heal result, or None."""
    if healer is None:
        from codesuture.runtime.healer import default_healer

        healer = default_healer()
    result = None if healer is None else healer.heal(exc)
    if result is not None and unit is not None:
        from codesuture.patch.synthesize import site_of

        unit.patched.append(site_of(result.record))
    return result


# ---------------------------------------------------------------------- http.server


class _CountingWriter:
    """Wraps a handler's ``wfile`` to know whether any response byte went out."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.written = 0

    def write(self, data: bytes) -> Any:
        self.written += len(data)
        return self._raw.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def healing_handler(cls: Any = None, *, healer: Any = None, retries: int = 3, header: bool = True) -> Any:
    """Class decorator for a ``http.server.BaseHTTPRequestHandler`` subclass: its
    ``do_GET``/``do_HEAD``/``do_OPTIONS`` heal and replay; ``do_POST``/``do_PUT``/
    ``do_PATCH``/``do_DELETE`` heal without replay; *header*: add ``X-CodeSuture``."""

    def decorate(klass: Any) -> Any:
        warmup.start()
        for name in ("do_GET", "do_HEAD", "do_OPTIONS", *MUTATING):
            method = klass.__dict__.get(name) or getattr(klass, name, None)
            if method is not None and not getattr(method, "__codesuture__", False):
                setattr(klass, name, wrap_handler_method(method, name not in MUTATING, healer, retries))
        if header and not getattr(klass.end_headers, "__codesuture__", False):
            klass.end_headers = _with_header(klass.end_headers)
        return klass

    return decorate(cls) if cls is not None else decorate


def _with_header(end_headers: Callable[[Any], None]) -> Callable[[Any], None]:
    @functools.wraps(end_headers)
    def run(self: Any) -> None:
        unit = events.current()
        value = unit.header() if unit is not None else None
        if value is not None:
            self.send_header(HEADER, value)
        end_headers(self)

    run.__codesuture__ = True  # type: ignore[attr-defined]
    return run


def wrap_handler_method(method: Callable[[Any], Any], replayable: bool, healer: Any, retries: int) -> Callable[[Any], Any]:
    """A ``do_<METHOD>`` that runs as a unit of work, heals, and replays when safe."""

    @functools.wraps(method)
    def run(self: Any) -> Any:
        unit, token = events.begin()
        try:
            attempt = 0
            while True:
                writer = _CountingWriter(self.wfile)
                self.wfile = writer
                try:
                    return method(self)
                except Exception as exc:
                    sent = writer.written > 0
                    healed = heal(healer, exc, unit) if attempt <= retries else None
                    if healed is None or not replayable or sent or attempt >= retries:
                        raise
                    attempt += 1
                    unit.replayed += 1
                    self._headers_buffer = []  # headers queued but not flushed: start over
                finally:
                    self.wfile = writer._raw
        finally:
            events.end(token)

    run.__codesuture__ = True  # type: ignore[attr-defined]
    return run


# ---------------------------------------------------------------------- WSGI


class HealingWSGIMiddleware:
    """WSGI middleware: each request a unit of work; heal crashes of *app*; replay safe
    requests whose crash happened before any byte of the body was sent (re-calling
    ``start_response`` with ``exc_info`` when the app had called it). Exceptions while
    the body streams are healed for the next request, not replayed. *header*: add
    ``X-CodeSuture`` to degraded responses."""

    def __init__(self, app: Any, *, healer: Any = None, retries: int = 3, header: bool = True) -> None:
        self.app = app
        self.healer = healer
        self.retries = retries
        self.header = header
        warmup.start()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        unit, token = events.begin()
        safe = str(environ.get("REQUEST_METHOD", "GET")).upper() in SAFE_METHODS
        state = _WSGIState(start_response, unit, self.header)
        attempt = 0
        try:
            while True:
                try:
                    body = self.app(environ, state.start_response)
                    return _HealingBody(body, self, unit, token, state)
                except Exception as exc:
                    healed = heal(self.healer, exc, unit) if attempt <= self.retries else None
                    if healed is None or not safe or state.sent or attempt >= self.retries:
                        raise
                    attempt += 1
                    unit.replayed += 1
                    state.replaying()
        except BaseException:
            events.end(token)
            raise


class _WSGIState:
    """``start_response`` as the app sees it: adds the header, counts bytes written
    through its ``write``, and on a replay passes ``exc_info`` on."""

    def __init__(self, start_response: Callable[..., Any], unit: events.Unit, header: bool) -> None:
        self._start_response = start_response
        self._unit = unit
        self._header = header
        self.called = False
        self.sent = 0
        self._replay = False

    def replaying(self) -> None:
        self._replay = self.called

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
        if self._replay and exc_info is None:
            exc_info = sys.exc_info() if sys.exc_info()[0] is not None else (RuntimeError, RuntimeError("replay"), None)
        self._replay = False
        value = self._unit.header() if self._header else None
        if value is not None:
            headers = [h for h in headers if h[0].lower() != HEADER.lower()] + [(HEADER, value)]
        self.called = True
        write = self._start_response(status, headers, exc_info) if exc_info is not None else self._start_response(status, headers)

        def counting_write(data: bytes) -> Any:
            self.sent += len(data)
            return write(data)

        return counting_write


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

    def __init__(self, app: Any, *, healer: Any = None, retries: int = 3, header: bool = True) -> None:
        self.app = app
        self.healer = healer
        self.retries = retries
        self.header = header
        warmup.start()

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> Any:
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        unit, token = events.begin()
        safe = str(scope.get("method", "GET")).upper() in SAFE_METHODS
        received: list[Any] = []
        started = False

        async def recording_receive() -> Any:
            message = await receive()
            received.append(message)
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
                value = unit.header() if self.header else None
                if value is not None:
                    headers = [h for h in message.get("headers", []) if bytes(h[0]).lower() != HEADER.lower().encode()]
                    message = {**message, "headers": [*headers, (HEADER.lower().encode(), value.encode("latin-1"))]}
            await send(message)

        attempt = 0
        recv: Callable[[], Any] = recording_receive
        try:
            while True:
                try:
                    return await self.app(scope, recv, tracking_send)
                except Exception as exc:
                    healed = heal(self.healer, exc, unit) if attempt <= self.retries else None
                    if healed is None or not safe or started or attempt >= self.retries:
                        raise
                    attempt += 1
                    unit.replayed += 1
                    recv = _replaying(list(received), recording_receive)
        finally:
            events.end(token)


def _replaying(messages: list[Any], then: Callable[[], Any]) -> Callable[[], Any]:
    async def receive() -> Any:
        if messages:
            return messages.pop(0)
        return await then()

    return receive


__all__ = ["HealingWSGIMiddleware", "HealingASGIMiddleware", "healing_handler", "wrap_handler_method", "heal",
           "SAFE_METHODS", "HEADER"]
