"""HTTP boundaries: ``http.server`` handlers, WSGI and ASGI apps.

A request that crashes is healed. It is replayed only when that is safe: the method
is safe (GET, HEAD, OPTIONS; never POST, PUT, PATCH, DELETE) and no byte of the
response has been sent yet. Otherwise the crash takes its usual course (500, or the
server's error handling) and the next request runs the patched code.
"""

from __future__ import annotations

import functools

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MUTATING = ("do_POST", "do_PUT", "do_PATCH", "do_DELETE")


def _heal(healer, exc):
    if healer is None:
        from codesuture.runtime.healer import default_healer

        healer = default_healer()
    return None if healer is None else healer.heal(exc)


class _CountingWriter:
    """Wraps a handler's ``wfile`` to know whether any response byte went out."""

    def __init__(self, raw):
        self._raw = raw
        self.written = 0

    def write(self, data):
        self.written += len(data)
        return self._raw.write(data)

    def __getattr__(self, name):
        return getattr(self._raw, name)


def healing_handler(cls=None, *, healer=None, retries: int = 3):
    """Class decorator for a ``http.server.BaseHTTPRequestHandler`` subclass: its
    ``do_GET``/``do_HEAD``/``do_OPTIONS`` heal and replay; ``do_POST``/``do_PUT``/
    ``do_PATCH``/``do_DELETE`` heal without replay."""

    def decorate(klass):
        for name in ("do_GET", "do_HEAD", "do_OPTIONS", *MUTATING):
            method = getattr(klass, name, None)
            if method is not None:
                setattr(klass, name, _wrap_method(method, name not in MUTATING, healer, retries))
        return klass

    return decorate(cls) if cls is not None else decorate


def _wrap_method(method, replayable: bool, healer, retries: int):
    @functools.wraps(method)
    def run(self):
        attempt = 0
        while True:
            writer = _CountingWriter(self.wfile)
            self.wfile = writer
            try:
                return method(self)
            except Exception as exc:
                sent = writer.written > 0
                healed = _heal(healer, exc) if attempt < retries else None
                if healed is None or not replayable or sent:
                    raise
                attempt += 1
                self._headers_buffer = []  # headers queued but not flushed: start over
            finally:
                self.wfile = writer._raw

    return run


class HealingWSGIMiddleware:
    """WSGI middleware: heal crashes of *app*; replay safe requests whose crash
    happened before the app returned its response iterable (and so before any byte
    was sent). Exceptions while the body streams are healed, not replayed."""

    def __init__(self, app, *, healer=None, retries: int = 3) -> None:
        self.app = app
        self.healer = healer
        self.retries = retries

    def __call__(self, environ, start_response):
        safe = environ.get("REQUEST_METHOD", "GET").upper() in SAFE_METHODS
        attempt = 0
        while True:
            try:
                return _HealingBody(self.app(environ, start_response), self)
            except Exception as exc:
                healed = _heal(self.healer, exc) if attempt < self.retries else None
                if healed is None or not safe:
                    raise
                attempt += 1


class _HealingBody:
    """The app's response iterable; a crash while iterating is healed (for the next
    request) and re-raised."""

    def __init__(self, body, owner) -> None:
        self._body = body
        self._owner = owner

    def __iter__(self):
        try:
            yield from self._body
        except Exception as exc:
            _heal(self._owner.healer, exc)
            raise

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


class HealingASGIMiddleware:
    """ASGI middleware (HTTP scopes): heal crashes of *app*; replay safe requests that
    crashed before ``http.response.start`` was sent, feeding the app the request
    messages it already received."""

    def __init__(self, app, *, healer=None, retries: int = 3) -> None:
        self.app = app
        self.healer = healer
        self.retries = retries

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        safe = str(scope.get("method", "GET")).upper() in SAFE_METHODS
        received: list = []
        started = False

        async def recording_receive():
            message = await receive()
            received.append(message)
            return message

        async def tracking_send(message):
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        attempt = 0
        recv = recording_receive
        while True:
            try:
                return await self.app(scope, recv, tracking_send)
            except Exception as exc:
                healed = _heal(self.healer, exc) if attempt < self.retries else None
                if healed is None or not safe or started:
                    raise
                attempt += 1
                recv = _replaying(list(received), recording_receive)


def _replaying(messages, then):
    async def receive():
        if messages:
            return messages.pop(0)
        return await then()

    return receive
