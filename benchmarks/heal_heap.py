"""Heal latency against heap size: ``Healer(overlays=None).heal(exc)`` wall time for a
crash in a module-level function and in a method, with 0, 1 M and 5 M extra live
gc-tracked objects, side by side in one run. The live swap finds functions and
methods by name (``codesuture.patch.swap.functions_by_name``), so their heal must not
grow with the heap; a crash in a closure made at run time needs one
``gc.get_referrers`` pass (it is shown, for information).

* **first heal in a fresh process**, per heap size: the heal path imported first (as
  the serving boundaries' warm-up does), then the heap built, then the first crash
  (a function), then the second (a method); median over fresh processes. A cold one
  (nothing imported beforehand, no extra heap) is shown for information.
* **steady state**: one long-lived child process per heap size, driven round by round
  in rotating order; each round every child writes a fresh module and heals a
  function, a method and a closure crash.

Each child counts the ``gc.get_referrers`` and ``gc.get_objects`` calls made during
every heal. Targets: function and method heals <= 10 ms at 5 M live objects (steady
state, median), no ``gc.get_referrers`` and no ``gc.get_objects`` call for them;
first heal in a fresh process <= 15 ms.

    python benchmarks/heal_heap.py [--quick] [--rounds N] [--children N] [--sizes 0,1000000,5000000] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

TARGET_MS = 10.0
FIRST_TARGET_MS = 15.0
SIZES = (0, 1_000_000, 5_000_000)

MODULE = """
def f_key(d, k):
    return d[k]


class Repo:
    def get(self, d, k):
        return d[k]


def make():
    def get(d, k):
        return d[k]
    return get


