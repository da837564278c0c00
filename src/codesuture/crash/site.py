"""Crash site: the innermost traceback frame in patchable code.

Patchable code is the application's files and installed packages (site-packages);
not the standard library, not CodeSuture itself, not code without a source file.
Nothing here traces: everything comes from the traceback the boundary caught. Which
files are patchable is :mod:`codesuture.crash.files` (re-exported here), light enough for
a guard's slow path.
"""

from __future__ import annotations

import dis
import linecache
import os
import sys
import types
from dataclasses import dataclass

from codesuture.crash.files import is_own_file, is_patchable_file
from codesuture.errors import DiagnosisError


@dataclass(frozen=True)
class CrashSite:
    """Where a structural crash happened.

    ``offset`` is the failing instruction's offset in bytes (``tb_lasti``); ``positions``
    is ``(lineno, end_lineno, col_offset, end_col_offset)`` from ``co_positions``;
    ``raised_here`` is False when the exception came from a deeper, unpatchable Python
    frame (a library call that failed inside the standard library, say).
    """

    code: types.CodeType
    offset: int
    opname: str
    positions: tuple[int | None, int | None, int | None, int | None]
    filename: str
    module: str
    raised_here: bool

    @property
    def line(self) -> int | None:
        return self.positions[0]

    @property
    def expression(self) -> str:
        """The failing expression's source text (read now, through ``linecache``: the
        analysis itself never reads source files)."""
        return source_segment(self.filename, self.positions)

    def describe(self) -> str:
        return f"{self.filename}:{self.line} in {self.code.co_qualname} ({self.opname} at offset {self.offset})"


def positions_at(code: types.CodeType, offset: int) -> tuple[int | None, int | None, int | None, int | None]:
    for i, pos in enumerate(code.co_positions()):
        if i * 2 == offset:
            return pos
    return (None, None, None, None)


def instruction_at(code: types.CodeType, lasti: int) -> tuple[int, str]:
    """``(offset, opname)`` of the instruction a frame stands at when its instruction
    offset (``tb_lasti``/``f_lasti``, bytes) is *lasti*. That offset is not always an
    instruction's own: a frame whose call into a Python function was inlined by the
    interpreter (3.11 and 3.12) reports the last inline cache entry of its ``CALL``,
    and a 3.11 ``PRECALL`` specialized for a built-in (``len``, ``ord``, ``sorted``...)
    makes the call itself, so an exception raised by the callee stands at the
    ``PRECALL``. Both map to the ``CALL``: the instruction that starts at or before
    *lasti*, past a ``PRECALL``. ``(lasti, "?")`` when the code has no instruction
    there."""
    found: tuple[int, str] | None = None
    after_precall = False
    for ins in dis.get_instructions(code):  # no CACHE entries
        if after_precall:
            return ins.offset, ins.opname
        if ins.offset > lasti:
            break
        if ins.opname != "EXTENDED_ARG":
            found = (ins.offset, ins.opname)
        after_precall = ins.offset == lasti and ins.opname == "PRECALL"
    return found or (lasti, "?")


def source_segment(filename: str, pos: tuple[int | None, int | None, int | None, int | None]) -> str:
    line, end_line, col, end_col = pos
    if not line or col is None or end_col is None:
        return linecache.getline(filename, line or 0).strip()
    end_line = end_line or line
    lines = [linecache.getline(filename, n) for n in range(line, end_line + 1)]
    if not any(lines):
        return ""
    if len(lines) == 1:
        return lines[0].encode()[col:end_col].decode(errors="replace")
    first = lines[0].encode()[col:].decode(errors="replace")
    last = lines[-1].encode()[:end_col].decode(errors="replace")
    return "\n".join([first, *(s.rstrip("\n") for s in lines[1:-1]), last]).strip()


def frames(tb: types.TracebackType | None) -> list[types.TracebackType]:
    out = []
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out


