"""The healer: exception -> crash site -> diagnosis -> guard -> diff gate -> live swap
-> overlay. Used by every boundary.

One crash site, one patch (design rule 13): heals are serialized per process by the
lock of the healer's live-patch ledger (:mod:`codesuture.runtime.ledger`, the one place
that changes live code). Every patched function is tracked there as its *original*
code object (as compiled from source) plus the set of records applied to it; a new
patch re-synthesizes the function from the original with all its records (see
:func:`codesuture.patch.synthesize.synthesize_all`). A crash inside patched code is
translated back to its site in the original code, so

* a crash at a site this process already patched (a thread that was already running
  the old code) replays without a new patch;
* a crash at a site another process patched since (its record is in the store)
  adopts that record live, without a new diagnosis;
* two processes patching different sites of one function both keep theirs (the store
  merges records by site).

Where the patch goes: into the overlay store only in dev mode, when the store is a
folder without a signed set and the overlay being extended is not signed; otherwise
into the *pending* directory, which the loader never reads (design rule 9).

Containment (rule 7): :meth:`Healer.heal` never raises. Whatever goes wrong inside
CodeSuture is logged and reported as "not healed", and the boundary continues with the
program's original behaviour (re-raising its exception).
"""

from __future__ import annotations

import os
import sys
import time
import types
from dataclasses import dataclass
from typing import Any

from codesuture.errors import CodeSutureError, DiagnosisError
from codesuture.logs import logger
from codesuture.patch.spec import AS_IS, DEFAULT_TTL_SECONDS, NO_TRUTH, PatchRecord
from codesuture.runtime.ledger import FunctionState, Ledger, merge
from codesuture.util.clock import iso_utc

log = logger("codesuture.heal")


@dataclass
class HealResult:
    """The outcome of a heal that lets the boundary replay. ``status``: ``patched``
    (a new patch), ``already`` (this process had patched the site) or ``adopted`` (the
    store had a patch for it from another process). ``main_code``: the script's new
    module code when the patch was inside the script run as ``__main__``;
    ``overlay``: the overlay written (or proposed in the pending directory)."""

    record: PatchRecord
    diff: str
    main_code: types.CodeType | None = None
    overlay: str | None = None
    seconds: float = 0.0
    status: str = "patched"
    proposed: bool = False
    #: 0 for the first guard of a heal; n for the (n+1)-th guard of the same heal, placed
    #: when its replay crashed again (a cascade: :mod:`codesuture.runtime.takeback`).
    cascade: int = 0


def describe_exception(exc: BaseException, record_messages: bool = False) -> str:
    """``Type: message`` for patch metadata. Unless *record_messages*, the message is
    kept only where it names code, not data (``'NoneType' object has no attribute
    'x'``, operand types, ``division by zero``, ``... index out of range``); quoted
    values elsewhere become ``'<redacted>'``, and a KeyError's key is never kept."""
    import re

    name = type(exc).__name__
    msg = str(exc)
    if record_messages:
        return f"{name}: {msg}"
    if isinstance(exc, KeyError):
        return f"{name}: <redacted key>"
    if isinstance(exc, (AttributeError, TypeError, ZeroDivisionError, IndexError)):
        return f"{name}: {msg}"
    redacted = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "'<redacted>'", msg)
    return f"{name}: {redacted}"


