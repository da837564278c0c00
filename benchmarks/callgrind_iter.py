"""Instructions per iteration under callgrind: ``python -m codesuture.boot script.py``
versus ``python script.py``, where the script is a pyperformance benchmark run as
``__main__`` (deterministic, unlike wall time on a shared machine).

The scripts are the installed pyperformance's own ``bm_*/run_benchmark.py`` files,
run unmodified as the main script (nothing is copied into this repository); ``pyperf``
is replaced by a shim (on ``PYTHONPATH``) whose ``Runner`` runs the benchmarked
function ``W`` times (warm-up), runs ``gc.collect()`` (so the garbage collector's
generation counts are zero when the window opens, and collections fall on the same
allocations in both variants: otherwise one young collection more or less inside the
window is ~5 % of a deltablue iteration), calls ``os.getpgrp()``, runs it ``K`` times
and calls ``os.getpgrp()`` again. Callgrind dumps its counters before every ``os_getpgrp``
(``--dump-before``), so the second dump holds exactly the ``K`` measured iterations:
(count at W+K iterations - count at W iterations) / K, start-up cancelled. Without
that symbol (a stripped interpreter), the same number comes from two runs
(``K`` = 0 and ``K``) by difference. Without pyperformance, small kernels of this
script's own (``own_*``) stand in.

Layouts: the environment gets one extra variable of 0, 1000 and 4000 bytes
(``--pads``); ``--phases`` adds layouts where a ``sitecustomize`` in the shim folder
first makes N throwaway classes take a type version tag each (in both variants),
which moves the script's classes to other slots of CPython's type attribute cache
(4096 entries, indexed by version tag XOR name address): plain python's own count
moves with it, which sizes the noise floor of any layout.

Everything else is fixed: ``env -i``-style environment (``PATH``, ``HOME``,
``PYTHONHASHSEED=0``, a private ``PYTHONPYCACHEPREFIX`` filled by a native run first),
fixed work folders, callgrind's output outside the script's folder (a folder listing
the import system caches must not change between runs). Two identical runs give the
same count (``--check`` repeats one and says so).

Target: boot/plain <= 1.005 per iteration, averaged over the layouts, for every
benchmark and Python.

    python benchmarks/callgrind_iter.py [--quick] [--python PY]... [--bench NAME]... [--pads 0,1000,4000]
                                        [--phases 0,3,5] [--warmup W] [--iterations K] [--jobs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common as C

TARGET = 1.005
BENCHES = ("richards", "nbody", "chaos", "deltablue")
MARKER = "os_getpgrp"

SHIM = '''\
"""pyperf stand-in for callgrind_iter.py: W warm-up iterations, a full collection, a
marker, K measured iterations, a marker. CGITER="W,K"."""
import gc
import os
import time

perf_counter = time.perf_counter
_W, _K = (int(x) for x in os.environ["CGITER"].split(","))


class Runner:
    def __init__(self, *args, **kwargs):
        import argparse

        self.metadata = {}
        self.argparser = argparse.ArgumentParser()

    def parse_args(self, args=None):
        return self.argparser.parse_args([])

    def bench_func(self, name, func, *args):
        for _ in range(_W):
            func(*args)
        gc.collect()  # every generation's count at 0: collections fall alike in both variants
        os.getpgrp()
        for _ in range(_K):
            func(*args)
        os.getpgrp()

    def bench_time_func(self, name, func, *args):
        if _W:
            func(_W, *args)
        gc.collect()
        os.getpgrp()
        if _K:
            func(_K, *args)
        os.getpgrp()
'''

#: sitecustomize for --phases: N throwaway classes, each given a type version tag.
SITECUSTOMIZE = '''\
import os

for _i in range(int(os.environ.get("CGPHASE") or 0)):
    _c = type("_Phase", (), {"a": 1})
    _c.a
'''

#: Own kernels, used only when pyperformance is not installed (not pyperformance's code).
OWN = {
    "own_objects": '''
import pyperf


class Node:
    def __init__(self, value, nxt):
        self.value = value
        self.next = nxt

    def total(self):
        n, s = self, 0
        while n is not None:
            s += n.value
            n = n.next
        return s


class Doubler(Node):
    def total(self):
        return 2 * Node.total(self)


def run():
    head = None
    for i in range(2000):
        head = (Doubler if i % 3 else Node)(i, head)
    return sum(head.total() for _ in range(20))


if __name__ == "__main__":
    pyperf.Runner().bench_func("own_objects", run)
''',
    "own_floats": '''
import pyperf


def run():
    xs = [float(i) for i in range(200)]
    vs = [0.0] * 200
    for _ in range(50):
        for i in range(200):
            f = 0.0
            for j in range(0, 200, 7):
                d = xs[i] - xs[j] + 0.5
                f -= d / (d * d + 1.0)
            vs[i] += 0.01 * f
        for i in range(200):
            xs[i] += 0.01 * vs[i]
    return xs[0]


if __name__ == "__main__":
    pyperf.Runner().bench_func("own_floats", run)
''',
    "own_alloc": '''
import pyperf


class Point:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x, self.y = x, y

    def mid(self, other):
        return Point((self.x + other.x) / 2, (self.y + other.y) / 2)


def run():
    pts = [Point(float(i), float(-i)) for i in range(64)]
    for _ in range(200):
        pts = [a.mid(b) for a, b in zip(pts, pts[1:] + pts[:1])]
    return pts[0].x
''' + '''

if __name__ == "__main__":
    pyperf.Runner().bench_func("own_alloc", run)
''',
}


def scripts(python: str, wanted: list[str], work: Path) -> dict[str, str]:
    """benchmark -> script path: pyperformance's run_benchmark.py files for *python*, or
    this script's own kernels (written into *work*) when pyperformance is missing."""
    probe = subprocess.run([python, "-c", "import pyperformance, os; print(os.path.dirname(pyperformance.__file__))"],
                           capture_output=True, text=True)
    if probe.returncode == 0:
        root = Path(probe.stdout.strip()) / "data-files" / "benchmarks"
        out = {b: str(root / f"bm_{b}" / "run_benchmark.py") for b in wanted}
        missing = [b for b, p in out.items() if not os.path.isfile(p)]
        if missing:
            sys.exit(f"{python}: pyperformance has no {', '.join(missing)}")
        return out
    print(f"# {python}: pyperformance not installed (pip install 'codesuture[bench]'): own kernels instead")
    own = work / "own"
    own.mkdir(exist_ok=True)
    for name, source in OWN.items():
        (own / f"{name}.py").write_text(source)
    return {name: str(own / f"{name}.py") for name in OWN}


