"""Lazy logging for the boot path.

Importing :mod:`logging` costs several milliseconds, so modules on the healthy path
(boot, the finder, the script runner) ask for their logger only when they have
something to say. Entry points (boot, the CLI) may :func:`request` a level; the
``codesuture`` logger then gets one stderr handler the first time a logger is used.

Every message is formatted here and passed through :func:`escape` before any handler
sees it: names, paths and key ids read from a store, a bundle or an envelope cannot
forge or split a log line (docs/threat-model.md).
"""

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

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


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """*text* with every character that is not printable (``str.isprintable``: C0 and
    C1 controls, DEL, line and paragraph separators, bidirectional and other format
    characters, non-ASCII spaces) written as a Python escape (``\\n``, ``\\x1b``,
    ``\\u2028``): a name from a store, a bundle or an envelope can never start a
    line of its own, rewrite one or hide in one. Printable text is returned as is."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif c in _NAMED:
            out.append(_NAMED[c])
        else:
            n = ord(c)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return "".join(out)


def _safe(args: "tuple[object, ...]") -> "tuple[object, ...]":
    """The message of a logging call (format and arguments), formatted and passed
    through :func:`escape`: what reaches any handler is one line with no control
    characters, whatever the arguments (paths, names, key ids) held."""
    if not args:
        return args
    msg, rest = args[0], args[1:]
    try:
        values: object = rest
        if len(rest) == 1 and isinstance(rest[0], dict) and rest[0]:
            values = rest[0]  # logging's own rule for one mapping argument
        text = str(msg) % values if rest else str(msg)
    except Exception:  # noqa: BLE001 - a bad format: logging reports it as it would
        return args
    return (escape(text),)


class LazyLogger:
    """Stands in for ``logging.getLogger(name)``: imports :mod:`logging` on the first
    record that could be shown (warnings always; info and debug only when wanted)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        return _wanted(level) and _real(self.name).isEnabledFor(level)  # type: ignore[attr-defined]

    def _log(self, level: int, args: "tuple[object, ...]", kwargs: "dict[str, object]") -> None:
        real: Any = _real(self.name)
        if real.isEnabledFor(level):
            kwargs.setdefault("stacklevel", 3)  # the caller's line, not this module's
            real.log(level, *_safe(args), **kwargs)

    def debug(self, *args: object, **kwargs: object) -> None:
        if _wanted(10):
            self._log(10, args, kwargs)

    def info(self, *args: object, **kwargs: object) -> None:
        if _wanted(20):
            self._log(20, args, kwargs)

    def warning(self, *args: object, **kwargs: object) -> None:
        self._log(30, args, kwargs)

    def error(self, *args: object, **kwargs: object) -> None:
        self._log(40, args, kwargs)


def logger(name: str) -> LazyLogger:
    """A logger for *name* that costs nothing until it has something to say."""
    return LazyLogger(name)
