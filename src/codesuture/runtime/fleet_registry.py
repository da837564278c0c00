"""A fleet fed by an OCI registry: ``--overlays oci://HOST[:PORT]/REPOSITORY:TAG``.

* At start-up (:func:`bundle_at_start`, from :func:`codesuture.runtime.session.open_store`):
  one look at the tag for the host (:func:`codesuture.ship.fleet_cache.look`), bounded
  by ``pull_timeout`` seconds (a daemon thread does the network; start-up waits for it
  at most that long). The bundle loaded is the host cache's current verified one: the
  one just pulled, or, with the registry down or slow, the last one verified here
  (one WARNING says so). No bundle at all: the program runs without overlays (exit 78
  under ``--require-overlays``, as for a local store).
* While the program runs, :class:`RegistryWatcher` (the fleet watcher's thread, see
  :mod:`codesuture.runtime.fleet`) looks at the host cache every ``min(0.5, poll/4)``
  seconds (one small file read), and when the host's look at the registry is due
  (every ``poll`` seconds, +-20%), takes it, unless another process of the host is
  taking it: one manifest ``HEAD`` per host and poll. When the cache's current digest
  changes, the new bundle is verified again in this process by the load policy (the
  signed set against the trust root and this host's high-water mark), the finder's
  index replaced, and every changed overlay of an imported module swapped into the
  live functions, exactly as the folder watcher does. A digest refused on this host
  (it did not verify: unsigned, another key, an older set, expired, truncated,
  oversized) is said in one WARNING line per process; the running code stays as it
  was.
"""

from __future__ import annotations

import os
import time

from codesuture.runtime.fleet import Watcher

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any


def _log() -> Any:
    from codesuture.logs import logger

    return logger("codesuture.fleet")


def _short(digest: str) -> str:
    return digest[:19] + "..." if digest else "?"


#: Longest a look at the registry (lookup and pull) may take, in seconds, when nobody
#: waits for it (the watcher's looks, a start-up look that outlived pull_timeout).
NETWORK_SECONDS = 30.0
#: location -> the manifest digest of the bundle this process loaded at start-up.
STARTED: dict[str, str] = {}
#: location -> why the registry was not reached at start-up (the watcher says when it is again).
UNREACHED: dict[str, str] = {}


def bundle_at_start(s: Any) -> str | None:
    """The path of the verified bundle this process loads for the ``oci://`` store of
    settings *s*, or None (logged). Waits at most ``s.pull_timeout`` seconds for the
    registry. Never raises."""
    import threading

    from codesuture.ship.fleet_cache import HostCache, Look, look

    log = _log()
    cache = HostCache(s.cache_dir, s.overlays)
    try:
        before = cache.current()
    except Exception as exc:  # noqa: BLE001 - contained (rule 7)
        log.warning("host cache %s unusable: %r", s.cache_dir, exc)
        before = None
    result: list[Any] = []
    deadline = time.monotonic() + s.pull_timeout

    def work() -> None:
        # Start-up waits at most pull_timeout; a pull still going then finishes here in
        # the background (its own, longer bound), and the watcher takes it up live.
        try:
            result.append(look(cache, s, force=before is None or not before.path, wait=s.pull_timeout,
                               deadline=time.monotonic() + max(s.pull_timeout, NETWORK_SECONDS)))
        except Exception as exc:  # noqa: BLE001 - contained: an unwritable cache, say
            result.append(Look("unreachable", reason=f"host cache {s.cache_dir}: {exc!r}"))

    thread = threading.Thread(target=work, name="codesuture-pull", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()) + 0.05)
    outcome = result[0] if result else None
    try:
        current = cache.current()
    except Exception:  # noqa: BLE001
        current = None
    if outcome is not None and outcome.status == "refused":
        log.warning("bundle %s at %s refused: %s", _short(outcome.digest or ""), s.overlays, outcome.reason)
    if outcome is None or outcome.status in ("unreachable", "busy"):
        why = (f"no answer within {s.pull_timeout:g} s (--pull-timeout)" if outcome is None
               else "another process of this host is still pulling" if outcome.status == "busy"
               else outcome.reason)
        UNREACHED[s.overlays] = why
        if current is not None and current.path:
            log.warning("registry of %s not reached (%s): loading the last verified bundle %s (set v%d) from the "
                        "host cache", s.overlays, why, _short(current.digest), current.version)
        else:
            log.warning("registry of %s not reached (%s) and the host cache %s holds no verified bundle: running "
                        "without overlays", s.overlays, why, s.cache_dir)
    if current is None or not current.path:
        if outcome is not None and outcome.status not in ("unreachable", "busy"):
            log.warning("no verified bundle of %s on this host: running without overlays", s.overlays)
        return None
    log.info("%s: bundle %s (set v%d) from the host cache %s", s.overlays, _short(current.digest), current.version,
             s.cache_dir)
    STARTED[s.overlays] = current.digest
    return current.path


