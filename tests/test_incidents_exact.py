"""Incidents are complete (docs/governance.md): the rate limit applies to lines, never
to the count. Guard firings held back after a site's last line are flushed when the
process exits, so the ``firings`` of a site's ``guard_fired`` lines add up to exactly
the number of times its guard fired: in a burst, across threads, and in a
``multiprocessing`` child that ends with ``os._exit``. Real boot processes on a real
overlay and incidents file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heal_helpers import boot, clean_env, heal, write

LIB = """
def lookup(d):
    return d["missing"]
"""

MAIN = """
import sys, threading
import lib

mode, n = sys.argv[1], int(sys.argv[2])
if mode == "burst":
    for _ in range(n):
        lib.lookup({"present": 1})
elif mode == "threads":
    def work():
        for _ in range(n):
            lib.lookup({"present": 1})
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
elif mode == "child":
    import multiprocessing as mp

    def work(k):
        for _ in range(k):
            lib.lookup({"present": 1})

    if __name__ == "__main__":
        for _ in range(3):
            lib.lookup({"present": 1})
        p = mp.get_context("fork").Process(target=work, args=(n,))
        p.start()
        p.join()
print("RESULT done")
"""


@pytest.fixture(scope="module")
def healed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exact") / "app"
    write(root / "pyproject.toml", '[project]\nname = "exact"\nversion = "0"\n')
    write(root / "lib.py", LIB)
    main = write(root / "main.py", MAIN)
    store = root / "overlays"
    r = heal(main, store, args=("burst", "1"))
    assert r.returncode == 0 and r.results() == ["RESULT done"], str(r)
    return {"main": main, "store": store}


def _firings(path: Path) -> tuple[int, int]:
    """(lines, firings) of lib's guard_fired incidents in *path*."""
    items = [json.loads(x) for x in path.read_text().splitlines()]
    fired = [i for i in items if i["kind"] == "guard_fired" and i["site"].startswith("lib:")]
    return len(fired), sum(i["firings"] for i in fired)


@pytest.mark.parametrize("mode,n,expected", [("burst", 500, 500), ("threads", 250, 1000), ("child", 200, 203)])
def test_every_guard_firing_is_counted(healed: dict[str, Path], tmp_path: Path, mode: str, n: int,
                                       expected: int) -> None:
    path = tmp_path / "incidents.jsonl"
    r = boot(healed["main"], healed["store"], args=(mode, str(n)), env=clean_env(CODESUTURE_INCIDENTS=str(path)))
    assert r.returncode == 0 and r.results() == ["RESULT done"], str(r)
    lines, firings = _firings(path)
    assert firings == expected, (lines, firings, path.read_text())
    assert lines <= 4, lines  # still rate-limited: a handful of lines, not one per firing
