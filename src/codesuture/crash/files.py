"""Which source files are whose: CodeSuture's own, patchable (the application's and
installed packages'), or neither (the standard library, code without a source file).

Kept apart from :mod:`codesuture.crash.site` because a guard's slow path asks these
questions on every firing (:mod:`codesuture.runtime.callers`,
:func:`codesuture.runtime.events.caught`): this module imports only ``os`` and
``functools`` (``site`` and ``sysconfig`` on the first :func:`is_patchable_file`), not
``dis``, ``dataclasses`` or ``inspect``.
"""

from __future__ import annotations

import os
from functools import lru_cache

#: The folder of the ``codesuture`` package (no trailing separator).
PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@lru_cache(maxsize=1)
def _roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(site-packages folders, standard library folders)``, real paths each ending in
    a separator."""
    import site
    import sysconfig

    sitedirs = set(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        sitedirs.add(site.getusersitepackages())
    paths = sysconfig.get_paths()
    for key in ("purelib", "platlib"):
        sitedirs.add(paths[key])
    stdlib = {paths[k] for k in ("stdlib", "platstdlib")}
    norm = lambda ps: tuple(sorted({os.path.realpath(p) + os.sep for p in ps if p}))  # noqa: E731
    return norm(sitedirs), norm(stdlib)


@lru_cache(maxsize=4096)
def is_own_file(filename: str) -> bool:
    """True for CodeSuture's own source files."""
    return os.path.realpath(filename).startswith(PKG_DIR + os.sep)


@lru_cache(maxsize=4096)
def is_patchable_file(filename: str) -> bool:
    """True for application files and installed packages' files: a ``.py`` file that
    exists, outside CodeSuture and outside the standard library (site-packages inside
    it count as installed packages)."""
    if not filename or filename.startswith("<") or not filename.endswith(".py"):
        return False
    real = os.path.realpath(filename)
    if real.startswith(PKG_DIR + os.sep):
        return False
    if not os.path.isfile(real):
        return False
    sitedirs, stdlib = _roots()
    if any(real.startswith(s) for s in sitedirs):
        return True
    return not any(real.startswith(s) for s in stdlib)


__all__ = ["PKG_DIR", "is_own_file", "is_patchable_file"]
