"""``codesuture watch``: run a program, and start it again after each heal.

Each run is a fresh ``python -m codesuture.boot --retries 0 ...`` (dev mode: heal, never
replay inside the process); when it ends with an error after the overlay store
changed (a patch was written), the program is started again, so it runs from the start
with every overlay loaded at import. It stops when the program exits 0, when a run
changed nothing in the store, on Ctrl-C, after *max_restarts* restarts, or when the run
had side effects before its crash (a file written, a connection...: the run's own
audit hook says so, :mod:`codesuture.runtime.effects`; with ``replay = never``, always):
starting it again would repeat them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, Sequence

from codesuture.settings import EXIT_INTERRUPTED


def fingerprint(store: str) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime in ns) of every overlay and sidecar in *store* (a folder)."""
    try:
        names = sorted(n for n in os.listdir(store) if n.endswith((".overlay", ".json")) and not n.startswith("."))
    except OSError:
        return ()
    out = []
    for n in names:
        try:
            st = os.stat(os.path.join(store, n))
        except OSError:
            continue
        out.append((n, st.st_size, st.st_mtime_ns))
    return tuple(out)


def watch(store: str, program: Sequence[str], *, max_restarts: int = 3, boot_options: Sequence[str] = (),
          on_restart: Callable[[int, int], None] | None = None, python: str = sys.executable,
          on_stop: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Run *program* (``script.py args...`` or ``-m module args...``) under boot with the
    overlay store *store*, restarting it after each run that ended in an error and
    wrote a patch, unless that run had side effects before its crash. *on_restart(n,
    rc)* is told of restart *n* (from 1); *on_stop(why)* of a restart not made for side
    effects. Returns ``(exit code of the last run, restarts)``."""
    import tempfile

    from codesuture.runtime.effects import REPORT_ENV

    restarts = 0
    while True:
        before = fingerprint(store)
        cmd = [python, "-m", "codesuture.boot", "--overlays", store, "--retries", "0", *boot_options, *program]
        fd, told = tempfile.mkstemp(prefix="codesuture-watch-", suffix=".txt")
        os.close(fd)
        try:
            rc = subprocess.call(cmd, env={**os.environ, REPORT_ENV: told})
            with open(told, encoding="utf-8", errors="replace") as fh:
                why = fh.read(4096).strip()
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED, restarts
        except OSError:
            why = ""
        finally:
            try:
                os.unlink(told)
            except OSError:
                pass
        if rc == 0 or rc == EXIT_INTERRUPTED or restarts >= max_restarts or fingerprint(store) == before:
            return rc, restarts
        if why:
            if on_stop is not None:
                on_stop(why)
            return rc, restarts
        restarts += 1
        if on_restart is not None:
            on_restart(restarts, rc)


__all__ = ["watch", "fingerprint"]
