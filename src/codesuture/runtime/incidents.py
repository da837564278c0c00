"""Incidents: what CodeSuture saw, did and refused, one JSON line each; fingerprints
of crash sites; and the registry that reapplies a known fingerprint's guard.

**Incidents.** Every crash that reaches the healer, every heal, every refusal (the
program handles the exception itself, the default would decide control flow, no
diagnosis, prod report-only, dry run, an error), every guard firing (rate-limited per
site: the first, then at most one line per :data:`GUARD_INTERVAL` seconds, carrying how
many firings it stands for; those held back are flushed at exit, so the ``firings`` of
a site add up exactly) and every live rollback is one JSON object on one line::

    {"time": "2025-01-02T03:04:05Z", "kind": "guard_fired", "fingerprint": "3f9c...",
     "site": "app.users:12 get_name", "guard": "key_guard", "exception": "KeyError",
     "pid": 4242, "firings": 17, ...}

``kind`` is one of :data:`KINDS`; ``exception`` is the type and a redacted message
(raw only with ``record_messages``, as in patch records; a guard firing has no message:
no exception was made). Lines go to the file the ``incidents`` setting names
(``--incidents``, ``CODESUTURE_INCIDENTS``; ``-`` for standard error; default off),
opened ``O_APPEND`` and written with one ``write`` per line, so several processes can
share one file; when it reaches ``incidents_max_bytes`` it is renamed to ``<file>.1``
(one rotation, under ``flock``, so two processes never rotate twice) and every writer
reopens the new file. ``codesuture incidents FILE`` reads them back
(:mod:`codesuture.review.incidents`).

The same events feed Prometheus counters and OpenTelemetry span events when those
libraries are installed (:mod:`codesuture.runtime.metrics`; setting ``metrics``), and
shadow mode (:mod:`codesuture.runtime.shadow`; setting ``shadow``).

Nothing here runs on the healthy path: the healer calls it when a crash reaches it, the
guards (through :mod:`codesuture.runtime.events`) when they fire. Nothing here raises.

**Fingerprints** (:func:`fingerprint`): a hash of the instruction window around a crash
site, ``±``:data:`WINDOW` instructions of the function's original code, normalized so
that offsets, line numbers, jump targets and the differences between Python 3.11, 3.12
and 3.13 that do not change what the code does (``PRECALL``, ``LOAD_METHOD`` against
``LOAD_ATTR``, superinstructions, ``RETURN_CONST``, ``KW_NAMES``/``CALL_KW``, formatted
values, jump directions...) do not change it. Two textually identical functions, in two
modules or under two names, have one fingerprint at the same site. Each patch records
its site's fingerprint in ``evidence["fingerprint"]``.

**Registry** (:class:`Registry`): fingerprints (with the exception's kind) of the
records in the store and the pending directory, read lazily on the heal path; a crash
whose fingerprint is known gets that record's guard spec without a new diagnosis (the
EAFP and control-flow checks, the synthesis and the diff gate still run).
"""

from __future__ import annotations

import os
import sys
import threading
import time

from codesuture.logs import logger

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from types import CodeType
    from typing import Any, Callable, Iterable

log = logger("codesuture.incidents")

#: The kinds of incident.
KINDS = ("crash", "heal", "refusal", "guard_fired", "rollback", "shadow")
#: Why a crash was not healed (``reason`` of a ``refusal``).
REASONS = ("eafp", "control_flow", "diagnosis", "report_only", "dry_run", "error", "internal", "interpreter")
#: Seconds between two ``guard_fired`` incidents of one site (the first is always written).
GUARD_INTERVAL = 1.0
#: Default size at which the incidents file is rotated (``incidents_max_bytes``).
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: Longest string field written (longer ones are cut, with ``...``).
MAX_FIELD = 512
#: Instructions on each side of the crash instruction that make a fingerprint.
WINDOW = 3
#: Bumped whenever the normalization changes (old fingerprints then stop matching).
FINGERPRINT_VERSION = 1


# ------------------------------------------------------------------ settings


