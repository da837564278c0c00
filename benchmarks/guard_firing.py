"""Cost of one guard firing (the slow path: a default yielded), with and without
metrics, span events, incidents and shadow mode, in-process.

A module ``def get(d, k): return d[k]`` is healed live (``key_guard``); then
``get(d, "missing")`` is called in a loop, each call one firing (the EAFP check on the
live stack, the typed default, the count, the observer). Variants, configured through
:func:`codesuture.runtime.incidents.configure`:

* ``off``: no observer (``metrics=False``, no incidents, no shadow mode);
* ``metrics``: Prometheus counter ``codesuture_guard_firings_total{site}`` (no span);
* ``metrics+span``: the same inside one recording OpenTelemetry span (SDK tracer
  provider, in-memory exporter): the span is looked up on each firing, its event is
  added once per site per span;
* ``metrics+newspan``: each firing in a new span, as one firing per request: the span
  event is added every time. Measured as (new span + firing) - (new span + healthy
  call) + healthy call, so the span's own start and end are left out;
* ``incidents``: metrics plus the incidents file (a temporary file; rate-limited to
  one line per site per second, so nearly every firing only checks the limiter);
* ``all``: metrics, a recording span, incidents and shadow mode (``sys.monitoring``
  watches the function's return on 3.12+; a code check on 3.11).

The variants run in rotating order, round after round, and each result is the median
over rounds of ns per call, with the interquartile range; "extra" is the median of
the per-round differences from ``off``. A healthy call (the key present) is measured
too, for scale. Also printed: the first firing with metrics on in a fresh process
(``prometheus_client`` is imported then, once).

Target: a firing costs <= 10 us (10000 ns) with metrics on (``metrics``,
``metrics+span`` and ``metrics+newspan``).

Wall time on the shared 2-core machine swings with its load, so the table shows the
minimum beside the median, and ``--callgrind`` also counts instructions per firing,
which do not depend on the load: one child runs under ``valgrind --tool=callgrind
--dump-before=os_getpgrp`` and fires ``--cg-calls`` times per variant, in a forward
then a backward pass, with ``os.getpgrp()`` between segments (each call dumps the
instructions counted since the previous one). Instructions are turned into ns at the
rate of the ``off`` variant's fastest wall-time round.

The stack the guard fires under matters: the EAFP check looks at every caller's
exception table (see ``crash/handled.py``). Here it is four frames deep (the patched
function, ``measure``, ``main``, the module).

    python benchmarks/guard_firing.py [--quick] [--rounds N] [--calls N] [--callgrind] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

TARGET_NS = 10_000
VARIANTS = ("off", "metrics", "metrics+span", "metrics+newspan", "incidents", "all")


def setup(tmp: str):
    os.environ["CODESUTURE_STATE_DIR"] = os.path.join(tmp, "state")
    with open(os.path.join(tmp, "bench_guarded.py"), "w") as fh:
        fh.write("def get(d, k):\n    return d[k]\n")
    sys.path.insert(0, tmp)
    mod = importlib.import_module("bench_guarded")
    from codesuture.runtime import incidents
    from codesuture.runtime.healer import Healer

    incidents.configure(metrics=False)
    try:
        mod.get({"a": 1}, "missing")
    except Exception as exc:  # noqa: BLE001 - broad: a handler naming KeyError would make it EAFP
        error = exc
    result = Healer(None).heal(error)
    if result is None:
        raise SystemExit("the benchmark function was not healed")
    return mod.get


def configure(variant: str, path: str) -> None:
    from codesuture.runtime import incidents

    if variant == "off":
        incidents.configure(metrics=False)
    elif variant in ("metrics", "metrics+span", "metrics+newspan"):
        incidents.configure(metrics=True)
    elif variant == "incidents":
        incidents.configure(metrics=True, path=path)
    else:
        incidents.configure(metrics=True, path=path, shadow=True)


def measure(fn, calls: int, d: dict, key: str) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn(d, key)
    return (time.perf_counter_ns() - t0) / calls


def in_new_spans(tracer, fn, calls: int, d: dict) -> float:
    """ns per firing when each firing is in a span of its own, the span's cost left out."""
    start = tracer.start_as_current_span
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        with start("request"):
            fn(d, "missing")
    firing = time.perf_counter_ns() - t0
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        with start("request"):
            fn(d, "a")
    healthy = time.perf_counter_ns() - t0
    return (firing - healthy) / calls + measure(fn, calls, d, "a")


