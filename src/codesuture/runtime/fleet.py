"""Overlays reaching running processes: the fleet watcher.

Every process of a service shares one store: gunicorn's or uvicorn's workers, a job's
subprocesses. When one of them heals a crash (dev), or a deploy adds signed overlays
(prod), the others take the new overlays up while they run.

* :func:`start` (called by :func:`codesuture.runtime.session.activate`) starts one
  daemon thread per process, only when the session's store is a folder. Every
  :data:`POLL_SECONDS` the thread calls ``os.stat`` on the folder and on its signed
  set: nothing else, never on the import path, never a busy loop. Forked children
  (gunicorn workers, multiprocessing ``fork``, the children of a ``forkserver``) get
  a thread of their own (``os.register_at_fork``); a fork waits for a check in
  progress, so a child never inherits a half-done one.
* When the folder or its set changed (and then stayed the same for
  :data:`SETTLE_SECONDS`, so a writer's or a deploy's files are seen together), the
  store is indexed again (as :func:`codesuture.loader.finder.build_index` does) and
  the finder's index updated in place, so later imports see the new overlays. Then,
  for each module already in ``sys.modules`` whose overlay files changed, the overlay
  is admitted under the finder's own load policy and unmarshalled
  (:func:`codesuture.loader.resolve.resolve`: in prod only signed overlays; a refusal
  is one log line), and each patched function's code is put into the live functions
  still running that function's original code (or the code of the overlay the module
  was loaded from), with the healer's machinery
  (:func:`codesuture.patch.swap.swap_many`). Those functions are found by name (the
  module's globals, its classes' members, what decorators hold:
  :func:`codesuture.patch.swap.functions_by_name`), never by scanning the heap, so
  the cost follows the module's size, not the process's; closures a function already
  made are what names cannot reach: one ``gc.get_referrers`` call finds them, only
  when a nested function changed. A function this process's own healer
  patched is extended through that healer (its records merged, as when it adopts
  another process's patch); an overlay holding nothing this process does not
  already run (the one its own healer just wrote) is skipped without admitting it
  again. The first look after start-up logs nothing activation already logged.

What is not updated live (it is at the next start): a function no name of its module
reaches (kept only in another module's registry, say) and closures made from an
earlier version of their outer function.

Everything is contained (design rule 7): a failure is one log line, the program runs
on with the code it had. A folder on a file system with coarse timestamps (one or two
seconds) may show two changes within that time as one: the second is then seen at the
next change of the folder or its set.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    import types
    from typing import Any, Iterator

#: Seconds between two looks at the store (two ``os.stat`` calls). A patch written by
#: one worker reaches the others within this plus :data:`SETTLE_SECONDS` and the time
#: to admit and swap it (milliseconds).
POLL_SECONDS = 0.5
#: A change is acted on once the folder and its set stayed the same for this long
#: (at most :data:`SETTLE_ROUNDS` times), so the files of one write are seen together.
SETTLE_SECONDS = 0.05
SETTLE_ROUNDS = 10
#: How long a fork waits for a check in progress to finish before it goes ahead.
FORK_WAIT_SECONDS = 2.0
#: A store path with this suffix is a bundle, even before it exists.
BUNDLE_SUFFIX = ".cso"

#: Qualified-name tails of code whose function objects never outlive the call that
#: made them (3.11 comprehensions; generator expressions keep their frame).
_TRANSIENT = ("<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>")

_WATCHER: "Watcher | None" = None
_HOOKED = False


def _log() -> Any:
    from codesuture.logs import logger

    return logger("codesuture.fleet")


def start(session: Any, factory: Any = None) -> None:
    """Start watching the session's store for new overlays (idempotent: one watcher per
    process, the first session's). Only for a folder store (:func:`folder_store`), or
    with *factory* (a :class:`Watcher` subclass: the ``oci://`` store's
    :class:`~codesuture.runtime.fleet_registry.RegistryWatcher`); never raises."""
    global _WATCHER, _HOOKED
    try:
        if _WATCHER is not None or _killed() or (factory is None and not folder_store(session.settings)):
            return
        watcher = (factory or Watcher)(session)
        _WATCHER = watcher
        if not _HOOKED:
            os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent,
                                after_in_child=_after_fork_child)
            import atexit

            atexit.register(_at_exit)
            _HOOKED = True
        watcher.start()
    except Exception as exc:  # contained (rule 7)
        _log().warning("fleet watcher not started (new overlays reach this process when it starts again): %r", exc)


def _killed() -> bool:
    switch = sys.modules.get("codesuture.runtime.killswitch")  # imported once it went off
    return switch is not None and switch.KILLED is not None


def folder_store(s: Any) -> bool:
    """Whether the store of settings *s* is one the watcher looks at: a folder, or in
    dev a path that does not exist yet (the first heal creates the folder). Never a
    bundle (a file, or a ``.cso`` name), a FIFO, a device, a dangling symlink or
    anything else that is not a folder: those get no watcher, and so no log line of
    its own."""
    import stat

    path = s.overlays
    if path is None or s.is_bundle:
        return False
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)  # follows a symlinked release
    except FileNotFoundError:
        return not s.prod and not os.path.lexists(path) and not str(path).endswith(BUNDLE_SUFFIX)
    except (OSError, ValueError):
        return False


def current() -> "Watcher | None":
    """This process's watcher, if one was started."""
    return _WATCHER