class RegistryWatcher(Watcher):
    """The fleet watcher of a process whose store is an ``oci://`` location (see the
    module docstring). ``applied`` as :class:`~codesuture.runtime.fleet.Watcher`'s;
    ``digest``: the manifest digest of the bundle this process runs."""

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        from codesuture.ship.fleet_cache import HostCache

        s = session.settings
        self.cache = HostCache(s.cache_dir, s.overlays)
        self.tick = max(0.05, min(0.5, s.poll / 4))
        self.digest = STARTED.get(s.overlays)
        current = self.cache.current()
        self._told: set[str] = set(current.refused) if current is not None else set()
        self._down: str | None = UNREACHED.get(s.overlays)

    def _loop(self) -> None:
        stopped = self._stopped
        while not stopped.wait(self.tick):
            try:
                self.check()
            except BaseException as exc:  # noqa: BLE001 - contained (rule 7), even at shutdown
                if stopped.is_set():
                    return
                self._say(f"fleet watcher: internal error {exc!r}")

    def _after_fork(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._fork_held = False
        self._thread = None
        self.start()

    def check(self, settle: bool = True) -> bool:
        """One tick: the host's look at the registry when due, then the cache's current
        bundle taken up when it changed. Returns True when this process switched."""
        with self._lock:
            self._look()
            current = self.cache.current()
            if current is None:
                return False
            for digest, reason in current.refused.items():
                if digest not in self._told and len(self._told) < 4096:
                    self._told.add(digest)
                    _log().warning("bundle %s at %s refused: %s; process %d keeps running bundle %s",
                                   _short(digest), self.settings.overlays, reason, os.getpid(),
                                   _short(self.digest or ""))
            if not current.path or current.digest == self.digest:
                return False
            self._switch(current)
            return True

    def _look(self) -> None:
        from codesuture.ship.fleet_cache import look

        s = self.settings
        if not self.cache.due(time.time()):
            return
        try:
            outcome = look(self.cache, s, deadline=time.monotonic() + max(NETWORK_SECONDS, s.pull_timeout))
        except OSError as exc:
            self._say(f"host cache {s.cache_dir} not writable: {exc.strerror or exc}")
            return
        if outcome.status == "unreachable":
            if self._down is None:
                _log().warning("registry of %s not reached (%s): running bundle %s; looking again every %g s",
                               s.overlays, outcome.reason, _short(self.digest or ""), s.poll)
            self._down = outcome.reason
        elif outcome.status not in ("busy", "not-due"):
            if self._down is not None:
                _log().warning("registry of %s reached again", s.overlays)
            self._down = None

    def _switch(self, current: Any) -> None:
        from codesuture.errors import CodeSutureError
        from codesuture.loader import finder as finder_mod
        from codesuture.loader.finder import build_index, install
        from codesuture.store.bundle import BundleStore
        from codesuture.trust.policy import store_set

        me = _thread_ident()
        mark = me not in finder_mod._BUSY  # this thread's own imports bypass the finder (rule 14)
        if mark:
            finder_mod._BUSY.add(me)
        try:
            store = BundleStore(current.path)
            policy = self._policy_now()
            try:
                store_set(store, policy)  # verified again in this process: trust root, high-water mark
                index = build_index(store)
            except CodeSutureError as exc:
                self._say(f"bundle {_short(current.digest)} of {self.settings.overlays} not loaded: "
                          f"{getattr(exc, 'reason', exc)}; running code unchanged")
                self.digest = current.digest
                return
            finder = self.session.finder
            if finder is None:
                self.session.finder = install(store, policy, index)
            else:
                live = finder.index
                for key in [k for k in live if k not in index]:
                    live.pop(key, None)
                live.update(index)
                finder.store = store
            _log().info("%s: now bundle %s (set v%d) in process %d", self.settings.overlays, _short(current.digest),
                        current.version, os.getpid())
            self.digest = current.digest
            self._live(index, (None, current.digest))
        finally:
            if mark:
                finder_mod._BUSY.discard(me)

    def _fingerprint(self, entries: list[Any], set_sig: Any) -> tuple[Any, ...]:
        """A bundle's entries change with its digest (content-addressed)."""
        return (set_sig, tuple(sorted(e.name for e in entries)))


def _thread_ident() -> int:
    import _thread

    return _thread.get_ident()


__all__ = ["RegistryWatcher", "bundle_at_start"]