class Work:
    """Fixed folders for one Python: the shim, the bytecode cache, HOME, outputs."""

    def __init__(self, base: Path, python: str, tag: str) -> None:
        self.python = python
        self.root = base / tag
        self.shim = self.root / "shim"
        self.home = self.root / "home"
        self.pycache = self.root / "pycache"
        self.out = self.root / "out"
        for d in (self.shim, self.home, self.pycache, self.out):
            d.mkdir(parents=True, exist_ok=True)
        (self.shim / "pyperf.py").write_text(SHIM)
        (self.shim / "sitecustomize.py").write_text(SITECUSTOMIZE)

    def env(self, pad: int, phase: int, iters: tuple[int, int]) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin", "HOME": str(self.home), "PYTHONHASHSEED": "0",
            "PYTHONPATH": str(self.shim), "PYTHONPYCACHEPREFIX": str(self.pycache),
            "CODESUTURE_STATE_DIR": str(self.home / "state"), "CGITER": "%d,%d" % iters,
            "CGPHASE": str(phase), "CGPAD": "x" * pad,
        }


def command(work: Work, variant: str, script: str) -> list[str]:
    if variant == "plain":
        return [work.python, script]
    return [work.python, "-m", "codesuture.boot", script]


def callgrind(work: Work, variant: str, script: str, env: dict[str, str], name: str) -> list[int]:
    """Run under callgrind; the counts of every dump (start-up+warm-up, measured, exit)."""
    out = work.out / name
    for old in work.out.glob(name + "*"):
        old.unlink()
    cmd = ["valgrind", "--tool=callgrind", f"--dump-before={MARKER}", f"--callgrind-out-file={out}",
           *command(work, variant, script)]
    proc = subprocess.run(cmd, env=env, cwd=str(work.root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    counts = []
    for part in [out.with_name(f"{name}.{i}") for i in (1, 2)] + [out]:
        if part.exists():
            counts.append(_totals(part))
    for part in work.out.glob(name + "*"):
        part.unlink()
    return counts


def _totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def per_iteration(work: Work, variant: str, script: str, pad: int, phase: int, w: int, k: int, tag: str) -> float:
    """Instructions per iteration: the measured dump / K, or by difference of two runs."""
    counts = callgrind(work, variant, script, work.env(pad, phase, (w, k)), tag)
    if len(counts) == 3:
        return counts[1] / k
    zero = callgrind(work, variant, script, work.env(pad, phase, (w, 0)), tag + "-0")  # no marker dumps
    return (sum(counts) - sum(zero)) / k


def python_tag(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one Python (this one unless --python), W=1, K=1")
    ap.add_argument("--python", action="append", help="interpreter to measure (repeat; default: this one)")
    ap.add_argument("--bench", action="append", choices=BENCHES, help="benchmark (repeat; default: all four)")
    ap.add_argument("--pads", default="0,1000,4000", help="sizes of the extra environment variable (layouts)")
    ap.add_argument("--phases", default="", help="extra layouts: throwaway classes tagged first, e.g. 0,3,5")
    ap.add_argument("--warmup", type=int, help="warm-up iterations W (default 2, quick 1)")
    ap.add_argument("--iterations", type=int, help="measured iterations K (default 2, quick 1)")
    ap.add_argument("--jobs", type=int, default=1, help="callgrind runs in parallel (the machine is shared)")
    ap.add_argument("--check", action="store_true", help="repeat the first run and check the count is the same")
    ap.add_argument("--keep", help="work folder to use and keep (default: a fixed one under the temp folder)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    pythons = args.python or [sys.executable]
    benches = args.bench or list(BENCHES)
    pads = [int(p) for p in args.pads.split(",") if p != ""]
    phases = [int(p) for p in args.phases.split(",") if p != ""]
    w = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    k = args.iterations or (1 if args.quick else 2)
    base = Path(args.keep or os.path.join(tempfile.gettempdir(), f"codesuture-callgrind-{os.getuid()}"))
    C.header("instructions per iteration under callgrind: boot / plain, pyperformance scripts as __main__")
    print(f"# W={w} warm-up, K={k} measured iterations; layouts: extra variable of {pads} bytes"
          + (f"; phases {phases}" if phases else "") + f"; work folder {base}")
    layouts = [(pad, 0) for pad in pads] + [(pads[0] if pads else 0, ph) for ph in phases if ph]
    results: dict = {}
    ok_all = True
    for python in pythons:
        version = python_tag(python)
        work = Work(base, python, "py" + version)
        found = scripts(python, benches, work.root)
        for variant in ("plain", "boot"):  # native runs fill the bytecode cache first
            for script in found.values():
                subprocess.run(command(work, variant, script), env=work.env(0, 0, (0, 0)), cwd=str(work.root),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        jobs = [(b, variant, pad, ph) for b in found for (pad, ph) in layouts for variant in ("plain", "boot")]

        def one(job):
            b, variant, pad, ph = job
            return job, per_iteration(work, variant, found[b], pad, ph, w, k, f"{b}.{variant}.{pad}.{ph}")

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            counts = dict(pool.map(one, jobs))
        if args.check:
            b, variant, pad, ph = jobs[0]
            again = per_iteration(work, variant, found[b], pad, ph, w, k, "check")
            print(f"# determinism: {b} {variant} layout {pad}/{ph}: {counts[jobs[0]]:,.0f} then {again:,.0f}: "
                  + ("same" if again == counts[jobs[0]] else "DIFFERENT"))
        print(f"\nPython {version} ({python}): instructions per iteration, plain and boot, per layout "
              "(pad bytes / phase)")
        for b in found:
            rows = []
            for pad, ph in layouts:
                p, q = counts[(b, "plain", pad, ph)], counts[(b, "boot", pad, ph)]
                rows.append((pad, ph, p, q, q / p))
            env_ratios = [r[4] for r in rows if r[1] == 0]
            mean = statistics.fmean(env_ratios)
            ok = mean <= TARGET
            ok_all &= ok
            plain_spread = max(r[2] for r in rows) / min(r[2] for r in rows)
            print(f"  {b:<10}" + "  ".join(f"{pad}/{ph}: {p / 1e6:8.2f}M {q / 1e6:8.2f}M {x:6.4f}"
                                           for pad, ph, p, q, x in rows))
            line = f"  {'':<10}mean boot/plain over the environment layouts {mean:.4f}  target <= {TARGET}: {C.verdict(ok)}"
            if phases:
                all_mean = statistics.fmean(r[4] for r in rows)
                line += f"; over every layout {all_mean:.4f}; plain's own spread {plain_spread:.4f}x"
            print(line)
            results.setdefault(version, {})[b] = [dict(zip(("pad", "phase", "plain", "boot", "ratio"), r)) for r in rows]
    print(f"\nper-iteration ratio <= {TARGET} for every benchmark and Python: {C.verdict(ok_all)}")
    C.dump_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
