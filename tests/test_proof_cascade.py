"""Proofs that isolate their patch and cannot be forged (docs/governance.md, repro).

An app whose crashes cascade across three modules (site B is reached only once site A
is healed, C only once B is): ``codesuture repro --prove`` proves all three ("without"
is the store minus that one patch, the others in place), ``sign --require-evidence``
signs, and ``verify --json`` shows the proofs and what signing checked of them. A proof
written into the sidecar by hand (no test file, a zero digest, another function's
test, an edited test) is refused. Real CLI processes throughout.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from heal_helpers import cli, clean_env, heal, overlays_in, snapshot, write

# Each function receives a context holding a lock: its arguments cannot be pickled, so
# each repro test reruns the whole program, which meets the sites in order.
CONFIG = """
def port(ctx):
    return ctx.settings["port"]
"""

NAMES = """
def host(ctx, port):
    return ctx.names.get(port).strip()
"""

LINKS = """
def url(ctx, host, port):
    return "http://" + host + ctx.suffix.lower()
"""

MAIN = """
import threading

from deploy import config, links, names


class Ctx:
    def __init__(self):
        self.lock = threading.Lock()
        self.settings = {}
        self.names = {}
        self.suffix = None


ctx = Ctx()
p = config.port(ctx)
h = names.host(ctx, p)
print("RESULT", repr(links.url(ctx, h, p)))
"""

FAST = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cascade-keys")
    priv, keys = tmp / "secret" / "k.key", tmp / "keys"
    assert cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=tmp).returncode == 0
    return priv, keys


@pytest.fixture(scope="module")
def proved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cascade app healed (three overlays, one patch each) and proved once."""
    app = tmp_path_factory.mktemp("cascade") / "app"
    write(app / "pyproject.toml", '[project]\nname = "deploy"\nversion = "0"\n')
    write(app / "deploy" / "__init__.py", "")
    write(app / "deploy" / "config.py", CONFIG)
    write(app / "deploy" / "names.py", NAMES)
    write(app / "deploy" / "links.py", LINKS)
    main = write(app / "main.py", MAIN)
    store = app / "overlays"
    r = heal(main, store, env=clean_env(CODESUTURE_REPRO="1", **FAST))
    assert r.returncode == 0 and r.results() == ["RESULT 'http://'"], str(r)
    assert len(overlays_in(store)) == 3, overlays_in(store)
    out = app / "repro_tests"
    p = cli("repro", store, "-o", out, "--prove", cwd=app, env=clean_env(**FAST), timeout=600)
    assert p.returncode == 0, str(p)
    return {"app": app, "store": store, "out": out, "prove": p}  # type: ignore[dict-item]


def _proofs(store: Path) -> dict[str, dict]:
    out = {}
    for sidecar in store.glob("*.json"):
        if sidecar.name.endswith(".dsse.json"):
            continue
        for patch in json.loads(sidecar.read_text())["patches"]:
            out[patch["qualname"]] = patch["evidence"]["proof"]
    return out


def test_every_site_of_a_cascade_is_proved_without_its_own_patch_alone(proved: dict) -> None:
    r = proved["prove"]
    assert r.stdout.count("proved ") >= 3 and "NOT proved" not in r.stdout, str(r)
    proofs = _proofs(proved["store"])
    assert sorted(proofs) == ["host", "port", "url"]
    expected = {"port": "KeyError", "host": "AttributeError", "url": "AttributeError"}
    for name, proof in proofs.items():
        assert proof["passed"] is True and proof["by"] == "program", proof
        assert proof["without"].startswith(f"raised {expected[name]}") and "(the original)" in proof["without"], proof
        assert proof["without"].endswith("with the store minus this patch"), proof
        assert (proved["store"] / proof["test_path"]).resolve().is_file(), proof


def test_sign_require_evidence_signs_and_verify_json_shows_the_proofs(proved: dict, keypair: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    priv, keys = keypair
    store = tmp_path / "app" / "overlays"
    shutil.copytree(proved["app"], tmp_path / "app")
    s = cli("sign", "--require-evidence", "--key", priv, store, cwd=tmp_path / "app")
    assert s.returncode == 0, str(s)
    v = cli("verify", "--json", "--keys", keys, store, cwd=tmp_path)
    assert v.returncode == 0, str(v)
    report = json.loads(v.stdout)
    entries = [x for x in report["results"] if x["path"].endswith(".overlay")]
    assert len(entries) == 3
    for entry in entries:
        (patch,) = entry["patches"]
        proof, checked = patch["evidence"]["proof"], patch["evidence"]["proofChecked"]
        assert proof["passed"] is True and proof["without"].endswith("with the store minus this patch")
        assert checked["test_path"] == proof["test_path"] and checked["test_sha256"] == proof["test_sha256"]
        assert checked["checks"] == ["test file exists", "SHA-256 matches the proof",
                                     f"repro test of {patch['qualname']}"]
    # the Statement itself carries it (what verify read)
    [envelope] = [p for p in store.glob("*.dsse.json") if ".config." in p.name or "config." in p.name][:1]
    statement = json.loads(base64.b64decode(json.loads(envelope.read_text())["payload"]))
    assert all("proofChecked" in p["evidence"] for p in statement["predicate"]["patches"])


def _forge(store: Path, qualname: str, **changes: object) -> None:
    for sidecar in store.glob("*.json"):
        if sidecar.name.endswith(".dsse.json"):
            continue
        meta = json.loads(sidecar.read_text())
        for patch in meta["patches"]:
            if patch["qualname"] == qualname:
                proof = patch["evidence"]["proof"]
                for k, v in changes.items():
                    if v is None:
                        proof.pop(k, None)
                    else:
                        proof[k] = v
                sidecar.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
                return
    raise AssertionError(qualname)


@pytest.mark.parametrize("forgery", ["no-such-test", "zero-digest", "no-test-path", "other-functions-test",
                                     "test-edited-after-proof", "absolute-path"])
def test_a_forged_proof_is_refused(proved: dict, keypair: tuple[Path, Path], tmp_path: Path, forgery: str) -> None:
    priv, _ = keypair
    app = tmp_path / "app"
    shutil.copytree(proved["app"], app)
    store = app / "overlays"
    proofs = _proofs(store)
    if forgery == "no-such-test":
        _forge(store, "host", test_path="../repro_tests/test_repro_forged.py", test="test_repro_forged.py")
    elif forgery == "zero-digest":
        _forge(store, "host", test_sha256="0" * 64)
    elif forgery == "no-test-path":
        _forge(store, "host", test_path=None)
    elif forgery == "other-functions-test":
        _forge(store, "host", test_path=proofs["port"]["test_path"], test_sha256=proofs["port"]["test_sha256"])
    elif forgery == "test-edited-after-proof":
        test = store / proofs["host"]["test_path"]
        test.write_text(test.read_text().replace("def test_repro", "def _disabled").replace(
            "QUALNAME", "QUALNAME", 1) + "\ndef test_repro():\n    pass\n")
    else:
        _forge(store, "host", test_path=str((store / proofs["host"]["test_path"]).resolve()))
    before = snapshot(store)
    s = cli("sign", "--require-evidence", "--key", priv, store, cwd=app)
    assert s.returncode == 1 and "patch host" in s.stderr and "nothing signed" in s.stderr, str(s)
    reason = {"no-such-test": "does not exist", "zero-digest": "does not match the proof",
              "no-test-path": "names no test file", "other-functions-test": "is not a repro test of host",
              "test-edited-after-proof": "does not match the proof", "absolute-path": "names no test file"}[forgery]
    assert reason in s.stderr, str(s)
    assert snapshot(store) == before
