"""Arms the process-wide crash hooks (:mod:`codesuture.runtime.hooks`) without
importing them: a start that never imports a module they patch never pays for them.

:func:`install` (called by :func:`codesuture.runtime.session.activate` when healing
or in prod mode) puts one ``sys.meta_path`` finder in front that answers for nothing:
for any name outside :data:`HOOKED` it is one set lookup. The first import of a hooked
module (``threading``, ``socketserver``, ``http.server``, ``concurrent.futures`` /
``asyncio``'s, the web frameworks' error handlers) takes this finder off
``sys.meta_path``, imports the hooks, installs them for the session
(:func:`codesuture.runtime.hooks.install`, whose own finder then patches that module
right after it executes, and the others later) and hands the look-up to them. When
a hooked module is already imported at :func:`install`, the hooks are installed at
once. Only ``sys`` is imported here; no ``from __future__`` import (it is a module of
its own to load).
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

#: The modules the crash hooks patch (the keys of ``hooks._PATCHERS``; a test checks
#: they agree).
HOOKED = frozenset({
    "threading", "socketserver", "http.server", "concurrent.futures.process", "asyncio.base_events",
    "flask.app", "django.core.handlers.exception", "starlette.middleware.errors",
})
#: The session the hooks are for, once :func:`install` armed them (None: not armed).
_SESSION: "list[Any]" = []


class _Armed:
    """The finder :func:`install` puts first on ``sys.meta_path`` (see the module
    docstring): answers None for every name, after installing the hooks for a hooked one."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<codesuture crash hooks, armed>"

    def find_spec(self, fullname: str, path: "Any" = None, target: "Any" = None) -> "Any":
        if fullname not in HOOKED or not _SESSION:
            return None
        try:
            _disarm()
            from codesuture.runtime import hooks

            hooks.install(_SESSION[0])
            return hooks.find_spec(fullname, path, target)
        except Exception as exc:  # contained (rule 7): the normal finders run
            from codesuture.logs import logger

            logger("codesuture.hooks").warning("crash hooks not installed: %r", exc)
            return None


def _disarm() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Armed)]


def install(session: "Any") -> None:
    """Arm the crash hooks for *session* (idempotent: a second call only changes the
    session they heal for). A no-op unless the session heals or is in prod mode."""
    s = session.settings
    if not (s.heal or s.prod):
        return
    if "codesuture.runtime.hooks" in sys.modules or any(name in sys.modules for name in HOOKED):
        _disarm()
        from codesuture.runtime import hooks

        hooks.install(session)
        return
    _SESSION[:] = [session]
    if not any(isinstance(f, _Armed) for f in sys.meta_path):
        sys.meta_path.insert(0, _Armed())


__all__ = ["HOOKED", "install"]