def child_count(calls: int) -> None:
    """Child of --callgrind: every ``os.getpgrp()`` dumps the instructions counted since
    the previous one. Segments: each variant forward, then backward, then healthy calls,
    then new spans with a healthy call (what ``metrics+newspan`` subtracts)."""
    tracer, exporter, path, get = _prepared()
    d = {"a": 1}
    for variant in (*VARIANTS, *reversed(VARIANTS)):
        os.getpgrp()
        configure(variant, path)
        _segment(variant, tracer, get, 100, d)  # warm this variant up, then count it
        exporter.clear()
        os.getpgrp()
        _segment(variant, tracer, get, calls, d)
    os.getpgrp()
    measure(get, calls, d, "a")
    os.getpgrp()
    for _ in range(calls):
        with tracer.start_as_current_span("request"):
            get(d, "a")
    os.getpgrp()


def _segment(variant: str, tracer: Any, get: Any, calls: int, d: dict) -> None:
    if variant == "metrics+newspan":
        for _ in range(calls):
            with tracer.start_as_current_span("request"):
                get(d, "missing")
    elif variant in ("metrics+span", "all"):
        with tracer.start_as_current_span("request"):
            measure(get, calls, d, "missing")
    else:
        measure(get, calls, d, "missing")


def _prepared() -> tuple[Any, Any, str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    logging.getLogger("codesuture").setLevel(logging.ERROR)  # the heal's and shadow mode's warnings
    tmp = tempfile.mkdtemp(prefix="codesuture-bench-firing-")
    get = setup(tmp)
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("bench"), exporter, os.path.join(tmp, "incidents.jsonl"), get


def _total(file: str) -> int:
    with open(file) as fh:
        for line in fh:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"no instruction count in callgrind output {file}")


def callgrind(calls: int) -> dict[str, float]:
    """Instructions per firing per variant (one valgrind child)."""
    import shutil

    if shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind on PATH")
    tmp = tempfile.mkdtemp(prefix="codesuture-bench-cg-")
    out = os.path.join(tmp, "cg.out")
    env = _common.child_env(None, {"PYTHONHASHSEED": "0"})
    cmd = ["valgrind", "--tool=callgrind", "--dump-before=os_getpgrp", f"--callgrind-out-file={out}",
           sys.executable, os.path.abspath(__file__), "--child-count", str(calls)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"callgrind failed: {proc.stderr[-2000:]}")
    # out.1 is the set-up; then per variant a warm-up and a counted segment; then healthy, new spans.
    order = (*VARIANTS, *reversed(VARIANTS))
    counted = [_total(f"{out}.{3 + 2 * k}") for k in range(len(order))]
    base = 2 + 2 * len(order)
    healthy, spans = _total(f"{out}.{base}") / calls, _total(f"{out}.{base + 1}") / calls
    per: dict[str, list[float]] = {}
    for variant, count in zip(order, counted):
        per.setdefault(variant, []).append(count / calls)
    result = {v: sum(xs) / len(xs) for v, xs in per.items()}
    result["metrics+newspan"] = result["metrics+newspan"] - spans + healthy
    result["healthy"] = healthy
    return result


