"""A fleet fed by a real OCI registry (the CNCF Distribution registry on 127.0.0.1).

The end-to-end run: heal in dev, sign, bundle, push as ``:prod``; two "hosts" (each its
own state and cache folders) x 3 worker processes booted with ``--overlays
oci://127.0.0.1:PORT/app/overlays:prod --keys K --poll 1`` load it at start; a second
reviewed patch pushed to the tag reaches all six live; an attacker-signed bundle and the
older bundle pushed to the tag are refused by every worker, which keep the reviewed
code; the registry stopped, a new worker starts from its host cache; the registry back,
the next poll goes on. Requests are counted in the registry's own access log, per host
(the user agent carries the host cache's id).

No timed assertions: bounds here are generous deadlines for "eventually"; the measured
delays are printed (``-s``) and recorded by benchmarks/fleet_oci.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heal_helpers import clean_env, cli
from codesuture.ship.fleet_cache import HostCache
from codesuture.ship.publish import push_bundle
from registry_helpers import free_port, registry  # noqa: F401  (fixture)

SET = "prod"
BILLING = "def first(d):\n    return d['k']\n\n\ndef second(d):\n    return d.attr\n"
WORKER = '''\
import json, os, sys, time
import billing

def probe(f, arg):
    try:
        return repr(f(arg))
    except Exception as exc:  # the worker's own handling: a probe, not a crash
        return type(exc).__name__

out = sys.argv[1]
while True:
    state = {"first": probe(billing.first, {}), "second": probe(billing.second, None), "t": time.time(), "pid": os.getpid()}
    with open(out + ".tmp", "w") as fh:
        json.dump(state, fh)
    os.replace(out + ".tmp", out)
    time.sleep(0.02)
'''


def _ok(p) -> None:
    assert p.returncode == 0, (p.stdout, p.stderr)


def _heal(app: Path, store: Path, call: str, env: dict) -> None:
    main = app / "main.py"
    main.write_text(f"import billing\nprint(billing.{call})\n")
    _ok(subprocess.run([sys.executable, "-m", "codesuture", "run", "--retries", "4", "--overlays", str(store), str(main)],
                       cwd=app, env=env, capture_output=True, text=True, timeout=120))


class Fleet:
    """The reviewed artifacts: bundles v1 (first patched), v2 (both patched), an
    attacker-signed one, and the keys."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = clean_env(CODESUTURE_STATE_DIR=str(root / "review-state"))
        app = self.app = root / "app"
        app.mkdir()
        (app / "pyproject.toml").write_text('[project]\nname = "fleetapp"\n')
        (app / "billing.py").write_text(BILLING)
        (app / "worker.py").write_text(WORKER)
        private, self.keys, attacker_keys = root / "private", root / "keys", root / "attacker-keys"
        for name, pub in (("signer", self.keys), ("attacker", attacker_keys)):
            _ok(cli("keygen", "--private-key", private / f"{name}.key", "--public-key", pub / f"{name}.pem",
                    cwd=root, env=self.env))
        dev = root / "dev-overlays"  # where dev heals; each release is a signed copy of it
        _heal(app, dev, "first({})", self.env)
        self.v1 = self._release(dev, private / "signer.key", "v1", 1)
        _heal(app, dev, "second(None)", self.env)
        self.v2 = self._release(dev, private / "signer.key", "v2", 2)
        self.attacker = self._release(dev, private / "attacker.key", "attacker", 9)

    def _release(self, dev: Path, key: Path, name: str, version: int) -> Path:
        store = self.root / name
        shutil.copytree(dev, store, ignore=shutil.ignore_patterns(".*"))
        return self._bundle(store, key, f"{name}.cso", str(version))

    def _bundle(self, store: Path, key: Path, name: str, version: str | None = None) -> Path:
        args = ["sign", "--ttl", "30", "--key", key, "--app-root", self.app, "--set-name", SET]
        if version:
            args += ["--set-version", version]
        _ok(cli(*args, store, cwd=self.root, env=self.env))
        out = self.root / name
        _ok(cli("bundle", "create", store, "-o", out, cwd=self.root, env=self.env))
        return out

    def push(self, bundle: Path, location: str) -> str:
        p = cli("bundle", "push", bundle, location, cwd=self.root, env=self.env)
        _ok(p)
        return p.stdout.strip().splitlines()[-1]


