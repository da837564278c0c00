"""Repro capture at heal time, ``codesuture repro`` tests and their proof in the signed
Statement, ``sign --require-evidence``, ``verify --json`` and ``prove --tests``.

Small apps are healed by ``codesuture run`` (a subprocess, as a developer would); the
capture's rules (redaction, size cap, values pickle refuses) are also checked in
process on :func:`codesuture.runtime.capture.capture`. The ``crashes``-marked test runs
repro + proof + signing on every shared real crash case (../shared/crashes; skipped
with a message when it is absent), in the case venvs of tests/crash_venvs.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

from heal_helpers import PY, TAG, Proc, clean_env, cli, heal, overlays_in, run, snapshot, write

from codesuture.overlay.names import stem_for
from codesuture.patch.spec import GuardSpec, PatchRecord
from codesuture.review import prove as prove_mod
from codesuture.review import repro
from codesuture.runtime import capture

# --- a small app -------------------------------------------------------------------------

PRICES = """
class Item:
    def __init__(self, name, price):
        self.name, self.price = name, price


def total(items, discount=None, bonus=()):
    s = 0
    for it in items:
        s += it.price
    return s - discount.amount + len(bonus)
"""

MAIN = """
from shop.prices import Item, total
print("RESULT", total([Item("a", 2), Item("b", 3)], None, None))
"""


def make_shop(root: Path) -> Path:
    """An app (pyproject.toml, package shop, main.py) whose run crashes twice in
    shop.prices.total: ``discount.amount`` on None, then ``len(bonus)`` with bonus None
    (the first guard yields 0, typed by its use in ``s - ...``, so the second crash is a
    separate site reached only once the first is patched)."""
    write(root / "pyproject.toml", "[project]\nname = 'shop'\n")
    write(root / "shop" / "__init__.py", "")
    write(root / "shop" / "prices.py", PRICES)
    return write(root / "main.py", MAIN)


def _sidecar(store: Path) -> Path:
    (meta,) = [p for p in store.glob("*.json") if not p.name.endswith(".dsse.json") and p.name != "overlays.manifest.dsse.json"]
    return meta


@pytest.fixture(scope="module")
def keypair(tmp_path_factory) -> tuple[Path, Path]:
    """(private key, trust root folder), one pair for the module."""
    tmp = tmp_path_factory.mktemp("repro-keys")
    priv, keys = tmp / "secret" / "k.key", tmp / "keys"
    r = cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=tmp)
    assert r.returncode == 0, str(r)
    return priv, keys


#: repro capture is opt-in
CAPTURE = {"CODESUTURE_REPRO": "1"}
#: pytest without third-party plugins (hypothesis alone costs seconds per start)
FAST = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _pytest(test: Path, *boot_store: Path) -> Proc:
    """The generated test run by hand: plain, or under boot with the store."""
    pre = [PY, "-m", "codesuture.boot", "--overlays", str(boot_store[0]), "--no-heal"] if boot_store else [PY]
    return run([*pre, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", str(test)], test.parent,
               clean_env(**FAST))


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, Path]:
    """(app, store) after ``codesuture run main.py``: one overlay, two patches in total."""
    app = tmp_path / "app"
    main = make_shop(app)
    store = app / "overlays"
    r = heal(main, store, env=clean_env(**CAPTURE))
    assert r.returncode == 0 and r.results() == ["RESULT 5"], str(r)
    assert len(overlays_in(store)) == 1, str(r)
    return app, store


# --- the whole path on the small app -----------------------------------------------------

def test_repro_proof_is_signed_and_required(shop, keypair):
    app, store = shop
    (overlay,) = store.glob("*.overlay")
    stem = overlay.name[: -len(".overlay")]
    captures = sorted((store / (stem + ".repro")).iterdir())
    assert [p.suffix for p in captures] == [".json", ".pkl", ".json", ".pkl"], captures
    assert all(p.stat().st_mode & 0o077 == 0 for p in captures), "captures hold live data: owner-only files"

    out = app / "repro_tests"
    r = cli("repro", store, "-o", out, "--prove", cwd=app)
    assert r.returncode == 0, str(r)
    tests = sorted(out.glob("test_repro_*.py"))
    assert len(tests) == 2, str(r)
    assert r.stdout.count("proved total") == 2 and "NOT proved" not in r.stdout, str(r)

    # By hand, as the test's docstring says: without the overlay the first patch's test
    # fails with the original AttributeError; under boot with the store it passes.
    (first,) = [t for t in tests if "ORIGINAL = 'builtins.AttributeError'" in t.read_text()]
    plain = _pytest(first)
    assert plain.returncode == 1 and "raised the original AttributeError again" in plain.stdout, str(plain)
    booted = _pytest(first, store)
    assert booted.returncode == 0 and "1 passed" in booted.stdout, str(booted)
    assert "python -m pytest" in first.read_text() and "codesuture.boot --overlays" in first.read_text()

    meta = json.loads(_sidecar(store).read_text())
    proofs = [p["evidence"]["proof"] for p in meta["patches"]]
    digests = {t.name: hashlib.sha256(t.read_bytes()).hexdigest() for t in tests}
    for proof in proofs:
        assert proof["passed"] is True and proof["with"] == "passed", proof
        assert proof["test_sha256"] == digests[proof["test"]]
        assert proof["overlay_sha256"] == hashlib.sha256(overlay.read_bytes()).hexdigest()
        assert proof["interpreter"]["cache_tag"] == TAG
    # the second patch (+ None) is only reached once the first is patched: its
    # "without" run is the store minus that patch, and says so
    assert sorted(p["without"].split(" (")[0] for p in proofs) == ["raised AttributeError", "raised TypeError"], proofs
    assert any("store minus this patch" in p["without"] for p in proofs)

    # sign --require-evidence: the proof goes into the signed Statement
    priv, keys = keypair
    r = cli("sign", "--require-evidence", "--key", priv, store, cwd=app)
    assert r.returncode == 0, str(r)
    envelope = json.loads((store / (stem + ".dsse.json")).read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    signed = [p["evidence"]["proof"] for p in statement["predicate"]["patches"]]
    assert signed == proofs

    # verify --json shows it
    r = cli("verify", "--json", "--keys", keys, store, cwd=app)
    assert r.returncode == 0, str(r)
    report = json.loads(r.stdout)
    (entry,) = [x for x in report["results"] if x["path"].endswith(".overlay")]
    assert [p["evidence"]["proof"] for p in entry["patches"]] == proofs
    assert {p["qualname"] for p in entry["patches"]} == {"total"}

    # the proof removed from the sidecar: --require-evidence refuses, naming the overlay,
    # and nothing is signed
    meta["patches"][1]["evidence"].pop("proof")
    _sidecar(store).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    before = snapshot(store)
    r = cli("sign", "--require-evidence", "--key", priv, store, cwd=app)
    assert r.returncode == 1, str(r)
    assert f"{stem}.overlay: patch total (line 10" in r.stderr and "has no repro proof" in r.stderr, str(r)
    assert "nothing signed" in r.stderr, str(r)
    assert snapshot(store) == before


def test_repro_function_filter_and_failed_proof_is_refused(shop, keypair):
    """--function picks patches; a proof that did not pass is recorded (passed false)
    and refused by sign --require-evidence with both outcomes in the message."""
    app, store = shop
    r = cli("repro", store, "--function", "nothing_like_it", "-o", app / "t", cwd=app)
    assert r.returncode == 1 and "no patches of nothing_like_it" in r.stderr, str(r)
    r = cli("repro", store, "--function", "total", "-o", app / "t", cwd=app)
    assert r.returncode == 0 and len(list((app / "t").glob("*.py"))) == 2, str(r)
    # proof runs with tampered captures: each test refuses its arguments, so no run
    # reaches the call and no proof passes; the failed proofs are recorded
    tests, _ = repro.write_tests(str(store), str(app / "t"), "total")
    for t in tests:
        text = Path(t.path).read_text()
        Path(t.path).write_text(re.sub(r"INPUTS_SHA256 = '[0-9a-f]+'", "INPUTS_SHA256 = '" + "0" * 64 + "'", text))
    proofs = repro.prove(tests, PY)
    assert len(proofs) == 2
    for proof in proofs:
        assert not proof.passed and proof.without.startswith("error") and proof.with_.startswith("error"), proof
        assert proof.evidence is not None and proof.evidence["passed"] is False
    priv, _ = keypair
    r = cli("sign", "--require-evidence", "--key", priv, store, cwd=app)
    assert r.returncode == 1 and "its repro proof did not pass" in r.stderr, str(r)


# --- a script's own function, an argument pickle refuses: the program is the repro ------

LIB = """
def report(lock, d):
    with lock:
        return d["b"]
