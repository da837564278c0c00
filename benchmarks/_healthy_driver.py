"""Child process of healthy_path.py: time pyperformance workloads in-process.

Run as ``python _healthy_driver.py SPEC`` or ``python -m codesuture.boot
_healthy_driver.py SPEC`` where SPEC is JSON: ``{"workloads": {"richards": LOOPS, ...},
"samples": N, "warmup": W}``. Prints one JSON line: ``{"richards": [seconds per
sample, ...], ...}``; each sample is LOOPS calls of the workload.

The workloads are pyperformance's own benchmark modules, located at run time in the
installed pyperformance package and imported as ordinary modules (their
``if __name__ == "__main__"`` pyperf runner is not executed). ``pyperf`` is replaced by
a tiny shim offering only ``perf_counter``, so that no pyperf machinery runs in here.
"""

import importlib.util
import json
import os
import sys
import time
import types


def _shim_pyperf() -> None:
    shim = types.ModuleType("pyperf")
    shim.perf_counter = time.perf_counter
    sys.modules["pyperf"] = shim


def _load(name: str):
    import pyperformance

    path = os.path.join(os.path.dirname(pyperformance.__file__), "data-files", "benchmarks",
                        f"bm_{name}", "run_benchmark.py")
    spec = importlib.util.spec_from_file_location(f"bm_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class _Capture:
    """Stands in for pyperf.Runner where a benchmark's main() builds its inputs."""

    def __init__(self) -> None:
        self.metadata: dict = {}
        self.call = None

    def bench_func(self, name, func, *args):
        self.call = (func, args)


def workload(name: str):
    """A zero-argument callable doing one iteration of pyperformance's *name*."""
    m = _load(name)
    if name == "richards":
        r = m.Richards()
        return lambda: r.run(1)
    if name == "nbody":
        return lambda: m.bench_nbody(1, m.DEFAULT_REFERENCE, m.DEFAULT_ITERATIONS)
    if name == "chaos":
        cap = _Capture()
        args = types.SimpleNamespace(thickness=m.DEFAULT_THICKNESS, width=m.DEFAULT_WIDTH, height=m.DEFAULT_HEIGHT,
                                     iterations=m.DEFAULT_ITERATIONS, filename=None, rng_seed=m.DEFAULT_RNG_SEED)
        m.main(cap, args)
        func, fargs = cap.call
        return lambda: func(*fargs)
    if name == "deltablue":
        return lambda: m.delta_blue(100)
    raise SystemExit(f"unknown workload {name}")


def main() -> None:
    _shim_pyperf()
    spec = json.loads(sys.argv[1])
    out = {}
    for name, loops in spec["workloads"].items():
        fn = workload(name)
        perf = time.perf_counter
        for _ in range(spec.get("warmup", 1)):
            for _ in range(loops):
                fn()
        times = []
        for _ in range(spec["samples"]):
            t0 = perf()
            for _ in range(loops):
                fn()
            times.append(perf() - t0)
        out[name] = times
    print(json.dumps(out))


if __name__ == "__main__":
    main()
