"""Patches reach every worker of the fleet, live (issue 7, item 5).

Real servers on 127.0.0.1 and real HTTP clients: gunicorn with 4 workers under boot
(one worker heals a crashing POST, the three others run the patch within a second,
measured; after a HUP the new workers load overlays written since boot started);
uvicorn ``--workers 2`` (spawned workers, through the ``.pth`` start-up hook);
multiprocessing ``spawn`` and ``forkserver`` children and a plain subprocess of a
booted program; prod mode, where the watcher applies a newly signed overlay and
refuses an unsigned one. Then the start-up hook itself (installed, idle when not
asked for, the kill switch, one activation per process) and, in process, the
watcher's rules (an overlay this process's own healer wrote is not applied again; a
function the healer patched is extended through the healer; a module loaded from an
earlier overlay gets the new one).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from heal_helpers import PY, as_data, clean_env, cli, heal, overlays_in, write

from codesuture import autostart

# --------------------------------------------------------------------- helpers

ORDERS = """
def total(order):
    return sum(item["price"] for item in order["items"])
"""

REPORTS = """
def summary(report):
    return "Report: %s" % (report["title"],)
"""

#: What every test app reports about its process: pid, whether the two buggy
#: functions run without a crash now (called inside try: a caught exception is never
#: healed), the overlays loaded at import and those the fleet watcher applied live.
STATE = """
import os, sys, time

def state():
    import orders, reports
    try:
        orders.total({"id": 1})
        ok = True
    except Exception:
        ok = False
    try:
        reports.summary({})
        ok2 = True
    except Exception:
        ok2 = False
    resolve = sys.modules.get("codesuture.loader.resolve")
    fleet = sys.modules.get("codesuture.runtime.fleet")
    watcher = fleet.current() if fleet is not None else None
    return {"pid": os.getpid(), "ok": ok, "ok2": ok2, "loaded": sorted(getattr(resolve, "LOADED", {})),
            "applied": [[key, at] for key, _, _, at in (watcher.applied if watcher else [])]}
"""

WSGI_APP = """
import json, os, sqlite3, time
from codesuture.runtime.web import HealingWSGIMiddleware
import orders
from probe import state

DB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "orders.db")


def application(environ, start_response):
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    if path == "/probe":
        time.sleep(0.05)  # a sync worker serves one request at a time: 8 at once reach all 4
        body = state()
    elif path == "/order" and method == "POST":
        data = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        with sqlite3.connect(DB) as db:
            db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER)")
            db.execute("INSERT INTO orders VALUES (?)", (data["id"],))
        body = {"pid": os.getpid(), "total": orders.total(data)}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


app = HealingWSGIMiddleware(application)
"""

ASGI_APP = """
import json, time
from probe import state


