"""Store files that are links are never followed for writing (docs/threat-model.md):
a symlink planted in a store under the name of a per-key lock file (``.<key>.lock``)
or the signer's ``.set.lock`` creates nothing where it points; the heal still happens
live, the write is refused with one line. Real CLI processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from heal_helpers import cli, heal, overlays_in, write

LIB = """
def lookup(d):
    return d["missing"]
"""

MAIN = """
import lib
print("RESULT", lib.lookup({"present": 1}))
"""

pytestmark = pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="needs O_NOFOLLOW")


@pytest.fixture()
def app(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "app"
    write(root / "pyproject.toml", '[project]\nname = "links"\nversion = "0"\n')
    write(root / "lib.py", LIB)
    main = write(root / "main.py", MAIN)
    victim_dir = tmp_path / "elsewhere"
    victim_dir.mkdir()
    return {"root": root, "main": main, "store": root / "overlays", "victim": victim_dir / "created-by-codesuture"}


@pytest.mark.parametrize("dangling", [True, False], ids=["dangling", "to-a-file"])
def test_a_planted_lock_symlink_is_never_followed(app: dict[str, Path], dangling: bool) -> None:
    store, victim = app["store"], app["victim"]
    store.mkdir()
    if not dangling:
        victim.write_bytes(b"precious")
    os.symlink(victim, store / ".lib.lock")
    r = heal(app["main"], store)
    assert "patched lib:2 lookup" in r.stderr, str(r)  # healed live all the same (in memory only)
    assert victim.exists() is (not dangling), "the lock file's symlink was followed"
    if not dangling:
        assert victim.read_bytes() == b"precious"
    assert "no overlay written for lib" in r.stderr and "symlink" in r.stderr, str(r)
    assert overlays_in(store) == [], overlays_in(store)
    assert (store / ".lib.lock").is_symlink()
    # Without the planted link, the same run writes the overlay.
    (store / ".lib.lock").unlink()
    again = heal(app["main"], store)
    assert again.returncode == 0 and len(overlays_in(store)) == 1, str(again)


def test_sign_never_follows_a_planted_set_lock(app: dict[str, Path], tmp_path: Path) -> None:
    store, victim = app["store"], app["victim"]
    made = heal(app["main"], store)
    assert made.returncode == 0 and overlays_in(store), str(made)
    priv, keys = tmp_path / "secret" / "k.key", tmp_path / "keys"
    assert cli("keygen", "--private-key", priv, "--public-key", keys / "k.pem", cwd=tmp_path).returncode == 0
    os.symlink(victim, store / ".set.lock")
    s = cli("sign", "--key", priv, "--app-root", app["root"], store, cwd=app["root"])
    assert s.returncode != 0 and "symlink" in s.stderr, str(s)
    assert not victim.exists()