def stop(timeout: float = 2.0) -> None:
    """Stop this process's watcher and forget it (tests; :func:`start` may run again)."""
    global _WATCHER
    watcher, _WATCHER = _WATCHER, None
    if watcher is not None:
        watcher.stop(timeout)


def _at_exit() -> None:
    watcher = _WATCHER
    if watcher is not None:
        watcher.stop(1.0)


def _before_fork() -> None:
    watcher = _WATCHER
    if watcher is not None:
        watcher._fork_held = watcher._lock.acquire(timeout=FORK_WAIT_SECONDS)


def _after_fork_parent() -> None:
    watcher = _WATCHER
    if watcher is not None and watcher._fork_held:
        watcher._fork_held = False
        watcher._lock.release()


def _after_fork_child() -> None:
    watcher = _WATCHER
    if watcher is None:
        return
    try:
        watcher._after_fork()
    except Exception as exc:  # contained: the child runs on without a watcher
        try:
            _log().warning("fleet watcher not restarted in forked process %d: %r", os.getpid(), exc)
        except Exception:  # noqa: BLE001 - never break a fork
            pass


def _signature(directory: str) -> tuple[Any, Any] | None:
    """What tells a change of the store: ``os.stat`` of the folder (following a
    symlinked release) and of its signed set. None when the folder is missing."""
    from codesuture.overlay.names import SET_NAME

    try:
        st = os.stat(directory)
    except OSError:
        return None
    try:
        ss = os.stat(os.path.join(directory, SET_NAME))
        set_sig: Any = (ss.st_ino, ss.st_mtime_ns, ss.st_size)
    except OSError:
        set_sig = None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size), set_sig


