"""Durable overlay+sidecar pairs (docs/threat-model.md, store/directory.py
``write_pair``): a heal killed (SIGKILL) while it writes the new pair, at any of its
``fsync`` calls, leaves a store from which boot loads the previous good pair or the
complete new one, never neither; the next heal completes and cleans up. The kill is
real: a ``sitecustomize`` in the healing process sends itself SIGKILL inside the
``fsync`` of the chosen file."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from heal_helpers import boot, clean_env, heal, overlays_in, write

LIB = """
def first(d):
    return d["missing"]


def second(d):
    return d["absent"]
"""

MAIN = """
import sys
import lib
print("RESULT", getattr(lib, sys.argv[1])({"present": 1}))
"""

KILLER = """
import os, re, signal

_WHICH = os.environ.get("KILL_IN_FSYNC_OF", "")
_fsync = os.fsync


def fsync(fd):
    try:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        name = ""
    if _WHICH and re.search(_WHICH, name):
        os.kill(os.getpid(), signal.SIGKILL)
    return _fsync(fd)


os.fsync = fsync
"""

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name a descriptor's file")


@pytest.mark.parametrize("point", [r"^\.\.lib\..*\.next\.\d+\.[0-9a-f]+\.tmp$", r"^\.lib\..*\.json\.\d+\.[0-9a-f]+\.tmp$",
                                   r"^\.lib\..*\.overlay\.\d+\.[0-9a-f]+\.tmp$"],
                         ids=["next-copy", "sidecar", "overlay"])
def test_a_heal_killed_mid_pair_leaves_a_loadable_pair(tmp_path: Path, point: str) -> None:
    root = tmp_path / "app"
    write(root / "pyproject.toml", '[project]\nname = "durable"\nversion = "0"\n')
    write(root / "lib.py", LIB)
    main = write(root / "main.py", MAIN)
    store = root / "overlays"
    r = heal(main, store, args=("first",))
    assert r.returncode == 0 and r.results() == ["RESULT 0"], str(r)
    killer = write(tmp_path / "killer" / "sitecustomize.py", KILLER)
    env = clean_env(PYTHONPATH=str(killer.parent), KILL_IN_FSYNC_OF=point)
    killed = heal(main, store, args=("second",), env=env)
    assert killed.returncode == -signal.SIGKILL, str(killed)
    # The previous pair (first healed) or the new one (both): first is healed either way.
    one = boot(main, store, args=("first",))
    assert one.returncode == 0 and one.results() == ["RESULT 0"], str(one)
    assert "not applied" not in one.stderr and "do not match" not in one.stderr, str(one)
    two = boot(main, store, args=("second",))
    assert "do not match" not in two.stderr, str(two)
    assert two.returncode == 0 or "KeyError: 'absent'" in two.stderr, str(two)
    # The next heal completes the store and leaves no copy behind.
    again = heal(main, store, args=("second",))
    assert again.returncode == 0 and again.results() == ["RESULT 0"], str(again)
    both = boot(main, store, args=("first",)), boot(main, store, args=("second",))
    assert all(b.returncode == 0 and b.results() == ["RESULT 0"] for b in both), [str(b) for b in both]
    assert len(overlays_in(store)) == 1
    assert not [n for n in os.listdir(store) if n.endswith((".next", ".tmp"))], os.listdir(store)
