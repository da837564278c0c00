"""The review side for a newcomer, through the real command line:

* loud failures: a command that did nothing a user asked for exits non-zero (audit of a
  folder that is not a store, sign of a folder with no overlays, bundle create of an
  empty folder, explain/rollback/suggest/rebuild with nothing to do, prove when the
  test command prints no summary), with ``--json`` errors as JSON;
* one settings source: ``--keys`` takes a key file or a folder everywhere, and the
  review commands read ``CODESUTURE_KEYS`` and ``[tool.codesuture]`` as boot does;
  commands that write host state take ``--state-dir`` and name the file they wrote;
* the heal records its app root in the store: sign, audit, suggest find the sources
  from any directory without ``--app-root``;
* ``codesuture doctor`` says what boot would do, and where each setting came from.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from heal_helpers import PY, REPO, clean_env, cli, heal, overlays_in, run, snapshot, write

EXAMPLE = REPO / "examples" / "inventory"


@pytest.fixture
def healed(tmp_path: Path) -> tuple[Path, Path]:
    """(app, store): the inventory example healed once into ``<app>/overlays``."""
    app = tmp_path / "checkout" / "app"
    shutil.copytree(EXAMPLE, app)
    ov = tmp_path / "checkout" / "overlays"
    r = heal(app / "app.py", ov)
    assert r.returncode == 0 and len(overlays_in(ov)) == 1, str(r)
    return app, ov


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    """(private key, public key file); the public key alone in its folder."""
    priv, pub = tmp_path / "secret" / "k.key", tmp_path / "trust" / "release.pem"
    r = cli("keygen", "--private-key", priv, "--public-key", pub, cwd=tmp_path)
    assert r.returncode == 0, str(r)
    return priv, pub


# --- loud failures ---------------------------------------------------------------------

def test_nothing_to_do_exits_non_zero(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    priv, pub = keypair
    empty, notstore = tmp_path / "empty", tmp_path / "notstore"
    empty.mkdir()
    write(notstore / "README.txt", "not overlays\n")
    cases = {
        ("audit", notstore): "nothing to audit",
        ("sign", "--key", priv, empty): "nothing to sign",
        ("bundle", "create", empty, "-o", tmp_path / "x.cso"): "nothing to bundle",
        ("explain", notstore): "no overlays",
        ("rollback", "--all", empty): "nothing to roll back",
        ("suggest", empty): "no patches to suggest",
        ("rebuild", "--python", sys.executable, empty): "no overlays to rebuild",
        ("verify", "--keys", pub, notstore): "no overlays",
    }
    for argv, said in cases.items():
        before = snapshot(tmp_path / "empty")
        r = cli(*argv, cwd=tmp_path, env=clean_env())
        assert r.returncode == 1 and said in (r.stderr + r.stdout), (argv, str(r))
        assert "Traceback" not in r.stderr, str(r)
        assert snapshot(tmp_path / "empty") == before  # nothing written (no signed set of 0 overlays)
    assert not (tmp_path / "x.cso").exists()
    # Asked for in so many words, an empty folder gets a signed set of none (a withdrawal).
    r = cli("sign", "--key", priv, "--allow-empty", empty, cwd=tmp_path, env=clean_env())
    assert r.returncode == 0 and (empty / "overlays.manifest.dsse.json").is_file(), str(r)


def test_json_errors_are_json(tmp_path: Path) -> None:
    notstore = tmp_path / "notstore"
    write(notstore / "README.txt", "x\n")
    for argv in (("audit", "--json", notstore), ("explain", "--json", notstore),
                 ("incidents", "--json", tmp_path / "missing.jsonl")):
        r = cli(*argv, cwd=tmp_path, env=clean_env())
        assert r.returncode == 1, str(r)
        doc = json.loads(r.stdout)
        assert doc["ok"] is False and doc["error"], doc


def test_prove_without_a_summary_fails(healed: tuple[Path, Path]) -> None:
    app, ov = healed
    before = snapshot(ov)
    r = cli("prove", ov, "--tests", f"{PY} -c print('hello')", cwd=app, env=clean_env(), timeout=300)
    assert r.returncode == 1 and "no pytest summary" in r.stderr, str(r)
    assert snapshot(ov) == before  # no evidence recorded


# --- one settings source -------------------------------------------------------------------

def test_keys_file_or_folder_and_settings(healed: tuple[Path, Path], keypair: tuple[Path, Path], tmp_path: Path) -> None:
    app, ov = healed
    priv, pub = keypair
    r = cli("sign", "--key", priv, ov, cwd=tmp_path, env=clean_env())
    assert r.returncode == 0, str(r)
    for keys in (pub, pub.parent):  # a key file or its folder
        v = cli("verify", "--keys", keys, ov, cwd=tmp_path, env=clean_env())
        assert v.returncode == 0 and v.stdout.startswith("OK "), str(v)
        b = run([PY, "-m", "codesuture.boot", "--keys", str(keys), "--overlays", str(ov), "--require-overlays",
                 str(app / "app.py")], app, clean_env())
        assert b.returncode == 0 and "does not exist" not in b.stderr, str(b)
    # CODESUTURE_KEYS, and the app's [tool.codesuture] keys, as boot reads them
    v = cli("verify", ov, cwd=tmp_path, env=clean_env(CODESUTURE_KEYS=str(pub)))
    assert v.returncode == 0 and v.stdout.startswith("OK "), str(v)
    write(tmp_path / "pyproject.toml", f'[tool.codesuture]\nkeys = "{pub.parent.name}/{pub.name}"\n')
    v = cli("verify", ov, cwd=tmp_path, env=clean_env())
    assert v.returncode == 0, str(v)
    a = cli("audit", ov, cwd=tmp_path, env=clean_env())
    assert a.returncode == 0 and "signed: " in a.stdout, str(a)
    bad = cli("verify", ov, cwd=tmp_path, env=clean_env(CODESUTURE_KEYS=""))
    assert bad.returncode == 2 and "CODESUTURE_KEYS" in bad.stderr, str(bad)


def test_state_dir_named_and_chosen(healed: tuple[Path, Path], tmp_path: Path) -> None:
    app, ov = healed
    copy = tmp_path / "copy"
    shutil.copytree(ov, copy)
    mine = tmp_path / "mystate"
    r = cli("rollback", "--all", "--state-dir", mine, copy, cwd=app, env=clean_env())
    assert r.returncode == 0, str(r)
    assert f"recorded as withdrawn in {mine / 'state.json'}" in r.stdout, str(r)
    assert (mine / "state.json").is_file()
    # the original store still loads on a host whose state is elsewhere
    b = run([PY, "-m", "codesuture.boot", "--overlays", str(ov), "-v", str(app / "app.py")], app, clean_env())
    assert "withdrawn" not in b.stderr and "loaded overlay" in b.stderr, str(b)


# --- the heal's app root -------------------------------------------------------------------

def test_review_finds_sources_from_anywhere(healed: tuple[Path, Path], keypair: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    app, ov = healed
    priv, _ = keypair
    assert (ov / ".codesuture-app-root").read_text() == "../app\n"  # relative: a copied checkout is its own
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    a = cli("audit", ov, cwd=elsewhere, env=clean_env())
    assert a.returncode == 0 and "not found" not in a.stdout, str(a)
    s = cli("suggest", ov, cwd=elsewhere, env=clean_env())
    assert s.returncode == 0 and "stock.py" in s.stdout, str(s)
    g = cli("sign", "--key", priv, ov, cwd=elsewhere, env=clean_env())
    assert g.returncode == 0 and "signed " in g.stdout, str(g)
    # a moved checkout: the recorded root is gone, one clear message naming --app-root
    shutil.move(str(app), str(tmp_path / "moved"))
    m = cli("audit", ov, cwd=elsewhere, env=clean_env())
    assert m.returncode == 1 and "--app-root" in m.stdout, str(m)
    ok = cli("audit", "--app-root", tmp_path / "moved", ov, cwd=elsewhere, env=clean_env())
    assert ok.returncode == 0, str(ok)


# --- doctor -----------------------------------------------------------------------------------

def test_doctor(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    _, pub = keypair
    write(tmp_path / "pyproject.toml", "[tool.codesuture]\nretries = 5\n")
    r = cli("doctor", "--overlays", "ov", cwd=tmp_path, env=clean_env(CODESUTURE_KEYS=str(pub)))
    assert r.returncode == 0, str(r)
    out = r.stdout
    assert "mode:            prod (default: prod because of a trust root)" in out, out
    assert f"trust root:      {pub} (one public key file, 1 key(s))" in out, out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    assert lines["retries"].endswith(f"5  ({tmp_path / 'pyproject.toml'} retries)"), lines["retries"]
    assert lines["keys"].endswith("(CODESUTURE_KEYS)") and lines["overlays"].endswith("(--overlays)")
    assert lines["ttl_days"].endswith("(default)")
    assert "extras (pip install 'codesuture[NAME]'):" in out and "  cli " in out
    j = cli("doctor", "--json", cwd=tmp_path, env=clean_env())
    doc = json.loads(j.stdout)
    assert j.returncode == 0 and doc["mode"] == "dev" and doc["store"]["path"] is None, doc
    assert {f["name"] for f in doc["settings"]} >= {"mode", "overlays", "keys", "state_dir", "header"}
    bad = cli("doctor", cwd=tmp_path, env=clean_env(CODESUTURE_RETRIES="many"))
    assert bad.returncode == 2 and "CODESUTURE_RETRIES" in bad.stderr, str(bad)
    req = cli("doctor", "--require-overlays", cwd=tmp_path, env=clean_env())
    assert req.returncode == 1 and "boot would exit 78" in req.stderr, str(req)
