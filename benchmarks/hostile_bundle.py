"""What a hostile deploy bundle costs at start-up: a zip claiming 2 million members.

Three fresh-process variants alternate, each ``python -m codesuture.boot --keys keys
--overlays BUNDLE app.py`` (the app prints ``ok``; a refused bundle leaves it running
without overlays):

* **small**: BUNDLE is a zip with one junk member (refused by the set check: no set);
* **hostile**: BUNDLE is a zip whose central directory really holds 2,000,000
  entries (ZIP64; about 110 MB, no member data: parsing the central directory is the
  whole cost a loader that trusts it pays);
* **parsed**: the same file opened by :class:`zipfile.ZipFile` in a plain process (what
  parsing the central directory first would cost), for scale.

The time and peak memory (``ru_maxrss`` of each child, from ``wait4``) of *hostile*
must stay within the hostile-store bound (design rule 14): the refusal comes from the
end-of-central-directory record, one read of the file's last 64 KiB, so *hostile*
costs what *small* costs. Target: hostile/small time ratio under 1.5 and peak memory
within 16 MiB of *small*; *parsed* shows what the check saves (seconds, and about
1 GiB of memory, on a 2-core machine).

    python benchmarks/hostile_bundle.py [--quick] [--rounds N] [--members N] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

MEMBERS = 2_000_000


def write_hostile(path: Path, members: int) -> int:
    """A zip of *members* empty central-directory entries (ZIP64 records); returns its size."""
    entries = []
    for i in range(members):
        name = b"%08x.json" % i
        entries.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0,
                                   0o100644 << 16, 0) + name)
    cd = b"".join(entries)
    cd_offset, cd_size = 0, len(cd)
    z64_at = cd_offset + cd_size
    rec = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, members, members, cd_size, cd_offset)
    loc = struct.pack("<4sLQL", b"PK\x06\x07", 0, z64_at, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(path, "wb") as fh:
        fh.write(cd + rec + loc + eocd)
    return path.stat().st_size


def measured(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in KiB, stdout) of one child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return dt, usage.ru_maxrss, out.decode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--members", type=int, default=MEMBERS)
    ap.add_argument("--no-pyc", action="store_true", help="keep the caller's bytecode-cache setting")
    ap.add_argument("--json")
    ap.add_argument("--write", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write:
        write_hostile(Path(args.write), args.members)
        return 0
    rounds = args.rounds or (3 if args.quick else 7)
    C.header(f"hostile bundle: boot with a {args.members:,}-member zip vs a small one")
    pycache, _keep = C.make_pycache(args)
    with tempfile.TemporaryDirectory(prefix="codesuture-bench-bundle-") as tmp:
        root = Path(tmp)
        app = root / "app"
        app.mkdir()
        (app / "app.py").write_text("print('ok')\n")
        keys = root / "keys"
        C.run([sys.executable, "-m", "codesuture", "keygen", "--private-key", str(root / "s" / "k.key"),
               "--public-key", str(keys / "k.pem")], env=C.child_env(None), cwd=tmp)
        small = root / "small.cso"
        with zipfile.ZipFile(small, "w") as zf:
            zf.writestr("junk.json", b"{}")
        hostile = root / "hostile.cso"
        t0 = time.perf_counter()  # written by a child: this process stays small (children's peak RSS counts from fork)
        C.run([sys.executable, __file__, "--write", str(hostile), "--members", str(args.members)], env=C.child_env(None),
              cwd=tmp)
        size = hostile.stat().st_size
        print(f"hostile bundle: {args.members:,} entries, {size / 1e6:.0f} MB (written in {time.perf_counter() - t0:.1f} s)")
        env = C.child_env(pycache, {"CODESUTURE_STATE_DIR": str(root / "state")})
        boot = [sys.executable, "-m", "codesuture.boot", "--keys", str(keys), "--overlays"]
        variants = {
            "small": boot + [str(small), "app.py"],
            "hostile": boot + [str(hostile), "app.py"],
            "parsed": [sys.executable, "-c", f"import zipfile; zipfile.ZipFile({str(hostile)!r}); print('ok')"],
        }
        for cmd in variants.values():  # warm caches; each run must print the app's output
            if not measured(cmd, env, str(app))[2].startswith("ok"):
                raise SystemExit(f"the app did not run: {cmd}")
        times: dict[str, list[float]] = {v: [] for v in variants}
        rss: dict[str, list[int]] = {v: [] for v in variants}
        for r in range(rounds):
            names = list(variants)
            for v in names[r % 3:] + names[:r % 3]:
                dt, kib, _ = measured(variants[v], env, str(app))
                times[v].append(dt)
                rss[v].append(kib)
        med = {v: C.median(times[v]) * 1e3 for v in variants}
        mem = {v: max(rss[v]) / 1024 for v in variants}
        for v in variants:
            print(f"  {v:8} median {med[v]:9.1f} ms   peak RSS {mem[v]:8.1f} MiB")
        ratio = med["hostile"] / med["small"]
        extra = mem["hostile"] - mem["small"]
        ok = ratio < 1.5 and extra < 16
        print(f"  hostile/small time ratio {ratio:.2f} (target < 1.5); extra peak memory {extra:+.1f} MiB "
              f"(target < 16) -> {C.verdict(ok)}")
        print(f"  parsing the central directory first would cost {med['parsed']:.0f} ms and {mem['parsed']:.0f} MiB")
        C.dump_json(args.json, {"times": times, "rss_kib": rss, "ratio": ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())
