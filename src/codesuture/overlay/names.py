"""Names of overlay files, store keys and portable source origins.

An overlay's *stem* is ``<key>.<cache_tag>.<first 16 hex digits of the source SHA-256>``;
its files are the stem plus a suffix (:data:`OVERLAY_SUFFIX` and the sidecars). The
*key* is the module's import name, or for a script run as ``__main__``
``__main__.<first 16 hex digits of SHA-256("app:" + path relative to the app root)>``,
so the same script has the same key in any checkout, on any machine, behind any
symlinked release.

An *origin* says where a module's source lives without naming the machine:
``app:<path relative to the app root>``, ``site-packages:<path relative to the
site-packages directory>``, or ``sys.path:<path relative to the sys.path entry>``
(POSIX separators). :func:`resolve_origin` finds the file again on another machine.

Kept free of heavy imports: the finder uses it on every start.
"""

from __future__ import annotations

import os
import sys

OVERLAY_SUFFIX = ".overlay"
META_SUFFIX = ".json"
ENVELOPE_SUFFIX = ".dsse.json"
SIGSTORE_SUFFIX = ".sigstore.json"
#: Suffixes of an overlay's files, longest match first (".dsse.json" also ends in ".json").
MEMBER_SUFFIXES = (ENVELOPE_SUFFIX, SIGSTORE_SUFFIX, OVERLAY_SUFFIX, META_SUFFIX)
#: The signed overlay set of a folder or bundle (see codesuture.trust.overlay_set).
SET_NAME = "overlays.manifest.dsse.json"
#: The CycloneDX SBOM a bundle may carry (``bundle create --sbom``): NOT signed, not pinned
#: by the set, never read by the loader (see codesuture.ship.sbom).
SBOM_NAME = "sbom.cdx.json"
MAX_SBOM_BYTES = 16 * 1024 * 1024

#: Size caps in bytes, checked before reading: overlay files, metadata sidecars,
#: envelopes and Sigstore bundles (a few KB each in practice), the signed set (about
#: 1 KB per overlay it pins).
MAX_OVERLAY_BYTES = 16 * 1024 * 1024
MAX_META_BYTES = 1024 * 1024
MAX_ENVELOPE_BYTES = 1024 * 1024
MAX_SET_BYTES = 4 * 1024 * 1024
#: Bytes of signature material (envelopes, Sigstore bundles, the signed set: what a
#: store is read for *before* any signature has vouched for it) read from one store per
#: process; the rest of the store's read budget is spent only on files a verified
#: signature pins. A real envelope is a few KB, a set about 1 KB per overlay.
UNVETTED_BUDGET = 4 * 1024 * 1024
LIMITS = {
    OVERLAY_SUFFIX: MAX_OVERLAY_BYTES,
    META_SUFFIX: MAX_META_BYTES,
    ENVELOPE_SUFFIX: MAX_ENVELOPE_BYTES,
    SIGSTORE_SUFFIX: MAX_ENVELOPE_BYTES,
}

MAIN = "__main__"


def unvetted(name: str) -> bool:
    """True for a member read before a signature vouches for it: an envelope, a
    Sigstore bundle or the signed set (see :data:`UNVETTED_BUDGET`)."""
    return name.endswith((ENVELOPE_SUFFIX, SIGSTORE_SUFFIX))


def stem_for(key: str, source_sha256_hex: str, cache_tag: str | None = None) -> str:
    """The stem of the overlay of *key* for the source with this SHA-256 (hex) on
    *cache_tag* (default: this interpreter's)."""
    return f"{key}.{cache_tag or sys.implementation.cache_tag}.{source_sha256_hex[:16]}"


def parse_stem(stem: str) -> tuple[str, str, str] | None:
    """``(key, cache_tag, source_prefix)`` of a stem, or None when it is not one."""
    parts = stem.rsplit(".", 2)
    if len(parts) != 3 or len(parts[2]) != 16 or not parts[0] or not parts[1]:
        return None
    if any(c not in "0123456789abcdef" for c in parts[2]):
        return None
    return parts[0], parts[1], parts[2]