class Config:
    """What to do with events: ``path`` (a file, ``-`` for standard error, None: no
    incidents written), ``max_bytes`` (rotation size; 0: never rotate),
    ``record_messages``, ``shadow``, ``metrics``."""

    __slots__ = ("path", "max_bytes", "record_messages", "shadow", "metrics")

    def __init__(self, path: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES, record_messages: bool = False,
                 shadow: bool = False, metrics: bool = True) -> None:
        self.path, self.max_bytes, self.record_messages = path, max_bytes, record_messages
        self.shadow, self.metrics = shadow, metrics

    @classmethod
    def from_settings(cls, s: Any) -> "Config":
        return cls(s.incidents, s.incidents_max_bytes, s.record_messages, s.shadow, s.metrics)

    def __repr__(self) -> str:
        return (f"Config(path={self.path!r}, max_bytes={self.max_bytes}, record_messages={self.record_messages}, "
                f"shadow={self.shadow}, metrics={self.metrics})")


_CONFIG: list[Config] = []
_LOCK = threading.Lock()


def configure(settings: Any = None, **values: Any) -> Config:
    """Use *settings* (:class:`codesuture.settings.Settings`) or the *values* given
    (:class:`Config`'s fields) from now on, in this process; with neither, read the
    settings again (from ``CODESUTURE_*``, which boot exports) on the next event."""
    global _SINK
    with _LOCK:
        _CONFIG.clear()
        cfg = Config.from_settings(settings) if settings is not None else Config(**values) if values else None
        if cfg is not None:
            _CONFIG.append(cfg)
        if _SINK is not None:
            _SINK.close()
            _SINK = None
        _LAST.clear()
        _SINCE.clear()
    events = sys.modules.get("codesuture.runtime.events")
    if events is not None:
        events.reset_observer()
    return cfg if cfg is not None else config()


def config() -> Config:
    """The configuration in use: set by :func:`configure`, else read once from the
    settings (``CODESUTURE_*`` variables and the app's config file). Invalid settings
    turn incidents, metrics and shadow mode off, with one warning."""
    if _CONFIG:
        return _CONFIG[0]
    with _LOCK:
        if not _CONFIG:
            try:
                from codesuture import settings

                _CONFIG.append(Config.from_settings(settings.load(environ=os.environ)))
            except Exception as exc:  # noqa: BLE001 - a bad setting turns this off, never the program
                log.warning("incidents, metrics and shadow mode are off: %s", exc)
                _CONFIG.append(Config(metrics=False))
        return _CONFIG[0]


# ------------------------------------------------------------------ writing