class Worker:
    def __init__(self, fleet: Fleet, host: Path, n: int, location: str, *extra: str) -> None:
        host.mkdir(exist_ok=True)
        self.status = host / f"worker{n}.json"
        self.log = host / f"worker{n}.log"
        self.started = time.time()
        env = clean_env(CODESUTURE_STATE_DIR=str(host / "state"), CODESUTURE_CACHE_DIR=str(host / "cache"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "codesuture.boot", "--overlays", location, "--keys", str(fleet.keys), "--poll", "1",
             *extra, str(fleet.app / "worker.py"), str(self.status)],
            cwd=fleet.app, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), stdin=subprocess.DEVNULL)

    def state(self) -> dict | None:
        try:
            return json.loads(self.status.read_text())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _wait(workers: list[Worker], want: dict, timeout: float = 30.0, since: float = 0.0) -> dict[int, float]:
    """Wait until every worker's state has *want* in a sample written after *since*;
    returns worker index -> the time it was first seen so."""
    seen: dict[int, float] = {}
    end = time.time() + timeout
    while time.time() < end and len(seen) < len(workers):
        for i, w in enumerate(workers):
            st = w.state()
            if i not in seen and st and st["t"] > since and all(st.get(k) == v for k, v in want.items()):
                seen[i] = time.time()
            assert w.proc.poll() is None, (w.log.read_text())[-3000:]
        time.sleep(0.02)
    missing = [(i, w.state(), w.log.read_text()[-2000:]) for i, w in enumerate(workers) if i not in seen]
    assert not missing, missing
    return seen


def _heads(reg, agent: str, since_line: int = 0) -> list:
    return [r for r in reg.requests(agent)[since_line:] if r[0] == "HEAD" and "/manifests/" in r[1]]


def test_fleet_end_to_end(tmp_path, registry):  # noqa: F811
    fleet = Fleet(tmp_path)
    location = registry.location()
    fleet.push(fleet.v1, location)
    hosts = [tmp_path / "hostA", tmp_path / "hostB"]
    # --pull-timeout 10: six interpreters starting at once on a shared 2-core machine
    # (the default, 2 s, is what the cached start below runs with)
    workers = [Worker(fleet, h, n, location, "--pull-timeout", "10") for h in hosts for n in range(3)]
    try:
        _wait(workers, {"first": "None", "second": "AttributeError"})
        for w in workers:  # loaded at start, not swapped in later
            assert "without overlays" not in w.log.read_text() and "applied overlay" not in w.log.read_text()
        print("\ncold start, pull and load:", [round(json.loads(w.status.read_text())["t"] - w.started, 2)
                                               for w in workers], "s")
        agents = {h: HostCache(str(h / "cache"), location).agent for h in hosts}
        # at start: each host pulled the bundle once (one manifest GET, two blob GETs)
        for h in hosts:
            reqs = registry.requests(agents[h])
            assert len([r for r in reqs if r[0] == "GET" and "/blobs/" in r[1]]) == 2, reqs

        # quiet polling: one manifest HEAD per host per poll, no blob
        marks = {h: len(registry.requests(agents[h])) for h in hosts}
        time.sleep(6.0)
        for h in hosts:
            window = registry.requests(agents[h])[marks[h]:]
            heads = [r for r in window if r[0] == "HEAD"]
            assert [r for r in window if r[0] != "HEAD"] == [], window
            # 6 s at poll 1 s +-20%: 5..8 looks for the host (3 processes would make 15..24)
            assert 4 <= len(heads) <= 8, (h, heads)
            print(f"\nquiet 6 s, {h.name}: {len(heads)} manifest HEAD(s), 0 blob GETs")

        # a second reviewed patch reaches every worker live
        marks = {h: len(registry.requests(agents[h])) for h in hosts}
        push_bundle(str(fleet.v2), location)  # in process: the time the tag moved is known
        pushed_at = time.time()
        seen = _wait(workers, {"first": "None", "second": "None"}, since=pushed_at)
        delays = sorted(t - pushed_at for t in seen.values())
        print(f"\nv2 reached all 6 workers: delays {[round(d, 2) for d in delays]} s (poll 1 s)")
        for h in hosts:
            window = registry.requests(agents[h])[marks[h]:]
            assert len([r for r in window if r[0] == "GET" and "/blobs/" in r[1]]) == 2, window
            assert len([r for r in window if r[0] == "GET" and "/manifests/" in r[1]]) == 1, window
        for w in workers:
            assert "applied overlay billing" in w.log.read_text()

        # an attacker-signed bundle, then the older reviewed one: refused by every worker
        for bundle, why in ((fleet.attacker, "untrusted"), (fleet.v1, "older than version")):
            digest = fleet.push(bundle, location)
            end = time.time() + 20
            def refusal(w: Worker) -> str:
                return next((x for x in w.log.read_text().splitlines() if digest[:19] in x and "refused" in x), "")

            while time.time() < end and not all(refusal(w) for w in workers):
                time.sleep(0.1)
            for w in workers:
                text, line = w.log.read_text(), refusal(w)
                assert "refused" in line and why in line, (why, text[-3000:])
            time.sleep(1.5)
            for w in workers:
                st = w.state()
                assert st and st["first"] == "None" and st["second"] == "None" and st["t"] > time.time() - 1, st

        # registry down, host A restarting: a new worker starts from its host cache
        # within the pull timeout (the default, 2 s)
        registry.stop()
        for w in workers[:3]:
            w.stop()
        time.sleep(1.5)  # host A's next look is due
        late = Worker(fleet, hosts[0], 9, location)
        workers[:3] = [late]
        _wait([late], {"first": "None", "second": "None"}, timeout=30)
        start_delay = json.loads(late.status.read_text())["t"] - late.started
        print(f"\nregistry down: new worker served the cached bundle {start_delay:.2f} s after its start")
        log = late.log.read_text()
        assert "not reached" in log and "last verified bundle" in log, log

        # registry back: the next poll goes on (and the refused tag stays refused)
        registry.start()
        mark = len(registry.requests("codesuture"))
        time.sleep(3.0)
        after = registry.requests("codesuture")[mark:]
        for h in hosts:
            assert any(agents[h] in r[3] and r[0] == "HEAD" for r in after), (h, after)
            assert not [r for r in after if agents[h] in r[3] and r[0] == "GET"], after  # tag unchanged: no pull
        assert "reached again" in late.log.read_text()
        for w in workers:
            st = w.state()
            assert st and st["second"] == "None"
    finally:
        for w in workers:
            w.stop()


