"""CodeSuture in one process: what boot, ``codesuture run`` and the start-up hook of
spawned workers set up before the program runs (the store and its finder, the
healer, process-wide crash hooks, the kill switch's signal, the fleet watcher), and
the session summary.

Kept import-light: nothing heavy is imported before a store, a crash or an overlay
needs it. A start without a store imports this module and nothing else of the
runtime but :mod:`codesuture.runtime.hookfinder` (the crash hooks themselves are
imported with the first module they patch, the healer on the first crash, the fleet
watcher with a store); no ``from __future__`` import.
"""

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from codesuture.settings import Settings


class Session:
    """CodeSuture in one process: its settings, the finder (or None), the healer (made
    on the first crash, or None) and the CLI's verbosity."""

    __slots__ = ("settings", "finder", "healer", "verbose")

    def __init__(self, settings: "Settings") -> None:
        self.settings = settings
        self.finder: Any = None
        self.healer: Any = None
        self.verbose = 0

    def heal(self, exc: BaseException, main_code: "Any" = None, main_path: "str | None" = None) -> "Any":
        """Heal *exc* (the healer, and ``bytecode`` with it, are imported on the first
        crash). Never raises: returns the heal result or None."""
        if self.healer is None:
            try:
                from codesuture.runtime.healer import Healer

                self.healer = Healer.from_settings(self.settings)
            except Exception as err:  # contained (rule 7): run the original code
                from codesuture.logs import logger

                logger("codesuture.heal").warning("healer unavailable: %r", err)
                return None
        return self.healer.heal(exc, main_code, main_path)


def activate(s: "Settings", inherited: bool = False) -> "tuple[bool, Session]":
    """Set CodeSuture up in this process as *s* says, without running anything: the
    store and its finder, the process-wide crash hooks (when healing or in prod, see
    :mod:`codesuture.runtime.hooks`: armed by :mod:`codesuture.runtime.hookfinder`),
    the kill switch (:func:`arm_kill_switch`) and, with a store, the fleet watcher
    (:mod:`codesuture.runtime.fleet`). Returns ``(store usable, session)``; never
    raises for a bad store (logged).

    A kill file (setting ``kill_file``) present now sets the kill switch off before
    anything is set up: no finder, no crash hooks, no watcher; :func:`killed` is then
    true and the caller runs the program as plain python would (every launch form:
    boot, ``codesuture run``, the start-up hook of spawned workers).

    *inherited*: the settings came from a parent process that activated with them and
    already reported on them (:mod:`codesuture.autostart`): a store that does not exist
    yet in dev is then logged at INFO, not again as a WARNING on the child's stderr
    (a program or a test suite reading its children's stderr sees what it would
    without CodeSuture)."""
    session = Session(s)
    if kill_file_present(s):
        from codesuture.runtime import killswitch

        killswitch.trigger(f"kill file {s.kill_file}", session=session, wait=True)
        return True, session
    usable = open_store(s, session, inherited)
    if s.heal or s.prod:
        from codesuture.runtime import hookfinder

        hookfinder.install(session)
    arm_kill_switch(session)
    if s.overlays is not None:  # no store, no watcher (fleet.folder_store): not even its import
        from codesuture.runtime import fleet

        if getattr(s, "is_oci", False):
            from codesuture.runtime.fleet_registry import RegistryWatcher

            fleet.start(session, RegistryWatcher)
        else:
            fleet.start(session)
    return usable, session


#: ``(signal number, the handler found in place, session)`` once the kill signal is armed.
_KILL_SIGNAL: "list[Any]" = []


