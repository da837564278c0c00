"""The framework adapters under real servers on 127.0.0.1, with a real HTTP client.

Each server runs as ``python -m codesuture.boot --overlays <tmp>/overlays -m <server>``
(boot exports the settings the process-wide healer reads), serving an app whose code
lives in tmp_path files (``shop.py`` holds the crash sites: patchable application code).
For every server the same story is checked:

* a healthy GET gets its response without ``X-CodeSuture``;
* the first crashing GET is healed and replayed within the request: 200 with the view's
  normal body and ``X-CodeSuture: guards=1; replayed=1`` (counts only: the site is no client's business);
* the next one runs the patched code: 200, the header without ``replayed`` (the guard
  still yields its default for that key), and the healthy GET still has no header;
* a POST whose handler inserts a sqlite row and then crashes is never replayed: the row
  exists exactly once and the client gets the app's own 500; the next POST runs the
  patched code;
* the app's own handlers still answer what CodeSuture does not heal: a registered
  handler for ZeroDivisionError (asked twice: the function was not patched) and 404.

The raw WSGI app crashes *after* calling ``start_response``: its replay must give one
well-formed 200 (one status line, each header once), under wsgiref and gunicorn.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from codesuture.runtime import events
from heal_helpers import PY, clean_env, overlays_in, write

#: Guards type their defaults (events.typed_default): key_guard yields the empty value
#: of the mapping's value type (0 for ``STOCK``'s ints, '' for ``LABELS``), else None.
TYPED = hasattr(events, "typed_default")
MISSING = 0 if TYPED else None

SHOP = '''
import sqlite3

STOCK = {"bolt": 3, "washer": 0}


def lookup(name):
    qty = STOCK[name]  # crash: lookup
    return {"name": name, "qty": qty}


def unit_price(name):
    return 12 / STOCK[name]


def record(db, name):
    con = sqlite3.connect(db)
    con.execute("insert into orders (name) values (?)", (name,))
    con.commit()
    con.close()
    qty = STOCK[name]  # crash: record
    return {"name": name, "qty": qty}


LABELS = {"bolt": "M6 bolt"}


class Item:
    def __init__(self, name):
        self.name = name

    @property
    def label(self):
        return LABELS[self.name]  # crash: label
'''

FLASK_APP = '''
import os

import flask

import shop
from codesuture.runtime.adapters.flask import CodeSuture

app = flask.Flask(__name__)
CodeSuture(app)


@app.get("/item/<name>")
def item(name):
    return flask.jsonify(shop.lookup(name))


@app.get("/price/<name>")
def price(name):
    return flask.jsonify(price=shop.unit_price(name))


@app.post("/order/<name>")
def order(name):
    return flask.jsonify(shop.record(os.environ["SHOP_DB"], name))


@app.errorhandler(ZeroDivisionError)
def no_price(e):
    return "custom: no price", 409


@app.errorhandler(404)
def not_found(e):
    return "custom: not found", 404


@app.errorhandler(500)
def server_error(e):
    return "custom: server error", 500
'''

DJANGO_APP = '''
import os

from django.http import HttpResponse, JsonResponse
from django.urls import path

import shop

SECRET_KEY = "codesuture-tests"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = __name__
INSTALLED_APPS = []
DATABASES = {}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates"}]
USE_TZ = True
MIDDLEWARE = ["codesuture.runtime.adapters.django.CodeSutureMiddleware", __name__ + ".ShopErrors"]
CODESUTURE = {"header": True, "retries": 3}
LOGGING_CONFIG = None


class ShopErrors:
    """The app's own exception middleware: it answers ZeroDivisionError itself."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, ZeroDivisionError):
            return HttpResponse("custom: no price", status=409)
        return None


def item(request, name):
    return JsonResponse(shop.lookup(name))


def price(request, name):
    return JsonResponse({"price": shop.unit_price(name)})


def order(request, name):
    return JsonResponse(shop.record(os.environ["SHOP_DB"], name))


