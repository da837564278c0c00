"""Canary activation, the runtime kill switch and automatic rollback
(docs/governance.md), on real files and processes: overlays healed with ``codesuture
run``, signed with ``codesuture sign --canary-*``, loaded by ``python -m
codesuture.boot``; a serving process reverted by a signal and by a control file; a
WSGI unit of work that keeps failing after its guard fired."""

from __future__ import annotations

import base64
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from heal_helpers import PY, boot, clean_env, cli, heal, overlays_in, snapshot, write

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="needs POSIX signals")

LIB = """
def lookup(d):
    return d["missing"]
"""

MAIN = """
import lib
print("RESULT", lib.lookup({"present": 1}))
"""


def _payload(envelope: Path) -> dict:
    return json.loads(base64.b64decode(json.loads(envelope.read_text())["payload"]))


@pytest.fixture(scope="module")
def healed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An app healed once in dev (lib's overlay), and a signing key."""
    root = tmp_path_factory.mktemp("canary") / "app"
    write(root / "pyproject.toml", '[project]\nname = "canary-app"\nversion = "0"\n')
    write(root / "lib.py", LIB)
    main = write(root / "main.py", MAIN)
    store = root / "overlays"
    env = clean_env(CODESUTURE_STATE_DIR=str(root.parent / "state"))
    r = heal(main, store, env=env)
    assert r.returncode == 0 and r.results() == ["RESULT 0"], str(r)
    priv, keys = root.parent / "secret" / "k.key", root.parent / "keys"
    assert cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=root.parent).returncode == 0
    return {"root": root, "main": main, "store": store, "priv": priv, "keys": keys}


def _signed(healed: dict[str, Path], tmp_path: Path, *canary: str) -> Path:
    import shutil

    store = tmp_path / "signed"
    shutil.copytree(healed["store"], store, ignore=shutil.ignore_patterns("*.repro"))
    s = cli("sign", "--key", healed["priv"], "--app-root", healed["root"], *canary, store, cwd=healed["root"])
    assert s.returncode == 0, str(s)
    return store


# --- canary -----------------------------------------------------------------------------------

def test_sign_records_activation_in_each_statement_and_the_set(healed: dict[str, Path], tmp_path: Path) -> None:
    store = _signed(healed, tmp_path, "--canary-percent", "30", "--canary-env", "RING=canary")
    [envelope] = store.glob("lib.*.dsse.json")
    assert _payload(envelope)["predicate"]["activation"] == {"percent": 30, "env": {"RING": "canary"}}
    [entry] = _payload(store / "overlays.manifest.dsse.json")["predicate"]["overlays"].values()
    assert entry["activation"] == {"percent": 30, "env": {"RING": "canary"}}
    # verify and audit judge the overlay, not this process: activation plays no part.
    v = cli("verify", "--keys", healed["keys"], store, cwd=tmp_path, env=clean_env())
    assert v.returncode == 0 and "FAIL" not in v.stdout, str(v)
    bad = cli("sign", "--key", healed["priv"], "--canary-env", "NOEQUALS", store, cwd=healed["root"])
    assert bad.returncode != 0 and "NAME=VALUE" in bad.stderr, str(bad)


