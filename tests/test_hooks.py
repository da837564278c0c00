"""Zero-code-change recovery (runtime/hooks.py): programs with no CodeSuture code, run by
``python -m codesuture run`` and ``python -m codesuture.boot --overlays D``, heal
crashes in ``http.server`` handlers (safe requests replayed, POST never),
``socketserver`` handlers, ``threading`` targets, ``concurrent.futures`` work items
and asyncio callbacks and tasks; with ``--no-heal`` nothing is healed. Real servers on
127.0.0.1, real clients; the crashing code lives in an app module, and its overlay is
written.
"""

from __future__ import annotations

import ast
import http.client
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from heal_helpers import PY, Proc, clean_env, overlays_in, run, write

SHOP = '''
STOCK = {"bolt": 3}


def lookup(name):
    return {"name": name, "qty": STOCK[name]}


def record(name, path):
    with open(path, "a") as fh:
        fh.write(name + "\\n")
    return {"name": name, "left": STOCK[name]}
'''

HTTP_SERVER = '''
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import shop


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.reply(shop.lookup(self.path.strip("/")))

    def do_POST(self):
        self.reply(shop.record(self.path.strip("/"), sys.argv[2]))

    def reply(self, value):
        body = repr(value).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print("PORT", server.server_address[1], flush=True)
for _ in range(int(sys.argv[1])):
    server.handle_request()
server.server_close()
'''

ECHO_APP = '''
CODES = {"ping": "pong"}


def reply(word):
    return "%s -> %s\\n" % (word, CODES[word])
'''

ECHO_SERVER = '''
import socketserver
import sys

import echo_app


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        word = self.request.recv(1024).decode().strip()
        self.request.sendall(echo_app.reply(word).encode())


server = socketserver.TCPServer(("127.0.0.1", 0), Echo)
print("PORT", server.server_address[1], flush=True)
for _ in range(int(sys.argv[1])):
    server.handle_request()
server.server_close()
'''

WORK = '''
TABLE = {"a": 1}


def job(out, key):
    out.append(TABLE[key])
'''

THREADS = '''
import threading

import work

out = []
for _ in range(2):
    t = threading.Thread(target=work.job, args=(out, "x"))
    t.start()
    t.join()
print("RESULT", out)
'''

CALC = '''
PRICES = {"a": 1.5}


def price(key):
    return PRICES[key]
'''

#: The program handles the work item's KeyError where it takes the result (EAFP through
#: a Future or an await): nothing is healed, the program's fallback stands.
EAFP = '''
import asyncio
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from calc import price

KEYS = ["a", "b", "c"]
how, handled = sys.argv[1], sys.argv[2] == "handled"


async def one(k):
    if how == "to_thread":
        return await asyncio.to_thread(price, k)
    if how == "run_in_executor":
        return await asyncio.get_running_loop().run_in_executor(None, price, k)
    return (await asyncio.gather(asyncio.to_thread(price, k)))[0]


async def each(k):
    if not handled:
        return await one(k)
    try:
        return await one(k)
    except KeyError:
        return "fallback"


def pool():
    if how == "process":
        return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(2)


if how in ("thread", "process"):
    out = []
    with pool() as p:
        for k in KEYS:
            if handled:
                try:
                    v = p.submit(price, k).result()
                except KeyError:
                    v = "fallback"
            else:
                v = p.submit(price, k).result()
            out.append(v)
else:
    async def main():
        return [await each(k) for k in KEYS]

    out = asyncio.run(main())
print("RESULT", out, flush=True)
'''

JOBS = '''
import asyncio

TABLE = {"a": 1}


async def fetch(key):
    await asyncio.sleep(0)
    return TABLE[key]


def tick(out, key):
    out.append(TABLE[key])
'''

LOOP = '''
import asyncio
import gc

import jobs


async def main():
    loop = asyncio.get_running_loop()
    task = loop.create_task(jobs.fetch("x"))
    await asyncio.sleep(0.05)
    del task  # its exception was never retrieved: the loop's exception handler reports it
    gc.collect()
    await asyncio.sleep(0.05)
    again = loop.create_task(jobs.fetch("x"))
    await asyncio.wait([again])
    exc = again.exception()
    print("RESULT task", type(exc).__name__ if exc is not None else repr(again.result()), flush=True)
    out = []
    loop.call_soon(jobs.tick, out, "y")
    await asyncio.sleep(0.05)
    loop.call_soon(jobs.tick, out, "y")
    await asyncio.sleep(0.05)
    print("RESULT callback", out, flush=True)


asyncio.run(main())
'''

