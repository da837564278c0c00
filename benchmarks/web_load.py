"""Load on a route that crashes on its first hit: real servers on 127.0.0.1, healed by
CodeSuture versus the same app with the bug fixed by hand.

For each server, two processes run side by side on free ports of 127.0.0.1:

* **healed**: the app with CodeSuture's two lines (the README's "Web frameworks"),
  run under ``python -m codesuture.boot --overlays D`` (``codesuture run --overlays D``
  for the plain ``http.server`` app, which has no CodeSuture line at all); its
  ``shop.lookup`` reads a missing key (``STOCK[name]``, a ``KeyError`` on the first
  hit, a structural bug);
* **fixed**: the same app without CodeSuture, under plain ``python``, the bug fixed by
  hand (``STOCK.get(name, 0)``, the value the healed guard yields).

Servers: Flask under gunicorn (sync worker; gthread worker, 4 threads), Django under
gunicorn (sync), FastAPI under uvicorn (async endpoint), and a
``http.server.ThreadingHTTPServer`` app (one worker process each). Each variant is
ready once a healthy request (``GET /item/bolt``) got its 200, without the header;
``--settle`` seconds later (the heal-path warm-up of a server that has run a moment),
``--requests`` GET requests (default 2000) go to each variant, ``--concurrency`` at a
time (default 32; stdlib threads, ``http.client``, a new connection per request), in
chunks that alternate between the two variants in ABBA order (``--chunks``, default 8;
2 with ``--quick``), the healed variant first: its first chunk meets the crash, 32
requests at once.

Checked and reported per server: every response a 200 with the hand-fixed body; the
patches made per crash site (``patched ...`` lines in the server's log: exactly 1),
the overlay written to D (and its sidecar's records per site: exactly 1); the
``X-CodeSuture`` header on every healed response (the guard yields its default on each
request) and on no fixed one; the replays (the requests that met the crash before the
patch was live, healed or found it patched, and were replayed). Latency p50/p99 (and
max) per variant over all requests and p99 after the first chunk (the patch live), with
the ratios healed/fixed. Exit status 1 when a requirement is not met.

    python benchmarks/web_load.py [--quick] [--servers a,b] [--requests N] [--concurrency N] [--json FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common as C

HEADER = "X-CodeSuture"
PATH = "/item/nut"  # "nut" is not in STOCK: the crash, on every request until healed
HEALTHY = "/item/bolt"  # the readiness probe: a healthy request (never crashes)
EXPECTED = {"name": "nut", "qty": 0}

SHOP_BUGGY = '''
STOCK = {"bolt": 3, "washer": 0}


def lookup(name):
    qty = STOCK[name]  # the bug: a missing key
    return {"name": name, "qty": qty}
'''

SHOP_FIXED = '''
STOCK = {"bolt": 3, "washer": 0}


def lookup(name):
    qty = STOCK.get(name, 0)  # fixed by hand
    return {"name": name, "qty": qty}
'''

FLASK_APP = '''
import flask

import shop

app = flask.Flask(__name__)
{codesuture}

@app.get("/item/<name>")
def item(name):
    return flask.jsonify(shop.lookup(name))
'''
FLASK_LINES = "from codesuture.runtime.adapters.flask import CodeSuture\nCodeSuture(app)\n"

DJANGO_APP = '''
from django.http import JsonResponse
from django.urls import path

import shop

SECRET_KEY = "codesuture-bench"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = __name__
INSTALLED_APPS = []
DATABASES = {{}}
USE_TZ = True
LOGGING_CONFIG = None
MIDDLEWARE = []
{codesuture}

def item(request, name):
    return JsonResponse(shop.lookup(name))


urlpatterns = [path("item/<str:name>", item)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
'''
DJANGO_LINES = 'MIDDLEWARE = ["codesuture.runtime.adapters.django.CodeSutureMiddleware", *MIDDLEWARE]\n'

FASTAPI_APP = '''
from fastapi import FastAPI

import shop

app = FastAPI()
{codesuture}

@app.get("/item/{{name}}")
async def item(name: str):
    return shop.lookup(name)
'''
FASTAPI_LINES = "from codesuture.runtime.adapters.starlette import install\ninstall(app)\n"

HTTP_SERVER_APP = '''
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import shop


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(shop.lookup(self.path.rsplit("/", 1)[-1])).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 128


Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


def _gunicorn(*args: str) -> list[str]:
    """``-m gunicorn`` with one worker on the port, without the control socket newer
    gunicorns open in a fixed place in $HOME."""
    import gunicorn.config

    extra = ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in gunicorn.config.KNOWN_SETTINGS) else []
    return ["-m", "gunicorn", "-w", "1", "-b", "127.0.0.1:{port}", "--backlog", "256", *extra, *args]


#: name -> (needs, app file, template, CodeSuture lines, server args, extra env)
SERVERS: dict[str, tuple[tuple[str, ...], str, str, str, Any, dict[str, str]]] = {
    "flask-gunicorn-sync": (("flask", "gunicorn"), "flaskapp.py", FLASK_APP, FLASK_LINES,
                            lambda: _gunicorn("-k", "sync", "flaskapp:app"), {}),
    "flask-gunicorn-gthread": (("flask", "gunicorn"), "flaskapp.py", FLASK_APP, FLASK_LINES,
                               lambda: _gunicorn("-k", "gthread", "--threads", "4", "flaskapp:app"), {}),
    "django-gunicorn": (("django", "gunicorn"), "djapp.py", DJANGO_APP, DJANGO_LINES,
                        lambda: _gunicorn("-k", "sync", "djapp:application"), {"DJANGO_SETTINGS_MODULE": "djapp"}),
    "fastapi-uvicorn": (("fastapi", "uvicorn"), "fastapp.py", FASTAPI_APP, FASTAPI_LINES,
                        lambda: ["-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning",
                                 "--backlog", "256", "fastapp:app"], {}),
    "http.server-run": ((), "server.py", HTTP_SERVER_APP, "", lambda: ["server.py", "{port}"], {}),
}


def missing(name: str) -> list[str]:
    import importlib.util

    return [m for m in SERVERS[name][0] if importlib.util.find_spec(m) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process of one variant, in its own folder."""

    def __init__(self, name: str, healed: bool, root: Path, pycache: str | None) -> None:
        _, app_file, template, lines, args, extra = SERVERS[name]
        self.name, self.healed = name, healed
        self.dir = root / ("healed" if healed else "fixed")
        self.dir.mkdir(parents=True)
        (self.dir / "shop.py").write_text(SHOP_BUGGY if healed else SHOP_FIXED)
        code = template.format(codesuture=lines if healed else "") if "{codesuture}" in template else template
        (self.dir / app_file).write_text(code)
        self.overlays = self.dir / "overlays"
        self.port = _free_port()
        target = [a.replace("{port}", str(self.port)) for a in args()]
        if not healed:
            cmd = [sys.executable, *target]
        elif name == "http.server-run":
            cmd = [sys.executable, "-m", "codesuture", "run", "--overlays", str(self.overlays), *target]
        else:
            cmd = [sys.executable, "-m", "codesuture.boot", "--overlays", str(self.overlays), *target]
        self.cmd = cmd
        env = C.child_env(pycache, {"CODESUTURE_STATE_DIR": str(root / "state"), "PYTHONUNBUFFERED": "1", **extra})
        env.pop("PYTHONPATH", None)
        self.log = self.dir / "server.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} ({'healed' if self.healed else 'fixed'}) exited with "
                                 f"{self.proc.returncode}: {' '.join(self.cmd)}\n{self.log.read_text()[-3000:]}")
            try:  # a healthy request: the worker booted and imported the app (gunicorn's master listens first)
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                try:
                    conn.request("GET", HEALTHY, headers={"Connection": "close"})
                    resp = conn.getresponse()
                    resp.read()
                finally:
                    conn.close()
                if resp.status != 200 or resp.getheader(HEADER) is not None:
                    raise SystemExit(f"{self.name}: the healthy request got {resp.status}, {HEADER}: "
                                     f"{resp.getheader(HEADER)}\n{self.log.read_text()[-3000:]}")
                return
            except (OSError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{self.name} did not listen on {self.port}:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the session this script started, and only it
                self.proc.wait(10)


class Result:
    """What one variant's requests got."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.first_chunk = 0  # how many of the latencies came from the first chunk (the crash's)
        self.status: dict[str, int] = {}
        self.headers = 0
        self.replayed = 0
        self.bad_bodies: list[str] = []
        self.lock = threading.Lock()

    def add(self, dt: float, status: str, header: str | None, body: bytes) -> None:
        with self.lock:
            self.latencies.append(dt)
            self.status[status] = self.status.get(status, 0) + 1
            if header is not None:
                self.headers += 1
                if "replayed=" in header:
                    self.replayed += 1
            if status == "200":
                try:
                    ok = json.loads(body) == EXPECTED
                except ValueError:
                    ok = False
                if not ok and len(self.bad_bodies) < 3:
                    self.bad_bodies.append(body[:200].decode("utf-8", "replace"))


def one_request(port: int, result: Result) -> None:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", PATH, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        status, header = str(resp.status), resp.getheader(HEADER)
    except (OSError, http.client.HTTPException) as exc:
        status, header, body = type(exc).__name__, None, b""
    finally:
        conn.close()
    result.add(time.perf_counter() - t0, status, header, body)


def fire(port: int, n: int, concurrency: int, result: Result) -> float:
    """*n* requests, *concurrency* at a time; returns the wall time."""
    left = [n]
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            one_request(port, result)

    threads = [threading.Thread(target=worker) for _ in range(min(concurrency, n))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


_PATCHED = re.compile(r"patched (\S+:\d+) in (\S+) \((\w+) at offset (\d+)\) with (\S+)")


def patches_in_log(text: str) -> dict[str, int]:
    """site (``file:line in function``) -> ``patched ...`` log lines."""
    sites: dict[str, int] = {}
    for m in _PATCHED.finditer(text):
        site = f"{Path(m.group(1).rsplit(':', 1)[0]).name}:{m.group(1).rsplit(':', 1)[1]} in {m.group(2)}"
        sites[site] = sites.get(site, 0) + 1
    return sites


def overlay_records(directory: Path) -> tuple[list[str], dict[str, int]]:
    """``(overlay files, records per site in their sidecars)``."""
    if not directory.is_dir():
        return [], {}
    files = sorted(p.name for p in directory.iterdir() if p.name.endswith(".overlay"))
    per_site: dict[str, int] = {}
    for name in files:
        meta = directory / (name[: -len(".overlay")] + ".json")
        try:
            patches = json.loads(meta.read_text()).get("patches", [])
        except (OSError, ValueError):
            continue
        for p in patches:
            site = f"{p.get('module')}:{p.get('line')} in {p.get('qualname')}"
            per_site[site] = per_site.get(site, 0) + 1
    return files, per_site


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(q / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def run_server(name: str, root: Path, args: argparse.Namespace, pycache: str | None) -> dict:
    """Both variants of *name*, side by side; returns the measured numbers."""
    servers = []
    try:
        servers = [Server(name, True, root, pycache), Server(name, False, root, pycache)]
        for s in servers:
            s.wait_ready()
        time.sleep(args.settle)  # the heal-path warm-up thread's imports, as in a server that has run a moment
        results = (Result(), Result())
        chunks = args.chunks
        sizes = [args.requests // chunks + (1 if i < args.requests % chunks else 0) for i in range(chunks)]
        wall = [0.0, 0.0]
        for i, size in enumerate(sizes):
            for v in C.order(i):  # ABBA, the healed variant first: its first chunk meets the crash
                wall[v] += fire(servers[v].port, size, args.concurrency, results[v])
                if i == 0:
                    results[v].first_chunk = len(results[v].latencies)
    finally:
        for s in servers:
            s.stop()
    healed_log = servers[0].log.read_text(errors="replace")
    files, records = overlay_records(servers[0].overlays)
    out = {"server": name, "requests": args.requests, "concurrency": args.concurrency, "chunks": args.chunks}
    for label, r, w in (("healed", results[0], wall[0]), ("fixed", results[1], wall[1])):
        steady = r.latencies[r.first_chunk:] or r.latencies
        out[label] = {"status": r.status, "p50_ms": pct(r.latencies, 50) * 1e3, "p99_ms": pct(r.latencies, 99) * 1e3,
                      "max_ms": max(r.latencies) * 1e3, "steady_p50_ms": pct(steady, 50) * 1e3,
                      "steady_p99_ms": pct(steady, 99) * 1e3, "rps": len(r.latencies) / w, "with_header": r.headers,
                      "replayed": r.replayed, "bad_bodies": r.bad_bodies, "latencies": r.latencies}
    out["patches_logged"] = patches_in_log(healed_log)
    out["overlays"] = files
    out["records"] = records
    out["log_tail"] = healed_log[-2000:]
    return out


def verdicts(r: dict) -> list[str]:
    """What is wrong with *r* (empty: all requirements met)."""
    bad = []
    for label in ("healed", "fixed"):
        st = r[label]["status"]
        if set(st) != {"200"}:
            bad.append(f"{label}: not all 200: {st}")
        if r[label]["bad_bodies"]:
            bad.append(f"{label}: unexpected bodies {r[label]['bad_bodies']}")
    if r["healed"]["with_header"] != r["requests"]:
        bad.append(f"healed: {HEADER} on {r['healed']['with_header']}/{r['requests']} responses")
    if r["fixed"]["with_header"]:
        bad.append(f"fixed: {HEADER} on {r['fixed']['with_header']} responses")
    logged = r["patches_logged"]
    if not logged or any(n != 1 for n in logged.values()):
        bad.append(f"patches per crash site (log): {logged or 'none'}")
    if not r["overlays"] or not any(o.startswith("shop.") for o in r["overlays"]):
        bad.append(f"no overlay of shop written: {r['overlays']}")
    if not r["records"] or any(n != 1 for n in r["records"].values()):
        bad.append(f"records per crash site (sidecar): {r['records'] or 'none'}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 chunks per server instead of 8 (same request count)")
    ap.add_argument("--servers", help=f"comma-separated subset of {','.join(SERVERS)}")
    ap.add_argument("--requests", type=int, default=2000, help="GET requests per variant (default 2000)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--chunks", type=int, help="ABBA chunks per variant (default 8, quick 2)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds between the first healthy response and the load (default 1)")
    ap.add_argument("--keep", help="keep the generated apps, logs and overlays in this folder")
    ap.add_argument("--no-pyc", action="store_true", help="keep the caller's bytecode-cache setting")
    ap.add_argument("--json")
    args = ap.parse_args()
    args.chunks = args.chunks or (2 if args.quick else 8)
    names = args.servers.split(",") if args.servers else list(SERVERS)
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        ap.error(f"unknown server(s) {unknown}; known: {', '.join(SERVERS)}")

    C.header("web_load: a route that crashes on its first hit, healed by CodeSuture vs fixed by hand")
    print(f"# {args.requests} GET {PATH} per variant, {args.concurrency} concurrent (threads + http.client, "
          f"new connection each), {args.chunks} ABBA chunks; one worker process per server; latency in ms")
    pycache, _keep_pyc = C.make_pycache(args)
    tmp = tempfile.mkdtemp(prefix="codesuture-bench-web-")
    rows, failures = [], {}
    try:
        for name in names:
            need = missing(name)
            if need:
                print(f"# {name}: skipped, {', '.join(need)} not installed (pip install -e '.[test]')")
                continue
            t0 = time.perf_counter()
            r = run_server(name, Path(tmp) / name, args, pycache)
            r["seconds"] = time.perf_counter() - t0
            rows.append(r)
            bad = verdicts(r)
            if bad:
                failures[name] = bad
            print(f"# {name}: done in {r['seconds']:.1f} s{'' if not bad else ' - PROBLEMS: ' + '; '.join(bad)}",
                  flush=True)
    finally:
        if args.keep:
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{'server':<23} {'all 200':>7} {'patches':>7} {'overlay':>7} {'header':>6} {'replays':>7}   "
          f"{'p50 heal':>8} {'p50 fix':>8} {'ratio':>6}   {'p99 heal':>8} {'p99 fix':>8} {'ratio':>6}   "
          f"{'p99*heal':>8} {'p99*fix':>8} {'ratio':>6}   {'max heal':>8} {'max fix':>8}")
    for r in rows:
        h, f = r["healed"], r["fixed"]
        all200 = "yes" if set(h["status"]) == {"200"} and set(f["status"]) == {"200"} else "NO"
        logged = r["patches_logged"]
        patches = ",".join(str(n) for n in logged.values()) or "0"
        overlay = "yes" if any(o.startswith("shop.") for o in r["overlays"]) else "NO"
        header = "all" if h["with_header"] == r["requests"] and not f["with_header"] else f"{h['with_header']}/{f['with_header']}"
        print(f"{r['server']:<23} {all200:>7} {patches:>7} {overlay:>7} {header:>6} {h['replayed']:>7}   "
              f"{h['p50_ms']:>8.2f} {f['p50_ms']:>8.2f} {h['p50_ms'] / f['p50_ms']:>6.2f}   "
              f"{h['p99_ms']:>8.2f} {f['p99_ms']:>8.2f} {h['p99_ms'] / f['p99_ms']:>6.2f}   "
              f"{h['steady_p99_ms']:>8.2f} {f['steady_p99_ms']:>8.2f} {h['steady_p99_ms'] / f['steady_p99_ms']:>6.2f}   "
              f"{h['max_ms']:>8.1f} {f['max_ms']:>8.1f}")
    print("# patches: 'patched' log lines per crash site (must be 1); overlay: shop's overlay written to the store;"
          " header: X-CodeSuture on every healed response and no fixed one; replays: requests healed and replayed;"
          " latency in ms, ratio = healed / fixed; p99*: after the first chunk (the patch is live)")
    for name, bad in failures.items():
        print(f"# PROBLEM {name}: " + "; ".join(bad))
        tail = next(r["log_tail"] for r in rows if r["server"] == name)
        print("#   healed server log (tail):\n" + "\n".join("#   " + line for line in tail.splitlines()[-15:]))
    ok = not failures and len(rows) == len(names)
    print(f"# requirements (all 200, exactly 1 patch per crash site, overlay written): {C.verdict(ok)}")
    C.dump_json(args.json, {"rows": rows})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
