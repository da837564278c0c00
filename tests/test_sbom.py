"""SBOM (issue 9, item 6): each overlay records the distribution that owns its module,
the loader warns when it meets another version of it, ``codesuture sbom`` writes a
CycloneDX document validated by cyclonedx-python-lib's own validator, and ``bundle
create --sbom`` embeds it without breaking bundle verification.

In process where the real code path allows it (the healer, the writer, the loader's
``resolve``, the signer's low half, ``create_bundle``); subprocesses for a heal in a
real venv with a pip-installed wheel, ``codesuture sign`` (its rebuild check) and one
``codesuture sbom`` run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from codesuture.overlay import package as pkgmod
from codesuture.overlay.names import OVERLAY_SUFFIX, SBOM_NAME, SET_NAME
from codesuture.store.directory import DirectoryStore
from codesuture.trust.policy import LoadPolicy, admit, clear_trust_root_cache
from heal_helpers import as_data, build_wheel, clean_env, cli, make_venv, pip_install, run, write
from trust_helpers import add_key, sign_folder_raw

cyclonedx = pytest.importorskip("cyclonedx", reason="cyclonedx-python-lib is not installed (pip install -e '.[test]')")
from cyclonedx.schema import SchemaVersion  # noqa: E402
from cyclonedx.validation.json import JsonStrictValidator  # noqa: E402

DIST = "Tiny_Sbom"          # the distribution's name as its wheel spells it
NAME = "tiny-sbom"          # PEP 503 normalized
CORE = "def get(d):\n    return d['k']\n"
APP = "def get(x):\n    return x.name\n"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    """Modules, loaded-overlay records and caches of one test never reach the next."""
    from codesuture.loader.resolve import LOADED

    before = set(sys.modules)
    clear_trust_root_cache()
    pkgmod.clear_caches()
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("tinysbom", "sbomapp")):
            del sys.modules[name]
    for key in [k for k in LOADED if k.startswith(("tinysbom", "sbomapp"))]:
        del LOADED[key]
    clear_trust_root_cache()
    pkgmod.clear_caches()


def unpack_wheel(wheel: Path, site: Path) -> Path:
    """Install a pure wheel the way pip does (its files into *site*)."""
    site.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def set_installed_version(site: Path, version: str) -> None:
    """Replace the installed distribution's metadata by *version* (the module files stay)."""
    (old,) = site.glob(f"{DIST}-*.dist-info")
    new = site / f"{DIST}-{version}.dist-info"
    old.rename(new)
    meta = new / "METADATA"
    meta.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {version}", meta.read_text()))
    pkgmod.clear_caches()


def heal_in_process(tmp: Path, monkeypatch) -> tuple[Path, Path, Path]:
    """A package module (``tinysbom.core``, owned by Tiny_Sbom 1.0, in a sys.path folder
    outside the app) and an app module (``sbomapp``), both crashed and healed in this
    process into ``tmp/overlays``. Returns ``(site, app, overlays)``."""
    from codesuture.runtime.healer import Healer

    wheel = build_wheel(tmp / "dist", DIST, "1.0", {"tinysbom/__init__.py": "", "tinysbom/core.py": CORE})
    site = unpack_wheel(wheel, tmp / "site")
    app = tmp / "app"
    write(app / "pyproject.toml", '[project]\nname = "sbom-app"\n')
    write(app / "sbomapp.py", APP)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(app))
    import sbomapp
    import tinysbom.core

    overlays = tmp / "overlays"
    healer = Healer(overlays, app_root=str(app))
    for call in (lambda: tinysbom.core.get({}), lambda: sbomapp.get(None)):
        try:
            call()
        except Exception as exc:  # broad on purpose: `except KeyError` here would be EAFP, never healed
            assert healer.heal(exc) is not None
    assert as_data(tinysbom.core.get, {}) in (0, None)  # healed live (handed on as data)
    return site, app, overlays


def sidecars(overlays: Path) -> dict[str, dict]:
    return {p.name.split(".")[0]: json.loads(p.read_text()) for p in overlays.glob("*.json")
            if not p.name.endswith(".dsse.json") and p.name != SET_NAME}


def strict_validate(text: str) -> None:
    """The test's own check, with the library's validator (not the code under test)."""
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    assert error is None, f"CycloneDX 1.6 validation failed: {error}"


# --------------------------------------------------------------------- the package field

