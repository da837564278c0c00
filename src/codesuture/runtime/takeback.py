"""The heal just made, as the next crash sees it: a *cascade* or a *take-back*.

A heal enables a replay of the unit of work. When the replay crashes again in the same
thread and unit of work (a request, a script run), after the new guard fired exactly
once, the new crash belongs to the same heal:

* if it is a TypeError or AttributeError on the very default the guard just yielded
  (``'int' object has no attribute 'upper'``; a ValueError unpacking its empty
  container), raised in the frame the guard yielded it in or in a caller the value was
  returned to (``if level(u) >= 0`` one or more frames up, on the ``''`` that
  ``return u["level"]`` yielded), the default was wrong for its consumer: the heal is
  **taken back**. Its
  live code is reverted and the overlay store is put back as it was before the heal
  wrote to it (:class:`Snapshot`): nothing of the heal stays on disk;
* otherwise a new guard it needs is the next guard of the **same heal** (a cascade:
  one heal, one report, however many guards).

None is never taken back: a guard that yields None hands the next operation a missing
value, which the next guard of the cascade reads as such.

Decided from what guards record when they fire
(:func:`codesuture.runtime.events.last_yield`, :data:`~codesuture.runtime.events.COUNTS`);
nothing is traced.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from codesuture.logs import logger
from codesuture.store.app_root import APP_ROOT_FILE

log = logger("codesuture.heal")

#: Most bytes of store files a snapshot hands on to a replay in a fresh process.
MAX_CARRIED = 4 << 20


@dataclass
class Snapshot:
    """The files of one overlay stem in a store directory (its overlay, sidecar,
    repro captures, the key's lock file, and the store's app-root file) before a write: ``files`` maps each path to
    its bytes; ``existed``: whether the directory did."""

    directory: str
    stem: str
    key: str
    existed: bool
    files: dict[str, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any] | None:
        """The snapshot for a replay in a fresh process (file bytes in base64); None
        when its files are over :data:`MAX_CARRIED` bytes (then a take-back there
        cannot restore the store, and is not attempted)."""
        import base64

        if sum(len(b) for b in self.files.values()) > MAX_CARRIED:
            return None
        return {"directory": self.directory, "stem": self.stem, "key": self.key, "existed": self.existed,
                "files": {p: base64.b64encode(b).decode("ascii") for p, b in self.files.items()}}

    @classmethod
    def from_json(cls, data: Any) -> "Snapshot":
        """Inverse of :meth:`to_json`. Raises ValueError/TypeError/KeyError on bad data."""
        import base64

        files = {str(p): base64.b64decode(str(b), validate=True) for p, b in dict(data["files"]).items()}
        return cls(str(data["directory"]), str(data["stem"]), str(data["key"]), bool(data["existed"]), files)

    @classmethod
    def take(cls, directory: str, stem: str, key: str) -> "Snapshot":
        snap = cls(directory, stem, key, os.path.isdir(directory))
        for path in snap._paths():
            try:
                with open(path, "rb") as fh:
                    snap.files[path] = fh.read()
            except OSError:
                pass
        return snap

    def _paths(self) -> list[str]:
        """The regular files this snapshot covers, as they are now."""
        out: list[str] = []
        try:
            names = os.listdir(self.directory)
        except OSError:
            return out
        for name in names:
            path = os.path.join(self.directory, name)
            if name in (f".{self.key}.lock", APP_ROOT_FILE) and os.path.isfile(path):
                out.append(path)
            elif name.startswith(self.stem + "."):
                if os.path.isdir(path) and not os.path.islink(path):
                    for root, _, files in os.walk(path):
                        out += [os.path.join(root, f) for f in files]
                elif os.path.isfile(path):
                    out.append(path)
        return out

    def restore(self) -> None:
        """Put the covered files back as they were: new ones removed (and folders left
        empty by that), changed ones rewritten atomically. Raises OSError."""
        from codesuture.util.files import atomic_write

        for path in self._paths():
            if path not in self.files:
                os.remove(path)
        for path, data in self.files.items():
            try:
                with open(path, "rb") as fh:
                    same = fh.read() == data
            except OSError:
                same = False
            if not same:
                atomic_write(path, data)
        for name in _listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.startswith(self.stem + ".") and os.path.isdir(path) and not os.path.islink(path):
                for root, _, _ in sorted(os.walk(path), key=lambda t: -len(t[0])):
                    if not os.listdir(root) and not any(p.startswith(root + os.sep) for p in self.files):
                        os.rmdir(root)
        if not self.existed and os.path.isdir(self.directory) and not os.listdir(self.directory):
            os.rmdir(self.directory)


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


@dataclass
class LastHeal:
    """The newest patch a healer made, while the next crash may still belong to it.

    ``site``: what its guard reports when it fires; ``fired``: that site's firing
    count when the patch went live; ``snapshot``: the store before its overlay was written (None: nothing written);
    ``cascade``: 0 for the first guard of a heal, n for its (n+1)-th; ``first``: the
    site of the heal's first guard, for the report."""

    thread: int
    unit: Any
    site: str
    fired: int
    fs: Any
    record: Any
    snapshot: Snapshot | None
    cascade: int = 0
    first: str = ""

    def to_json(self) -> dict[str, Any] | None:
        """What a replay in a fresh process needs to continue this heal (a cascade) or
        take it back (:func:`carried`); None when it cannot be carried."""
        snap = self.snapshot.to_json() if self.snapshot is not None else None
        if self.snapshot is not None and snap is None:
            return None
        r = self.record
        return {"site": self.site, "cascade": self.cascade, "first": self.first, "snapshot": snap,
                "record": {"module": r.module, "qualname": r.qualname, "line": r.line, "guard": r.guard.guard,
                           "yields": r.yields, "key": getattr(self.fs, "key", r.module),
                           "where": [r.qualname, r.firstlineno, r.offset]}}