def test_activation_in_a_fraction_of_100_worker_ids(healed: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader's own admission (policy.admit, as the finder calls it) for 100 worker
    ids: about 30% admitted, within binomial bounds (n=100, p=0.3: 15..45 is beyond
    3.2 standard deviations), exactly the ones the stable hash selects; a selected and
    an unselected worker id then run the program through boot."""
    from codesuture.trust import canary
    from codesuture.store.kinds import open_store
    from codesuture.trust.policy import LoadPolicy, NotSelected, admit, clear_trust_root_cache

    store = _signed(healed, tmp_path, "--canary-percent", "30")
    clear_trust_root_cache()
    [[entry]] = open_store(str(store)).index().values()
    policy = LoadPolicy(str(healed["keys"]), True, state_dir=str(tmp_path / "state"), activate=True)
    admitted, predicted = [], []
    for i in range(100):
        wid = f"worker-{i}"
        monkeypatch.setenv(canary.WORKER_ENV, wid)
        try:
            admit(entry, policy)
            admitted.append(wid)
        except NotSelected as exc:
            assert "canary: 30% of processes" in exc.reason, exc.reason
        if canary.selects({"percent": 30}) is None:
            predicted.append(wid)
    print(f"canary 30%: {len(admitted)} of 100 worker ids admitted")
    assert 15 <= len(admitted) <= 45, len(admitted)
    assert admitted == predicted
    # Without activate (verify, audit) every worker id is admitted.
    monkeypatch.setenv(canary.WORKER_ENV, next(f"worker-{i}" for i in range(100) if f"worker-{i}" not in admitted))
    admit(entry, policy._replace(activate=False))

    yes = admitted[0]
    no = next(f"worker-{i}" for i in range(100) if f"worker-{i}" not in admitted)
    on = boot(healed["main"], store, "--keys", str(healed["keys"]), "-v", env=clean_env(CODESUTURE_WORKER_ID=yes))
    assert on.returncode == 0 and on.results() == ["RESULT 0"], str(on)
    off = boot(healed["main"], store, "--keys", str(healed["keys"]), "-v", env=clean_env(CODESUTURE_WORKER_ID=no))
    assert off.returncode == 1 and "KeyError" in off.stderr, str(off)
    [line] = [ln for ln in off.stderr.splitlines() if "not activated in this process" in ln]
    assert line.startswith("codesuture: INFO overlay lib.") and f"/{no})" in line, line
    assert "WARNING overlay lib." not in off.stderr, str(off)


def test_percentages_are_stable_and_proportional() -> None:
    """Same identity, same answer (across calls and Pythons' hashlib); the share of
    selected identities follows the percentage within binomial bounds (n=2000)."""
    from codesuture.trust import canary

    ids = [f"host-a/{i}" for i in range(2000)]
    buckets = [canary.bucket(i) for i in ids]
    assert buckets == [canary.bucket(i) for i in ids] and all(0 <= b < 100 for b in buckets)
    for percent in (1, 10, 30, 50, 90):
        k = sum(canary.selects({"percent": percent}, identity=i) is None for i in ids)
        mean, sd = 2000 * percent / 100, math.sqrt(2000 * percent / 100 * (1 - percent / 100))
        assert abs(k - mean) <= 4 * sd, (percent, k)
    assert all(canary.selects({"percent": 100}, identity=i) is None for i in ids[:50])
    assert all(canary.selects({"percent": 0}, identity=i) is not None for i in ids[:50])
    for bad in ({}, {"percent": 101}, {"percent": True}, {"env": {}}, {"env": {"A": 1}}, {"other": 1}, [30]):
        with pytest.raises(ValueError):
            canary.check(bad)


def test_environment_selector(healed: dict[str, Path], tmp_path: Path) -> None:
    store = _signed(healed, tmp_path, "--canary-env", "RING=canary")
    args = (healed["main"], store, "--keys", str(healed["keys"]), "-v")
    on = boot(*args, env=clean_env(RING="canary"))
    assert on.returncode == 0 and on.results() == ["RESULT 0"], str(on)
    for env in (clean_env(), clean_env(RING="stable")):
        off = boot(*args, env=env)
        assert off.returncode == 1 and "KeyError" in off.stderr, str(off)
        assert "codesuture: INFO overlay lib." in off.stderr and "canary: needs RING=canary" in off.stderr, str(off)
        assert "stable" not in off.stderr  # the process's own value is never logged


# --- the kill switch --------------------------------------------------------------------------

SERVE = """
import os, sys, time
import lib
from codesuture.runtime.boundary import boundary

@boundary
def handle():
    return lib.lookup({"present": 1})

print("READY", os.getpid(), flush=True)
while True:
    try:
        r = "ok %r" % (handle(),)
    except Exception as e:
        r = "err " + type(e).__name__
    print("TICK %.6f %s" % (time.time(), r), flush=True)
    time.sleep(0.005)
"""


class Serving:
    """A ``codesuture run`` process printing one TICK line per request."""

    def __init__(self, script: Path, store: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([PY, "-m", "codesuture", "run", "--overlays", str(store), str(script)],
                                     cwd=script.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, word: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {word!r} line within {timeout} s: {self.stop()}") from None
            if word in line:
                return line

    def stop(self) -> str:
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        return err


@pytest.mark.parametrize("trigger", ["signal", "file"])
def test_kill_switch_reverts_a_running_process_in_under_a_second(trigger: str, healed: dict[str, Path],
                                                               tmp_path: Path) -> None:
    """signal: the patch was made live by this process's healer; file: the overlay was
    loaded at import. Either way the next request after the trigger runs the original
    code (KeyError), well under a second later, and the process keeps serving."""
    import shutil

    root = tmp_path / "app"
    shutil.copytree(healed["root"], root, ignore=shutil.ignore_patterns("overlays*", "*.repro"))
    script = write(root / "serve.py", SERVE)
    store = root / "overlays"
    if trigger == "file":
        shutil.copytree(healed["store"], store)
    kill_file = tmp_path / "kill-codesuture"
    env = clean_env(CODESUTURE_KILL_FILE=str(kill_file))
    s = Serving(script, store, env)
    try:
        s.wait_for("TICK")
        s.wait_for("ok 0")
        time.sleep(0.2)
        t0 = time.time()
        if trigger == "signal":
            s.proc.send_signal(signal.SIGUSR2)
        else:
            kill_file.touch()
        first = float(s.wait_for("err KeyError").split()[1])
        s.wait_for("err KeyError")  # still serving
        assert s.proc.poll() is None
    finally:
        err = s.stop()
    latency = first - t0
    print(f"kill switch ({trigger}): first reverted request {latency * 1000:.1f} ms after the trigger")
    assert latency < 1.0, (latency, err)
    [line] = [ln for ln in err.splitlines() if "kill switch (" in ln]
    assert ("signal 12" if trigger == "signal" else "kill file") in line and "1 function(s) reverted" in line, err
    assert "patched" not in err.split("kill switch (")[1], "healed again after the kill switch"


def test_kill_signal_chains_the_apps_handler_and_can_be_turned_off(tmp_path: Path) -> None:
    program = """
import os, signal, sys, time
got = []
signal.signal(signal.SIGUSR2, lambda s, f: got.append(s))
from codesuture import settings
from codesuture.runtime.session import activate
activate(settings.load({}, os.environ))
os.kill(os.getpid(), signal.SIGUSR2)
time.sleep(0.5)
switch = sys.modules.get("codesuture.runtime.killswitch")
print("APP", got, "KILLED", getattr(switch, "KILLED", None))
"""
    r = subprocess.run([PY, "-c", program], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"APP [{int(signal.SIGUSR2)}] KILLED signal {int(signal.SIGUSR2)}" in r.stdout, r
    r = subprocess.run([PY, "-c", program], cwd=tmp_path, env=clean_env(CODESUTURE_KILL_SIGNAL="off"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"APP [{int(signal.SIGUSR2)}] KILLED None" in r.stdout, r
    bad = subprocess.run([PY, "-m", "codesuture.boot", "-c", "pass"], cwd=tmp_path,
                         env=clean_env(CODESUTURE_KILL_SIGNAL="SIGNOPE"), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "CODESUTURE_KILL_SIGNAL" in bad.stderr, bad


def test_a_kill_file_present_at_start_up_loads_no_overlay(healed: dict[str, Path], tmp_path: Path) -> None:
    kill_file = tmp_path / "kill"
    kill_file.touch()
    r = boot(healed["main"], healed["store"], env=clean_env(CODESUTURE_KILL_FILE=str(kill_file)))
    assert r.returncode == 1 and "KeyError" in r.stderr and "kill switch (kill file" in r.stderr, str(r)


# --- automatic rollback -----------------------------------------------------------------------

SHOP = """
def price(item):
    return item["price"]
"""

WSGI = """
import sys
from wsgiref.util import setup_testing_defaults
import shop
from codesuture.runtime.web import HealingWSGIMiddleware

def positive(v):
    if v <= 0:
        raise ValueError("price must be positive")
    return v

def app(environ, start_response):
    p = shop.price({"qty": 2})
    positive(p)  # the price handed on as data; the check that fails is another function's
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % p]

mw = HealingWSGIMiddleware(app)
for i in range(int(sys.argv[1])):
    env = {}
    setup_testing_defaults(env)
    try:
        body = b"".join(mw(env, lambda status, headers, exc_info=None: None))
        print("REQ", i, "ok", body.decode(), flush=True)
    except Exception as e:
        print("REQ", i, "error", type(e).__name__, flush=True)
"""


def _shop(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "shop"
    write(root / "pyproject.toml", '[project]\nname = "shop"\nversion = "0"\n')
    write(root / "shop.py", SHOP)
    return root, write(root / "wsgi_main.py", WSGI)


def _requests(stdout: str) -> list[str]:
    return [line.split(" ", 2)[2] for line in stdout.splitlines() if line.startswith("REQ ")]


def test_automatic_rollback_after_units_keep_failing(tmp_path: Path) -> None:
    """Each request: the guard yields 0, then the app raises ValueError (a second
    failure). After rollback_after (3) such requests the patch is reverted live, a
    rollback incident is written, the record goes to the pending folder for review
    (tier observe, which sign refuses), and the site is observed from then on, in this
    process and, through the pending record, in the next."""
    root, main = _shop(tmp_path)
    store, pending, incidents = root / "overlays", root / "overlays.pending", root / "incidents.jsonl"
    r = heal(main, store, "--incidents", str(incidents), args=("6",))
    assert _requests(r.stdout) == ["error ValueError"] * 3 + ["error KeyError"] * 3, str(r)
    [line] = [ln for ln in r.stderr.splitlines() if "automatic rollback" in ln]
    assert "shop:2 in price (key_guard) reverted live" in line and "after 3 unit(s) of work" in line, line
    assert "marked for review in " + str(pending) in line, line
    assert r.stderr.count("its patch was rolled back automatically in this process") == 3, str(r)
    [event] = [e for e in map(json.loads, incidents.read_text().splitlines()) if e["kind"] == "rollback"]
    assert event["scope"] == "auto" and event["failures"] == 3 and event["guard"] == "key_guard", event
    [meta_path] = [p for p in pending.glob("shop.*.json")]
    meta = json.loads(meta_path.read_text())
    assert meta["tier"] == "observe" and meta["patches"][0]["evidence"]["review"] == "auto-rolled-back", meta
    priv, keys = tmp_path / "k.key", tmp_path / "keys"
    assert cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=tmp_path).returncode == 0
    s = cli("sign", "--key", priv, "--app-root", root, pending, cwd=root)
    assert s.returncode == 1 and "tier 'observe'" in s.stderr, str(s)

    # Take the patch out of the store (the review's decision); the next process does not
    # heal the site again while its record awaits review.
    rb = cli("rollback", "--function", "price", "--app-root", root, store, cwd=root)
    assert rb.returncode == 0 and overlays_in(store) == [], str(rb)
    again = heal(main, store, args=("2",))
    assert _requests(again.stdout) == ["error KeyError"] * 2, str(again)
    assert "awaits review in" in again.stderr and "patched" not in again.stderr, str(again)


def test_automatic_rollback_of_a_signed_overlay_never_touches_the_store(tmp_path: Path) -> None:
    """Prod with --heal: the patch came from a signed overlay loaded at import. It is
    reverted live all the same; the signed folder stays byte for byte; the review record
    goes to the pending folder."""
    root, main = _shop(tmp_path)
    store, pending = root / "overlays", root / "overlays.pending"
    r = heal(main, store, "--retries", "16", args=("1",), env=clean_env(CODESUTURE_ROLLBACK_AFTER="0"))
    assert _requests(r.stdout) == ["error ValueError"] and overlays_in(store), str(r)
    priv, keys = tmp_path / "k.key", tmp_path / "keys"
    assert cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=tmp_path).returncode == 0
    assert cli("sign", "--key", priv, "--app-root", root, store, cwd=root).returncode == 0
    for p in store.glob("*.repro"):
        import shutil

        shutil.rmtree(p)
    before = snapshot(store)
    p = boot(main, store, "--keys", str(keys), "--heal", args=("5",), no_heal=False,
             env=clean_env(CODESUTURE_ROLLBACK_AFTER="2"))
    assert _requests(p.stdout) == ["error ValueError"] * 2 + ["error KeyError"] * 3, str(p)
    assert "automatic rollback: the patch at shop:2 in price (key_guard) reverted live" in p.stderr, str(p)
    assert snapshot(store) == before, "the signed folder changed"
    meta = json.loads(next(pending.glob("shop.*.json")).read_text())
    assert meta["tier"] == "observe" and meta["patches"][0]["evidence"]["review"] == "auto-rolled-back", meta