def arm_kill_switch(session: Session) -> None:
    """Arm the kill switch (:mod:`codesuture.runtime.killswitch`, imported only when it
    goes off or a kill file is configured: start-up cost unchanged). The handler of
    ``kill_signal`` goes in from the main thread only; a handler found in place is
    chained. Never raises."""
    try:
        s = session.settings
        name = getattr(s, "kill_signal", "off") or "off"
        if name != "off" and not _KILL_SIGNAL:
            import _signal  # type: ignore[import-not-found]  # builtin: `signal` would import enum

            signum = int(name) if name.isdigit() else getattr(_signal, name)
            previous = _signal.getsignal(signum)
            _signal.signal(signum, _on_kill_signal)  # ValueError outside the main thread
            _KILL_SIGNAL[:] = [signum, previous, session]
        if getattr(s, "kill_file", None):
            from codesuture.runtime import killswitch

            killswitch.install(session)
    except Exception as exc:  # noqa: BLE001 - contained (rule 7)
        from codesuture.logs import logger

        logger("codesuture.fleet").info("kill switch signal %s not armed: %r",
                                        getattr(session.settings, "kill_signal", "?"), exc)


def _on_kill_signal(signum: int, frame: "Any") -> None:
    """The kill signal: the kill switch goes off on a new thread (no lock, no import,
    no logging here); then the handler that was in place runs."""
    import _thread

    _thread.start_new_thread(_kill, (f"signal {signum}", _KILL_SIGNAL[2] if _KILL_SIGNAL else None))
    previous = _KILL_SIGNAL[1] if _KILL_SIGNAL else None
    if callable(previous):
        previous(signum, frame)


def _kill(reason: str, session: "Any") -> None:
    from codesuture.runtime import killswitch

    killswitch.trigger(reason, session=session, wait=True)


def kill_file_present(s: "Settings") -> bool:
    """Whether the kill file of settings *s* exists (a dangling symlink counts: its
    presence is the signal). One ``os.lstat``; False when none is configured."""
    path = getattr(s, "kill_file", None)
    return path is not None and os.path.lexists(path)


def killed() -> bool:
    """True once the kill switch went off in this process (looked up, never imported:
    :mod:`codesuture.runtime.killswitch` is loaded only when armed or gone off)."""
    switch = sys.modules.get("codesuture.runtime.killswitch")
    return switch is not None and switch.KILLED is not None


def carried(session: Session, lines: "list[str]") -> "dict[str, Any]":
    """What a replay hands on to the next process (:mod:`codesuture.runtime.rerun`): the
    patches made so far, counted, and the command's *lines* about them."""
    from codesuture.runtime.rerun import CARRIED

    healer = session.healer
    history = getattr(healer, "history", [])
    last = healer.last_heal() if healer is not None and hasattr(healer, "last_heal") else None
    # A cascade (the guards one unit of work needs) is one heal: counted once, guards beside.
    return {"patched": CARRIED["patched"] + sum(1 for r in history if r.status == "patched" and not r.cascade),
            "guards": CARRIED.get("guards", CARRIED["patched"]) + sum(1 for r in history if r.status == "patched"),
            "proposed": CARRIED["proposed"] + sum(1 for r in history if r.status == "patched" and r.proposed
                                                  and not r.cascade),
            "lines": [*CARRIED["lines"], *lines], **({"last_heal": last} if last is not None else {})}


def summary(session: Session, default_store: "str | None" = None) -> "str | None":
    """The one-line session summary, or None when nothing was patched or loaded. After a
    replay, the patches of the attempts before it count too."""
    resolve = sys.modules.get("codesuture.loader.resolve")  # never imported just for this line
    LOADED = getattr(resolve, "LOADED", {})
    rerun = sys.modules.get("codesuture.runtime.rerun")
    before = getattr(rerun, "CARRIED", {})
    healer = session.healer
    history = getattr(healer, "history", [])
    patched = before.get("patched", 0) + sum(1 for r in history if r.status == "patched" and not r.cascade)  # a cascade is one heal
    guards = before.get("guards", before.get("patched", 0)) + sum(1 for r in history if r.status == "patched")
    proposed = before.get("proposed", 0) + sum(1 for r in history if r.status == "patched" and r.proposed and not r.cascade)
    replays = sum(1 for r in history if r.status != "patched")
    if not (patched or LOADED or replays):
        return None
    parts = [f"{patched} patch{'es' if patched != 1 else ''} applied" + (f" ({guards} guards)" if guards != patched else "")]
    if proposed:
        parts.append(f"{proposed} proposed for review")
    parts.append(f"{len(LOADED)} overlay{'s' if len(LOADED) != 1 else ''} loaded")
    line = "codesuture: session: " + ", ".join(parts)
    if default_store:
        line += f" (store {default_store}, the default; --overlays to change)"
    return line


