"""Build an overlay from source and patch records (pure: nothing is read or written).

:func:`build_overlay` recompiles the module's exact source the way the import system
does, applies every record (each function's records together, see
:func:`codesuture.patch.synthesize.synthesize_all`), marshals and packs. The same
source, records and interpreter give the same bytes in any process, which is what lets
``codesuture sign`` rebuild an overlay and refuse to sign one that differs.
:func:`merge_records` is the one rule for combining records of one overlay.
"""

from __future__ import annotations

import marshal
import time
import types
from typing import Sequence

from codesuture.overlay import format as fmt
from codesuture.patch.spec import PatchRecord


def compile_module(source: bytes, filename: str) -> types.CodeType:
    """Compile module *source* the way the import system does (``exec`` mode,
    ``dont_inherit``)."""
    return compile(source, filename, "exec", dont_inherit=True)


def build_overlay(source: bytes, filename: str, records: Sequence[PatchRecord]) -> tuple[bytes, types.CodeType]:
    """``(overlay file bytes, module code)`` for *source* (exact bytes) with *records*
    applied, on this interpreter (see :mod:`codesuture.overlay.format`). Raises
    :class:`PatchError` when a record does not apply, ``SyntaxError`` when the source
    does not compile."""
    from codesuture.patch.synthesize import apply_to_module

    code = _share_constants(apply_to_module(compile_module(source, filename), records), {})
    # marshal flags an object with more than one reference as shared (FLAG_REF), so
    # garbage the synthesis leaves (bytecode's control-flow graphs point at nested code
    # objects until the collector runs) would make the bytes depend on when it last
    # ran. One round trip normalises that, at a cost independent of the heap: the
    # reloaded tree holds each object exactly as often as marshal itself shares it.
    code = marshal.loads(marshal.dumps(code))
    return fmt.pack(marshal.dumps(code), source), code


def _share_constants(code: types.CodeType, seen: dict[tuple[type, object], object]) -> types.CodeType:
    """*code* with equal ``str``/``bytes`` constants (and tuples of them) shared by
    identity across the whole tree, as the compiler shares the constants of one
    compilation. Guards add constants (default expressions, site names) whose identity
    depends on where their values came from (a record parsed from JSON, a literal in the
    healer), and marshal writes a shared object differently from two equal ones: without
    this, the same source and records could give different bytes in two processes."""

    def canon(value: object) -> object:
        if isinstance(value, types.CodeType):
            return _share_constants(value, seen)
        if type(value) is tuple and all(type(v) in (str, bytes, tuple) for v in value):
            value = tuple(canon(v) for v in value)  # (1,) == (True,): only str/bytes tuples
            if not all(type(v) in (str, bytes) or (type(v) is tuple and not v) for v in value):
                return value
        elif type(value) not in (str, bytes):
            return value
        return seen.setdefault((type(value), value), value)

    consts = tuple(canon(c) for c in code.co_consts)
    if all(a is b for a, b in zip(consts, code.co_consts)):
        return code
    return code.replace(co_consts=consts)


def merge_records(previous: Sequence[PatchRecord], fresh: Sequence[PatchRecord], now: float | None = None) -> list[PatchRecord]:
    """Records of *previous* and *fresh* by site, a fresh record replacing a previous one
    of the same site; records expired at *now* are dropped. Sorted by source order."""
    merged: dict[tuple[str, int, int], PatchRecord] = {}
    for rec in [*previous, *fresh]:
        merged[rec.site] = rec
    now = time.time() if now is None else now
    kept = [r for r in merged.values() if not r.expired(now)]
    return sorted(kept, key=lambda r: (r.firstlineno, r.qualname, r.offset))


__all__ = ["build_overlay", "compile_module", "merge_records"]