class Healer:
    """Heals crashes for one process.

    ``overlays``: the overlay store (a folder, or a bundle file; None: none). Patches are
    written there only when :attr:`writes_to_store`; else to ``pending`` (default
    ``<overlays>.pending``). ``dry_run``: diagnose and report, change nothing.
    ``report_only``: prod without ``--heal``: log one structured line per crash and
    change nothing. ``ttl``: patch lifetime in seconds (0: none). ``record_messages``:
    keep raw exception messages. ``app_root``: what script origins are relative to.
    ``prod``: new patches are proposals (pending), never written into the store.
    ``control_flow``: module patterns where a guard may decide control flow; elsewhere
    such a site is not patched, only proposed for review. ``governance``: tiers,
    allow/deny, caps and automatic rollback (:class:`codesuture.runtime.governance.Policy`;
    set by :meth:`from_settings`; None: every app module ``auto``, no caps).
    """

    governance: Any = None
    #: The kill file every heal looks for first (set by :meth:`from_settings`; None: none).
    kill_file: str | None = None
    #: The host state folder (:mod:`codesuture.trust.state`: fingerprints ``codesuture
    #: rollback`` took out); None: not consulted.
    state_dir: str | None = None

    def __init__(
        self,
        overlays: str | os.PathLike[str] | None = None,
        *,
        pending: str | os.PathLike[str] | None = None,
        dry_run: bool = False,
        report_only: bool = False,
        ttl: float = DEFAULT_TTL_SECONDS,
        tier: str = "auto",
        record_messages: bool = False,
        app_root: str | None = None,
        prod: bool = False,
        control_flow: tuple[str, ...] = (),
    ) -> None:
        self.overlays = os.path.abspath(overlays) if overlays is not None else None
        self.pending = (os.path.abspath(pending) if pending is not None
                        else (self.overlays.rstrip(os.sep) + ".pending" if self.overlays else None))
        self.dry_run = dry_run
        self.report_only = report_only
        self.ttl = ttl
        self.tier = tier
        self.record_messages = record_messages
        self.app_root = app_root
        self.prod = prod
        self.control_flow = control_flow
        self.history: list[HealResult] = []
        self.proposals: list[PatchRecord] = []
        self._told_memory = False  # "patches stay in memory" said once
        #: The functions whose live code this healer changed (:mod:`codesuture.runtime.ledger`).
        self.ledger = Ledger()
        self._gate: bool | None = None
        #: The crash being healed, for its incidents: (site, fingerprint, crash recorded).
        self._seen: tuple[str, str, bool] | None = None
        self._registry: Any = None
        #: The newest patch while the next crash may belong to it (a cascade or a
        #: take-back, :mod:`codesuture.runtime.takeback`).
        self._last: Any = None
        #: Sites whose heal was taken back in this process: never healed again here.
        self._taken_back: set[tuple[str, str, int, int]] = set()
        #: Whether the heal a replay in a fresh process was handed has been looked at.
        self._resumed = False
        #: Site fingerprint -> how :meth:`rollback` took its patch out: never re-applied.
        self.rolled_back: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> "Healer":
        """The healer :mod:`codesuture.settings` describes (report-only when healing is off)."""
        from codesuture.runtime.governance import Policy

        healer = cls(
            settings.overlays, pending=settings.pending, dry_run=settings.dry_run, report_only=not settings.heal,
            ttl=settings.ttl_seconds, record_messages=settings.record_messages, app_root=settings.app_root,
            prod=settings.prod, control_flow=tuple(settings.control_flow),
        )
        healer.governance = Policy.from_settings(settings)
        healer.kill_file = getattr(settings, "kill_file", None)
        healer.state_dir = getattr(settings, "state_dir", None)
        return healer

    # ------------------------------------------------------------------ public

    def heal(self, exc: BaseException, main_code: types.CodeType | None = None, main_path: str | None = None) -> HealResult | None:
        """Try to patch the crash *exc*. *main_code*/*main_path*: the module code and
        path of the script running as ``__main__``, if any. Returns None when not
        healed (logged); never raises."""
        with self.ledger.lock:
            self._seen = None
            if _stopped(self):  # the kill switch; charges automatic rollback (docs/governance.md)
                return None
            try:
                if not self._allowed():
                    self._refused("interpreter", exc)
                    return None
                return self._heal(exc, main_code, main_path)
            except CodeSutureError as err:
                log.warning("not healed: %s", err)
                self._refused("diagnosis" if isinstance(err, DiagnosisError) else "error", exc, str(err))
            except Exception as err:  # contained (rule 7)
                import logging

                log.warning("not healed: internal error %r", err, exc_info=log.isEnabledFor(logging.DEBUG))
                self._refused("internal", exc, repr(err))
            return None

    def rollback(self) -> int:
        """Restore the original code of every function this healer patched live.
        Returns the number of functions restored (the overlays on disk are
        :func:`codesuture.review.rollback.rollback`'s business)."""
        with self.ledger.lock:
            for r in self.ledger.records():  # never re-applied from the fingerprint registry without review
                fp = (r.evidence or {}).get("fingerprint")
                if fp:
                    self.rolled_back[str(fp)] = f"rolled back in this process ({r.module}:{r.line} {r.qualname})"
            n = self.ledger.revert_all()
            self.history.clear()
            from codesuture.runtime import incidents

            incidents.record("rollback", functions=n, scope="process")
            return n

    def last_heal(self) -> dict[str, Any] | None:
        """The newest heal, for a replay in a fresh process to continue (a cascade) or
        take back (:func:`codesuture.runtime.takeback.carried`); None when there is none."""
        last = self._last
        return last.to_json() if last is not None else None

    @property
    def patches(self) -> int:
        """New heals made in this process (a cascade of guards in one unit of work is
        one heal)."""
        return sum(1 for r in self.history if r.status == "patched" and not r.cascade)

    # ------------------------------------------------------------------ steps

    def _allowed(self) -> bool:
        """The interpreter gate (:data:`codesuture.settings.HEAL_PYTHONS`), once."""
        if self._gate is None:
            import sys

            from codesuture import settings

            version = "%d.%d.%d" % sys.version_info[:3]
            allowed = settings.heal_python_allowed(tuple(sys.version_info[:3]), settings.HEAL_PYTHONS)  # type: ignore[arg-type]
            if allowed is None:
                log.warning("healing is off: cannot evaluate %s for Python %s", settings.HEAL_PYTHONS, version)
                self._gate = False
                return False
            self._gate = allowed
            if not self._gate:
                log.warning("healing is off on Python %s: guards are tested on Python %s (overlays still load)",
                            version, settings.HEAL_PYTHONS)
        return self._gate

    def _heal(self, exc: BaseException, main_code: types.CodeType | None, main_path: str | None) -> HealResult | None:
        from codesuture.crash.diagnose import diagnose, returned_unchanged_at, value_verdict
        from codesuture.crash.handled import caught_by_program
        from codesuture.crash.site import find_crash_site, worker_site
        from codesuture.guards.families import caller_first, default_rule
        from codesuture.patch import diffgate

        t0 = time.perf_counter()
        where = caught_by_program(exc)
        if where:
            log.warning("not healed: the program catches %s itself at %s", type(exc).__name__, where)
            self._refused("eafp", exc, f"caught at {where}")
            return None
        from codesuture.runtime import takeback

        last, self._last = self._last, None
        if last is None and not self._resumed:
            self._resumed = True  # a replay in a fresh process: the heal before it (runtime/rerun.py)
            rerun = sys.modules.get("codesuture.runtime.rerun")
            last = takeback.carried(getattr(rerun, "CARRIED", {}).get("last_heal"))
        if last is not None and takeback.in_replay(last):
            if takeback.failed_on_default(last, exc) is not None:
                self._take_back(last, exc)
                return None
        elif last is not None and (why := takeback.declined_at_once(last, exc)):
            # Its own replay: the guard would not yield (a bool default that would decide).
            self._take_back(last, exc, f"its guard declined at once ({why})")
            return None
        else:
            last = None  # not a cascade of the newest patch
        # A work item's exception from a process pool carries its worker's crash site.
        live = worker_site(exc, tuple(f.original for f in self.ledger.functions())) or find_crash_site(exc)
        fs = self.state_for(live, main_code, main_path)
        site = self.ledger.original_site(live, fs)
        if (fs.key, *_site(site)) in self._taken_back:
            raise DiagnosisError(f"the heal of {site.describe()} was taken back in this process (its default failed "
                                 f"at once); not healed again")
        fingerprint = self._crashed(exc, site, fs)
        existing = next((r for r in fs.records if r.site == _site(site)), None)
        if existing is not None:
            declined = _declined(existing) if live.code is fs.current else ""
            if declined:
                # The guard is there but declined to fire: its value would have been
                # returned to a caller that decides with it (logged when it declined).
                self._refused("control_flow", exc, declined, guard=existing.guard.guard)
                return None
            if live.code is fs.current:
                raise DiagnosisError(f"{site.describe()} fails again although patched ({type(exc).__name__}); "
                                     f"one site gets one patch")
            log.info("%s is already patched in this process: replaying", site.describe())
            return self._result(existing, fs, main_code, "already", t0)
        from codesuture.runtime import governance

        tier, why = governance.decide(self, fs, site, fingerprint)  # tiers, allow/deny, caps, rolled back (docs/governance.md)
        if tier == "observe":
            governance.observe(self, fs, site, exc, why)
            return None
        stored = [] if tier != "auto" else [r for r in self._stored_records(fs) if (r.qualname, r.firstlineno) == (site.code.co_qualname, site.code.co_firstlineno)]
        adopted = next((r for r in stored if r.site == _site(site)), None)
        if adopted is not None:
            self.ledger.apply(fs, [*fs.records, *[r for r in stored if r.site not in {x.site for x in fs.records}]])
            log.warning("adopted the patch another process made at %s (%s)", site.describe(), adopted.guard.guard)
            return self._result(adopted, fs, main_code, "adopted", t0)
        known = None if self.report_only else self._known(fingerprint, exc, site, fs)
        spec = (known.guard if known is not None else diagnose(exc, site))._replace(flow="")
        decider, flow_note = None, "data"
        if not self._control_flow_allowed(fs.module):  # data flows on; decisions fail closed
            verdict = value_verdict(exc, site, spec, live.code)
            if verdict.action == "refuse":
                decider = verdict.reason
            elif verdict.action == "raise":
                d = verdict.decision
                spec = spec._replace(flow=f"raise:{d.offset}:{d.raising}:{-d.net}")
                flow_note = f"takes the raising side of {d.what} at line {d.line}" + (
                    f", skipping lines {d.skips} (no effect outside the frame)" if d.skips else "")
            elif verdict.returned:
                spec = spec._replace(flow=f"return:{verdict.returned}")
                flow_note = "returned: the callers are checked each time it fires"
                if caller_first(spec) and returned_unchanged_at(site, spec):
                    spec = spec._replace(flow=spec.flow + AS_IS)  # the caller's consumer decides the default
                    flow_note += "; its default is what the caller's consumer needs"
            elif verdict.reason != "data":
                flow_note = verdict.reason
            if verdict.action == "heal" and verdict.truth_gate:  # a bool default declines when it fires
                spec = spec._replace(flow=spec.flow + NO_TRUTH)
        else:
            flow_note = "control flow allowed for this module (--control-flow)"
        if self.report_only:
            log.warning("crash not healed (prod mode, healing off): site=%s:%s function=%s instruction=%s@%d "
                        "exception=%s would_patch=%s%s yields=%s", site.filename, site.line, site.code.co_qualname,
                        site.opname, site.offset, type(exc).__name__, spec.guard, f"/{spec.form}" if spec.form else "",
                        spec.default)
            self._refused("report_only", exc, spec.guard)
            return None
        now = time.time()
        line, end_line, col, end_col = site.positions
        record = PatchRecord(
            module=fs.module, qualname=site.code.co_qualname, firstlineno=site.code.co_firstlineno,
            offset=site.offset, opname=site.opname, line=line, end_line=end_line, col=col, end_col=end_col,
            expression="", exception=describe_exception(exc, self.record_messages), guard=spec,
            created=iso_utc(now), expires=iso_utc(now + self.ttl) if self.ttl else "",
            evidence={"default": default_rule(spec), "flow": flow_note,
                      **({"fingerprint": fingerprint} if fingerprint else {}),
                      **({"registry": _where(known)} if known is not None else {})},
        )
        if decider is not None:
            proposal = record._replace(expression=site.expression)
            where = self.propose(fs, proposal)
            log.warning("not healed: the default %s would yield at %s decides control flow: %s; a default must "
                        "not choose a branch, the original exception propagates%s", spec.guard, site.describe(), decider,
                        f"; proposed for review in {where}" if where else "")
            self._refused("control_flow", exc, decider, guard=spec.guard)
            return None
        from codesuture.patch.synthesize import listing, synthesize_all

        before = listing(list(_instrs(fs.current)))
        synth = synthesize_all(fs.original, merge(fs.records, [record]), before=before)
        diffgate.check(spec, synth.added, synth.removed)
        record = record._replace(added=synth.added, removed=synth.removed)
        if self.dry_run:
            record = record._replace(expression=site.expression)  # nothing is patched: the source may be read now
            self.proposals.append(record)
            log.warning("would patch %s -> yields %s (dry run: nothing changed)", describe_patch(record), record.yields)
            self._refused("dry_run", exc, spec.guard, guard=spec.guard)
            return None
        if tier == "propose":
            governance.propose(self, fs, site, record, exc, why)
            return None
        records = merge(fs.records, [record])
        report = self.ledger.install(fs, records, synth)
        elapsed = time.perf_counter() - t0
        # The code is live: now the source text for the record (and log lines) may be read.
        record = record._replace(expression=site.expression)
        fs.records = merge(fs.records, [record])
        from codesuture.patch.synthesize import site_of

        from codesuture.patch.diffgate import render

        result = HealResult(record, render(synth.before, synth.after), self._main(fs, main_code), None, elapsed,
                            cascade=last.cascade + 1 if last else 0)
        snapshot = self._snapshot(fs)
        result.overlay, result.proposed = self._write(fs)
        # One line per patch, in the naming scheme of every CodeSuture report
        # (module:line function: guard on `expr` -> yields ...); the detail at -v.
        where = (f"; proposed for review in {result.overlay}" if result.proposed else f"; overlay {result.overlay}"
                 ) if result.overlay else "; in memory only"
        cascade = f"; guard {last.cascade + 2} of the heal of {last.first} (one crash, one heal)" if last else ""
        log.warning("patched %s -> yields %s%s%s", describe_patch(record), record.yields, where, cascade)
        log.info("  %s at offset %d; +%d instructions; %d function(s), %d parent(s) swapped; %.1f ms",
                 site.opname, site.offset, synth.added, report.functions, report.parents, elapsed * 1000)
        if not result.overlay and self.overlays is None and not self._told_memory:
            self._told_memory = True
            log.warning("patches stay in memory and are lost when the process ends: no overlay store is configured "
                        "(run under python -m codesuture.boot --overlays DIR, or set CODESUTURE_OVERLAYS)")
        self._last = takeback.begin(site_of(record), fs, record, snapshot if result.overlay else None, last)
        if result.overlay:  # what reproduces the crash, beside the overlay (review/repro.py; never raises)
            from codesuture.runtime.capture import capture

            capture(exc, live.code, record, fs.module, fs.filename, result.overlay)
        self.history.append(result)
        self._healed(result, reused=known is not None)
        return result

    # ------------------------------------------------------------------ take-back

    def _snapshot(self, fs: FunctionState) -> Any:
        """The store files :meth:`_write` may change for *fs*, as they are now (None when
        it writes nowhere)."""
        import hashlib

        from codesuture.overlay.names import stem_for
        from codesuture.runtime.takeback import Snapshot

        try:
            with open(fs.filename, "rb") as fh:
                stem = stem_for(fs.key, hashlib.sha256(fh.read()).hexdigest())
        except OSError:
            return None
        directory, _ = self._target(fs, stem)
        return None if directory is None else Snapshot.take(directory, stem, fs.key)

    def _take_back(self, last: Any, exc: BaseException, why: str = "") -> None:
        """Undo the patch *last* (:class:`codesuture.runtime.takeback.LastHeal`): its
        replay failed at once on the default it placed (or, *why*, its guard declined
        at once). The function gets its code from before the patch, the store its files
        from before the write."""
        fs, record = last.fs, last.record
        key = fs.key if fs is not None else getattr(record, "key", record.module)
        try:
            if fs is not None:
                self.ledger.revert(fs, record)
            else:  # handed on by the replay before: this process loaded it from the store
                tracked = self.ledger.tracked(key, record.qualname, record.firstlineno)
                if tracked is not None and any(r.site == record.site for r in tracked.records):
                    self.ledger.revert(tracked, next(r for r in tracked.records if r.site == record.site))
            if last.snapshot is not None:
                last.snapshot.restore()
            if fs is None:  # the process before counted it: the command's summary must not
                carried = getattr(sys.modules.get("codesuture.runtime.rerun"), "CARRIED", None)
                if isinstance(carried, dict):
                    carried["guards"] = max(int(carried.get("guards") or carried.get("patched") or 0) - 1, 0)
                    if not last.cascade:
                        carried["patched"] = max(int(carried.get("patched", 0)) - 1, 0)
        except (CodeSutureError, OSError) as err:
            log.warning("could not take back the patch at %s:%s: %s", record.module, record.line, err)
        self._taken_back.add((key, *record.site))
        self.history = [r for r in self.history if r.record is not record]
        if self._registry is not None:
            self._registry.discard(record)
        log.warning("took back the patch at %s:%s in %s (%s yielding %s): %s (%s: %s); nothing written, the code is "
                    "as before", record.module, record.line, record.qualname, record.guard.guard, record.yields,
                    why or "the replay failed at once on that default", type(exc).__name__, exc)
        self._refused("taken_back", exc, f"{record.guard.guard} at {record.module}:{record.line}",
                      guard=record.guard.guard)

    # ------------------------------------------------------------------ incidents and fingerprints

    def _crashed(self, exc: BaseException, site: Any, fs: FunctionState) -> str:
        """Record the crash at *site* as an incident; returns its site's fingerprint."""
        try:
            from codesuture.runtime import incidents

            fingerprint = incidents.fingerprint(site.code, site.offset)
            self._seen = (incidents.site_text(fs.module, site.line, site.code.co_qualname), fingerprint, True)
            incidents.record("crash", site=self._seen[0], fingerprint=fingerprint,
                             exception=describe_exception(exc, self.record_messages))
            return fingerprint
        except Exception:  # noqa: BLE001 - contained (rule 7)
            return ""

    def _refused(self, reason: str, exc: BaseException, detail: str = "", guard: str = "") -> None:
        """Record that the crash *exc* was not healed, and why (never raises)."""
        try:
            from codesuture.runtime import incidents

            text = describe_exception(exc, self.record_messages)
            if self._seen is None:
                site, fingerprint = incidents.exception_site(exc)
                self._seen = (site, fingerprint, True)
                incidents.record("crash", site=site, fingerprint=fingerprint, exception=text)
            incidents.record("refusal", site=self._seen[0], fingerprint=self._seen[1], exception=text, reason=reason,
                             guard=guard, detail=detail)
        except Exception:  # noqa: BLE001 - contained (rule 7)
            pass

    def _healed(self, result: HealResult, reused: bool = False) -> None:
        """Record a heal (new, replayed or adopted) and remember its fingerprint."""
        try:
            from codesuture.runtime import incidents

            record = result.record
            incidents.note_record(record)
            if self._registry is not None:
                self._registry.add(record)
            site, fingerprint = (self._seen[0], self._seen[1]) if self._seen else ("", "")
            incidents.record("heal", site=site, fingerprint=fingerprint or (record.evidence or {}).get("fingerprint", ""),
                             guard=record.guard.guard, exception=record.exception,
                             status="cascade" if result.cascade else result.status, reused=reused,
                             proposed=result.proposed, overlay=result.overlay or "", ms=round(result.seconds * 1000, 1))
        except Exception:  # noqa: BLE001 - contained (rule 7)
            pass

    def _known(self, fingerprint: str, exc: BaseException, site: Any, fs: FunctionState) -> PatchRecord | None:
        """The record of another site with *fingerprint* (and *exc*'s kind) whose guard
        fits *site* too: tried by synthesizing it there alone, within its diff budget.
        None when there is none (then the crash is diagnosed)."""
        if not fingerprint:
            return None
        from codesuture.runtime.incidents import Registry

        if self._registry is None:
            # In prod the store is verified only at load: its metadata never picks a guard.
            self._registry = Registry([] if self.prod else [self.overlays, self.pending])
            for r in self.ledger.records():
                self._registry.add(r)
        known = self._registry.lookup(fingerprint, exc)
        if known is None:
            return None
        from codesuture.patch import diffgate
        from codesuture.patch.synthesize import synthesize_all

        line, end_line, col, end_col = site.positions
        trial = known._replace(module=fs.module, qualname=site.code.co_qualname, firstlineno=site.code.co_firstlineno,
                               offset=site.offset, opname=site.opname, line=line, end_line=end_line, col=col,
                               end_col=end_col)
        try:
            synth = synthesize_all(site.code, [trial])
            diffgate.check(known.guard, synth.added, synth.removed)
        except CodeSutureError as err:
            log.info("the guard known for fingerprint %s (%s) does not fit %s: %s; diagnosing", fingerprint,
                     _where(known), site.describe(), err)
            return None
        log.info("fingerprint %s is known (%s at %s): reapplying its guard at %s without a new diagnosis",
                    fingerprint, known.guard.guard + (f"/{known.guard.form}" if known.guard.form else ""),
                    _where(known), site.describe())
        return known

    def _result(self, record: PatchRecord, fs: FunctionState, main_code: types.CodeType | None, status: str,
                t0: float) -> HealResult:
        result = HealResult(record, "", self._main(fs, main_code), None, time.perf_counter() - t0, status)
        self.history.append(result)
        self._healed(result)
        return result

    def _main(self, fs: FunctionState, main_code: types.CodeType | None) -> types.CodeType | None:
        """The script's module code with *fs*'s current code in place of its older ones."""
        if main_code is None or fs.module != "__main__":
            return None
        from codesuture.patch.synthesize import replace_in_tree

        new = main_code
        for old in [fs.original, *fs.lineage[:-1]]:
            new = replace_in_tree(new, old, fs.current)
        return new

    def _key_of(self, live: Any, main_code: types.CodeType | None, main_path: str | None) -> tuple[str, str]:
        """``(module name, overlay key)`` of the function running ``live.code``."""
        from codesuture.overlay.names import main_key, script_origin
        from codesuture.patch.synthesize import walk_code

        in_main = main_code is not None and any(c is live.code for c in walk_code(main_code))
        if in_main or live.module == "__main__":
            path = main_path if in_main and main_path else live.filename
            return "__main__", main_key(script_origin(path, self._app_root(path)))
        return live.module, live.module

    def state_for(self, live: Any, main_code: types.CodeType | None = None, main_path: str | None = None) -> FunctionState:
        """The ledger's :class:`FunctionState` of the function running ``live.code``."""
        return self.ledger.state_for(live, main_code, main_path, self._key_of)

    def _control_flow_allowed(self, module: str) -> bool:
        import fnmatch

        return any(fnmatch.fnmatchcase(module, pattern) for pattern in self.control_flow)

    def propose(self, fs: FunctionState, record: PatchRecord, tier: str = "propose") -> str | None:
        """Write *record* alone as a proposal (tier ``propose``) into the pending
        directory; the live code is not changed. Returns the overlay path or None."""
        from codesuture.overlay.names import module_origin, script_origin
        from codesuture.store.directory import DirectoryStore
        from codesuture.store.writer import write_overlay

        if self.pending is None or self.dry_run:
            return None
        try:
            with open(fs.filename, "rb") as fh:
                source = fh.read()
            app_root = self._app_root(fs.filename)
            origin = script_origin(fs.filename, app_root) if fs.module == "__main__" else module_origin(fs.filename, app_root)
            return write_overlay(DirectoryStore(self.pending, budget=None), fs.key, fs.module, fs.filename, [record],
                                 origin=origin, source=source, tier=tier)
        except (CodeSutureError, OSError, SyntaxError) as exc:
            log.warning("no proposal written for %s: %s", fs.key, exc)
            return None

    def _app_root(self, path: str) -> str:
        if self.app_root:
            return self.app_root
        from codesuture.settings import find_app_root

        return find_app_root(os.path.dirname(os.path.abspath(path)))

    def _target(self, fs: FunctionState, stem: str) -> tuple[str | None, bool]:
        """``(directory to write into, whether it is the pending directory)``."""
        if self.overlays is not None and not self.prod and not os.path.isfile(self.overlays):
            from codesuture.overlay.names import ENVELOPE_SUFFIX, SET_NAME, SIGSTORE_SUFFIX

            signed = any(os.path.lexists(os.path.join(self.overlays, n))
                         for n in (SET_NAME, stem + ENVELOPE_SUFFIX, stem + SIGSTORE_SUFFIX))
            if not signed:
                return self.overlays, False
        return self.pending, True

    def _stored_records(self, fs: FunctionState) -> list[PatchRecord]:
        """Records another process wrote for this module's source, where this healer
        writes (the store in dev, the pending directory otherwise)."""
        import hashlib

        from codesuture.overlay.names import stem_for
        from codesuture.store.directory import DirectoryStore
        from codesuture.store.writer import stored_records

        try:
            with open(fs.filename, "rb") as fh:
                stem = stem_for(fs.key, hashlib.sha256(fh.read()).hexdigest())
        except OSError:
            return []
        directory, _ = self._target(fs, stem)
        if directory is None or self.dry_run or self.report_only:
            return []
        # An expired record is never adopted: the crash is healed anew, which renews it.
        now = time.time()
        return [r for r in stored_records(DirectoryStore(directory, budget=None), stem) if not r.expired(now)]

    def _write(self, fs: FunctionState) -> tuple[str | None, bool]:
        """Write the module's overlay; returns (its path or None, proposed)."""
        import hashlib

        from codesuture.overlay.names import module_origin, script_origin, stem_for
        from codesuture.store.directory import DirectoryStore
        from codesuture.store.writer import write_overlay

        try:
            with open(fs.filename, "rb") as fh:
                source = fh.read()
        except OSError as exc:
            log.warning("patched live, but no overlay written for %s: %s", fs.key, exc)
            return None, False
        directory, proposed = self._target(fs, stem_for(fs.key, hashlib.sha256(source).hexdigest()))
        if directory is None:
            return None, False
        records = self.ledger.records(fs.key)
        # The patches of the overlay this module was loaded from, in functions this
        # healer never touched, go along: a proposal (pending) must be able to replace
        # that overlay after review without dropping them.
        from codesuture.loader.resolve import loaded_patches

        sites = {r.site for r in records}
        from codesuture.runtime.governance import ROLLED_BACK  # never re-proposed (docs/governance.md)

        records += [r for r in loaded_patches(fs.key) if r.site not in sites and (fs.key, *r.site) not in ROLLED_BACK]
        app_root = self._app_root(fs.filename)
        origin = script_origin(fs.filename, app_root) if fs.module == "__main__" else module_origin(fs.filename, app_root)
        try:
            path = write_overlay(DirectoryStore(directory, budget=None), fs.key, fs.module, fs.filename, records,
                                 origin=origin, source=source, tier="propose" if proposed else self.tier)
        except (CodeSutureError, OSError, SyntaxError) as exc:
            log.warning("patched live, but no overlay written for %s: %s", fs.key, exc)
            return None, False
        if origin.startswith("app:"):  # where review finds this source (store/app_root.py)
            from codesuture.store.app_root import record

            record(directory, app_root)
        if proposed:
            log.warning("proposed overlay %s (pending review: never loaded until signed and moved into a store)", path)
        return path, proposed


