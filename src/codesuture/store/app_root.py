"""Where a folder store's ``app:`` sources are: the app root its heals recorded.

A heal that writes an overlay with an ``app:`` origin also writes the path of its app
root, relative to the store folder, into ``<store>/.codesuture-app-root`` (one line,
UTF-8, written atomically; never signed, never pinned by the signed overlay set, never
put in a bundle, never read by the loader). Relative, so that a copy of the checkout
(store and sources together) points at its own sources, never the original's. The
review commands (``sign``, ``audit``, ``rebuild``, ``suggest``, ``rollback``,
``repro``) use it when no ``--app-root`` is given and the folder it names exists, so
they find the sources from any directory of the same checkout. The file only says
where to look: every source is still checked against the SHA-256 its overlay records.
"""

from __future__ import annotations

import os

#: The file, in a folder store.
APP_ROOT_FILE = ".codesuture-app-root"
_MAX = 4096  # bytes: a path, not a payload


def record(directory: str, app_root: str) -> None:
    """Record *app_root* (relative to *directory*) in the folder store *directory*,
    unless it already says so. Never raises (a failure only costs the review commands a
    guess)."""
    from codesuture.util.files import atomic_write

    path = os.path.join(directory, APP_ROOT_FILE)
    try:
        text = os.path.relpath(os.path.abspath(app_root), os.path.abspath(directory)) + "\n"
    except ValueError:  # another drive: no relative path
        text = os.path.abspath(app_root) + "\n"
    try:
        if recorded_text(directory) == text.strip():
            return
        atomic_write(path, text.encode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - contained (rule 7): the overlay is written
        from codesuture.logs import logger

        logger("codesuture.store").debug("app root not recorded in %s: %r", directory, exc)


def recorded_text(directory: str) -> str | None:
    """What *directory* records, as written (None when nothing or unreadable)."""
    from codesuture.util.files import read_regular

    try:
        raw = read_regular(os.path.join(directory, APP_ROOT_FILE), _MAX)
    except Exception:  # noqa: BLE001 - a hostile or odd file: nothing recorded
        return None
    if not raw:
        return None
    try:
        return raw.decode("utf-8").strip() or None
    except UnicodeDecodeError:
        return None


def recorded(store: str) -> str | None:
    """The app root recorded in the folder store *store* (or the folder holding the
    ``.overlay`` file *store*), made absolute against it, when that folder exists; else
    None (bundles record none)."""
    directory = store if os.path.isdir(store) else os.path.dirname(os.path.abspath(store)) \
        if store.endswith(".overlay") else None
    if directory is None:
        return None
    text = recorded_text(directory)
    if not text:
        return None
    found = os.path.normpath(os.path.join(os.path.abspath(directory), text))
    return found if os.path.isdir(found) else None


def app_root_for(store: str, given: str | None, start: str) -> str:
    """*given* (``--app-root``), else the app root *store* recorded, else the app root
    found from *start* upwards (:func:`codesuture.settings.find_app_root`)."""
    if given:
        return os.path.abspath(given)
    found = recorded(store)
    if found is not None:
        return found
    from codesuture.settings import find_app_root

    return find_app_root(start)


__all__ = ["APP_ROOT_FILE", "record", "recorded", "recorded_text", "app_root_for"]
