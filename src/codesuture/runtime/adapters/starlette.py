"""Starlette and FastAPI: :class:`~codesuture.runtime.web.HealingASGIMiddleware` where it
sees the exceptions the app does not handle, before a response starts::

    from codesuture.runtime.adapters.starlette import install
    install(app)                          # before the app serves its first request

Where it goes: Starlette builds its stack as ``ServerErrorMiddleware`` (the 500 page,
and the handler registered for ``500`` or ``Exception``) -> the user middleware ->
``ExceptionMiddleware`` (``HTTPException``s and the handlers registered for specific
exception classes) -> the router. :func:`install` adds the healing middleware as the
outermost user middleware, so

* exceptions the app handles itself (``HTTPException``, 404/405, FastAPI's validation
  errors, ``@app.exception_handler(KeyError)``) are answered by its handlers inside and
  never reach CodeSuture;
* any other exception of an endpoint or of a user middleware is healed; a safe request
  (GET, HEAD, OPTIONS) that crashed before ``http.response.start`` is replayed through
  the whole inner stack (the request body it had read is fed again), a mutating one is
  re-raised to ``ServerErrorMiddleware`` (the app's 500 handler) and runs patched code
  from the next request on;
* ``X-CodeSuture`` is added to the response exactly when a guard yielded a default
  during the request or it was replayed: ``guards=N; replayed=N`` (``header="full"``
  adds the guard and the patched site; ``header=False`` turns it off).

``healer``: a :class:`~codesuture.runtime.healer.Healer`; default: the process-wide one
configured from the environment ``python -m codesuture.boot`` exports. ``retries``:
replays per request (0 heals and never replays).
"""

from __future__ import annotations

from typing import Any, TypeVar

from codesuture.runtime import warmup
from codesuture.runtime.web import HealingASGIMiddleware

App = TypeVar("App")


def install(app: App, *, healer: Any = None, retries: int = 8, header: bool | str | None = None) -> App:
    """Add the healing middleware to the Starlette (or FastAPI) *app*, outermost among its
    user middleware (once). Returns *app*. Raises RuntimeError (Starlette's) when the
    app already started serving."""
    user_middleware = getattr(app, "user_middleware", None)
    if user_middleware is None or not hasattr(app, "add_middleware"):
        raise TypeError(f"install() needs a Starlette or FastAPI application, not {type(app).__name__}")
    if any(getattr(m, "cls", None) is HealingASGIMiddleware for m in user_middleware):
        return app
    app.add_middleware(HealingASGIMiddleware, healer=healer, retries=retries, header=header)
    warmup.start()  # the middleware itself is made at the first request
    return app


__all__ = ["install"]
