"""``@boundary``: mark a function as a unit of work.

An unhandled structural crash inside it is healed; the call is replayed with the same
arguments when ``replay=True`` (only for work that is safe to repeat: reads,
idempotent computations), else the exception propagates after the patch so the next
call runs the patched code.
"""

from __future__ import annotations

import functools


def boundary(func=None, *, replay: bool = True, retries: int = 3, healer=None):
    """Decorate *func* (usable as ``@boundary`` or ``@boundary(replay=False)``).

    ``healer``: a :class:`~codesuture.runtime.healer.Healer`; default: the
    process-wide one from the environment (none when CodeSuture is off, and then the
    function runs exactly as undecorated). ``retries``: most replays per call, each
    after a heal that made progress (see :mod:`codesuture.runtime.replay`).
    """

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            attempt = 0
            while True:
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    h = healer if healer is not None else _default()
                    if h is None or attempt >= retries or h.heal(exc) is None or not replay:
                        raise
                    attempt += 1

        return run

    return wrap(func) if func is not None else wrap


def _default():
    from codesuture.runtime.healer import default_healer

    return default_healer()
