"""explain / audit / rollback, on a folder, a signed folder and a bundle, and in process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from heal_helpers import REPO, as_data, boot, clean_env, cli, heal, overlays_in, snapshot

EXAMPLE = REPO / "examples" / "inventory"


@pytest.fixture
def healed(tmp_path: Path) -> tuple[Path, Path]:
    """(app, store): the inventory example healed once (one overlay, stock.py, with a
    key_guard in reorder_note and a null_guard in supplier_name)."""
    app = tmp_path / "app"
    shutil.copytree(EXAMPLE, app)
    ov = tmp_path / "ov"
    r = heal(app / "app.py", ov)
    assert r.returncode == 0, str(r)
    assert len(overlays_in(ov)) == 1, str(r)
    return app, ov


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    """(private key, trust root folder)."""
    priv, keys = tmp_path / "secret" / "k.key", tmp_path / "keys"
    r = cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=tmp_path)
    assert r.returncode == 0, str(r)
    return priv, keys


def _bundle(app: Path, ov: Path, priv: Path, out: Path) -> Path:
    r = cli("bundle", "create", ov, "-o", out, "--key", priv, "--app-root", app, cwd=app)
    assert r.returncode == 0, str(r)
    return out


def test_explain_lists_every_patch(healed):
    _, ov = healed
    (overlay,) = ov.glob("*.overlay")
    r = cli("explain", "--json", overlay, cwd=ov)
    assert r.returncode == 0, str(r)
    (doc,) = json.loads(r.stdout)
    assert doc["module"] == "stock" and doc["signed"] == [] and doc["origin"] == "app:stock.py"
    assert doc["metadata_from"].startswith("UNSIGNED")
    assert [(p["qualname"], p["guard"]["guard"]) for p in doc["patches"]] == [
        ("reorder_note", "key_guard"), ("supplier_name", "null_guard")]
    text = cli("explain", overlay, cwd=ov).stdout
    assert "key_guard on `item[\"note\"]`" in text and "UNSIGNED" in text


def test_explain_function_filter_and_folder(healed):
    _, ov = healed
    r = cli("explain", "--json", "--function", "supplier_name", ov, cwd=ov)
    assert r.returncode == 0, str(r)
    (doc,) = json.loads(r.stdout)
    assert [p["qualname"] for p in doc["patches"]] == ["supplier_name"]
    none = cli("explain", "--function", "no_such_function", ov, cwd=ov)
    assert none.returncode == 1 and "no overlays with patches of no_such_function" in none.stderr, str(none)


def test_explain_missing_metadata_is_one_clear_error(healed):
    _, ov = healed
    (overlay,) = ov.glob("*.overlay")
    overlay.with_suffix(".json").unlink()
    r = cli("explain", overlay, cwd=ov)
    assert r.returncode == 1
    assert "metadata file is missing" in r.stderr and overlay.stem in r.stderr


def test_audit_ok_then_stale(healed):
    app, ov = healed
    # Origins are relative to the app root: found from the app's directory...
    r = cli("audit", ov, cwd=app)
    assert r.returncode == 0 and r.stdout.startswith("ok"), str(r)
    assert "2 patch(es)" in r.stdout
    # ... or through --app-root from anywhere else.
    r = cli("audit", "--app-root", app, ov, cwd=ov.parent)
    assert r.returncode == 0 and r.stdout.startswith("ok"), str(r)
    (app / "stock.py").write_text((app / "stock.py").read_text() + "\n# edited\n")
    r = cli("audit", ov, cwd=app)
    assert r.returncode == 1 and r.stdout.startswith("stale"), str(r)


def test_audit_without_the_source_says_where_it_looked(healed, tmp_path):
    app, ov = healed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(str(app), str(tmp_path / "moved"))  # the app root the heal recorded is gone
    r = cli("audit", ov, cwd=elsewhere)
    assert r.returncode == 1 and r.stdout.startswith("source not found"), str(r)
    assert "app:stock.py is not found here" in r.stdout and "--app-root" in r.stdout, str(r)


def test_audit_with_trust_root_refuses_unsigned(healed, keypair):
    app, ov = healed
    _, keys = keypair
    r = cli("audit", "--keys", keys, ov, cwd=app)
    assert r.returncode == 1 and "refused: unsigned overlay refused" in r.stdout, str(r)


def test_review_a_signed_folder_and_its_bundle(healed, keypair, tmp_path):
    """explain reads the signed Statement (verified with --keys); audit --keys counts
    every patch and sees a stale source, on the folder and on its bundle."""
    app, ov = healed
    priv, keys = keypair
    signed = cli("sign", "--key", priv, "--app-root", app, ov, cwd=app)
    assert signed.returncode == 0, str(signed)
    bundle = _bundle(app, ov, priv, tmp_path / "deploy.cso")
    for target in (ov, bundle):
        r = cli("explain", "--json", "--keys", keys, target, cwd=app)
        assert r.returncode == 0, str(r)
        (doc,) = json.loads(r.stdout)
        assert doc["metadata_from"].startswith("signed Statement (verified"), doc["metadata_from"]
        assert [p["qualname"] for p in doc["patches"]] == ["reorder_note", "supplier_name"]
        a = cli("audit", "--keys", keys, target, cwd=app)
        assert a.returncode == 0 and a.stdout.startswith("ok"), str(a)
        assert "2 patch(es), signed: set" in a.stdout, str(a)
    (app / "stock.py").write_text((app / "stock.py").read_text() + "\n# edited\n")
    for target in (ov, bundle):
        a = cli("audit", "--keys", keys, target, cwd=app)
        assert a.returncode == 1 and a.stdout.startswith("stale"), str(a)


def test_rollback_needs_a_selection(healed):
    app, ov = healed
    before = snapshot(ov)
    r = cli("rollback", ov, cwd=app)
    assert r.returncode == 2 and "--module NAME, --function NAME or --all" in r.stderr, str(r)
    assert snapshot(ov) == before


def test_rollback_dry_run_changes_nothing(healed):
    app, ov = healed
    before = snapshot(ov)
    r = cli("rollback", "--dry-run", "--function", "supplier_name", ov, cwd=app)
    assert r.returncode == 0 and r.stdout.startswith("would take out supplier_name from "), str(r)
    assert snapshot(ov) == before


def test_rollback_one_function_then_all(healed):
    app, ov = healed
    r = cli("rollback", "--function", "supplier_name", ov, cwd=app)
    assert r.returncode == 0 and r.stdout.startswith("took out supplier_name from "), str(r)
    assert "rewritten unsigned" in r.stdout and "recorded as withdrawn" in r.stdout, str(r)
    (doc,) = json.loads(cli("explain", "--json", ov, cwd=app).stdout)
    assert [p["qualname"] for p in doc["patches"]] == ["reorder_note"]
    run = boot(app / "app.py", ov)
    # That guard is gone (AttributeError again); the key_guard stays (no KeyError).
    assert run.returncode == 1 and "AttributeError" in run.stderr and "KeyError" not in run.stderr, str(run)
    r = cli("rollback", "--all", ov, cwd=app)
    assert r.returncode == 0 and "took out the whole overlay" in r.stdout, str(r)
    assert not overlays_in(ov)


def test_rollback_some_patches_without_the_source_is_refused(healed, tmp_path):
    app, ov = healed
    before = snapshot(ov)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(str(app), str(tmp_path / "moved"))  # the app root the heal recorded is gone
    r = cli("rollback", "--function", "supplier_name", ov, cwd=elsewhere)
    assert r.returncode == 1 and "roll back the whole overlay" in r.stderr, str(r)
    assert snapshot(ov) == before


def test_rollback_on_a_bundle_withdraws_on_this_host(healed, keypair, tmp_path):
    """A bundle cannot be rewritten: rollback --module withdraws the overlay on this
    host (state dir), the bundle's bytes stay, and boot refuses the overlay from then
    on; another host (another state dir) still loads it."""
    app, ov = healed
    priv, keys = keypair
    bundle = _bundle(app, ov, priv, tmp_path / "deploy.cso")
    shutil.rmtree(ov)
    state = tmp_path / "host-state"

    env = clean_env(CODESUTURE_STATE_DIR=str(state))
    loads = boot(app / "app.py", bundle, "--keys", str(keys), env=env)
    assert loads.returncode == 0 and "Traceback" not in loads.stderr, str(loads)
    data = bundle.read_bytes()
    dry = cli("rollback", "--dry-run", "--module", "stock", bundle, cwd=app, env=env)
    assert dry.returncode == 0 and dry.stdout.startswith("would take out"), str(dry)
    assert boot(app / "app.py", bundle, "--keys", str(keys), env=env).returncode == 0
    r = cli("rollback", "--module", "stock", bundle, cwd=app, env=env)
    assert r.returncode == 0 and "recorded as withdrawn" in r.stdout, str(r)
    assert bundle.read_bytes() == data
    refused = boot(app / "app.py", bundle, "--keys", str(keys), env=env)
    assert refused.returncode == 1 and "withdrawn" in refused.stderr, str(refused)
    other_host = boot(app / "app.py", bundle, "--keys", str(keys),
                      env=clean_env(CODESUTURE_STATE_DIR=str(tmp_path / "other-host")))
    assert other_host.returncode == 0, str(other_host)


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
    assert as_data(rb_mod.get, {}) is None
    assert healer.rollback() == 1
    assert rb_mod.get.__code__ is original
    with pytest.raises(KeyError):
        rb_mod.get({})