#: Imported before CodeSuture starts (PYTHONPATH): the hooks patch already-imported
#: modules at once; and a program's own threading.excepthook must still run.
SITECUSTOMIZE = '''
import asyncio
import concurrent.futures.thread
import http.server
import socketserver
import sys
import threading

_default = threading.excepthook


def _mine(args):
    print("USER HOOK", args.exc_type.__name__, file=sys.stderr, flush=True)
    _default(args)


threading.excepthook = _mine
'''

LAUNCHERS = {
    "run": [PY, "-m", "codesuture", "run"],
    "boot": [PY, "-m", "codesuture.boot"],
}


def _command(kind: str, script: Path, overlays: Path, *args: str, options: tuple[str, ...] = ()) -> list[str]:
    return [*LAUNCHERS[kind], "--overlays", str(overlays), *options, str(script), *args]


def _env(tmp_path: Path, eager: bool) -> dict[str, str]:
    if not eager:
        return clean_env()
    write(tmp_path / "site" / "sitecustomize.py", SITECUSTOMIZE)
    return clean_env(PYTHONPATH=str(tmp_path / "site"))


class Server:
    """A server script running under a launcher; prints ``PORT n`` first."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("PORT "):
            pytest.fail(f"server did not start:\n{self.finish()}")
        self.port = int(line.split()[1])

    def finish(self, timeout: float = 30) -> Proc:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return Proc(self.args, self.proc.returncode, out, err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def _http(port: int, method: str, path: str) -> tuple[int | None, str | None, str]:
    """``(status, X-CodeSuture header, body)``; status None when the server dropped the
    connection without a response (what http.server does after an exception)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("X-CodeSuture"), resp.read().decode()
    except (http.client.RemoteDisconnected, ConnectionError):
        return None, None, ""
    finally:
        conn.close()


