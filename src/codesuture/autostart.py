"""The start-up hook: CodeSuture in every Python process a booted program starts.

``python -m codesuture.boot`` and ``codesuture run`` export their settings as
``CODESUTURE_*`` variables and set ``CODESUTURE_AUTOSTART=1``. The package installs
one line into site-packages, ``codesuture-autostart.pth`` (:data:`PTH_LINE`), which
Python's :mod:`site` runs in every process at start-up. It does nothing unless that
variable is set (a dictionary lookup: coverage.py's ``COVERAGE_PROCESS_START``
pattern); then it calls :func:`run`, which activates CodeSuture for the process as
boot would (:func:`codesuture.runtime.session.activate`: the store and its finder, the
crash hooks, the fleet watcher), once. So workers started by spawn (uvicorn
``--workers``, multiprocessing ``spawn`` and ``forkserver``) and plain
``subprocess.run([sys.executable, ...])`` children load the overlays too. Forked
children (gunicorn workers, multiprocessing ``fork``) need none of this: they inherit
their parent's finder and get their own fleet watcher (:mod:`codesuture.runtime.fleet`).

What it never does: break the process (every failure is one log line, the program
runs as with plain python); run when ``CODESUTURE_DISABLE`` is true (the kill switch
wins) or when ``CODESUTURE_AUTOSTART`` is ``0``; activate a second time, or in a
process that is CodeSuture's own entry point (``python -m codesuture.boot``, the
``codesuture`` command, ``-m codesuture.<anything>``, such as the rebuild worker),
which sets itself up.

Only ``os`` and ``sys`` are imported here.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Mapping, Sequence

#: The variable boot sets in the environment it exports.
ENV = "CODESUTURE_AUTOSTART"
#: The file installed into site-packages (sorted after the editable install's own
#: ``__editable__.*.pth``, so the package is importable when it runs).
PTH_NAME = "codesuture-autostart.pth"
#: Its one line. :mod:`site` executes lines starting with ``import``; with the
#: variable unset (or ``0``/empty) this is one dictionary lookup and nothing else.
PTH_LINE = (
    "import os; os.environ.get('CODESUTURE_AUTOSTART', '0') not in ('', '0') and "
    "exec('try:\\n from codesuture.autostart import run\\nexcept Exception:\\n pass\\nelse:\\n run()')"
)

#: The session :func:`run` activated in this process (None: not activated).
SESSION: Any = None
_RAN = False


def arm(environ: "dict[str, str] | os._Environ[str] | None" = None) -> None:
    """Ask for :func:`run` in every Python process started from now on with
    *environ* (default ``os.environ``): boot calls it after exporting its settings."""
    env = os.environ if environ is None else environ
    env[ENV] = "1"


def own_entry_point(argv: "Sequence[str]") -> bool:
    """Whether the command line *argv* (``sys.orig_argv``) runs CodeSuture itself:
    ``-m codesuture`` or ``-m codesuture.<x>`` (boot, the CLI, the rebuild worker), or
    the ``codesuture`` console script."""
    args = list(argv[1:])
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--" or not a.startswith("-") or a == "-":
            script = args[i + 1] if a == "--" and i + 1 < len(args) else a
            return os.path.basename(script) in ("codesuture", "codesuture.exe")
        if a.startswith("--"):
            i += 2 if a == "--check-hash-based-pycs" else 1
            continue
        for j, flag in enumerate(a[1:], start=1):
            if flag in "cm":
                value = a[j + 1:] or (args[i + 1] if i + 1 < len(args) else "")
                return flag == "m" and (value == "codesuture" or value.startswith("codesuture."))
            if flag in "WX":
                if not a[j + 1:]:
                    i += 1  # the option's value is the next argument
                break
        i += 1
    return False


def wanted(environ: "Mapping[str, str]") -> bool:
    """``CODESUTURE_AUTOSTART`` is true and the kill switch is off. Raises ConfigError
    for an invalid value of either."""
    from codesuture import settings

    value = environ.get(ENV)
    if value is None or not settings.parse_bool(ENV, value):
        return False
    return not settings.disabled(environ)


def run(environ: "Mapping[str, str] | None" = None, argv: "Sequence[str] | None" = None) -> Any:
    """Activate CodeSuture in this process as the exported ``CODESUTURE_*`` settings
    say, once. Returns the session, or None when nothing was activated. Never raises."""
    global SESSION, _RAN
    if _RAN:
        return SESSION
    _RAN = True
    env = os.environ if environ is None else environ
    try:
        if not wanted(env) or own_entry_point(sys.orig_argv if argv is None else argv):
            return None
        from codesuture import logs, settings

        logs.request(30)  # logging.WARNING, as boot without -v
        s = settings.load(None, env, start_dir=_start_dir())
        from codesuture.runtime.session import activate

        _, SESSION = activate(s, inherited=True)
    except Exception as exc:  # contained (rule 7): the process runs as with plain python
        try:
            from codesuture.logs import logger

            logger("codesuture.boot").warning("start-up hook: CodeSuture not active in process %d: %s",
                                              os.getpid(), exc)
        except Exception:  # noqa: BLE001 - never break the process
            pass
    return SESSION


def _start_dir() -> str:
    """Where the app root search starts, as boot does: the script's directory, else
    the current directory (``-c``, ``-m``, the REPL)."""
    first = sys.argv[0] if getattr(sys, "argv", None) else ""
    if first and not first.startswith("-") and os.path.isfile(first):
        return os.path.dirname(os.path.abspath(first))
    return os.getcwd()


__all__ = ["ENV", "PTH_NAME", "PTH_LINE", "SESSION", "arm", "own_entry_point", "run", "wanted"]
