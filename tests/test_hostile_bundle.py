"""A hostile bundle is refused before it costs (docs/threat-model.md): the entry
count, the central directory's size and place come from the zip's
end-of-central-directory record (ZIP64 too), read before the central directory is
parsed, so a bundle claiming millions of members is refused after one read of its
tail. Real boot processes; the 2-million-member cost itself is measured in
benchmarks/hostile_bundle.py."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from heal_helpers import PY, clean_env, run, write


def _zip64_tail(entries: int, cd_size: int, cd_offset: int, z64_at: int) -> bytes:
    """A ZIP64 end-of-central-directory record (to be written at *z64_at*), its locator
    and the classic record."""
    rec = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, cd_size, cd_offset)
    loc = struct.pack("<4sLQL", b"PK\x06\x07", 0, z64_at, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return rec + loc + eocd


@pytest.fixture()
def app(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "app"
    main = write(root / "main.py", 'print("RESULT ran")\n')
    keys = tmp_path / "keys"
    r = run([PY, "-m", "codesuture", "keygen", "--private-key", str(tmp_path / "s" / "k.key"), "--public-key",
             str(keys / "k.pem")], tmp_path)
    assert r.returncode == 0, str(r)
    return {"main": main, "keys": keys, "tmp": tmp_path}


def _boot(app: dict[str, Path], bundle: Path, *extra: str):  # noqa: ANN202
    return run([PY, "-m", "codesuture.boot", "--keys", str(app["keys"]), "--overlays", str(bundle), *extra,
                str(app["main"])], app["main"].parent, clean_env())


def test_a_real_zip_over_the_member_cap_is_refused_from_its_end_record(app: dict[str, Path]) -> None:
    bundle = app["tmp"] / "many.cso"
    with zipfile.ZipFile(bundle, "w") as zf:
        for i in range(5000):
            zf.writestr(f"m{i}.cpython-312.{'0' * 16}.json", b"")
    r = _boot(app, bundle)
    assert r.returncode == 0 and r.stdout.strip() == "RESULT ran", str(r)  # the program runs, without overlays
    assert "too many members (5000 > 4096, from its end-of-central-directory record)" in r.stderr, str(r)
    strict = _boot(app, bundle, "--require-overlays")
    assert strict.returncode == 78 and "from its end-of-central-directory record" in strict.stderr, str(strict)


@pytest.mark.parametrize("claim,reason", [
    ((2_000_000, 2_000_000 * 54), "too many members (2000000 > 4096"),
    ((100, 1 << 30), "central directory too large"),
    ((100, 4000), "central directory lies outside the file"),
], ids=["two-million-members", "huge-central-directory", "directory-outside-the-file"])
def test_a_zip64_end_record_that_claims_too_much_is_refused_before_parsing(app: dict[str, Path], claim: tuple[int, int],
                                                                           reason: str) -> None:
    entries, cd_size = claim
    bundle = app["tmp"] / "claims.cso"
    body = b"\0" * 64
    bundle.write_bytes(body + _zip64_tail(entries, cd_size, 0, len(body)))
    r = _boot(app, bundle, "--require-overlays")
    assert r.returncode == 78 and reason in r.stderr, str(r)
