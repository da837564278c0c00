"""Side effects of a run before its crash, noted from PEP 578 audit events.

A replay runs the unit of work again from its start. That is safe only when the part
that ran before the crash changed nothing outside the process: a line appended to a
ledger, a file removed, a payment request sent would happen twice. :func:`install`
adds an audit hook (:func:`sys.addaudithook`, PEP 578) that notes, while the run
goes on, the events that change something outside the process:

* ``open`` of a file for writing, appending, creating or truncating (by its mode
  string, or its ``os.open`` flags);
* ``os.remove`` (and ``unlink``), ``os.rename`` (and ``replace``), ``os.mkdir``,
  ``os.rmdir``, ``os.truncate``;
* ``socket.connect``, ``socket.sendto``;
* ``subprocess.Popen``, ``os.system``, ``os.posix_spawn``;
* ``sqlite3.connect`` (an in-memory database excepted).

A file the run created (it did not exist when opened) and removed again before the
crash cancels out: both events are dropped (``tempfile.gettempdir()`` probes the temp
folder that way, and a scratch file written and deleted changes nothing a replay would
repeat). Not noted: the interpreter's own bytecode cache (anything under ``__pycache__``, or
under ``sys.pycache_prefix`` when ``PYTHONPYCACHEPREFIX`` moves it there), ``os.devnull``, and CodeSuture's own folders and files (*ignore*: the overlay store,
the pending directory, the host state, the incidents file). Output to standard output
and error is not an audit event: :mod:`codesuture.runtime.rerun` keeps it apart.

Installed only by ``codesuture run``/``watch`` and dev-mode boot when a replay (or
watch's new start, told through :data:`REPORT_ENV`) may follow (never in prod: an audit hook cannot be removed, and every audited event pays
one call to it; the hook returns after one set lookup for events it does not note).
:func:`stop` ends the noting when the crash reaches the boundary, so what the heal
itself writes is never counted. The hook never raises (an exception from an audit
hook would fail the program's own operation).

No ``from __future__`` import: it is a module of its own to load, and this module is on
the start-up path of a dev run that may replay.
"""

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Iterable

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_PATH_EVENTS = {
    "os.remove": "removed", "os.rename": "renamed", "os.mkdir": "created the folder", "os.rmdir": "removed the folder",
    "os.truncate": "truncated",
}
_EVENTS = frozenset({"open", "socket.connect", "socket.sendto", "subprocess.Popen", "os.system", "os.posix_spawn",
                     "sqlite3.connect", *_PATH_EVENTS})
#: At most this many side effects are described (the first ones); :data:`COUNT` counts all.
_KEEP = 8

#: Set by ``codesuture watch`` for the program it runs: a file where the run's script
#: boundary writes why a new start must not follow (its side effects), or nothing.
REPORT_ENV = "CODESUTURE_EFFECTS_REPORT"

_ON = False
_INSTALLED = False
_IGNORED: "tuple[str, ...]" = ()
NOTED: "list[str]" = []
COUNT = 0
#: Every effect noted, in order: (the real path it touched, or "", its description).
_ALL: "list[tuple[str, str]]" = []
#: Real paths of the files this run created (they did not exist when opened).
_CREATED: "set[str]" = set()


def install(ignore: "Iterable[str | None]" = ()) -> None:
    """Start noting side effects (the audit hook is added once per process); paths
    under *ignore* (CodeSuture's own folders and files) and under ``sys.pycache_prefix``
    (the bytecode cache's own tree) are not side effects."""
    global _ON, _INSTALLED, _IGNORED, COUNT
    _IGNORED = tuple(os.path.realpath(p) for p in (*ignore, sys.pycache_prefix) if p)
    NOTED.clear()
    _ALL.clear()
    _CREATED.clear()
    COUNT = 0
    _ON = True
    if not _INSTALLED:
        _INSTALLED = True
        sys.addaudithook(_hook)


