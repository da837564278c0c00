"""The two kinds of store, by location: a bundle file or a folder."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any


def open_store(location: str | os.PathLike[str]) -> Any:
    """The store at *location*: a :class:`~codesuture.store.bundle.BundleStore` when it
    is a file, else a :class:`~codesuture.store.directory.DirectoryStore` (which may not
    exist yet: an empty store)."""
    p = os.fspath(location)
    if os.path.isfile(p):
        from codesuture.store.bundle import BundleStore  # only deploys pay for zipfile

        return BundleStore(p)
    from codesuture.store.directory import DirectoryStore

    return DirectoryStore(p)


__all__ = ["open_store"]