def split_member(name: str) -> tuple[str, str] | None:
    """``(stem, suffix)`` of an overlay file name, or None when it is not one."""
    for suffix in MEMBER_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            stem = name[: -len(suffix)]
            return (stem, suffix) if parse_stem(stem) else None
    return None


def main_key(origin: str) -> str:
    """Store key of code run as ``__main__`` from *origin* (``app:<relpath>`` for a
    script, ``module:<name>`` for ``-m name``)."""
    from codesuture.util.digest import sha256

    return f"{MAIN}." + sha256(origin.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def app_relative(path: str, app_root: str) -> str | None:
    """*path* relative to *app_root* in POSIX form, or None when it is outside."""
    real, root = os.path.realpath(path), os.path.realpath(app_root)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        return None
    return os.path.relpath(real, root).replace(os.sep, "/")


def script_origin(path: str, app_root: str) -> str:
    """Origin of the file run as ``__main__`` (a script, or a ``-m`` module):
    ``app:<path relative to the app root>`` when it lies inside the app root, else its
    :func:`module_origin` (``site-packages:...`` for ``-m`` of an installed module)."""
    rel = app_relative(path, app_root)
    return "app:" + rel if rel is not None else module_origin(path, None)


def site_dirs() -> tuple[str, ...]:
    """Resolved site-packages directories of this interpreter (longest first)."""
    import site
    import sysconfig

    dirs = set(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        dirs.add(site.getusersitepackages())
    for key in ("purelib", "platlib"):
        dirs.add(sysconfig.get_paths()[key])
    return tuple(sorted({os.path.realpath(d) for d in dirs if d}, key=len, reverse=True))


def module_origin(path: str, app_root: str | None) -> str:
    """Origin of module source file *path*: ``site-packages:...`` when it is under a
    site-packages directory, ``app:...`` under the app root, else ``sys.path:...``
    relative to the longest ``sys.path`` entry holding it (its base name otherwise)."""
    real = os.path.realpath(path)
    for d in site_dirs():
        if real.startswith(d + os.sep):
            return "site-packages:" + os.path.relpath(real, d).replace(os.sep, "/")
    if app_root:
        rel = app_relative(real, app_root)
        if rel is not None:
            return "app:" + rel
    entries = sorted({os.path.realpath(p or os.getcwd()) for p in sys.path if isinstance(p, str)}, key=len, reverse=True)
    for d in entries:
        if real.startswith(d + os.sep):
            return "sys.path:" + os.path.relpath(real, d).replace(os.sep, "/")
    return "sys.path:" + os.path.basename(real)


def resolve_origin(origin: str, app_root: str | None) -> str | None:
    """The file *origin* names on this machine for this interpreter, or None.
    ``app:`` resolves against *app_root*; ``site-packages:`` against this
    interpreter's site-packages directories; ``sys.path:`` against ``sys.path``.
    An absolute path (metadata written before origins were portable) is returned as
    it is."""
    kind, sep, rel = origin.partition(":")
    if not sep or os.path.isabs(origin):
        return origin if os.path.isabs(origin) else None
    parts = rel.split("/")
    if not rel or ".." in parts or rel.startswith("/"):
        return None
    local = os.path.join(*parts)
    if kind == "app":
        roots: tuple[str, ...] = (app_root,) if app_root else ()
    elif kind == "site-packages":
        roots = site_dirs()
    elif kind == "sys.path":
        roots = tuple(p or os.getcwd() for p in sys.path if isinstance(p, str))
    else:
        return None
    for root in roots:
        candidate = os.path.join(root, local)
        if os.path.isfile(candidate):
            return candidate
    return None


__all__ = [
    "OVERLAY_SUFFIX", "META_SUFFIX", "ENVELOPE_SUFFIX", "SIGSTORE_SUFFIX", "MEMBER_SUFFIXES", "SET_NAME", "SBOM_NAME",
    "MAX_SBOM_BYTES",
    "MAX_OVERLAY_BYTES", "MAX_META_BYTES", "MAX_ENVELOPE_BYTES", "MAX_SET_BYTES", "UNVETTED_BUDGET", "unvetted", "LIMITS", "MAIN",
    "stem_for", "parse_stem", "split_member", "main_key", "app_relative", "script_origin", "site_dirs",
    "module_origin", "resolve_origin",
]