class _Sink:
    """Appends lines to the incidents file (or standard error), rotating it at
    *max_bytes*. One ``os.write`` per line on an ``O_APPEND`` descriptor: lines from
    several processes never interleave. Before each write the descriptor is checked to
    still be the file at *path* (another process may have rotated it)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.fd: int | None = None
        self.ident: tuple[int, int] | None = None
        self.lock = threading.Lock()
        self.failed = False

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = self.ident = None

    def _open(self) -> int:
        if self.fd is not None:
            try:
                st = os.stat(self.path)
                current: tuple[int, int] | None = (st.st_dev, st.st_ino)
            except OSError:
                current = None
            if current == self.ident:
                return self.fd
            self.close()
        import stat

        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(self.path, flags, 0o644)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(f"{self.path} is not a regular file")
        self.fd, self.ident = fd, (st.st_dev, st.st_ino)
        return fd

    def write(self, line: bytes) -> None:
        if self.path == "-":
            stream = sys.stderr
            if stream is not None:
                stream.write(line.decode("utf-8"))
                stream.flush()
            return
        with self.lock:
            try:
                fd = self._open()
                os.write(fd, line)
                if self.max_bytes and os.fstat(fd).st_size >= self.max_bytes:
                    self._rotate(fd)
                self.failed = False
            except OSError as exc:
                if not self.failed:
                    self.failed = True
                    log.warning("incidents not written to %s: %s", self.path, exc.strerror or exc)

    def _rotate(self, fd: int) -> None:
        """Rename the file to ``<path>.1`` if it still is the one *fd* writes to and is
        still over the size: the ``flock`` on it makes that check and the rename one
        step across processes (a second process waiting for the lock finds a new file)."""
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            st, mine = os.stat(self.path), os.fstat(fd)
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino) and st.st_size >= self.max_bytes:
                os.replace(self.path, self.path + ".1")
        except OSError:
            pass
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self.close()


_SINK: _Sink | None = None


def _sink(cfg: Config) -> _Sink:
    global _SINK
    sink = _SINK
    if sink is None or sink.path != cfg.path:
        with _LOCK:
            if _SINK is None or _SINK.path != cfg.path:
                _SINK = _Sink(cfg.path or "-", cfg.max_bytes)
            sink = _SINK
    return sink


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_FIELD:
        return value[: MAX_FIELD - 3] + "..."
    return value


def line(event: dict[str, Any]) -> bytes:
    """*event* as one JSON line (string fields cut at :data:`MAX_FIELD`)."""
    import json

    return (json.dumps({k: _cut(v) for k, v in event.items()}, separators=(",", ":"), default=str) + "\n").encode()


def new(kind: str, *, site: str = "", guard: str = "", exception: str = "", fingerprint: str = "",
        **fields: Any) -> dict[str, Any]:
    """An incident of *kind*: the common fields, then *fields*."""
    from codesuture.util.clock import iso_utc

    event: dict[str, Any] = {"time": iso_utc(time.time()), "kind": kind, "fingerprint": fingerprint, "site": site,
                             "guard": guard, "exception": exception, "pid": os.getpid()}
    event.update(fields)
    return event


def emit(event: dict[str, Any]) -> None:
    """Record *event*: a line in the incidents file, the metrics and span events.
    Never raises."""
    try:
        cfg = config()
        if cfg.metrics:
            metrics = _metrics()
            if metrics is not None:
                metrics.on_incident(event)
        if cfg.path:
            _sink(cfg).write(line(event))
    except Exception as exc:  # noqa: BLE001 - contained (rule 7)
        log.debug("incident not recorded: %r", exc)


def record(kind: str, **fields: Any) -> None:
    """Record an incident of *kind* with *fields* (see :func:`new`). Never raises."""
    try:
        emit(new(kind, **fields))
    except Exception:  # noqa: BLE001 - contained (rule 7)
        pass


def site_text(module: str, line: int | None, qualname: str) -> str:
    """``"module:line qualname"``, the ``site`` of an incident."""
    return f"{module}:{line if line is not None else '?'} {qualname}"


def exception_site(exc: BaseException) -> tuple[str, str]:
    """``(site, fingerprint)`` of the innermost traceback frame of *exc* outside
    CodeSuture, for incidents about crashes that never reached a crash site."""
    try:
        tb = exc.__traceback__
        found = None
        while tb is not None:
            if not tb.tb_frame.f_code.co_filename.startswith(_PKG_DIR):
                found = tb
            tb = tb.tb_next
        if found is None:
            return "", ""
        code = found.tb_frame.f_code
        module = str(found.tb_frame.f_globals.get("__name__", "?"))
        return site_text(module, found.tb_lineno, code.co_qualname), fingerprint(code, found.tb_lasti)
    except Exception:  # noqa: BLE001 - best effort
        return "", ""


_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


# ------------------------------------------------------------------ guard firings


#: site -> monotonic time of its last guard_fired incident.
_LAST: dict[str, float] = {}
#: site -> firings since its last guard_fired incident.
_SINCE: dict[str, int] = {}
#: guard site ("<guard>@<module>:<line>") -> the fingerprint its record carries.
_SITE_FINGERPRINTS: dict[str, str] = {}
_LOADED_SEEN = [-1]


def note_record(record: Any) -> None:
    """Remember the fingerprint of *record* (a patch made or adopted in this process)
    for the incidents its guard writes when it fires."""
    fp = (record.evidence or {}).get("fingerprint")
    if fp:
        _SITE_FINGERPRINTS[f"{record.guard.guard}@{record.module}:{record.line}"] = str(fp)


def site_fingerprint(site: str) -> str:
    """The fingerprint recorded for guard *site* (``"<guard>@<module>:<line>"``), or ``""``."""
    fp = _SITE_FINGERPRINTS.get(site)
    if fp is not None:
        return fp
    resolve = sys.modules.get("codesuture.loader.resolve")  # overlays loaded at import
    loaded = getattr(resolve, "LOADED", None)
    if resolve is not None and loaded is not None and len(loaded) != _LOADED_SEEN[0]:
        _LOADED_SEEN[0] = len(loaded)
        for key in list(loaded):
            for r in resolve.loaded_patches(key):
                note_record(r)
        fp = _SITE_FINGERPRINTS.get(site)
    return fp or ""


#: site -> (exception, qualified name) of its firings held back since its last line.
_HELD: dict[str, tuple[str, str]] = {}
_GUARD_LOCK = threading.Lock()
_FLUSH_HOOKED = [False]


def _guard_incident(site: str, exc: str, frame: Any) -> None:
    """Write a ``guard_fired`` incident for the first firing of *site* and then at most
    one per :data:`GUARD_INTERVAL` seconds, each with the firings it stands for. The
    rate limit applies to lines, never to the count: firings held back are written by
    the next line of the site or, at the latest, when the process exits
    (:func:`flush`), so the ``firings`` of a site's lines add up to its firings exactly,
    across threads too."""
    now = time.monotonic()
    with _GUARD_LOCK:
        since = _SINCE.get(site, 0) + 1
        last = _LAST.get(site)
        if last is not None and now - last < GUARD_INTERVAL:
            _SINCE[site] = since
            _HELD[site] = (exc, frame.f_code.co_qualname)
            hook = not _FLUSH_HOOKED[0]
            _FLUSH_HOOKED[0] = True
        else:
            _LAST[site], _SINCE[site] = now, 0
            _HELD.pop(site, None)
            hook = False
    if hook:
        _hook_flush()
    if last is not None and now - last < GUARD_INTERVAL:
        return
    _emit_fired(site, exc, frame.f_code.co_qualname, since)


def _emit_fired(site: str, exc: str, qualname: str, firings: int) -> None:
    guard, _, where = site.partition("@")
    counts = getattr(sys.modules.get("codesuture.runtime.events"), "COUNTS", {})
    emit(new("guard_fired", site=f"{where} {qualname}", guard=guard, exception=exc,
             fingerprint=site_fingerprint(site), firings=firings, total=counts.get(site, firings)))


def flush() -> int:
    """Write one ``guard_fired`` line per site for the firings held back by the rate
    limit since its last line. Runs at exit (registered on the first held-back firing:
    with :mod:`atexit`, and at threading shutdown, which also runs in ``multiprocessing``
    children that end with ``os._exit``); safe to call any time. Returns the lines
    written. Never raises."""
    try:
        with _GUARD_LOCK:
            held = [(site, n, *_HELD.get(site, ("", "?"))) for site, n in _SINCE.items() if n > 0]
            for site, *_ in held:
                _SINCE[site] = 0
                _LAST[site] = time.monotonic()
        for site, n, exc, qualname in held:
            _emit_fired(site, exc, qualname, n)
        return len(held)
    except Exception:  # noqa: BLE001 - contained (rule 7), even at shutdown
        return 0


def _hook_flush() -> None:
    try:
        import atexit

        atexit.register(flush)
        register = getattr(threading, "_register_atexit", None)  # before non-daemon threads are joined
        if register is not None:
            try:
                register(flush)
            except RuntimeError:  # already shutting down: atexit still runs
                pass
        os.register_at_fork(after_in_child=_forget_held)
    except Exception as exc:  # noqa: BLE001 - contained (rule 7)
        log.debug("guard firings held back will not be flushed at exit: %r", exc)


def _forget_held() -> None:
    """A forked child: the firings held back are its parent's (the parent writes them)."""
    global _GUARD_LOCK
    _GUARD_LOCK = threading.Lock()
    _SINCE.clear()
    _HELD.clear()


