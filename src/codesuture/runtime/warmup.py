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
    "codesuture.patch.flow",  # a returning guard checks its live callers each time it fires
    "codesuture.runtime.callers",  # every firing walks its live callers (EAFP, value flow)
    "codesuture.guards.families", "codesuture.guards.null", "codesuture.guards.subscript", "codesuture.guards.arith",
    "codesuture.guards.calls", "codesuture.patch.synthesize", "codesuture.patch.swap", "codesuture.patch.diffgate",
    "codesuture.runtime.healer", "codesuture.store.writer", "codesuture.overlay.build", "codesuture.loader.resolve",
    "codesuture.runtime.incidents", "codesuture.runtime.governance", "codesuture.settings", "difflib",
)
_STARTED: list[bool] = []
#: Set once the warm-up imported everything (or gave up) in this process.
_DONE: list[bool] = []
#: Held while the warm-up imports. A fork waits for it (at most this long): a child
#: forked in the middle of an import would inherit that module's import lock held by
#: a thread it does not have, and hang (or see the module half-initialized) the first
#: time it imports it. gunicorn's arbiter starts the warm-up (``logging.config``
#: imports ``socketserver``) just before it forks its workers.
FORK_WAIT_SECONDS = 2.0
_LOCK = _thread.allocate_lock()
_HELD: list[bool] = []
_HOOKED: list[bool] = []


def _warm() -> None:
    import importlib
    import time

    time.sleep(DELAY)
    with _LOCK:
        try:
            for name in MODULES:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 - a warm-up never matters more than the program
                    return
        finally:
            _DONE.append(True)


def _before_fork() -> None:
    if _LOCK.acquire(timeout=FORK_WAIT_SECONDS):
        _HELD.append(True)


def _after_fork_parent() -> None:
    if _HELD:
        _HELD.clear()
        _LOCK.release()


def _after_fork_child() -> None:
    global _LOCK
    _LOCK = _thread.allocate_lock()
    _HELD.clear()
    if not _DONE:  # forked before the warm-up ran: the child warms itself up
        _STARTED.clear()
        start()


def start() -> None:
    """Start the warm-up thread (once per process; never raises)."""
    if _STARTED:
        return
    _STARTED.append(True)
    try:
        if not _HOOKED:
            import os

            os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent,
                                after_in_child=_after_fork_child)
            _HOOKED.append(True)
        _thread.start_new_thread(_warm, ())
    except RuntimeError:
        pass


__all__ = ["start", "MODULES", "DELAY"]
