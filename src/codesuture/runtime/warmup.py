"""Warm the heal path up before the first crash, where that crash would hurt.

A first heal in a fresh process imports ``bytecode`` (with ``typing`` and
``dataclasses``), CodeSuture's crash, guard and patch modules and ``logging``: about
30 ms, most of a cold first heal. Inside a server that time blocks a request (in an
event loop, every request). So the boundaries that serve (the WSGI/ASGI middleware, the
framework adapters, the hooks of ``http.server``) call :func:`start` when they are set
up, and one daemon thread imports the heal path a moment later. Scripts do not: their
first heal pays the imports once, and their healthy runs keep nothing more alive.
"""

from __future__ import annotations

import _thread

#: Seconds the warm-up waits before importing, so it does not compete with start-up.
DELAY = 0.2
#: What a heal imports, in the order it needs it.
MODULES = (
    "logging", "bytecode", "codesuture.crash.handled", "codesuture.crash.site", "codesuture.crash.diagnose",
    "codesuture.guards.registry", "codesuture.patch.synthesize", "codesuture.patch.swap", "codesuture.patch.diffgate",
    "codesuture.runtime.healer", "codesuture.store.writer", "codesuture.overlay.build", "codesuture.loader.resolve",
)
_STARTED: list[bool] = []


def _warm() -> None:
    import importlib
    import time

    time.sleep(DELAY)
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a warm-up never matters more than the program
            return


def start() -> None:
    """Start the warm-up thread (once per process; never raises)."""
    if _STARTED:
        return
    _STARTED.append(True)
    try:
        _thread.start_new_thread(_warm, ())
    except RuntimeError:
        pass


__all__ = ["start", "MODULES", "DELAY"]
