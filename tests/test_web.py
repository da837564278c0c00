"""HTTP boundaries with real servers on 127.0.0.1: safe requests are healed and
replayed; mutating requests are healed but never replayed."""

from __future__ import annotations

import asyncio
import http.client
import importlib
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from codesuture.runtime.boundary import boundary
from codesuture.runtime.healer import Healer
from codesuture.runtime.web import HealingASGIMiddleware, HealingWSGIMiddleware, healing_handler

APP = '''
calls = {"n": 0}
STOCK = {"bolt": 3}

def lookup(name):
    calls["n"] += 1
    return STOCK[name]

def record(name):
    calls["n"] += 1
    return STOCK[name] + 1
'''


@pytest.fixture
def app(tmp_path, monkeypatch):
    """A fresh application module (its crash site must be patchable application code)."""
    name = f"webapp_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module(name)
    yield mod
    sys.modules.pop(name, None)


def _serve(server):
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t


def _request(port, method, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except (http.client.RemoteDisconnected, ConnectionError):
        return None, ""
    finally:
        conn.close()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def test_http_server_get_is_healed_and_replayed_post_is_not(app, tmp_path):
    healer = Healer(overlays=tmp_path / "ov")

    @healing_handler(healer=healer)
    class Handler(_Quiet):
        def do_GET(self):
            body = repr(app.lookup(self.path.strip("/"))).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = repr(app.record(self.path.strip("/"))).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda *a: None
    _serve(server)
    port = server.server_address[1]
    try:
        assert _request(port, "GET", "/bolt") == (200, "3")
        # A missing key: healed (key_guard yields 0, the type of STOCK's values) and the
        # GET is replayed.
        assert _request(port, "GET", "/nut") == (200, "0")
        assert [r.record.guard.guard for r in healer.history] == ["key_guard"]
        before = app.calls["n"]
        # POST crashes: healed for next time, never replayed (one call, no response).
        status, _ = _request(port, "POST", "/nut")
        assert status is None
        assert app.calls["n"] == before + 1  # not called again by a replay
        assert [r.record.qualname for r in healer.history] == ["lookup", "record"]
        assert len(list((tmp_path / "ov").glob("*.overlay"))) == 1  # one module, both patches

    finally:
        server.shutdown()
        server.server_close()


def test_wsgi_get_replayed_post_not(app, tmp_path):
    healer = Healer(overlays=None)

    def wsgi(environ, start_response):
        name = environ["PATH_INFO"].strip("/")
        if environ["REQUEST_METHOD"] == "POST":
            value = app.record(name)
        else:
            value = app.lookup(name)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr(value).encode()]

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", 0, HealingWSGIMiddleware(wsgi, healer=healer), handler_class=QuietHandler)
    _serve(server)
    port = server.server_address[1]
    try:
        assert _request(port, "GET", "/nut") == (200, "0")
        n = app.calls["n"]
        status, _ = _request(port, "POST", "/nut")
        assert status == 500
        assert app.calls["n"] == n + 1
        assert [r.record.qualname for r in healer.history] == ["lookup", "record"]
        # After the heal, the next POST runs the patched code (0 + 1), once.
        n = app.calls["n"]
        assert _request(port, "POST", "/nut") == (200, "1")
        assert app.calls["n"] == n + 1
    finally:
        server.shutdown()
        server.server_close()


def test_asgi_get_replayed_before_response_start(app):
    healer = Healer(overlays=None)
    sent = []

    async def asgi(scope, receive, send):
        await receive()
        fn = app.lookup if scope["method"] == "GET" else app.record
        value = fn(scope["path"].strip("/"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": repr(value).encode()})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    mw = HealingASGIMiddleware(asgi, healer=healer)
    asyncio.run(mw({"type": "http", "method": "GET", "path": "/nut"}, receive, send))
    assert sent[-1]["body"] == b"0"
    n = app.calls["n"]
    with pytest.raises(KeyError):
        asyncio.run(mw({"type": "http", "method": "POST", "path": "/x"}, receive, send))
    assert app.calls["n"] == n + 1  # healed, not replayed
    assert [r.record.qualname for r in healer.history] == ["lookup", "record"]


def test_boundary_decorator_replays_or_not(app):
    healer = Healer(overlays=None)

    @boundary(healer=healer)
    def read(name):
        return app.lookup(name)

    assert read("nut") == 0
    calls = app.calls["n"]

    @boundary(healer=healer, replay=False)
    def write(name):
        return app.record(name)

    with pytest.raises(KeyError):
        write("nut")
    assert app.calls["n"] == calls + 1
    # patched for the next call, never replayed: the typed default 0, plus one
    assert write("nut") == 1