def test_no_cache_registry_down_require_overlays_exits_78(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    script = tmp_path / "app.py"
    script.write_text("print('ran')\n")
    env = clean_env(CODESUTURE_STATE_DIR=str(tmp_path / "state"))
    location = f"oci://127.0.0.1:{free_port()}/app/overlays:prod"
    p = subprocess.run([sys.executable, "-m", "codesuture.boot", "--overlays", location, "--keys", str(keys),
                        "--require-overlays", "--pull-timeout", "0.5", str(script)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 78, p
    assert "ran" not in p.stdout
    assert "holds no verified bundle" in p.stderr
    p = subprocess.run([sys.executable, "-m", "codesuture.boot", "--overlays", location, "--keys", str(keys),
                        "--pull-timeout", "0.5", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "ran" in p.stdout, p


def test_oci_location_needs_trust_root(tmp_path):
    script = tmp_path / "app.py"
    script.write_text("print('ran')\n")
    p = subprocess.run([sys.executable, "-m", "codesuture.boot", "--overlays", "oci://127.0.0.1:5000/app/overlays:prod",
                        str(script)], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "trust root" in p.stderr, p
    p = subprocess.run([sys.executable, "-m", "codesuture.boot", "--overlays", "oci://127.0.0.1:5000/app/overlays",
                        "--keys", str(tmp_path), str(script)], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "name a tag" in p.stderr, p


@pytest.mark.parametrize("flag", ["--plain-http"])
def test_boot_help_lists_registry_settings(flag):
    p = subprocess.run([sys.executable, "-m", "codesuture.boot", "--help"], env=clean_env(), capture_output=True,
                       text=True, timeout=60)
    for name in (flag, "--poll", "--pull-timeout", "CODESUTURE_CACHE_DIR", "CODESUTURE_PLAIN_HTTP", "oci://"):
        assert name in p.stdout, name


def test_local_store_boot_imports_no_registry_client(tmp_path):
    """The plain import path is unchanged: a local signed store imports neither oras
    nor requests (nor the registry modules of CodeSuture)."""
    repo = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "codesuture.boot", "--overlays", str(repo / "overlays"),
                        "--keys", str(repo / "keys"), str(repo / "examples" / "inventory" / "app.py")],
                       env=clean_env(CODESUTURE_STATE_DIR=str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "codesuture.loader.finder" in imported  # the store was used
    heavy = {m for m in imported if m.split(".")[0] in ("oras", "requests", "urllib3", "jsonschema")
             or m.startswith(("codesuture.ship", "codesuture.util.ociref", "codesuture.runtime.fleet_registry"))}
    assert not heavy, heavy
