"""Per-request cost of CodeSuture's HTTP boundaries on the healthy path, in-process.

Each path serves one trivial request, called directly (no sockets, no server), with
and without CodeSuture, the two variants alternating in ABBA order round after round;
the result per path is the median over rounds of (with - without), in ns per request,
with the interquartile range:

* ``wsgi``: ``HealingWSGIMiddleware(app)`` versus ``app`` (a trivial WSGI app; the
  caller iterates the body and closes it, as a server does);
* ``flask``: a Flask app with ``CodeSuture(app)`` versus the same app without it
  (``app(environ, start_response)``, body iterated and closed);
* ``django``: Django's ``WSGIHandler`` with ``CodeSutureMiddleware`` first in
  ``MIDDLEWARE`` versus an empty ``MIDDLEWARE``;
* ``asgi``: ``HealingASGIMiddleware(app)`` versus ``app`` (a trivial ASGI app), awaited
  inside one running event loop;
* ``starlette``: a Starlette app after ``adapters.starlette.install(app)`` versus one
  without (async endpoint, same event loop);
* ``http.server``: a ``BaseHTTPRequestHandler`` subclass's ``handle_one_request()`` on
  an in-memory request, with the process-wide hooks of ``codesuture run``/boot
  installed (``runtime.hooks``: the ``parse_request`` wrapper arms a healing
  ``do_GET`` and ``end_headers``) versus the original ``parse_request``;
* ``healing_handler``: the same handler decorated with ``web.healing_handler``.

Target: <= 1 us (1000 ns) added per request on every path.

Wall time on a shared 2-core machine is noisy, so ``--callgrind`` also counts
instructions, which do not depend on the load: for every path one child runs under
``valgrind --tool=callgrind --dump-before=os_getpgrp`` (PYTHONHASHSEED=0), builds and
warms both variants up, then serves ``--cg-requests`` requests per segment, the
variants in ABBA order, calling ``os.getpgrp()`` between segments: each call dumps
the instructions counted since the previous one, so set-up and imports are left out.
Instructions per request per variant, and the difference. A few minutes; needs
valgrind. ``--callgrind-only`` skips the wall-time part.

    python benchmarks/middleware_cost.py [--quick] [--rounds N] [--paths a,b] [--callgrind | --callgrind-only] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import _common as C

TARGET_NS = 1000.0
PATHS = ("wsgi", "flask", "django", "asgi", "starlette", "http.server", "healing_handler")


# ---------------------------------------------------------------------- the paths

def _start_response(status: str, headers: list, exc_info: Any = None) -> Callable[[bytes], None]:
    return _write


def _write(data: bytes) -> None:
    pass


def _serve_wsgi(app: Callable[..., Any], environ: dict) -> Callable[[], None]:
    """One request as a WSGI server makes it: call, iterate the body, close it."""

    def once() -> None:
        body = app(environ, _start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    return once


def _environ(path: str = "/") -> dict:
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }


def build_wsgi() -> tuple[Callable[[], None], Callable[[], None]]:
    from codesuture.runtime.web import HealingWSGIMiddleware

    def app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    env = _environ()
    return _serve_wsgi(app, env), _serve_wsgi(HealingWSGIMiddleware(app), env)


def build_flask() -> tuple[Callable[[], None], Callable[[], None]]:
    import flask

    from codesuture.runtime.adapters.flask import CodeSuture

    def make(heal: bool) -> Any:
        app = flask.Flask(f"bench_{heal}")
        if heal:
            CodeSuture(app)

        @app.get("/")
        def index() -> str:
            return "ok"

        return app

    plain, healed = make(False), make(True)
    return _serve_wsgi(plain, _environ()), _serve_wsgi(healed, _environ())


def build_django() -> tuple[Callable[[], None], Callable[[], None]]:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False, SECRET_KEY="codesuture-bench", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, INSTALLED_APPS=[],
            DATABASES={}, MIDDLEWARE=[], USE_TZ=True, LOGGING_CONFIG=None,
        )
        django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    settings.MIDDLEWARE = []
    plain = WSGIHandler()
    settings.MIDDLEWARE = ["codesuture.runtime.adapters.django.CodeSutureMiddleware"]
    healed = WSGIHandler()
    settings.MIDDLEWARE = []
    return _serve_wsgi(plain, _environ()), _serve_wsgi(healed, _environ())


def _index(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse("ok")


urlpatterns: list = []  # Django's ROOT_URLCONF (filled in when Django is set up)


def _django_urls() -> None:
    try:
        from django.urls import path
    except ImportError:
        return
    urlpatterns[:] = [path("", _index)]


class _Loop:
    """One event loop kept for the whole run: a request is awaited inside it, N at a time."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def batch(self, app: Any, scope: dict) -> Callable[[int], None]:
        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            pass

        async def many(n: int) -> None:
            for _ in range(n):
                await app(scope, receive, send)

        return lambda n: self.loop.run_until_complete(many(n))


