"""Prometheus counters and OpenTelemetry span events for what CodeSuture does, each
used only when its library is installed.

Imported by the app, to mount the counters (counting starts then), or by
:mod:`codesuture.runtime.incidents` on an event once the program has imported
``prometheus_client`` or ``opentelemetry.trace`` itself; never at boot, and never
just because the libraries are installed::

    from codesuture.runtime.metrics import registry      # None without prometheus_client
    from prometheus_client import make_wsgi_app
    app = make_wsgi_app(registry)                         # or generate_latest(registry),
                                                          # or REGISTRY.register(registry)

Counters, on :data:`registry` (a ``CollectorRegistry`` of their own, so they never
collide with the app's metrics):

* ``codesuture_heals_total``: patches applied live (new ones and ones adopted from
  another process);
* ``codesuture_refusals_total{reason}``: crashes not healed, by reason (``eafp``,
  ``control_flow``, ``diagnosis``, ``report_only``, ``dry_run``, ``error``,
  ``internal``, ``interpreter``; :data:`codesuture.runtime.incidents.REASONS`);
* ``codesuture_guard_firings_total{site}``: defaults yielded, by guard site
  (``<guard>@<module>:<line>``, the ``X-CodeSuture`` header's site);
* ``codesuture_rollbacks_total``: live rollbacks.

OpenTelemetry (``opentelemetry-api``): when the current span is recording, each event
is added to it as a span event ``codesuture.<kind>`` (``codesuture.crash``,
``codesuture.heal``, ``codesuture.refusal``, ``codesuture.rollback``,
``codesuture.shadow``, with the incident's fields as ``codesuture.*`` attributes), and
``codesuture.guard_fired`` (one attribute, ``codesuture.site``: the guard, module and
line) once per guard site per span: the span says which defaults its request got, and
a hot loop of firings inside one request stays cheap (the SDK's ``add_event`` costs
microseconds, most of them validating attributes, so there is only one). The API is used only when the program has imported
``opentelemetry.trace`` itself (without that no span can be recording), so CodeSuture
never imports it.

A guard firing costs one dict lookup and one counter increment here, plus the span
lookup and, once per span, the span event (``benchmarks/guard_firing.py``).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

try:
    from prometheus_client import CollectorRegistry, Counter
except ImportError:  # optional
    registry: Any = None
    HEALS: Any = None
    REFUSALS: Any = None
    GUARD_FIRINGS: Any = None
    ROLLBACKS: Any = None
else:
    #: The registry holding CodeSuture's counters (None without ``prometheus_client``).
    registry = CollectorRegistry(auto_describe=True)
    HEALS = Counter("codesuture_heals", "Patches applied live (new or adopted).", registry=registry)
    REFUSALS = Counter("codesuture_refusals", "Crashes not healed, by reason.", ["reason"], registry=registry)
    GUARD_FIRINGS = Counter("codesuture_guard_firings", "Defaults yielded by guards, by site.", ["site"],
                            registry=registry)
    ROLLBACKS = Counter("codesuture_rollbacks", "Live rollbacks.", registry=registry)

_modules = sys.modules
#: site -> its child of GUARD_FIRINGS.
_FIRINGS: dict[str, Any] = {}
#: site -> the last span that got its guard_fired event (one event per site per span).
_SPANS: dict[str, Any] = {}


def _span() -> Any:
    """The current span when it is recording, else None (the app's OpenTelemetry)."""
    trace = _modules.get("opentelemetry.trace")
    if trace is None:
        return None
    span = trace.get_current_span()
    return span if span.is_recording() else None


def on_guard(site: str, exc: str, frame: Any) -> None:
    """A guard at *site* fired in *frame*."""
    if GUARD_FIRINGS is not None:
        child = _FIRINGS.get(site)
        if child is None:
            child = _FIRINGS[site] = GUARD_FIRINGS.labels(site=site)
        child.inc()
    trace = _modules.get("opentelemetry.trace")
    if trace is not None:
        span = trace.get_current_span()
        if span.is_recording() and _SPANS.get(site) is not span:
            _SPANS[site] = span
            span.add_event("codesuture.guard_fired", {"codesuture.site": site})


#: Incident fields copied into span event attributes.
_ATTRIBUTES = ("fingerprint", "site", "guard", "exception", "reason", "status", "functions", "reused")


def on_incident(event: dict[str, Any]) -> None:
    """Count an incident (:mod:`codesuture.runtime.incidents`) and add it to the
    current span. Guard firings are counted by :func:`on_guard`, not here."""
    kind = event.get("kind")
    if kind == "heal" and event.get("status") in ("patched", "adopted"):
        if HEALS is not None:
            HEALS.inc()
    elif kind == "refusal":
        if REFUSALS is not None:
            REFUSALS.labels(reason=str(event.get("reason", "unknown"))).inc()
    elif kind == "rollback":
        if ROLLBACKS is not None:
            ROLLBACKS.inc()
    elif kind == "guard_fired":
        return
    span = _span()
    if span is not None:
        attributes = {f"codesuture.{k}": event[k] for k in _ATTRIBUTES
                      if isinstance(event.get(k), (str, int, float, bool)) and event.get(k) != ""}
        span.add_event(f"codesuture.{kind}", attributes)


__all__ = ["registry", "on_guard", "on_incident", "HEALS", "REFUSALS", "GUARD_FIRINGS", "ROLLBACKS"]
