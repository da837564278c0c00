"""The end-to-end deploy (issue 6, "Done means"): heal an app in a dev checkout,
rebuild its overlays for another Python when there is one, sign the folder, bundle
it; copy the app (not the checkout) to another directory with another venv, and boot
there in prod mode from the bundle and from the signed folder: every overlay loads
(the entry script's too: it is keyed by its path relative to the app root), both
crashes are healed, and a new crash there changes nothing on disk.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

from heal_helpers import PY, TAG, clean_env, cli, make_venv, other_pythons, overlays_in, run, script_key, write

STOCK = """
def reorder_note(item):
    return item["note"]


def unit_price(item):
    return 10 / item["qty"]
"""

APP = """
import sys

from inventory import stock


def headline(words):
    return words[0]


which = sys.argv[1:] or ["note", "headline"]
out = []
if "note" in which:
    out.append(stock.reorder_note({"sku": "nut"}))
if "headline" in which:
    out.append(headline([]))
if "new" in which:
    out.append(stock.unit_price({"qty": 0}))
print("RESULT", out)
"""

HEALED = "RESULT ['', None]"  # {"sku": "nut"}["note"]: the dict's values are str; [][0]: nothing known


def _venv(where: Path, python: str) -> Path:
    """A fresh venv of *python* that sees *python*'s own site-packages (where
    codesuture is installed) through a ``.pth`` file: heal_helpers.make_venv's trick,
    for an interpreter other than this one."""
    if python == PY:
        return make_venv(where)
    subprocess.run([python, "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True)
    vpy = where / "bin" / "python"
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    theirs = subprocess.run([python, "-c", query], check=True, capture_output=True, text=True).stdout.strip()
    mine = subprocess.run([str(vpy), "-c", query], check=True, capture_output=True, text=True).stdout.strip()
    Path(mine, "zz_codesuture_tests.pth").write_text(f"import site; site.addsitedir({theirs!r})\n")
    return vpy


def _tree(root: Path) -> dict[str, object]:
    """Every entry under *root*: files by content, folders and symlinks by kind."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            out[rel] = ("link", os.readlink(p)) if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
    return out


def _loaded(stderr: str) -> list[str]:
    """Stems of the overlays a ``-v`` boot says it loaded, and how."""
    found = re.finditer(r"^codesuture: INFO loaded overlay (\S+) for \S+ \((\w+)\)$", stderr, re.M)
    return sorted(f"{m[1]} ({m[2]})" for m in found)