def describe_patch(record: PatchRecord) -> str:
    """``module:line function: guard on `expression``` -- how every CodeSuture report
    (the heal log line, ``run``, ``explain``, ``suggest``) names a patch."""
    guard = record.guard.guard + (f"/{record.guard.form}" if record.guard.form else "")
    return f"{record.module}:{record.line} {record.qualname}: {guard} on `{record.expression}`"


def _where(record: PatchRecord) -> str:
    """``module:line qualname`` of *record*."""
    return f"{record.module}:{record.line} {record.qualname}"


def _stopped(healer: Healer) -> bool:
    """True once the kill switch went off in this process (:mod:`codesuture.runtime.killswitch`);
    else charges the open unit of work's guard sites with this failure
    (:func:`codesuture.runtime.governance.second_failure`) and returns False."""
    import sys

    switch = sys.modules.get("codesuture.runtime.killswitch")
    path = getattr(healer, "kill_file", None)
    if (switch is None or switch.KILLED is None) and path and os.path.lexists(path):
        # Every heal looks (one lstat, off the healthy path): a boundary's healer may run
        # in a process whose watcher never started or has not looked yet.
        from codesuture.runtime import killswitch

        killswitch.trigger(f"kill file {path}", wait=True)  # reentrant: this healer's lock is an RLock
        switch = killswitch
    if switch is not None and switch.KILLED is not None:
        log.info("not healed: the kill switch went off in this process (%s)", switch.KILLED)
        return True
    from codesuture.runtime import governance

    governance.second_failure(healer)
    return False