def test_normalization_rules():
    assert pkgmod.normalize_name("Tiny_Sbom") == pkgmod.normalize_name("tiny.sbom") == "tiny-sbom"
    assert pkgmod.normalize_name("Foo__Bar--baz") == "foo-bar-baz"
    assert pkgmod.normalize_version(" V1.0RC1 ") == "1.0rc1"
    assert pkgmod.normalize_version("1.0.post1") == "1.0.post1"
    assert pkgmod.normalize_version("version") == "version"  # only a 'v' before a digit goes


def test_heal_records_the_owning_distribution_and_none_for_an_app_module(tmp_path, monkeypatch):
    site, app, overlays = heal_in_process(tmp_path, monkeypatch)
    metas = sidecars(overlays)
    assert set(metas) == {"tinysbom", "sbomapp"}, metas
    assert metas["tinysbom"]["origin"] == "sys.path:tinysbom/core.py"
    assert metas["tinysbom"]["package"] == {"name": NAME, "version": "1.0"}
    assert metas["sbomapp"]["origin"] == "app:sbomapp.py"
    assert "package" not in metas["sbomapp"]
    # The model reads it back; a malformed one is a clear metadata error.
    from codesuture.errors import OverlayError
    from codesuture.overlay.model import OverlayMeta

    (core_json,) = [p for p in overlays.glob("tinysbom.*.json")]
    assert OverlayMeta.loads(core_json.read_bytes()).package == {"name": NAME, "version": "1.0"}
    bad = dict(metas["tinysbom"], package={"name": NAME})
    with pytest.raises(OverlayError, match="package must be"):
        OverlayMeta.from_json(bad)


def test_owner_reads_the_record_not_the_name(tmp_path, monkeypatch):
    """A module no RECORD lists has no owner, even beside a distribution of its name."""
    wheel = build_wheel(tmp_path / "dist", DIST, "2.0", {"tinysbom/__init__.py": "", "tinysbom/core.py": CORE})
    site = unpack_wheel(wheel, tmp_path / "site")
    stray = write(site / "tinysbom" / "stray.py", "X = 1\n")
    monkeypatch.syspath_prepend(str(site))
    assert pkgmod.owner(str(site / "tinysbom" / "core.py")) == {"name": NAME, "version": "2.0"}
    assert pkgmod.owner(str(stray)) is None
    assert pkgmod.owner(str(site / "tinysbom" / "core.py"), "app:tinysbom/core.py") is None


@pytest.mark.parametrize("via", ["unsigned", "set"])
def test_loader_warns_once_when_the_installed_version_differs(via, tmp_path, monkeypatch, caplog):
    from codesuture.loader.resolve import resolve

    site, app, overlays = heal_in_process(tmp_path, monkeypatch)
    policy = LoadPolicy()
    if via == "set":
        keys = tmp_path / "keys"
        sign_folder_raw(overlays, add_key(keys))
        policy = LoadPolicy(str(keys))
    source_path = site / "tinysbom" / "core.py"
    source = source_path.read_bytes()

    def load() -> list[str]:
        clear_trust_root_cache()
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="codesuture"):
            entries = DirectoryStore(overlays, budget=None).index()["tinysbom.core"]
            found = resolve("tinysbom.core", entries, source, str(source_path), policy)
        assert found is not None and found.meta.package == {"name": NAME, "version": "1.0"}, caplog.text
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "was made for" in r.getMessage()]

    assert load() == []  # the version it was made for: nothing to say
    set_installed_version(site, "1.1")
    warned = load()
    assert warned == [f"overlay for tinysbom.core was made for {NAME} 1.0; {NAME} 1.1 is installed (its source file "
                      "is unchanged, so it loads: review it for this version)"], warned
    assert load() == []  # once per module


# --------------------------------------------------------------------- signed Statement and set

def test_signed_statement_and_set_carry_the_package(tmp_path, monkeypatch):
    from codesuture.trust.dsse import Envelope

    site, app, overlays = heal_in_process(tmp_path, monkeypatch)
    keys = tmp_path / "keys"
    sign_folder_raw(overlays, add_key(keys))
    (core_env,) = overlays.glob("tinysbom.*.dsse.json")
    (app_env,) = overlays.glob("sbomapp.*.dsse.json")
    assert json.loads(Envelope.loads(core_env.read_bytes()).payload)["predicate"]["package"] == \
        {"name": NAME, "version": "1.0"}
    assert "package" not in json.loads(Envelope.loads(app_env.read_bytes()).payload)["predicate"]
    entries = json.loads(Envelope.loads((overlays / SET_NAME).read_bytes()).payload)["predicate"]["overlays"]
    assert {stem.split(".")[0]: e.get("package") for stem, e in entries.items()} == \
        {"tinysbom": {"name": NAME, "version": "1.0"}, "sbomapp": None}