def carried(data: Any) -> LastHeal | None:
    """The :class:`LastHeal` a replay in a fresh process was handed (``to_json``): its
    guard was loaded from the store here, so it counts as live since this process began
    (main thread, no unit of work, no firing yet). ``fs`` is None: the function is
    tracked only if it crashes here. None for missing or malformed data."""
    if not isinstance(data, dict):
        return None
    try:
        from types import SimpleNamespace

        from codesuture.patch.spec import GuardSpec

        rec = dict(data["record"])
        qualname, firstlineno, offset = rec["where"]
        record = SimpleNamespace(module=str(rec["module"]), qualname=str(qualname), line=rec["line"],
                                 firstlineno=int(firstlineno), offset=int(offset), guard=GuardSpec(str(rec["guard"])),
                                 yields=str(rec["yields"]), site=(str(qualname), int(firstlineno), int(offset)),
                                 key=str(rec["key"]), evidence={})
        snap = Snapshot.from_json(data["snapshot"]) if data.get("snapshot") is not None else None
        return LastHeal(threading.main_thread().ident or 0, None, str(data["site"]), 0, None, record, snap,
                        int(data.get("cascade", 0)), str(data.get("first", "")))
    except (KeyError, TypeError, ValueError):
        return None


def begin(site: str, fs: Any, record: Any, snapshot: Snapshot | None, before: LastHeal | None) -> LastHeal:
    """The :class:`LastHeal` of a patch that just went live (*before*: the heal it
    continues as a cascade, if any)."""
    from codesuture.runtime import events

    return LastHeal(threading.get_ident(), events.current(), site, events.COUNTS.get(site, 0), fs, record, snapshot, before.cascade + 1 if before else 0, before.first if before else site)


def in_replay(last: LastHeal) -> bool:
    """True when a crash now comes from the replay *last* enabled: same thread, same unit
    of work, and its guard fired exactly once since it went live."""
    from codesuture.runtime import events

    return (last.thread == threading.get_ident() and events.current() is last.unit
            and events.COUNTS.get(last.site, 0) == last.fired + 1)


def failed_on_default(last: LastHeal, exc: BaseException) -> tuple[object] | None:
    """``(default,)``: the default *last*'s guard yielded, when *exc* is a
    TypeError/AttributeError on it (or a ValueError unpacking it), raised in the frame
    it was yielded in or in a caller it was returned to
    (:func:`codesuture.runtime.events.last_yield`); else None. Call only when
    :func:`in_replay`."""
    from codesuture.runtime import events

    yielded = events.last_yield()
    if yielded is None or yielded[0] != last.site:
        return None
    _, value, frames = yielded
    if value is None:
        return None
    tname = type(value).__name__
    msg = str(exc)
    obj = getattr(exc, "obj", _MISSING) if isinstance(exc, AttributeError) else _MISSING
    if obj is not _MISSING:
        hit = obj is value  # the interpreter names the object: anywhere
    elif not _raised_in(exc, frames):
        hit = False  # "at once": in the frame the default was yielded in, or a caller it was returned to
    elif isinstance(exc, AttributeError):
        hit = msg.startswith(f"'{tname}' object")
    elif isinstance(exc, TypeError):
        # "'>=' not supported between instances of 'str' and 'int'", "'int' object is
        # not iterable", "can only concatenate str (not "int") to str", "cannot unpack
        # non-iterable int object"
        hit = (f"'{tname}'" in msg or f'"{tname}"' in msg or msg.startswith(f"can only concatenate {tname} ")
               or f"non-iterable {tname} object" in msg)
    elif isinstance(exc, ValueError):
        hit = msg.startswith("not enough values to unpack") and "got 0" in msg and not value
    else:
        hit = False
    return (value,) if hit else None


_MISSING = object()


def declined_at_once(last: LastHeal, exc: BaseException) -> str:
    """Why *last*'s guard declined to yield in the replay it enabled ("" when it did
    not): same thread and unit of work, the guard not fired since it went live, *exc*
    raised at its site, and a decline noted for it. The heal cannot help its own unit
    of work (a ``bool`` default that would decide)."""
    from codesuture.crash.site import frames, is_patchable_file
    from codesuture.runtime import events

    if last.thread != threading.get_ident() or events.current() is not last.unit:
        return ""
    if events.COUNTS.get(last.site, 0) != last.fired or last.site not in events.DECLINED:
        return ""
    inner = [tb for tb in frames(exc.__traceback__) if is_patchable_file(tb.tb_frame.f_code.co_filename)]
    if not inner or (inner[-1].tb_frame.f_code.co_qualname, inner[-1].tb_lineno) != \
            (last.record.qualname, last.record.line):
        return ""
    return events.DECLINED.pop(last.site, "")


def _raised_in(exc: BaseException, where: tuple[tuple[int, Any], ...]) -> bool:
    """True when the innermost patchable frame of *exc*'s traceback is one of the
    frames *where* (``(id, code)`` pairs: the frame a default was yielded in and the
    callers it was returned to); deeper frames, if any, are C or standard library
    code."""
    from codesuture.crash.site import frames, is_patchable_file

    inner = [tb for tb in frames(exc.__traceback__) if is_patchable_file(tb.tb_frame.f_code.co_filename)]
    if not inner:
        return False
    frame = inner[-1].tb_frame
    return any(id(frame) == fid and frame.f_code is code for fid, code in where)


__all__ = ["Snapshot", "LastHeal", "MAX_CARRIED", "begin", "carried", "in_replay", "failed_on_default"]
