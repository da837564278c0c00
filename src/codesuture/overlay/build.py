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

    code = apply_to_module(compile_module(source, filename), records)
    # marshal flags an object with more than one reference as shared (FLAG_REF), so
    # garbage the synthesis leaves (bytecode's control-flow graphs point at nested code
    # objects until the collector runs) would make the bytes depend on when it last
    # ran. One round trip normalises that, at a cost independent of the heap: the
    # reloaded tree holds each object exactly as often as marshal itself shares it.
    code = marshal.loads(marshal.dumps(code))
    return fmt.pack(marshal.dumps(code), source), code


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