def find_crash_site(exc: BaseException) -> CrashSite:
    """Locate the crash site of *exc* from its traceback.

    Raises :class:`DiagnosisError` when no frame of the traceback is patchable.
    """
    tbs = frames(exc.__traceback__)
    for depth in range(len(tbs) - 1, -1, -1):
        tb = tbs[depth]
        code = tb.tb_frame.f_code
        if not is_patchable_file(code.co_filename):
            continue
        offset, opname = instruction_at(code, tb.tb_lasti)
        pos = positions_at(code, offset)
        deeper = [t for t in tbs[depth + 1 :]]
        return CrashSite(
            code=code,
            offset=offset,
            opname=opname,
            positions=pos,
            filename=code.co_filename,
            module=str(tb.tb_frame.f_globals.get("__name__", "")),
            raised_here=not deeper,
        )
    raise DiagnosisError(f"no patchable frame in the traceback of {type(exc).__name__}")


#: Set by a worker process on a work item's exception (in its ``__dict__``, which pickling
#: carries to the parent with the exception): ``(module, filename, qualname,
#: firstlineno, offset, SHA-256 of co_code, raised there)`` of the innermost patchable frame, since the
#: copy the parent receives has none of the worker's frames.
WORKER_SITE = "__codesuture_worker_site__"


def note_worker_site(exc: BaseException, tb: types.TracebackType | None) -> None:
    """In a worker process (``concurrent.futures.ProcessPoolExecutor``), before the
    exception is pickled for the parent: note the crash site of *tb* on *exc* (see
    :data:`WORKER_SITE`). Nothing is diagnosed or patched here: whether the crash is
    handled is known only where the Future's result is taken. Never raises."""
    try:
        state = getattr(exc, "__dict__", None)
        if state is None:
            return
        tbs = frames(tb)
        for t in reversed(tbs):
            code = t.tb_frame.f_code
            if is_patchable_file(code.co_filename):
                import hashlib

                state[WORKER_SITE] = (str(t.tb_frame.f_globals.get("__name__", "")), code.co_filename,
                                      code.co_qualname, code.co_firstlineno, t.tb_lasti,
                                      hashlib.sha256(code.co_code).hexdigest(), t is tbs[-1])
                return
    except Exception:  # noqa: BLE001 - contained (rule 7): the exception travels as it is
        pass


def worker_site(exc: BaseException, known: "tuple[types.CodeType, ...]" = ()) -> CrashSite | None:
    """The crash site a worker process noted on *exc* (:func:`note_worker_site`),
    resolved to this process's code object of the same function (same file, qualified
    name, first line and bytecode; *known*: more code objects to match, such as the
    original code of a function patched here since), or None when *exc* carries none.
    Raises :class:`DiagnosisError` when the function is not loaded here."""
    noted = getattr(exc, "__dict__", {}).get(WORKER_SITE)
    if not (isinstance(noted, tuple) and len(noted) == 7):
        return None
    module_name, filename, qualname, firstlineno, offset, digest, raised_here = noted
    name = "__main__" if module_name == "__mp_main__" else module_name  # a spawned worker's script
    module = sys.modules.get(name)
    if module is None:
        raise DiagnosisError(f"{qualname} crashed in a worker process, and {name} is not loaded here")
    import hashlib

    from codesuture.patch.swap import functions_by_name
    from codesuture.patch.synthesize import walk_code

    real = os.path.realpath(filename)
    candidates = [c for fn in functions_by_name(module) for c in walk_code(fn.__code__)]
    for code in [*candidates, *known]:
        if (code.co_qualname, code.co_firstlineno) == (qualname, firstlineno) \
                and os.path.realpath(code.co_filename) == real \
                and hashlib.sha256(code.co_code).hexdigest() == digest:
            offset, opname = instruction_at(code, offset)
            return CrashSite(code=code, offset=offset, opname=opname, positions=positions_at(code, offset), filename=code.co_filename, module=name,
                             raised_here=bool(raised_here))
    raise DiagnosisError(f"{qualname} crashed in a worker process running code this process does not have")
