"""The attacks of issue 6 on stores, settings and the signing flow, through the real
importer.

One app (``main.py`` importing ``mod.py`` and ``other.py``; ``main.py mod`` calls
``mod.lookup``, which raises KeyError, ``main.py second`` calls ``mod.second``
(AttributeError), ``main.py other`` calls ``other.describe`` (AttributeError)) is
healed with ``codesuture run`` and signed with ``codesuture sign`` into a folder with
a signed overlay set (``attacks`` v1), bundled with ``codesuture bundle create``. Each
attack is applied to a copy and the app is run in a subprocess through
``python -m codesuture.boot --overlays STORE --keys K --require-signed`` (a folder, and
a bundle where the attack applies), started through a wrapper that records every
``marshal.loads`` call made from CodeSuture's code (tests/test_signed_e2e.py).

An attack passes when the refusal is exactly one log line with the expected reason
(besides prod mode's one ``crash not healed`` line), the ORIGINAL module runs (the
app crashes with the original exception), and ``marshal.loads`` was never reached for
the refused bytes. Every child gets the test's own host-state folder
(``CODESUTURE_STATE_DIR``, tests/heal_helpers.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import marshal
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from heal_helpers import clean_env, snapshot
from test_signed_e2e import RECORDING_BOOT, Proc, cli, rewrite_zip, run, stem_of, zinfo

from codesuture.overlay import format as ovformat
from codesuture.overlay.names import SET_NAME
from codesuture.store.directory import MAX_ENTRIES, READ_BUDGET

PY = sys.executable
TAG = sys.implementation.cache_tag
SET = "attacks"

MOD_SRC = '''"""Two structural bugs: a missing key, an attribute of None."""


def lookup(d):
    return d["missing"]


def second(d):
    return d.attr
'''
OTHER_SRC = '''def describe(x):
    return x.name
'''
MAIN_SRC = '''import sys

import mod
import other

for what in sys.argv[1:] or ["mod"]:
    if what == "mod":
        print("MARKER mod", mod.lookup({"present": 1}), flush=True)
    elif what == "second":
        print("MARKER second", mod.second(None), flush=True)
    elif what == "other":
        print("MARKER other", other.describe(None), flush=True)
'''
#: What the ORIGINAL code raises, per action of main.py.
#: What each action prints once healed (mod's dict holds ints: the typed default is 0).
HEALED = {"mod": "0", "second": "None", "other": "None"}
CRASH = {
    "mod": "KeyError: 'missing'",
    "second": "AttributeError: 'NoneType' object has no attribute 'attr'",
    "other": "AttributeError: 'NoneType' object has no attribute 'name'",
}
#: Seconds a boot may take before the test calls it a hang (a normal one takes < 1 s).
HANG = 30


# --------------------------------------------------------------------------- the healed, signed app


@dataclass
class Base:
    root: Path
    app: Path
    unsigned: Path  # mod's healed overlay, unsigned
    store: Path  # ... signed into set 'attacks' v1
    file_store: Path  # ... signed alone (no set)
    other: Path  # other's healed overlay, signed alone
    bundle: Path  # the signed folder, bundled
    keys: Path
    key: Path
    stem: str
    other_stem: str
    kid: str

    @property
    def payload_sha256(self) -> str:
        data = (self.store / f"{self.stem}.overlay").read_bytes()
        return hashlib.sha256(data[ovformat.HEADER_SIZE:]).hexdigest()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    root = tmp_path_factory.mktemp("store-attacks")
    env = clean_env(CODESUTURE_STATE_DIR=str(root / "build-state"))
    app = root / "app"
    app.mkdir()
    (app / "mod.py").write_text(MOD_SRC)
    (app / "other.py").write_text(OTHER_SRC)
    (app / "main.py").write_text(MAIN_SRC)
    for what, store in (("mod", root / "unsigned"), ("other", root / "other")):
        p = cli("run", "--overlays", store, app / "main.py", what, cwd=root, env=env)
        assert p.returncode == 0 and f"MARKER {what} {HEALED[what]}" in p.stdout, p
    (stem,) = [stem_of(p) for p in (root / "unsigned").glob("*.overlay")]
    (other_stem,) = [stem_of(p) for p in (root / "other").glob("*.overlay")]
    keys, key = root / "keys", root / "private" / "signer.key"
    assert cli("keygen", "--private-key", key, "--public-key", keys / "signer.pem", cwd=root, env=env).returncode == 0
    store, file_store = root / "overlays", root / "overlays-file"
    for d in (store, file_store):
        shutil.copytree(root / "unsigned", d, ignore=shutil.ignore_patterns(".*"))
    p = cli("sign", "--ttl", "30", "--key", key, "--app-root", app, "--set-name", SET, store, cwd=root, env=env)
    assert p.returncode == 0 and f"'{SET}' v1: 1 overlay(s)" in p.stdout, p
    for overlay in (file_store / f"{stem}.overlay", root / "other" / f"{other_stem}.overlay"):
        p = cli("sign", "--ttl", "30", "--key", key, "--app-root", app, overlay, cwd=root, env=env)
        assert p.returncode == 0, p
    bundle = root / "deploy.cso"
    assert cli("bundle", "create", store, "-o", bundle, cwd=root, env=env).returncode == 0
    from codesuture.trust.keys import keyid, load_private_key

    return Base(root, app, root / "unsigned", store, file_store, root / "other", bundle, keys, key, stem, other_stem,
                keyid(load_private_key(key).public_key()))


@dataclass
class Versions:
    """Two signings of one folder: v1 (mod's overlay with the ``lookup`` patch) and v2
    (the overlay healed again for ``second`` in dev, proposed in the pending folder,
    moved in and signed: both patches), and a bundle of each."""

    v1: Path
    v2: Path
    v1_bundle: Path
    v2_bundle: Path


@pytest.fixture(scope="module")
def versions(base: Base) -> Versions:
    root = base.root / "versions"
    root.mkdir()
    env = clean_env(CODESUTURE_STATE_DIR=str(root / "state"))
    v1, work = root / "v1", root / "work"
    shutil.copytree(base.store, v1)
    shutil.copytree(base.store, work)
    p = cli("run", "--overlays", work, base.app / "main.py", "mod", "second", cwd=root, env=env)
    # beside a signed folder a heal is a proposal: the run is not replayed (a fresh run
    # loads no proposal) and ends with the program's crash
    assert p.returncode == 1 and "proposed for review; not replayed" in p.stderr, p
    pending = Path(f"{work}.pending")
    assert snapshot(work) == snapshot(v1), "dev mode wrote into a signed folder"
    for f in pending.glob(f"{base.stem}.*"):
        shutil.copy2(f, work / f.name)
    p = cli("sign", "--ttl", "30", "--key", base.key, "--app-root", base.app, "--set-name", SET, work, cwd=root,
            env=env)
    assert p.returncode == 0 and f"'{SET}' v2" in p.stdout, p
    v2 = root / "v2"
    shutil.copytree(work, v2, ignore=shutil.ignore_patterns(".*"))
    assert (v2 / f"{base.stem}.overlay").read_bytes() != (v1 / f"{base.stem}.overlay").read_bytes()
    v2_bundle = root / "v2.cso"
    assert cli("bundle", "create", v2, "-o", v2_bundle, cwd=root, env=env).returncode == 0
    return Versions(v1, v2, base.bundle, v2_bundle)


@dataclass
class Case:
    base: Base
    root: Path
    app: Path
    keys: Path

    def copy(self, src: Path, name: str = "overlays") -> Path:
        """A copy of store *src* (a folder or a bundle) for this test to tamper with."""
        dst = self.root / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"))
        else:
            shutil.copy2(src, dst)
        return dst

    def file(self, store: Path, suffix: str, stem: str | None = None) -> Path:
        return store / f"{stem or self.base.stem}{suffix}"


@pytest.fixture
def case(base: Base, tmp_path: Path) -> Case:
    shutil.copytree(base.app, tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(base.keys, tmp_path / "keys")
    return Case(base, tmp_path, tmp_path / "app", tmp_path / "keys")


# --------------------------------------------------------------------------- running and asserting


def boot(c: Case, store: Path | None, *actions: str, options: tuple[str, ...] | None = None,
         env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = HANG) -> Proc:
    """``python -m codesuture.boot --overlays STORE --keys K --require-signed [options]
    app/main.py ACTIONS`` with marshal.loads recorded; *options* replaces the trust
    options. A run longer than *timeout* seconds is a hang: the test fails."""
    trust = ["--keys", str(c.keys), "--require-signed"] if options is None else list(options)
    where = ["--overlays", str(store)] if store is not None else []
    try:
        return run([PY, "-c", RECORDING_BOOT, *where, *trust, str(c.app / "main.py"), *actions], cwd or c.root, env,
                   timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"boot did not finish within {timeout} s (a hang): {exc.cmd}")


def assert_original_ran(p: Proc, action: str = "mod", loaded: tuple[str, ...] = ()) -> None:
    """The original code of *action* ran (its crash), and marshal.loads saw exactly
    the payloads of *loaded* (overlays of other modules that were admitted)."""
    assert p.returncode == 1, p
    assert CRASH[action] in p.stderr and f"MARKER {action}" not in p.stdout, p
    assert p.unmarshalled == list(loaded), f"marshal.loads reached with refused bytes:\n{p}"


def assert_refused(p: Proc, reason: str, action: str = "mod", loaded: tuple[str, ...] = (), lines: int = 1) -> None:
    """*lines* refusal lines (one per refused overlay) matching *reason*, the original
    code ran, nothing refused unmarshalled."""
    assert_original_ran(p, action, loaded)
    assert len(p.refusals) == lines, f"want exactly {lines} refusal line(s):\n{p}"
    for line in p.refusals:
        assert re.search(reason, line), f"reason {reason!r} not in {line!r}\n{p}"
        assert line.startswith("codesuture: WARNING "), p


def assert_loaded(p: Proc, action: str = "mod") -> None:
    assert p.returncode == 0 and f"MARKER {action} {HEALED[action]}" in p.stdout, p
    assert len(p.unmarshalled) == 1, p


def set_mismatch(fname_re: str, version: int = 1) -> str:
    return rf"{fname_re} does not match the signed overlay set '{SET}' v{version} \(tampered or replaced\)"


# --------------------------------------------------------------------------- controls


def test_the_base_loads_in_every_form(case, versions):
    """Controls: the signed folder, the file signed alone, the bundle, v2 and its bundle
    load (one unmarshal of the verified payload), and the original code crashes."""
    p = run([PY, str(case.app / "main.py")], case.root)
    assert p.returncode == 1 and CRASH["mod"] in p.stderr, p
    for store in (case.base.store, case.base.file_store, case.base.bundle):
        p = boot(case, store)
        assert_loaded(p)
        assert p.unmarshalled == [case.base.payload_sha256] and p.log_lines == [], p
    for store in (versions.v2, versions.v2_bundle):
        p = boot(case, store, "mod", "second", env=clean_env(CODESUTURE_STATE_DIR=str(case.root / "fresh")))
        assert p.returncode == 0 and "MARKER second None" in p.stdout and p.log_lines == [], p


# --------------------------------------------------------------------------- standard-library names


@pytest.mark.parametrize("module", ["re", "logging", "codesuture.trust.policy"])
@pytest.mark.parametrize("kind", ["folder", "bundle"])
def test_empty_overlay_named_like_a_stdlib_module(case, module, kind):
    """An empty file ``re.<cache_tag>.0000000000000000.overlay`` under the strictest
    settings: never indexed (one line), so logging the refusal cannot re-enter the
    finder; the program runs, and the signed overlay beside it still loads."""
    name = f"{module}.{TAG}.{'0' * 16}.overlay"
    why = "CodeSuture never loads overlays of itself" if module.startswith("codesuture") else \
        "CodeSuture never patches the standard library"
    reason = rf"overlay for {re.escape(module)} ignored \(.*{re.escape(name)}\): {why}"
    strict = ("--keys", str(case.keys), "--require-signed", "--require-overlays")
    if kind == "folder":
        store = case.copy(case.base.store)
        (store / name).write_bytes(b"")
        p = boot(case, store, options=strict)
        assert p.returncode == 0 and "MARKER mod 0" in p.stdout, p
        assert p.unmarshalled == [case.base.payload_sha256], p
        assert len(p.refusals) == 1 and re.search(reason, p.refusals[0]), p
        return
    # In a bundle the planted member is also one the signed set does not pin: the
    # whole bundle is refused. With --require-overlays that is the documented start-up
    # failure (exit 78, no traceback); without it the program runs its original code.
    store = rewrite_zip(case.base.bundle, case.root / "deploy.cso", add=[(zinfo(name), b"")])
    p = boot(case, store, options=strict)
    assert p.returncode == 78 and "Traceback" not in p.stderr and p.stdout == "" and p.unmarshalled == [], p
    assert re.search(reason, p.refusals[0]) and "is not pinned" in p.stderr, p
    p = boot(case, store, options=strict[:-1])
    assert_original_ran(p)
    assert len(p.refusals) == 2 and re.search(reason, p.refusals[0]), p
    assert re.search(r"signed overlay set refused: bundle member .* is not pinned", p.refusals[1]), p


# --------------------------------------------------------------------------- FIFOs


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-fifo"])
@pytest.mark.parametrize("what", ["overlay", "envelope", "sidecar", "set"])
def test_fifo_in_place_of_a_store_file(case, what, kind):
    """A FIFO (or a symlink to one, inside the store) where the overlay, its envelope,
    its sidecar or the signed set should be: no hang, one refusal."""
    store = case.copy(case.base.store)
    target = {"overlay": case.file(store, ".overlay"), "envelope": case.file(store, ".dsse.json"),
              "sidecar": case.file(store, ".json"), "set": store / SET_NAME}[what]
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
        problem = "is a FIFO, not a regular file"
    else:
        os.mkfifo(store / "fifo")
        os.symlink("fifo", target)
        problem = "is a symlink to a FIFO"
    reason = {"overlay": problem, "set": f"signed overlay set refused: {problem}",
              "envelope": rf"{re.escape(target.name)}: {problem}",
              "sidecar": rf"{re.escape(target.name)}: {problem}"}[what]
    assert_refused(boot(case, store), reason)


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-fifo"])
def test_fifo_in_place_of_a_bundle(case, kind):
    """``--overlays deploy.cso`` where deploy.cso is a FIFO: not a regular file, so not a
    bundle; never opened; one line, and the program runs."""
    bundle = case.root / "deploy.cso"
    if kind == "fifo":
        os.mkfifo(bundle)
    else:
        os.mkfifo(case.root / "fifo")
        os.symlink(case.root / "fifo", bundle)
    p = boot(case, bundle)
    assert_refused(p, r"overlay store .*deploy\.cso \(--overlays\) is neither a folder nor a bundle file: running without overlays")


@pytest.mark.parametrize("what", ["overlay", "set"])
def test_review_tools_do_not_hang_on_a_fifo(case, what):
    """``verify``, ``audit``, ``explain``, ``rollback --dry-run`` and ``bundle create``
    finish (and fail or say so) on a store with a FIFO."""
    store = case.copy(case.base.store)
    target = case.file(store, ".overlay") if what == "overlay" else store / SET_NAME
    target.unlink()
    os.mkfifo(target)
    for args, rc in ((("verify", "--keys", case.keys, store), 1),
                     (("audit", "--keys", case.keys, "--app-root", case.app, store), 1),
                     (("explain", store), None), (("rollback", "--dry-run", "--all", store), None),
                     (("bundle", "create", store, "-o", case.root / "x.cso"), 1)):
        try:
            p = run([PY, "-m", "codesuture", *args], case.root, timeout=HANG)
        except subprocess.TimeoutExpired:
            pytest.fail(f"codesuture {args[0]} hung on a FIFO in place of the {what}")
        if rc is not None:
            assert p.returncode == rc and "is a FIFO" in p.stdout + p.stderr, p


# --------------------------------------------------------------------------- rollback


def _rollback(c: Case, store: Path) -> None:
    p = cli("rollback", "--module", "mod", store, cwd=c.root)
    assert p.returncode == 0 and "recorded as withdrawn" in p.stdout, p


@pytest.mark.parametrize("when", ["before-resigning", "after-resigning", "after-resigning-seen"])
def test_withdrawn_overlay_put_back(case, when):
    """``codesuture rollback --module mod`` takes the signed overlay out; the attacker
    puts its old signed files back (and the old set): refused, whether or not the
    folder was signed again (and whether or not this host saw the new set)."""
    store = case.copy(case.base.store)
    old = case.copy(case.base.store, "old")
    _rollback(case, store)
    assert not case.file(store, ".overlay").exists()
    assert_original_ran(boot(case, store))  # nothing to load now
    if when != "before-resigning":
        p = cli("sign", "--key", case.base.key, "--app-root", case.app, "--set-name", SET, store, cwd=case.root)
        assert p.returncode == 0 and f"'{SET}' v2: 0 overlay(s)" in p.stdout, p
    if when == "after-resigning-seen":
        assert boot(case, store).returncode == 1  # this host sees set v2
        for f in old.glob(f"{case.base.stem}.*"):  # the old files beside the new set
            shutil.copy2(f, store / f.name)
        assert_refused(boot(case, store), rf"not in the signed overlay set '{SET}' v2 \(withdrawn, or planted\)")
    for f in old.iterdir():  # everything old back, the old set too
        shutil.copy2(f, store / f.name)
    # Signing on this host records the new version too, so once the folder was signed
    # again the old set is refused as rolled back before its overlay is looked at.
    reason = (rf"signed overlay set '{SET}' version 1 is older than version 2 already seen on this host"
              if when != "before-resigning" else r"withdrawn by codesuture rollback at \d{4}-")
    assert_refused(boot(case, store), reason)


def test_withdrawn_overlay_is_never_signed_again(case):
    """Put back (unsigned) and signed again: ``codesuture sign`` refuses it."""
    store = case.copy(case.base.store)
    _rollback(case, store)
    for suffix in (".overlay", ".json"):
        shutil.copy2(case.file(case.base.unsigned, suffix), store)
    p = cli("sign", "--key", case.base.key, "--app-root", case.app, "--set-name", SET, store, cwd=case.root)
    assert p.returncode == 1 and "was withdrawn with codesuture rollback on this host: not signed again" in p.stderr, p
    assert not case.file(store, ".dsse.json").exists()


def test_withdrawn_from_a_bundle(case):
    """A bundle cannot be rewritten: rollback withdraws the overlay on this host, and
    the same bundle no longer loads it."""
    bundle = case.copy(case.base.bundle, "deploy.cso")
    before = bundle.read_bytes()
    _rollback(case, bundle)
    assert bundle.read_bytes() == before
    assert_refused(boot(case, bundle), r"withdrawn by codesuture rollback at \d{4}-")


# --------------------------------------------------------------------------- older versions


@pytest.mark.parametrize("files", ["overlay", "overlay+sidecar+envelope"])
@pytest.mark.parametrize("kind", ["folder", "bundle"])
def test_older_signed_overlay_under_a_newer_set(case, versions, files, kind):
    """v1's (validly signed) overlay put back into the v2 folder (or bundle), whose set
    pins the newer overlay: refused."""
    store = case.copy(versions.v2)
    suffixes = [".overlay"] if files == "overlay" else [".overlay", ".json", ".dsse.json"]
    for suffix in suffixes:
        shutil.copy2(case.file(versions.v1, suffix), store)
    if kind == "bundle":
        names = [case.file(store, suffix).name for suffix in suffixes]
        store = rewrite_zip(versions.v2_bundle, case.root / "deploy.cso",
                            replace={n: (zinfo(n), (store / n).read_bytes()) for n in names})
    reason = (rf"overlay bytes do not match the signed overlay set '{SET}' v2" if files == "overlay"
              else set_mismatch(rf"{re.escape(case.base.stem)}(\.dsse)?\.json", 2))
    assert_refused(boot(case, store), reason)


@pytest.mark.parametrize("kind", ["folder", "bundle"])
def test_older_signed_set_after_a_newer_one_was_seen(case, versions, kind):
    """The whole v1 folder (or bundle) put back after this host loaded v2: refused. A
    fresh host has no memory: it loads v1 (the control) unless --min-set-version (or
    CODESUTURE_MIN_SET_VERSION) gives it a floor."""
    old = case.copy(versions.v1 if kind == "folder" else versions.v1_bundle, "old")
    new = case.copy(versions.v2 if kind == "folder" else versions.v2_bundle, "new")
    p = boot(case, new, "mod", "second")
    assert p.returncode == 0 and "MARKER second None" in p.stdout, p
    assert_refused(boot(case, old), rf"signed overlay set refused: signed overlay set '{SET}' version 1 is older "
                                    r"than version 2 already seen on this host \(rolled back\)")
    fresh = clean_env(CODESUTURE_STATE_DIR=str(case.root / "fresh-host"))
    assert_loaded(boot(case, old, env=fresh))
    floor = rf"signed overlay set refused: signed overlay set '{SET}' version 1 is below min_set_version 2"
    other = clean_env(CODESUTURE_STATE_DIR=str(case.root / "fresh-host-2"))
    assert_refused(boot(case, old, options=("--keys", str(case.keys), "--require-signed", "--min-set-version", "2"),
                        env=other), floor)
    assert_refused(boot(case, old, env=clean_env(CODESUTURE_STATE_DIR=str(case.root / "fresh-host-3"),
                                                 CODESUTURE_MIN_SET_VERSION="2")), floor)


# --------------------------------------------------------------------------- the set and sidecars


def _edit_set_payload(path: Path) -> None:
    env = json.loads(path.read_text())
    payload = json.loads(base64.b64decode(env["payload"]))
    payload["predicate"]["version"] = 99  # a bigger version: the attacker's obvious edit
    env["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    path.write_text(json.dumps(env))


@pytest.mark.parametrize("edit", ["set-payload-edited", "set-truncated", "set-deleted", "set-of-another-folder",
                                  "sidecar-edited", "sidecar-deleted", "envelope-deleted"])
@pytest.mark.parametrize("kind", ["folder", "bundle"])
def test_set_or_sidecar_edited_or_deleted(case, edit, kind):
    """Editing or deleting the signed set or a file it pins: refused (a set that does
    not verify, or that is gone while the envelopes name it, refuses the whole store)."""
    store = case.copy(case.base.store)
    stem = re.escape(case.base.stem)

    def missing(fname: str) -> str:
        if kind == "folder":
            return rf"{fname} is missing, but the signed overlay set pins it"
        return rf"signed overlay set refused: bundle lacks '{fname}', which the signed overlay set pins"

    if edit == "set-payload-edited":
        _edit_set_payload(store / SET_NAME)
        reason = rf"signed overlay set refused: bad signature \(key {case.base.kid}\)"
    elif edit == "set-truncated":
        (store / SET_NAME).write_bytes((store / SET_NAME).read_bytes()[:-30])
        reason = r"signed overlay set refused: malformed envelope: not JSON"
    elif edit == "set-deleted":
        (store / SET_NAME).unlink()
        reason = (rf"signed as part of overlay set '{SET}', which this store does not have" if kind == "folder"
                  else r"signed overlay set refused: bundle has no signed overlay set")
    elif edit == "set-of-another-folder":
        empty = case.root / "empty"
        empty.mkdir()
        p = cli("sign", "--key", case.base.key, "--app-root", case.app, "--set-name", SET, "--allow-empty", empty, cwd=case.root)
        assert p.returncode == 0, p
        shutil.copy2(empty / SET_NAME, store / SET_NAME)
        reason = (rf"not in the signed overlay set '{SET}' v1 \(withdrawn, or planted\)" if kind == "folder"
                  else rf"signed overlay set refused: bundle member '{stem}\..*' is not pinned")
    elif edit == "sidecar-edited":
        meta = json.loads(case.file(store, ".json").read_text())
        meta["patches"][0]["expression"] = "harmless()"
        case.file(store, ".json").write_text(json.dumps(meta))
        reason = set_mismatch(rf"{stem}\.json")
    elif edit == "sidecar-deleted":
        case.file(store, ".json").unlink()
        reason = missing(rf"{stem}\.json")
    else:
        case.file(store, ".dsse.json").unlink()
        reason = missing(rf"{stem}\.dsse\.json")
    if kind == "bundle":  # the same edit made to the bundle's members
        names = {p.name for p in store.iterdir()}
        original = {p.name for p in case.base.store.iterdir() if not p.name.startswith(".")}
        changed = {n: (zinfo(n), (store / n).read_bytes()) for n in names
                   if (store / n).read_bytes() != (case.base.store / n).read_bytes()}
        store = rewrite_zip(case.base.bundle, case.root / "deploy.cso", drop=original - names, replace=changed)
    assert_refused(boot(case, store), reason)


# --------------------------------------------------------------------------- signing what review shows


EVIL_SRC = 'def lookup(d):\n    return "EVIL"\n\n\ndef second(d):\n    return "EVIL"\n'


def plant(c: Case, store: Path) -> None:
    """Other code behind the healed overlay's header, and its sidecar copied with the
    digest made to match: what ``sign`` used to sign."""
    data = ovformat.pack(marshal.dumps(compile(EVIL_SRC, "app:mod.py", "exec")), MOD_SRC.encode())
    c.file(store, ".overlay").write_bytes(data)
    meta = json.loads(c.file(store, ".json").read_text())
    meta["overlay_sha256"] = hashlib.sha256(data).hexdigest()
    c.file(store, ".json").write_text(json.dumps(meta))


def test_planted_code_behind_a_matching_sidecar_is_never_signed(case):
    store = case.copy(case.base.unsigned)
    plant(case, store)
    # The control: on a developer's machine (no trust root) the planted code would run.
    p = boot(case, store, options=("--no-heal",))
    assert p.returncode == 0 and "MARKER mod EVIL" in p.stdout, p
    refused = "gives different bytes: its code is not what its metadata says (not signed)"
    for target in (store, case.file(store, ".overlay")):
        p = cli("sign", "--key", case.base.key, "--app-root", case.app, "--set-name", SET, target, cwd=case.root)
        assert p.returncode == 1 and refused in p.stderr, p
        assert not case.file(store, ".dsse.json").exists() and not (store / SET_NAME).exists()
    p = cli("bundle", "create", store, "-o", case.root / "x.cso", "--key", case.base.key, "--app-root", case.app,
            cwd=case.root)
    assert p.returncode == 1 and refused in p.stderr and not (case.root / "x.cso").exists(), p


def test_planted_code_in_a_signed_folder(case):
    """Planted into a signed folder: ``sign`` refuses and leaves the signed files as
    they were; the loader refuses the planted overlay."""
    store = case.copy(case.base.store)
    plant(case, store)
    signed = {n: (store / n).read_bytes() for n in (SET_NAME, f"{case.base.stem}.dsse.json")}
    p = cli("sign", "--key", case.base.key, "--app-root", case.app, "--set-name", SET, store, cwd=case.root)
    assert p.returncode == 1 and "its code is not what its metadata says" in p.stderr, p
    assert {n: (store / n).read_bytes() for n in signed} == signed
    assert_refused(boot(case, store), set_mismatch(rf"{re.escape(case.base.stem)}\.json"))


def _edit_sidecar(store: Path, stem: str) -> None:
    path = store / f"{stem}.json"
    meta = json.loads(path.read_text())
    fake = dict(meta["patches"][0], qualname="fake", expression="harmless()")
    meta["patches"] = [dict(meta["patches"][0], expression="harmless()"), fake]
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("layout", ["set", "file"])
def test_explain_and_audit_show_the_signed_statement(case, layout):
    """With the sidecar edited (another expression, a fake second patch), ``explain``
    and ``audit`` describe the signed Statement; under a set the edit itself is
    refused."""
    store = case.copy(case.base.store if layout == "set" else case.base.file_store)
    _edit_sidecar(store, case.base.stem)
    p = cli("explain", "--json", store, cwd=case.root)
    assert p.returncode == 0, p
    (doc,) = json.loads(p.stdout)
    assert doc["metadata_from"].startswith("signed Statement"), doc
    assert [(x["qualname"], x["expression"]) for x in doc["patches"]] == [("lookup", 'd["missing"]')], doc
    p = cli("explain", "--keys", case.keys, store, cwd=case.root)
    assert p.returncode == 0 and f"signed Statement (verified, key {case.base.kid})" in p.stdout, p
    assert "harmless" not in p.stdout and "fake" not in p.stdout, p
    p = cli("audit", "--keys", case.keys, "--app-root", case.app, store, cwd=case.root)
    assert "harmless" not in p.stdout and "fake" not in p.stdout, p
    if layout == "set":
        assert p.returncode == 1 and "does not match the signed overlay set" in p.stdout, p
    else:
        assert p.returncode == 0 and re.search(r"^ok +\S+ +\(1 patch\(es\), signed: dsse", p.stdout, re.M), p


def test_explain_says_when_it_reads_an_unsigned_sidecar(case):
    """The control: an unsigned overlay is described from its sidecar, and says so."""
    store = case.copy(case.base.unsigned)
    _edit_sidecar(store, case.base.stem)
    (doc,) = json.loads(cli("explain", "--json", store, cwd=case.root).stdout)
    assert doc["metadata_from"].startswith("UNSIGNED: from the metadata sidecar"), doc
    assert len(doc["patches"]) == 2


# --------------------------------------------------------------------------- unlisted overlays


@pytest.mark.parametrize("kind", ["folder", "bundle"])
def test_unlisted_overlay_is_refused(case, kind):
    """A validly signed overlay of another module, slipped into a signed folder (or
    bundle) whose set does not list it: refused (in a bundle: the whole bundle)."""
    other = case.base.other
    # The control: on its own, other's signed overlay loads.
    p = boot(case, other, "other")
    assert p.returncode == 0 and "MARKER other None" in p.stdout, p
    store = case.copy(case.base.store)
    for f in other.glob(f"{case.base.other_stem}.*"):
        shutil.copy2(f, store / f.name)
    if kind == "folder":  # mod's listed overlay loads, other's is refused
        reason = rf"overlay {re.escape(case.base.other_stem)} not applied: not in the signed overlay set '{SET}' v1"
        assert_refused(boot(case, store, "other"), reason, "other", loaded=(case.base.payload_sha256,))
        return
    store = rewrite_zip(case.base.bundle, case.root / "deploy.cso",
                        add=[(zinfo(f.name), f.read_bytes()) for f in other.glob(f"{case.base.other_stem}.*")])
    reason = rf"signed overlay set refused: bundle member '{re.escape(case.base.other_stem)}\..*' is not pinned"
    assert_refused(boot(case, store, "other"), reason, "other", lines=2)  # mod's and other's


# --------------------------------------------------------------------------- prod writes nothing


@pytest.mark.parametrize("heal", [False, True], ids=["no-heal", "heal"])
@pytest.mark.parametrize("kind", ["folder", "bundle"])
def test_prod_new_crash_changes_nothing_in_the_store(case, kind, heal):
    """A new crash (``second``) in a module with a signed overlay, in prod mode: the
    store is byte for byte the same (no file written, none deleted, no .dsse.json
    lost, no lock file), a bundle raises no 'File exists'; with --heal the patch is a
    proposal in the pending folder, which the next start does not load."""
    store = case.copy(case.base.store if kind == "folder" else case.base.bundle,
                      "overlays" if kind == "folder" else "deploy.cso")
    before = snapshot(store) if kind == "folder" else store.read_bytes()
    listing = sorted(os.listdir(case.root))
    options = ("--keys", str(case.keys), "--require-signed") + (("--heal",) if heal else ())
    p = boot(case, store, "mod", "second", options=options)
    assert "MARKER mod 0" in p.stdout and p.unmarshalled == [case.base.payload_sha256], p
    assert "File exists" not in p.stderr, p
    assert (snapshot(store) if kind == "folder" else store.read_bytes()) == before, "prod changed the store"
    if kind == "folder":
        assert case.file(store, ".dsse.json").is_file() and (store / SET_NAME).is_file()
    pending = Path(f"{store}.pending")
    if not heal:
        assert p.returncode == 1 and CRASH["second"] in p.stderr, p
        assert [line for line in p.log_lines if "crash not healed (prod mode" in line], p
        assert sorted(os.listdir(case.root)) == listing, "prod wrote beside the store"
        return
    # prod --heal: the patch is live in this process but only proposed on disk, so the
    # run is not replayed (a fresh run loads no proposal) and ends with the crash
    assert p.returncode == 1 and "proposed for review; not replayed" in p.stderr, p
    assert [f.name for f in pending.glob("*.overlay")] == [f"{case.base.stem}.overlay"], p
    p = boot(case, store, "mod", "second")  # the proposal is never loaded
    assert p.returncode == 1 and CRASH["second"] in p.stderr and "MARKER mod 0" in p.stdout, p


# --------------------------------------------------------------------------- settings


def _untrusted_cwd(c: Case) -> Path:
    """A directory holding ``overlays/`` with a valid UNSIGNED overlay of mod (one that
    dev mode would load) and a pyproject.toml pointing at it."""
    cwd = c.root / "untrusted"
    shutil.copytree(c.base.unsigned, cwd / "overlays", ignore=shutil.ignore_patterns(".*"))
    (cwd / "pyproject.toml").write_text('[tool.codesuture]\noverlays = "overlays"\n')
    return cwd


def test_boot_never_reads_overlays_of_the_current_directory(case):
    cwd = _untrusted_cwd(case)
    before = snapshot(cwd)
    p = boot(case, None, options=("--no-heal", "-v"), cwd=cwd)
    assert_original_ran(p)
    assert p.log_lines == ["codesuture: INFO no overlay store configured (--overlays, CODESUTURE_OVERLAYS or the "
                           "config file's overlays)"], p
    # Healing (dev's default) heals live and writes nothing there either (with no store
    # there is no overlay for a fresh replay to load: the run ends with its crash).
    p = boot(case, None, options=(), cwd=cwd)
    assert p.returncode == 1 and "patched in this process only; not replayed" in p.stderr and p.unmarshalled == [], p
    assert snapshot(cwd) == before
    # The control: named explicitly, the same folder loads (dev mode, unsigned).
    p = boot(case, cwd / "overlays", options=("--no-heal",), cwd=cwd)
    assert p.returncode == 0 and "MARKER mod 0" in p.stdout and len(p.unmarshalled) == 1, p
    assert "loading UNSIGNED overlay" in p.stderr, p


@pytest.mark.parametrize("value", ["", "   "], ids=["empty", "blank"])
@pytest.mark.parametrize("command", ["boot", "run"])
def test_empty_keys_variable_is_a_start_up_error(case, value, command):
    """``CODESUTURE_KEYS=""`` is exit 2 naming the variable, never 'no verification'
    (which would load the unsigned overlay)."""
    store = case.copy(case.base.unsigned)
    env = clean_env(CODESUTURE_KEYS=value)
    if command == "boot":
        p = boot(case, store, options=("--no-heal",), env=env)
    else:
        p = cli("run", "--overlays", store, case.app / "main.py", cwd=case.root, env=env)
    assert p.returncode == 2 and "CODESUTURE_KEYS" in p.stderr, p
    assert "MARKER" not in p.stdout and "Traceback" not in p.stderr and p.unmarshalled == [], p


@pytest.mark.parametrize("value, on", [("yes", True), (" YES ", True), ("2", False), ("required", False)],
                         ids=["yes", "padded-YES", "2", "required"])
@pytest.mark.parametrize("command", ["boot", "run"])
def test_require_signed_variable_is_strict(case, value, on, command):
    """``CODESUTURE_REQUIRE_SIGNED=yes`` is on (the unsigned overlay is refused); ``2``
    and ``required`` are start-up errors naming the variable, never 'off'."""
    store = case.copy(case.base.unsigned)
    env = clean_env(CODESUTURE_REQUIRE_SIGNED=value)
    if command == "boot":
        p = boot(case, store, options=("--no-heal",), env=env)
    else:
        p = cli("run", "--overlays", store, "--no-heal", case.app / "main.py", cwd=case.root, env=env)
    if on:
        assert_refused(p, r"unsigned overlay refused")
    else:
        assert p.returncode == 2 and "CODESUTURE_REQUIRE_SIGNED" in p.stderr and repr(value) in p.stderr, p
        assert "MARKER" not in p.stdout and "Traceback" not in p.stderr, p


@pytest.mark.parametrize("value", [" 1", "1 ", " true "], ids=["space-1", "1-space", "padded-true"])
def test_disable_with_whitespace(case, value):
    """``CODESUTURE_DISABLE=" 1"``: boot loads nothing (not even a valid signed overlay),
    ``codesuture run`` heals nothing and writes nothing; both run the original code."""
    env = clean_env(CODESUTURE_DISABLE=value)
    p = boot(case, case.base.store, env=env)
    assert_original_ran(p)
    assert "codesuture:" not in p.stderr, p
    p = cli("run", "--overlays", case.root / "new-store", case.app / "main.py", cwd=case.root, env=env)
    assert p.returncode == 1 and CRASH["mod"] in p.stderr and "codesuture:" not in p.stderr, p
    assert not (case.root / "new-store").exists() and not (case.root / "overlays").exists()


# --------------------------------------------------------------------------- what a hostile store can cost

#: Imported modules the hostile store has oversized overlays for.
JUNK_MODULES = 64
MIB = 1024 * 1024


def _hostile_app(c: Case) -> Path:
    """main.py also imports JUNK_MODULES modules (after mod)."""
    for i in range(JUNK_MODULES):
        (c.app / f"j{i}.py").write_text(f"VALUE = {i}\n")
    text = MAIN_SRC.replace("import other\n", "import other\n" + "".join(f"import j{i}\n" for i in range(JUNK_MODULES)))
    (c.app / "main.py").write_text(text)
    return c.app


def _hostile_store(c: Case, entries: int) -> Path:
    """mod's overlay signed alone, and, up to *entries* directory entries: for every
    junk module an overlay of just under the 16 MiB cap (sparse) named for its exact
    source, with a 1 MiB sidecar that vouches for other bytes (dev mode reads and
    hashes the overlay) and a 1 MiB junk envelope (prod reads it, then refuses it);
    FIFOs, symlinks to FIFOs and outside the store, directories named like overlays,
    standard-library names; junk names for the rest."""
    store = c.copy(c.base.file_store, "hostile")
    sidecar = json.loads(c.file(store, ".json").read_text())
    for i in range(JUNK_MODULES):
        src = (c.app / f"j{i}.py").read_bytes()
        digest = hashlib.sha256(src).hexdigest()
        stem = f"j{i}.{TAG}.{digest[:16]}"
        with open(store / f"{stem}.overlay", "wb") as fh:
            fh.truncate(16 * MIB - 1)
        meta = dict(sidecar, module=f"j{i}", key=f"j{i}", origin=f"app:j{i}.py", source_sha256=digest,
                    overlay_sha256="0" * 64)
        text = json.dumps(meta)
        (store / f"{stem}.json").write_text(text + " " * (MIB - 1 - len(text)))
        (store / f"{stem}.dsse.json").write_bytes(b"{" * (MIB - 1))
    outside = c.root / "outside.fifo"
    os.mkfifo(outside)
    zeros = "0" * 16
    for i in range(40):
        os.mkfifo(store / f"fifo{i}.{TAG}.{zeros}.overlay")
        os.symlink(outside, store / f"link{i}.{TAG}.{zeros}.overlay")
        os.symlink("/etc/passwd", store / f"away{i}.{TAG}.{zeros}.overlay")
        (store / f"dir{i}.{TAG}.{zeros}.overlay").mkdir()
    for name in ("re", "os", "json", "logging", "codesuture", "codesuture.boot"):
        (store / f"{name}.{TAG}.{zeros}.overlay").write_bytes(b"")
    n = len(os.listdir(store))
    for i in range(entries - n):
        (store / f"junk{i}").write_bytes(b"x")
    assert len(os.listdir(store)) == entries
    return store


def _timed(c: Case, store: Path, options: tuple[str, ...], rounds: int = 3) -> tuple[float, Proc]:
    best, proc = float("inf"), None
    for _ in range(rounds):
        t0 = time.perf_counter()
        proc = boot(c, store, options=options, timeout=120)
        best = min(best, time.perf_counter() - t0)
    assert proc is not None
    return best, proc


def _calibration(store: Path) -> float:
    """Seconds this machine takes for the work the bound allows: reading and hashing
    the whole read budget (64 MiB), and reading and parsing as many of the store's
    1 MiB sidecars as fit in it."""
    sidecar = next(p for p in store.glob("j0.*.json") if not p.name.endswith(".dsse.json")).read_bytes()
    t0 = time.perf_counter()
    hashlib.sha256(bytes(READ_BUDGET)).hexdigest()
    for _ in range(READ_BUDGET // len(sidecar)):
        json.loads(sidecar)
    return time.perf_counter() - t0


@pytest.mark.parametrize("mode", ["prod", "dev"])
def test_hostile_store_cost_is_bounded(case, mode):
    """A store of exactly MAX_ENTRIES (4096) hostile entries: the program runs, mod's
    valid overlay still loads, and start-up costs at most the bound of design rule 14
    (one listing of 4096 names, at most 64 MiB read and hashed) over an empty store.
    Measured here: the difference of the best of 3 runs of each, against a generous
    multiple of this machine's cost of hashing 64 MiB (plus a fixed allowance for
    process noise)."""
    _hostile_app(case)
    hostile = _hostile_store(case, MAX_ENTRIES)
    clean = case.copy(case.base.file_store, "clean")
    options = ("--keys", str(case.keys), "--require-signed") if mode == "prod" else ("--no-heal",)
    t_clean, p = _timed(case, clean, options)
    assert p.returncode == 0 and "MARKER mod 0" in p.stdout, p
    t_hostile, p = _timed(case, hostile, options)
    assert p.returncode == 0 and "MARKER mod 0" in p.stdout, p
    assert p.unmarshalled == [case.base.payload_sha256], p
    bound = 0.5 + 3 * _calibration(hostile)
    figures = (f"hostile store ({mode}): clean {t_clean * 1e3:.0f} ms, hostile {t_hostile * 1e3:.0f} ms, "
               f"added {(t_hostile - t_clean) * 1e3:.0f} ms; bound {bound * 1e3:.0f} ms")
    print(figures)
    assert t_hostile - t_clean < bound, figures
    junk = [line for line in p.refusals if re.search(r"overlay j\d+\.", line)]
    assert len(junk) == JUNK_MODULES, p
    if mode == "dev":  # 64 overlays of 16 MiB would be 1 GiB: the read budget stops it at 64 MiB
        assert any("store read budget exhausted" in line for line in junk), p


def test_store_over_the_entry_cap_is_refused_whole(case):
    """One entry more than MAX_ENTRIES: the store is not indexed at all (one line), the
    program runs its original code."""
    _hostile_app(case)
    hostile = _hostile_store(case, MAX_ENTRIES + 1)
    p = boot(case, hostile, timeout=120)
    assert_refused(p, rf"overlays not loaded from .*hostile: holds more than {MAX_ENTRIES} entries")
