"""Lazy logging for the boot path.

Importing :mod:`logging` costs several milliseconds, so modules on the healthy path
(boot, the finder, the script runner) ask for their logger only when they have
something to say. Entry points (boot, the CLI) may :func:`request` a level; the
``codesuture`` logger then gets one stderr handler the first time a logger is used.
"""

from __future__ import annotations


_requested: int | None = None
_applied = False


def request(level: int) -> None:
    """Ask for CodeSuture's log lines on stderr at *level* (a ``logging`` level)."""
    global _requested, _applied
    _requested, _applied = level, False


def logger(name: str) -> Any:
    """``logging.getLogger(name)``, configuring the requested handler on first use."""
    import logging

    global _applied
    if _requested is not None and not _applied:
        _applied = True
        root = logging.getLogger("codesuture")
        if not root.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("codesuture: %(levelname)s %(message)s"))
            root.addHandler(handler)
            root.propagate = False
        root.setLevel(_requested)
    return logging.getLogger(name)
