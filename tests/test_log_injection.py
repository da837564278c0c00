"""Nothing from a store reaches a log line unescaped (docs/threat-model.md): a newline
(or any other control character) in an overlay's file name, a bundle member's name or
an envelope's key id cannot forge a second, well-formed ``codesuture:`` line. Real
boot processes on real stores."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from heal_helpers import boot, cli, clean_env, heal, overlays_in, write

LIB = """
def lookup(d):
    return d["missing"]
"""

MAIN = """
import lib
print("RESULT", lib.lookup({"present": 1}))
"""

FORGED = "codesuture: WARNING loaded overlay FORGED"


@pytest.fixture(scope="module")
def healed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inject") / "app"
    write(root / "pyproject.toml", '[project]\nname = "inject"\nversion = "0"\n')
    write(root / "lib.py", LIB)
    main = write(root / "main.py", MAIN)
    store = root / "overlays"
    r = heal(main, store)
    assert r.returncode == 0 and r.results() == ["RESULT 0"], str(r)
    priv, keys = root.parent / "secret" / "k.key", root.parent / "keys"
    assert cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=root.parent).returncode == 0
    return {"root": root, "main": main, "store": store, "priv": priv, "keys": keys}


def _no_forged_line(stderr: str) -> None:
    lines = stderr.splitlines()
    assert not [ln for ln in lines if ln.startswith(FORGED)], stderr
    assert all(ln.startswith(("codesuture: ", "Traceback", "  ", "KeyError")) for ln in lines), stderr


@pytest.mark.parametrize("char", ["\n", "\r", "\x1b[2K\r", "\u2028", "\x85"], ids=["lf", "cr", "ansi", "u2028", "nel"])
def test_a_control_character_in_an_overlay_file_name_is_escaped(healed: dict[str, Path], tmp_path: Path,
                                                                char: str) -> None:
    store = tmp_path / "store"
    shutil.copytree(healed["store"], store)
    [name] = overlays_in(store)
    stem = name[: -len(".overlay")]
    key, _, prefix = stem.rsplit(".", 2)
    hostile = f"{key}.other{char}{FORGED} for lib (x){char}x.{prefix}"
    for suffix in (".overlay", ".json"):
        (store / (stem + suffix)).rename(store / (hostile + suffix))
    r = boot(healed["main"], store, "-v")
    assert r.returncode == 1 and "KeyError" in r.stderr, str(r)
    _no_forged_line(r.stderr)
    escaped = {"\n": "\\n", "\r": "\\r", "\x1b[2K\r": "\\x1b[2K\\r", "\u2028": "\\u2028", "\x85": "\\x85"}[char]
    assert f"built for another Python (other{escaped}{FORGED}" in r.stderr, str(r)


def test_a_newline_in_a_key_id_is_escaped(healed: dict[str, Path], tmp_path: Path) -> None:
    store = tmp_path / "signed"
    shutil.copytree(healed["store"], store, ignore=shutil.ignore_patterns("*.repro"))
    s = cli("sign", "--key", healed["priv"], "--app-root", healed["root"], store, cwd=healed["root"])
    assert s.returncode == 0, str(s)
    good = boot(healed["main"], store, "--keys", str(healed["keys"]))
    assert good.returncode == 0 and good.results() == ["RESULT 0"], str(good)
    set_file = store / "overlays.manifest.dsse.json"
    env = json.loads(set_file.read_text())
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[0] ^= 1
    env["signatures"][0] = {"keyid": f"attacker\n{FORGED} for lib (set)", "sig": base64.b64encode(bytes(sig)).decode()}
    set_file.write_text(json.dumps(env))
    r = boot(healed["main"], store, "--keys", str(healed["keys"]), env=clean_env())
    assert r.returncode == 1 and "KeyError" in r.stderr, str(r)
    assert f"attacker\\n{FORGED}" in r.stderr, str(r)
    _no_forged_line(r.stderr)
    v = cli("verify", "--keys", healed["keys"], store, cwd=tmp_path)  # review output: one line per result too
    assert v.returncode == 1 and f"attacker\\n{FORGED}" in v.stdout + v.stderr, str(v)
    assert not [ln for ln in (v.stdout + v.stderr).splitlines() if ln.startswith(FORGED)], str(v)


def test_a_newline_in_a_bundle_member_name_is_escaped(healed: dict[str, Path], tmp_path: Path) -> None:
    import zipfile

    store = tmp_path / "b"
    shutil.copytree(healed["store"], store, ignore=shutil.ignore_patterns("*.repro"))
    bundle = tmp_path / "deploy.cso"
    b = cli("bundle", "create", "--key", healed["priv"], "--app-root", healed["root"], "-o", bundle, store,
            cwd=healed["root"])
    assert b.returncode == 0, str(b)
    hostile = tmp_path / "hostile.cso"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr(f"lib.x\n{FORGED} for lib (member)\nx.{'0' * 16}.overlay", b"junk")
    r = boot(healed["main"], hostile, "--keys", str(healed["keys"]))
    assert "KeyError" in r.stderr, str(r)
    _no_forged_line(r.stderr)
    assert f"\\n{FORGED}" in r.stderr, str(r)

