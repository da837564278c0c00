"""explain / audit / rollback, on disk and in process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "inventory"


def cs(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "codesuture", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def healed(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(EXAMPLE, app)
    ov = tmp_path / "ov"
    r = cs("run", "--overlays", ov, app / "app.py")
    assert r.returncode == 0, r.stderr
    return app, ov


def test_explain_lists_every_patch(healed):
    _, ov = healed
    (overlay,) = ov.glob("*.overlay")
    r = cs("explain", "--json", overlay)
    assert r.returncode == 0, r.stderr
    (doc,) = json.loads(r.stdout)
    assert doc["module"] == "stock" and doc["signed"] == []
    assert [(p["qualname"], p["guard"]["guard"]) for p in doc["patches"]] == [
        ("reorder_note", "key_guard"), ("supplier_name", "null_guard")]
    text = cs("explain", overlay).stdout
    assert "key_guard on `item[\"note\"]`" in text


def test_explain_missing_metadata_is_one_clear_error(healed):
    _, ov = healed
    (overlay,) = ov.glob("*.overlay")
    overlay.with_suffix(".json").unlink()
    r = cs("explain", overlay)
    assert r.returncode == 1
    assert "metadata file is missing" in r.stderr and overlay.stem in r.stderr


def test_audit_ok_then_stale(healed):
    app, ov = healed
    r = cs("audit", ov)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr
    (app / "stock.py").write_text((app / "stock.py").read_text() + "\n# edited\n")
    r = cs("audit", ov)
    assert r.returncode == 1 and "stale" in r.stdout


def test_audit_with_trust_root_refuses_unsigned(healed, tmp_path):
    _, ov = healed
    keys = tmp_path / "keys"
    assert cs("keygen", "--private-key", tmp_path / "k.pem", "--public-key", keys / "k.pem").returncode == 0
    r = cs("audit", "--keys", keys, ov)
    assert r.returncode == 1 and "refused: unsigned overlay refused" in r.stdout


def test_rollback_one_function_then_all(healed):
    app, ov = healed
    r = cs("rollback", "--function", "supplier_name", ov)
    assert r.returncode == 0 and "removed supplier_name" in r.stdout
    run = subprocess.run([sys.executable, "-m", "codesuture.boot", "--overlays", ov, "--no-heal", app / "app.py"],
                         capture_output=True, text=True)
    # That guard is gone (AttributeError again); the key_guard stays (no KeyError).
    assert run.returncode == 1 and "AttributeError" in run.stderr and "KeyError" not in run.stderr
    r = cs("rollback", ov)
    assert "deleted" in r.stdout and not list(ov.glob("*.overlay"))


def test_healer_rollback_restores_original_code(tmp_path, monkeypatch):
    from codesuture.runtime.healer import Healer

    (tmp_path / "rb_mod.py").write_text("def get(d):\n    return d['k']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import rb_mod

    original = rb_mod.get.__code__
    healer = Healer()
    try:
        rb_mod.get({})
    except Exception as exc:  # broad on purpose: `except KeyError` here would be EAFP, never healed
        assert healer.heal(exc) is not None
    assert rb_mod.get({}) is None
    assert healer.rollback() == 1
    assert rb_mod.get.__code__ is original
    with pytest.raises(KeyError):
        rb_mod.get({})
