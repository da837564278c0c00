"""The healer: exception -> crash site -> diagnosis -> guard -> diff gate -> live swap
-> overlay. Used by every boundary.

Containment (rule 7): :meth:`Healer.heal` never raises. Whatever goes wrong inside
CodeSuture is logged and reported as "not healed", and the boundary continues with
the program's original behaviour (re-raising its exception).
"""

from __future__ import annotations

import logging
import os
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

from codesuture.logs import logger
from codesuture.errors import CodeSutureError
from codesuture.patch.spec import DEFAULT_TTL_SECONDS, PatchRecord, iso_utc

log = logger("codesuture.heal")


@dataclass
class HealResult:
    """A patch made live. ``main_code`` is the script's new module code when the
    patch was inside the script run as ``__main__``; ``overlay`` the overlay written."""

    record: PatchRecord
    diff: str
    main_code: types.CodeType | None = None
    overlay: Path | None = None
    seconds: float = 0.0
    swap: object = None  # the SwapReport, for rollback


@dataclass
class Healer:
    """``overlays``: the store directory patches are written to (None: live only).
    ``dry_run``: diagnose and report, change nothing. ``ttl``: patch lifetime in seconds."""

    overlays: Path | None = None
    dry_run: bool = False
    ttl: float = DEFAULT_TTL_SECONDS
    tier: str = "auto"
    history: list[HealResult] = field(default_factory=list)
    proposals: list[PatchRecord] = field(default_factory=list)
    #: store key -> patches live in this process (loaded from overlays or made here)
    live: dict[str, list[PatchRecord]] = field(default_factory=dict)

    def heal(
        self, exc: BaseException, main_code: types.CodeType | None = None, main_path: str | None = None
    ) -> HealResult | None:
        """Try to patch the crash *exc*. *main_code*/*main_path*: the module code and
        path of the script running as ``__main__``, if any. Returns None when not healed."""
        try:
            return self._heal(exc, main_code, main_path)
        except CodeSutureError as err:
            log.warning("not healed: %s", err)
        except Exception as err:  # contained (rule 7)
            log.warning("not healed: internal error %r", err, exc_info=log.isEnabledFor(logging.DEBUG))
        return None

    def _heal(self, exc: BaseException, main_code: types.CodeType | None, main_path: str | None) -> HealResult | None:
        from codesuture.crash.diagnose import diagnose
        from codesuture.crash.handled import caught_by_program
        from codesuture.crash.site import find_crash_site
        from codesuture.overlay.store import script_key
        from codesuture.patch import diffgate
        from codesuture.patch.swap import swap
        from codesuture.patch.synthesize import replace_in_tree, synthesize, walk_code

        t0 = time.perf_counter()
        where = caught_by_program(exc)
        if where:
            log.warning("not healed: the program catches %s itself at %s", type(exc).__name__, where)
            return None
        site = find_crash_site(exc)
        spec = diagnose(exc, site)
        in_main = main_code is not None and any(c is site.code for c in walk_code(main_code))
        if in_main:
            module, key = "__main__", script_key(main_path or site.filename)
        elif site.module == "__main__":
            module, key = "__main__", script_key(site.filename)
        else:
            module, key = site.module, site.module
        now = time.time()
        line, _end, col, end_col = site.positions
        record = PatchRecord(
            module=module,
            qualname=site.code.co_qualname,
            firstlineno=site.code.co_firstlineno,
            offset=site.offset,
            opname=site.opname,
            line=line,
            col=col,
            end_col=end_col,
            expression=site.expression,
            exception=f"{type(exc).__name__}: {exc}",
            guard=spec,
            created=iso_utc(now),
            expires=iso_utc(now + self.ttl) if self.ttl else "",
        )
        synth = synthesize(site.code, record)
        record = record._replace(added=synth.added, removed=synth.removed)
        diff = diffgate.render(synth.before, synth.after)
        diffgate.check(spec, synth.added, synth.removed)
        if self.dry_run:
            self.proposals.append(record)
            log.warning("would patch %s with %s (dry run)", site.describe(), spec.guard)
            return None
        report = swap(site.code, synth.code)
        new_main = replace_in_tree(main_code, site.code, synth.code) if in_main and main_code is not None else None
        elapsed = time.perf_counter() - t0
        self.live.setdefault(key, list(_loaded_patches(key))).append(record)
        log.warning(
            "patched %s with %s (yields %s; +%d instructions; %d function(s), %d parent(s)) in %.1f ms",
            site.describe(), spec.guard + (f"/{spec.form}" if spec.form else ""), spec.default,
            synth.added, report.functions, report.parents, elapsed * 1000,
        )
        result = HealResult(record, diff, new_main, None, elapsed, report)
        if self.overlays is not None:
            result.overlay = self._write(key, module, site.filename, record)
        self.history.append(result)
        return result

    def rollback(self) -> int:
        """Restore the original code of every patch this healer made live, newest
        first (the overlays on disk are :func:`codesuture.review.rollback.rollback`'s
        business). Returns the number of functions restored."""
        from codesuture.patch.swap import restore

        n = 0
        while self.history:
            result = self.history.pop()
            if result.swap is not None:
                n += restore(result.swap)  # type: ignore[arg-type]
        self.live.clear()
        return n

    def _write(self, key: str, module: str, filename: str, record: PatchRecord) -> Path | None:
        from codesuture.errors import PatchError
        from codesuture.overlay.build import write_overlay
        from codesuture.overlay.store import DirectoryStore

        assert self.overlays is not None
        store = DirectoryStore(self.overlays)
        patches = self.live.get(key, [record])
        try:
            try:
                return write_overlay(store, key, module, filename, patches, tier=self.tier)
            except PatchError:
                # The store holds patches this process does not run: write what runs here.
                return write_overlay(store, key, module, filename, patches, tier=self.tier, merge=False)
        except (CodeSutureError, OSError) as exc:
            log.warning("patched live, but no overlay written for %s: %s", key, exc)
        return None


def _loaded_patches(key: str) -> list[PatchRecord]:
    from codesuture.loader.resolve import LOADED

    meta = LOADED.get(key)
    return list(meta.patches) if meta else []


_DEFAULT: list[Healer] = []


def default_healer() -> Healer | None:
    """The process-wide healer for boundaries that were not given one, configured
    from the environment that ``python -m codesuture.boot`` exports
    (``CODESUTURE_OVERLAYS``, ``CODESUTURE_HEAL``). None when healing is off or
    CodeSuture is disabled."""
    if disabled() or os.environ.get("CODESUTURE_HEAL", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None
    if not _DEFAULT:
        overlays = os.environ.get("CODESUTURE_OVERLAYS")
        _DEFAULT.append(Healer(overlays=Path(overlays) if overlays else None))
    return _DEFAULT[0]


def disabled() -> bool:
    """The kill switch: ``CODESUTURE_DISABLE=1`` turns CodeSuture off entirely."""
    return os.environ.get("CODESUTURE_DISABLE", "").strip().lower() in {"1", "true", "yes", "on"}


__all__ = ["Healer", "HealResult", "default_healer", "disabled"]
