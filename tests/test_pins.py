"""The tool never depends on the app's pins (issue 8, item 5).

An app that pins old releases of click, packaging or cryptography is exactly the app
with an old bug to heal. For each pinned environment (a throwaway venv whose own
site-packages hold the pins, in front of this interpreter's, so the pins win):

* ``codesuture run app.py`` heals the app's crash, writes the overlay and replays; the
  app sees its own pinned click, and CodeSuture imported no click (the run path is
  standard library + bytecode);
* ``python -m codesuture.boot`` reloads the overlay with no crash;
* ``codesuture run --help`` works;
* a review command (``sign``) stops with one message naming the click it found and
  how to run the review tools from their own install (exit 2), never a traceback;
* with cryptography 3.4 pinned, an overlay signed by the review machine's modern
  install verifies and loads under ``boot --keys``.

Needs the package index (pip); marked ``crashes`` (run in CI on 3.11 and 3.12).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from heal_helpers import Proc, clean_env, make_venv, pip_install, run

pytestmark = pytest.mark.crashes

PINS = {
    "click6": ("click==6.7", "packaging==20.9"),
    "click7": ("click==7.1.2",),
    "crypto34": ("cryptography==3.4.8", "click==7.1.2"),
}

APP = '''import sys

codesuture_took_click = "click" in sys.modules
import click

STOCK = {"bolt": 3}


def lookup(name):
    return STOCK[name]


print("APP click", click.__version__, "imported by codesuture:", codesuture_took_click)
print("APP result", lookup("nut"))
'''


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pins")
    made = {}
    for name, pins in PINS.items():
        vpy = make_venv(root / name)
        p = pip_install(vpy, *pins)
        if p.returncode != 0:
            pytest.skip(f"cannot install {' '.join(pins)} (no package index?): {p.stderr[-300:]}")
        made[name] = vpy
    return made


def _app(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(APP)
    return app / "main.py"


def _cs(vpy: Path, *args: str | Path, cwd: Path) -> Proc:
    return run([str(vpy), "-m", "codesuture", *map(str, args)], cwd, clean_env(CODESUTURE_STATE_DIR=str(cwd / "state")))


@pytest.mark.parametrize("name", sorted(PINS))
def test_run_heals_and_boot_reloads_under_the_apps_pins(venvs: dict[str, Path], name: str, tmp_path: Path) -> None:
    vpy = venvs[name]
    main = _app(tmp_path)
    store = tmp_path / "overlays"
    want = next(p.split("==")[1] for p in PINS[name] if p.startswith("click=="))
    healed = _cs(vpy, "run", "--overlays", store, main, cwd=tmp_path)
    assert healed.returncode == 0, healed
    assert f"APP click {want} imported by codesuture: False" in healed.stdout, healed
    assert "APP result 0" in healed.stdout, healed  # the typed default: STOCK holds ints
    assert len(list(store.glob("*.overlay"))) == 1, healed
    booted = run([str(vpy), "-m", "codesuture.boot", "--overlays", str(store), "--no-heal", str(main)], tmp_path,
                 clean_env(CODESUTURE_STATE_DIR=str(tmp_path / "state")))
    assert booted.returncode == 0 and "APP result 0" in booted.stdout and "patched" not in booted.stderr, booted
    helped = _cs(vpy, "run", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "codesuture run [options]" in helped.stdout and "--overlays" in helped.stdout, helped


@pytest.mark.parametrize("name", ["click6", "click7"])
def test_review_commands_say_what_they_need(venvs: dict[str, Path], name: str, tmp_path: Path) -> None:
    p = _cs(venvs[name], "sign", "--key", tmp_path / "k", tmp_path, cwd=tmp_path)
    assert p.returncode == 2, p
    assert "Traceback" not in p.stderr and "click 8.1 or later" in p.stderr and "codesuture[cli]" in p.stderr, p
    assert p.stderr.count("\n") == 1, p  # one message


def test_old_cryptography_verifies_what_a_modern_install_signed(venvs: dict[str, Path], tmp_path: Path) -> None:
    main = _app(tmp_path)
    store, keys, key = tmp_path / "overlays", tmp_path / "keys", tmp_path / "private" / "signer.key"
    env = clean_env(CODESUTURE_STATE_DIR=str(tmp_path / "state"))
    py = sys.executable  # the review machine: this interpreter, modern click and cryptography
    assert run([py, "-m", "codesuture", "run", "--overlays", str(store), str(main)], tmp_path, env).returncode == 0
    for args in (["keygen", "--private-key", str(key), "--public-key", str(keys / "signer.pem")],
                 ["sign", "--key", str(key), "--app-root", str(main.parent), str(store)]):
        p = run([py, "-m", "codesuture", *args], tmp_path, env)
        assert p.returncode == 0, p
    vpy = venvs["crypto34"]
    version = run([str(vpy), "-c", "import cryptography; print(cryptography.__version__)"], tmp_path, env)
    assert version.stdout.strip() == "3.4.8", version
    booted = run([str(vpy), "-m", "codesuture.boot", "--overlays", str(store), "--keys", str(keys), str(main)],
                  tmp_path, env)
    assert booted.returncode == 0 and "APP result 0" in booted.stdout, booted
    assert "refus" not in booted.stderr.lower(), booted
