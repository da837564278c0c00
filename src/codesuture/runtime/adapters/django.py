"""Django: a middleware that heals inside Django's exception path.

Django turns every exception a view raises into a response itself (``handler500``, the
DEBUG page), so a WSGI middleware around it never sees one. Put this middleware first
in ``MIDDLEWARE`` (outermost: its ``process_exception`` runs after every other
middleware's, and its header goes on the final response)::

    MIDDLEWARE = ["codesuture.runtime.adapters.django.CodeSutureMiddleware", ...]
    CODESUTURE = {"header": True, "retries": 8}      # optional

What it does, per request (each request is a unit of work,
:mod:`codesuture.runtime.events`):

* ``process_exception`` heals an exception the view (``request.resolver_match``) or its
  template response's rendering raised, unless Django handles it itself
  (``Http404``, ``PermissionDenied``, ``BadRequest``, ``SuspiciousOperation``,
  ``MultiPartParserError``: their 4xx pages and ``handler404``/``handler403`` run) or
  another middleware's ``process_exception`` answered first;
* a safe request (GET, HEAD, OPTIONS) is then replayed: the view runs again, patched (in
  a transaction where ``ATOMIC_REQUESTS`` asks for one) and its response is returned;
* otherwise (a mutating request, a crash that cannot be healed) it returns None and
  Django's own handling runs (``handler500``, the DEBUG page, logging, signals); a
  mutating request runs the patched code from the next request on;
* ``X-CodeSuture`` is set on a response exactly when a guard yielded a default during
  the request or it was replayed.

Settings (``CODESUTURE`` in Django's settings, all optional): ``header`` (``"counts"``:
``guards=N; replayed=N``; ``"full"`` adds the guard and the patched site; ``False``:
off; default: the ``header`` setting, ``CODESUTURE_HEADER``, else counts), ``retries`` (replays per request, default 8; 0 heals and never replays),
``healer`` (a :class:`~codesuture.runtime.healer.Healer`; default: the process-wide one
configured from the environment ``python -m codesuture.boot`` exports).
"""

from __future__ import annotations

from typing import Any, Callable

from codesuture.runtime import events, warmup
from codesuture.runtime.replay import Replays
from codesuture.runtime.web import HEADER, SAFE_METHODS, heal

_RENDERING = "_codesuture_rendering"


def django_handles(exc: BaseException) -> bool:
    """True for the exceptions Django turns into their own 4xx responses."""
    from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
    from django.http import Http404
    from django.http.multipartparser import MultiPartParserError

    return isinstance(exc, (Http404, PermissionDenied, BadRequest, SuspiciousOperation, MultiPartParserError))


class CodeSutureMiddleware:
    """The middleware (see the module docstring). Synchronous; under ASGI Django adapts it."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from django.conf import settings

        conf = dict(getattr(settings, "CODESUTURE", None) or {})
        self.get_response = get_response
        self.header = events.header_level(conf.get("header"))
        self.retries = int(conf.get("retries", 8))
        self.healer = conf.get("healer")
        warmup.start()

    def __call__(self, request: Any) -> Any:
        unit = events.Unit()
        token = events.enter(unit)
        try:
            response = self.get_response(request)
            value = unit.header(self.header == "full") if self.header and unit.degraded else None
            if value is not None:
                response[HEADER] = value
            return response
        finally:
            events.end(token)

    def process_template_response(self, request: Any, response: Any) -> Any:
        setattr(request, _RENDERING, True)  # the view returned: a crash from here on is its rendering's
        return response

    def process_exception(self, request: Any, exception: Exception) -> Any:
        if django_handles(exception):
            return None
        unit = events.current()
        healed = heal(self.healer, exception, unit)
        # The view Django resolved and called (what process_view would be given; no
        # process_view hook: that would cost every request a call).
        match = getattr(request, "resolver_match", None)
        view = None if match is None else (match.func, match.args, match.kwargs)
        replays = Replays(self.retries)
        if view is None or request.method not in SAFE_METHODS or not replays.allow(healed):
            return None  # Django's own handling: handler500, the DEBUG page
        while True:
            if unit is not None:
                unit.replayed += 1
            try:
                return self._replay(request, *view)
            except Exception as again:
                if django_handles(again) or not replays.allow(heal(self.healer, again, unit)):
                    raise  # the replay's exception, through Django's handling

    def _replay(self, request: Any, view_func: Any, args: Any, kwargs: Any) -> Any:
        rendering = getattr(request, _RENDERING, False)
        response = _atomic(view_func)(request, *args, **kwargs)
        render = getattr(response, "render", None)
        if rendering and callable(render):
            # The first run crashed while rendering: Django renders nothing returned by
            # process_exception, so render the replay's response here.
            response = render()
        return response


def _atomic(view: Any) -> Any:
    """*view* as Django's handler calls it: in a transaction per database with
    ``ATOMIC_REQUESTS``, and synchronously."""
    from inspect import iscoroutinefunction

    from django.db import connections, transaction

    non_atomic: set[str] = getattr(view, "_non_atomic_requests", set())
    for alias, settings_dict in connections.settings.items():
        if settings_dict.get("ATOMIC_REQUESTS") and alias not in non_atomic:
            view = transaction.atomic(using=alias)(view)
    if iscoroutinefunction(view):
        from asgiref.sync import async_to_sync

        view = async_to_sync(view)
    return view


__all__ = ["CodeSutureMiddleware", "django_handles"]