def _echo(port: int, word: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(word.encode() + b"\n")
        chunks = []
        while True:
            try:
                chunk = sock.recv(1024)
            except ConnectionError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _values(proc: Proc) -> list[object]:
    """The Python literal at the end of each ``RESULT`` line."""
    return [ast.literal_eval(line[line.index("["):]) for line in proc.results() if "[" in line]


def _overlays(directory: Path, module: str) -> list[str]:
    return [n for n in overlays_in(directory) if n.startswith(module + ".")]


# ---------------------------------------------------------------------- http.server


@pytest.mark.parametrize("kind,eager", [("run", False), ("boot", False), ("boot", True)],
                         ids=["run", "boot", "boot-preimported"])
def test_http_server_get_healed_and_replayed_post_healed_not_replayed(tmp_path, kind, eager):
    write(tmp_path / "shop.py", SHOP)
    script = write(tmp_path / "server.py", HTTP_SERVER)
    rows, ov = tmp_path / "rows.txt", tmp_path / "ov"
    server = Server(_command(kind, script, ov, "6", str(rows)), tmp_path, _env(tmp_path, eager))
    try:
        first = _http(server.port, "GET", "/nut")
        second = _http(server.port, "GET", "/nut")
        healthy = _http(server.port, "GET", "/bolt")
        crash_post = _http(server.port, "POST", "/washer")
        rows_after_crash = rows.read_text().splitlines()
        next_post = _http(server.port, "POST", "/washer")
        healthy_post = _http(server.port, "POST", "/bolt")
    finally:
        proc = server.finish()
    assert proc.returncode == 0, proc
    # The crashing GET: healed and replayed, one well-formed 200 that says so (the
    # missing quantity is the guard's default, whatever its typing rules pick).
    assert first[0] == 200 and first[2].startswith("{'name': 'nut', 'qty': "), (first, proc)
    assert first[1] == "guards=1; replayed=1", first  # counts only: the site is no client's business
    assert "replayed=1" in first[1], first
    # The next request runs the patched code (the guard fires: still flagged, no replay).
    assert second[0] == 200 and second[2] == first[2], second
    assert second[1] is not None and "replayed" not in second[1], second
    assert healthy == (200, None, "{'name': 'bolt', 'qty': 3}")
    # The crashing POST: healed, never replayed (http.server drops the connection, and
    # reports the exception as it always does); its side effect happened once.
    assert crash_post[0] in (None, 500), crash_post
    assert rows_after_crash == ["washer"]
    assert "Exception occurred during processing of request" in proc.stderr and "KeyError" in proc.stderr, proc
    assert next_post[0] == 200 and next_post[2].startswith("{'name': 'washer', 'left': "), next_post
    assert healthy_post == (200, None, "{'name': 'bolt', 'left': 3}")
    assert rows.read_text().splitlines() == ["washer", "washer", "bolt"]
    assert _overlays(ov, "shop"), proc
    assert proc.stderr.count("patched ") >= 2 and "would patch" not in proc.stderr, proc


KEEP_ALIVE_SERVER = '''
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import shop


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = repr(shop.lookup(self.path.strip("/"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if sys.argv[1] == "decorated":  # already made a healing handler by hand: wrapped once
    from codesuture.runtime.web import healing_handler

    Handler = healing_handler(Handler)
server = HTTPServer(("127.0.0.1", 0), Handler)
print("PORT", server.server_address[1], flush=True)
server.handle_request()  # one connection, kept alive for every request
server.server_close()
'''


@pytest.mark.parametrize("variant", ["plain", "decorated"])
def test_http_server_keep_alive_one_unit_per_request(tmp_path, variant):
    """HTTP/1.1 keep-alive: each request on the connection is its own unit of work (a
    healthy request after a healed one carries no header); a handler class already
    decorated with healing_handler is not wrapped twice (one header)."""
    write(tmp_path / "shop.py", SHOP)
    script = write(tmp_path / "server.py", KEEP_ALIVE_SERVER)
    server = Server(_command("boot", script, tmp_path / "ov", variant), tmp_path, clean_env())
    answers = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for path in ("/nut", "/bolt", "/nut"):
            conn.request("GET", path)
            resp = conn.getresponse()
            answers.append((resp.status, resp.msg.get_all("X-CodeSuture"), resp.read().decode()))
        conn.close()
    finally:
        proc = server.finish()
    assert proc.returncode == 0, proc
    assert [a[0] for a in answers] == [200, 200, 200], (answers, proc)
    assert answers[0][1] is not None and len(answers[0][1]) == 1 and "replayed=1" in answers[0][1][0], answers
    assert answers[1] == (200, None, "{'name': 'bolt', 'qty': 3}"), answers
    assert answers[2][1] is not None and len(answers[2][1]) == 1 and "replayed" not in answers[2][1][0], answers
    assert answers[2][2] == answers[0][2] and answers[0][2].startswith("{'name': 'nut', 'qty': "), answers


@pytest.mark.parametrize("kind", ["run", "boot"])
def test_http_server_no_heal(tmp_path, kind):
    write(tmp_path / "shop.py", SHOP)
    script = write(tmp_path / "server.py", HTTP_SERVER)
    ov = tmp_path / "ov"
    server = Server(_command(kind, script, ov, "3", str(tmp_path / "rows.txt"), options=("--no-heal",)), tmp_path,
                    clean_env())
    try:
        answers = [_http(server.port, "GET", path) for path in ("/nut", "/nut", "/bolt")]
    finally:
        proc = server.finish()
    assert answers == [(None, None, ""), (None, None, ""), (200, None, "{'name': 'bolt', 'qty': 3}")], proc
    assert proc.stderr.count("KeyError: 'nut'") == 2, proc
    assert not overlays_in(ov) and "patched" not in proc.stderr, proc


def test_http_server_prod_without_heal_logs_once(tmp_path):
    """Prod without --heal: the crash is reported once (what would be patched), the
    request is not replayed and nothing is written."""
    write(tmp_path / "shop.py", SHOP)
    script = write(tmp_path / "server.py", HTTP_SERVER)
    ov = tmp_path / "ov"
    ov.mkdir()
    server = Server(_command("boot", script, ov, "2", str(tmp_path / "rows.txt"), options=("--mode", "prod")),
                    tmp_path, clean_env())
    try:
        answers = [_http(server.port, "GET", "/nut") for _ in range(2)]
    finally:
        proc = server.finish()
    assert answers == [(None, None, "")] * 2, proc
    assert proc.stderr.count("crash not healed (prod mode, healing off)") == 2, proc  # once per crash
    assert "would_patch=key_guard" in proc.stderr, proc
    assert not list(tmp_path.glob("ov*/*.overlay")), proc


# ---------------------------------------------------------------------- socketserver


@pytest.mark.parametrize("kind,heal", [("run", True), ("boot", True), ("boot", False)],
                         ids=["run", "boot", "boot-no-heal"])
def test_socketserver_handler_crash_healed_for_next_connection(tmp_path, kind, heal):
    write(tmp_path / "echo_app.py", ECHO_APP)
    script = write(tmp_path / "echo.py", ECHO_SERVER)
    ov = tmp_path / "ov"
    options = () if heal else ("--no-heal",)
    server = Server(_command(kind, script, ov, "3", options=options), tmp_path, clean_env())
    try:
        answers = [_echo(server.port, word) for word in ("zap", "zap", "ping")]
    finally:
        proc = server.finish()
    assert proc.returncode == 0, proc
    # The server's own error reporting still happens for the crash.
    assert "Exception occurred during processing of request" in proc.stderr and "KeyError: 'zap'" in proc.stderr, proc
    if heal:
        # Healed for the next connection (no replay: the first one was dropped).
        assert answers[0] == "" and answers[1].startswith("zap -> ") and answers[2] == "ping -> pong\n", proc
        assert proc.stderr.count("KeyError: 'zap'") == 1 and _overlays(ov, "echo_app"), proc
    else:
        assert answers == ["", "", "ping -> pong\n"], proc
        assert proc.stderr.count("KeyError: 'zap'") == 2 and not overlays_in(ov), proc


# ---------------------------------------------------------------------- threading


@pytest.mark.parametrize("kind,eager,heal", [("run", False, True), ("boot", False, True), ("boot", True, True),
                                             ("run", False, False), ("boot", True, False)],
                         ids=["run", "boot", "boot-preimported", "run-no-heal", "boot-preimported-no-heal"])
def test_thread_target_crash_healed_for_next_thread(tmp_path, kind, eager, heal):
    write(tmp_path / "work.py", WORK)
    script = write(tmp_path / "threads.py", THREADS)
    ov = tmp_path / "ov"
    proc = run(_command(kind, script, ov, options=() if heal else ("--no-heal",)), tmp_path, _env(tmp_path, eager))
    assert proc.returncode == 0, proc
    # The hook chain still reports the thread's crash (the program's own hook included).
    assert "Exception in thread" in proc.stderr and "KeyError: 'x'" in proc.stderr, proc
    if eager:
        assert "USER HOOK KeyError" in proc.stderr, proc
    if heal:
        assert len(_values(proc)) == 1 and len(_values(proc)[0]) == 1, proc  # the next thread ran the patched code
        assert proc.stderr.count("Exception in thread") == 1 and _overlays(ov, "work"), proc
        assert "replaying" not in proc.stderr, proc  # never replayed
    else:
        assert proc.results() == ["RESULT []"], proc
        assert proc.stderr.count("Exception in thread") == 2 and not overlays_in(ov), proc


# ---------------------------------------------------------------------- concurrent.futures


WAYS = ["thread", "process", "to_thread", "run_in_executor", "gather"]


@pytest.mark.parametrize("kind", ["run", "boot"])
@pytest.mark.parametrize("how", WAYS)
def test_exception_handled_through_a_future_or_await_is_never_healed(tmp_path, kind, how):
    """``try: pool.submit(f, k).result() except KeyError`` (and the same around an await
    of ``asyncio.to_thread``, ``run_in_executor``, ``gather``): the worker's exception
    reaches the program's handler untouched, no overlay is written, no WARNING line;
    and a second run, with whatever the first left in the store, answers the same."""
    if how == "process" and sys.platform == "win32":  # pragma: no cover
        pytest.skip("fork start method")
    write(tmp_path / "calc.py", CALC)
    script = write(tmp_path / "eafp.py", EAFP)
    ov = tmp_path / "ov"
    ov.mkdir()
    for _ in range(2):
        proc = run(_command(kind, script, ov, how, "handled"), tmp_path, clean_env())
        assert proc.returncode == 0, proc
        assert _values(proc) == [[1.5, "fallback", "fallback"]], proc
        assert not overlays_in(ov) and not overlays_in(Path(str(ov) + ".pending")), proc
        assert "WARNING" not in proc.stderr, proc


@pytest.mark.parametrize("kind", ["run", "boot"])
@pytest.mark.parametrize("how", WAYS)
def test_exception_unhandled_through_a_future_or_await_is_healed(tmp_path, kind, how):
    """The same work items without a handler: the exception arrives unhandled in the
    script (with the worker's frames in its traceback; from a process pool, with the
    site the worker noted), the work item's function is patched there and the run is
    replayed; the overlay is for the function, never for the line taking the result."""
    if how == "process" and sys.platform == "win32":  # pragma: no cover
        pytest.skip("fork start method")
    write(tmp_path / "calc.py", CALC)
    script = write(tmp_path / "eafp.py", EAFP)
    ov = tmp_path / "ov"
    proc = run(_command(kind, script, ov, how, "unhandled"), tmp_path, clean_env())
    assert proc.returncode == 0, proc
    values = _values(proc)
    assert len(values) == 1 and values[0][0] == 1.5 and "fallback" not in values[0], proc
    assert _overlays(ov, "calc") and not _overlays(ov, "__main__"), proc
    assert "patched" in proc.stderr and "calc:5 price" in proc.stderr, proc


def test_process_pool_no_heal_changes_nothing(tmp_path):
    write(tmp_path / "calc.py", CALC)
    script = write(tmp_path / "eafp.py", EAFP)
    ov = tmp_path / "ov"
    proc = run(_command("boot", script, ov, "process", "unhandled", options=("--no-heal",)), tmp_path, clean_env())
    assert proc.returncode == 1 and "KeyError" in proc.stderr and not overlays_in(ov), proc


# ---------------------------------------------------------------------- asyncio


@pytest.mark.parametrize("kind,eager,heal", [("run", False, True), ("boot", False, True), ("boot", True, True),
                                             ("run", False, False)],
                         ids=["run", "boot", "boot-preimported", "run-no-heal"])
def test_asyncio_unretrieved_task_and_callback_crash_healed_for_next_run(tmp_path, kind, eager, heal):
    write(tmp_path / "jobs.py", JOBS)
    script = write(tmp_path / "loop.py", LOOP)
    ov = tmp_path / "ov"
    proc = run(_command(kind, script, ov, options=() if heal else ("--no-heal",)), tmp_path, _env(tmp_path, eager))
    assert proc.returncode == 0, proc
    # The loop's exception handler still logs both, as usual.
    assert "Task exception was never retrieved" in proc.stderr and "Exception in callback" in proc.stderr, proc
    if heal:
        task, callback = proc.results()
        assert task.startswith("RESULT task ") and "Error" not in task, proc
        assert callback.startswith("RESULT callback [") and len(_values(proc)[-1]) == 1, proc
        assert proc.stderr.count("Exception in callback") == 1 and _overlays(ov, "jobs"), proc
        assert "replaying" not in proc.stderr, proc
    else:
        assert proc.results() == ["RESULT task KeyError", "RESULT callback []"], proc
        assert proc.stderr.count("Exception in callback") == 2 and not overlays_in(ov), proc


# ---------------------------------------------------------------------- cost


def test_boot_imports_none_of_the_hooked_modules(tmp_path):
    """The hooks are armed (healing is on) without importing what they patch, nor the
    hooks themselves; a later import of http.server imports them and is patched on the
    way in."""
    script = write(tmp_path / "empty.py", '''
        import sys

        HOOKED = ("http.server", "socketserver", "asyncio", "concurrent.futures")
        print("RESULT imported", sorted(m for m in HOOKED if m in sys.modules))
        print("RESULT hooks", "codesuture.runtime.hooks" in sys.modules)
        import importlib.util

        importlib.util.find_spec("http.server")  # a look-up on the side does not use the hook up
        import http.server
        print("RESULT patched", getattr(http.server.BaseHTTPRequestHandler.parse_request, "__codesuture__", False))
        print("RESULT loader", type(http.server.__loader__).__name__, http.server.__spec__.loader is http.server.__loader__)
    ''')
    proc = run([PY, "-m", "codesuture.boot", str(script)], tmp_path, clean_env())  # no store: no fleet thread either
    assert proc.returncode == 0, proc
    assert proc.results() == ["RESULT imported []", "RESULT hooks False", "RESULT patched True",
                              "RESULT loader SourceFileLoader True"], proc
    # Importing the hooks module imports nothing else.
    probe = run([PY, "-c", "import __future__, sys, codesuture.runtime; before = set(sys.modules); "
                           "import codesuture.runtime.hooks; print('RESULT', sorted(set(sys.modules) - before))"],
                tmp_path, clean_env())
    assert probe.returncode == 0 and probe.results() == ["RESULT ['codesuture.runtime.hooks']"], probe


def test_the_armed_hooks_cover_every_patched_module():
    """hookfinder arms exactly the modules the hooks patch; boot exports the start-up
    hook's variable by its name."""
    from codesuture import autostart, boot
    from codesuture.runtime import hookfinder, hooks

    assert hookfinder.HOOKED == set(hooks._PATCHERS)
    assert boot._AUTOSTART_ENV == autostart.ENV


def test_plain_python_is_untouched(tmp_path):
    """Without CodeSuture the same server drops the crashing request: what the hooks
    change is theirs alone."""
    write(tmp_path / "shop.py", SHOP)
    script = write(tmp_path / "server.py", HTTP_SERVER)
    server = Server([PY, str(script), "1", str(tmp_path / "rows.txt")], tmp_path, clean_env())
    try:
        answer = _http(server.port, "GET", "/nut")
    finally:
        proc = server.finish()
    assert answer == (None, None, ""), proc
    assert "KeyError: 'nut'" in proc.stderr, proc