def _declined(record: PatchRecord) -> str:
    """Why the guard of *record* last declined to fire in this process ("" if it did not)."""
    from codesuture.patch.synthesize import site_of
    from codesuture.runtime import events

    return events.DECLINED.pop(site_of(record), "")


def _site(site: Any) -> tuple[str, int, int]:
    return (site.code.co_qualname, site.code.co_firstlineno, site.offset)



def _instrs(code: types.CodeType) -> Any:
    from bytecode import Bytecode

    return Bytecode.from_code(code)



_DEFAULT: list[Healer] = []


def default_healer() -> Healer | None:
    """The process-wide healer for boundaries that were not given one, configured from
    the environment ``python -m codesuture.boot`` exports. None when healing is off,
    CodeSuture is disabled, or the settings are invalid (logged)."""
    from codesuture import settings

    try:
        if settings.disabled():
            return None
        s = settings.load(environ=os.environ)
    except CodeSutureError as exc:
        log.warning("not healing: %s", exc)
        return None
    if not s.heal:
        return None
    if not _DEFAULT:
        _DEFAULT.append(Healer.from_settings(s))
    return _DEFAULT[0]


def disabled() -> bool:
    """The kill switch: ``CODESUTURE_DISABLE`` true. An invalid value counts as set."""
    from codesuture import settings

    try:
        return settings.disabled()
    except CodeSutureError:
        return True





__all__ = ["Healer", "HealResult", "FunctionState", "default_healer", "disabled", "describe_exception", "describe_patch"]
