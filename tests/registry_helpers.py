"""A real OCI registry for the tests: the CNCF Distribution registry (Debian package
``docker-registry``, binary ``docker-registry serve CONFIG``) on 127.0.0.1, a free port,
a temporary storage folder, and its access log (standard output) kept in a file the
tests count requests in. Tests that need it skip with a message when the binary is
missing (``.ci/run`` installs it)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

BINARY = "docker-registry"
_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d+) \S+ "[^"]*" "(?P<agent>[^"]*)"')


def binary() -> str | None:
    return shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if os.path.exists(f"/usr/bin/{BINARY}") else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """One registry process; :meth:`start` / :meth:`stop` may be called again (the
    same port and storage: a registry that went down and came back)."""

    def __init__(self, root: Path, users: dict[str, str] | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.storage = root / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.log = root / "access.log"
        self.config = root / "config.yml"
        auth = ""
        if users:  # HTTP basic authentication from an htpasswd file (bcrypt, as the registry requires)
            import bcrypt

            htpasswd = root / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                                        for u, p in users.items()))
            auth = f"auth:\n  htpasswd:\n    realm: codesuture-tests\n    path: {htpasswd}\n"
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: codesuture-tests\n" + auth
        )
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def location(self, repository: str = "app/overlays", tag: str = "prod") -> str:
        return f"oci://{self.host}/{repository}:{tag}"

    def start(self) -> None:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([binary() or BINARY, "serve", str(self.config)], stdout=out,
                                     stderr=open(self.root / "registry.err", "ab"), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    return
            except urllib.error.HTTPError:  # 401: up, and asking for credentials
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"registry exited: {(self.root / 'registry.err').read_text()[-2000:]}")
                time.sleep(0.05)
        raise RuntimeError("registry did not start within 15 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def requests(self, agent_contains: str = "") -> list[tuple[str, str, int, str]]:
        """``(method, path, status, user agent)`` of every request in the access log
        (the registry's own record), those whose user agent contains *agent_contains*."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            m = _LINE.search(line)
            if m and agent_contains in m["agent"]:
                out.append((m["method"], m["path"], int(m["status"]), m["agent"]))
        return out


@pytest.fixture
def registry(tmp_path_factory):
    """A running Distribution registry on 127.0.0.1 (stopped after the test)."""
    if binary() is None:
        pytest.skip("the CNCF Distribution registry is not installed (apt-get install -y docker-registry)")
    pytest.importorskip("oras", reason="oras (codesuture[oci]) is not installed")
    reg = Registry(tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def auth_registry(tmp_path_factory):
    """A running Distribution registry that wants HTTP basic credentials (user ``ci``,
    password ``s3cret``)."""
    if binary() is None:
        pytest.skip("the CNCF Distribution registry is not installed (apt-get install -y docker-registry)")
    pytest.importorskip("oras", reason="oras (codesuture[oci]) is not installed")
    pytest.importorskip("bcrypt", reason="bcrypt (for the registry's htpasswd file) is not installed")
    reg = Registry(tmp_path_factory.mktemp("registry"), users={"ci": "s3cret"})
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()