keep = make()
"""
#: case -> expression (in the fresh module's namespace) that crashes once.
CASES = {"function": "f_key({}, 'k')", "method": "Repo().get({}, 'k')", "closure": "keep({}, 'k')"}
TARGETED = ("function", "method")


# --------------------------------------------------------------------------- child

class Probe:
    """Counts ``gc.get_referrers`` / ``gc.get_objects`` calls (the swap looks them up
    on the ``gc`` module at call time)."""

    def __init__(self) -> None:
        self.referrers = 0
        self.objects = 0
        real_ref, real_obj = gc.get_referrers, gc.get_objects

        def get_referrers(*objs):
            self.referrers += 1
            return real_ref(*objs)

        def get_objects(*a, **k):
            self.objects += 1
            return real_obj(*a, **k)

        gc.get_referrers, gc.get_objects = get_referrers, get_objects

    def take(self) -> tuple[int, int]:
        out = (self.referrers, self.objects)
        self.referrers = self.objects = 0
        return out


def build_heap(n: int) -> list:
    """*n* extra live gc-tracked objects: slotted and plain instances, lists, dicts and
    closures (a mix a server holds: records, rows, caches, callbacks)."""

    class Slot:
        __slots__ = ("i",)

        def __init__(self, i):
            self.i = i

    class Rec:
        def __init__(self, i):
            self.i = i

    def mk(i):
        return lambda: i

    heap: list = []
    parts = ((Slot, 4), (Rec, 2), (lambda i: [i], 2), (lambda i: {"i": i}, 1), (mk, 1))
    for make, tenths in parts:
        count = n * tenths // 10 if make is not mk else n - len(heap)
        heap.extend(make(i) for i in range(count))
    return heap


_seq = 0


def fresh_module(app: Path):
    global _seq
    _seq += 1
    name = f"heapbench_{os.getpid()}_{_seq}"
    (app / f"{name}.py").write_text(MODULE)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def crash(module, case: str) -> BaseException:
    try:
        eval(CASES[case], vars(module))
    except Exception as exc:  # broad on purpose: not an EAFP handler the heal would honour
        return exc
    raise SystemExit(f"{case} did not crash")


def heal_case(healer, module, case: str, probe: Probe) -> dict:
    exc = crash(module, case)
    probe.take()
    t0 = time.perf_counter()
    result = healer.heal(exc)
    dt = time.perf_counter() - t0
    refs, objs = probe.take()
    if result is None:
        raise SystemExit(f"{case}: not healed")
    try:  # healed: the crash is gone
        eval(CASES[case], vars(module))
    except Exception as exc:
        raise SystemExit(f"{case}: still crashes after the heal: {exc!r}")
    return {"s": dt, "referrers": refs, "objects": objs}


def child(app: str, size: int, warm: bool, serve: bool) -> None:
    import logging

    logging.getLogger("codesuture").setLevel(logging.ERROR)  # heal() logs a warning per patch
    sys.path.insert(0, app)
    if warm:
        from codesuture.runtime import warmup

        for name in warmup.MODULES:
            importlib.import_module(name)
    heap = build_heap(size)
    gc.collect()
    probe = Probe()
    from codesuture.runtime.healer import Healer

    module = fresh_module(Path(app))
    healer = Healer(overlays=None)
    first = {case: heal_case(healer, module, case, probe) for case in ("function", "method")}
    print(json.dumps({"first": first, "objects": len(gc.get_objects()) if not serve else None}), flush=True)
    if not serve:
        return
    for line in sys.stdin:  # one round per line
        if line.strip() != "round":
            break
        module = fresh_module(Path(app))
        healer = Healer(overlays=None)
        print(json.dumps({case: heal_case(healer, module, case, probe) for case in CASES}), flush=True)
    del heap


# -------------------------------------------------------------------------- parent

def spawn(me: list[str], size: int, warm: bool, serve: bool, env: dict, cwd: str) -> subprocess.Popen:
    args = [*me, "--child", str(size)] + (["--warm"] if warm else []) + (["--serve"] if serve else [])
    return subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def reply(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"child {proc.args} ended early (exit {proc.wait()})")
    return json.loads(line)


def label(size: int) -> str:
    return f"{size // 1_000_000} M" if size >= 1_000_000 else f"{size // 1000} k" if size else "0"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, help="steady-state rounds (default 30, quick 10)")
    ap.add_argument("--children", type=int, help="fresh processes per heap size for the first heal (default 5, quick 2)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="extra live objects, comma-separated")
    ap.add_argument("--no-pyc", action="store_true", help="keep the caller's bytecode-cache setting")
    ap.add_argument("--json")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--app", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.app, args.child, args.warm, args.serve)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    rounds = args.rounds or (10 if args.quick else 30)
    children = args.children or (2 if args.quick else 5)
    C.header("heal latency against heap size: Healer(overlays=None).heal(exc)")
    pycache, _keep = C.make_pycache(args)
    env = C.child_env(pycache)
    with tempfile.TemporaryDirectory(prefix="codesuture-bench-heap-") as app:
        me = [sys.executable, str(Path(__file__).resolve()), "--app", app]
        C.run([*me, "--child", "0"], env=env, cwd=app)  # fills the pyc cache
        # Long-lived children, one per heap size (their first heal counts as a fresh one).
        servers = {size: spawn(me, size, True, True, env, app) for size in sizes}
        first: dict[int, list[dict]] = {size: [] for size in sizes}
        objects: dict[int, int] = {}
        for size, proc in servers.items():
            got = reply(proc)
            first[size].append(got["first"])
        for r in range(children - 1):
            for size in sizes[r % len(sizes):] + sizes[: r % len(sizes)]:
                proc = spawn(me, size, True, False, env, app)
                got = reply(proc)
                proc.wait()
                first[size].append(got["first"])
                objects[size] = got["objects"]
        cold = []
        for _ in range(children):
            proc = spawn(me, 0, False, False, env, app)
            cold.append(reply(proc)["first"])
            proc.wait()
        steady: dict[int, dict[str, list[dict]]] = {size: {case: [] for case in CASES} for size in sizes}
        for r in range(rounds):
            order = sizes[r % len(sizes):] + sizes[: r % len(sizes)]
            if r % 2:
                order.reverse()
            for size in order:
                proc = servers[size]
                proc.stdin.write("round\n")
                proc.stdin.flush()
                for case, sample in reply(proc).items():
                    steady[size][case].append(sample)
        for proc in servers.values():
            proc.stdin.close()
            proc.wait()

    ms = lambda samples: C.median([s["s"] for s in samples]) * 1e3  # noqa: E731
    heads = "".join(f"{label(s) + ' objects':>16}" for s in sizes)
    print(f"extra live objects: {', '.join(f'{label(s)}' for s in sizes)}"
          + (f" (gc.get_objects() saw {', '.join(f'{objects[s]:,}' for s in sizes if s in objects)})" if objects else ""))
    print(f"\nfirst heal in a fresh process (heal path imported, then the heap built), median of {children}:")
    print(f"  {'case':<26}{heads}")
    ok_first = True
    for case in ("function", "method"):
        meds = [ms([f[case] for f in first[s]]) for s in sizes]
        ok_first &= meds[0] <= FIRST_TARGET_MS
        print(f"  {case + (' (the first)' if case == 'function' else ' (the second)'):<26}"
              + "".join(f"{m:16.2f}" for m in meds))
    cold_ms = ms([c["function"] for c in cold])
    print(f"  {'cold (imports included)':<26}{cold_ms:16.2f}   (no warm-up, no extra heap: for information)")
    print(f"  first heal <= {FIRST_TARGET_MS:.0f} ms (warmed, no extra heap): {C.verdict(ok_first)}")

    print(f"\nsteady state, median of {rounds} rounds (ms), and gc calls per heal (referrers/objects):")
    print(f"  {'case':<26}{heads}   target")
    ok = True
    for case in CASES:
        meds = [ms(steady[s][case]) for s in sizes]
        calls = [(max(x["referrers"] for x in steady[s][case]), max(x["objects"] for x in steady[s][case]))
                 for s in sizes]
        line = f"  {case:<26}" + "".join(f"{m:16.2f}" for m in meds)
        if case in TARGETED:
            good = meds[-1] <= TARGET_MS and all(c == (0, 0) for c in calls)
            ok &= good
            line += f"   <= {TARGET_MS:.0f} ms at {label(sizes[-1])}, no gc pass: {C.verdict(good)}"
        else:
            line += "   (one gc.get_referrers pass: grows with the heap; for information)"
        print(line)
        print(f"  {'  gc calls per heal':<26}" + "".join(f"{f'{c[0]}/{c[1]}':>16}" for c in calls))
    print(f"heal latency at {label(sizes[-1])} live objects (function, method): {C.verdict(ok)};"
          f" first heal in a fresh process: {C.verdict(ok_first)}")
    C.dump_json(args.json, {"sizes": sizes, "first": {str(k): v for k, v in first.items()}, "cold": cold,
                            "steady": {str(k): v for k, v in steady.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