class Watcher:
    """Watches one folder store for one process (see the module docstring).
    :meth:`check` is one look (the thread calls it every :data:`POLL_SECONDS`); it
    returns True when the store had changed. ``applied``: ``(store key, overlay,
    functions updated, time.time())`` for every overlay applied live, in order."""

    def __init__(self, session: Any) -> None:
        import threading

        self.session = session
        s = session.settings
        self.settings = s
        self.directory = os.path.abspath(s.overlays)
        self.applied: list[tuple[str, str, int, float]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: Any = None
        self._fork_held = False
        self._store: Any = getattr(session.finder, "store", None)
        self._policy: Any = getattr(session.finder, "_policy", None)
        # The store as the finder indexed it at activation: a first look that finds
        # it unchanged only takes note of what is there.
        self._sig = _signature(self.directory)
        self._store_ident = self._sig[0][:2] if self._sig is not None else None
        self._primed = False
        self._seen: dict[str, Any] = {}
        self._retry: set[str] = set()
        self._said: set[str] = set()
        self._ignored: set[str] = set()  # keys never loaded from a store (stdlib, CodeSuture), already said

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        import threading

        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="codesuture-fleet", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            import threading

            if thread is not threading.current_thread():
                thread.join(timeout)

    def settle(self) -> None:
        """Return once a look in progress (a swap of overlay code) has ended."""
        with self._lock:
            pass

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        stopped = self._stopped
        # The first look waits too: the program imports its modules meanwhile, and
        # activation has just indexed the store.
        while not stopped.wait(POLL_SECONDS):
            try:
                self.check()
            except BaseException as exc:  # noqa: BLE001 - contained (rule 7), even at shutdown
                if stopped.is_set():
                    return
                self._say(f"fleet watcher: internal error {exc!r}")

    def _after_fork(self) -> None:
        """In a forked child: fresh locks and thread; the finder's index brought up to
        date at once (the child imports its app right away), the live modules on the
        new thread's first check."""
        import threading

        self._lock = threading.Lock()
        self._fork_held = False
        self._thread = None
        sig = _signature(self.directory)
        if sig != self._sig:
            self._reindex(sig, set_changed=sig is None or self._sig is None or sig[1] != self._sig[1])
            # self._sig is left as it was: the thread's first check sees the change too.
        self.start()

    def _say(self, message: str) -> None:
        """Log *message* once per process (a broken store is not a line per look)."""
        if message in self._said:
            return
        if len(self._said) < 256:
            self._said.add(message)
        _log().warning("%s", message)

    # ------------------------------------------------------------------ one look

    def check(self, settle: bool = True) -> bool:
        """Look at the store once; act on a change. Returns True when it had changed."""
        with self._lock:
            sig = _signature(self.directory)
            changed = sig != self._sig
            if self._primed and not changed and not self._retry:
                return False
            if changed and settle and self._primed:
                sig = self._settle(sig)
            from codesuture.loader import finder as finder_mod

            me = _thread_ident()
            mark = me not in finder_mod._BUSY  # this thread's own imports bypass the finder (rule 14)
            if mark:
                finder_mod._BUSY.add(me)
            try:
                old = self._sig
                self._sig = sig
                first = not self._primed and not changed
                index = self._reindex(sig, set_changed=changed and (sig is None or old is None or sig[1] != old[1]),
                                      first=first)
                if index is not None:
                    self._live(index, sig, apply=not first)
            finally:
                if mark:
                    finder_mod._BUSY.discard(me)
            self._primed = True
            return changed

    def _settle(self, sig: Any) -> Any:
        for _ in range(SETTLE_ROUNDS):
            if self._stopped.wait(SETTLE_SECONDS):
                break
            again = _signature(self.directory)
            if again == sig:
                break
            sig = again
        return sig

    def _store_now(self, sig: Any) -> Any:
        """The store object: the finder's (one read budget per store and process), a
        new one when the folder is another one now (a symlinked release switched)."""
        ident = sig[0][:2] if sig is not None else None
        if (self._store is None or getattr(self._store, "kind", None) != "directory"
                or ident is not None and self._store_ident not in (None, ident)):
            from codesuture.store.directory import DirectoryStore

            self._store = DirectoryStore(self.directory)
        if ident is not None:
            self._store_ident = ident
        return self._store

    def _policy_now(self) -> Any:
        if self._policy is None:
            from codesuture.trust.policy import LoadPolicy

            self._policy = LoadPolicy.from_settings(self.settings)
        return self._policy

    def _reindex(self, sig: Any, set_changed: bool, first: bool = False) -> dict[str, list[Any]] | None:
        """Index the store again and give the finder the new index (installing one when
        the process started without overlays). Returns the index, or None (logged).
        *first*: the first look, the store unchanged since activation indexed it: the
        finder is left as activation made it (none, when it refused the store), and
        nothing activation logged is logged again."""
        from codesuture.errors import CodeSutureError
        from codesuture.loader.finder import _never_overlaid, install

        if set_changed:
            from codesuture.trust.policy import clear_trust_root_cache

            clear_trust_root_cache()  # the verified set is cached per process: read the new one
        store = self._store_now(sig)
        try:
            index = store.index()
        except CodeSutureError as exc:
            if not first:
                self._say(f"overlays not reloaded from {self.directory}: {getattr(exc, 'reason', exc)}")
            return None
        ignored = {key for key in index if _never_overlaid(key)}
        if first:
            self._ignored |= ignored  # activation said why (loader.finder.build_index)
        for key in sorted(ignored):
            if key not in self._ignored and len(self._ignored) < 4096:
                self._ignored.add(key)
                from codesuture.logs import logger

                logger("codesuture.loader").warning("overlay for %s ignored (%s): %s", key,
                                                    store.display(index[key][0].name + ".overlay"), _never_overlaid(key))
            del index[key]
        if first:
            return index
        finder = self.session.finder
        if finder is None:
            if index:
                self.session.finder = install(store, self._policy_now(), index)
        else:
            current = finder.index
            for key in [k for k in current if k not in index]:
                current.pop(key, None)
            current.update(index)  # in place: one atomic step per key for importing threads
            finder.store = store
        return index

    # ------------------------------------------------------------------ live modules

    def _live(self, index: dict[str, list[Any]], sig: Any, apply: bool = True) -> None:
        """Apply the changed overlays of modules already imported (*apply* False: only
        take note of every key's files, as the first look does when the store is as
        activation indexed it: the modules imported since loaded what it holds)."""
        set_sig = sig[1] if sig is not None else None
        live = self._live_modules(index)
        for key, entries in index.items():
            fp = self._fingerprint(entries, set_sig)
            previous = self._seen.get(key)
            self._seen[key] = fp
            module = live.get(key)
            if module is None:
                self._retry.discard(key)
                continue
            if not apply:
                continue
            if previous == fp and key not in self._retry:
                continue
            self._retry.discard(key)
            try:
                outcome = self._apply(key, module, entries)
            except Exception as exc:  # contained (rule 7): this module keeps the code it has
                import logging

                _log().warning("overlay for %s not applied live: internal error %r", key, exc,
                               exc_info=_log().isEnabledFor(logging.DEBUG))
                continue
            if outcome == "retry":
                self._retry.add(key)
        for key in [k for k in self._seen if k not in index]:
            del self._seen[key]
        self._retry &= set(index)

    def _fingerprint(self, entries: list[Any], set_sig: Any) -> tuple[Any, ...]:
        """``lstat`` of every file of this interpreter's entries of one key, and the
        signed set's signature: what changes when a writer, a deploy or a rollback
        touched that key."""
        from codesuture.overlay.names import MEMBER_SUFFIXES

        tag = sys.implementation.cache_tag
        out: list[Any] = [set_sig]
        for entry in entries:
            if entry.cache_tag != tag:
                continue
            for suffix in MEMBER_SUFFIXES:
                try:
                    st = os.lstat(os.path.join(self.directory, entry.name + suffix))
                except OSError:
                    continue
                out.append((entry.name, suffix, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _live_modules(self, index: dict[str, list[Any]]) -> dict[str, Any]:
        """Store key -> module, for the keys of *index* imported in this process (the
        script run as ``__main__``, or re-run as ``__mp_main__`` by multiprocessing,
        under its script key)."""
        modules = sys.modules
        out = {key: modules.get(key) for key in index}
        out = {key: module for key, module in out.items() if module is not None}
        if any(k.startswith("__main__.") for k in index):
            from codesuture.overlay.names import main_key, script_origin

            for name in ("__main__", "__mp_main__"):
                module = sys.modules.get(name)
                path = getattr(module, "__file__", None)
                if module is None or not isinstance(path, str) or not path.endswith(".py") or not os.path.isfile(path):
                    continue
                try:
                    key = main_key(script_origin(path, self.settings.app_root))
                except (OSError, ValueError):
                    continue
                if key in index:
                    out.setdefault(key, module)
        return out

    def _apply(self, key: str, module: Any, entries: list[Any]) -> str:
        """Admit and apply the overlay of *key* to *module*, live. Returns ``retry``
        (the module is still being imported), ``skip`` or ``done``."""
        spec = getattr(module, "__spec__", None)
        if getattr(spec, "_initializing", False):
            return "retry"
        path = _source_path(module)
        if path is None:
            return "skip"
        from codesuture.util.digest import sha256

        tag = sys.implementation.cache_tag
        if not any(e.cache_tag == tag for e in entries):
            return "skip"  # overlays for other interpreters only
        with open(path, "rb") as fh:
            source = fh.read()
        prefix = sha256(source).hexdigest()[:16]
        mine = [e for e in entries if e.cache_tag == tag and e.source_prefix == prefix]
        if mine and self._nothing_new(key, mine):
            return "skip"
        from codesuture.loader.resolve import LOADED, resolve

        before = LOADED.get(key)
        found = resolve(key, entries, source, path, self._policy_now())
        if found is None:
            return "done"  # refused or stale: resolve logged why
        if before is not None and found.meta.overlay_sha256 == before.admitted.meta.overlay_sha256:
            return "done"  # the very overlay this module was loaded from
        functions = self._swap(key, module, path, source, found.code, before is not None)
        import time

        self.applied.append((key, found.entry_name, functions, time.time()))
        _log().warning("applied overlay %s live to %s: %d function(s) updated in process %d",
                       found.entry_name, key, functions, os.getpid())
        return "done"

    def _nothing_new(self, key: str, mine: list[Any]) -> bool:
        """True when the overlay's own sidecar shows nothing this process does not run
        already: the overlay it loaded for *key*, or only patches its own healer made
        (a skip needs no trust: at worst a patch arrives at the next start)."""
        from codesuture.errors import CodeSutureError
        from codesuture.loader.resolve import LOADED
        from codesuture.overlay.model import OverlayMeta
        from codesuture.overlay.names import META_SUFFIX

        loaded = LOADED.get(key)
        own = {r.site for h in _healers(self.session) for r in h.ledger.records(key)}
        # A patch this process rolled back (governance, rollback_after) is observed here
        # from then on: an overlay bringing only it back is nothing new either. Read after
        # the ledger: a rollback marks the site before it reverts the record.
        governance = sys.modules.get("codesuture.runtime.governance")  # imported by a rollback
        if governance is not None:
            own |= {(q, f, o) for (k, q, f, o) in list(governance.ROLLED_BACK) if k == key}
        if loaded is None and not own:
            return False
        if loaded is not None and loaded.admitted.via == "unsigned":
            own |= {r.site for r in loaded.admitted.meta.patches}
        for entry in mine:
            try:
                raw = entry.read(META_SUFFIX)
                meta = OverlayMeta.loads(raw, entry.name + META_SUFFIX) if raw is not None else None
            except (CodeSutureError, ValueError):
                return False
            if meta is None:
                return False
            if loaded is not None and meta.overlay_sha256 == loaded.admitted.meta.overlay_sha256:
                continue
            if not meta.patches or not {r.site for r in meta.patches} <= own:
                return False
        return True

    def _swap(self, key: str, module: Any, path: str, source: bytes, code: "types.CodeType", reloaded: bool) -> int:
        """Swap the functions *code* (the admitted overlay's module code) patches into
        the live functions of *module*. *reloaded*: the module runs an earlier overlay
        (whose functions may stand in for the original code). Returns the number of
        functions updated. The healer's machinery: live functions are found by name
        (:func:`codesuture.patch.swap.functions_by_name`) and every change of the
        overlay is made in one :func:`codesuture.patch.swap.swap_many` (no heap scan;
        at most one ``gc.get_referrers`` call, for closures made already)."""
        from codesuture.errors import PatchError
        from codesuture.overlay.build import compile_module
        from codesuture.patch.swap import functions_by_name, swap_many

        original = _by_function(compile_module(source, path))
        patched = _by_function(code)
        targets: dict[tuple[str, int], list[tuple[Any, Any]]] = {}
        for ident, news in patched.items():
            olds = original.get(ident)
            if olds is None or len(olds) != len(news):
                continue
            pairs = [(o, n) for o, n in zip(olds, news) if reloaded or o != n]
            if pairs:
                targets[ident] = pairs
        if not targets:
            return 0
        healers = _healers(self.session)
        with _all_locked([h.ledger.lock for h in healers]):
            count = 0
            found = functions_by_name(module, {path, getattr(module, "__file__", None) or path})
            changes: dict[int, tuple[Any, list[Any]]] = {}  # id(new) -> (new, the live codes it replaces)
            for ident, pairs in targets.items():
                tracked = next(((h, fs) for h in healers if (fs := h.ledger.tracked(key, *ident)) is not None), None)
                if tracked is not None:
                    count += self._extend(key, ident, *tracked)
                    continue
                head, _, tail = ident[0].rpartition(".<locals>.")
                if tail in _TRANSIENT and head and "<locals>" not in head:
                    continue  # a comprehension's function never outlives its call: its parent is updated
                for current in _live_codes(found, ident):
                    if any(current == n for _, n in pairs):
                        continue  # runs it already
                    new = next((n for o, n in pairs if current == o), None)
                    if new is None and reloaded and len(pairs) == 1:
                        new = pairs[0][1]  # the earlier overlay's version of this function
                    if new is None:
                        _log().warning("overlay for %s: %s (line %d) not updated live: it runs code that is neither "
                                       "its source's nor its overlay's", key, ident[0], ident[1])
                        continue
                    changes.setdefault(id(new), (new, []))[1].append(current)
            if changes:
                try:
                    count += swap_many([(olds, new) for new, olds in changes.values()], module).functions
                except PatchError as exc:
                    _log().warning("overlay for %s not applied live: %s", key, exc)
        return count

    def _extend(self, key: str, ident: tuple[str, int], healer: Any, fs: Any) -> int:
        """A function this process's healer patched: merge the overlay's records for it
        into the healer's, as the healer does when it adopts another process's patch."""
        from codesuture.loader.resolve import loaded_patches

        have = {r.site for r in fs.records}
        new = [r for r in loaded_patches(key) if (r.qualname, r.firstlineno) == ident and r.site not in have]
        if not new:
            return 0
        report = healer.ledger.apply(fs, [*fs.records, *new])
        return int(report.functions)


def _thread_ident() -> int:
    import _thread

    return _thread.get_ident()


def _source_path(module: Any) -> str | None:
    """The source file *module* was loaded from, or None (no ``.py`` file)."""
    spec = getattr(module, "__spec__", None)
    path = getattr(spec, "origin", None) if spec is not None and getattr(spec, "has_location", False) else None
    path = path or getattr(module, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py") or not os.path.isfile(path):
        return None
    return path


def _by_function(root: "types.CodeType") -> dict[tuple[str, int], list[Any]]:
    """The code objects nested in module code *root*, by ``(qualname, firstlineno)``,
    in tree order (two lambdas on one line share a name)."""
    out: dict[tuple[str, int], list[Any]] = {}
    stack = [c for c in reversed(root.co_consts) if type(c) is type(root)]
    while stack:
        code = stack.pop()
        out.setdefault((code.co_qualname, code.co_firstlineno), []).append(code)
        stack.extend(c for c in reversed(code.co_consts) if type(c) is type(root))
    return out


def _live_codes(found: list[Any], ident: tuple[str, int]) -> list[Any]:
    """The distinct code objects that *found* (live functions) run, or make closures
    from, for the function *ident* ``(qualname, firstlineno)``."""
    out: dict[int, Any] = {}
    nested = "<locals>" in ident[0]
    for fn in found:
        stack = [fn.__code__]
        while stack:
            code = stack.pop()
            if (code.co_qualname, code.co_firstlineno) == ident:
                out.setdefault(id(code), code)
            if nested:
                stack.extend(c for c in code.co_consts if type(c) is type(code))
    return list(out.values())


def _healers(session: Any) -> list[Any]:
    """The healers of this process: the session's and the boundaries' default one."""
    out: list[Any] = []
    for healer in (getattr(session, "healer", None),
                   *getattr(sys.modules.get("codesuture.runtime.healer"), "_DEFAULT", ())):
        if healer is not None and hasattr(healer, "ledger") and all(h is not healer for h in out):
            out.append(healer)
    return out


class _all_locked:
    """Hold every lock of a list (the healers' locks, so no heal runs while functions
    are swapped), in a fixed order."""

    def __init__(self, locks: list[Any]) -> None:
        self._locks = sorted(locks, key=id)

    def __enter__(self) -> None:
        for lock in self._locks:
            lock.acquire()

    def __exit__(self, *exc: object) -> None:
        for lock in reversed(self._locks):
            lock.release()


__all__ = ["start", "stop", "current", "Watcher", "POLL_SECONDS", "SETTLE_SECONDS"]
