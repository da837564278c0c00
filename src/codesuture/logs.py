"""Lazy logging for the boot path.

Importing :mod:`logging` costs several milliseconds, so modules on the healthy path
(boot, the finder, the script runner) ask for their logger only when they have
something to say. Entry points (boot, the CLI) may :func:`request` a level; the
``codesuture`` logger then gets one stderr handler the first time a logger is used.
"""

_requested: int | None = None
_applied = False


def request(level: int) -> None:
    """Ask for CodeSuture's log lines on stderr at *level* (a ``logging`` level)."""
    global _requested, _applied
    _requested, _applied = level, False


def _wanted(level: int) -> bool:
    """Whether a record at *level* could be shown: an entry point asked for it, or the
    program imported logging itself (then its configuration decides)."""
    import sys

    return "logging" in sys.modules or (_requested is not None and _requested <= level)


def _real(name: str) -> "object":
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


class LazyLogger:
    """Stands in for ``logging.getLogger(name)``: imports :mod:`logging` on the first
    record that could be shown (warnings always; info and debug only when wanted)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        return _wanted(level) and _real(self.name).isEnabledFor(level)  # type: ignore[attr-defined]

    def debug(self, *args: object, **kwargs: object) -> None:
        if _wanted(10):
            _real(self.name).debug(*args, **kwargs)  # type: ignore[attr-defined]

    def info(self, *args: object, **kwargs: object) -> None:
        if _wanted(20):
            _real(self.name).info(*args, **kwargs)  # type: ignore[attr-defined]

    def warning(self, *args: object, **kwargs: object) -> None:
        _real(self.name).warning(*args, **kwargs)  # type: ignore[attr-defined]

    def error(self, *args: object, **kwargs: object) -> None:
        _real(self.name).error(*args, **kwargs)  # type: ignore[attr-defined]


def logger(name: str) -> LazyLogger:
    """A logger for *name* that costs nothing until it has something to say."""
    return LazyLogger(name)
