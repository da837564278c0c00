"""Rollback: take patches back out of overlays on disk.

In a running process, :meth:`codesuture.runtime.healer.Healer.rollback` restores the
original code objects; on disk, :func:`rollback` rewrites each overlay without the
selected patches (rebuilt from its source, as when it was made) and deletes an overlay
left with none, signature files included. A rewritten overlay is unsigned until it is
signed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from codesuture.overlay.index import META_SUFFIX, index_directory


@dataclass
class RollbackResult:
    """``overlay``: the file changed; ``removed``: patches taken out (qualnames);
    ``deleted``: the overlay is gone (no patch left)."""

    overlay: str
    removed: list[str]
    deleted: bool


def rollback(directory: Path, module: str | None = None, qualname: str | None = None) -> list[RollbackResult]:
    """Remove the patches of *module* (a store key or module name; None: all) whose
    function is *qualname* (None: all of them) from the overlays in *directory*.
    Raises :class:`~codesuture.errors.OverlayError` on an unreadable overlay."""
    from codesuture.overlay.build import remove_patches
    from codesuture.overlay.store import DirectoryStore
    from codesuture.review.audit import load_meta

    store = DirectoryStore(directory)
    results: list[RollbackResult] = []
    for key, entries in index_directory(directory).items():
        for entry in entries:
            meta = load_meta(Path(entry.path(".overlay")))
            if module is not None and module not in (key, meta.module):
                continue
            chosen = [p for p in meta.patches if qualname is None or p.qualname == qualname]
            if not chosen:
                continue
            left = remove_patches(
                store, Path(entry.path(META_SUFFIX)), lambda p: not (qualname is None or p.qualname == qualname)
            )
            results.append(RollbackResult(entry.path(".overlay"), [p.qualname for p in chosen], left is None))
    return results