def label(request, name):
    # Rendered after the view returned: the crash happens in the template's rendering.
    from django.template import engines
    from django.template.response import SimpleTemplateResponse

    template = engines["django"].from_string("label: [{{ item.label }}]")
    return SimpleTemplateResponse(template, {"item": shop.Item(name)})


def not_found(request, exception):
    return HttpResponse("custom: not found", status=404)


def server_error(request):
    return HttpResponse("custom: server error", status=500)


urlpatterns = [path("item/<str:name>", item), path("price/<str:name>", price), path("order/<str:name>", order),
               path("label/<str:name>", label)]
handler404 = __name__ + ".not_found"
handler500 = __name__ + ".server_error"

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
'''

FASTAPI_APP = '''
import os

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

import shop
from codesuture.runtime.adapters.starlette import install

app = FastAPI()
install(app)


@app.get("/item/{name}")
def item(name: str):  # a sync endpoint: it runs in the thread pool
    return shop.lookup(name)


@app.get("/price/{name}")
async def price(name: str):
    return {"price": shop.unit_price(name)}


@app.post("/order/{name}")
async def order(name: str):
    return shop.record(os.environ["SHOP_DB"], name)


@app.exception_handler(ZeroDivisionError)
async def no_price(request, exc):
    return PlainTextResponse("custom: no price", status_code=409)


@app.exception_handler(404)
async def not_found(request, exc):
    return PlainTextResponse("custom: not found", status_code=404)


@app.exception_handler(500)
async def server_error(request, exc):
    return PlainTextResponse("custom: server error", status_code=500)
'''

RAW_APP = '''
import json
import os

import shop
from codesuture.runtime.web import HealingWSGIMiddleware


def inner(environ, start_response):
    method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
    name = path.rsplit("/", 1)[-1]
    if not (path.startswith("/item/") or (method == "POST" and path.startswith("/order/"))):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    # Headers first, then the work that crashes: the replay comes after start_response.
    start_response("200 OK", [("Content-Type", "application/json"), ("X-App", "raw")])
    data = shop.record(os.environ["SHOP_DB"], name) if method == "POST" else shop.lookup(name)
    return [json.dumps(data).encode()]


app = HealingWSGIMiddleware(inner)
'''

WSGIREF_SERVER = '''
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

from rawapp import app


class Handler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


