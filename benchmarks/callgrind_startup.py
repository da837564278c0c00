"""Start-up cost in instructions: ``python -m codesuture.boot empty.py`` versus
``python empty.py`` under ``valgrind --tool=callgrind`` (deterministic, unlike wall
time on a shared machine).

Variants, each a fresh process in a fixed ``env -i``-style environment
(``PYTHONHASHSEED=0``, a private ``PYTHONPYCACHEPREFIX`` filled by native runs first,
so every module loads from a warm ``.pyc``, as on a deployed machine):

* ``python``: ``python empty.py`` (the reference);
* ``-m``: ``python -m emptymod`` (information: what ``runpy`` alone costs, the floor of
  any ``python -m`` entry point);
* ``boot``: ``python -m codesuture.boot empty.py`` (no store configured, healing on:
  the default).

**Target: boot/python <= 1.15 in instructions, on 3.11, 3.12 and 3.13.** ``--extra``
adds a variant (``NAME=ARGS``, the arguments after ``python``) to compare other
command lines the same way, e.g. ``--extra 'store=-m codesuture.boot --overlays
ovl empty.py'`` (run in the work folder, which holds ``empty.py``, ``emptymod.py``
and an empty folder ``ovl``). ``--cwd DIR`` runs the extra variants in *DIR* instead
(its modules then load from the same private bytecode cache), e.g. the app that
``signed_overlays.py --keep DIR`` leaves in ``DIR/app``::

    python benchmarks/callgrind_startup.py --cwd DIR/app --extra 'app=app.py' \
        --extra 'signed=-m codesuture.boot --keys keys --require-signed --overlays overlays app.py'

    python benchmarks/callgrind_startup.py [--python PY ...] [--check] [--extra NAME=ARGS] [--cwd DIR]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET = 1.15


def totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


class Work:
    """Fixed folders for one Python: HOME, the bytecode cache, the scripts, outputs."""

    def __init__(self, base: Path, python: str, src: str | None = None) -> None:
        tag = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, check=True).stdout.strip()
        self.python, self.tag, self.src = python, tag, src
        self.root = base / tag
        for d in ("home", "pycache", "out", "ovl"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "empty.py").write_text("")
        (self.root / "emptymod.py").write_text("")

    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.root / "home"), "PYTHONHASHSEED": "0",
                "PYTHONPATH": os.pathsep.join([*([self.src] if self.src else []), str(self.root)]),
                "PYTHONPYCACHEPREFIX": str(self.root / "pycache")}

    def run(self, args: list[str], valgrind: bool, name: str = "x", cwd: str | None = None) -> int:
        cmd = [self.python, *args]
        out = self.root / "out" / f"{name}.cg"
        if valgrind:
            cmd = ["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={out}", *cmd]
        proc = subprocess.run(cmd, env=self.env(), cwd=cwd or str(self.root), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        if not valgrind:
            return 0
        n = totals(out)
        return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", help="interpreter to measure (repeat; default: this one)")
    ap.add_argument("--extra", action="append", default=[], help="NAME=ARGS: another command line to count")
    ap.add_argument("--check", action="store_true", help="count every variant twice and show both")
    ap.add_argument("--cwd", help="folder to run the --extra variants in (default: the work folder)")
    ap.add_argument("--src", help="a CodeSuture source folder to count instead of the installed one "
                                  "(first on PYTHONPATH; e.g. an older commit's src/ from git archive)")
    ap.add_argument("--keep", help="work folder (default: a fixed one under the temp folder); "
                                   "the callgrind outputs stay in <folder>/<version>/out for callgrind_annotate")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    base = Path(args.keep or Path(tempfile.gettempdir()) / "codesuture-bench-callgrind-startup")
    variants = {"python": ["empty.py"], "-m": ["-m", "emptymod"], "boot": ["-m", "codesuture.boot", "empty.py"]}
    where: dict[str, str | None] = {v: None for v in variants}
    for item in args.extra:
        name, _, rest = item.partition("=")
        variants[name] = shlex.split(rest)
        where[name] = args.cwd
    print(f"# start-up instructions (callgrind, PYTHONHASHSEED=0, warm .pyc); target boot/python <= {TARGET}")
    print(f"{'python':>8}  " + "  ".join(f"{v:>14}" for v in variants) + "  boot/python")
    ok = True
    for python in args.python or [sys.executable]:
        work = Work(base, python, args.src)
        for v, argv in variants.items():  # fill the bytecode cache
            for _ in range(2):
                work.run(argv, valgrind=False, cwd=where[v])
        counts = {}
        for v, argv in variants.items():
            counts[v] = [work.run(argv, valgrind=True, name=v.strip("-") or "m", cwd=where[v])]
            if args.check:
                counts[v].append(work.run(argv, valgrind=True, name=(v.strip("-") or "m") + "-check", cwd=where[v]))
        ratio = counts["boot"][0] / counts["python"][0]
        ok = ok and ratio <= TARGET
        cells = "  ".join(f"{'/'.join(f'{c / 1e6:.2f}' for c in counts[v]) + 'M':>14}" for v in variants)
        extras = "  ".join(f"{v}/python {counts[v][0] / counts['python'][0]:.3f}" for v in variants
                           if v not in ("python", "boot"))
        print(f"{work.tag:>8}  {cells}  {ratio:.3f} {'MET' if ratio <= TARGET else 'MISSED'}  ({extras})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
