"""CodeSuture's logging, the application's way, and lazy for the boot path.

Every record goes through ``logging.getLogger("codesuture")`` and its children (one
per layer: ``codesuture.heal``, ``codesuture.loader``, ``codesuture.boot``...), and
propagates to the application's own handlers: an app that called
``logging.basicConfig(format=...)`` gets CodeSuture's lines in its format, at its
levels. Entry points (boot, ``codesuture run``, the start-up hook, the CLI) may
:func:`request` a level; the ``codesuture`` logger then gets one stderr handler of its
own that prints only while the application has configured no handler (the idea of
``logging.lastResort``), at the requested level (``-q``: errors only, ``-v``: info,
``-vv``: debug). Propagation is never turned off.

Importing :mod:`logging` costs several milliseconds, so modules on the healthy path
(boot, the finder, the script runner) ask for their logger only when they have
something to say.

Every message is formatted here and passed through :func:`escape` before any handler
sees it: names, paths and key ids read from a store, a bundle or an envelope cannot
forge or split a log line (docs/threat-model.md).
"""

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    import logging
    from typing import Any

#: The format of CodeSuture's own stderr handler.
FORMAT = "codesuture: %(levelname)s %(message)s"

_requested: int | None = None
_applied = False


def level_for(verbose: int) -> int:
    """The ``logging`` level of a ``-q`` (-1) / default (0) / ``-v`` (1) / ``-vv`` (2) count."""
    return 40 if verbose < 0 else 30 if verbose == 0 else 20 if verbose == 1 else 10


def request(level: int) -> None:
    """Ask for CodeSuture's log lines on stderr at *level* (a ``logging`` level) while
    the application has no handler of its own."""
    global _requested, _applied
    _requested, _applied = level, False
    import sys

    if "logging" in sys.modules:  # already configured once: apply the new level now
        _real("codesuture")


def _wanted(level: int) -> bool:
    """Whether a record at *level* could be shown: an entry point asked for it, or the
    program imported logging itself (then its configuration decides)."""
    import sys

    return "logging" in sys.modules or (_requested is not None and _requested <= level)


def _fallback_class() -> type:
    import logging

    class Fallback(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
        """CodeSuture's stderr handler: silent as soon as the application configured a
        handler of its own (on the root logger or on ``codesuture``), which then gets
        every record by propagation."""

        def handle(self, record: logging.LogRecord) -> bool:
            if logging.getLogger().handlers or any(h is not self for h in logging.getLogger("codesuture").handlers):
                return False
            return bool(super().handle(record))

        def emit(self, record: logging.LogRecord) -> None:
            import sys

            self.stream = sys.stderr  # the current stderr, as logging.lastResort does
            super().emit(record)

    return Fallback


def _real(name: str) -> "logging.Logger":
    import logging

    global _applied
    if _requested is not None and not _applied:
        _applied = True
        root = logging.getLogger("codesuture")
        mine = [h for h in root.handlers if getattr(h, "_codesuture", False)]
        if not mine:
            handler = _fallback_class()()
            handler._codesuture = True
            handler.setFormatter(logging.Formatter(FORMAT))
            root.addHandler(handler)
            mine = [handler]
        mine[0].setLevel(_requested)
        # -v/-vv lower the logger's own threshold so that info/debug records exist at all;
        # otherwise the application's level decides (the logger stays NOTSET).
        root.setLevel(_requested if _requested < logging.WARNING else logging.NOTSET)
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
        return _wanted(level) and _real(self.name).isEnabledFor(level)

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


def logger(name: str) -> "LazyLogger":
    """A logger for *name* (a child of ``codesuture``) that costs nothing until it has
    something to say."""
    return LazyLogger(name)