def _metrics() -> Any:
    """:mod:`codesuture.runtime.metrics` when the program uses ``prometheus_client`` or
    OpenTelemetry (it imported them, or :mod:`codesuture.runtime.metrics` to mount the
    counters), else None. CodeSuture never imports them on its own: importing
    ``prometheus_client`` costs tens of milliseconds, which a first heal (inside an
    event loop too) must not pay for counters nobody exports."""
    modules = sys.modules
    found = modules.get("codesuture.runtime.metrics")
    if found is not None:
        return found
    if "prometheus_client" not in modules and "opentelemetry.trace" not in modules:
        return None
    from codesuture.runtime import metrics

    return metrics


def guard_observer() -> Callable[[str, str, Any], None] | None:
    """What :mod:`codesuture.runtime.events` calls on each guard firing, as the settings
    say: the metrics, the incidents file, both, or None. Called on the first firing
    (shadow mode is hooked in by :mod:`~codesuture.runtime.events` itself)."""
    cfg = config()
    parts: list[Callable[[str, str, Any], None]] = []
    if cfg.metrics:
        metrics = _metrics()
        if metrics is not None:
            parts.append(metrics.on_guard)
    if cfg.path:
        parts.append(_guard_incident)
    if len(parts) < 2:
        return parts[0] if parts else None
    first, second = parts

    def observe(site: str, exc: str, frame: Any) -> None:
        first(site, exc, frame)
        second(site, exc, frame)

    return observe


