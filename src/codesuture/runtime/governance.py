"""Governed healing in one process: policy tiers, allow/deny lists, blast-radius caps,
and the automatic rollback of a patch whose units of work keep failing.

See ``docs/governance.md``. Everything here runs on the crash path only (the healer
calls it once it knows the crash site); nothing is added to the healthy path.

**Tiers** (setting ``tiers``: ordered rules ``glob=tier``, ``fnmatch`` on module
names, the first match decides; default ``auto``):

* ``observe``: the crash is recorded (one structured WARNING, a ``refusal`` incident
  with reason ``tier``) and nothing changes: no patch, no file;
* ``propose``: the patch (with its evidence) is written into the pending directory
  with tier ``propose`` and not applied live; the loader never loads it until
  ``codesuture sign`` approves it;
* ``auto``: healed live and written (as before).

The standard library and CodeSuture itself are always denied
(:func:`codesuture.loader.finder._never_overlaid`, the loader's own refusal); the
settings ``deny`` (and ``allow``, when given) name more modules. A denied module is
observed. The loader applies ``allow``/``deny`` to overlays too
(:func:`codesuture.trust.policy.admit`, step 8).

**Caps** (0: none): ``max_patches_per_process`` (new live patches of this process),
``max_patches_per_module`` (patched sites of the module live in this process, the
overlay it was loaded from included), ``max_patches_per_hour`` (records created in the
last hour in the store and the pending directory, from their ``created`` times). A
crash that would go over a cap is observed.

**Automatic rollback** (setting ``rollback_after``, default 3; 0: off): when a unit of
work (:class:`codesuture.runtime.events.Unit`: a request) in which a guard fired then
crashes (a *second failure*), each guard site that fired in it is charged once; at
``rollback_after`` charges the patch of that site is reverted live (only that site's
record: the function is re-synthesized from its other records, or restored to its
original code), a ``rollback`` incident is recorded, the site is observed from then
on in this process, and the record is written for review into the pending
directory with ``evidence.review = "auto-rolled-back"`` and tier ``observe`` (which
the loader never loads and ``sign`` never signs). Signed files are never touched.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time

from codesuture.logs import logger

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

log = logger("codesuture.heal")

#: ``(store key, qualname, firstlineno, offset)`` of sites whose patch was rolled back
#: automatically in this process: observed from then on.
ROLLED_BACK: set[tuple[str, str, int, int]] = set()
#: Site fingerprint -> how automatic rollback took its patch out in this process: never
#: re-applied without review (a healer's own :meth:`~codesuture.runtime.healer.Healer.rollback`
#: keeps its own, ``Healer.rolled_back``).
FINGERPRINTS: dict[str, str] = {}
#: guard site (``"<guard>@<module>:<line>"``) -> units of work that failed after it fired.
FAILURES: dict[str, int] = {}
_LOCK = threading.Lock()
_ATTR = "_codesuture_charged"  # set on a Unit once its failure was charged


class Policy:
    """The governance settings of one healer (see the module docstring)."""

    __slots__ = ("rules", "allow", "deny", "per_process", "per_module", "per_hour", "rollback_after")

    def __init__(self, tiers: "tuple[str, ...] | list[str]" = (), allow: "tuple[str, ...]" = (),
                 deny: "tuple[str, ...]" = (), per_process: int = 0, per_module: int = 0, per_hour: int = 0,
                 rollback_after: int = 3) -> None:
        self.rules = tuple((g, t) for g, _, t in (r.rpartition("=") for r in tiers))
        self.allow, self.deny = tuple(allow), tuple(deny)
        self.per_process, self.per_module, self.per_hour = per_process, per_module, per_hour
        self.rollback_after = rollback_after

    @classmethod
    def from_settings(cls, s: Any) -> "Policy":
        return cls(tuple(getattr(s, "tiers", ())), tuple(getattr(s, "allow", ())), tuple(getattr(s, "deny", ())),
                   getattr(s, "max_patches_per_process", 0), getattr(s, "max_patches_per_module", 0),
                   getattr(s, "max_patches_per_hour", 0), getattr(s, "rollback_after", 3))

    def __repr__(self) -> str:
        return (f"Policy(rules={self.rules!r}, allow={self.allow!r}, deny={self.deny!r}, caps=({self.per_process}, "
                f"{self.per_module}, {self.per_hour}), rollback_after={self.rollback_after})")


DEFAULT = Policy()


def policy_of(healer: Any) -> Policy:
    found = getattr(healer, "governance", None)
    return found if isinstance(found, Policy) else DEFAULT


def module_tier(policy: Policy, module: str) -> tuple[str, str]:
    """``(tier, why)`` for crashes in *module* by the lists and tier rules (caps aside)."""
    from codesuture.loader.finder import _never_overlaid

    why = _never_overlaid(module)
    if why:
        return "observe", why
    if any(fnmatch.fnmatchcase(module, g) for g in policy.deny):
        return "observe", f"module {module} is denied by the settings (deny)"
    if policy.allow and not any(fnmatch.fnmatchcase(module, g) for g in policy.allow):
        return "observe", f"module {module} is not in the settings' allow list"
    for glob, tier in policy.rules:
        if fnmatch.fnmatchcase(module, glob):
            return tier, f"tier rule {glob}={tier}"
    return "auto", ""


def decide(healer: Any, fs: Any, site: Any, fingerprint: str = "") -> tuple[str, str]:
    """``(tier, why)`` for a new patch at *site* (in the function of *fs*), whose site
    fingerprint is *fingerprint* ("" when unknown)."""
    ident = (fs.key, site.code.co_qualname, site.code.co_firstlineno, site.offset)
    if ident in ROLLED_BACK:
        return "observe", "its patch was rolled back automatically in this process (rollback_after)"
    marked = _marked(healer, fs, ident[1:])
    if marked:
        return "observe", f"its patch was rolled back automatically and awaits review in {marked}"
    taken_out = rolled_back_fingerprint(healer, fingerprint)
    if taken_out:
        return "observe", taken_out
    policy = policy_of(healer)
    tier, why = module_tier(policy, fs.module)
    if tier != "auto":
        return tier, why
    cap = over_cap(healer, policy, fs)
    return ("observe", cap) if cap else ("auto", "")


def rolled_back_fingerprint(healer: Any, fingerprint: str) -> str | None:
    """Why a crash with site *fingerprint* must not be patched again without a new
    review, or None: a patch with that fingerprint was taken out by automatic rollback
    (in this process, or marked for review in the pending directory by any process)
    or by ``codesuture rollback`` (the host state's rolled-back fingerprints), or
    :meth:`~codesuture.runtime.healer.Healer.rollback` reverted it in this process.
    Without this, the fingerprint registry (or a new diagnosis) would put the same
    guard back at the next crash: the patch would flap."""
    if not fingerprint:
        return None
    where = FINGERPRINTS.get(fingerprint) or getattr(healer, "rolled_back", {}).get(fingerprint)
    if where:
        return f"a patch with its fingerprint {fingerprint} was {where}; it is not re-applied without a new review"
    pending = getattr(healer, "pending", None)
    if pending and os.path.isdir(pending):
        from codesuture.runtime.incidents import records_in

        for r in records_in(pending):
            evidence = r.evidence or {}
            if evidence.get("review") == "auto-rolled-back" and evidence.get("fingerprint") == fingerprint:
                return (f"a patch with its fingerprint {fingerprint} ({r.module}:{r.line} {r.qualname}) was rolled back "
                        f"automatically and awaits review in {pending}")
    state_dir = getattr(healer, "state_dir", None)
    if state_dir:
        from codesuture.trust.state import HostState

        try:
            taken = HostState(state_dir).rolled_back(fresh=True).get(fingerprint)
        except Exception:  # noqa: BLE001 - contained (rule 7): an unreadable state is an empty one
            taken = None
        if isinstance(taken, dict):
            return (f"a patch with its fingerprint {fingerprint} ({taken.get('what', '?')}) was taken out by "
                    f"`codesuture rollback` at {taken.get('at', '?')}; it is not re-applied without a new review")
    return None


def _marked(healer: Any, fs: Any, site: tuple[str, int, int]) -> str | None:
    """The pending overlay in which an automatic rollback marked the record of *site*
    for review (by any process of this app), or None."""
    if healer.pending is None or not os.path.isdir(healer.pending):
        return None
    import hashlib

    from codesuture.overlay.names import META_SUFFIX, OVERLAY_SUFFIX, stem_for
    from codesuture.store.directory import DirectoryStore
    from codesuture.store.writer import stored_records

    try:
        with open(fs.filename, "rb") as fh:
            stem = stem_for(fs.key, hashlib.sha256(fh.read()).hexdigest())
    except (OSError, ValueError):
        return None
    if not os.path.isfile(os.path.join(healer.pending, stem + META_SUFFIX)):
        return None
    for r in stored_records(DirectoryStore(healer.pending, budget=None), stem):
        if r.site == site and (r.evidence or {}).get("review") == "auto-rolled-back":
            return os.path.join(healer.pending, stem + OVERLAY_SUFFIX)
    return None


def over_cap(healer: Any, policy: Policy, fs: Any) -> str | None:
    """Which blast-radius cap one more live patch would exceed, or None. A replay is the
    same run started again in a fresh process (:mod:`codesuture.runtime.rerun`): the
    patches of the attempts before it count toward ``max_patches_per_process`` too."""
    if policy.per_process:
        import sys

        rerun = sys.modules.get("codesuture.runtime.rerun")  # loaded only when a run replays
        made = healer.patches + int(getattr(rerun, "CARRIED", {}).get("patched", 0) or 0)
        if made >= policy.per_process:
            return f"max_patches_per_process {policy.per_process} reached ({made} patch(es) in this process and its replays)"
    if policy.per_module:
        from codesuture.loader.resolve import loaded_patches

        sites = {r.site for r in healer.ledger.records(fs.key)}
        sites |= {r.site for r in loaded_patches(fs.key)}
        if len(sites) >= policy.per_module:
            return f"max_patches_per_module {policy.per_module} reached ({len(sites)} patched site(s) in {fs.module})"
    if policy.per_hour:
        recent = recent_records(healer, time.time() - 3600)
        if recent >= policy.per_hour:
            return f"max_patches_per_hour {policy.per_hour} reached ({recent} patch(es) created in the last hour)"
    return None


def recent_records(healer: Any, since: float) -> int:
    """Distinct patch records created at or after *since* in the healer's store folder
    and pending folder (by their ``created`` times)."""
    from codesuture.errors import CodeSutureError
    from codesuture.overlay.model import OverlayMeta
    from codesuture.overlay.names import META_SUFFIX
    from codesuture.store.directory import DirectoryStore
    from codesuture.util.clock import iso_utc

    floor = iso_utc(since)
    seen: set[tuple[str, tuple[str, int, int], str]] = set()
    for folder in {healer.overlays, healer.pending} - {None}:
        if not os.path.isdir(folder):
            continue
        try:
            index = DirectoryStore(folder, budget=None).index()
        except CodeSutureError:
            continue
        for entries in index.values():
            for entry in entries:
                try:
                    raw = entry.read(META_SUFFIX)
                    if raw is None:
                        continue
                    meta = OverlayMeta.loads(raw, entry.name)
                except CodeSutureError:
                    continue
                for r in meta.patches:
                    if r.created and r.created >= floor:
                        seen.add((meta.key, r.site, r.created))
    return len(seen)


def observe(healer: Any, fs: Any, site: Any, exc: BaseException, why: str) -> None:
    """Tier ``observe``: one structured WARNING and a ``refusal`` incident; nothing changes."""
    log.warning("crash observed, not healed (tier observe: %s): site=%s:%s function=%s instruction=%s@%d exception=%s",
                why, site.filename, site.line, site.code.co_qualname, site.opname, site.offset, type(exc).__name__)
    _refused(healer, exc, f"observe: {why}")


def propose(healer: Any, fs: Any, site: Any, record: Any, exc: BaseException, why: str) -> None:
    """Tier ``propose``: the patch goes to the pending directory only, not live."""
    where = healer.propose(fs, record._replace(expression=site.expression))
    log.warning("not healed live (tier propose: %s): the patch for %s is %s", why, site.describe(),
                f"proposed for review in {where}" if where else "not written (no pending directory)")
    _refused(healer, exc, f"propose: {why}", record.guard.guard)


def _refused(healer: Any, exc: BaseException, detail: str, guard: str = "") -> None:
    refused = getattr(healer, "_refused", None)  # the healer's incident for "not healed"
    if refused is not None:
        try:
            refused("tier", exc, detail, guard=guard)
        except Exception:  # noqa: BLE001 - contained (rule 7)
            pass


# ------------------------------------------------------------------ automatic rollback


def second_failure(healer: Any) -> None:
    """The healer was offered a crash: when a unit of work is open here and a guard
    fired in it before, charge each site that fired (once per unit) and roll back the
    patch of every site that reached ``rollback_after``. Never raises."""
    try:
        from codesuture.runtime import events

        unit = events.current()
        if unit is None or not unit._fired or getattr(unit, _ATTR, False):
            return
        setattr(unit, _ATTR, True)
        limit = policy_of(healer).rollback_after
        if limit <= 0:
            return
        due: list[tuple[str, int]] = []
        with _LOCK:
            for site in dict.fromkeys(unit._fired):
                n = FAILURES[site] = FAILURES.get(site, 0) + 1
                if n >= limit:
                    del FAILURES[site]
                    due.append((site, n))
        for site, n in due:
            revert_site(healer, site, n)
    except Exception as exc:  # noqa: BLE001 - contained (rule 7)
        log.warning("automatic rollback failed: internal error %r", exc)


def revert_site(healer: Any, site: str, failures: int) -> bool:
    """Revert the patch whose guard reports as *site*, live: the function runs its
    other records, or its original code. Returns True when a patch was reverted."""
    from codesuture.patch.synthesize import site_of

    with healer.ledger.lock:
        found = healer.ledger.find(lambda r: site_of(r) == site)
        fs, record = found if found is not None else _loaded(healer, site)
        if fs is None or record is None:
            log.warning("automatic rollback: no live patch reports as %s in process %d", site, os.getpid())
            return False
        # Marked before the revert: the fleet watcher, reading the ledger without its lock,
        # then never sees the record gone without the mark (it would apply it live again).
        ROLLED_BACK.add((fs.key, record.qualname, record.firstlineno, record.offset))
        functions = healer.ledger.revert(fs, record)
        fp = (record.evidence or {}).get("fingerprint")
        if fp:
            FINGERPRINTS[str(fp)] = f"rolled back automatically in this process ({record.module}:{record.line} " \
                                    f"{record.qualname})"
        where = _mark_for_review(healer, fs, record, failures)
    from codesuture.runtime import incidents

    incidents.record("rollback", scope="auto", site=incidents.site_text(record.module, record.line, record.qualname),
                     guard=record.guard.guard, fingerprint=str((record.evidence or {}).get("fingerprint", "")),
                     functions=functions, failures=failures, review=where or "")
    log.warning("automatic rollback: the patch at %s:%s in %s (%s) reverted live in process %d after %d unit(s) of "
                "work failed after its guard fired (%d function(s)); %s", record.module, record.line, record.qualname,
                record.guard.guard, os.getpid(), failures, functions,
                f"marked for review in {where}" if where else "not marked for review (no pending directory)")
    return True


def _loaded(healer: Any, site: str) -> tuple[Any, Any]:
    """``(function state, record)`` for a patch that came from an overlay loaded at
    import (or applied by the fleet watcher), taken over by *healer*; ``(None, None)``."""
    import sys
    import types

    from codesuture.loader.resolve import LOADED, loaded_patches
    from codesuture.patch.swap import functions_by_name
    from codesuture.patch.synthesize import site_of

    for key in list(LOADED):
        record = next((r for r in loaded_patches(key) if site_of(r) == site), None)
        if record is None:
            continue
        module = sys.modules.get(record.module)
        if module is None:
            return None, None
        ident = (record.qualname, record.firstlineno)
        for fn in functions_by_name(module):
            stack = [fn.__code__]
            while stack:
                code = stack.pop()
                if (code.co_qualname, code.co_firstlineno) == ident:
                    live = types.SimpleNamespace(code=code, module=record.module, filename=code.co_filename)
                    fs = healer.state_for(live)
                    return fs, next((r for r in fs.records if r.site == record.site), None)
                stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return None, None


def _mark_for_review(healer: Any, fs: Any, record: Any, failures: int) -> str | None:
    """Write *record*, marked ``review: auto-rolled-back``, into the pending directory
    (tier ``observe``: never loaded, never signed). Returns the overlay path or None."""
    from codesuture.util.clock import iso_utc

    if healer.pending is None or healer.dry_run:
        return None
    marked = record._replace(evidence={**(record.evidence or {}), "review": "auto-rolled-back",
                                       "rolled_back_at": iso_utc(time.time()), "failures": failures})
    where: str | None = healer.propose(fs, marked, tier="observe")
    return where


# ------------------------------------------------------------------ kill switch: revert everything


def revert_all(session: Any, reason: str = "requested", t0: float | None = None) -> tuple[int, float]:
    """The kill switch (:mod:`codesuture.runtime.killswitch`): stop healing and revert
    every live patch of this process: healers' patches to their original code, overlay
    code (loaded at import or applied by the fleet watcher) to its source's code; the
    fleet watcher stopped and the finder off ``sys.meta_path``. *session*: this
    process's :class:`~codesuture.runtime.session.Session` (its healer), or None.
    Returns ``(functions given their original code back, seconds since *t0*)``. The
    caller stops healing first (``killswitch.KILLED``)."""
    import sys

    t0 = time.perf_counter() if t0 is None else t0
    # The fleet watcher's module armed the switch, so it is loaded when a watcher runs
    # (looked up, not imported: fleet -> killswitch -> here). A look in progress ends first.
    fleet = sys.modules.get("codesuture.runtime.fleet")
    watcher = fleet.current() if fleet is not None else None
    if watcher is not None:
        fleet.stop(0.0)  # type: ignore[union-attr]
        watcher.settle()
    finder = sys.modules.get("codesuture.loader.finder")
    if finder is not None:
        finder.uninstall()
    healers = _healers(session)
    functions = 0
    for healer in healers:
        functions += int(healer.rollback())
    locks = sorted((h.ledger.lock for h in healers), key=id)  # no heal runs while overlay code is swapped out
    for lock in locks:
        lock.acquire()
    try:
        functions += _revert_loaded(session)
    finally:
        for lock in reversed(locks):
            lock.release()
    seconds = time.perf_counter() - t0
    from codesuture.runtime import incidents

    incidents.record("rollback", scope="kill_switch", reason=reason, functions=functions,
                     milliseconds=round(seconds * 1000, 3))
    log.warning("kill switch (%s): %d function(s) reverted to their original code in process %d in %.1f ms; "
                "healing stopped, overlays no longer loaded", reason, functions, os.getpid(), seconds * 1000)
    return functions, seconds


def _healers(session: Any) -> list[Any]:
    """The healers of this process: the session's and the boundaries' default one."""
    import sys

    out: list[Any] = []
    for healer in (getattr(session, "healer", None),
                   *getattr(sys.modules.get("codesuture.runtime.healer"), "_DEFAULT", ())):
        if healer is not None and hasattr(healer, "ledger") and all(h is not healer for h in out):
            out.append(healer)
    return out


def _revert_loaded(session: Any) -> int:
    """Give every function that runs overlay code its source's code back."""
    import sys

    from codesuture.errors import CodeSutureError

    loaded = getattr(sys.modules.get("codesuture.loader.resolve"), "LOADED", {})
    count = 0
    for key in list(loaded):
        module = _module_for(key, session)
        if module is None:
            continue
        try:
            count += _revert_module(module)
        except (CodeSutureError, OSError, SyntaxError, ValueError) as exc:
            log.warning("kill switch: %s not reverted: %s", key, exc)
        except Exception as exc:  # noqa: BLE001 - contained: the next module is still reverted
            log.warning("kill switch: %s not reverted: internal error %r", key, exc)
    return count


def _module_for(key: str, session: Any) -> Any:
    import sys

    if not key.startswith("__main__."):
        return sys.modules.get(key)
    from codesuture.overlay.names import main_key, script_origin

    app_root = getattr(getattr(session, "settings", None), "app_root", None)
    for name in ("__main__", "__mp_main__"):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if module is None or not isinstance(path, str) or not os.path.isfile(path):
            continue
        try:
            if main_key(script_origin(path, app_root or os.path.dirname(path))) == key:
                return module
        except (OSError, ValueError):
            continue
    return None


def _revert_module(module: Any) -> int:
    """Swap the source's code back into every live function of *module* (found by
    name, as the fleet watcher finds them) that runs other code. Returns the count."""
    from codesuture.overlay.build import compile_module
    from codesuture.patch.swap import functions_by_name, swap_many
    from codesuture.patch.synthesize import walk_code

    spec = getattr(module, "__spec__", None)
    path = getattr(spec, "origin", None) if getattr(spec, "has_location", False) else None
    path = path or getattr(module, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py") or not os.path.isfile(path):
        return 0
    with open(path, "rb") as fh:
        root = compile_module(fh.read(), path)
    original: dict[tuple[str, int], list[Any]] = {}
    for code in walk_code(root):
        if code is not root:
            original.setdefault((code.co_qualname, code.co_firstlineno), []).append(code)
    live: dict[tuple[str, int], dict[int, Any]] = {}
    for fn in functions_by_name(module, {path, getattr(module, "__file__", None) or path}):
        for code in walk_code(fn.__code__):
            live.setdefault((code.co_qualname, code.co_firstlineno), {})[id(code)] = code
    changes: dict[int, tuple[Any, list[Any]]] = {}
    for ident, codes in original.items():
        if len(codes) != 1:
            continue  # two lambdas on one line: which is which is not known by name
        new = codes[0]
        for current in live.get(ident, {}).values():
            if current is not new and current != new:
                changes.setdefault(id(new), (new, []))[1].append(current)
    if not changes:
        return 0
    return int(swap_many([(olds, new) for new, olds in changes.values()], module).functions)


__all__ = ["revert_all", "Policy", "DEFAULT", "policy_of", "module_tier", "decide", "over_cap", "recent_records", "observe",
           "propose", "second_failure", "revert_site", "ROLLED_BACK", "FAILURES", "FINGERPRINTS",
           "rolled_back_fingerprint"]