make_server("127.0.0.1", int(sys.argv[1]), app, handler_class=Handler).serve_forever()
'''


def _needs(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed in this interpreter (pip install -e '.[test]')")


def gunicorn(*args: str) -> list[str]:
    """``-m gunicorn ARGS`` with one worker, bound to the test's port, and without the
    control socket newer gunicorns open in a fixed place in $HOME (shared by every
    gunicorn on the machine)."""
    import gunicorn.config

    extra = ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in gunicorn.config.KNOWN_SETTINGS) else []
    return ["-m", "gunicorn", "-w", "1", "-b", "127.0.0.1:{port}", *extra, *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def site(tmp_path: Path) -> dict:
    """The app folder: shop.py, its sqlite database, the overlay store."""
    write(tmp_path / "shop.py", SHOP)
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as con:
        con.execute("create table orders (id integer primary key, name text)")
    lines = (tmp_path / "shop.py").read_text().splitlines()
    line = {what: next(n for n, text in enumerate(lines, 1) if f"crash: {what}" in text)
            for what in ("lookup", "record", "label")}
    return {"dir": tmp_path, "db": db, "overlays": tmp_path / "overlays", "line": line}


@contextmanager
def serving(site: dict, *target: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """``python -m codesuture.boot --overlays D <target...>`` in the app folder; yields
    the port once it accepts connections; stops the server afterwards."""
    port = _free_port()
    args = [PY, "-m", "codesuture.boot", "--overlays", str(site["overlays"]),
            *[a.replace("{port}", str(port)) for a in target]]
    log = site["dir"] / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, cwd=site["dir"], env=clean_env(SHOP_DB=str(site["db"]), **(env or {})),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not listen on {port}:\n{log.read_text()}")
                time.sleep(0.05)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session this test started, and only it
            proc.wait(10)


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self.status, self.headers, self.body = status, headers, body

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def header(self) -> str | None:
        values = self.all("X-CodeSuture")
        assert len(values) <= 1, self.headers
        return values[0] if values else None

    def json(self) -> dict:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.headers}, {self.body[:300]!r})"


def request(port: int, method: str, path: str) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        resp = conn.getresponse()
        return Reply(resp.status, resp.getheaders(), resp.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def rows(site: dict, name: str) -> int:
    with sqlite3.connect(site["db"]) as con:
        return con.execute("select count(*) from orders where name = ?", (name,)).fetchone()[0]


def check_story(site: dict, port: int, *, raw: bool = False) -> None:
    """The story of the module docstring against the server on *port* (*raw*: the raw
    WSGI app, which has no handlers of its own; its first crash is read byte by byte)."""
    log = site["dir"] / "server.log"
    degraded = "guards=1"

    healthy = request(port, "GET", "/item/bolt")
    assert (healthy.status, healthy.json(), healthy.header) == (200, {"name": "bolt", "qty": 3}, None), healthy

    if raw:
        check_well_formed_replay(site, port)
    else:
        first = request(port, "GET", "/item/nut")  # KeyError: healed, replayed
        assert first.status == 200, f"{first}\n{log.read_text()}"
        assert first.json() == {"name": "nut", "qty": MISSING}
        assert first.header == degraded + "; replayed=1", first

    again = request(port, "GET", "/item/nut")  # patched: the guard yields its default again, no replay
    assert (again.status, again.json(), again.header) == (200, {"name": "nut", "qty": MISSING}, degraded), again
    healthy = request(port, "GET", "/item/bolt")
    assert (healthy.status, healthy.json(), healthy.header) == (200, {"name": "bolt", "qty": 3}, None), healthy

    post = request(port, "POST", "/order/nut")  # inserts, then crashes: never replayed
    assert post.status == 500, f"{post}\n{log.read_text()}"
    assert post.header is None, post
    assert rows(site, "nut") == 1
    if not raw:
        assert post.body == "custom: server error", post

        for _ in range(2):  # the app's own handler, every time: CodeSuture never patched it
            handled = request(port, "GET", "/price/washer")
            assert (handled.status, handled.body, handled.header) == (409, "custom: no price", None), handled
        missing = request(port, "GET", "/nope")
        assert (missing.status, missing.body, missing.header) == (404, "custom: not found", None), missing

    after = request(port, "POST", "/order/nut")  # the next POST runs the patched code
    assert after.status == 200, f"{after}\n{log.read_text()}"
    assert after.json() == {"name": "nut", "qty": MISSING}
    assert after.header == "guards=1", after
    assert rows(site, "nut") == 2

    written = overlays_in(site["overlays"])
    assert len(written) == 1 and written[0].startswith("shop."), (written, log.read_text())


def raw_get(port: int, path: str) -> bytes:
    """The raw bytes of one HTTP/1.0 exchange (the server closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def check_well_formed_replay(site: dict, port: int) -> None:
    """The replay after start_response gives ONE response: one status line, each of the
    app's headers once, the replayed body."""
    data = raw_get(port, "/item/nut")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split(" ", 1)[1].startswith("200"), data
    assert data.count(b"HTTP/1.") == 1, data
    names = [line.split(":", 1)[0].lower() for line in lines[1:]]
    assert names.count("x-app") == 1 and names.count("content-type") == 1, data
    assert names.count("x-codesuture") == 1, data
    assert "X-CodeSuture: guards=1; replayed=1" in lines, data
    assert json.loads(body) == {"name": "nut", "qty": MISSING}
    assert b"already" not in data


# --------------------------------------------------------------------------- Flask


@pytest.mark.parametrize("worker", [["-k", "sync"], ["-k", "gthread", "--threads", "4"]], ids=["sync", "gthread"])
def test_flask_under_gunicorn(site: dict, worker: list[str]) -> None:
    _needs("flask", "gunicorn")
    write(site["dir"] / "flaskapp.py", FLASK_APP)
    with serving(site, *gunicorn(*worker, "flaskapp:app")) as port:
        check_story(site, port)


def test_flask_under_werkzeug(site: dict) -> None:
    _needs("flask")
    write(site["dir"] / "flaskapp.py", FLASK_APP)
    with serving(site, "-m", "flask", "--app", "flaskapp", "run", "--host", "127.0.0.1", "--port", "{port}") as port:
        check_story(site, port)


# --------------------------------------------------------------------------- Django


#: Known open question (issue 12, closing note): the value-flow model counts a value built
#: from the default (a dict put into a JsonResponse/Response, a template variable) as the
#: default itself, so the frameworks' own checks on the response object (`assert
#: response`, `hasattr(response, "render")`, `hasattr(type(current), "__getitem__")`)
#: count as decisions and the guard declines (fail closed: a 500, never a wrong 200).
#: strict: this test fails loudly once the model stops tainting through such objects.
_RESPONSE_TAINT = pytest.mark.xfail(strict=True, reason="value-flow model: a response object built from the default counts as the default; the framework's own checks on it decline the guard")


@_RESPONSE_TAINT
def test_django_under_gunicorn(site: dict) -> None:
    _needs("django", "gunicorn")
    write(site["dir"] / "djapp.py", DJANGO_APP)
    with serving(site, *gunicorn("djapp:application"), env={"DJANGO_SETTINGS_MODULE": "djapp"}) as port:
        check_story(site, port)
        # A crash while a TemplateResponse renders (after the view returned): healed, the
        # view replayed and its response rendered.
        assert request(port, "GET", "/label/bolt").body == "label: [M6 bolt]"
        rendered = request(port, "GET", "/label/nut")
        assert rendered.status == 200, f"{rendered}\n{(site['dir'] / 'server.log').read_text()}"
        assert rendered.body == ("label: []" if TYPED else "label: [None]")
        assert rendered.header == "guards=1; replayed=1"


# --------------------------------------------------------------------------- FastAPI


@_RESPONSE_TAINT
def test_fastapi_under_uvicorn(site: dict) -> None:
    _needs("fastapi", "uvicorn")
    write(site["dir"] / "fastapp.py", FASTAPI_APP)
    with serving(site, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning",
                 "fastapp:app") as port:
        check_story(site, port)


# --------------------------------------------------------------------------- raw WSGI


def test_raw_wsgi_under_wsgiref(site: dict) -> None:
    write(site["dir"] / "rawapp.py", RAW_APP)
    write(site["dir"] / "serve.py", WSGIREF_SERVER)
    with serving(site, "serve.py", "{port}") as port:
        check_story(site, port, raw=True)


def test_raw_wsgi_under_gunicorn(site: dict) -> None:
    _needs("gunicorn")
    write(site["dir"] / "rawapp.py", RAW_APP)
    with serving(site, *gunicorn("rawapp:app")) as port:
        check_story(site, port, raw=True)


# --------------------------------------------------------------------------- Flask, in-process

EDGE_APP = '''
import flask
from werkzeug.exceptions import HTTPException

