"""The distribution that owns a module: what an overlay records as its ``package``.

Heal side (:func:`owner`): the distribution whose ``RECORD`` lists the module's file,
found in the ``*.dist-info`` folders beside it (the site-packages or ``sys.path``
folder that holds the file; the one named like the module's top-level package is read
first, so the usual cost is one ``RECORD``), else, for ``*.egg-info`` installs, through
``importlib.metadata`` limited to that folder. Results are cached per file. An ``app:``
module has no distribution. Names are PEP 503 normalized (``Foo_Bar`` -> ``foo-bar``);
versions by :func:`normalize_version`, a small rule that never changes a version
``packaging`` would accept into another one (the review tools re-normalize with
``packaging``). Nothing here imports ``importlib.metadata`` or ``packaging`` at import.

Load side (:func:`check_installed`): when an admitted overlay records a package, the
distribution of that name beside the module file is read (one cached ``listdir`` per
folder, one metadata header read) and, when its version is not the recorded one, one
WARNING per module says so. The overlay still loads: its source bytes are the ones it
was built from (the loader checked their SHA-256), so only the surrounding package
changed.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

#: metadata folder suffixes, newest convention first
_META_DIRS = (".dist-info", ".egg-info")
_MAX_RECORD = 8 * 1024 * 1024
_MAX_HEADERS = 256 * 1024

_LISTINGS: dict[str, list[str]] = {}
_OWNERS: dict[str, "dict[str, str] | None"] = {}
_WARNED: set[str] = set()


def normalize_name(name: str) -> str:
    """PEP 503 normalized distribution name (``re.sub(r"[-_.]+", "-", name).lower()``,
    without compiling a regular expression on the load path)."""
    out: list[str] = []
    in_run = False
    for ch in name.strip():
        if ch in "-_.":
            if not in_run:
                out.append("-")
            in_run = True
        else:
            out.append(ch)
            in_run = False
    return "".join(out).lower()


def normalize_version(version: str) -> str:
    """A version as recorded: stripped, lowercase, without a leading ``v`` (PEP 440
    normalization is case-insensitive and drops that ``v``). Wheels' versions are
    already normalized, so this is usually the identity."""
    v = version.strip().lower()
    return v[1:] if v[:1] == "v" and v[1:2].isdigit() else v


def package_json(name: str, version: str) -> dict[str, str]:
    """The ``package`` object of overlay metadata."""
    return {"name": normalize_name(name), "version": normalize_version(version)}


def _bases(path: str) -> list[str]:
    """The site-packages and ``sys.path`` folders holding *path*, longest first."""
    import sys

    from codesuture.overlay.names import site_dirs

    real = os.path.realpath(path)
    roots = set(site_dirs())
    roots.update(os.path.realpath(p or os.getcwd()) for p in sys.path if isinstance(p, str))
    return sorted((d for d in roots if real.startswith(d.rstrip(os.sep) + os.sep)), key=len, reverse=True)


def _listing(base: str) -> list[str]:
    """The metadata folders (``*.dist-info``, ``*.egg-info``) in *base*, cached."""
    found = _LISTINGS.get(base)
    if found is None:
        try:
            found = sorted(n for n in os.listdir(base) if n.endswith(_META_DIRS))
        except OSError:
            found = []
        _LISTINGS[base] = found
    return found


def _dir_name(entry: str) -> str:
    """Normalized distribution name in a metadata folder's name (``Foo_Bar-1.0.dist-info``)."""
    stem = entry.rsplit(".", 1)[0]
    return normalize_name(stem.split("-", 1)[0])


def _read(path: str, limit: int) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except OSError:
        return None


def _headers(base: str, entry: str) -> dict[str, str]:
    """``Name`` and ``Version`` from a metadata folder's METADATA/PKG-INFO (or an
    ``.egg-info`` file), read as RFC 822 headers up to the first blank line."""
    path = os.path.join(base, entry)
    if os.path.isdir(path):
        path = os.path.join(path, "METADATA" if entry.endswith(".dist-info") else "PKG-INFO")
    raw = _read(path, _MAX_HEADERS)
    out: dict[str, str] = {}
    for line in (raw or b"").decode("utf-8", "replace").splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in out:
            out[key] = value.strip()
    return out