_LOOP: _Loop | None = None


def _loop() -> _Loop:
    global _LOOP
    if _LOOP is None:
        _LOOP = _Loop()
    return _LOOP


def _scope(path: str = "/") -> dict:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000")], "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
            "state": {}}


def build_asgi() -> tuple[Callable[[int], None], Callable[[int], None]]:
    from codesuture.runtime.web import HealingASGIMiddleware

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    loop = _loop()
    return loop.batch(app, _scope()), loop.batch(HealingASGIMiddleware(app), _scope())


def build_starlette() -> tuple[Callable[[int], None], Callable[[int], None]]:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from codesuture.runtime.adapters.starlette import install

    async def index(request: Any) -> Any:
        return PlainTextResponse("ok")

    plain = Starlette(routes=[Route("/", index)])
    healed = install(Starlette(routes=[Route("/", index)]))
    loop = _loop()
    return loop.batch(plain, _scope()), loop.batch(healed, _scope())


_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n"


def _handler_classes() -> tuple[type, Any]:
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

        def date_time_string(self, timestamp: Any = None) -> str:
            return "Thu, 01 Jan 2026 00:00:00 GMT"  # the same for both variants, and cheap

    return Handler, http.server


def _serve_handler(cls: type) -> Callable[[], None]:
    def once() -> None:
        h = cls.__new__(cls)
        h.rfile = io.BytesIO(_REQUEST)
        h.wfile = io.BytesIO()
        h.client_address = ("127.0.0.1", 40000)
        h.server = None
        h.request = None
        h.close_connection = True
        h.handle_one_request()

    return once


def build_http_server() -> tuple[Callable[[], None], Callable[[], None]]:
    """The hooks ``codesuture run`` / boot install (``runtime.hooks``), versus the
    original ``parse_request`` kept on a subclass."""
    import http.server

    from codesuture import settings
    from codesuture.runtime import hooks
    from codesuture.runtime.session import Session

    original = http.server.BaseHTTPRequestHandler.__dict__["parse_request"]
    original = getattr(original, "__wrapped__", original)
    state = tempfile.mkdtemp(prefix="codesuture-bench-state-")  # host state: never the user's own
    atexit.register(shutil.rmtree, state, True)
    s = settings.load({"heal": True}, environ={"CODESUTURE_STATE_DIR": state})
    hooks.install(Session(s))
    if not getattr(http.server.BaseHTTPRequestHandler.parse_request, "__codesuture__", False):
        raise SystemExit("runtime.hooks did not wrap BaseHTTPRequestHandler.parse_request")
    Handler, _ = _handler_classes()

    class Plain(Handler):
        parse_request = original

    class Hooked(Handler):
        pass

    return _serve_handler(Plain), _serve_handler(Hooked)


def build_healing_handler() -> tuple[Callable[[], None], Callable[[], None]]:
    from codesuture.runtime.web import healing_handler

    Handler, http_server = _handler_classes()
    original = http_server.BaseHTTPRequestHandler.__dict__["parse_request"]
    original = getattr(original, "__wrapped__", original)

    class Plain(Handler):
        parse_request = original  # unaffected by the process-wide hooks, if installed

    @healing_handler
    class Decorated(Handler):
        parse_request = original

    return _serve_handler(Plain), _serve_handler(Decorated)


BUILDERS = {
    "wsgi": (build_wsgi, False, ()),
    "flask": (build_flask, False, ("flask",)),
    "django": (build_django, False, ("django",)),
    "asgi": (build_asgi, True, ()),
    "starlette": (build_starlette, True, ("starlette",)),
    "http.server": (build_http_server, False, ()),
    "healing_handler": (build_healing_handler, False, ()),
}


