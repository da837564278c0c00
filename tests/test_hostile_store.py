"""A hostile store can neither crash nor hang the host (design rule 14).

``util.files.read_regular``, ``DirectoryStore`` and ``BundleStore`` against files an
attacker who can write the store plants: FIFOs (every read runs under a deadline: a
blocking open would fail the test instead of hanging it), symlinks to FIFOs, devices
or out of the store, directories named like overlays, oversized and growing files,
too many entries, more than the read budget, names with path separators; and the
finder's index, which never holds a standard-library or CodeSuture key.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import subprocess
import sys

import pytest

from codesuture.errors import BundleError, FileError, OverlayError, OverlayRefused
from codesuture.loader.finder import build_index, install, uninstall
from codesuture.overlay.names import MAX_ENVELOPE_BYTES, MAX_OVERLAY_BYTES, SET_NAME, UNVETTED_BUDGET, stem_for
from codesuture.store.bundle import MAX_BUNDLE_BYTES, BundleStore
from codesuture.store.directory import MAX_ENTRIES, READ_BUDGET, DirectoryStore
from codesuture.trust.policy import LoadPolicy, admit, clear_trust_root_cache
from codesuture.util.files import read_regular
from trust_helpers import deadline, entry_for, forbid_unmarshal, make_overlay, make_signed_set

TAG = sys.implementation.cache_tag
NOW = 1_800_000_000.0


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    clear_trust_root_cache()
    yield
    clear_trust_root_cache()


def real(p) -> str:
    return os.path.realpath(p)


def count_reads(monkeypatch) -> list[int]:
    """Every ``os.read`` size asked for from now on."""
    sizes: list[int] = []
    orig = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: sizes.append(n) or orig(fd, n))
    return sizes


# ------------------------------------------------------------------------ read_regular


def test_regular_file_and_missing(tmp_path):
    (tmp_path / "f").write_bytes(b"hello")
    assert read_regular(tmp_path / "f", 5) == b"hello"
    assert read_regular(tmp_path / "nope", 5) is None
    assert read_regular(tmp_path / "f", 5, root=real(tmp_path)) == b"hello"


def test_fifo_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with deadline(5), pytest.raises(FileError, match="is a FIFO, not a regular file") as ei:
        read_regular(tmp_path / "fifo", 100)
    assert ei.value.path == str(tmp_path / "fifo")


def test_symlink_to_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "fifo")
    with deadline(5):
        for root in (real(tmp_path), None):
            with pytest.raises(FileError, match="is a symlink to a FIFO"):
                read_regular(tmp_path / "link", 100, root=root)


def test_symlink_to_dev_zero(tmp_path, monkeypatch):
    (tmp_path / "zero").symlink_to("/dev/zero")
    sizes = count_reads(monkeypatch)
    with deadline(5):
        with pytest.raises(FileError, match="is a symlink pointing outside its store"):
            read_regular(tmp_path / "zero", 100, root=real(tmp_path))
        with pytest.raises(FileError, match="is a symlink to a device"):
            read_regular(tmp_path / "zero", 100)
    assert sizes == []


def test_device_itself(monkeypatch):
    sizes = count_reads(monkeypatch)
    with deadline(5), pytest.raises(FileError, match="is a device"):
        read_regular("/dev/zero", 100)
    assert sizes == []


def test_symlink_leaving_the_store(tmp_path):
    store, outside = tmp_path / "store", tmp_path / "outside"
    store.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (store / "abs").symlink_to(outside / "secret")
    (store / "rel").symlink_to("../outside/secret")
    for name in ("abs", "rel"):
        with pytest.raises(FileError, match="is a symlink pointing outside its store"):
            read_regular(store / name, 100, root=real(store))
    assert read_regular(store / "abs", 100) == b"secret"  # without a root, ordinary symlink rules


def test_symlink_inside_the_store_is_accepted(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "target").write_bytes(b"inside")
    (tmp_path / "abs").symlink_to(tmp_path / "sub" / "target")
    (tmp_path / "rel").symlink_to("sub/target")
    (tmp_path / "dangling").symlink_to("sub/nothing")
    assert read_regular(tmp_path / "abs", 100, root=real(tmp_path)) == b"inside"
    assert read_regular(tmp_path / "rel", 100, root=real(tmp_path)) == b"inside"
    assert read_regular(tmp_path / "dangling", 100, root=real(tmp_path)) is None
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:  # through a directory descriptor, as DirectoryStore reads
        assert read_regular("rel", 100, root=real(tmp_path), dir_fd=fd, dir_path=str(tmp_path)) == b"inside"
    finally:
        os.close(fd)


def test_symlink_to_an_oversized_file_inside(tmp_path):
    with open(tmp_path / "big", "wb") as fh:
        fh.truncate(1000)
    (tmp_path / "link").symlink_to(tmp_path / "big")
    with pytest.raises(FileError, match=r"oversized \(1000 bytes > 100\)"):
        read_regular(tmp_path / "link", 100, root=real(tmp_path))


def test_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FileError, match="is a directory"):
        read_regular(tmp_path / "d", 100)


def test_oversized_is_refused_before_reading(tmp_path, monkeypatch):
    with open(tmp_path / "big", "wb") as fh:  # sparse: no disk, and no read may happen
        fh.truncate(MAX_OVERLAY_BYTES + 1)
    sizes = count_reads(monkeypatch)
    with pytest.raises(FileError) as ei:
        read_regular(tmp_path / "big", MAX_OVERLAY_BYTES)
    # The size check's message (it names the fstat size), not the one while reading.
    assert ei.value.reason == f"oversized ({MAX_OVERLAY_BYTES + 1} bytes > {MAX_OVERLAY_BYTES})"
    assert sizes == []


def _grow_on_first_read(monkeypatch, path, extra: bytes) -> list[int]:
    """Append *extra* to *path* between the fstat and the first read (a writer racing
    the reader)."""
    sizes: list[int] = []
    orig = os.read

    def read(fd, n):
        if not sizes:
            with open(path, "ab") as fh:
                fh.write(extra)
        sizes.append(n)
        return orig(fd, n)

    monkeypatch.setattr(os, "read", read)
    return sizes


def test_file_growing_past_the_cap_while_read(tmp_path, monkeypatch):
    f = tmp_path / "growing"
    f.write_bytes(b"x" * 10)
    sizes = _grow_on_first_read(monkeypatch, f, b"y" * 5000)
    with pytest.raises(FileError) as ei:
        read_regular(f, 100)
    assert ei.value.reason == "oversized (> 100 bytes)"  # noticed while reading
    assert sum(sizes) <= 101 + 1  # never more than the cap (and one byte) was asked for


def test_file_growing_within_the_cap_while_read(tmp_path, monkeypatch):
    f = tmp_path / "growing"
    f.write_bytes(b"x" * 10)
    _grow_on_first_read(monkeypatch, f, b"y" * 20)
    assert read_regular(f, 100) == b"x" * 10 + b"y" * 20


# --------------------------------------------------------------------- DirectoryStore


@pytest.mark.parametrize("suffix", [".overlay", ".json"])
def test_fifo_member_through_admit(tmp_path, monkeypatch, suffix):
    overlay = make_overlay(tmp_path / "ov")
    target = overlay.with_name(overlay.name[: -len(".overlay")] + suffix)
    target.unlink()
    os.mkfifo(target)
    calls = forbid_unmarshal(monkeypatch)
    with deadline(5), pytest.raises(OverlayRefused, match="is a FIFO"):
        admit(entry_for(overlay), LoadPolicy(), NOW)
    assert calls == []


def test_fifo_envelope_and_set_through_admit(tmp_path, monkeypatch):
    s = make_signed_set(tmp_path, ("demo.mod",), now=NOW, ttl_seconds=86400)
    env = s.file("demo.mod", ".dsse.json")
    env.unlink()
    os.mkfifo(env)
    calls = forbid_unmarshal(monkeypatch)
    with deadline(5):
        with pytest.raises(OverlayRefused, match=rf"{env.name}: .*is a FIFO"):
            admit(s.entry(), s.policy(), NOW)
        s.set_path.unlink()
        os.mkfifo(s.set_path)
        clear_trust_root_cache()
        with pytest.raises(OverlayRefused, match="signed overlay set refused: .*is a FIFO"):
            admit(s.entry(), s.policy(), NOW)
    assert calls == []


@pytest.mark.parametrize("kind", ["fifo", "symlink to fifo", "symlink to /dev/zero", "symlink out of the store",
                                  "directory"])
def test_hostile_overlay_file_in_a_directory_store(tmp_path, kind, monkeypatch):
    ov = tmp_path / "ov"
    overlay = make_overlay(ov)
    elsewhere = make_overlay(tmp_path / "elsewhere")  # the same, valid overlay outside the store
    overlay.unlink()
    expected = {
        "fifo": "is a FIFO",
        "symlink to fifo": "is a symlink to a FIFO",
        "symlink to /dev/zero": "is a symlink pointing outside its store",
        "symlink out of the store": "is a symlink pointing outside its store",
        "directory": "is a directory",
    }[kind]
    if kind == "fifo":
        os.mkfifo(overlay)
    elif kind == "symlink to fifo":
        os.mkfifo(ov / "fifo")
        overlay.symlink_to(ov / "fifo")
    elif kind == "symlink to /dev/zero":
        overlay.symlink_to("/dev/zero")
    elif kind == "symlink out of the store":
        overlay.symlink_to(elsewhere)
    else:
        overlay.mkdir()
    store = DirectoryStore(ov)
    (entry,) = store.index()["demo.mod"]
    calls = forbid_unmarshal(monkeypatch)
    with deadline(5):
        with pytest.raises(OverlayError, match=expected):
            entry.read(".overlay")
        with pytest.raises(OverlayRefused, match=expected):
            admit(entry, LoadPolicy(), NOW)
    assert calls == []


def test_symlink_to_a_regular_file_inside_the_store_is_accepted(tmp_path):
    ov = tmp_path / "ov"
    overlay = make_overlay(ov)
    kept = ov / "releases" / "v1.bin"
    kept.parent.mkdir()
    overlay.rename(kept)
    overlay.symlink_to(os.path.relpath(kept, ov))
    (entry,) = DirectoryStore(ov).index()["demo.mod"]
    assert admit(entry, LoadPolicy(), NOW).overlay_bytes == kept.read_bytes()


def test_symlinked_store_folder(tmp_path):
    # A symlinked release: the store's folder itself is a symlink; members resolve inside it.
    overlay = make_overlay(tmp_path / "releases" / "v1")
    (tmp_path / "current").symlink_to(tmp_path / "releases" / "v1")
    (entry,) = DirectoryStore(tmp_path / "current").index()["demo.mod"]
    assert admit(entry, LoadPolicy(), NOW).overlay_bytes == overlay.read_bytes()


@pytest.mark.parametrize("name", ["../evil.overlay", "sub/x.overlay", "/etc/passwd", "", ".", ".."])
def test_member_names_with_path_separators(tmp_path, name):
    (tmp_path / "ov").mkdir()
    (tmp_path / "evil.overlay").write_bytes(b"outside")
    store = DirectoryStore(tmp_path / "ov")
    with pytest.raises(OverlayError, match="not a member name"):
        store.read(name, 100)


def test_more_than_max_entries_refuses_the_store(tmp_path, caplog):
    ov = tmp_path / "ov"
    make_overlay(ov)
    for i in range(MAX_ENTRIES - 2):  # plus the overlay and its sidecar: exactly MAX_ENTRIES
        (ov / f"junk{i}").touch()
    assert set(DirectoryStore(ov).index()) == {"demo.mod"}
    (ov / "one-more").touch()
    with pytest.raises(OverlayError, match=f"holds more than {MAX_ENTRIES} entries: refusing to index it"):
        DirectoryStore(ov).index()
    with caplog.at_level(logging.WARNING, logger="codesuture.loader"):
        assert install(DirectoryStore(ov), LoadPolicy()) is None  # the program runs without overlays
    assert any("overlays not loaded from" in r.getMessage() and "more than 4096" in r.getMessage() for r in caplog.records)


def test_read_budget_of_one_store_object(tmp_path):
    ov = tmp_path / "ov"
    ov.mkdir()
    per_file = MAX_OVERLAY_BYTES  # the largest overlay a store may hold
    assert READ_BUDGET == 64 * 1024 * 1024 and READ_BUDGET // per_file == 4
    names = [f"m{i}.{TAG}.{i:016x}.overlay" for i in range(6)]
    for n in names:
        with open(ov / n, "wb") as fh:  # sparse
            fh.truncate(per_file)
    (ov / "small.json").write_bytes(b"{}")
    store = DirectoryStore(ov)
    for n in names[:3]:
        assert len(store.read(n, MAX_OVERLAY_BYTES)) == per_file
    (ov / names[3]).write_bytes(b"x" * (per_file // 2))
    (ov / names[4]).write_bytes(b"y" * (per_file // 2 + 1))
    assert len(store.read(names[3], MAX_OVERLAY_BYTES)) == per_file // 2
    # 8 MiB left: a file under its own cap but over what is left is refused...
    with pytest.raises(OverlayError, match=f"store read budget exhausted \\({READ_BUDGET} bytes per process\\)"):
        store.read(names[4], MAX_OVERLAY_BYTES)
    with pytest.raises(OverlayError, match="store read budget exhausted"):
        store.read(names[5], MAX_OVERLAY_BYTES)
    assert store.read("small.json", 100) == b"{}"  # ... what fits still reads
    (ov / "rest").write_bytes(b"z" * (per_file // 2 - 2))
    assert len(store.read("rest", MAX_OVERLAY_BYTES)) == per_file // 2 - 2
    with pytest.raises(OverlayError, match="store read budget exhausted"):
        store.read("small.json", 100)  # 64 MiB read: nothing more, not even a small file
    # The budget is the loader's, per store object; writers and review tools have none.
    assert len(DirectoryStore(ov).read(names[5], MAX_OVERLAY_BYTES)) == per_file
    unlimited = DirectoryStore(ov, budget=None)
    for n in names:
        assert unlimited.read(n, MAX_OVERLAY_BYTES) is not None


def test_signature_material_has_its_own_smaller_budget(tmp_path):
    """Envelopes, Sigstore bundles and the signed set are read before any signature
    vouches for them: 4 MiB of them per store, within the 64 MiB; then only files a
    verified signature pins are read (design rule 14)."""
    ov = tmp_path / "ov"
    ov.mkdir()
    assert UNVETTED_BUDGET == 4 * 1024 * 1024 and UNVETTED_BUDGET // MAX_ENVELOPE_BYTES == 4
    envelopes = [f"m{i}.{TAG}.{i:016x}.dsse.json" for i in range(6)]
    for n in envelopes:
        with open(ov / n, "wb") as fh:  # sparse, at the envelope cap
            fh.truncate(MAX_ENVELOPE_BYTES)
    (ov / SET_NAME).write_bytes(b"{}")
    with open(ov / f"m9.{TAG}.{9:016x}.overlay", "wb") as fh:
        fh.truncate(MAX_OVERLAY_BYTES)
    store = DirectoryStore(ov)
    for n in envelopes[:4]:
        assert len(store.read(n, MAX_ENVELOPE_BYTES)) == MAX_ENVELOPE_BYTES
    for n in (envelopes[4], SET_NAME):
        with pytest.raises(OverlayError, match="store read budget for signature material exhausted "
                                               f"\\({UNVETTED_BUDGET} bytes per process\\)"):
            store.read(n, MAX_ENVELOPE_BYTES)
    # What a verified signature pins still reads: the rest of the 64 MiB is not spent.
    assert len(store.read(f"m9.{TAG}.{9:016x}.overlay", MAX_OVERLAY_BYTES)) == MAX_OVERLAY_BYTES
    # Writers and review tools have no budget at all.
    assert DirectoryStore(ov, budget=None).read(envelopes[5], MAX_ENVELOPE_BYTES) is not None


def test_junk_envelopes_cost_at_most_the_signature_budget_through_the_importer(tmp_path):
    """A store whose every module has a junk envelope at the cap: the program runs, the
    first four envelopes are read and refused, the rest are refused unread."""
    app = tmp_path / "app"
    app.mkdir()
    store = tmp_path / "store"
    store.mkdir()
    keys = tmp_path / "keys"
    keys.mkdir()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    (keys / "k.pub").write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    n = 8
    for i in range(n):
        src = f"def f():\n    return {i}\n".encode()
        (app / f"jm{i}.py").write_bytes(src)
        stem = f"jm{i}.{TAG}.{hashlib.sha256(src).hexdigest()[:16]}"
        (store / f"{stem}.overlay").write_bytes(b"x")
        (store / f"{stem}.dsse.json").write_bytes(b"{" + b" " * (MAX_ENVELOPE_BYTES - 2) + b"}")
    (app / "app.py").write_text("".join(f"import jm{i}\n" for i in range(n))
                                + f"print(sum(__import__('jm%d' % i).f() for i in range({n})))\n")
    r = subprocess.run([sys.executable, "-m", "codesuture.boot", "--keys", str(keys), "--require-signed",
                        "--overlays", str(store), "app.py"], cwd=app, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(sum(range(n)))
    assert r.stderr.count("signature material exhausted") == n - 4, r.stderr
    assert "loaded overlay" not in r.stderr


def test_read_budget_through_admit(tmp_path, monkeypatch):
    ov = tmp_path / "ov"
    overlay = make_overlay(ov)
    store = DirectoryStore(ov, budget=10)  # as if the store's 64 MiB had been read already
    (entry,) = store.index()["demo.mod"]
    with pytest.raises(OverlayRefused, match="store read budget exhausted"):
        admit(entry, LoadPolicy(), NOW)
    assert overlay.exists()


# ------------------------------------------------------------------------ BundleStore


@pytest.mark.parametrize("kind", ["fifo", "symlink to fifo", "directory", "symlink to /dev/zero"])
def test_hostile_bundle_file(tmp_path, kind):
    path = tmp_path / "deploy.zip"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink to fifo":
        os.mkfifo(tmp_path / "fifo")
        path.symlink_to(tmp_path / "fifo")
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    with deadline(5), pytest.raises(BundleError, match="bundle is not a regular file") as ei:
        BundleStore(path).index()
    assert ei.value.path == str(path)


def test_oversized_bundle_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "deploy.zip"
    with open(path, "wb") as fh:
        fh.truncate(MAX_BUNDLE_BYTES + 1)  # sparse
    sizes = count_reads(monkeypatch)
    with pytest.raises(BundleError, match=rf"oversized bundle \({MAX_BUNDLE_BYTES + 1} bytes > {MAX_BUNDLE_BYTES}\)"):
        BundleStore(path).index()
    assert sizes == []


@pytest.mark.parametrize("name", ["../x.overlay", "/etc/passwd", "a/b.json"])
def test_bundle_reads_only_its_own_members(tmp_path, name):
    import zipfile

    from codesuture.ship.bundle import create_bundle

    s = make_signed_set(tmp_path, ("demo.mod",), now=NOW, ttl_seconds=86400)
    out = create_bundle(s.directory, tmp_path / "b.zip").path
    (tmp_path / "x.overlay").write_bytes(b"outside")
    store = BundleStore(out)
    assert store.read(name, 1 << 20) is None
    with zipfile.ZipFile(out) as zf:
        assert name not in zf.namelist()


# ------------------------------------------------------------------- the finder's index


def test_build_index_drops_stdlib_and_codesuture_keys(tmp_path, caplog):
    ov = tmp_path / "ov"
    ov.mkdir()
    dropped = {"re": "never patches the standard library", "json.decoder": "never patches the standard library",
               "os": "never patches the standard library", "codesuture": "never loads overlays of itself",
               "codesuture.loader.finder": "never loads overlays of itself"}
    for key in dropped:
        (ov / f"{key}.{TAG}.0000000000000000.overlay").write_bytes(b"")  # empty files, as in the issue
    (ov / f"re.cpython-399.0000000000000001.overlay").write_bytes(b"")  # a second entry of one key
    (ov / f"__main__.{'a' * 16}.{TAG}.0123456789abcdef.overlay").write_bytes(b"")
    make_overlay(ov, module="demo.mod")
    make_overlay(ov, module="research")  # a name merely starting like a stdlib module
    with caplog.at_level(logging.WARNING, logger="codesuture.loader"):
        index = build_index(DirectoryStore(ov))
    assert set(index) == {"demo.mod", "research", f"__main__.{'a' * 16}"}
    lines = [r.getMessage() for r in caplog.records if r.name == "codesuture.loader"]
    assert len(lines) == len(dropped), lines  # one line per key
    for key, why in dropped.items():
        (line,) = [m for m in lines if m.startswith(f"overlay for {key} ignored")]
        assert why in line and str(ov) in line


def test_fifo_overlay_through_the_real_finder(tmp_path, monkeypatch, caplog):
    # The original module runs, nothing blocks, one line says why.
    app = tmp_path / "app"
    app.mkdir()
    source = b"def get(d):\n    return d['k']\n"
    (app / "hostmod.py").write_bytes(source)
    ov = tmp_path / "ov"
    overlay = make_overlay(ov, module="hostmod", source=source)  # a valid sidecar ...
    stem = stem_for("hostmod", hashlib.sha256(source).hexdigest())
    assert overlay.name == f"{stem}.overlay"
    overlay.unlink()
    os.mkfifo(overlay)  # ... for a FIFO
    monkeypatch.syspath_prepend(str(app))
    finder = install(DirectoryStore(ov), LoadPolicy())
    assert finder is not None
    try:
        with deadline(10), caplog.at_level(logging.WARNING, logger="codesuture"):
            mod = importlib.import_module("hostmod")
            with pytest.raises(KeyError):
                mod.get({})
    finally:
        uninstall()
        sys.modules.pop("hostmod", None)
    assert [r.getMessage() for r in caplog.records if stem in r.getMessage()] == [
        f"overlay {stem} not applied: is a FIFO, not a regular file"]
