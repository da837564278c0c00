"""The meta path finder and its loader.

:class:`OverlayFinder` sits first on ``sys.meta_path``. For a module without an
overlay it costs one dict lookup and returns None. For a module with one, it asks the
rest of ``sys.meta_path`` for the real spec and, when that is an ordinary source
module, swaps in :class:`OverlayLoader`: a ``SourceFileLoader`` whose ``get_code``
returns the overlay's code when policy admits it and the normal compiled source
otherwise. Everything else (``__file__``, ``get_source`` for ``inspect``,
``importlib.resources``, ``-X importtime``) is the ordinary loader's.

Re-entrancy: while the finder works for a thread (admission reads files, imports
``cryptography`` the first time, logs a refusal through ``logging``), every import that
thread makes bypasses the finder. The index never holds a standard-library module or
one of CodeSuture's own, nor one of the libraries that verify signatures
(``cryptography``, ``sigstore``: :func:`build_index` drops them with one log line,
before the finder is installed), and CodeSuture's modules admission needs are imported
by :func:`install` before the finder goes on ``sys.meta_path``, so a hostile store can
never make the finder import through itself. ``cryptography`` itself is imported by
the first signature check (a store whose overlays are never imported, or whose
envelopes are malformed, never pays for it).
"""

from __future__ import annotations

import _thread
import sys
from importlib.machinery import ModuleSpec, SourceFileLoader

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any, Sequence

#: Thread idents inside the finder's own work (admission, logging): their imports bypass it.
_BUSY: set[int] = set()


def _log() -> Any:
    from codesuture.logs import logger

    return logger("codesuture.loader")


class OverlayLoader(SourceFileLoader):
    """SourceFileLoader that runs an admitted overlay instead of the compiled source."""

    def __init__(self, fullname: str, path: str, entries: Sequence[Any], policy: Any) -> None:
        super().__init__(fullname, path)
        self._entries = entries
        self._policy = policy

    def get_code(self, fullname: str) -> Any:
        me = _thread.get_ident()
        if me not in _BUSY:
            _BUSY.add(me)
            try:
                from codesuture.loader.resolve import resolve

                source = self.get_data(self.path)
                found = resolve(fullname, self._entries, source, self.path, self._policy)
                if found is not None:
                    return found.code
            except Exception as exc:  # contained: the original module loads (docs/design-rules.md, rule 7)
                _log().warning("overlay for %s not applied: internal error %r", fullname, exc)
            finally:
                _BUSY.discard(me)
        return super().get_code(fullname)


class OverlayFinder:
    """``sys.meta_path`` finder for the modules that have overlays in one store."""

    def __init__(self, index: dict[str, list[Any]], policy: Any, store: Any = None) -> None:
        self._index = index
        self._policy = policy
        self.store = store

    def __repr__(self) -> str:
        return f"<OverlayFinder {len(self._index)} module(s)>"

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        entries = self._index.get(fullname)
        if entries is None:
            return None
        me = _thread.get_ident()
        if me in _BUSY:
            return None
        _BUSY.add(me)
        try:
            spec = self._real_spec(fullname, path, target)
            if spec is None:
                return None
            if type(spec.loader) is not SourceFileLoader or not spec.origin:
                _log().warning("overlay for %s not applied: not loaded from a source file (%r)", fullname, spec.loader)
                return spec
            spec.loader = OverlayLoader(fullname, spec.origin, entries, self._policy)
            return spec
        except Exception as exc:  # contained (rule 7): let the normal finders run
            _log().warning("overlay finder failed for %s: %r", fullname, exc)
            return None
        finally:
            _BUSY.discard(me)

    def _real_spec(self, fullname: str, path: Any, target: Any) -> ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, OverlayFinder):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                return spec
        return None

    @property
    def index(self) -> dict[str, list[Any]]:
        return self._index

    def invalidate_caches(self) -> None:
        pass


#: Top-level modules the first signature check imports (``cryptography``'s Ed25519, with
#: its bindings), and Sigstore's verifier: never indexed, so no import they make can
#: reach an overlay's admission.
_VERIFIERS = frozenset({"cryptography", "_cffi_backend", "_openssl", "sigstore"})


def _never_overlaid(key: str) -> str | None:
    """Why the store key *key* is never loaded from a store, or None when it may be."""
    top = key.partition(".")[0]
    if top == "codesuture":
        return "CodeSuture never loads overlays of itself"
    if top in _VERIFIERS:
        return "CodeSuture never loads overlays of the libraries that verify signatures"
    if top in sys.stdlib_module_names and top != "__main__":
        return "CodeSuture never patches the standard library"
    return None


def build_index(store: Any) -> dict[str, list[Any]]:
    """The finder's index of *store*: store key -> entries, without the keys of
    standard-library modules and of CodeSuture itself (each dropped with one WARNING).
    Raises :class:`~codesuture.errors.CodeSutureError` when the store cannot be
    listed or is refused."""
    index = store.index()
    for key in [k for k in index if _never_overlaid(k)]:
        _log().warning("overlay for %s ignored (%s): %s", key, store.display(index[key][0].name + ".overlay"), _never_overlaid(key))
        del index[key]
    return index


def _preimport(policy: Any) -> None:
    """Import what admitting and refusing an overlay needs, before the finder is on
    ``sys.meta_path`` (so the finder never imports through itself on another thread)."""
    import marshal  # noqa: F401

    import codesuture.loader.resolve  # noqa: F401
    import codesuture.util.digest  # noqa: F401  (SHA-256: hashlib only past its budget, see there)
    import codesuture.overlay.package  # noqa: F401  (the package version check after admission)
    import codesuture.trust.policy  # noqa: F401

    if getattr(policy, "keys_dir", None) is not None:
        import codesuture.trust.dsse  # noqa: F401
        import codesuture.trust.overlay_set  # noqa: F401
        import codesuture.trust.statement  # noqa: F401
    # Not cryptography (codesuture.trust.keys): it is imported by the first signature
    # check (trust_root), with this thread's imports bypassing the finder, and the
    # index never holds its modules (_never_overlaid).


def install(store: Any, policy: Any, index: dict[str, list[Any]] | None = None) -> OverlayFinder | None:
    """Put an :class:`OverlayFinder` for *store* (a directory or bundle store, see
    :func:`codesuture.store.open_store`) first on ``sys.meta_path``, with *policy* (a
    :class:`~codesuture.trust.policy.LoadPolicy`). *index*: from :func:`build_index`
    (built here when None). Returns the finder, or None when the store has no overlays
    or cannot be read (logged: the program runs without them)."""
    try:
        if index is None:
            index = build_index(store)
        if not index:
            return None
        _preimport(policy)
    except Exception as exc:  # contained (rule 7): CodeSutureError or anything else
        _log().warning("overlays not loaded from %s: %s", store.location, getattr(exc, "reason", exc))
        return None
    finder = OverlayFinder(index, policy, store)
    sys.meta_path.insert(0, finder)
    return finder


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, OverlayFinder)]