def test_real_venv_heal_then_codesuture_sign_rebuild_check(tmp_path):
    """A wheel pip-installed into a venv's site-packages, healed by ``codesuture run``:
    the sidecar names the distribution; ``codesuture sign`` (which rebuilds the overlay
    and compares bytes) signs it, and the Statement and the set carry the package."""
    from codesuture.trust.dsse import Envelope

    wheel = build_wheel(tmp_path / "dist", DIST, "1.0", {"tinysbom/__init__.py": "", "tinysbom/core.py": CORE})
    vpy = make_venv(tmp_path / "venv")
    r = pip_install(vpy, "--no-index", "--no-deps", str(wheel))
    assert r.returncode == 0, str(r)
    app = tmp_path / "app"
    write(app / "pyproject.toml", '[project]\nname = "sbom-app"\n')
    main = write(app / "main.py", "import tinysbom.core\nprint('RESULT', tinysbom.core.get({}))\n")
    overlays = app / "overlays"
    healed = run([vpy, "-m", "codesuture", "run", "--overlays", overlays, main], app)
    assert healed.returncode == 0 and healed.results(), str(healed)
    metas = sidecars(overlays)
    assert metas["tinysbom"]["origin"] == "site-packages:tinysbom/core.py", metas
    assert metas["tinysbom"]["package"] == {"name": NAME, "version": "1.0"}, metas

    key = add_key(tmp_path / "keys")
    pem = tmp_path / "signing.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    signed = cli("sign", "--key", pem, "--app-root", app, "--python", vpy, overlays, cwd=app, python=str(vpy))
    assert signed.returncode == 0, str(signed)
    (env,) = overlays.glob("tinysbom.*.dsse.json")
    assert json.loads(Envelope.loads(env.read_bytes()).payload)["predicate"]["package"] == \
        {"name": NAME, "version": "1.0"}
    (entry,) = json.loads(Envelope.loads((overlays / SET_NAME).read_bytes()).payload)["predicate"]["overlays"].values()
    assert entry["package"] == {"name": NAME, "version": "1.0"}


# --------------------------------------------------------------------- the SBOM

def components_by_name(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["components"]}


def test_sbom_of_a_folder_is_valid_cyclonedx_with_pedigree(tmp_path, monkeypatch):
    from codesuture.ship.sbom import write_sbom

    site, app, overlays = heal_in_process(tmp_path, monkeypatch)
    out = tmp_path / "sbom.cdx.json"
    info = write_sbom(overlays, out)
    text = out.read_text()
    strict_validate(text)
    doc = json.loads(text)
    assert (doc["bomFormat"], doc["specVersion"]) == ("CycloneDX", "1.6")
    assert (info.components, info.overlays, info.patches) == (2, 2, 2)

    comps = components_by_name(doc)
    (core_overlay,) = overlays.glob("tinysbom.*.overlay")
    (app_overlay,) = overlays.glob("sbomapp.*.overlay")
    # The package: one library component, purl, its overlays' patches in its pedigree.
    lib = comps[NAME]
    assert (lib["type"], lib["version"], lib["purl"]) == ("library", "1.0", f"pkg:pypi/{NAME}@1.0")
    (patch,) = lib["pedigree"]["patches"]
    assert patch["type"] == "unofficial"
    text_ = patch["diff"]["text"]["content"]
    assert "key_guard" in text_ and "tinysbom.core:2 get" in text_ and "yields: " in text_, text_
    assert hashlib.sha256(core_overlay.read_bytes()).hexdigest() in text_
    assert patch["resolves"][0]["type"] == "defect" and patch["resolves"][0]["name"] == "KeyError"
    (ovc,) = lib["components"]
    assert ovc["type"] == "file" and ovc["name"] == core_overlay.name
    assert ovc["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(core_overlay.read_bytes()).hexdigest()}]
    (ancestor,) = ovc["pedigree"]["ancestors"]
    assert ancestor["hashes"][0]["content"] == hashlib.sha256(CORE.encode()).hexdigest()
    assert ancestor["name"] == "sys.path:tinysbom/core.py"
    # The app module: a file component of its own, with its patch.
    appc = comps[app_overlay.name]
    assert appc["type"] == "file" and "purl" not in appc
    assert appc["hashes"][0]["content"] == hashlib.sha256(app_overlay.read_bytes()).hexdigest()
    (app_patch,) = appc["pedigree"]["patches"]
    assert "null_guard" in app_patch["diff"]["text"]["content"] and "sbomapp:2 get" in app_patch["diff"]["text"]["content"]
    # The store depends on both; the same store gives the same document.
    deps = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}
    assert sorted(deps["codesuture-store"]) == sorted([lib["bom-ref"], appc["bom-ref"]])
    write_sbom(overlays, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == text


def test_sbom_refuses_a_tampered_overlay_and_invalid_documents(tmp_path, monkeypatch):
    from codesuture.ship.sbom import SbomError, validate, write_sbom

    site, app, overlays = heal_in_process(tmp_path, monkeypatch)
    (core_overlay,) = overlays.glob("tinysbom.*.overlay")
    core_overlay.write_bytes(core_overlay.read_bytes() + b"\0")
    with pytest.raises(SbomError, match="do not match the digest"):
        write_sbom(overlays, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(SbomError, match="does not validate against CycloneDX 1.6"):
        validate(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{"name": "x"}]}))