def available(path: str) -> str | None:
    """None when *path* can be measured here, else why not."""
    import importlib.util

    missing = [m for m in BUILDERS[path][2] if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed (pip install -e '.[test]')" if missing else None


def build(path: str) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """``(plain, healed)``: each runs n requests."""
    if path == "django":
        _django_urls()
    make, batched, _ = BUILDERS[path]
    plain, healed = make()
    if batched:
        return plain, healed

    def looped(once: Callable[[], None]) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                once()

        return run

    return looped(plain), looped(healed)


def check(path: str, plain: Callable[[int], None], healed: Callable[[int], None]) -> None:
    """Both variants serve (no exception) and no unit of work stays open."""
    from codesuture.runtime import events

    for f in (plain, healed):
        f(3)
        if events.current() is not None:
            raise SystemExit(f"{path}: a unit of work is still open after a request")


# ---------------------------------------------------------------------- wall time

#: The clock of the samples: this thread's CPU time (ns), so time the process spends
#: waiting for a core on a loaded machine is not counted (cache and frequency effects
#: of other work still are). ``--wall`` uses ``time.perf_counter_ns`` instead.
CLOCK = time.thread_time_ns


def calibrate(f: Callable[[int], None], target_s: float) -> int:
    n = 16
    while True:
        t0 = CLOCK()
        f(n)
        dt = (CLOCK() - t0) / 1e9
        if dt >= target_s / 4 or n >= 1 << 22:
            return max(16, int(n * target_s / max(dt, 1e-9)))
        n *= 4


def measure(path: str, rounds: int, sample_s: float) -> dict:
    plain, healed = build(path)
    check(path, plain, healed)
    variants = (plain, healed)
    n = calibrate(plain, sample_s)
    for f in variants:
        f(n // 4)  # warm-up
    per: list[list[float]] = [[], []]
    diffs: list[float] = []
    for r in range(rounds):
        got = [0.0, 0.0]
        for i in C.order(r):
            t0 = CLOCK()
            variants[i](n)
            got[i] = (CLOCK() - t0) / n
            per[i].append(got[i])
        diffs.append(got[1] - got[0])
    q1, q3 = C.quartiles(diffs)
    return {"path": path, "n": n, "plain_ns": C.median(per[0]), "healed_ns": C.median(per[1]),
            "added_ns": C.median(diffs), "iqr": (q1, q3), "diffs": diffs, "plain": per[0], "healed": per[1]}


# ---------------------------------------------------------------------- callgrind

#: Variant order of the measured segments in a callgrind child (ABBA).
CG_ORDER = (0, 1, 1, 0, 0, 1, 1, 0)


def child_count(path: str, n: int) -> None:
    """Child of --callgrind, run under ``valgrind --tool=callgrind
    --dump-before=os_getpgrp``: every ``os.getpgrp()`` call dumps the instructions
    counted since the previous one. Build the path, warm both variants up, then serve
    *n* requests per segment, the variants in :data:`CG_ORDER`."""
    import importlib

    from codesuture.runtime import warmup

    for name in warmup.MODULES:  # what the warm-up thread would import meanwhile: now, before counting
        importlib.import_module(name)
    plain, healed = build(path)
    check(path, plain, healed)
    variants = (plain, healed)
    for f in variants:
        f(200)
    gc.collect()
    time.sleep(warmup.DELAY * 2)  # the warm-up thread (started by the boundaries) is done
    for v in CG_ORDER:
        os.getpgrp()  # dump: what came before
        variants[v](n)
    os.getpgrp()  # dump: the last segment


def _total(file: str) -> int:
    with open(file) as fh:
        for line in fh:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"no instruction count in callgrind output {file}")


def instructions(path: str, n: int, env: dict[str, str], tmp: str) -> tuple[float, float]:
    """Instructions per request ``(without, with)`` from one callgrind child."""
    out = os.path.join(tmp, f"cg.{path}.out")
    cmd = ["valgrind", "--tool=callgrind", "--dump-before=os_getpgrp", f"--callgrind-out-file={out}",
           sys.executable, os.path.abspath(__file__), "--child-count", path, str(n)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"callgrind failed for {path}: {proc.stderr[-2000:]}")
    # out.1 is the set-up; out.2 ... are the segments of CG_ORDER; out (no suffix) the exit.
    segments = [_total(f"{out}.{i}") for i in range(2, 2 + len(CG_ORDER))]
    per = [0.0, 0.0]
    for v, count in zip(CG_ORDER, segments):
        per[v] += count
    k = CG_ORDER.count(0) * n
    return per[0] / k, per[1] / (len(CG_ORDER) * n - k)


def callgrind(paths: list[str], n: int, pycache: str | None, wall: dict[str, Any]) -> dict[str, dict]:
    """Instructions per request for *paths*; with the wall-time results *wall*, also the
    added instructions in ns at the rate the variant without CodeSuture ran."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind on PATH")
    env = C.child_env(pycache, {"PYTHONHASHSEED": "0"})
    results = {}
    with tempfile.TemporaryDirectory(prefix="codesuture-bench-cg-") as tmp:
        for path in paths:
            plain, healed = instructions(path, n, env, tmp)
            results[path] = {"plain_instr": plain, "healed_instr": healed, "added_instr": healed - plain}
            line = f"{path:<16} {plain:>10.0f} {healed:>10.0f} {healed - plain:>+9.0f}"
            if path in wall:
                rate = plain / wall[path]["plain_ns"]  # instructions per ns of this workload here
                results[path]["added_ns_at_rate"] = (healed - plain) / rate
                line += f"  {rate:>6.1f} {(healed - plain) / rate:>+8.0f}"
            print(line, flush=True)
    return results


# ---------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, help="ABBA rounds per path (default 100, quick 40)")
    ap.add_argument("--sample", type=float, help="seconds per sample (default 0.01)")
    ap.add_argument("--wall", action="store_true", help="time samples with perf_counter (wall) instead of thread CPU time")
    ap.add_argument("--paths", help=f"comma-separated subset of {','.join(PATHS)}")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions per request with valgrind")
    ap.add_argument("--callgrind-only", action="store_true", help="only the instruction counts (implies --callgrind)")
    ap.add_argument("--cg-requests", type=int, default=250, help="requests per callgrind segment (default 250)")
    ap.add_argument("--no-pyc", action="store_true", help="callgrind children keep the caller's bytecode-cache setting")
    ap.add_argument("--json")
    ap.add_argument("--child-count", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child_count:
        path, n = args.child_count
        child_count(path, int(n))
        return 0

    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter_ns
    rounds = args.rounds or (40 if args.quick else 100)
    sample = args.sample or 0.01
    paths = args.paths.split(",") if args.paths else list(PATHS)
    unknown = [p for p in paths if p not in BUILDERS]
    if unknown:
        ap.error(f"unknown path(s) {unknown}; known: {', '.join(PATHS)}")

    C.header("middleware_cost: per-request cost of CodeSuture's HTTP boundaries, healthy path, in-process")
    results: dict[str, Any] = {}
    ok = True
    if not args.callgrind_only:
        import importlib

        from codesuture.runtime import warmup

        for name in warmup.MODULES:  # imported now: the warm-up thread the boundaries start finds them
            importlib.import_module(name)
        print(f"# {rounds} ABBA rounds per path, ~{sample * 1000:.0f} ms per sample; ns per request "
              f"({'wall time' if args.wall else 'thread CPU time'}); "
              f"added = median over rounds of (with - without), IQR in brackets")
        print(f"{'path':<16} {'without':>10} {'with':>10} {'added':>9}  {'IQR':<17} verdict")
        for path in paths:
            why = available(path)
            if why:
                print(f"{path:<16} skipped: {why}")
                continue
            r = measure(path, rounds, sample)
            results[path] = r
            met = r["added_ns"] <= TARGET_NS
            ok &= met
            q1, q3 = r["iqr"]
            print(f"{path:<16} {r['plain_ns']:>10.0f} {r['healed_ns']:>10.0f} {r['added_ns']:>+9.0f}  "
                  f"[{q1:>+6.0f}, {q3:>+6.0f}]  {C.verdict(met)}", flush=True)
        print(f"# target: <= {TARGET_NS:.0f} ns added per request on every path: {C.verdict(ok)}")

    if args.callgrind or args.callgrind_only:
        cg_paths = [p for p in paths if not available(p)]
        pycache, _keep = C.make_pycache(args)
        n = args.cg_requests
        print(f"\n# callgrind: instructions per request, {len(CG_ORDER)} segments of {n} requests in ABBA order "
              f"(valgrind --tool=callgrind --dump-before=os_getpgrp), PYTHONHASHSEED=0")
        extra = f"  {'instr/ns':>6} {'added ns':>8}" if results else ""
        print(f"{'path':<16} {'without':>10} {'with':>10} {'added':>9}{extra}")
        for path, cg in callgrind(cg_paths, n, pycache, results).items():
            results.setdefault(path, {}).update(cg)

    C.dump_json(args.json, {"target_ns": TARGET_NS, "rounds": rounds, "results": results})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