def first_firing() -> str:
    """ms of the first firing with metrics on, in a fresh process (imports included)."""
    code = (
        "import os, sys, tempfile, time\n"
        "sys.path.insert(0, %r)\n"
        "import guard_firing as g\n"
        "tmp = tempfile.mkdtemp()\n"
        "get = g.setup(tmp)\n"
        "from codesuture.runtime import incidents\n"
        "incidents.configure(metrics=True)\n"
        "sys.modules.pop('codesuture.runtime.metrics', None)\n"
        "had = 'prometheus_client' in sys.modules\n"
        "t = time.perf_counter(); get({'a': 1}, 'missing'); first = time.perf_counter() - t\n"
        "t = time.perf_counter(); get({'a': 1}, 'missing'); second = time.perf_counter() - t\n"
        "print(f'{first * 1e3:.1f} ms (second firing {second * 1e6:.1f} us; prometheus_client imported before: {had})')\n"
    ) % os.path.dirname(os.path.abspath(__file__))
    env = _common.child_env(None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return proc.stdout.strip() or proc.stderr.strip()[-500:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 30, --quick 10)")
    ap.add_argument("--calls", type=int, default=None, help="firings per variant per round (default 20000, --quick 5000)")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions per firing with valgrind")
    ap.add_argument("--cg-calls", type=int, default=2000, help="firings per callgrind segment (default 2000)")
    ap.add_argument("--child-count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", help="write the raw samples to FILE")
    args = ap.parse_args()
    if args.child_count:
        child_count(args.child_count)
        return
    rounds = args.rounds or (10 if args.quick else 30)
    calls = args.calls or (5000 if args.quick else 20000)

    try:
        import opentelemetry.sdk.trace  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"needs prometheus_client and opentelemetry-sdk ({exc}); pip install 'codesuture[test]'")
    _common.header("guard firing cost (ns per call that fires a key_guard)")
    tracer, exporter, path, get = _prepared()
    d = {"a": 1}
    samples: dict[str, list[float]] = {v: [] for v in (*VARIANTS, "healthy")}
    for variant in VARIANTS:  # warm-up: imports, first incident, counters' children
        configure(variant, path)
        with tracer.start_as_current_span("warm"):
            measure(get, 200, d, "missing")
    for r in range(rounds):
        order = list(VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)])
        if r % 2:
            order.reverse()
        for variant in order:
            configure(variant, path)
            if variant == "metrics+newspan":
                samples[variant].append(in_new_spans(tracer, get, calls // 4, d))
                exporter.clear()
            elif variant in ("metrics+span", "all"):
                with tracer.start_as_current_span("request"):
                    samples[variant].append(measure(get, calls, d, "missing"))
                exporter.clear()
            else:
                samples[variant].append(measure(get, calls, d, "missing"))
        samples["healthy"].append(measure(get, calls, d, "a"))
    from codesuture.runtime import incidents

    incidents.configure(metrics=False)
    print(f"# {rounds} rounds x {calls} calls per variant; {len(open(path).readlines())} incident lines written")
    print(f"{'variant':<16} {'ns/call':>9} {'min':>7} {'IQR':>17} {'extra vs off':>13}")
    off = samples["off"]
    results: dict[str, dict[str, float]] = {}
    for variant in ("healthy", *VARIANTS):
        xs = samples[variant]
        lo, hi = _common.quartiles(xs)
        extra = _common.median([x - o for x, o in zip(xs, off)])
        results[variant] = {"median_ns": _common.median(xs), "min_ns": min(xs), "extra_ns": extra}
        print(f"{variant:<16} {_common.median(xs):>9.0f} {min(xs):>7.0f} {f'[{lo:.0f}, {hi:.0f}]':>17} {extra:>+13.0f}")
    print(f"first firing with metrics on, fresh process: {first_firing()}")
    worst = max(results[v]["median_ns"] for v in ("metrics", "metrics+span", "metrics+newspan"))
    print(f"target: a firing with metrics on <= {TARGET_NS} ns (median): {worst:.0f} ns -> "
          f"{_common.verdict(worst <= TARGET_NS)}")
    cg: dict[str, float] = {}
    if args.callgrind:
        cg = callgrind(args.cg_calls)
        rate = results["off"]["min_ns"] / cg["off"]
        print(f"\n# callgrind: instructions per call, {args.cg_calls} calls per segment, each variant counted twice; "
              f"ns at the rate of off's fastest round ({rate:.3f} ns/instruction), PYTHONHASHSEED=0")
        print(f"{'variant':<16} {'instr/call':>11} {'extra vs off':>13} {'~ns/call':>9}")
        for variant in ("healthy", *VARIANTS):
            print(f"{variant:<16} {cg[variant]:>11.0f} {cg[variant] - cg['off']:>+13.0f} {cg[variant] * rate:>9.0f}")
        worst_cg = max(cg[v] for v in ("metrics", "metrics+span", "metrics+newspan")) * rate
        print(f"target by instructions: {worst_cg:.0f} ns -> {_common.verdict(worst_cg <= TARGET_NS)}")
    _common.dump_json(args.json, {"rounds": rounds, "calls": calls, "samples": samples, "results": results,
                                  "callgrind": cg})


if __name__ == "__main__":
    main()
