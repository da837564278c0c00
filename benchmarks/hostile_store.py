"""What a hostile overlay store can cost at start-up: the bound of design rule 14.

An app imports 20 modules. Two fresh-process variants alternate (ABBA), both
``python -m codesuture.boot --keys keys --require-signed --overlays STORE app.py``:

* **empty**: STORE is an empty folder;
* **hostile**: STORE holds 4096 entries (the most a store may hold before it is refused
  outright, which is cheaper): for every module the app imports, an overlay file of
  just under the 16 MiB cap named for that module's exact source (so it is read and
  hashed if anything vouched for it) and beside it an envelope of just under its 1 MiB
  cap (1 MiB: read, then refused: not a valid envelope), or for every fourth one a FIFO; no
  signed set (a store without one makes every overlay be vetted on its own: the worst
  case); FIFOs, symlinks to FIFOs,
  symlinks leaving the store and directories named like overlays; files named like
  standard-library overlays; the rest junk names.

The difference of the medians is what the hostile store added. The bound it must stay
under: listing 4096 names, plus reading and hashing at most 64 MiB (the per-store read
budget), plus one failed signature check: the script prints the measured cost of
hashing 64 MiB on this machine next to the result. Every run must also finish (no
FIFO may block it) and print the app's own output.

    python benchmarks/hostile_store.py [--quick] [--rounds N] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

MODULES = 20
ENTRIES = 4096
MIB = 1024 * 1024


def build(root: Path) -> tuple[Path, Path, Path]:
    """The app, an empty store and a hostile store under *root*."""
    tag = sys.implementation.cache_tag
    app = root / "app"
    app.mkdir()
    for i in range(MODULES):
        (app / f"m{i:02}.py").write_text(f"def f(x):\n    return x + {i}\n")
    (app / "app.py").write_text(
        "import sys\n" + "".join(f"import m{i:02}\n" for i in range(MODULES))
        + f"print('ok', sum(getattr(sys.modules['m%02d' % i], 'f')(1) for i in range({MODULES})))\n"
    )
    keys = root / "keys"
    keys.mkdir()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = Ed25519PrivateKey.generate().public_key()
    (keys / "k.pem").write_bytes(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    empty = root / "empty"
    empty.mkdir()
    hostile = root / "hostile"
    hostile.mkdir()
    n = 0
    for i in range(MODULES):
        prefix = hashlib.sha256((app / f"m{i:02}.py").read_bytes()).hexdigest()[:16]
        stem = f"m{i:02}.{tag}.{prefix}"
        with open(hostile / f"{stem}.overlay", "wb") as fh:
            fh.write(os.urandom(64) * ((16 * MIB - 1) // 64))
        n += 1
        if i % 4 == 0:
            os.mkfifo(hostile / f"{stem}.dsse.json")
        else:
            with open(hostile / f"{stem}.dsse.json", "wb") as fh:
                fh.write(b"{" * (MIB - 1))
        n += 1
    outside = root / "outside.fifo"
    os.mkfifo(outside)
    for i in range(50):
        os.mkfifo(hostile / f"fifo{i}.{tag}.{'0' * 16}.overlay")
        os.symlink(outside, hostile / f"link{i}.{tag}.{'0' * 16}.overlay")
        os.symlink("/etc/passwd", hostile / f"away{i}.{tag}.{'0' * 16}.overlay")
        (hostile / f"dir{i}.{tag}.{'0' * 16}.overlay").mkdir()
        n += 4
    for name in ("re", "os", "json", "logging", "codesuture", "codesuture.boot"):
        (hostile / f"{name}.{tag}.{'0' * 16}.overlay").write_bytes(b"")
        n += 1
    while n < ENTRIES:
        (hostile / f"junk{n}").write_bytes(b"x")
        n += 1
    return app, empty, hostile


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--no-pyc", action="store_true", help="keep the caller's bytecode-cache setting")
    ap.add_argument("--json")
    args = ap.parse_args()
    rounds = args.rounds or (10 if args.quick else 30)
    C.header("hostile store: boot with a 4096-entry hostile store vs an empty one")
    pycache, _keep = C.make_pycache(args)
    with tempfile.TemporaryDirectory(prefix="codesuture-bench-hostile-") as tmp:
        root = Path(tmp)
        app, empty, hostile = build(root)
        env = C.child_env(pycache, {"CODESUTURE_STATE_DIR": str(root / "state")})
        base = [sys.executable, "-m", "codesuture.boot", "--keys", str(root / "keys"), "--require-signed", "--overlays"]
        variants = {"empty": base + [str(empty), "app.py"], "hostile": base + [str(hostile), "app.py"]}
        for cmd in variants.values():  # warm caches; each run must complete and print the app's output
            out = C.run(cmd, env=env, cwd=str(app))
            if not out.stdout.startswith("ok "):
                raise SystemExit(f"the app did not run: {out.stdout!r} {out.stderr[-2000:]}")
        times: dict[str, list[float]] = {v: [] for v in variants}
        diffs = []
        for r in range(rounds):
            got = {}
            for i in C.order(r):
                v = list(variants)[i]
                got[v] = C.timed_run(variants[v], env=env, cwd=str(app))
                times[v].append(got[v])
            diffs.append(got["hostile"] - got["empty"])
        blob = bytes(64 * MIB)
        t0 = time.perf_counter()
        hashlib.sha256(blob).hexdigest()
        hash64 = (time.perf_counter() - t0) * 1e3
        me, mh = C.median(times["empty"]) * 1e3, C.median(times["hostile"]) * 1e3
        md = C.median(diffs) * 1e3
        lo, hi = (x * 1e3 for x in C.quartiles(diffs))
        print(f"rounds {rounds}; hostile store: {ENTRIES} entries, {MODULES} oversized overlays for imported modules")
        print(f"  empty store    median {me:8.2f} ms")
        print(f"  hostile store  median {mh:8.2f} ms")
        print(f"  added by the hostile store: {md:+.2f} ms per-round median [IQR {lo:+.2f}, {hi:+.2f}]")
        print(f"  for scale: hashing 64 MiB here takes {hash64:.1f} ms; the bound is one listing of "
              f"{ENTRIES} names + 64 MiB read and hashed + one failed signature check")
        C.dump_json(args.json, {"times": times, "diffs": diffs, "hash64_ms": hash64})
    return 0


if __name__ == "__main__":
    sys.exit(main())
