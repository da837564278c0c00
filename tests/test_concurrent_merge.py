"""No lost patch under concurrent writers (docs/design-rules.md rule 13): the race
behind a lost patch, made deterministic. Process A runs a function of the app and,
inside it, waits until its fleet watcher has admitted and swapped in the overlay
process B just wrote for another site of the same function; A's frame still runs the
source's code and then crashes at its own site. A must heal it (not refuse: "runs code
that its overlay's records do not rebuild") and the store must end with both patches.
Real ``codesuture run`` processes on one store."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from heal_helpers import PY, boot, clean_env, heal, overlays_in, write

SHARED = """
def work(i, sync):
    sync()
    d = {}
    if i == 0:
        return d['k0']
    if i == 1:
        return d['k1']
    return 'no site'
"""

WORKER_A = """
import os, sys, time
import shared
from codesuture.runtime import fleet

def sync():
    print("READY", flush=True)  # (a file written here would make the run unsafe to replay)
    deadline = time.time() + 90
    while time.time() < deadline:  # until B's overlay is admitted and swapped in, live
        watcher = fleet.current()
        if watcher is not None and watcher.applied:
            break
        time.sleep(0.02)
    print("APPLIED", bool(fleet.current() and fleet.current().applied), flush=True)


print("RESULT", 0, shared.work(0, sync))
"""

WORKER_B = """
import shared
print("RESULT", 1, shared.work(1, lambda: None))
"""

CHECK = """
import shared
print("RESULT", [shared.work(i, lambda: None) for i in range(2)])
"""


def test_a_frame_running_the_source_while_the_watcher_swaps_in_another_overlay_still_heals(tmp_path: Path) -> None:
    app = tmp_path / "app"
    write(app / "pyproject.toml", '[project]\nname = "merge"\nversion = "0"\n')
    write(app / "shared.py", SHARED)
    a, b, check = write(app / "a.py", WORKER_A), write(app / "b.py", WORKER_B), write(app / "check.py", CHECK)
    store = app / "overlays"
    pa = subprocess.Popen([PY, "-m", "codesuture", "run", "--overlays", str(store), str(a)], cwd=app,
                          env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pa.stdout is not None
        first = pa.stdout.readline()  # A is inside work(0), running the source's code
        assert first.strip() == "READY", (first, pa.communicate(timeout=30))
        rb = heal(b, store)
        assert rb.returncode == 0 and rb.results() == ["RESULT 1 None"], str(rb)
        out, err = pa.communicate(timeout=120)
    finally:
        if pa.poll() is None:
            pa.kill()
    assert "APPLIED True" in out, f"the watcher never applied B's overlay (the race was not set up)\n{out}\n{err}"
    assert pa.returncode == 0 and "RESULT 0 None" in out, f"rc {pa.returncode}\n{out}\n{err}"
    [name] = overlays_in(store)
    meta = json.loads((store / (name[: -len(".overlay")] + ".json")).read_text())
    assert sorted(p["line"] for p in meta["patches"]) == [5, 7], meta["patches"]
    r = boot(check, store)
    assert r.returncode == 0 and r.results() == ["RESULT [None, None]"], str(r)