def test_sbom_without_the_library_is_a_clear_error(tmp_path, monkeypatch):
    from codesuture.ship.sbom import SbomError, write_sbom

    site, app, overlays = heal_in_process(tmp_path, monkeypatch)
    monkeypatch.setitem(sys.modules, "cyclonedx", None)  # as if not installed
    with pytest.raises(SbomError, match=r"pip install 'codesuture\[sbom\]'"):
        write_sbom(overlays, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_bundle_create_sbom_round_trip(tmp_path, monkeypatch):
    """bundle create --sbom: the SBOM is a member; bundle verify and the loader's
    admission still pass; the SBOM validates and equals what ``codesuture sbom BUNDLE``
    regenerates from the signed contents; a bundle with any other extra member is
    still refused."""
    from codesuture.cli.group import cli as main
    from codesuture.errors import BundleError
    from codesuture.store.bundle import BundleStore

    site, app, overlays = heal_in_process(tmp_path, monkeypatch)
    keys = tmp_path / "keys"
    sign_folder_raw(overlays, add_key(keys))
    out = tmp_path / "deploy.cso"
    r = CliRunner().invoke(main, ["bundle", "create", str(overlays), "-o", str(out), "--sbom"])
    assert r.exit_code == 0 and "unsigned CycloneDX SBOM" in r.output, r.output
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        embedded = zf.read(SBOM_NAME).decode()
    assert SBOM_NAME in names and SET_NAME in names
    strict_validate(embedded)
    assert {c["name"] for c in json.loads(embedded)["components"]} == {NAME, next(overlays.glob("sbomapp.*.overlay")).name}

    verified = CliRunner().invoke(main, ["bundle", "verify", "--keys", str(keys), str(out)])
    assert verified.exit_code == 0, verified.output
    clear_trust_root_cache()
    store = BundleStore(out)
    admitted = {key: admit(es[0], LoadPolicy(str(keys))) for key, es in store.index().items()}
    assert admitted["tinysbom.core"].meta.package == {"name": NAME, "version": "1.0"}
    store.close()

    regenerated = tmp_path / "regenerated.json"
    p = cli("sbom", out, "-o", regenerated, cwd=tmp_path, env=clean_env())
    assert p.returncode == 0 and "CycloneDX 1.6 (validated), 2 component(s), 2 overlay(s), 2 patch(es)" in p.stdout, str(p)
    strict_validate(regenerated.read_text())
    assert regenerated.read_text() == embedded
    # With a trust root the set and every Statement are verified, and the SBOM says so.
    from codesuture.ship.sbom import render

    store = BundleStore(out)
    checked, _ = render(store, keys_dir=str(keys))
    store.close()
    doc = json.loads(checked)
    assert "(verified)" in json.dumps(doc["metadata"]["component"]["properties"])
    assert checked.count("signed Statement (verified, key ") == 2 and "not verified" not in checked

    # Only that one name is let in: any other unpinned member still refuses the bundle.
    other = tmp_path / "other.cso"
    shutil.copy(out, other)
    with zipfile.ZipFile(other, "a") as zf:
        zf.writestr("notes.json", "{}")
    with pytest.raises(BundleError, match="not an overlay file or the signed overlay set"):
        BundleStore(other).index()