"""

SCRIPT = """
import sys
import threading

from lib import report


def local(d):
    return d["missing"]


if sys.argv[1] == "local":
    print("RESULT", local({}))
else:
    print("RESULT", report(threading.Lock(), {"a": 1}))
"""


def test_program_repro_for_script_functions_and_unpicklable_arguments(tmp_path):
    app = tmp_path / "app"
    write(app / "lib.py", LIB)
    main = write(app / "main.py", SCRIPT)
    store = app / "overlays"
    for arg in ("local", "lib"):
        r = heal(main, store, args=(arg,), env=clean_env(**CAPTURE))
        assert r.returncode == 0, str(r)
    assert len(overlays_in(store)) == 2
    found, missing = repro.read_captures(str(store))
    assert not missing and len(found) == 2
    lib = next(c for c in found if c.descriptor["module"] == "lib")
    lock, d = lib.descriptor["parameters"]
    assert lock["status"] == "not capturable" and "lock" in lock["reason"].lower() and lock["repr"], lock
    assert d["status"] == "captured" and lib.data is None
    assert lib.descriptor["program"]["argv"] == ["lib"] and lib.descriptor["program"]["kind"] == "script"

    out = app / "t"
    r = cli("repro", store, "-o", out, "--prove", cwd=app)
    assert r.returncode == 0, str(r)
    assert r.stdout.count("runs the program") == 2, str(r)
    assert r.stdout.count("proved ") == 2 and "NOT proved" not in r.stdout, str(r)
    withouts = sorted(p["evidence"]["proof"]["without"] for m in store.glob("*.json")
                      if not m.name.endswith(".dsse.json") for p in json.loads(m.read_text())["patches"])
    assert withouts == ["raised KeyError (the original) with the store minus this patch"] * 2


# --- capture rules: redaction, size cap, values pickle refuses ----------------------------

SECRET = "hunter2-s3cr3t"

REDACT_LIB = """
def login(user, password, **extra):
    return (user, len(password), extra["missing"])