from codesuture.runtime.adapters.flask import CodeSuture

USERS = {"ann": "Ann"}
PRICES = {"bolt": 3}


def create(healer, header=True):
    app = flask.Flask(__name__)
    app.config["CODESUTURE_HEADER"] = header
    CodeSuture(app, healer=healer)

    @app.before_request
    def who():
        if flask.request.path == "/me":
            flask.g.user = USERS[flask.request.args.get("u", "nobody")]

    @app.get("/me")
    def me():
        return {"user": flask.g.user}

    @app.get("/price/<name>")
    def price(name):
        return {"price": PRICES[name]}

    @app.get("/search")
    def search():
        return {"q": flask.request.args["q"]}  # missing: Flask's own 400 (BadRequestKeyError)

    @app.get("/boom")
    def boom():
        raise RuntimeError("not a structural crash")

    @app.errorhandler(Exception)
    def catch_all(e):  # the app's 500 page, the way Flask's docs write it
        if isinstance(e, HTTPException):
            return e
        return {"error": type(e).__name__}, 500

    return app
'''


def test_flask_catch_all_handler_before_request_and_flask_own_errors(tmp_path: Path, monkeypatch) -> None:
    """A catch-all ``errorhandler(Exception)`` is the app's 500 page, not handling: a
    structural crash is healed first and the handler gets the rest; a crash in a
    ``before_request`` function is healed and the request replayed; Flask's own
    ``BadRequestKeyError`` (a KeyError) stays a 400; ``CODESUTURE_HEADER = False``."""
    _needs("flask")
    import threading

    from werkzeug.serving import make_server

    from codesuture.runtime.healer import Healer

    name = f"edgeapp_{tmp_path.name.replace('-', '_')}"
    write(tmp_path / f"{name}.py", EDGE_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    healer = Healer(overlays=tmp_path / "overlays")
    servers = [make_server("127.0.0.1", 0, module.create(healer), threaded=True),
               make_server("127.0.0.1", 0, module.create(healer, header=False), threaded=True)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    port, quiet_port = (server.server_port for server in servers)
    try:
        assert (r := request(port, "GET", "/price/bolt")).status == 200 and r.header is None, r
        r = request(port, "GET", "/price/nut")
        assert r.status == 200 and r.header is not None and r.header.endswith("; replayed=1"), r
        assert r.header == "guards=1; replayed=1", r

        assert (r := request(port, "GET", "/me?u=ann")).json() == {"user": "Ann"} and r.header is None, r
        r = request(port, "GET", "/me?u=zed")  # before_request crashed: healed, the request replayed
        assert r.status == 200 and r.header is not None and r.header.endswith("; replayed=1"), r
        assert r.json() == {"user": "" if TYPED else None}

        r = request(port, "GET", "/search")
        assert (r.status, r.header) == (400, None), r
        r = request(port, "GET", "/boom")
        assert (r.status, r.json(), r.header) == (500, {"error": "RuntimeError"}, None), r
        assert [x.record.qualname for x in healer.history] == ["create.<locals>.price", "create.<locals>.who"]

        r = request(quiet_port, "GET", "/price/nut")  # patched code, the header turned off
        assert (r.status, r.json(), r.header) == (200, {"price": MISSING}, None), r
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        sys.modules.pop(name, None)


def test_adapters_import_no_framework() -> None:
    """Neither boot's path nor the adapters package imports a framework or an adapter."""
    code = ("import sys, codesuture.boot, codesuture.runtime.web, codesuture.runtime.adapters; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'django', 'starlette', 'fastapi') "
            "or m.startswith('codesuture.runtime.adapters.')))")
    out = subprocess.run([PY, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out


def test_wsgi_held_start_response_still_serves_generator_and_write_apps() -> None:
    """HealingWSGIMiddleware holds the app's ``start_response`` until the app returns:
    an app that calls it only while its body is iterated (a generator), or that writes
    through ``write()``, still gets its one well-formed response."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from codesuture.runtime.healer import Healer
    from codesuture.runtime.web import HealingWSGIMiddleware

    def generator_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "gen")])
        yield b"from "
        yield b"a generator"

    def write_app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "write")])
        write(b"written, ")
        return [b"then returned"]

    def app(environ, start_response):
        inner = generator_app if environ["PATH_INFO"] == "/gen" else write_app
        return inner(environ, start_response)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", 0, HealingWSGIMiddleware(app, healer=Healer(overlays=None)), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for path, app_header, body in (("/gen", "gen", "from a generator"), ("/write", "write", "written, then returned")):
            r = request(server.server_port, "GET", path)
            assert (r.status, r.body, r.all("X-App"), r.header) == (200, body, [app_header], None), r
    finally:
        server.shutdown()
        server.server_close()