def test_heal_sign_bundle_copy_and_boot_in_prod(tmp_path: Path) -> None:
    others = other_pythons()[:1]
    if not others:
        warnings.warn("no other Python (3.11-3.13) that imports codesuture: the deploy is tested on this one only "
                      "(no rebuild, no second interpreter)", stacklevel=1)
    # --- the dev checkout: the app, its tests and notes, its overlays ---------------------------
    dev = tmp_path / "dev" / "checkout"
    write(dev / "pyproject.toml", '[project]\nname = "deploy-app"\nversion = "1.0"\n')
    write(dev / "app.py", APP)
    write(dev / "inventory" / "__init__.py", "")
    write(dev / "inventory" / "stock.py", STOCK)
    write(dev / "tests" / "test_app.py", "def test_nothing():\n    pass\n")
    healed = run([PY, "-m", "codesuture", "run", "app.py"], dev)  # the default store, ./overlays
    assert healed.returncode == 0 and healed.results() == [HEALED], str(healed)
    assert f"(store {dev / 'overlays'}, the default; --overlays to change)" in healed.stderr, str(healed)
    store = dev / "overlays"
    assert sorted(n.split(".")[0] for n in overlays_in(store)) == ["__main__", "inventory"], overlays_in(store)
    main_key = script_key(dev / "app.py", dev)
    assert any(n.startswith(main_key + f".{TAG}.") for n in overlays_in(store)), (main_key, overlays_in(store))
    for other in others:
        r = cli("rebuild", "--python", other, "overlays", cwd=dev)
        assert r.returncode == 0 and r.stdout.count("re-located") == 2, str(r)
    priv, keys = tmp_path / "secret" / "release.key", tmp_path / "dev" / "keys"
    k = cli("keygen", "--private-key", priv, "--public-key", keys / "release.pem", cwd=dev)
    assert k.returncode == 0, str(k)
    pythons = [a for other in others for a in ("--python", other)]
    s = cli("sign", "--key", priv, "--ttl", "30", *pythons, "overlays", cwd=dev)
    n = 2 * (1 + len(others))
    assert s.returncode == 0 and f"signed overlay set 'deploy-app' v1: {n} overlay(s)" in s.stdout, str(s)
    b = cli("bundle", "create", "overlays", "-o", tmp_path / "dev" / "deploy.cso", cwd=dev)
    assert b.returncode == 0 and f"{n} overlay(s)" in b.stdout, str(b)
    for what in (["verify", "--keys", keys, "overlays"], ["bundle", "verify", "--keys", keys, tmp_path / "dev" / "deploy.cso"]):
        v = cli(*what, cwd=dev)
        assert v.returncode == 0 and "FAIL" not in v.stdout, str(v)
    with zipfile.ZipFile(tmp_path / "dev" / "deploy.cso") as zf:
        leaks = [m for m in zf.namelist() if str(tmp_path).encode() in zf.read(m)]
    assert not leaks, f"bundle members naming the dev box's paths: {leaks}"

    # --- the deploy: the app (not the checkout), keys, the bundle and the signed folder ---------
    prod = tmp_path / "prod"
    release = prod / "releases" / "1.0"
    release.mkdir(parents=True)
    for name in ("pyproject.toml", "app.py"):
        shutil.copy2(dev / name, release / name)
    shutil.copytree(dev / "inventory", release / "inventory", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(keys, prod / "keys")
    shutil.copy2(tmp_path / "dev" / "deploy.cso", prod / "deploy.cso")
    shutil.copytree(store, prod / "overlays")
    (prod / "current").symlink_to(release)
    shutil.rmtree(tmp_path / "dev")  # nothing of the dev box is left to lean on
    vpy = _venv(prod / "venv", PY)
    assert not (release / "tests").exists() and not (release / "overlays").exists()

    def boot(python: Path | str, store_opts: list[str], *args: str, script: Path = release / "app.py"):  # noqa: ANN202
        return run([str(python), "-m", "codesuture.boot", *store_opts, "-v", str(script), *args], prod, clean_env())

    bundle_opts = ["--overlays", str(prod / "deploy.cso"), "--keys", str(prod / "keys"), "--require-overlays"]
    folder_opts = ["--overlays", str(prod / "overlays"), "--keys", str(prod / "keys"), "--require-signed", "--require-overlays"]
    runners = [vpy] + [_venv(prod / f"venv-{i}", other) for i, other in enumerate(others, 2)]
    for python in runners:
        tag = subprocess.run([str(python), "-c", "import sys; print(sys.implementation.cache_tag)"], capture_output=True,
                             text=True, check=True).stdout.strip()
        mine = sorted(n[: -len(".overlay")] for n in overlays_in(prod / "overlays") if f".{tag}." in n)
        assert len(mine) == 2 and any(m.startswith(main_key + ".") for m in mine), (tag, overlays_in(prod / "overlays"))
        for opts, script in ((bundle_opts, release / "app.py"), (folder_opts, release / "app.py"),
                             (bundle_opts, prod / "current" / "app.py")):
            r = boot(python, opts, script=script)
            assert r.returncode == 0 and r.results() == [HEALED], str(r)
            assert _loaded(r.stderr) == [f"{m} (set)" for m in mine], str(r)
            assert "patched" not in r.stderr and "replaying" not in r.stderr and "WARNING" not in r.stderr, str(r)

    # --- a new crash in prod changes nothing on disk ---------------------------------------------
    before = _tree(prod)
    for python in runners:
        for opts in (bundle_opts, folder_opts):
            r = boot(python, opts, "note", "headline", "new")
            assert r.returncode == 1 and r.stdout == "", str(r)
            assert "\nZeroDivisionError: division by zero\n" in r.stderr, str(r)
            [line] = [ln for ln in r.stderr.splitlines() if "crash not healed (prod mode, healing off)" in ln]
            assert "function=unit_price" in line and "would_patch=division_guard" in line, line
            assert len(_loaded(r.stderr)) == 2, str(r)
    assert _tree(prod) == before