"""

REDACT_MAIN = f"""
import sys
from auth import login
print("RESULT", login({{"name": "a"}}, "{SECRET}", session_token="{SECRET}", other=1))
"""


def test_redaction_keeps_secrets_off_disk(tmp_path):
    app = tmp_path / "app"
    write(app / "auth.py", REDACT_LIB)
    main = write(app / "main.py", REDACT_MAIN)
    store = app / "overlays"
    r = heal(main, store, args=("--api-key", SECRET, f"--password={SECRET}", "plain"), env=clean_env(**CAPTURE))
    assert r.returncode == 0, str(r)
    (c,) = repro.read_captures(str(store))[0]
    params = {p["name"]: p for p in c.descriptor["parameters"]}
    assert params["user"]["status"] == "captured"
    assert params["password"]["status"] == "redacted" and "type" not in params["password"]
    assert params["extra"]["status"] == "redacted" and params["extra"]["keys"] == ["session_token"]
    assert c.data is None
    assert c.descriptor["program"]["argv"] == ["--api-key", "<redacted>", "--password=<redacted>", "plain"]
    for f in store.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    # nothing to call it with, and the argv was redacted: the test skips and says why
    r = cli("repro", store, "-o", app / "t", "--prove", cwd=app)
    assert r.returncode == 1 and "skips: arguments not captured: password: redacted" in r.stdout, str(r)
    assert "without the overlay: skipped" in r.stdout and "NOT proved" in r.stdout, str(r)
    assert SECRET not in "".join(p.read_text() for p in (app / "t").glob("*.py"))


def _crash(fn, *args, **kwargs) -> BaseException:
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no crash")


def _record(fn) -> PatchRecord:
    code = fn.__code__
    return PatchRecord(module=fn.__module__, qualname=code.co_qualname, firstlineno=code.co_firstlineno, offset=10,
                       opname="X", line=code.co_firstlineno + 1, expression="", exception="TypeError: x",
                       guard=GuardSpec("null_guard"))


def _capture(tmp_path: Path, monkeypatch, fn, *args, env: dict[str, str] | None = None, **kwargs) -> dict:
    monkeypatch.setenv("CODESUTURE_REPRO", "1")
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    exc = _crash(fn, *args, **kwargs)
    overlay = tmp_path / "store" / (stem_for(fn.__module__, "ab" * 32) + ".overlay")
    overlay.parent.mkdir(exist_ok=True)
    out = capture.capture(exc, fn.__code__, _record(fn), fn.__module__, __file__, str(overlay))
    assert out is not None
    return json.loads(Path(out).read_text())


def needs(items, *rest, limit, **opts):
    return items[0] + None


def test_capture_parameters_in_order_with_star_args(tmp_path, monkeypatch):
    d = _capture(tmp_path, monkeypatch, needs, [1, 2], "x", limit=3, flag=True)
    assert [(p["name"], p["kind"], p["status"]) for p in d["parameters"]] == [
        ("items", "positional", "captured"), ("limit", "keyword_only", "captured"),
        ("rest", "var_positional", "captured"), ("opts", "var_keyword", "captured")]
    pkl = next((tmp_path / "store").glob("*.repro/*.pkl"))
    assert pkl.name == capture.site_name("needs", d["firstlineno"], 10) + ".pkl"
    import pickle

    assert pickle.loads(pkl.read_bytes()) == {"args": [[1, 2], "x"], "kwargs": {"limit": 3, "flag": True}}
    assert d["arguments"]["sha256"] == hashlib.sha256(pkl.read_bytes()).hexdigest()
    assert d["callable"] is True and d["kind"] == "function" and d["exception_type"] == "builtins.TypeError"


def test_capture_size_cap(tmp_path, monkeypatch):
    big = list(range(100_000))
    d = _capture(tmp_path, monkeypatch, needs, big, limit=1, env={"CODESUTURE_REPRO_MAX_BYTES": "2048"})
    params = {p["name"]: p for p in d["parameters"]}
    assert params["items"]["status"] == "too large" and "2048" in params["items"]["reason"]
    assert params["limit"]["status"] == "captured"
    assert d["arguments"] is None and not list((tmp_path / "store").glob("*.repro/*.pkl"))
    with pytest.raises(capture._TooLarge):
        capture.dumps_capped(big, 2048)
    # under the cap it is kept
    d = _capture(tmp_path, monkeypatch, needs, big[:10], limit=1)
    assert d["arguments"]["bytes"] < 2048


def test_capture_not_capturable(tmp_path, monkeypatch):
    lock = threading.Lock()
    d = _capture(tmp_path, monkeypatch, needs, [lock], limit=lambda: 1)
    params = {p["name"]: p for p in d["parameters"]}
    assert params["items"]["status"] == "not capturable" and "lock" in params["items"]["reason"]
    assert "lock" in params["items"]["repr"].lower()
    assert params["limit"]["status"] == "not capturable" and "<lambda>" in params["limit"]["repr"]
    assert d["arguments"] is None


def test_crash_off_the_main_thread_is_not_rerun_as_a_program(tmp_path, monkeypatch):
    """Without the arguments, a crash in a request or worker thread gets no program
    repro: running the program again would start the server."""
    # The program is a script (whatever started this test process: pytest's own
    # ``python -m pytest``, or an xdist worker started with ``python -c``).
    main = types.ModuleType("__main__")
    main.__file__ = str(tmp_path / "server.py")
    monkeypatch.setitem(sys.modules, "__main__", main)
    got: dict = {}
    worker = threading.Thread(target=lambda: got.update(d=_capture(tmp_path, monkeypatch, needs, [threading.Lock()],
                                                                   limit=1)))
    worker.start()
    worker.join()
    d = got["d"]
    assert d["program"]["main_thread"] is False
    by, why = repro._how(repro.Capture(str(tmp_path), d["stem"], None, _record(needs), d, None))
    assert by == "none" and "outside the program's main thread" in why, why
    d = _capture(tmp_path, monkeypatch, needs, [threading.Lock()], limit=1)  # the same crash on the main thread
    assert repro._how(repro.Capture(str(tmp_path), d["stem"], None, _record(needs), d, None))[0] == "program"


def test_capture_off_and_hostile_repro_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESUTURE_REPRO", "0")
    exc = _crash(needs, [1], limit=1)
    overlay = tmp_path / (stem_for(__name__, "cd" * 32) + ".overlay")
    assert capture.capture(exc, needs.__code__, _record(needs), __name__, __file__, str(overlay)) is None
    assert not list(tmp_path.iterdir())
    # a planted <stem>.repro link is not followed: nothing is written through it
    monkeypatch.setenv("CODESUTURE_REPRO", "1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / (overlay.name[: -len(".overlay")] + ".repro")).symlink_to(elsewhere)
    assert capture.capture(exc, needs.__code__, _record(needs), __name__, __file__, str(overlay)) is None
    assert not list(elsewhere.iterdir())


def test_capture_is_opt_in(tmp_path):
    """Off by default (arguments are users' data): a heal writes no .repro folder."""
    from codesuture import settings

    for mode in ("dev", "prod"):
        assert settings.load({}, {"CODESUTURE_MODE": mode, "CODESUTURE_STATE_DIR": str(tmp_path)}).repro is False
    s = settings.load({}, {"CODESUTURE_REPRO": "1", "CODESUTURE_STATE_DIR": str(tmp_path)})
    assert s.repro is True and s.repro_max_bytes == 65536 and "*password*" in s.repro_redact
    app = tmp_path / "app"
    main = make_shop(app)
    r = heal(main, app / "overlays")
    assert r.returncode == 0 and len(overlays_in(app / "overlays")) == 1, str(r)
    assert not list((app / "overlays").glob("*.repro")), "captured without being asked to"
    r = cli("repro", app / "overlays", "-o", app / "t", cwd=app)
    assert r.returncode == 1 and "no capture (healed with repro capture off" in r.stderr, str(r)


def test_redact_argv_and_summary_counts():
    assert capture.redact_argv(["--auth-token", "x", "--user=a", "--secret=b", "-k", "v"], ["*token*", "*secret*"]) == (
        ["--auth-token", "<redacted>", "--user=a", "--secret=<redacted>", "-k", "v"], True)
    assert prove_mod.summary_counts("...\n3 passed, 1 failed, 2 errors in 0.12s\n") == {"passed": 3, "failed": 1, "errors": 2}
    assert prove_mod.summary_counts("== 1 failed, 4 passed, 1 skipped in 1.0s ==") == {"failed": 1, "passed": 4, "skipped": 1}
    assert prove_mod.summary_counts("no summary here") == {}


# --- prove --tests ------------------------------------------------------------------------

APP_TESTS = """
import pytest
from shop.prices import Item, total


def test_total_with_discount():
    class D:
        amount = 1
    assert total([Item("a", 2)], D()) == 1


def test_none_discount_is_an_error():
    with pytest.raises(AttributeError):
        total([Item("a", 2)], None)
"""


def test_prove_tests_flags_a_regression(shop, keypair):
    app, store = shop
    write(app / "tests" / "test_prices.py", APP_TESTS)
    r = cli("prove", "--tests", "pytest -q tests", store, cwd=app, env=clean_env(**FAST))
    assert r.returncode == 1, str(r)
    assert "without the overlays: 2 passed (exit 0)" in r.stdout, str(r)
    assert "with the overlays:    1 passed, 1 failed (exit 1)" in r.stdout, str(r)
    assert "REGRESSION" in r.stderr and "test_none_discount_is_an_error" in r.stderr, str(r)
    meta = json.loads(_sidecar(store).read_text())
    for p in meta["patches"]:
        tests = p["evidence"]["tests"]
        assert tests["without"]["passed"] == 2 and tests["with"]["failed"] == 1 and tests["regressed"] == 1, tests
        assert tests["command"] == "pytest -q tests"
    # any other command: the booted run loads the overlays through the start-up hook in
    # every Python it starts; counts from the summary line
    r = cli("prove", "--no-record", "--tests", f"sh -c '{PY} -m pytest -q tests'", store, cwd=app,
            env=clean_env(**FAST))
    assert r.returncode == 1 and "2 passed without the overlays, 1 with them" in r.stderr, str(r)
    # the proof alone would pass, the tests' regression still refuses it
    assert cli("repro", store, "-o", app / "t", "--prove", cwd=app).returncode == 0
    priv, _ = keypair
    r = cli("sign", "--require-evidence", "--key", priv, store, cwd=app)
    assert r.returncode == 1 and "the app's tests regressed with the overlays" in r.stderr, str(r)

    # a test suite the overlays do not break: exit 0, counts recorded
    (app / "tests" / "test_prices.py").write_text(APP_TESTS.split("def test_none")[0])
    r = cli("prove", "--tests", f"{PY} -m pytest -q tests", store, cwd=app, env=clean_env(**FAST))
    assert r.returncode == 0 and "REGRESSION" not in r.stderr, str(r)
    assert "without the overlays: 1 passed" in r.stdout and "with the overlays:    1 passed" in r.stdout, str(r)
    r = cli("sign", "--require-evidence", "--key", priv, store, cwd=app)
    assert r.returncode == 0, str(r)


# --- every shared crash case ---------------------------------------------------------------

from crash_venvs import SKIP_MSG, VenvError, case_venv, load_cases  # noqa: E402

SHARED = load_cases(repo=False)
REPORT = os.environ.get("CODESUTURE_REPRO_REPORT")


def _vrun(vpy: Path, args: list, cwd: Path, timeout: float = 600,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(vpy), "-m", "codesuture", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=env or clean_env(**FAST), timeout=timeout)


def _show(p: subprocess.CompletedProcess[str]) -> str:
    return f"$ {' '.join(map(str, p.args))}\n-- rc {p.returncode}\n-- stdout\n{p.stdout}-- stderr\n{p.stderr}"


@pytest.mark.crashes
@pytest.mark.parametrize("case", SHARED or [None], ids=[c.id for c in SHARED] or ["<no shared folder>"])
def test_repro_proof_on_shared_crash(case, crash_venv_dir, keypair, tmp_path):
    """Heal the case, then: its repro test fails without the overlay and passes with it
    (codesuture repro --prove), the signed Statement carries that proof, verify --json
    shows it, and sign --require-evidence refuses the overlay once the proof is removed."""
    if case is None:
        pytest.skip(SKIP_MSG)
    reason = case.skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        vpy = case_venv(case, crash_venv_dir)
    except VenvError as exc:
        pytest.fail(str(exc))
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy2(case.trigger, work / "trigger.py")
    store = work / "overlays"
    row = {"case": case.id, "python": "%d.%d" % sys.version_info[:2]}
    healed = _vrun(vpy, ["run", "--overlays", store, "trigger.py"], work, env=clean_env(**CAPTURE, **FAST))
    if healed.returncode != 0 and "decides control flow" in healed.stderr:  # refused by design (issue 12)
        pytest.xfail(f"{case.id}: refused by the value-flow rule (fail closed): a default would decide a branch")
    # A run with a side effect before its crash is healed for the next run, not replayed.
    assert healed.returncode == 0 or "; not replayed: " in healed.stderr, _show(healed)
    names = [n for n in overlays_in(store) if n.startswith(f"{case.module}.{TAG}.")]
    assert names, _show(healed)
    stem = names[0][: -len(".overlay")]

    proved = _vrun(vpy, ["repro", store, "-o", work / "repro", "--prove"], work)
    meta_path = store / (stem + ".json")
    patches = json.loads(meta_path.read_text())["patches"]
    proofs = [p["evidence"].get("proof") for p in patches]
    row.update(patches=len(patches), by=",".join(sorted({str((p or {}).get("by")) for p in proofs})),
               fails_without=all(p and "(the original)" in p["without"] for p in proofs),
               passes_with=all(p and p["with"] == "passed" for p in proofs))
    try:
        assert proved.returncode == 0, _show(proved)
        assert all(p and p["passed"] for p in proofs), (proofs, _show(proved))

        priv, keys = keypair
        signed = _vrun(vpy, ["sign", "--require-evidence", "--key", priv, store], work)
        assert signed.returncode == 0, _show(signed)
        envelope = json.loads((store / (stem + ".dsse.json")).read_text())
        statement = json.loads(base64.b64decode(envelope["payload"]))
        assert [p["evidence"]["proof"] for p in statement["predicate"]["patches"]] == proofs
        verified = _vrun(vpy, ["verify", "--json", "--keys", keys, store], work)
        assert verified.returncode == 0, _show(verified)
        entry = next(r for r in json.loads(verified.stdout)["results"] if r["path"].endswith(stem + ".overlay"))
        assert [p["evidence"]["proof"] for p in entry["patches"]] == proofs
        row["proof_signed"] = True

        meta = json.loads(meta_path.read_text())
        meta["patches"][0]["evidence"].pop("proof")
        meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        refused = _vrun(vpy, ["sign", "--require-evidence", "--key", priv, store], work)
        assert refused.returncode == 1 and f"{stem}.overlay: patch" in refused.stderr, _show(refused)
        assert "has no repro proof" in refused.stderr, _show(refused)
        row["refused_without_proof"] = True
    finally:
        if REPORT:
            with open(REPORT, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