def _record_lists(base: str, entry: str, rel: str) -> bool:
    """True when ``<base>/<entry>/RECORD`` lists *rel* (a POSIX path relative to *base*)."""
    import csv

    raw = _read(os.path.join(base, entry, "RECORD"), _MAX_RECORD)
    if not raw:
        return False
    text = raw.decode("utf-8", "replace")
    if rel not in text:
        return False
    for row in csv.reader(text.splitlines()):
        if row and os.path.normpath(row[0]).replace(os.sep, "/") == rel:
            return True
    return False


def _egg_owner(base: str, real: str) -> "dict[str, str] | None":
    """An ``*.egg-info`` distribution in *base* whose file list holds *real*."""
    from importlib.metadata import distributions

    for dist in distributions(path=[base]):
        if not str(getattr(dist, "_path", "")).endswith(".egg-info"):
            continue
        try:
            files = dist.files or []
            if any(os.path.realpath(str(dist.locate_file(f))) == real for f in files):
                name, version = dist.metadata["Name"], dist.version
                return package_json(name, version) if name and version else None
        except Exception:  # noqa: BLE001 - malformed third-party metadata: no owner
            continue
    return None


def owner(path: str, origin: str = "") -> "dict[str, str] | None":
    """``{"name", "version"}`` of the installed distribution that owns the module file
    *path*, or None (an ``app:`` *origin*, a file no distribution lists, unreadable
    metadata). Never raises; cached per file."""
    if origin.startswith("app:"):
        return None
    real = os.path.realpath(path)
    if real in _OWNERS:
        return _OWNERS[real]
    found = None
    try:
        for base in _bases(real):
            rel = os.path.relpath(real, base).replace(os.sep, "/")
            top = normalize_name(rel.split("/", 1)[0].removesuffix(".py")).strip("-")
            entries = [e for e in _listing(base) if e.endswith(".dist-info")]
            # likeliest first: named like the top-level package, then names holding it
            # (python-dateutil for dateutil, pyjwt for jwt), then the rest
            for entry in sorted(entries, key=lambda e: (_dir_name(e) != top, top not in _dir_name(e))):
                if _record_lists(base, entry, rel):
                    h = _headers(base, entry)
                    if h.get("Name") and h.get("Version"):
                        found = package_json(h["Name"], h["Version"])
                    break
            if found is None and any(e.endswith(".egg-info") for e in _listing(base)):
                found = _egg_owner(base, real)
            if found is not None:
                break
    except Exception:  # noqa: BLE001 - recording the package must never fail a heal
        found = None
    _OWNERS[real] = found
    return found


def installed_version(name: str, path: str) -> str | None:
    """Normalized version of distribution *name* (PEP 503 normalized) installed beside
    the module file *path* (in the folder of ``sys.path`` that holds it), or None."""
    for base in _bases(path):
        for entry in _listing(base):
            if _dir_name(entry) == name:
                h = _headers(base, entry)
                if normalize_name(h.get("Name", "")) == name and h.get("Version"):
                    return normalize_version(h["Version"])
    return None


def check_installed(key: str, package: "dict[str, str]", path: str, log: Any) -> None:
    """Log one WARNING (once per *key*) when the distribution beside *path* is not the
    version *package* records; a DEBUG line when none is found. Never raises."""
    if key in _WARNED:
        return
    try:
        found = installed_version(package["name"], path)
    except Exception as exc:  # noqa: BLE001 - advisory only
        log.debug("package of %s not checked: %r", key, exc)
        return
    if found is None:
        log.debug("overlay for %s records %s %s; no such distribution is installed beside %s", key,
                  package["name"], package["version"], path)
    elif found != package["version"]:
        _WARNED.add(key)
        log.warning("overlay for %s was made for %s %s; %s %s is installed (its source file is unchanged, so it "
                    "loads: review it for this version)", key, package["name"], package["version"], package["name"],
                    found)


def clear_caches() -> None:
    """Forget folder listings and owners (after installing or removing packages)."""
    _LISTINGS.clear()
    _OWNERS.clear()
    _WARNED.clear()


__all__ = ["owner", "installed_version", "check_installed", "normalize_name", "normalize_version", "package_json",
           "clear_caches"]
