"""A newcomer's first hour, through the real command line (each test runs the CLI in a
subprocess):

* ``codesuture --help``, ``-V``/``--version`` and ``python -m codesuture`` answer on an
  install without click (a throwaway venv holding only the in-process dependencies),
  listing every command and marking the review commands that need ``codesuture[cli]``;
  ``run``/``watch``/``boot --help`` list every option with its environment variable
  and default, and the exit codes; ``--`` ends CodeSuture's options;
* the program's own errors (a missing script, a syntax error, undecodable bytes, a NUL
  byte, a folder without ``__main__``) give exactly python's message and exit code,
  with no CodeSuture frame;
* logging the app's way: an app that configured logging gets each patch as one record
  in its own format (nothing from CodeSuture's own handler); without one, one line per
  patch on stderr in the shared naming scheme; ``-q`` silences it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from heal_helpers import PY, REPO, clean_env, cli, run, this_site_packages, write

#: What the in-process path needs (the distribution's dependencies) and nothing else.
_PLAIN_DISTS = ("bytecode", "cryptography", "cffi", "pycparser", "_cffi_backend", "typing_extensions")


@pytest.fixture(scope="module")
def plain_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with codesuture and its dependencies only (no click, no sigstore): its
    site-packages links this environment's copies of them."""
    where = tmp_path_factory.mktemp("plain") / "venv"
    subprocess.run([PY, "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True)
    vpy = where / "bin" / "python"
    purelib = Path(subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    here = Path(this_site_packages())
    for entry in here.iterdir():
        if entry.name.split("-")[0].split(".")[0] in _PLAIN_DISTS:
            (purelib / entry.name).symlink_to(entry)
    (purelib / "codesuture_src.pth").write_text(str(REPO / "src") + "\n")
    (where / "bin" / "codesuture").write_text(f"#!{vpy}\nimport sys\nfrom codesuture.cli.app import main\n"
                                              "sys.exit(main())\n")
    (where / "bin" / "codesuture").chmod(0o755)
    probe = subprocess.run([str(vpy), "-c", "import importlib.util as u; print(u.find_spec('click'))"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "None", probe  # really no click there
    return vpy


def _all_commands() -> set[str]:
    from codesuture.cli.group import cli as group

    return set(group.commands)


def test_help_and_version_on_a_plain_install(plain_python: Path, tmp_path: Path) -> None:
    from codesuture import __version__
    from codesuture.cli.app import COMMANDS

    assert {name for name, _, _ in COMMANDS} >= _all_commands()  # --help's table lists every command
    for argv in ([str(plain_python.parent / "codesuture"), "--help"], [str(plain_python), "-m", "codesuture", "--help"],
                 [str(plain_python), "-m", "codesuture", "-h"]):
        p = run(argv, tmp_path, clean_env())
        assert p.returncode == 0 and p.stderr == "", str(p)
        for name, needs_cli, _ in COMMANDS:
            [line] = [ln for ln in p.stdout.splitlines() if ln.startswith(f"  {name} ")]
            assert ("[needs codesuture[cli]]" in line) == needs_cli, line
        assert "Exit codes" in p.stdout and "pip install 'codesuture[cli]'" in p.stdout
    for flag in ("-V", "--version"):
        for argv in ([str(plain_python), "-m", "codesuture", flag], [str(plain_python), "-m", "codesuture", "run", flag],
                     [str(plain_python), "-m", "codesuture", "watch", flag],
                     [str(plain_python), "-m", "codesuture.boot", flag]):
            p = run(argv, tmp_path, clean_env())
            assert p.returncode == 0 and p.stdout.startswith(f"codesuture {__version__} (Python "), str(p)
    # a review command there: one message naming the extra, exit 2, no traceback
    p = run([str(plain_python), "-m", "codesuture", "sign", "--help"], tmp_path, clean_env())
    assert p.returncode == 2 and "`codesuture sign` needs click" in p.stderr and "codesuture[cli]" in p.stderr, str(p)
    assert "Traceback" not in p.stderr
    # no command at all: the help on stderr, exit 2 (nothing done)
    p = run([str(plain_python), "-m", "codesuture"], tmp_path, clean_env())
    assert p.returncode == 2 and "Commands:" in p.stderr, str(p)


def test_full_install_help_marks_nothing(tmp_path: Path) -> None:
    p = cli("--help", cwd=tmp_path)
    assert p.returncode == 0 and "[needs codesuture[cli]]" not in p.stdout and "  sign " in p.stdout, str(p)


@pytest.mark.parametrize("how", ["run", "boot"])
def test_run_and_boot_help_list_every_option(how: str, tmp_path: Path) -> None:
    from codesuture import settings

    argv = [PY, "-m", "codesuture", "run", "--help"] if how == "run" else [PY, "-m", "codesuture.boot", "--help"]
    p = run(argv, tmp_path, clean_env())
    assert p.returncode == 0, str(p)
    text = p.stdout
    assert ":mod:" not in text and "``" not in text  # plain text, not reST
    assert text.startswith(f"usage: {'codesuture run' if how == 'run' else 'python -m codesuture.boot'} [options] [--] ")
    for f in settings.FIELDS:
        assert (f.flag or f.env) in text, f.name
        if f.env:
            assert f.env in text, f.name
        assert f.default is not None, f"setting {f.name} has no default text for --help"
        assert " ".join(f"default: {f.default}".split()) in " ".join(text.split()), f.name
    for names, _ in settings.COMMAND_LINE_OPTIONS:
        assert f"  {names}\n" in text, names
    for flag in ("--dry-run", "-v, --verbose", "-q, --quiet", "--heal | --no-heal", "--"):
        assert flag in text
    exits = text[text.index("Exit codes:"):]
    for code in ("1", "2", "78", "130"):
        assert re.search(rf"^  {code} ", exits, re.M), exits


def test_watch_help(tmp_path: Path) -> None:
    p = cli("watch", "--help", cwd=tmp_path)
    assert p.returncode == 0 and "--overlays DIR" in p.stdout and "default: overlays/ beside the" in p.stdout, str(p)
    assert "--max-restarts N" in p.stdout and "default: 3" in p.stdout and "Exit codes:" in p.stdout


def test_double_dash_ends_options(tmp_path: Path) -> None:
    script = write(tmp_path / "-odd.py", "import sys\nprint('ARGS', sys.argv[1:])\n")
    for argv in ([PY, "-m", "codesuture", "run", "--retries", "0", "--", script.name, "--help", "-v"],
                 [PY, "-m", "codesuture.boot", "--", script.name, "--help"]):
        p = run(argv, tmp_path, clean_env())
        assert p.returncode == 0 and p.stdout.startswith("ARGS ['--help'"), str(p)
    p = run([PY, "-m", "codesuture", "run", "--bogus", "x.py"], tmp_path, clean_env())
    assert p.returncode == 2 and "unknown option --bogus" in p.stderr and "--help" in p.stderr, str(p)


# --- the program's errors stay the program's ---------------------------------------------

PROGRAM_ERRORS = {
    "syntax.py": b"def f(:\n    pass\n",
    "latin1.py": b"x = 1\n\ny = 'caf\xe9'\n",
    "nul.py": b"x = 1\x00\n",
    "indent.py": b"if True:\nprint(1)\n",
    "declared.py": b"# -*- coding: ascii -*-\nx = '\xe9'\n",
    "unknown.py": b"# coding: nope\nx = 1\n",
    "vim.py": b"#!/usr/bin/env python\n# vim: set fileencoding=utf-8 :\nx = '\xe9'\n",
}


@pytest.mark.parametrize("name", [*PROGRAM_ERRORS, "missing.py", "./missing.py", "nodir/", "folder"])
@pytest.mark.parametrize("how", ["run", "boot"])
def test_program_errors_are_pythons(name: str, how: str, tmp_path: Path) -> None:
    if name in PROGRAM_ERRORS:
        (tmp_path / name).write_bytes(PROGRAM_ERRORS[name])
    elif name == "folder":
        (tmp_path / name).mkdir()
    env = clean_env()
    want = run([PY, name], tmp_path, env)
    argv = [PY, "-m", "codesuture", "run"] if how == "run" else [PY, "-m", "codesuture.boot"]
    got = run([*argv, name], tmp_path, env)
    assert (got.returncode, got.stderr) == (want.returncode, want.stderr), f"python: {want}\ncodesuture: {got}"
    assert "codesuture" not in got.stderr.replace(sys.executable, "PYTHON") or "codesuture" in str(tmp_path)
    assert not (tmp_path / "overlays").exists()


# --- logging the app's way ------------------------------------------------------------------

BUGGY = """
import sys
def total(prices, key):
    return prices[key] * 2
print("RESULT", total({"a": 1}, "b"))
"""

CONFIGURED = "import logging\nlogging.basicConfig(format='APP|%(name)s|%(levelname)s|%(message)s')\n" + BUGGY


def test_one_line_per_patch_on_stderr(tmp_path: Path) -> None:
    script = write(tmp_path / "app.py", BUGGY)
    p = cli("run", script.name, cwd=tmp_path, env=clean_env())
    assert p.returncode == 0 and "RESULT 0" in p.stdout, str(p)
    patched = [ln for ln in p.stderr.splitlines() if "patched" in ln]
    assert len(patched) == 1, p.stderr
    assert re.fullmatch(r"codesuture: WARNING patched __main__:3 total: key_guard on `prices\[key\]` -> yields .+; "
                        r"overlay \S+\.overlay", patched[0]), patched[0]
    assert "offset" not in p.stderr  # the detail is for -v
    v = cli("run", "-v", "--overlays", "ov1", script.name, cwd=tmp_path, env=clean_env(), timeout=120)
    assert re.search(r"^codesuture: INFO +BINARY_\w+ at offset \d+; \+\d+ instructions", v.stderr, re.M), v.stderr
    q = cli("run", "-q", "--overlays", "ov2", script.name, cwd=tmp_path, env=clean_env())
    assert q.returncode == 0 and "WARNING" not in q.stderr and "patched" not in q.stderr, str(q)


def test_app_logging_gets_the_records(tmp_path: Path) -> None:
    script = write(tmp_path / "app.py", CONFIGURED)
    for argv in (["run", script.name], ):
        p = cli(*argv, cwd=tmp_path, env=clean_env())
        assert p.returncode == 0 and "RESULT 0" in p.stdout, str(p)
        lines = p.stderr.splitlines()
        # our handler stays quiet once the app configured logging (a replay is a fresh
        # process: what its loader says before the app's first line is ours)
        assert not [ln for ln in lines if ln.startswith("codesuture: WARNING") and "loading UNSIGNED overlay" not in ln], p.stderr
        [patched] = [ln for ln in lines if "patched" in ln]
        assert patched.startswith("APP|codesuture.heal|WARNING|patched __main__:6 total: key_guard on `prices[key]`")
    b = run([PY, "-m", "codesuture.boot", "--overlays", "ov3", script.name], tmp_path, clean_env())
    assert b.returncode == 0 and "APP|codesuture.heal|WARNING|patched __main__:6" in b.stderr, str(b)
    assert "codesuture: WARNING patched" not in b.stderr, str(b)  # (a line before the app configured logging is ours)


def test_library_logger_propagates(tmp_path: Path) -> None:
    """In process: CodeSuture's loggers are children of ``codesuture`` that propagate;
    its own handler prints only while the app has none."""
    code = """
import logging, sys
from codesuture import logs
logs.request(logging.WARNING)
logs.logger("codesuture.heal").warning("first")
logging.basicConfig(format="APP %(name)s %(message)s", stream=sys.stdout)
logs.logger("codesuture.heal").warning("second")
print("propagate", logging.getLogger("codesuture").propagate, logging.getLogger("codesuture.heal").propagate)
"""
    p = run([PY, "-c", code], tmp_path, clean_env())
    assert p.returncode == 0, str(p)
    assert p.stderr == "codesuture: WARNING first\n", str(p)
    assert p.stdout == "APP codesuture.heal second\npropagate True True\n", str(p)


# --- frameworks tell the truth; the header discloses counts only -----------------------------

FLASK_APP = """
import http.client, os, sys, threading
from flask import Flask
from werkzeug.serving import make_server

STOCK = {"bolt": 3}
app = Flask(__name__)

@app.get("/item/<name>")
def item(name):
    return {"qty": STOCK[name]}

@app.get("/ratio/<int:n>")
def ratio(n):
    return {"r": 12 / n}

if sys.argv[1:] == ["adapter"]:
    from codesuture.runtime.adapters.flask import CodeSuture
    CodeSuture(app)

server = make_server("127.0.0.1", 0, app, threaded=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
for path in ("/item/bolt", "/item/nut", "/item/washer", "/ratio/0", "/ratio/0"):
    con = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
    con.request("GET", path)
    r = con.getresponse()
    r.read()
    print("GOT", path, r.status, r.getheader("X-CodeSuture"), flush=True)
server.shutdown()
"""


def _flask_or_skip() -> None:
    pytest.importorskip("flask", reason="flask is a test dependency (pip install -e '.[test]')")


def test_flask_without_adapter_under_boot_warns_once(tmp_path: Path) -> None:
    _flask_or_skip()
    write(tmp_path / "shop.py", FLASK_APP)
    p = run([PY, "-m", "codesuture.boot", "--overlays", "ov", "shop.py"], tmp_path, clean_env(), timeout=120)
    assert p.returncode == 0, str(p)
    got = [ln.split()[1:] for ln in p.stdout.splitlines() if ln.startswith("GOT")]
    assert [g[1] for g in got] == ["200", "500", "500", "500", "500"], p.stdout  # the framework's 500s
    warnings = [ln for ln in p.stderr.splitlines() if "without CodeSuture's adapter" in ln]
    assert len(warnings) == 1, p.stderr  # once, however many 500s
    assert re.search(r"Flask turned KeyError at \S+shop\.py:\d+ into a 500", warnings[0]), warnings[0]
    assert "from codesuture.runtime.adapters.flask import CodeSuture; CodeSuture(app)" in warnings[0]
    # with the adapter, under boot: healed, no warning, the header says counts only
    a = run([PY, "-m", "codesuture.boot", "--overlays", "ov2", "shop.py", "adapter"], tmp_path, clean_env(), timeout=120)
    assert a.returncode == 0 and "without CodeSuture's adapter" not in a.stderr, str(a)
    got = {(g[0], i): g[1:] for i, g in enumerate(ln.split()[1:] for ln in a.stdout.splitlines() if ln.startswith("GOT"))}
    assert got[("/item/nut", 1)] == ["200", "guards=1;", "replayed=1"], a.stdout
    assert "site=" not in a.stdout and "guard=" not in a.stdout


def test_flask_adapter_without_store_says_memory_once(tmp_path: Path) -> None:
    _flask_or_skip()
    write(tmp_path / "shop.py", FLASK_APP)
    p = run([PY, "shop.py", "adapter"], tmp_path, clean_env(), timeout=120)  # no boot: no store
    assert p.returncode == 0, str(p)
    statuses = [ln.split()[2] for ln in p.stdout.splitlines() if ln.startswith("GOT")]
    assert statuses == ["200"] * 5, p.stdout  # healed in memory
    assert p.stderr.count("patches stay in memory") == 1, p.stderr  # two patches, said once
    assert p.stderr.count("patched __main__:") == 2 and p.stderr.count("; in memory only") == 2, p.stderr
    assert not list(tmp_path.glob("**/*.overlay"))


def test_header_full_only_when_set(tmp_path: Path) -> None:
    _flask_or_skip()
    write(tmp_path / "shop.py", FLASK_APP)
    env = clean_env(CODESUTURE_HEADER="full")
    p = run([PY, "-m", "codesuture.boot", "--overlays", "ov", "shop.py", "adapter"], tmp_path, env, timeout=120)
    assert p.returncode == 0, str(p)
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("GOT /item/nut"))
    assert re.fullmatch(r"GOT /item/nut 200 guards=1; guard=key_guard; site=__main__:\d+; replayed=1", line), line
    (tmp_path / "pyproject.toml").write_text('[tool.codesuture]\nheader = "off"\n')
    q = run([PY, "-m", "codesuture.boot", "--overlays", "ov3", "shop.py", "adapter"], tmp_path, clean_env(), timeout=120)
    line = next(ln for ln in q.stdout.splitlines() if ln.startswith("GOT /item/nut"))
    assert line == "GOT /item/nut 200 None", q.stdout
    bad = run([PY, "-m", "codesuture.boot", "shop.py"], tmp_path, clean_env(CODESUTURE_HEADER="loud"), timeout=60)
    assert bad.returncode == 2 and "CODESUTURE_HEADER" in bad.stderr and "off, counts or full" in bad.stderr, str(bad)


DJANGO_APP = """
import http.client, sys, threading
from wsgiref.simple_server import make_server, WSGIRequestHandler
import django
from django.conf import settings
from django.http import JsonResponse
from django.urls import path

STOCK = {"bolt": 3}

def item(request, name):
    return JsonResponse({"qty": STOCK[name]})

urlpatterns = [path("item/<str:name>", item)]
settings.configure(DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="x" * 50,
                   MIDDLEWARE=[], LOGGING_CONFIG=None)
django.setup()
from django.core.wsgi import get_wsgi_application

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
for p in ("/item/bolt", "/item/nut", "/item/washer"):
    con = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
    con.request("GET", p)
    r = con.getresponse()
    r.read()
    print("GOT", p, r.status, flush=True)
server.shutdown()
"""


def test_django_without_adapter_under_boot_warns_once(tmp_path: Path) -> None:
    pytest.importorskip("django", reason="django is a test dependency (pip install -e '.[test]')")
    write(tmp_path / "site.py", DJANGO_APP)
    p = run([PY, "-m", "codesuture.boot", "--overlays", "ov", "site.py"], tmp_path, clean_env(), timeout=120)
    assert p.returncode == 0, str(p)
    assert [ln.split()[2] for ln in p.stdout.splitlines() if ln.startswith("GOT")] == ["200", "500", "500"], str(p)
    warnings = [ln for ln in p.stderr.splitlines() if "without CodeSuture's adapter" in ln]
    assert len(warnings) == 1 and "Django turned KeyError at " in warnings[0], p.stderr
    assert 'MIDDLEWARE = ["codesuture.runtime.adapters.django.CodeSutureMiddleware", *MIDDLEWARE]' in warnings[0]


STARLETTE_APP = """
import http.client, socket, threading, time
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

STOCK = {"bolt": 3}

async def item(request):
    return JSONResponse({"qty": STOCK[request.path_params["name"]]})

app = Starlette(routes=[Route("/item/{name}", item)])
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
while not server.started:
    time.sleep(0.01)
for p in ("/item/bolt", "/item/nut", "/item/washer"):
    con = http.client.HTTPConnection("127.0.0.1", sock.getsockname()[1], timeout=30)
    con.request("GET", p)
    r = con.getresponse()
    r.read()
    print("GOT", p, r.status, flush=True)
server.should_exit = True
"""


def test_starlette_without_adapter_under_boot_warns_once(tmp_path: Path) -> None:
    pytest.importorskip("starlette", reason="starlette (with fastapi) is a test dependency")
    pytest.importorskip("uvicorn", reason="uvicorn is a test dependency")
    write(tmp_path / "asgi.py", STARLETTE_APP)
    p = run([PY, "-m", "codesuture.boot", "--overlays", "ov", "asgi.py"], tmp_path, clean_env(), timeout=120)
    assert [ln.split()[2] for ln in p.stdout.splitlines() if ln.startswith("GOT")] == ["200", "500", "500"], str(p)
    warnings = [ln for ln in p.stderr.splitlines() if "without CodeSuture's adapter" in ln]
    assert len(warnings) == 1 and "Starlette turned KeyError at " in warnings[0], p.stderr
    assert "from codesuture.runtime.adapters.starlette import install; install(app)" in warnings[0]