# ------------------------------------------------------------------ fingerprints

#: Instructions that carry nothing a fingerprint should see (interpreter bookkeeping,
#: or instructions only some versions emit for the same source).
_DROP = frozenset({
    "CACHE", "EXTENDED_ARG", "NOP", "RESUME", "PRECALL", "KW_NAMES", "PUSH_NULL", "TO_BOOL", "COPY_FREE_VARS",
    "MAKE_CELL", "CONVERT_VALUE", "END_FOR", "SET_FUNCTION_ATTRIBUTE", "NOT_TAKEN", "RETURN_GENERATOR",
})
#: Names that differ between versions for the same operation.
_RENAME = {
    "LOAD_METHOD": "LOAD_ATTR", "LOAD_FAST_CHECK": "LOAD_FAST", "LOAD_FAST_AND_CLEAR": "LOAD_FAST",
    "LOAD_FAST_BORROW": "LOAD_FAST", "CALL_KW": "CALL", "FORMAT_VALUE": "FORMAT", "FORMAT_SIMPLE": "FORMAT",
    "FORMAT_WITH_SPEC": "FORMAT", "JUMP_FORWARD": "JUMP", "JUMP_BACKWARD": "JUMP",
    "JUMP_BACKWARD_NO_INTERRUPT": "JUMP", "JUMP_NO_INTERRUPT": "JUMP",
    "POP_JUMP_FORWARD_IF_FALSE": "POP_JUMP_IF_FALSE", "POP_JUMP_BACKWARD_IF_FALSE": "POP_JUMP_IF_FALSE",
    "POP_JUMP_FORWARD_IF_TRUE": "POP_JUMP_IF_TRUE", "POP_JUMP_BACKWARD_IF_TRUE": "POP_JUMP_IF_TRUE",
    "POP_JUMP_FORWARD_IF_NONE": "POP_JUMP_IF_NONE", "POP_JUMP_BACKWARD_IF_NONE": "POP_JUMP_IF_NONE",
    "POP_JUMP_FORWARD_IF_NOT_NONE": "POP_JUMP_IF_NOT_NONE", "POP_JUMP_BACKWARD_IF_NOT_NONE": "POP_JUMP_IF_NOT_NONE",
}
#: Superinstructions (3.13) -> the instructions they stand for.
_SPLIT = {
    "LOAD_FAST_LOAD_FAST": ("LOAD_FAST", "LOAD_FAST"), "STORE_FAST_STORE_FAST": ("STORE_FAST", "STORE_FAST"),
    "STORE_FAST_LOAD_FAST": ("STORE_FAST", "LOAD_FAST"), "LOAD_FAST_BORROW_LOAD_FAST_BORROW": ("LOAD_FAST", "LOAD_FAST"),
}
#: 3.11's short-circuit jumps -> the conditional jump of 3.12+ (between COPY 1 and POP_TOP).
_OR_POP = {"JUMP_IF_FALSE_OR_POP": "POP_JUMP_IF_FALSE", "JUMP_IF_TRUE_OR_POP": "POP_JUMP_IF_TRUE"}
#: Instructions whose argument is not part of what the code does (flags that moved
#: between versions, counts of a build step some versions split).
_NO_ARG = frozenset({"FORMAT", "MAKE_FUNCTION", "RAISE_VARARGS", "RERAISE", "RETURN_VALUE", "POP_TOP"})


