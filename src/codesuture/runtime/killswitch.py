"""The runtime kill switch: revert every live patch in a running process, at once.

Two triggers, both off the healthy path (``docs/governance.md``):

* a signal (setting ``kill_signal``, default ``SIGUSR2``; ``off``: none), armed at
  start-up by :func:`codesuture.runtime.session.arm_kill_switch` without importing this module
  (main thread only; a Python handler found in place is chained after ours). An app
  that installs its own handler later replaces ours: then use the file;
* a control file (setting ``kill_file``): a daemon thread looks for it every
  :data:`POLL_SECONDS` (one ``os.stat``); a file present at start-up stops CodeSuture
  before the program runs.

Then healing stops for good in this process, and
:func:`codesuture.runtime.governance.revert_all` reverts every live patch (the fleet
watcher stopped, the finder off ``sys.meta_path``, healers' patches and overlay code
swapped back to the source's code). Nothing on disk changes.
"""

from __future__ import annotations

import _thread
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

#: Seconds between two looks for the kill file.
POLL_SECONDS = 0.5
#: Why the kill switch went off in this process (``signal 12``, ``kill file PATH``), or None.
KILLED: str | None = None
#: What the revert did: ``{"reason", "functions", "seconds"}`` (empty until it went off).
REPORT: "dict[str, Any]" = {}
_STATE: "dict[str, Any]" = {"session": None, "file": None, "hooked": False}


def install(session: Any) -> None:
    """Watch for *session*'s ``kill_file`` (once per process); a file already there
    sets the switch off at once. Never raises."""
    try:
        _STATE["session"] = session
        path = getattr(session.settings, "kill_file", None)
        if not path or _STATE["file"] is not None:
            return
        _STATE["file"] = path
        if os.path.lexists(path):
            trigger(f"kill file {path}", wait=True)
        else:
            _watch_file()
    except Exception as exc:  # noqa: BLE001 - contained (rule 7)
        _log().warning("kill file not watched: %r", exc)


def trigger(reason: str, *, session: Any = None, wait: bool = False) -> None:
    """Set the kill switch off: healing stops now; the revert runs on a new thread
    (*wait*: on this one). Idempotent; never raises."""
    global KILLED
    if KILLED is not None:
        return
    KILLED = reason
    if session is not None:
        _STATE["session"] = session
    if wait:
        _revert(reason, time.perf_counter())
    else:
        _thread.start_new_thread(_revert, (reason, time.perf_counter()))


def killed() -> bool:
    return KILLED is not None


def _log() -> Any:
    from codesuture.logs import logger

    return logger("codesuture.killswitch")


def _revert(reason: str, t0: float) -> None:
    try:
        from codesuture.runtime.governance import revert_all

        functions, seconds = revert_all(_STATE["session"], reason, t0)
        REPORT.update(reason=reason, functions=functions, seconds=seconds)
    except BaseException as exc:  # noqa: BLE001 - contained (rule 7), even at shutdown
        try:
            _log().warning("kill switch (%s): internal error %r", reason, exc)
        except Exception:  # noqa: BLE001
            pass


def _watch_file() -> None:
    import threading

    def loop(path: str, stopped: Any) -> None:
        while KILLED is None and not stopped.wait(POLL_SECONDS):
            try:
                os.stat(path)
            except OSError:
                continue
            trigger(f"kill file {path}")
            return

    thread = threading.Thread(target=loop, args=(_STATE["file"], threading.Event()), name="codesuture-killswitch",
                              daemon=True)
    thread.start()
    if not _STATE["hooked"]:
        _STATE["hooked"] = True
        os.register_at_fork(after_in_child=_after_fork_child)


def _after_fork_child() -> None:
    try:
        if KILLED is None and _STATE["file"]:
            _watch_file()  # threads do not survive a fork
    except Exception:  # noqa: BLE001 - never break a fork
        pass


__all__ = ["install", "trigger", "killed", "KILLED", "REPORT", "POLL_SECONDS"]
