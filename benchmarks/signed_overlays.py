"""Signed overlays at boot: start-up and per-module import cost.

Targets:
  (1) start-up of an app importing 20 modules, each with a signed overlay, booted with
      ``--keys keys --require-signed``, versus the same boot with no overlays:
      <= +25 ms in total (cryptography's import and the trust root included);
  (2) one module imported through a verified overlay versus its ordinary ``.pyc``
      import: <= 1.5x per module, for the modules after the first (the first one pays
      the crypto import and the trust-root load, reported separately).

Setup, end to end through the command line (in a temporary directory):
  20 generated modules ``m00``..``m19``, each with a function that crashes once
  (KeyError); ``codesuture run --retries 25 heal_all.py`` heals them one by one and
  writes 20 overlays; ``codesuture keygen`` makes an Ed25519 key pair (public key in
  ``keys/``); ``codesuture sign --key ... overlays``; ``codesuture verify``.

Measurement: rounds rotate three variants (signed overlays / no overlays / plain
python, the last for reference); each is a fresh process running app.py, which
imports the 20 modules timing each import with ``perf_counter``. The signed variant
checks that all 20 overlays were loaded and that the patched functions no longer crash.

    python benchmarks/signed_overlays.py [--quick] [--rounds N] [--modules N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import _common as C

TARGET_STARTUP_MS = 25.0
TARGET_RATIO = 1.5

MODULE = '''"""Generated module {name} for the signed-overlay benchmark."""

import os

SETTINGS = {{"name": "{name}", "level": {i}, "root": os.sep}}


def lookup(key):
    return SETTINGS[key]


class Widget{i}:
    """A small class so the module is not trivially empty."""

    def __init__(self, size, label=None):
        self.size = size
        self.label = label or "{name}"

    def area(self):
        return self.size * self.size

    def describe(self):
        return f"{{self.label}}: {{self.area()}}"
'''
HELPER = '''

def helper_{j}(a, b, scale={j}):
    if a > b:
        return (a - b) * scale
    total = 0
    for k in range(a, b):
        total += k % (scale + 1)
    return [a, b, total, SETTINGS.get("level")]
'''
HEAL_ALL = '''import importlib
for i in range({n}):
    m = importlib.import_module(f"m{{i:02d}}")
    m.lookup("missing")
'''
APP = '''import json
import sys
import time

names = [f"m{{i:02d}}" for i in range({n})]
perf = time.perf_counter
times = []
for name in names:
    t0 = perf()
    __import__(name)
    times.append(perf() - t0)
patched = None
if sys.argv[1:] == ["check"]:
    patched = sum(1 for name in names if sys.modules[name].lookup("missing") is None)
resolve = sys.modules.get("codesuture.loader.resolve")
loaded = sorted(getattr(resolve, "LOADED", {{}}))
print(json.dumps({{"times": times, "patched": patched, "loaded": loaded}}))
'''


def cli(args: list[str], env, cwd) -> str:
    proc = C.run([sys.executable, "-m", "codesuture", *args], env=env, cwd=cwd, check=False)
    if proc.returncode != 0:
        msg = proc.stderr.strip() or proc.stdout.strip()
        raise SystemExit(f"`codesuture {' '.join(args)}` failed ({proc.returncode}):\n{msg[-3000:]}\n"
                         "(the signing CLI — codesuture keygen/sign/verify — must be available for this benchmark)")
    return proc.stdout + proc.stderr


def setup(root: Path, n: int, helpers: int, env) -> None:
    app = root / "app"
    app.mkdir()
    for i in range(n):
        name = f"m{i:02d}"
        text = MODULE.format(name=name, i=i) + "".join(HELPER.format(j=j) for j in range(helpers))
        (app / f"{name}.py").write_text(text)
    (app / "heal_all.py").write_text(HEAL_ALL.format(n=n))
    (app / "app.py").write_text(APP.format(n=n))
    # Heal every module once, through `codesuture run` (one crash, one patch, one replay each).
    cli(["run", "--retries", str(n + 5), "--overlays", "overlays", "heal_all.py"], env, app)
    overlays = sorted(p.name for p in (app / "overlays").glob("*.overlay"))
    if len(overlays) != n:
        raise SystemExit(f"expected {n} overlays after `codesuture run`, found {len(overlays)}: {overlays}")
    (app / "keys").mkdir()
    (root / "private").mkdir()
    cli(["keygen", "--private-key", str(root / "private" / "k.pem"), "--public-key", "keys/k.pem"], env, app)
    cli(["sign", "--key", str(root / "private" / "k.pem"), "overlays"], env, app)
    cli(["verify", "--keys", "keys", "overlays"], env, app)
    (app / "no-overlays").mkdir()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, help="rounds (default 40, quick 15)")
    ap.add_argument("--modules", type=int, default=20)
    ap.add_argument("--helpers", type=int, default=12, help="extra functions per generated module (size)")
    ap.add_argument("--keep", help="copy the generated app, keys and overlays to this directory")
    ap.add_argument("--importtime-runs", type=int, default=5)
    ap.add_argument("--no-pyc", action="store_true", help="keep the caller's bytecode-cache setting")
    ap.add_argument("--json")
    args = ap.parse_args()
    rounds = args.rounds or (15 if args.quick else 40)
    n = args.modules

    C.header(f"signed overlays: boot with {n} signed overlays vs none; overlay import vs pyc import")
    pycache, _keep = C.make_pycache(args)
    with tempfile.TemporaryDirectory(prefix="codesuture-bench-signed-") as tmp:
        root = Path(tmp)
        env = C.child_env(pycache)
        t0 = time.perf_counter()
        setup(root, n, args.helpers, env)
        app = root / "app"
        size = (app / "m00.py").stat().st_size
        ov = sorted((app / "overlays").glob("*.overlay"))
        print(f"# setup (codesuture run, keygen, sign, verify) took {time.perf_counter() - t0:.1f} s;"
              f" module source {size} bytes, overlay {ov[0].stat().st_size} bytes,"
              f" envelope {ov[0].with_suffix('.dsse.json').stat().st_size} bytes")
        if args.keep:
            shutil.copytree(root, args.keep, dirs_exist_ok=True)
        boot = [sys.executable, "-m", "codesuture.boot", "--keys", "keys", "--require-signed"]
        variants = {
            "signed": [*boot, "--overlays", "overlays", "app.py", "check"],
            "none": [*boot, "--overlays", "no-overlays", "app.py"],
            "python": [sys.executable, "app.py"],
        }
        for v, cmd in variants.items():  # warm pyc cache; check the overlays load
            for _ in range(2):
                out = _once(cmd, env, app)[1]
            if v == "signed" and (len(out["loaded"]) != n or out["patched"] != n):
                proc = C.run([*boot[:3], "-v", *boot[3:], "--overlays", "overlays", "app.py"], env=env, cwd=str(app),
                             check=False)
                raise SystemExit(f"signed overlays not all applied: loaded {out['loaded']}, patched {out['patched']}\n"
                                 f"{proc.stderr[-3000:]}")
        wall: dict[str, list[float]] = defaultdict(list)
        imports: dict[str, list[list[float]]] = defaultdict(list)
        names = list(variants)
        for r in range(rounds):
            k = r % 3
            rot = names[k:] + names[:k]
            if r % 2:
                rot.reverse()
            for v in rot:
                dt, out = _once(variants[v], env, app)
                if v == "signed" and out["patched"] != n:
                    raise SystemExit(f"round {r}: only {out['patched']} of {n} patched functions active")
                wall[v].append(dt)
                imports[v].append(out["times"])

        med = {v: C.median(wall[v]) * 1e3 for v in names}
        diffs = [(s - o) * 1e3 for s, o in zip(wall["signed"], wall["none"])]
        dmed = C.median(diffs)
        print(f"\nstart-up, median wall time of the whole process over {rounds} rounds:")
        print(f"  boot, {n} signed overlays (--keys --require-signed)  {med['signed']:8.2f} ms")
        print(f"  boot, no overlays                                   {med['none']:8.2f} ms")
        print(f"  plain python (reference)                            {med['python']:8.2f} ms")
        lo, hi = C.quartiles(diffs)
        print(f"  added by {n} signed overlays: {dmed:+.2f} ms per-round median [IQR {lo:+.2f}, {hi:+.2f}]"
              f" (difference of medians {med['signed'] - med['none']:+.2f} ms)"
              f"   target <= +{TARGET_STARTUP_MS:.0f} ms: {C.verdict(dmed <= TARGET_STARTUP_MS)}")

        per_mod = {v: [C.median([run[i] for run in imports[v]]) * 1e6 for i in range(n)] for v in names}
        ratios = [per_mod["signed"][i] / per_mod["none"][i] for i in range(n)]
        later = ratios[1:]
        print(f"\nper-module import time (median over rounds, us): first module and modules 2..{n}")
        print(f"  {'':24}{'first':>10}{'later median':>14}{'later max':>11}")
        for v, label in (("signed", "verified overlay"), ("none", "pyc (boot, no overlays)"), ("python", "pyc (plain python)")):
            xs = per_mod[v]
            print(f"  {label:<24}{xs[0]:10.0f}{C.median(xs[1:]):14.0f}{max(xs[1:]):11.0f}")
        print(f"  ratio overlay/pyc       {ratios[0]:10.2f}{C.median(later):14.2f}{max(later):11.2f}"
              f"   target <= {TARGET_RATIO}x after the first: {C.verdict(C.median(later) <= TARGET_RATIO)}"
              f" (median; worst module {C.verdict(max(later) <= TARGET_RATIO)})")
        print(f"  the first overlay import includes the crypto import and trust root: "
              f"{per_mod['signed'][0] - C.median(per_mod['signed'][1:]):.0f} us above the later median")

        _importtime(variants, env, app, args.importtime_runs)
        C.dump_json(args.json, {"wall": wall, "imports": imports, "ratios": ratios})
    return 0


def _once(cmd, env, cwd) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = C.run(cmd, env=env, cwd=str(cwd))
    dt = time.perf_counter() - t0
    return dt, json.loads(proc.stdout.strip().splitlines()[-1])


def _importtime(variants, env, app, runs: int) -> None:
    """Which imports the signed variant adds over the no-overlay boot (-X importtime)."""
    from startup import importer, parse_importtime

    self_: dict[str, list[int]] = defaultdict(list)
    cum: dict[str, list[int]] = defaultdict(list)
    who: dict[str, str] = {}
    base: set[str] = set()
    for _ in range(runs):
        cmd = variants["none"]
        p = C.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, cwd=str(app))
        base |= {row[0] for row in parse_importtime(p.stderr)}
        cmd = variants["signed"]
        p = C.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, cwd=str(app))
        rows = parse_importtime(p.stderr)
        for i, (name, s, c, _d) in enumerate(rows):
            self_[name].append(s)
            cum[name].append(c)
            who.setdefault(name, importer(rows, i))
    cmd = variants["signed"]
    for m, where in C.import_culprits(cmd[3:], env=env, cwd=str(app)).items():
        if where != "-":
            who[m] = where
    extra = [m for m in self_ if m not in base and not (m[:1] == "m" and m[1:].isdigit())]
    total = sum(C.median(self_[m]) for m in extra)
    print(f"\n-X importtime: modules only the signed variant imports: {len(extra)}, total self time"
          f" {total / 1000:.1f} ms (median of {runs} runs; importtime inflates it). Heaviest:")
    print(f"  {'self':>8} {'cumulative':>10}  module  <-  imported by")
    for m in sorted(extra, key=lambda m: -C.median(self_[m]))[:15]:
        print(f"  {C.median(self_[m]):8.0f} {C.median(cum[m]):10.0f}  {m}  <-  {who[m]}")
    groups: dict[str, float] = defaultdict(float)
    for m in extra:
        groups[who[m] if not m.startswith("codesuture") else m] += C.median(self_[m])
    print("  self time grouped by the codesuture code that imports them (ms): "
          + ", ".join(f"{g} {us / 1000:.1f}" for g, us in sorted(groups.items(), key=lambda kv: -kv[1])[:6]))
    roots = sorted((m for m in extra if m.startswith("codesuture")), key=lambda m: -C.median(cum[m]))
    print("  codesuture modules it adds, by cumulative time: "
          + ", ".join(f"{m} {C.median(cum[m]) / 1000:.1f} ms" for m in roots[:8]))


if __name__ == "__main__":
    sys.exit(main())