def stop() -> "list[str]":
    """Stop noting (the crash reached the boundary); returns what was noted, in order
    (at most 8 descriptions such as ``written ledger.txt``)."""
    global _ON
    _ON = False
    return list(NOTED)


def active() -> bool:
    return _ON


def describe(noted: "list[str]") -> str:
    """``the run had already written ledger.txt`` (and how many more)."""
    if not noted:
        return ""
    more = COUNT - 1
    return f"the run had already {noted[0]}" + (f" (and {more} more side effect{'s' if more != 1 else ''})" if more > 0 else "")


def tell(path: str, why: str) -> None:
    """Write *why* (one line, maybe empty) to *path* for ``codesuture watch``. Never raises."""
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(why)
    except OSError:
        pass


def _hook(event: str, args: "tuple[object, ...]") -> None:
    if not _ON or event not in _EVENTS:
        return
    try:
        what = _describe(event, args)
        if not what:
            return
        where = _real(args[0]) if event == "open" or event in _PATH_EVENTS else ""
        if event == "open" and where and not os.path.lexists(where):
            _CREATED.add(where)
        elif event == "os.remove" and where in _CREATED:
            _CREATED.discard(where)  # created and removed again by the run: no trace left
            _ALL[:] = [e for e in _ALL if e[0] != where]
            _publish()
            return
        _ALL.append((where, what))
        _publish()
    except Exception:  # noqa: BLE001 - an audit hook must never fail the program's operation
        return


def _real(path: object) -> str:
    if isinstance(path, (str, bytes, os.PathLike)):
        return os.path.realpath(os.fsdecode(path))
    return ""


def _publish() -> None:
    global COUNT
    COUNT = len(_ALL)
    NOTED[:] = [what for _, what in _ALL[:_KEEP]]


def _describe(event: str, args: "tuple[object, ...]") -> "str | None":
    if event == "open":
        path, mode, flags = args[0], args[1], args[2] if len(args) > 2 else 0
        if isinstance(flags, int) and flags:
            writes = bool(flags & _WRITE_FLAGS)
        else:
            writes = isinstance(mode, str) and any(c in mode for c in "wax+")
        return f"written {_name(path)}" if writes and _counts(path) else None
    if event in _PATH_EVENTS:
        return f"{_PATH_EVENTS[event]} {_name(args[0])}" if _counts(args[0]) else None
    if event in ("socket.connect", "socket.sendto"):
        address = args[1] if len(args) > 1 else None
        where = ":".join(str(a) for a in address[:2]) if isinstance(address, tuple) else str(address)
        return f"{'connected to' if event == 'socket.connect' else 'sent to'} {where}"
    if event == "sqlite3.connect":
        database = args[0] if args else ""
        if database in (":memory:", "", b":memory:", b""):
            return None
        return f"opened the sqlite3 database {_name(database)}" if _counts(database) else None
    program = args[0] if args else "?"
    if isinstance(program, (list, tuple)):
        program = program[0] if program else "?"
    return f"started a subprocess ({_name(program) if isinstance(program, (str, bytes, os.PathLike)) else program})"


def _counts(path: object) -> bool:
    """Whether a write to *path* is the program's side effect."""
    if isinstance(path, int):
        return False  # a file descriptor the program already had
    if not isinstance(path, (str, bytes, os.PathLike)):
        return True
    text = os.fsdecode(path)
    if "__pycache__" in text or text == os.devnull:
        return False
    if _IGNORED:
        real = os.path.realpath(text)
        if any(real == p or real.startswith(p + os.sep) for p in _IGNORED):
            return False
    return True


def _name(path: object) -> str:
    """*path* relative to the current folder when it is inside it, else as given."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        return str(path)
    text = os.fsdecode(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:
        return text
    return rel if not rel.startswith("..") else text


__all__ = ["install", "stop", "active", "describe", "tell", "NOTED", "REPORT_ENV"]