def open_store(s: "Settings", session: Session, inherited: bool = False) -> bool:
    """Install the finder for the configured store, if any. Returns False when a store
    or trust root was configured but cannot be used (each reason logged once).
    *inherited*: as in :func:`activate`."""
    from codesuture.logs import logger

    log = logger("codesuture.boot")
    if s.keys is not None and not os.path.exists(s.keys):
        log.warning("trust root %s (%s) does not exist: every signed overlay will be refused", s.keys, s.source("keys"))
        if s.require_overlays:
            log.error("--require-overlays: the trust root %s cannot be used", s.keys)
            return False
    if s.overlays is None:
        log.info("no overlay store configured (--overlays, CODESUTURE_OVERLAYS or the config file's overlays)")
        if s.require_overlays:
            log.error("--require-overlays: no overlay store is configured")
            return False
        return True
    location = s.overlays
    if getattr(s, "is_oci", False):  # a registry: the host cache's verified bundle (runtime/fleet_registry.py)
        from codesuture.runtime.fleet_registry import bundle_at_start

        pulled = bundle_at_start(s)
        if pulled is None:
            if s.require_overlays:
                log.error("--require-overlays: no verified bundle of %s on this host", s.overlays)
                return False
            return True
        location = pulled
    from codesuture.store.kinds import open_store as open_

    store = open_(location)
    if os.path.lexists(location) and not store.exists():
        log.warning("overlay store %s (%s) is neither a folder nor a bundle file: running without overlays",
                    s.overlays, s.source("overlays"))
        if s.require_overlays:
            log.error("--require-overlays: the overlay store %s cannot be used", s.overlays)
        return not s.require_overlays
    if not store.exists():
        if not s.prod and s.heal:
            if s.source("overlays") == "default" or inherited:
                log.info("overlay store %s does not exist yet: patches will create it", s.overlays)
            else:
                log.warning("overlay store %s (%s) does not exist: patches will create it", s.overlays, s.source("overlays"))
            return True
        log.warning("overlay store %s (%s) does not exist: running without overlays", s.overlays, s.source("overlays"))
        if s.require_overlays:
            log.error("--require-overlays: the overlay store %s does not exist", s.overlays)
        return not s.require_overlays
    from codesuture.errors import CodeSutureError
    from codesuture.loader.finder import build_index, install

    strict = s.require_overlays and (store.kind == "bundle" or s.keys is not None)
    try:
        index = build_index(store)
        if index or strict:  # an empty store never loads the policy (hashlib, json, the trust modules)
            from codesuture.trust.policy import LoadPolicy, store_set

            policy = LoadPolicy.from_settings(s)
            if strict:
                store_set(store, policy)
    except CodeSutureError as exc:
        log.warning("overlays not loaded from %s: %s", s.overlays, getattr(exc, "reason", exc))
        if s.require_overlays:
            log.error("--require-overlays: the overlay store %s cannot be used", s.overlays)
            return False
        return True
    session.finder = install(store, policy, index) if index else None
    if not s.prod and s.heal and store.kind == "directory" and store.stale_temps:
        store.clean_stale_temps()
    return True


__all__ = ["Session", "activate", "arm_kill_switch", "open_store", "summary", "carried", "killed", "kill_file_present"]
