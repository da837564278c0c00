"""Healthy-path overhead of ``python -m codesuture.boot`` (healing on, no overlays)
versus plain ``python``, on pyperformance's richards, nbody, chaos and deltablue.

Target: boot/plain <= 1.02x for every workload, on every supported Python.

Both variants run the same child script (_healthy_driver.py), which imports the
workloads from the installed pyperformance package and times them itself, so process
start-up is excluded. Rounds alternate the variants (ABBA), each child takes several
samples after a warm-up; the per-round ratio is boot median / plain median, and the
result is the median of those ratios (with its interquartile range). The same is
computed from each child's fastest sample ("min-based"), which is less sensitive to
other load on a shared machine: a workload is MET when the median-based ratio is
within the target, MISSED when both are over it, and UNCLEAR (noise) otherwise.

    python benchmarks/healthy_path.py [--quick] [--rounds N] [--samples N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import _common as C

WORKLOADS = ("richards", "nbody", "chaos", "deltablue")
TARGET = 1.02
DRIVER = C.HERE / "_healthy_driver.py"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and samples")
    ap.add_argument("--rounds", type=int, help="rounds (one child per variant each); default 24, quick 8")
    ap.add_argument("--samples", type=int, help="timed samples per workload per child; default 8, quick 5")
    ap.add_argument("--sample-ms", type=float, default=60.0, help="target length of one sample (default 60 ms)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--no-pyc", action="store_true", help="keep the caller's bytecode-cache setting")
    ap.add_argument("--json", help="also write the raw results to this file")
    args = ap.parse_args()
    rounds = args.rounds or (8 if args.quick else 24)
    samples = args.samples or (5 if args.quick else 8)
    names = [w for w in args.workloads.split(",") if w]
    C.pyperformance_benchmarks_dir()  # fail early when pyperformance is missing

    C.header("healthy path: python -m codesuture.boot vs python (in-process work time)")
    pycache, _keep = C.make_pycache(args)
    with tempfile.TemporaryDirectory(prefix="codesuture-bench-healthy-") as cwd:
        env = C.child_env(pycache)
        # No overlays directory exists in cwd, and --overlays points at a missing one:
        # healing is on (the default), the overlay finder is not installed.
        variants = {
            "python": [sys.executable, str(DRIVER)],
            "boot": [sys.executable, "-m", "codesuture.boot", "--overlays", str(Path(cwd) / "overlays"), str(DRIVER)],
        }
        # Calibrate loops per sample with plain python (also warms the pyc cache).
        calib = _child(variants["python"], {n: 1 for n in names}, 2, 0, env, cwd)
        loops = {n: max(1, round(args.sample_ms / 1000 / C.median(calib[n]))) for n in names}
        _child(variants["boot"], {n: 1 for n in names}, 1, 0, env, cwd)  # warm boot's pyc too
        print(f"# rounds {rounds}, samples/child {samples}, loops/sample {loops}")

        per: dict[str, dict[str, list[float]]] = {v: {n: [] for n in names} for v in variants}
        ratios: dict[str, list[float]] = {n: [] for n in names}
        min_ratios: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            # Rotate the workload order too, so no workload always runs first.
            rot = names[r % len(names):] + names[: r % len(names)]
            got = {}
            for i in C.order(r):
                v = list(variants)[i]
                got[v] = _child(variants[v], {n: loops[n] for n in rot}, samples, 1, env, cwd)
            for n in names:
                mp, mb = C.median(got["python"][n]), C.median(got["boot"][n])
                per["python"][n].append(mp)
                per["boot"][n].append(mb)
                ratios[n].append(mb / mp)
                min_ratios[n].append(min(got["boot"][n]) / min(got["python"][n]))
            print(f"  round {r + 1:2d}/{rounds}: " + "  ".join(f"{n} {ratios[n][-1]:.3f}" for n in names), flush=True)

    print()
    print(f"{'workload':<10} {'python ms':>10} {'boot ms':>10} {'ratio':>7} {'IQR of ratio':>16} {'min-based':>10}"
          f"  target <= {TARGET:.2f}x")
    states = []
    for n in names:
        mp = C.median(per["python"][n]) * 1000 / loops[n]
        mb = C.median(per["boot"][n]) * 1000 / loops[n]
        ratio = C.median(ratios[n])
        lo, hi = C.quartiles(ratios[n])
        mratio = C.median(min_ratios[n])
        state = "MET" if ratio <= TARGET else "MISSED" if mratio > TARGET else "UNCLEAR (noise)"
        states.append(state)
        print(f"{n:<10} {mp:10.2f} {mb:10.2f} {ratio:7.3f} {f'[{lo:.3f}, {hi:.3f}]':>16} {mratio:10.3f}  {state}")
    print("(ms = median time of one workload iteration; ratio = median over rounds of boot/python,"
          " min-based = the same from each child's fastest sample)")
    overall = "MISSED" if "MISSED" in states else "MET" if all(x == "MET" for x in states) else "UNCLEAR (re-run with more --rounds)"
    print(f"healthy path overall: {overall}")
    C.dump_json(args.json, {"loops": loops, "per_round_medians": per, "ratios": ratios, "min_ratios": min_ratios})
    return 0


def _child(cmd: list[str], workloads: dict[str, int], samples: int, warmup: int, env, cwd) -> dict[str, list[float]]:
    spec = json.dumps({"workloads": workloads, "samples": samples, "warmup": warmup})
    proc = C.run([*cmd, spec], env=env, cwd=cwd)
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
