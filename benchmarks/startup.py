"""Start-up cost of ``python -m codesuture.boot empty.py`` versus ``python empty.py``.

Target: boot adds <= 10 ms (median wall time of the whole process).

Rounds alternate the two variants (ABBA); each is a fresh process running an empty
script from a temporary directory without overlays (healing on, the default). The
result is the difference of medians and the median of per-round differences.

Then ``python -X importtime -m codesuture.boot empty.py`` is run several times and
the import tree is summarised: CodeSuture's own modules by cumulative time, and the
modules that only the boot variant imports, each with the CodeSuture module that
pulls it in (the innermost CodeSuture frame on the stack when it was imported, found
with an audit hook: ``module:function:line``), so heavy imports are visible.

    python benchmarks/startup.py [--quick] [--rounds N] [--top N] [--json FILE]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import _common as C

TARGET_MS = 10.0
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


def parse_importtime(stderr: str) -> list[tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) in the order Python printed them."""
    out = []
    for line in stderr.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((m.group(4), int(m.group(1)), int(m.group(2)), (len(m.group(3)) - 1) // 2))
    return out


def importer(rows: list[tuple[str, int, int, int]], i: int) -> str:
    """The innermost ``codesuture`` module whose import caused row *i* (rows are
    printed children first, so ancestors come after their children)."""
    depth = rows[i][3]
    for name, _s, _c, d in rows[i + 1:]:
        if d < depth:
            if name.startswith("codesuture"):
                return name
            depth = d
    return "(not imported by codesuture code)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, help="rounds (default 60, quick 25)")
    ap.add_argument("--importtime-runs", type=int, default=7)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-pyc", action="store_true", help="keep the caller's bytecode-cache setting")
    ap.add_argument("--json")
    args = ap.parse_args()
    rounds = args.rounds or (25 if args.quick else 60)

    C.header("start-up: python -m codesuture.boot empty.py vs python empty.py")
    pycache, _keep = C.make_pycache(args)
    with tempfile.TemporaryDirectory(prefix="codesuture-bench-startup-") as cwd:
        Path(cwd, "empty.py").write_text("")
        env = C.child_env(pycache)
        variants = {
            "python": [sys.executable, "empty.py"],
            "boot": [sys.executable, "-m", "codesuture.boot", "empty.py"],
        }
        for cmd in variants.values():  # warm the pyc cache and the OS page cache
            for _ in range(3):
                C.timed_run(cmd, env=env, cwd=cwd)
        times: dict[str, list[float]] = {v: [] for v in variants}
        diffs: list[float] = []
        for r in range(rounds):
            got = {}
            for i in C.order(r):
                v = list(variants)[i]
                got[v] = C.timed_run(variants[v], env=env, cwd=cwd)
                times[v].append(got[v])
            diffs.append(got["boot"] - got["python"])

        mp, mb = C.median(times["python"]) * 1e3, C.median(times["boot"]) * 1e3
        md = C.median(diffs) * 1e3
        lo, hi = (x * 1e3 for x in C.quartiles(diffs))
        print(f"rounds {rounds}")
        print(f"python empty.py                     median {mp:7.2f} ms  (min {min(times['python']) * 1e3:.2f})")
        print(f"python -m codesuture.boot empty.py  median {mb:7.2f} ms  (min {min(times['boot']) * 1e3:.2f})")
        print(f"added by boot: {mb - mp:+.2f} ms (difference of medians); per-round median {md:+.2f} ms "
              f"[IQR {lo:+.2f}, {hi:+.2f}]   target <= +{TARGET_MS:.0f} ms: {C.verdict(md <= TARGET_MS)}")

        # -X importtime: medians over several runs.
        cum: dict[str, list[int]] = defaultdict(list)
        self_: dict[str, list[int]] = defaultdict(list)
        who: dict[str, str] = {}
        plain_mods: set[str] = set()
        for _ in range(args.importtime_runs):
            plain = C.run([sys.executable, "-X", "importtime", "empty.py"], env=env, cwd=cwd)
            plain_mods |= {row[0] for row in parse_importtime(plain.stderr)}
            boot = C.run([sys.executable, "-X", "importtime", "-m", "codesuture.boot", "empty.py"], env=env, cwd=cwd)
            rows = parse_importtime(boot.stderr)
            for i, (name, s, c, _d) in enumerate(rows):
                cum[name].append(c)
                self_[name].append(s)
                who.setdefault(name, importer(rows, i))
        culprits = C.import_culprits(["empty.py"], env=env, cwd=cwd)
        for n, where in culprits.items():
            if where != "-":
                who[n] = where
        own = sorted((n for n in cum if n.startswith("codesuture")), key=lambda n: -C.median(cum[n]))
        print()
        print(f"python -X importtime -m codesuture.boot empty.py  (median of {args.importtime_runs} runs, us;"
              " importtime itself inflates these)")
        print(f"  codesuture's own modules by cumulative time (top {args.top}):")
        print(f"  {'cumulative':>10} {'self':>8}  module")
        for n in own[: args.top]:
            print(f"  {C.median(cum[n]):10.0f} {C.median(self_[n]):8.0f}  {n}")
        extra = [n for n in cum if n not in plain_mods]
        total_extra = sum(C.median(self_[n]) for n in extra)
        print(f"\n  modules imported only under boot: {len(extra)}, total self time {total_extra / 1000:.1f} ms;"
              f" heaviest by self time (top {args.top}), with the codesuture module that imports them:")
        print(f"  {'self':>8} {'cumulative':>10}  module  <-  imported by")
        for n in sorted(extra, key=lambda n: -C.median(self_[n]))[: args.top]:
            print(f"  {C.median(self_[n]):8.0f} {C.median(cum[n]):10.0f}  {n}  <-  {who[n]}")
        by_importer: dict[str, float] = defaultdict(float)
        for n in extra:
            by_importer[who[n] if not n.startswith("codesuture") else n] += C.median(self_[n])
        print("\n  self time of boot-only imports grouped by the codesuture module responsible (ms):")
        for n, us in sorted(by_importer.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {us / 1000:8.2f}  {n}")
        C.dump_json(args.json, {"times": times, "diffs": diffs,
                                "importtime": {n: {"self": C.median(self_[n]), "cumulative": C.median(cum[n]),
                                                   "importer": who[n], "boot_only": n in extra} for n in cum}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