async def app(scope, receive, send):
    assert scope["type"] == "http"
    time.sleep(0.1)  # blocks this worker's loop: concurrent requests reach the other one
    body = json.dumps(state()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_app(root: Path) -> Path:
    """The app folder: the two buggy modules, the probe, the WSGI and ASGI apps."""
    write(root / "orders.py", ORDERS)
    write(root / "reports.py", REPORTS)
    write(root / "probe.py", STATE)
    write(root / "wsgi.py", WSGI_APP)
    write(root / "asgi.py", ASGI_APP)
    return root


def heal_into(store: Path, root: Path, module: str, call: str) -> None:
    """Write *module*'s overlay into *store* the way a developer does: ``codesuture run``
    on a script that crashes in it."""
    script = write(root / f"crash_{module}_{uuid.uuid4().hex[:6]}.py", f"import {module}\n{module}.{call}\n")
    p = heal(script, store, "--retries", "0")
    assert any(n.startswith(module + ".") for n in overlays_in(store)), str(p)
    script.unlink()


class Server:
    """A command started in its own session (so it can be stopped whole), output to
    files."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], name: str) -> None:
        self.out = cwd / f"{name}.out"
        self.err = cwd / f"{name}.err"
        self.args = args
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=self.out.open("wb"), stderr=self.err.open("wb"),
                                     start_new_session=True)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group of the process this test started
                self.proc.wait(5)

    def __str__(self) -> str:
        return f"$ {' '.join(self.args)}\n-- rc {self.proc.poll()}\n-- stderr\n{self.stderr()[-6000:]}"


def get_json(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post(url: str, data: dict) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def probes(url: str, n: int) -> list[dict]:
    """*n* concurrent probes, each on its own connection."""
    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(lambda _: get_json(url), range(n)))


def workers(server: Server, url: str, count: int, exclude: set[int] = frozenset(), timeout: float = 30,
            width: int = 8) -> dict[int, dict]:
    """Probe until *count* workers (pids not in *exclude*) answered; their last answers."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, str(server)
        try:
            for r in probes(url, width):
                if r["pid"] not in exclude:
                    seen[r["pid"]] = r
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
            continue
        if len(seen) >= count:
            return seen
    raise AssertionError(f"only {len(seen)} of {count} workers answered\n{server}")


def needs(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is a test extra (pip install -e '.[test]')")


# --------------------------------------------------------------------- gunicorn


def test_gunicorn_one_worker_heals_the_others_run_the_patch_within_a_second_and_a_hup_loads_new_overlays(
        tmp_path: Path) -> None:
    needs("gunicorn")
    root = make_app(tmp_path / "app")
    store = root / "D"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server([PY, "-m", "codesuture.boot", "--overlays", str(store), "-m", "gunicorn", "-w", "4",
                     "-b", f"127.0.0.1:{port}", "--graceful-timeout", "3", "wsgi:app"], root, clean_env(), "gunicorn")
    try:
        before = workers(server, url + "/probe", 4)
        assert all(not r["ok"] and not r["loaded"] for r in before.values()), before

        # One worker heals the crashing POST: healed for the next request, never replayed.
        status, body = post(url + "/order", {"id": 1})
        healed_at = time.time()
        assert status == 500, body
        err = server.stderr()
        assert err.count("patched ") == 1 and "KeyError" in err, str(server)

        # Every worker runs the patch: the one that healed at once, the others through
        # their watchers (each once; the healer's own overlay is not applied again).
        after: dict[int, dict] = {}
        served: dict[int, float] = {}  # pid -> when a probe first saw it run orders.total without a crash
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (len(after) == 4 and all(r["ok"] for r in after.values())):
            for r in probes(url + "/probe", 8):
                if r["pid"] in before:
                    after[r["pid"]] = r
                    if r["ok"]:
                        served.setdefault(r["pid"], time.time() - healed_at)
        assert set(after) == set(before) and all(r["ok"] for r in after.values()), f"{after}\n{server}"
        delays = {pid: at - healed_at for pid, r in after.items() for key, at in r["applied"] if key == "orders"}
        print("\ngunicorn -w 4: after the healing POST returned, the 3 other workers swapped the patch in after "
              + ", ".join(f"{d * 1000:.0f}" for d in sorted(delays.values())) + " ms; a probe (one round: 8 "
              "concurrent requests, ~0.1-0.2 s) first saw them serve it without a crash after "
              + ", ".join(f"{served[pid] * 1000:.0f}" for pid in sorted(delays, key=served.__getitem__)) + " ms")
        assert len(delays) == 3 and all(len(r["applied"]) <= 1 for r in after.values()), after
        assert server.stderr().count("applied overlay orders.") == 3, str(server)
        assert max(delays.values()) < 1.0, delays
        assert all(served[pid] >= delays[pid] - 0.05 for pid in delays), (served, delays)  # never before the swap

        # The route now serves every worker without a crash; each POST's row is written once.
        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(lambda i: post(url + "/order", {"id": 10 + i}), range(16)))
        assert [s for s, _ in results] == [200] * 16, results
        assert server.stderr().count("patched ") == 1, str(server)
        import sqlite3

        with sqlite3.connect(root / "orders.db") as db:
            ids = sorted(i for (i,) in db.execute("SELECT id FROM orders"))
        assert ids == [1, *range(10, 26)], ids

        # An overlay written since boot started (another module, by another process),
        # then HUP: the new workers load it at import.
        heal_into(store, root, "reports", "summary({})")
        server.proc.send_signal(signal.SIGHUP)
        fresh = workers(server, url + "/probe", 4, exclude=set(before), timeout=30)
        for r in fresh.values():
            assert r["ok"] and r["ok2"], fresh
            assert r["loaded"] == ["orders", "reports"] and r["applied"] == [], fresh
    finally:
        server.stop()


# --------------------------------------------------------------------- uvicorn


def test_uvicorn_spawned_workers_load_overlays_through_the_start_up_hook(tmp_path: Path) -> None:
    needs("uvicorn")
    root = make_app(tmp_path / "app")
    store = root / "D"
    heal_into(store, root, "orders", "total({})")
    port = free_port()
    server = Server([PY, "-m", "codesuture.boot", "--overlays", str(store), "--no-heal", "-m", "uvicorn",
                     "--workers", "2", "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off", "asgi:app"],
                    root, clean_env(), "uvicorn")
    try:
        seen = workers(server, f"http://127.0.0.1:{port}/", 2, width=6)
        for r in seen.values():
            assert r["ok"] and not r["ok2"], seen
            assert r["loaded"] == ["orders"] and r["applied"] == [], seen
    finally:
        server.stop()


# --------------------------------------------------------------------- multiprocessing, subprocess

MP_MAIN = """
import json, multiprocessing as mp, subprocess, sys


def work(_):
    import orders
    resolve = sys.modules.get("codesuture.loader.resolve")
    return [orders.total({"id": 1}), sorted(getattr(resolve, "LOADED", {}))]


if __name__ == "__main__":
    for method in ("spawn", "forkserver"):
        with mp.get_context(method).Pool(1) as pool:
            print("RESULT", method, json.dumps(pool.map(work, [0])[0]), flush=True)
    child = subprocess.run([sys.executable, "child.py"], capture_output=True, text=True)
    print(child.stdout, end="", flush=True)
    print(child.stderr, end="", file=sys.stderr)
"""

CHILD = """
import json, sys
import orders
resolve = sys.modules.get("codesuture.loader.resolve")
print("RESULT subprocess", json.dumps([orders.total({"id": 1}), sorted(getattr(resolve, "LOADED", {}))]))
"""


def test_spawn_forkserver_and_plain_subprocess_children_of_a_booted_program_load_overlays(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app")
    store = root / "D"
    heal_into(store, root, "orders", "total({})")
    main = write(root / "mp_main.py", MP_MAIN)
    write(root / "child.py", CHILD)
    p = subprocess.run([PY, "-m", "codesuture.boot", "--overlays", str(store), "--no-heal", str(main)], cwd=root,
                       env=clean_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    results = [line.split(" ", 2)[1:] for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert [(how, json.loads(v)) for how, v in results] == [
        ("spawn", [0, ["orders"]]), ("forkserver", [0, ["orders"]]), ("subprocess", [0, ["orders"]])], p.stdout
    # Without boot, the same children load nothing (the hook is asked for by boot only).
    plain = subprocess.run([PY, "child.py"], cwd=root, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1 and "KeyError" in plain.stderr, plain.stderr


# --------------------------------------------------------------------- prod

PROD_MAIN = """
import os, sys, time
import orders, reports

last = None
deadline = time.time() + 60
while not os.path.exists("stop") and time.time() < deadline:
    try:
        reports.summary({})
        state = "ok"
    except Exception:
        state = "fail"
    if state != last:
        print("STATE", state, round(time.time(), 3), flush=True)
        last = state
    time.sleep(0.02)
"""


def _wait_for(what, timeout: float, server: Server) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        assert server.proc.poll() is None, str(server)
        time.sleep(0.05)
    raise AssertionError(f"timed out\n{server}\n-- stdout\n{server.out.read_text()}")


def test_prod_watcher_applies_a_newly_signed_overlay_and_refuses_an_unsigned_one(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app")
    store, dev = root / "D", root / "dev"
    heal_into(store, root, "orders", "total({})")
    heal_into(dev, root, "reports", "summary({})")
    env = clean_env()
    k = cli("keygen", "--private-key", tmp_path / "secret" / "k.key", "--public-key", root / "keys" / "k.pem",
            cwd=root, env=env)
    assert k.returncode == 0, str(k)
    s = cli("sign", "--key", tmp_path / "secret" / "k.key", "--app-root", root, store, cwd=root, env=env)
    assert s.returncode == 0, str(s)
    write(root / "prod_main.py", PROD_MAIN)
    server = Server([PY, "-m", "codesuture.boot", "--keys", str(root / "keys"), "--overlays", str(store),
                     "prod_main.py"], root, env, "prod")
    try:
        stdout = server.out.read_text
        _wait_for(lambda: "STATE fail" in stdout(), 20, server)

        # An unsigned overlay copied into the signed folder: refused, with one line.
        for f in dev.iterdir():
            shutil.copy(f, store / f.name)
        _wait_for(lambda: "not in the signed overlay set" in server.stderr(), 5, server)
        time.sleep(0.6)
        assert "STATE ok" not in stdout(), stdout()
        assert server.stderr().count("overlay reports.") == 1, str(server)

        # Signed into the folder's set: applied live.
        s = cli("sign", "--key", tmp_path / "secret" / "k.key", "--app-root", root, store, cwd=root, env=env)
        signed = time.time()
        assert s.returncode == 0, str(s)
        _wait_for(lambda: "STATE ok" in stdout(), 5, server)
        at = float(stdout().split("STATE ok ", 1)[1].split()[0])
        print(f"\nprod: the newly signed overlay ran {(at - signed) * 1000:+.0f} ms after sign exited")
        assert "applied overlay reports." in server.stderr(), str(server)
        assert "applied overlay orders." not in server.stderr(), str(server)  # unchanged: not applied again
    finally:
        (root / "stop").touch()
        try:
            server.proc.wait(10)
        finally:
            server.stop()


# --------------------------------------------------------------------- the start-up hook


def test_the_start_up_hook_is_installed_and_costs_nothing_unless_asked_for(tmp_path: Path) -> None:
    sites = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    found = [Path(d, autostart.PTH_NAME) for d in sites if Path(d, autostart.PTH_NAME).is_file()]
    assert found, f"{autostart.PTH_NAME} is not in {sorted(sites)}: reinstall with pip install -e ."
    assert found[0].read_text().strip() == autostart.PTH_LINE
    p = subprocess.run([PY, "-X", "importtime", "-c", "import sys; print(sorted(m for m in sys.modules if 'codesuture' in m))"],
                       cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout
    assert "codesuture" not in p.stderr, p.stderr  # -X importtime: nothing of CodeSuture imported
    asked = subprocess.run([PY, "-c", "import codesuture.autostart as a, sys; print(a.SESSION is not None)"],
                           cwd=tmp_path, env=clean_env(CODESUTURE_AUTOSTART="1"), capture_output=True, text=True)
    assert asked.stdout.strip() == "True", asked.stderr


CHECK = ("import sys, codesuture.autostart as a; from codesuture.loader.finder import OverlayFinder; "
         "print(a.SESSION is not None, sum(isinstance(f, OverlayFinder) for f in sys.meta_path))")


@pytest.mark.parametrize("extra, expect, message", [
    ({"CODESUTURE_DISABLE": "1"}, "False 0", ""),
    ({"CODESUTURE_AUTOSTART": "0"}, "False 0", ""),
    ({"CODESUTURE_RETRIES": "lots"}, "False 0", "start-up hook: CodeSuture not active"),
    ({"CODESUTURE_AUTOSTART": "maybe"}, "False 0", "start-up hook: CodeSuture not active"),
    ({}, "True 1", ""),
])
def test_the_hook_never_breaks_a_child_and_the_kill_switch_wins(tmp_path: Path, extra: dict, expect: str,
                                                               message: str) -> None:
    store = tmp_path / "D"
    heal_into(store, write(tmp_path / "orders.py", ORDERS).parent, "orders", "total({})")
    env = clean_env(**{"CODESUTURE_AUTOSTART": "1", "CODESUTURE_OVERLAYS": str(store), **extra})
    p = subprocess.run([PY, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == expect, p.stderr
    assert message in p.stderr


def test_boot_in_an_environment_that_asks_for_the_hook_activates_once(tmp_path: Path) -> None:
    store = tmp_path / "D"
    heal_into(store, write(tmp_path / "orders.py", ORDERS).parent, "orders", "total({})")
    script = write(tmp_path / "once.py", CHECK.replace("; print", "\nimport orders\nprint") + "\nprint(orders.total({}))\n")
    p = subprocess.run([PY, "-m", "codesuture.boot", "--overlays", str(store), "--no-heal", str(script)], cwd=tmp_path,
                       env=clean_env(CODESUTURE_AUTOSTART="1"), capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.split() == ["False", "1", "0"], p.stdout + p.stderr


@pytest.mark.parametrize("argv, own", [
    (["python", "-m", "codesuture.boot", "app.py"], True),
    (["python", "-I", "-m", "codesuture.ship.rebuild"], True),
    (["python", "-Im", "codesuture"], True),
    (["python", "-X", "importtime", "-mcodesuture", "run", "x.py"], True),
    (["/venv/bin/python", "/venv/bin/codesuture", "run", "app.py"], True),
    (["python", "-m", "gunicorn", "app:app"], False),
    (["python", "-W", "error", "app.py"], False),
    (["python", "-c", "import codesuture"], False),
    (["python", "codesuture_app.py"], False),
    (["python"], False),
])
def test_own_entry_points_are_recognised(argv: list[str], own: bool) -> None:
    assert autostart.own_entry_point(argv) is own


# --------------------------------------------------------------------- the watcher's rules, in process

TWO_SITES = """
def f(d):
    first = d["a"]
    second = d["b"]
    return (first, second)
"""


class InProcess:
    """A module of its own (unique name) imported in this process, a store, and a
    session + watcher for it (no thread: the test calls check())."""

    def __init__(self, tmp_path: Path) -> None:
        self.name = f"fleetmod_{uuid.uuid4().hex[:8]}"
        self.root = tmp_path / "app"
        self.store = self.root / "D"
        self.path = write(self.root / f"{self.name}.py", TWO_SITES)
        self.env = clean_env()

    def heal_elsewhere(self, call: str) -> None:
        """Another process heals *call* into the store."""
        heal_into(self.store, self.root, self.name, call)

    def session(self):  # noqa: ANN201
        from codesuture import settings
        from codesuture.runtime.session import Session, open_store

        s = settings.load({"overlays": str(self.store), "heal": True}, self.env, start_dir=str(self.root))
        session = Session(s)
        open_store(s, session)
        return session

    def module(self):  # noqa: ANN201
        sys.path.insert(0, str(self.root))
        try:
            return __import__(self.name)
        finally:
            sys.path.remove(str(self.root))

    def cleanup(self) -> None:
        from codesuture.loader import finder
        from codesuture.loader.resolve import LOADED

        finder.uninstall()
        LOADED.pop(self.name, None)
        sys.modules.pop(self.name, None)


@pytest.fixture
def inproc(tmp_path: Path):  # noqa: ANN201
    ip = InProcess(tmp_path)
    yield ip
    ip.cleanup()


def _raises(fn, *args) -> bool:  # noqa: ANN001
    return _crash(fn, *args) is not None


def _crash(fn, *args) -> BaseException | None:  # noqa: ANN001
    try:
        fn(*args)
    except Exception as exc:  # broad on purpose: `except KeyError` would be EAFP, never healed
        return exc
    return None


def test_watcher_applies_another_processes_overlay_to_an_imported_module(inproc: InProcess) -> None:
    from codesuture.runtime.fleet import Watcher

    session = inproc.session()
    watcher = Watcher(session)
    mod = inproc.module()
    assert watcher.check() is False
    assert _raises(mod.f, {})
    inproc.heal_elsewhere("f({})")
    assert watcher.check() is True
    assert [(k, n) for k, _, n, _ in watcher.applied] == [(inproc.name, 1)]
    assert as_data(mod.f, {"b": 2}) == (0, 2)  # typed default: the dict's other values are ints
    assert session.finder is not None and inproc.name in session.finder.index  # later imports see it too
    assert watcher.check() is False  # nothing new: nothing done


def test_watcher_skips_what_its_own_healer_wrote_and_extends_what_it_patched(inproc: InProcess) -> None:
    from codesuture.runtime.fleet import Watcher
    from codesuture.runtime.healer import Healer

    session = inproc.session()
    watcher = Watcher(session)
    mod = inproc.module()
    watcher.check()
    session.healer = Healer(inproc.store, app_root=str(inproc.root))
    assert session.healer.heal(_crash(mod.f, {"b": 1})) is not None
    assert as_data(mod.f, {"b": 1}) == (0, 1) and _raises(mod.f, {"a": 1})
    code = mod.f.__code__
    assert watcher.check() is True and watcher.applied == []  # its own overlay: not admitted again
    assert mod.f.__code__ is code

    inproc.heal_elsewhere("f({'a': 1})")  # another process adds the second site to the same overlay
    assert watcher.check() is True
    assert as_data(mod.f, {"a": 1}) == (1, 0) and as_data(mod.f, {}) == (None, None)
    fs = session.healer.ledger.functions()[0]
    assert len(fs.records) == 2 and fs.current is mod.f.__code__  # the healer knows the merged patch


def test_watcher_replaces_an_earlier_overlay_a_module_was_loaded_from(inproc: InProcess) -> None:
    from codesuture.loader.resolve import LOADED
    from codesuture.runtime.fleet import Watcher

    inproc.heal_elsewhere("f({'b': 1})")
    session = inproc.session()
    watcher = Watcher(session)
    watcher.check()
    mod = inproc.module()
    assert inproc.name in LOADED and as_data(mod.f, {"b": 1}) == (0, 1) and _raises(mod.f, {"a": 1})
    inproc.heal_elsewhere("f({'a': 1})")
    assert watcher.check() is True
    assert as_data(mod.f, {"a": 1}) == (1, 0)
    assert [(k, n) for k, _, n, _ in watcher.applied] == [(inproc.name, 1)]


SHAPES = """
import functools


def plain_deco(fn):
    def wrapper(*args):
        return fn(*args)  # no functools.wraps: the function is only in a closure cell
    return wrapper


def top(d):
    return d["a"]


class K:
    data = {}

    def meth(self, d):
        return d["a"]

    @staticmethod
    def st(d):
        return d["a"]

    @classmethod
    def cm(cls, d):
        return d["a"]

    @property
    def prop(self):
        return self.data["a"]


@plain_deco
def decorated(d):
    return d["a"]


@functools.wraps(top)
def _unused(d):
    return d


@functools.lru_cache(maxsize=None)
def cached(k):
    return {"x": 1}[k]


def outer():
    def inner(d):
        return d["a"]
    return inner


def gen(rows):
    return list(r["a"] for r in rows)


made = outer()
hidden = [outer()]  # a closure no name reaches: only gc.get_referrers finds it
"""

CALLS = ["top({})", "K().meth({})", "K.st({})", "K.cm({})", "K().prop", "decorated({})", "cached('y')", "made({})",
         "gen([{}])"]


@pytest.fixture
def heap_probe(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fail on any ``gc.get_objects`` (a heap scan); record each ``gc.get_referrers``
    call (how many objects it was given)."""
    import gc

    calls: list[int] = []
    real = gc.get_referrers

    def get_objects(*_: object) -> list:
        raise AssertionError("gc.get_objects: a heap scan on the watcher's swap path")

    def get_referrers(*objs: object) -> list:
        calls.append(len(objs))
        return real(*objs)

    monkeypatch.setattr(gc, "get_objects", get_objects)
    monkeypatch.setattr(gc, "get_referrers", get_referrers)
    return calls


def test_watcher_finds_live_functions_by_name_without_scanning_the_heap(inproc: InProcess, heap_probe: list[int]
                                                                          ) -> None:
    """Methods, static and class methods, properties, functions held by a decorator's
    closure or by ``lru_cache``, a generator expression's parent, and closures made
    before the overlay arrived (one named, one no name reaches): all updated live;
    closures made later too. No heap scan; ``gc.get_referrers`` once (for the
    existing closures), none for a module without nested functions."""
    from codesuture.runtime.fleet import Watcher

    write(inproc.path, SHAPES)
    session = inproc.session()
    watcher = Watcher(session)
    mod = inproc.module()
    watcher.check()
    for call in CALLS:
        assert _raises(eval, call, vars(mod)), call
    script = write(inproc.root / "crash_shapes.py", f"import {inproc.name} as m\n"
                   + "".join(f"m.{c}\n" for c in CALLS))
    p = heal(script, inproc.store)
    assert p.returncode == 0 and p.stderr.count("WARNING patched ") == len(CALLS), str(p)
    del heap_probe[:]
    assert watcher.check() is True
    # The functions of CALLS, outer (its nested code changed) and the hidden closure.
    assert [(k, n) for k, _, n, _ in watcher.applied] == [(inproc.name, len(CALLS) + 2)], watcher.applied
    assert [as_data(eval, c, vars(mod)) for c in CALLS] == [None, None, None, None, None, None, 0, None, [None]]
    assert as_data(mod.outer(), {}) is None and as_data(mod.hidden[0], {}) is None  # made from now on; made before, unnamed
    assert len(heap_probe) == 1, heap_probe  # one call, for the closures of the one nested function

    # A module with no nested function: no gc.get_referrers at all.
    other = InProcess(inproc.root.parent)  # the same app folder and store
    w2 = Watcher(other.session())
    m2 = other.module()
    w2.check()
    try:
        other.heal_elsewhere("f({})")
        del heap_probe[:]
        assert w2.check() is True and as_data(m2.f, {"b": 1}) == (0, 1)
        assert [(k, n) for k, _, n, _ in w2.applied] == [(other.name, 1)] and heap_probe == [], heap_probe
    finally:
        other.cleanup()


@pytest.mark.parametrize("kind, mode, watched", [
    ("folder", "dev", True), ("folder", "prod", True), ("symlink-to-folder", "prod", True),
    ("missing", "dev", True), ("missing", "prod", False), ("missing.cso", "dev", False),
    ("bundle.cso", "prod", False), ("fifo", "dev", False), ("fifo.cso", "prod", False),
    ("symlink-to-fifo.cso", "dev", False), ("file", "dev", False), ("dangling-symlink", "dev", False),
])
def test_the_watcher_starts_for_a_folder_store_only(tmp_path: Path, kind: str, mode: str, watched: bool) -> None:
    """A folder (or, in dev, a path the first heal will make a folder) gets a watcher;
    a bundle, a FIFO (or a symlink to one), a plain file or a dangling symlink never
    does, so it never adds a log line about them."""
    from codesuture import settings
    from codesuture.runtime import fleet
    from codesuture.runtime.session import Session

    path = tmp_path / kind
    if kind.startswith("folder"):
        path.mkdir()
    elif kind == "symlink-to-folder":
        (tmp_path / "release").mkdir()
        path.symlink_to(tmp_path / "release")
    elif kind == "bundle.cso":
        path.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    elif kind.startswith("fifo"):
        os.mkfifo(path)
    elif kind == "symlink-to-fifo.cso":
        os.mkfifo(tmp_path / "fifo")
        path.symlink_to(tmp_path / "fifo")
    elif kind == "file":
        path.write_text("not a store")
    elif kind == "dangling-symlink":
        path.symlink_to(tmp_path / "nowhere")
    s = settings.load({"overlays": str(path), "mode": mode}, clean_env(), start_dir=str(tmp_path))
    assert fleet.folder_store(s) is watched
    fleet.stop()
    try:
        fleet.start(Session(s))
        assert (fleet.current() is not None) is watched
    finally:
        fleet.stop()


LAZY = """
import os


class _Lazy:  # like django.conf.settings (a LazyObject): asking its class runs its set-up
    @property
    def __class__(self):
        raise RuntimeError("the program's code ran: settings set up")


if os.environ.get("FLEET_LAZY"):
    settings = _Lazy()


def f(d):
    return d["a"]
"""


def test_the_watcher_runs_no_code_of_the_program_while_it_looks_for_functions(inproc: InProcess,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A lazy object among the module's globals (Django's ``settings``, a proxy) is
    never asked for its class or attributes: that would run the program's code."""
    from codesuture.runtime.fleet import Watcher

    write(inproc.path, LAZY)
    monkeypatch.setenv("FLEET_LAZY", "1")
    session = inproc.session()
    watcher = Watcher(session)
    mod = inproc.module()
    assert hasattr(mod, "settings")
    monkeypatch.delenv("FLEET_LAZY")
    watcher.check()
    inproc.heal_elsewhere("f({})")  # another process, without the lazy object
    assert watcher.check() is True
    assert [(k, n) for k, _, n, _ in watcher.applied] == [(inproc.name, 1)], watcher.applied
    assert as_data(mod.f, {}) is None


FORK_DURING_WARMUP = """
import os, sys, time
import codesuture.runtime.warmup as warmup

warmup.DELAY = 0
warmup.MODULES = ("slowmod",)
warmup.FORK_WAIT_SECONDS = float(sys.argv[1])
warmup.start()
time.sleep(0.2)  # the warm-up thread is inside `import slowmod` now
pid = os.fork()
if pid == 0:
    import signal
    signal.alarm(2)  # a hung child ends
    import slowmod
    print("child sees", getattr(slowmod, "DONE", "a half-imported module"), flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    print("child hung", flush=True)
"""


@pytest.mark.parametrize("wait, expect", [(2.0, "child sees True"), (0.0, None)])
def test_a_fork_waits_for_the_heal_path_warm_up(tmp_path: Path, wait: float, expect: str | None) -> None:
    """gunicorn's arbiter starts the heal-path warm-up (``logging.config`` imports
    ``socketserver``) right before it forks its workers. A worker forked in the middle
    of one of its imports would inherit that module's import lock, held by a thread it
    does not have: it hung (or saw the module half-initialized) at its first heal. A
    fork waits for the warm-up; without the wait (0 s) the child does not get the
    whole module."""
    write(tmp_path / "slowmod.py", "import time\ntime.sleep(0.6)\nDONE = True\n")
    script = write(tmp_path / "fork_during_warmup.py", FORK_DURING_WARMUP)
    p = subprocess.run([PY, "-W", "ignore::DeprecationWarning", str(script), str(wait)], cwd=tmp_path,
                       env=clean_env(), capture_output=True, text=True, timeout=30)
    out = p.stdout.strip()
    if expect is not None:
        assert out == expect, p.stdout + p.stderr
    else:
        assert out in ("child hung", "child sees a half-imported module"), p.stdout + p.stderr  # the race is real
