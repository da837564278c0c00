"""The live-patch ledger: the one place that changes a process's live code.

A :class:`Ledger` (one per :class:`~codesuture.runtime.healer.Healer`) knows every
function the process patched or took over from an overlay: its code as compiled from
source (``original``), the patch records applied to it, every code object it has had
live (``lineage``, kept alive so ``id()`` stays unique) and, per patched code object, the
origin map from its instructions to the original's. Installing a set of records
(:meth:`Ledger.apply`/:meth:`Ledger.install`) swaps the synthesized code object into
every live reference (:func:`codesuture.patch.swap.swap`); taking a patch out
(:meth:`Ledger.revert`) runs the function's other records, or its original code; the
kill switch and ``Healer.rollback`` revert everything (:meth:`Ledger.revert_all`).

Overlays loaded at import are the loader's (:data:`codesuture.loader.resolve.LOADED`);
the ledger takes such a function over on its first heal or revert, after checking that
the overlay's records rebuild the code that runs (:meth:`Ledger.state_for`).

Who decides is elsewhere: the healer runs the pipeline (crash, diagnosis, value flow,
policy, synthesis, then the ledger, then the overlay), governance decides tiers, caps
and automatic rollback, the fleet watcher polls. They read and change live code only
through this ledger, under its lock (:attr:`Ledger.lock`, re-entrant: a heal holds it
while it installs).
"""

from __future__ import annotations

import threading
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from codesuture.errors import DiagnosisError, PatchError
from codesuture.patch.spec import PatchRecord

#: ``(module name, overlay key)`` for a crashed function: given the live site and the
#: script's module code and path (when it runs as ``__main__``).
KeyOf = Callable[[Any, "types.CodeType | None", "str | None"], "tuple[str, str]"]


@dataclass
class FunctionState:
    """One function this process patched: its code as compiled from source, the records
    applied to it, every code object it had live (``lineage``) and, per patched code
    object, its origin map (id -> map)."""

    key: str
    module: str
    filename: str
    original: types.CodeType
    records: list[PatchRecord] = field(default_factory=list)
    lineage: list[types.CodeType] = field(default_factory=list)
    maps: dict[int, tuple[int | None, ...]] = field(default_factory=dict)

    @property
    def current(self) -> types.CodeType:
        return self.lineage[-1] if self.lineage else self.original


def merge(old: Sequence[PatchRecord], new: Sequence[PatchRecord]) -> list[PatchRecord]:
    """*old* and *new* records, one per site (*new* wins), in instruction-offset order."""
    merged = {r.site: r for r in [*old, *new]}
    return sorted(merged.values(), key=lambda r: r.offset)