def _const(value: object) -> str:
    import types

    if isinstance(value, types.CodeType):
        return "<code>"
    if isinstance(value, (frozenset, set)):
        return "{" + ",".join(sorted(_const(v) for v in value)) + "}"
    if isinstance(value, tuple):
        return "(" + ",".join(_const(v) for v in value) + ")"
    text = repr(value)
    if len(text) > 64:
        import hashlib

        return f"{type(value).__name__}#{hashlib.sha256(text.encode('utf-8', 'replace')).hexdigest()[:12]}"
    return text


def _jumps() -> frozenset[int]:
    import dis

    return frozenset(set(dis.hasjrel) | set(dis.hasjabs) | set(getattr(dis, "hasjump", ())))


def normalized(code: CodeType, offset: int) -> tuple[list[str], int]:
    """``(tokens, index of the instruction at *offset*)``: *code*'s instructions as
    version-neutral ``opname arg`` strings (see the module docstring); index -1 when
    *offset* names no instruction."""
    import dis

    jumps = _jumps()
    tokens: list[str] = []
    at = -1
    after_end_for = False
    for ins in dis.get_instructions(code):
        name = ins.opname
        here = ins.offset == offset
        if name in _SPLIT and isinstance(ins.argval, tuple) and len(ins.argval) == 2:
            for part, arg in zip(_SPLIT[name], ins.argval):
                tokens.append(f"{part} {arg}")
            if here:
                at = len(tokens) - 1
            continue
        if name == "POP_TOP" and after_end_for:
            after_end_for = False
            continue  # 3.13 ends a loop with END_FOR, POP_TOP; 3.12 with END_FOR alone (3.11: nothing)
        after_end_for = name == "END_FOR"
        if name in _DROP and not here:
            continue
        if name in _OR_POP:
            tokens += ["COPY 1", _OR_POP[name], "POP_TOP"]  # 3.11's short circuit, as 3.12+ spells it
            if here:
                at = len(tokens) - 2
            continue
        if name == "RETURN_CONST":
            tokens.append(f"LOAD_CONST {_const(ins.argval)}")
            name, arg = "RETURN_VALUE", ""
        elif name in ("BINARY_SUBSCR", "STORE_SUBSCR") and tokens and tokens[-1] == "BUILD_SLICE 2":
            tokens.pop()  # 3.11's x[a:b]; 3.12+ has one instruction for it
            name, arg = "BINARY_SLICE" if name == "BINARY_SUBSCR" else "STORE_SLICE", ""
        elif name == "CALL_KW" and tokens and tokens[-1].startswith("LOAD_CONST ("):
            tokens.pop()  # 3.13 loads the keyword names as a constant; 3.11/3.12 had KW_NAMES
            name, arg = "CALL", str(ins.arg)
        else:
            name = _RENAME.get(name, name)
            if ins.opcode in jumps or name in _NO_ARG:
                arg = ""
            elif name == "LOAD_CONST":
                arg = _const(ins.argval)
            elif name in ("BINARY_OP", "COMPARE_OP"):
                arg = ins.argrepr.replace("bool(", "").rstrip(")") if name == "COMPARE_OP" else ins.argrepr
            elif isinstance(ins.argval, (str, int)) and not isinstance(ins.argval, bool):
                arg = str(ins.argval)
            elif ins.argval is None:
                arg = ""
            else:
                arg = _const(ins.argval)
        if here:
            at = len(tokens)
        tokens.append(f"{name} {arg}".rstrip())
    return tokens, at


def fingerprint(code: CodeType, offset: int, window: int = WINDOW) -> str:
    """The fingerprint of the crash site at *offset* in *code* (16 hex digits), or ``""``
    when it cannot be made. Never raises."""
    try:
        import hashlib

        tokens, at = normalized(code, offset)
        if at < 0:
            return ""
        lo = max(0, at - window)
        part = tokens[lo:at] + [">" + tokens[at]] + tokens[at + 1: at + 1 + window]
        text = f"codesuture-fingerprint/{FINGERPRINT_VERSION}\n" + "\n".join(part)
        return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]
    except Exception:  # noqa: BLE001 - a fingerprint is never worth a failure
        return ""


