"""Overlay stores: where overlays are read from (and, in dev, written to).

Two kinds share one small interface, which the load policy and the finder use:

* :class:`~codesuture.store.directory.DirectoryStore`: a folder of overlay files;
* :class:`~codesuture.store.bundle.BundleStore`: a deploy bundle (one zip file).

Modules: ``kinds`` (:func:`~codesuture.store.kinds.open_store`), ``directory``,
``bundle``, ``writer``; :class:`Entry` is here. This module imports none of them.

Interface: ``kind`` (``"directory"`` or ``"bundle"``), ``location`` (for messages),
``index()`` (store key -> :class:`Entry`), ``read(name, limit)`` (a member's bytes,
regular files only, capped; None when absent), ``display(name)`` (a member's name for
messages) and, for bundles, ``names()``. Whether a store's contents may load is the
business of :mod:`codesuture.trust.policy`, which reads the store's signed set through
this same interface: stores import nothing from :mod:`codesuture.trust`.
"""

from __future__ import annotations

from codesuture.overlay.names import LIMITS

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any


class Entry:
    """One overlay in a store: its stem (``name``), store ``key``, ``cache_tag`` and
    ``source_prefix`` (first 16 hex digits of the source SHA-256), all from its file
    name; nothing is read until :meth:`read`."""

    __slots__ = ("store", "name", "key", "cache_tag", "source_prefix")

    def __init__(self, store: Any, name: str, key: str, cache_tag: str, source_prefix: str) -> None:
        self.store = store
        self.name = name
        self.key = key
        self.cache_tag = cache_tag
        self.source_prefix = source_prefix

    def __repr__(self) -> str:
        return f"Entry({self.store.display(self.name)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and (self.store.location, self.name) == (other.store.location, other.name)

    def __hash__(self) -> int:
        return hash((self.store.location, self.name))

    def read(self, suffix: str, limit: int | None = None) -> bytes | None:
        """Bytes of ``<stem><suffix>`` (capped at *limit*, default the suffix's cap),
        or None when absent. Raises :class:`~codesuture.errors.FileError` (an
        :class:`~codesuture.errors.OverlayError` for bundles) when unusable."""
        return self.store.read(self.name + suffix, LIMITS[suffix] if limit is None else limit)

    def path(self, suffix: str) -> str:
        """``<stem><suffix>`` as messages name it (a path, or ``bundle:member``)."""
        return self.store.display(self.name + suffix)


__all__ = ["Entry"]