class Ledger:
    """The functions of one healer whose live code it changed (see the module doc)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._functions: dict[tuple[str, str, int], FunctionState] = {}
        self._codes: dict[int, FunctionState] = {}

    # ------------------------------------------------------------------ reading

    def functions(self) -> list[FunctionState]:
        """A snapshot of every function state (safe to iterate while others heal)."""
        return list(self._functions.values())

    def records(self, key: str | None = None) -> list[PatchRecord]:
        """The live records of every function (of overlay *key* only, when given)."""
        return [r for f in self.functions() if key is None or f.key == key for r in f.records]

    def tracked(self, key: str, qualname: str, firstlineno: int) -> FunctionState | None:
        """The state of function *qualname* (first line *firstlineno*) of overlay *key*,
        when this ledger tracks it."""
        return self._functions.get((key, qualname, firstlineno))

    def find(self, match: Callable[[PatchRecord], bool]) -> tuple[FunctionState, PatchRecord] | None:
        """The first ``(function state, record)`` whose record *match* accepts, or None."""
        for f in self.functions():
            for r in f.records:
                if match(r):
                    return f, r
        return None

    def __iter__(self) -> Iterator[FunctionState]:
        return iter(self.functions())

    # ------------------------------------------------------------------ taking functions in

    def state_for(self, live: Any, main_code: types.CodeType | None, main_path: str | None,
                  key_of: KeyOf) -> FunctionState:
        """The :class:`FunctionState` of the function running ``live.code`` (made on
        first use; *key_of* names its module and overlay key). Raises
        :class:`~codesuture.errors.PatchError` when the function runs overlay code its
        records do not rebuild."""
        known = self._codes.get(id(live.code))
        if known is not None:
            return known
        module, key = key_of(live, main_code, main_path)
        ident = (key, live.code.co_qualname, live.code.co_firstlineno)
        fs = self._functions.get(ident)
        if fs is None:
            original, maps = _original_code(key, live)
            fs = FunctionState(key, module, live.filename, original)
            fs.records = list(maps[1])
            if maps[0] is not None:
                fs.maps[id(live.code)] = maps[0]
                fs.lineage.append(live.code)
            self._functions[ident] = fs
            self._codes[id(original)] = fs
        elif live.code is not fs.original and id(live.code) not in fs.maps:
            self._known_live(fs, live)
        self._codes[id(live.code)] = fs
        return fs

    def _known_live(self, fs: FunctionState, live: Any) -> None:
        """*live* runs code of an overlay the fleet watcher swapped in after this ledger
        first patched the function (a race with another process's write): when the
        records of an overlay loaded for it rebuild that code, learn its origin map and
        take its records in, so the crash there is healed (and the merge stays total)."""
        from codesuture.errors import CodeSutureError
        from codesuture.loader.resolve import loaded_patch_sets
        from codesuture.patch.synthesize import synthesize_all

        ident = (live.code.co_qualname, live.code.co_firstlineno)
        for recs in loaded_patch_sets(fs.key):
            mine = [r for r in recs if (r.qualname, r.firstlineno) == ident]
            if not mine:
                continue
            try:
                synth = synthesize_all(fs.original, mine)
            except CodeSutureError:
                continue
            if synth.code == live.code:
                fs.maps[id(live.code)] = synth.origin
                fs.lineage.append(live.code)
                self._codes[id(live.code)] = fs
                self.apply(fs, merge(fs.records, mine))  # every live copy runs all the patches again
                return

    def original_site(self, live: Any, fs: FunctionState) -> Any:
        """The crash site *live* translated to the function's original code. Raises
        :class:`~codesuture.errors.DiagnosisError` when the crash is inside a guard's
        own instructions or in code this ledger does not know."""
        from dataclasses import replace

        from codesuture.crash.site import positions_at
        from codesuture.patch.synthesize import instruction_index, offset_of

        if live.code is fs.original:
            return live
        origin = fs.maps.get(id(live.code))
        if origin is None:
            raise DiagnosisError(f"{live.describe()} runs code this process does not know")
        k, _ = instruction_index(live.code, live.offset)
        orig_k = origin[k] if k < len(origin) else None
        if orig_k is None:
            raise DiagnosisError(f"the crash at {live.describe()} is inside a guard's own instructions; not patched")
        offset = offset_of(fs.original, orig_k)
        import dis

        opname = next(i.opname for i in dis.get_instructions(fs.original) if i.offset == offset)
        return replace(live, code=fs.original, offset=offset, opname=opname, positions=positions_at(fs.original, offset))

    # ------------------------------------------------------------------ changing live code

    def apply(self, fs: FunctionState, records: Sequence[PatchRecord]) -> Any:
        """Synthesize *records* into the function's original code and install it.
        Returns the swap report (``functions``, ``parents``)."""
        from codesuture.patch.synthesize import synthesize_all

        merged = merge([], records)
        return self.install(fs, merged, synthesize_all(fs.original, merged))

    def install(self, fs: FunctionState, records: list[PatchRecord], synth: Any) -> Any:
        """Swap *synth* (a synthesized code object with its origin map) in for every
        code object the function had, and remember it with *records*."""
        from codesuture.patch.swap import swap

        with self.lock:
            report = swap([fs.original, *fs.lineage], synth.code, fs.module)  # found by name in its module
            fs.lineage.append(synth.code)
            fs.maps[id(synth.code)] = synth.origin
            fs.records = records
            self._codes[id(synth.code)] = fs
            return report

    def revert(self, fs: FunctionState, record: PatchRecord) -> int:
        """Take *record* out of the live code: the function runs its other records, or
        its original code. Returns the number of functions whose code changed."""
        with self.lock:
            kept = [r for r in fs.records if r.site != record.site]
            if kept:
                return int(self.apply(fs, kept).functions)
            from codesuture.patch.swap import swap

            functions = int(swap(list(fs.lineage), fs.original, fs.module).functions)
            fs.lineage.append(fs.original)  # the lineage keeps every code object alive (ids stay unique)
            fs.records = []
            return functions

    def revert_all(self) -> int:
        """Give every function its original code back and forget them all. Returns the
        number of functions restored."""
        from codesuture.patch.swap import swap

        with self.lock:
            n = 0
            for fs in self._functions.values():
                if fs.lineage:
                    n += swap(fs.lineage, fs.original, fs.module).functions
                    fs.lineage.clear()
                    fs.records.clear()
            self._functions.clear()
            self._codes.clear()
            return n


def _original_code(key: str, live: Any) -> tuple[types.CodeType, tuple[tuple[int | None, ...] | None, list[PatchRecord]]]:
    """``(original code, (origin map of the live code or None, records in it))``: the
    live code itself when it is unpatched; else, for a function loaded from an overlay,
    the function recompiled from source (checked to give the live code)."""
    from codesuture.loader.resolve import loaded_patch_sets

    code = live.code
    ident = (code.co_qualname, code.co_firstlineno)
    sets = [s for s in ([r for r in recs if (r.qualname, r.firstlineno) == ident] for recs in loaded_patch_sets(key)) if s]
    if not sets:
        return code, (None, [])
    from codesuture.overlay.build import compile_module
    from codesuture.patch.synthesize import find_code, synthesize_all

    with open(live.filename, "rb") as fh:
        module_code = compile_module(fh.read(), live.filename)
    original = find_code(module_code, code.co_qualname, code.co_firstlineno)
    if original is None:
        raise PatchError(f"{code.co_qualname} not found in {live.filename}")
    # The crashed frame may run code older than the overlay loaded last: the fleet
    # watcher admits another process's overlay (LOADED) and then swaps it in, while a
    # frame already running the source's code, or an earlier overlay's, crashes.
    for recs in sets:
        synth = synthesize_all(original, recs)
        if synth.code == code:
            return original, (synth.origin, recs)
    if code == original:  # the source's own code: unpatched (the watcher merges the overlay in after)
        return code, (None, [])
    raise PatchError(f"{code.co_qualname} runs code that its overlay's records do not rebuild; refusing to patch it")


__all__ = ["Ledger", "FunctionState", "merge"]
