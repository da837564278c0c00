"""Flask: heal inside the app's own exception path.

Flask turns every exception a view raises into a response itself (its error handlers,
else a 500), so a WSGI middleware around the app never sees one. This extension hooks
the app's exception path instead::

    from codesuture.runtime.adapters.flask import CodeSuture
    CodeSuture(app)                       # or: cs = CodeSuture(); cs.init_app(app)

What it does, per request (each request is a unit of work,
:mod:`codesuture.runtime.events`):

* an exception the app does not handle itself (not an ``HTTPException`` such as an
  ``abort(404)``, and no ``@app.errorhandler`` registered for its class or a specific
  ancestor; a catch-all handler for ``Exception`` counts as the app's 500 page, not as
  handling) is healed, in ``handle_user_exception``;
* a safe request (GET, HEAD, OPTIONS) is then replayed within the same request: the
  view runs again, patched (the ``before_request`` functions too, when one of them
  crashed), and the client gets the view's normal response;
* a mutating request (POST, PUT, PATCH, DELETE) is never replayed: it is healed for the
  next request and the app's normal 500 path runs (its 500 handler, logging,
  ``PROPAGATE_EXCEPTIONS``);
* exceptions raised outside the view (``after_request`` functions, error handlers) are
  healed for the next request in ``handle_exception``;
* ``X-CodeSuture`` is added to a response exactly when a guard yielded a default during
  the request or it was replayed: ``guards=N; replayed=N``; ``header="full"`` (or
  ``CODESUTURE_HEADER = "full"`` in ``app.config``, or the ``header`` setting) adds the
  guard and the patched site; ``header=False`` turns it off.

``healer``: a :class:`~codesuture.runtime.healer.Healer`; default: the process-wide one
configured from the environment ``python -m codesuture.boot`` exports (no healing when
CodeSuture is off). ``retries``: replays per request (``CODESUTURE_RETRIES`` in
``app.config`` overrides; 0 heals and never replays).
"""

from __future__ import annotations

from typing import Any, Callable

from codesuture.runtime import events, warmup
from codesuture.runtime.replay import Replays
from codesuture.runtime.web import HEADER, SAFE_METHODS, heal

#: Handlers registered for these classes are catch-alls (the app's 500 page), not
#: handling: an exception they would get is healed first.
_BROAD = (Exception, BaseException, object)
#: Where a request's tried exception is kept (on ``flask.g``), so the 500 path does not
#: heal it twice.
_TRIED = "_codesuture_tried"


class CodeSuture:
    """The Flask extension (see the module docstring)."""

    def __init__(self, app: Any = None, *, healer: Any = None, retries: int = 8,
                 header: bool | str | None = None) -> None:
        self.healer = healer
        self.retries = retries
        self.header = header
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Install the hooks on *app* (once per app)."""
        if "codesuture" in app.extensions:
            return
        app.extensions["codesuture"] = self
        retries = int(app.config.get("CODESUTURE_RETRIES", self.retries))
        header = events.header_level(app.config.get("CODESUTURE_HEADER", self.header))
        app.wsgi_app = _unit_of_work(app.wsgi_app)
        app.handle_user_exception = _user_exception(app, app.handle_user_exception, self.healer, retries)
        app.handle_exception = _server_error(app, app.handle_exception, self.healer)
        if header:
            # After process_response (every after_request function of the app), on
            # every response (500 pages included). Not an after_request function itself:
            # Flask pays ensure_sync and a loop per request for each of those.
            app.process_response = _with_header(app.process_response, header == "full")
        warmup.start()


def _unit_of_work(wsgi_app: Callable[..., Any]) -> Callable[..., Any]:
    def run(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        token = events.enter(events.Unit())
        try:
            return wsgi_app(environ, start_response)
        finally:
            events.end(token)

    run.__wrapped__ = wsgi_app  # type: ignore[attr-defined]
    return run


def _with_header(process_response: Callable[[Any], Any], full: bool) -> Callable[[Any], Any]:
    """``app.process_response``, then ``X-CodeSuture`` on a degraded response."""

    def run(response: Any) -> Any:
        response = process_response(response)
        unit = events.current()
        if unit is not None and unit.degraded:
            value = unit.header(full)
            if value is not None:
                response.headers[HEADER] = value
        return response

    run.__wrapped__ = process_response  # type: ignore[attr-defined]
    return run


def app_handles(app: Any, exc: BaseException) -> bool:
    """True when *app* handles *exc* itself: an ``HTTPException`` (aborts, 404, 405,
    ``BadRequestKeyError``), or an error handler registered for its class or a specific
    ancestor, on the app or on the request's blueprints."""
    from flask import request
    from werkzeug.exceptions import HTTPException

    if isinstance(exc, HTTPException):
        return True
    spec = app.error_handler_spec
    for name in (*request.blueprints, None):
        handlers = spec.get(name, {}).get(None, {})
        if not handlers:
            continue
        for cls in type(exc).__mro__:
            if cls in _BROAD:
                break
            if cls in handlers:
                return True
    return False


def _through(exc: BaseException, func: Any) -> bool:
    """True when *exc* was raised inside a call of *func* (its traceback passes through it)."""
    code = getattr(func, "__code__", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def _user_exception(app: Any, original: Callable[[Exception], Any], healer: Any, retries: int) -> Callable[[Exception], Any]:
    """``app.handle_user_exception``: what the app handles goes to its handlers; the
    rest is healed, and a safe request replayed. Whatever is not replayed goes back to
    Flask's own ``handle_user_exception`` (a catch-all handler, else the 500 path),
    always while that exception is the one being handled (Flask re-raises it with a
    bare ``raise``)."""

    def handle_user_exception(e: Exception) -> Any:
        if app_handles(app, e):
            return original(e)
        from flask import request

        return attempt(e, request.method in SAFE_METHODS, Replays(retries))

    def attempt(exc: Exception, safe: bool, replays: Replays) -> Any:
        from flask import g

        unit = events.current()
        setattr(g, _TRIED, exc)
        healed = heal(healer, exc, unit)  # a mutating request too: for the next one
        if not safe or not replays.allow(healed):
            return original(exc)
        if unit is not None:
            unit.replayed += 1
        try:
            if _through(exc, type(app).dispatch_request):
                return app.dispatch_request()
            rv = app.preprocess_request()  # a before_request function crashed
            return rv if rv is not None else app.dispatch_request()
        except Exception as again:
            if app_handles(app, again):
                return original(again)
            return attempt(again, safe, replays)

    handle_user_exception.__wrapped__ = original  # type: ignore[attr-defined]
    return handle_user_exception


def _server_error(app: Any, original: Callable[[Exception], Any], healer: Any) -> Callable[[Exception], Any]:
    """``app.handle_exception`` (the 500 path): heal, for the next request, an exception
    that was not tried in the view (an ``after_request`` function, an error handler),
    then run the app's own 500 path."""

    def handle_exception(e: Exception) -> Any:
        from flask import g, has_request_context

        if has_request_context():
            if g.get(_TRIED) is not e and not app_handles(app, e):
                heal(healer, e, events.current())
            g.pop(_TRIED, None)
        return original(e)

    handle_exception.__wrapped__ = original  # type: ignore[attr-defined]
    return handle_exception


__all__ = ["CodeSuture", "app_handles"]
