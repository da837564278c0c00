"""The meta path finder and its loader.

:class:`OverlayFinder` sits first on ``sys.meta_path``. For a module without an
overlay it costs one dict lookup and returns None. For a module with one, it asks
the rest of ``sys.meta_path`` for the real spec and, when that is an ordinary source
module, swaps in :class:`OverlayLoader`: a ``SourceFileLoader`` whose ``get_code``
returns the overlay's code when it applies and the normal compiled source otherwise.
Everything else (``__file__``, ``get_source`` for ``inspect``, ``importlib.resources``,
``-X importtime``) is the ordinary loader's.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec, SourceFileLoader


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
        try:
            from codesuture.loader.resolve import resolve

            source = self.get_data(self.path)
            found = resolve(fullname, self._entries, source, self.path, self._policy)
            if found is not None:
                return found.code
        except Exception as exc:  # contained: the original module loads (rule 7)
            _log().warning("overlay for %s not applied: internal error %r", fullname, exc)
        return super().get_code(fullname)


class OverlayFinder:
    """``sys.meta_path`` finder for modules that have overlays in a store."""

    def __init__(self, index: dict[str, list[Any]], policy: Any) -> None:
        self._index = index
        self._policy = policy

    def __repr__(self) -> str:
        return f"<OverlayFinder {len(self._index)} module(s)>"

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        entries = self._index.get(fullname)
        if entries is None:
            return None
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


def install(location: str, policy: Any = None) -> OverlayFinder | None:
    """Put an :class:`OverlayFinder` for the store at *location* (a directory, or a
    bundle file) first on ``sys.meta_path``. *policy*: a
    :class:`~codesuture.trust.policy.LoadPolicy`, or None to read it from the
    environment when the first overlay is met. Returns the finder, or None when the
    store has no overlays or cannot be read (logged; the program runs without them)."""
    import os

    try:
        if os.path.isdir(location):
            from codesuture.overlay.index import index_directory

            index = index_directory(location)
        elif os.path.exists(location):
            from codesuture.overlay.store import open_store

            index = open_store(location).index()
        else:
            return None
    except Exception as exc:  # contained (rule 7): CodeSutureError or anything else
        _log().warning("overlays not loaded from %s: %s", location, getattr(exc, "reason", exc))
        return None
    if not index:
        return None
    finder = OverlayFinder(index, policy)
    sys.meta_path.insert(0, finder)
    return finder


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, OverlayFinder)]