def exception_kind(exc: BaseException | str) -> str:
    """What must match, besides the fingerprint, for a known guard to answer a crash:
    the exception type and, for ``TypeError`` and ``AttributeError``, whether its
    message is about None (a ``TypeError`` on None wants another guard than any other
    ``TypeError``). *exc* is an exception or a
    record's ``exception`` text (``"Type: message"``)."""
    if isinstance(exc, BaseException):
        name, message = type(exc).__name__, str(exc)
    else:
        name, _, message = str(exc).partition(":")
    name = name.strip()
    return name + "/None" if name in ("TypeError", "AttributeError") and "NoneType" in message else name


# ------------------------------------------------------------------ registry


class Registry:
    """Known fingerprints: ``(fingerprint, exception kind)`` -> the first patch record
    carrying them, from the records in *locations* (overlay folders or bundles; read on
    the first :meth:`lookup` and again when a folder changed) and those :meth:`add`-ed
    (patches made in this process)."""

    def __init__(self, locations: Iterable[str | None]) -> None:
        self.locations = [p for p in locations if p]
        self._stored: dict[tuple[str, str], Any] = {}
        self._added: dict[tuple[str, str], Any] = {}
        self._stamp: tuple[object, ...] | None = None

    @staticmethod
    def key(record: Any) -> tuple[str, str] | None:
        fp = (record.evidence or {}).get("fingerprint")
        return (str(fp), exception_kind(record.exception)) if fp else None

    def add(self, record: Any) -> None:
        key = self.key(record)
        if key is not None:
            self._added.setdefault(key, record)

    def discard(self, record: Any) -> None:
        """Forget *record* when this process added it (a heal taken back)."""
        key = self.key(record)
        if key is not None and self._added.get(key) is record:
            del self._added[key]

    def lookup(self, fp: str, exc: BaseException | str) -> Any:
        """The record whose guard answers a crash of *exc* at a site with fingerprint
        *fp*, or None."""
        if not fp:
            return None
        key = (fp, exception_kind(exc))
        found = self._added.get(key)
        if found is not None:
            return found
        self._refresh()
        return self._stored.get(key)

    def __len__(self) -> int:
        self._refresh()
        return len(set(self._stored) | set(self._added))

    def _stamp_now(self) -> tuple[object, ...]:
        out: list[object] = []
        for p in self.locations:
            try:
                st = os.stat(p)
                out.append((p, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((p, None))
        return tuple(out)

    def _refresh(self) -> None:
        stamp = self._stamp_now()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        stored: dict[tuple[str, str], Any] = {}
        for location in self.locations:
            for record in records_in(location):
                if (record.evidence or {}).get("review") == "auto-rolled-back":
                    continue  # taken out: never a known fix (runtime/governance.py, no flapping)
                key = self.key(record)
                if key is not None:
                    stored.setdefault(key, record)
        self._stored = stored


def records_in(location: str) -> list[Any]:
    """Every patch record in the overlay store at *location* (unreadable members skipped)."""
    if not os.path.exists(location):
        return []
    from codesuture.errors import CodeSutureError
    from codesuture.overlay.model import OverlayMeta
    from codesuture.overlay.names import META_SUFFIX

    out: list[Any] = []
    try:
        if os.path.isdir(location):
            from codesuture.store.directory import DirectoryStore

            store: Any = DirectoryStore(location, budget=None)
        else:
            from codesuture.store.kinds import open_store

            store = open_store(location)
        for entries in store.index().values():
            for entry in entries:
                try:
                    raw = entry.read(META_SUFFIX)
                    if raw is not None:
                        out.extend(OverlayMeta.loads(raw, entry.path(META_SUFFIX)).patches)
                except CodeSutureError:
                    continue
    except CodeSutureError as exc:
        log.debug("fingerprint registry: %s not read: %s", location, exc)
    return out


__all__ = [
    "KINDS", "REASONS", "Config", "configure", "config", "record", "emit", "new", "line", "site_text",
    "exception_site", "note_record", "site_fingerprint", "guard_observer", "fingerprint", "normalized", "exception_kind", "Registry", "records_in",
    "flush",
]
