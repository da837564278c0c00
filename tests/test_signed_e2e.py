"""The signed-overlay path end to end, through the real importer.

One app (``main.py`` importing ``mod.py``, whose ``lookup`` raises KeyError) is healed
with ``codesuture run``, and the overlay signed with the real CLI in the two layouts a
deploy uses:

* **set**: ``codesuture sign --app-root app --set-name e2e overlays`` (the folder's
  signed overlay set pins every file; each envelope names the set);
* **file**: ``codesuture sign --app-root app overlays/<stem>.overlay`` (one envelope,
  no set);

and the signed folder bundled with ``codesuture bundle create`` (**bundle**). Then each
attack of docs/threat-model.md is applied to a copy and the app is run two ways:

* in a subprocess, ``python -m codesuture.boot --overlays D --keys K --require-signed
  --no-heal app/main.py`` (started through a ``-c`` wrapper that records every
  ``marshal.loads`` call made from CodeSuture's code, with the SHA-256 of its input);
* in process, with :func:`codesuture.loader.finder.install` on
  :func:`codesuture.store.kinds.open_store` and a :class:`LoadPolicy` with the test's
  host-state folder (the one its subprocesses get, so attacks on rollback protection
  apply to both), with ``codesuture.loader.resolve.marshal`` replaced by a recorder.

An attack passes when: the refusal is exactly one log line with the expected reason
(besides prod mode's one ``crash not healed`` line for the crash that follows), the
ORIGINAL module runs (the app crashes with ``KeyError: 'missing'`` instead of printing
``MARKER patched``), and ``marshal.loads`` was never called by CodeSuture. The positive
controls (the untampered signed folder, signed file, bundle) print ``MARKER patched``
and unmarshal exactly the verified payload, once.

Also: the kill switch ``CODESUTURE_DISABLE=1``, and the environment-variable
equivalents of the flags, including their inheritance by a subprocess the app starts.
The store-level attacks of issue 6 (FIFOs, rollback, older sets, planted code, ...)
are in tests/test_store_attacks.py.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import logging
import marshal
import os
import re
import shutil
import stat
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from heal_helpers import as_data, clean_env, other_pythons, state_dir

from codesuture.loader import resolve as resolve_mod
from codesuture.loader.finder import install, uninstall
from codesuture.overlay import format as ovformat
from codesuture.overlay.model import OverlayMeta
from codesuture.overlay.names import MAX_ENVELOPE_BYTES, MAX_OVERLAY_BYTES, SET_NAME
from codesuture.ship.sign import write_envelope, write_set
from codesuture.store.kinds import open_store
from codesuture.trust import dsse
from codesuture.trust.keys import keyid, load_private_key
from codesuture.trust.policy import LoadPolicy, clear_trust_root_cache

PY = sys.executable
TAG = sys.implementation.cache_tag
SET = "e2e"

MOD_SRC = '''"""A module with a structural bug: a missing mapping key."""


def lookup(d):
    return d["missing"]
'''
MAIN_SRC = '''import mod

value = mod.lookup({"present": 1})
# The guard's typed default: the dict's other values are ints, so a missing key is 0.
print("MARKER patched" if value == 0 else f"MARKER unexpected {value!r}")
'''
CRASH = "KeyError: 'missing'"
PATCHED = "MARKER patched"
#: Where CodeSuture unmarshals what it marshalled itself a moment before (the healer
#: normalising a code object it just built from the source): never bytes from a store.
OWN_ROUND_TRIPS = ("/codesuture/overlay/build.py",)

#: Runs codesuture.boot with marshal.loads wrapped: every call made from CodeSuture's
#: own code prints ``MARSHAL-LOADS <file>:<function> <sha256 of the input>`` on stderr.
RECORDING_BOOT = r"""
import hashlib, marshal, runpy, sys
_real = marshal.loads
def _recording_loads(data, *args, **kwargs):
    caller = sys._getframe(1).f_code
    if "/codesuture/" in caller.co_filename:
        sys.stderr.write("MARSHAL-LOADS %s:%s %s\n" % (caller.co_filename, caller.co_name, hashlib.sha256(bytes(data)).hexdigest()))
        sys.stderr.flush()
    return _real(data, *args, **kwargs)
marshal.loads = _recording_loads
runpy.run_module("codesuture.boot", run_name="__main__", alter_sys=True)
"""


# --------------------------------------------------------------------------- helpers


@dataclass
class Proc:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"$ {' '.join(self.args)}\n-- rc {self.returncode}\n-- stdout\n{self.stdout}-- stderr\n{self.stderr}"

    @property
    def log_lines(self) -> list[str]:
        """CodeSuture's log lines, without the session summary."""
        return [line for line in self.stderr.splitlines()
                if line.startswith("codesuture:") and not line.startswith("codesuture: session:")]

    @property
    def refusals(self) -> list[str]:
        """Log lines other than the report of a crash that was not healed (prod mode's,
        or the observe line of a site whose patch `codesuture rollback` took out)."""
        return [line for line in self.log_lines if "crash not healed" not in line and "crash observed, not healed" not in line]

    @property
    def unmarshalled(self) -> list[str]:
        """sha256 of every input CodeSuture passed to marshal.loads (recording runs),
        except the healer's round trip of code it compiled itself (OWN_ROUND_TRIPS)."""
        out = []
        for line in self.stderr.splitlines():
            if line.startswith("MARSHAL-LOADS "):
                _, where, digest = line.rsplit(" ", 2)
                if not where.rsplit(":", 1)[0].endswith(OWN_ROUND_TRIPS):
                    out.append(digest)
        return out


def run(args: list, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Proc:
    import subprocess

    args = [os.fspath(a) for a in args]
    p = subprocess.run(args, cwd=cwd, env=env if env is not None else clean_env(), capture_output=True,
                       text=True, timeout=timeout)
    return Proc(args, p.returncode, p.stdout, p.stderr)


def cli(*args, cwd: Path, python: str = PY, env: dict[str, str] | None = None) -> Proc:
    return run([python, "-m", "codesuture", *args], cwd, env)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


STEM_SUFFIXES = (".overlay", ".json", ".dsse.json")


def stem_of(overlay: Path) -> str:
    return overlay.name[: -len(".overlay")]


def rename_stem(directory: Path, old: str, new: str) -> None:
    for suffix in STEM_SUFFIXES:
        p = directory / (old + suffix)
        if p.exists():
            p.rename(directory / (new + suffix))


def rewrite_zip(src: Path, dst: Path, *, drop=(), add=(), replace: dict | None = None) -> Path:
    """Copy zip *src* to *dst*, dropping, adding (ZipInfo, bytes) or replacing members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            if replace and info.filename in replace:
                new_info, data = replace[info.filename]
                zout.writestr(new_info, data)
                continue
            zout.writestr(info, zin.read(info))
        for info, data in add:
            zout.writestr(info, data)
    return dst


def zinfo(name: str, mode: int = stat.S_IFREG | 0o644) -> zipfile.ZipInfo:
    i = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
    i.create_system = 3
    i.external_attr = mode << 16
    return i


def sign_low(overlay: Path, key, *, ttl_seconds: float = 86400, now: float | None = None,
             set_name: str | None = None):
    """The unchecked low half of signing (no rebuild check): for attacks in which a
    trusted signer signs what it should not, or the attacker signs with their own key.
    Returns the overlay's set member."""
    sidecar = overlay.with_name(stem_of(overlay) + ".json").read_bytes()
    _, member = write_envelope(str(overlay), overlay.read_bytes(), sidecar, OverlayMeta.loads(sidecar), key,
                               ttl_seconds=ttl_seconds, now=now, set_name=set_name)
    return member


def sign_folder_low(directory: Path, key, *, ttl_seconds: float = 86400, now: float | None = None,
                    expires: str | None = None) -> None:
    """Every overlay of *directory* signed into set ``e2e`` (the next version) without
    the rebuild check."""
    members = {stem_of(o): sign_low(o, key, ttl_seconds=ttl_seconds, now=now, set_name=SET)
               for o in sorted(directory.glob("*.overlay"))}
    write_set(str(directory), members, key, SET, now=now, expires=expires)


# --------------------------------------------------------------------------- the healed, signed app


@dataclass
class Base:
    """Built once per module: the app, its healed overlay signed into a set (``store``)
    and signed alone (``file_store``), keys, a bundle of the set."""

    root: Path
    app: Path
    store: Path
    file_store: Path
    unsigned: Path  # the healed overlay, before any signing
    keys: Path
    signer_key_path: Path
    attacker_key_path: Path
    attacker_keys: Path
    bundle: Path
    stem: str
    kid: str = ""
    attacker_kid: str = ""
    other: dict = field(default_factory=dict)  # the other-Python overlays, built on demand

    @property
    def overlay(self) -> Path:
        return self.store / (self.stem + ".overlay")

    @property
    def payload_sha256(self) -> str:
        return hashlib.sha256(self.overlay.read_bytes()[ovformat.HEADER_SIZE:]).hexdigest()

    def signer(self):
        return load_private_key(self.signer_key_path)

    def attacker(self):
        return load_private_key(self.attacker_key_path)

    def env(self) -> dict[str, str]:
        """Environment for building the base (its own host state)."""
        return clean_env(CODESUTURE_STATE_DIR=str(self.root / "build-state"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    root = tmp_path_factory.mktemp("signed-e2e")
    env = clean_env(CODESUTURE_STATE_DIR=str(root / "build-state"))
    app = root / "app"
    app.mkdir()
    (app / "mod.py").write_text(MOD_SRC)
    (app / "main.py").write_text(MAIN_SRC)
    plain = run([PY, app / "main.py"], root, env)
    assert plain.returncode == 1 and CRASH in plain.stderr, plain

    store = root / "overlays"
    healed = cli("run", "--overlays", store, app / "main.py", cwd=root, env=env)
    assert healed.returncode == 0 and PATCHED in healed.stdout, healed
    stems = sorted(stem_of(p) for p in store.glob("*.overlay"))
    prefix = hashlib.sha256(MOD_SRC.encode()).hexdigest()[:16]
    assert stems == [f"mod.{TAG}.{prefix}"], stems
    unsigned = root / "unsigned"
    shutil.copytree(store, unsigned, ignore=shutil.ignore_patterns(".*"))
    file_store = root / "overlays-file"
    shutil.copytree(store, file_store, ignore=shutil.ignore_patterns(".*"))

    private = root / "private"
    keys = root / "keys"
    attacker_keys = root / "attacker-keys"
    for name, pub_dir in (("signer", keys), ("attacker", attacker_keys)):
        p = cli("keygen", "--private-key", private / f"{name}.key", "--public-key", pub_dir / f"{name}.pem",
                cwd=root, env=env)
        assert p.returncode == 0, p
    p = cli("sign", "--ttl", "30", "--key", private / "signer.key", "--app-root", app, "--set-name", SET, store,
            cwd=root, env=env)
    assert p.returncode == 0 and f"signed overlay set '{SET}' v1" in p.stdout, p
    p = cli("sign", "--ttl", "30", "--key", private / "signer.key", "--app-root", app,
            file_store / f"{stems[0]}.overlay", cwd=root, env=env)
    assert p.returncode == 0, p
    assert not (file_store / SET_NAME).exists() and (file_store / f"{stems[0]}.dsse.json").is_file()
    for d in (store, file_store):
        p = cli("verify", "--keys", keys, d, cwd=root, env=env)
        assert p.returncode == 0, p
    bundle = root / "deploy.cso"
    p = cli("bundle", "create", store, "-o", bundle, cwd=root, env=env)
    assert p.returncode == 0, p
    b = Base(root, app, store, file_store, unsigned, keys, private / "signer.key", private / "attacker.key",
             attacker_keys, bundle, stems[0])
    b.kid = keyid(b.signer().public_key())
    b.attacker_kid = keyid(b.attacker().public_key())
    return b


@dataclass
class Case:
    """A copy of the base artifacts, in one layout, that one test may tamper with."""

    base: Base
    layout: str  # "set", "file" or "bundle"
    root: Path
    app: Path
    store: Path  # the directory store
    keys: Path
    location: Path  # what --overlays points at: the store or a bundle

    @property
    def stem(self) -> str:
        return self.base.stem

    def member(self, suffix: str) -> Path:
        return self.store / (self.stem + suffix)

    @property
    def new_stem(self) -> str:
        """The stem an overlay for the current mod.py would have."""
        prefix = hashlib.sha256((self.app / "mod.py").read_bytes()).hexdigest()[:16]
        return f"mod.{TAG}.{prefix}"

    @property
    def state_dir(self) -> Path:
        """This test's host state: the subprocesses' (heal_helpers.clean_env) and the
        in-process policy's."""
        return Path(state_dir())

    def set_mismatch(self, fname: str, version: int = 1) -> str:
        """The refusal of a side file the set pins that is not the signed one."""
        return rf"{re.escape(fname)} does not match the signed overlay set '{SET}' v{version} \(tampered or replaced\)"


def make_case(base: Base, tmp_path: Path, layout: str) -> Case:
    tmp_path = tmp_path / layout
    tmp_path.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", ".*")
    shutil.copytree(base.app, tmp_path / "app", ignore=ignore)
    shutil.copytree(base.file_store if layout == "file" else base.store, tmp_path / "overlays", ignore=ignore)
    shutil.copytree(base.keys, tmp_path / "keys")
    store = tmp_path / "overlays"
    location = store
    if layout == "bundle":
        location = tmp_path / "deploy.cso"
        shutil.copy2(base.bundle, location)
    return Case(base, layout, tmp_path, tmp_path / "app", store, tmp_path / "keys", location)


@pytest.fixture
def case(base: Base, tmp_path: Path) -> Case:
    return make_case(base, tmp_path, "set")


@pytest.fixture
def file_case(base: Base, tmp_path: Path) -> Case:
    return make_case(base, tmp_path, "file")


# --------------------------------------------------------------------------- another interpreter


def other_python_store(c: Case) -> Path:
    """A folder holding only an overlay of mod.py for another interpreter, made with
    ``codesuture rebuild --python OTHER`` from the healed overlay, and signed in the
    case's layout with ``codesuture sign --python OTHER``. Skips when no other
    interpreter with codesuture is found."""
    b = c.base
    if "python" not in b.other:
        found = other_pythons()
        if not found:
            pytest.skip(f"no Python other than {TAG} with codesuture found (the repository's .venv-3.X, pyenv "
                        "or python3.X on PATH)")
        b.other["python"] = found[0]
        built = b.root / "other-python"
        p = cli("rebuild", "--python", found[0], "--app-root", b.app, "-o", built, b.unsigned, cwd=b.root, env=b.env())
        assert p.returncode == 0, p
        (overlay,) = built.glob("mod.*.overlay")
        assert TAG not in overlay.name
        b.other["built"] = built
    python = b.other["python"]
    if c.layout not in b.other:
        out = b.root / f"other-python-{c.layout}"
        shutil.copytree(b.other["built"], out)
        (overlay,) = out.glob("mod.*.overlay")
        target = out if c.layout == "set" else overlay
        p = cli("sign", "--ttl", "30", "--key", b.signer_key_path, "--app-root", b.app, "--set-name", SET,
                "--python", python, target, cwd=b.root, env=b.env())
        assert p.returncode == 0, p
        b.other[c.layout] = out
    return b.other[c.layout]


def _use_other_python(c: Case) -> tuple[str, str]:
    """Replace the case's store by the other Python's signed overlay; returns its
    (stem, cache tag)."""
    src = other_python_store(c)
    for f in c.store.iterdir():
        f.unlink()
    for f in src.iterdir():
        shutil.copy2(f, c.store / f.name)
    (overlay,) = c.store.glob("mod.*.overlay")
    stem = stem_of(overlay)
    return stem, stem.split(".")[1]


# --------------------------------------------------------------------------- the attacks
# Each takes a fresh Case, tampers with it and returns the regex the refusal must match.
# ATTACKS: name -> (function, the layouts it applies to).

ATTACKS: dict[str, tuple[Callable[[Case], str], tuple[str, ...]]] = {}


def attack(*layouts: str):
    def register(fn: Callable[[Case], str]) -> Callable[[Case], str]:
        ATTACKS[fn.__name__[2:]] = (fn, layouts)
        return fn

    return register


def _tampered_overlay(c: Case) -> str:
    if c.layout == "set":
        return rf"overlay bytes do not match the signed overlay set '{SET}' v\d+ \(tampered or replaced\)"
    return r"overlay bytes do not match the signed subject digest \(tampered or replaced\)"


def _envelope_refused(c: Case, file_reason: str) -> str:
    """Under a set, any change to the envelope is a pinned file that changed; alone,
    the envelope's own check (*file_reason*) refuses it."""
    return c.set_mismatch(c.stem + ".dsse.json") if c.layout == "set" else file_reason


@attack("set", "file")
def a_overlay_flipped_byte(c: Case) -> str:
    flip(c.member(".overlay"), -5)  # inside the marshalled code
    return _tampered_overlay(c)


@attack("set", "file")
def a_overlay_header_flipped_byte(c: Case) -> str:
    flip(c.member(".overlay"), 20)  # inside the header's source SHA-256
    return _tampered_overlay(c)


@attack("set", "file")
def a_overlay_replaced_by_other_code(c: Case) -> str:
    """Other (valid) code behind the same header: what the attacker really wants."""
    evil = compile('def lookup(d):\n    return "EVIL"\n', "app:mod.py", "exec")
    c.member(".overlay").write_bytes(ovformat.pack(marshal.dumps(evil), MOD_SRC.encode()))
    return _tampered_overlay(c)


@attack("set", "file")
def a_truncated_overlay(c: Case) -> str:
    p = c.member(".overlay")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return _tampered_overlay(c)


@attack("set", "file")
def a_oversized_overlay(c: Case) -> str:
    os.truncate(c.member(".overlay"), MAX_OVERLAY_BYTES + 1)  # sparse: costs no disk
    return rf"oversized \({MAX_OVERLAY_BYTES + 1} bytes > {MAX_OVERLAY_BYTES}\)"


@attack("set", "file")
def a_envelope_payload_flipped_byte(c: Case) -> str:
    env_path = c.member(".dsse.json")
    env = json.loads(env_path.read_text())
    payload = bytearray(base64.b64decode(env["payload"]))
    i = payload.index(b'"expiresAt":"') + len(b'"expiresAt":"')
    payload[i] = ord("9")  # a much later expiry: the attacker's obvious edit
    env["payload"] = base64.b64encode(bytes(payload)).decode()
    env_path.write_text(json.dumps(env))
    return _envelope_refused(c, rf"bad signature \(key {c.base.kid}\)")


@attack("set", "file")
def a_signature_flipped_byte(c: Case) -> str:
    env_path = c.member(".dsse.json")
    env = json.loads(env_path.read_text())
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[10] ^= 0x01
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    env_path.write_text(json.dumps(env))
    return _envelope_refused(c, rf"bad signature \(key {c.base.kid}\)")


@attack("set", "file")
def a_wrong_key_claiming_trusted_keyid(c: Case) -> str:
    """The attacker re-signs the statement with their own key and names the trusted
    key id: the key id is only a hint."""
    env_path = c.member(".dsse.json")
    env = json.loads(env_path.read_text())
    forged = dsse.sign(base64.b64decode(env["payload"]), env["payloadType"], c.base.attacker())
    env["signatures"] = [{"keyid": c.base.kid, "sig": base64.b64encode(forged.signatures[0].sig).decode()}]
    env_path.write_text(json.dumps(env))
    return _envelope_refused(c, rf"bad signature \(key {c.base.kid}\)")


@attack("set", "file")
def a_untrusted_key(c: Case) -> str:
    """The envelope replaced by one the attacker signed with their own key."""
    sign_low(c.member(".overlay"), c.base.attacker(), set_name=SET if c.layout == "set" else None)
    return _envelope_refused(c, rf"untrusted key {c.base.attacker_kid}")


@attack("set")
def a_forged_set(c: Case) -> str:
    """The attacker signs the whole folder again with ``codesuture sign`` and their own
    key (a newer set version, every envelope theirs): only keys in keys/ count."""
    p = cli("sign", "--key", c.base.attacker_key_path, "--app-root", c.app, "--set-name", SET, c.store, cwd=c.root)
    assert p.returncode == 0 and f"'{SET}' v2" in p.stdout, p
    return rf"signed overlay set refused: untrusted key {c.base.attacker_kid}"


@attack("set", "file")
def a_truncated_envelope(c: Case) -> str:
    p = c.member(".dsse.json")
    p.write_bytes(p.read_bytes()[:-40])
    return _envelope_refused(c, r"malformed envelope: not JSON")


@attack("set", "file")
def a_oversized_envelope(c: Case) -> str:
    os.truncate(c.member(".dsse.json"), MAX_ENVELOPE_BYTES + 1)
    size = rf"oversized \({MAX_ENVELOPE_BYTES + 1} bytes > {MAX_ENVELOPE_BYTES}\)"
    return rf"{re.escape(c.stem)}\.dsse\.json: {size}" if c.layout == "set" else size


@attack("set", "file")
def a_unsigned(c: Case) -> str:
    """Every signature dropped: the envelope, and the set."""
    c.member(".dsse.json").unlink()
    (c.store / SET_NAME).unlink(missing_ok=True)
    return r"unsigned overlay refused"


@attack("set", "file")
def a_other_source_bytes(c: Case) -> str:
    """mod.py edited by one byte after signing: the overlay is stale."""
    with open(c.app / "mod.py", "ab") as fh:
        fh.write(b"\n")
    return r"overlay for mod not applied: stale, source .*mod\.py changed since it was built"


@attack("set", "file")
def a_other_source_bytes_renamed(c: Case) -> str:
    """...and the attacker renames the stale overlay to the new source's hash prefix."""
    a_other_source_bytes(c)
    rename_stem(c.store, c.stem, c.new_stem)
    if c.layout == "set":
        return rf"not in the signed overlay set '{SET}' v\d+ \(withdrawn, or planted\)"
    return rf"statement subject '{re.escape(c.stem)}\.overlay' is not this overlay"


@attack("set", "file")
def a_other_source_bytes_resigned(c: Case) -> str:
    """A trusted signer signs the stale overlay under the new source's name, without
    the rebuild check (``codesuture sign`` itself refuses it): the loader still compares
    the header's source SHA-256 with the real source."""
    a_other_source_bytes(c)
    rename_stem(c.store, c.stem, c.new_stem)
    if c.layout == "set":
        sign_folder_low(c.store, c.base.signer())
    else:
        sign_low(c.store / (c.new_stem + ".overlay"), c.base.signer())
    return r"stale: source .*mod\.py changed since it was built"


@attack("set", "file")
def a_other_python(c: Case) -> str:
    _, tag = _use_other_python(c)
    return rf"overlay for mod not applied: built for another Python \({tag}; this is {TAG}\)"


@attack("set", "file")
def a_other_python_renamed(c: Case) -> str:
    """The attacker renames another Python's overlay to this interpreter's cache tag."""
    stem, tag = _use_other_python(c)
    rename_stem(c.store, stem, stem.replace(tag, TAG))
    if c.layout == "set":
        return rf"not in the signed overlay set '{SET}' v\d+ \(withdrawn, or planted\)"
    return rf"statement subject '{re.escape(stem)}\.overlay' is not this overlay"


@attack("set", "file")
def a_other_python_resigned(c: Case) -> str:
    """A trusted signer signs another Python's overlay as this one's (name and metadata
    say this cache tag), without the rebuild check: the header's magic number still
    differs."""
    stem, tag = _use_other_python(c)
    new = stem.replace(tag, TAG)
    rename_stem(c.store, stem, new)
    meta_path = c.store / (new + ".json")
    meta = json.loads(meta_path.read_text())
    meta["python"]["cache_tag"] = TAG
    meta_path.write_text(json.dumps(meta))
    (c.store / (new + ".dsse.json")).unlink()
    if c.layout == "set":
        sign_folder_low(c.store, c.base.signer())
    else:
        sign_low(c.store / (new + ".overlay"), c.base.signer())
    return r"built for another Python \(magic number differs\)"


@attack("set", "file")
def a_expired(c: Case) -> str:
    """Signed an hour ago for one minute (the set's expiry follows its overlays')."""
    if c.layout == "set":
        sign_folder_low(c.store, c.base.signer(), ttl_seconds=60, now=time.time() - 3600)
        return rf"signed overlay set '{SET}' expired at \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    sign_low(c.member(".overlay"), c.base.signer(), ttl_seconds=60, now=time.time() - 3600)
    return r"expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@attack("set")
def a_overlay_expired_in_a_live_set(c: Case) -> str:
    """The set is valid for a day, the overlay's own attestation expired."""
    members = {c.stem: sign_low(c.member(".overlay"), c.base.signer(), ttl_seconds=60, now=time.time() - 3600,
                                set_name=SET)}
    from codesuture.util.clock import iso_utc

    write_set(str(c.store), members, c.base.signer(), SET, expires=iso_utc(time.time() + 86400))
    return r"overlay mod\.\S+ not applied: expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@attack("set", "file")
def a_revoked_overlay(c: Case) -> str:
    digest = sha256_file(c.member(".overlay"))
    (c.keys / "revoked.json").write_text(json.dumps({"overlays": [digest], "keys": []}))
    return rf"revoked overlay \(sha256 {digest} is in revoked.json\)"


@attack("set", "file")
def a_revoked_key(c: Case) -> str:
    (c.keys / "revoked.json").write_text(json.dumps({"overlays": [], "keys": [c.base.kid]}))
    reason = rf"revoked key {c.base.kid}"
    return f"signed overlay set refused: {reason}" if c.layout == "set" else reason


@attack("set", "file")
def a_public_key_removed(c: Case) -> str:
    """The signer's public key is gone from keys/ (only another key remains)."""
    (c.keys / "signer.pem").unlink()
    shutil.copy2(c.base.attacker_keys / "attacker.pem", c.keys / "attacker.pem")
    reason = rf"untrusted key {c.base.kid}"
    return f"signed overlay set refused: {reason}" if c.layout == "set" else reason


@attack("set", "bundle")
def a_set_older_than_seen(c: Case) -> str:
    """The folder was signed again (v2) and this host loaded v2; then the v1 files (or
    the v1 bundle) are put back: the host's high-water mark refuses them."""
    newer = c.root / "newer"
    shutil.copytree(c.store, newer)
    p = cli("sign", "--key", c.base.signer_key_path, "--app-root", c.app, "--set-name", SET, newer, cwd=c.root)
    assert p.returncode == 0 and f"'{SET}' v2" in p.stdout, p
    if c.layout == "bundle":
        assert cli("bundle", "create", newer, "-o", c.root / "newer.cso", cwd=c.root).returncode == 0
        newer = c.root / "newer.cso"
    p = run([PY, "-m", "codesuture.boot", "--overlays", newer, "--keys", c.keys, "app/main.py"], c.root)
    assert p.returncode == 0 and PATCHED in p.stdout, p
    return (rf"signed overlay set refused: signed overlay set '{SET}' version 1 is older than version 2 already "
            r"seen on this host \(rolled back\)")


@attack("set", "file", "bundle")
def a_withdrawn_by_rollback(c: Case) -> str:
    """``codesuture rollback`` on this host took these very bytes out (of another copy):
    they never load here again."""
    other = c.root / "elsewhere"
    if c.layout == "bundle":
        shutil.copy2(c.location, other)
    else:
        shutil.copytree(c.store, other)
    p = cli("rollback", "--module", "mod", other, cwd=c.root)
    assert p.returncode == 0 and "recorded as withdrawn" in p.stdout, p
    return r"withdrawn by codesuture rollback at \d{4}-"


# bundles


def _bundle_reason(c: Case, reason: str) -> str:
    return rf"overlays not loaded from .*deploy\.cso: {reason}"


@attack("bundle")
def a_bundle_dotdot_member(c: Case) -> str:
    name = f"../{c.stem}.overlay"
    rewrite_zip(c.base.bundle, c.location, add=[(zinfo(name), c.member(".overlay").read_bytes())])
    return _bundle_reason(c, r"unsafe member name '\.\./.*' \(contains '\.\.'\)")


@attack("bundle")
def a_bundle_absolute_member(c: Case) -> str:
    name = f"/tmp/{c.stem}.overlay"
    rewrite_zip(c.base.bundle, c.location, add=[(zinfo(name), c.member(".overlay").read_bytes())])
    return _bundle_reason(c, r"unsafe member name '/tmp/.*' \(absolute path\)")


@attack("bundle")
def a_bundle_symlink_member(c: Case) -> str:
    """The overlay member replaced by a symlink to a file outside the bundle."""
    outside = c.root / "outside.overlay"
    outside.write_bytes(c.member(".overlay").read_bytes())
    name = f"{c.stem}.overlay"
    rewrite_zip(c.base.bundle, c.location, replace={name: (zinfo(name, stat.S_IFLNK | 0o777), str(outside).encode())})
    return _bundle_reason(c, rf"member '{re.escape(name)}' is a symlink")


@attack("bundle")
def a_bundle_fifo_member(c: Case) -> str:
    name = f"{c.stem}.overlay"
    rewrite_zip(c.base.bundle, c.location, replace={name: (zinfo(name, stat.S_IFIFO | 0o644), b"")})
    return _bundle_reason(c, rf"member '{re.escape(name)}' is a special file, not a regular file")


@attack("bundle")
def a_bundle_overlay_not_pinned(c: Case) -> str:
    """A correctly signed bundle (of a folder whose signed set lists nothing), with this
    (individually validly signed) overlay slipped in: the set does not pin it."""
    empty = c.root / "empty"
    empty.mkdir()
    p = cli("sign", "--key", c.base.signer_key_path, "--app-root", c.app, "--set-name", SET, "--allow-empty", empty, cwd=c.root)
    assert p.returncode == 0, p
    legit = c.root / "legit.cso"
    assert cli("bundle", "create", empty, "-o", legit, cwd=c.root).returncode == 0
    files = c.base.file_store
    rewrite_zip(legit, c.location,
                add=[(zinfo(c.stem + s), (files / (c.stem + s)).read_bytes()) for s in STEM_SUFFIXES])
    return (rf"signed overlay set refused: bundle member '{re.escape(c.stem)}\..*' is not pinned by the signed "
            r"overlay set")


@attack("bundle")
def a_bundle_member_dropped(c: Case) -> str:
    """The sidecar taken out of the bundle: the set pins it."""
    rewrite_zip(c.base.bundle, c.location, drop={c.stem + ".json"})
    return rf"signed overlay set refused: bundle lacks '{re.escape(c.stem)}\.json', which the signed overlay set pins"


@attack("bundle")
def a_bundle_without_set(c: Case) -> str:
    rewrite_zip(c.base.bundle, c.location, drop={SET_NAME})
    return rf"signed overlay set refused: bundle has no signed overlay set \({re.escape(SET_NAME)}\)"


@attack("bundle")
def a_bundle_set_untrusted_key(c: Case) -> str:
    """A bundle made (and its folder signed) with the attacker's key."""
    p = cli("bundle", "create", c.store, "-o", c.location, "--key", c.base.attacker_key_path, "--app-root", c.app,
            "--set-name", SET, cwd=c.root)
    assert p.returncode == 0, p
    return rf"signed overlay set refused: untrusted key {c.base.attacker_kid}"


@attack("bundle")
def a_bundle_tampered_member(c: Case) -> str:
    name = f"{c.stem}.overlay"
    data = bytearray(c.member(".overlay").read_bytes())
    data[-5] ^= 0x01
    rewrite_zip(c.base.bundle, c.location, replace={name: (zinfo(name), bytes(data))})
    return _tampered_overlay(Case(c.base, "set", c.root, c.app, c.store, c.keys, c.location))


ATTACK_PARAMS = [pytest.param(name, layout, id=f"{layout}-{name}")
                 for name, (_, layouts) in sorted(ATTACKS.items()) for layout in layouts]


# --------------------------------------------------------------------------- running the app


def boot_recorded(c: Case, *options: str, env: dict[str, str] | None = None, script: str = "app/main.py") -> Proc:
    """The app under codesuture.boot, recording CodeSuture's marshal.loads calls."""
    return run([PY, "-c", RECORDING_BOOT, *options, script], c.root, env)


def strict_options(c: Case) -> list[str]:
    return ["--overlays", os.fspath(c.location), "--keys", os.fspath(c.keys), "--require-signed", "--no-heal"]


def assert_original_ran(p: Proc) -> None:
    assert p.returncode == 1, p
    assert CRASH in p.stderr and PATCHED not in p.stdout, p
    assert p.unmarshalled == [], f"marshal.loads reached with unverified bytes:\n{p}"


def assert_refused_once(p: Proc, reason: str) -> None:
    assert_original_ran(p)
    lines = p.refusals
    assert len(lines) == 1, f"want exactly one log line for the refusal:\n{p}"
    assert re.search(reason, lines[0]), f"reason {reason!r} not in {lines[0]!r}\n{p}"
    assert lines[0].startswith("codesuture: WARNING "), lines


class MarshalRecorder:
    """Stands in for the ``marshal`` module inside codesuture.loader.resolve."""

    def __init__(self) -> None:
        import marshal

        self._real = marshal
        self.calls: list[str] = []

    def loads(self, data, *args, **kwargs):
        self.calls.append(hashlib.sha256(bytes(data)).hexdigest())
        return self._real.loads(data, *args, **kwargs)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@dataclass
class InProcess:
    module: object
    unmarshalled: list[str]
    log: list[str]

    def warnings(self) -> list[str]:
        return [line for line in self.log if line.startswith("WARNING")]


def import_in_process(c: Case, monkeypatch) -> InProcess:
    """Import ``mod`` from the case's app with the real OverlayFinder installed on the
    case's store (or bundle) under the strict policy, with the test's host state;
    marshal inside resolve recorded."""
    recorder = MarshalRecorder()
    monkeypatch.setattr(resolve_mod, "marshal", recorder)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(c.app))
    monkeypatch.delitem(sys.modules, "mod", raising=False)
    clear_trust_root_cache()
    collect = Collect()
    log = logging.getLogger("codesuture")
    old_level = log.level
    log.addHandler(collect)
    log.setLevel(logging.INFO)
    store = open_store(c.location)
    try:
        policy = LoadPolicy(str(c.keys), require_signed=True, state_dir=str(c.state_dir))
        finder = install(store, policy)
        try:
            importlib.invalidate_caches()
            module = importlib.import_module("mod")
        finally:
            uninstall()
            sys.modules.pop("mod", None)
            resolve_mod.LOADED.pop("mod", None)
    finally:
        log.removeHandler(collect)
        log.setLevel(old_level)
        clear_trust_root_cache()
        getattr(store, "close", lambda: None)()
    assert finder is not None or c.location.is_file(), "the store was not indexed"
    assert os.path.samefile(module.__file__, c.app / "mod.py")
    return InProcess(module, recorder.calls, collect.lines)


# --------------------------------------------------------------------------- positive controls


def test_the_app_crashes_without_codesuture(case):
    p = run([PY, "app/main.py"], case.root)
    assert p.returncode == 1 and CRASH in p.stderr, p


@pytest.mark.parametrize("layout", ["set", "file", "bundle"])
def test_signed_overlay_loads(base, tmp_path, layout):
    c = make_case(base, tmp_path, layout)
    p = boot_recorded(c, *strict_options(c))
    assert p.returncode == 0 and PATCHED in p.stdout, p
    assert p.log_lines == [], p
    assert p.unmarshalled == [base.payload_sha256], f"want one marshal.loads, of the verified payload:\n{p}"


@pytest.mark.parametrize("layout", ["set", "file", "bundle"])
def test_signed_overlay_loads_in_process(base, tmp_path, layout, monkeypatch):
    c = make_case(base, tmp_path, layout)
    got = import_in_process(c, monkeypatch)
    assert as_data(got.module.lookup, {}) is None  # the patched code (its default handed on as data)
    assert got.unmarshalled == [base.payload_sha256]
    assert got.warnings() == [], got.log
    via = "dsse" if layout == "file" else "set"
    assert any(f"loaded overlay {c.stem} for mod ({via})" in line for line in got.log), got.log


def test_signed_overlay_loads_with_plain_boot(case):
    """The documented command line itself, no wrapper: the output, and the session line."""
    p = run([PY, "-m", "codesuture.boot", *strict_options(case), "app/main.py"], case.root)
    assert p.returncode == 0 and p.stdout == PATCHED + "\n", p
    assert p.stderr.splitlines() == ["codesuture: session: 0 patches applied, 1 overlay loaded"], p


def test_cli_verify_and_bundle_verify(case, file_case):
    assert cli("verify", "--keys", case.keys, case.store, cwd=case.root).returncode == 0
    assert cli("verify", "--keys", file_case.keys, file_case.store, cwd=file_case.root).returncode == 0
    assert cli("verify", "--keys", case.keys, case.base.bundle, cwd=case.root).returncode == 0
    assert cli("bundle", "verify", "--keys", case.keys, case.base.bundle, cwd=case.root).returncode == 0


# --------------------------------------------------------------------------- the attacks


@pytest.mark.parametrize("name, layout", ATTACK_PARAMS)
def test_attack_refused_through_boot(base, tmp_path, name, layout):
    c = make_case(base, tmp_path, layout)
    reason = ATTACKS[name][0](c)
    p = boot_recorded(c, *strict_options(c))
    assert_refused_once(p, reason)
    # the crash is reported once: prod mode's line, or, for a patch `codesuture rollback`
    # took out, the observe line saying it is not re-applied without review (no flapping)
    assert len(p.log_lines) == 2, p
    assert "crash not healed (prod mode" in p.log_lines[1] or (
        name == "withdrawn_by_rollback" and "is not re-applied without a new review" in p.log_lines[1]), p


@pytest.mark.parametrize("name, layout", ATTACK_PARAMS)
def test_attack_refused_in_process(base, tmp_path, name, layout, monkeypatch):
    c = make_case(base, tmp_path, layout)
    reason = ATTACKS[name][0](c)
    got = import_in_process(c, monkeypatch)
    with pytest.raises(KeyError, match="missing"):
        got.module.lookup({})  # the original code
    assert got.unmarshalled == [], "marshal.loads reached with unverified bytes"
    warnings = got.warnings()
    assert len(warnings) == 1 and re.search(reason, warnings[0]), got.log


VERIFY_SEES = ["overlay_flipped_byte", "signature_flipped_byte", "untrusted_key", "expired", "revoked_overlay",
               "revoked_key", "truncated_overlay", "oversized_overlay", "forged_set", "unsigned"]


@pytest.mark.parametrize("name, layout", [p for p in ATTACK_PARAMS if p.values[0] in VERIFY_SEES])
def test_attack_fails_cli_verify(base, tmp_path, name, layout):
    """``codesuture verify`` refuses what the loader refuses (for attacks it can see
    without the module's source)."""
    c = make_case(base, tmp_path, layout)
    reason = ATTACKS[name][0](c)
    p = cli("verify", "--keys", c.keys, c.store, cwd=c.root)
    assert p.returncode == 1 and "FAIL " in p.stdout, p
    if name != "unsigned":
        assert re.search(reason.replace("signed overlay set refused: ", ""), p.stdout), p


def test_other_python_overlay_beside_this_pythons_loads(case):
    """Overlays for several interpreters share one signed folder (``codesuture rebuild
    --python`` + ``codesuture sign --python``): each Python picks its own."""
    other = other_python_store(Case(case.base, "file", case.root, case.app, case.store, case.keys, case.store))
    (overlay,) = other.glob("mod.*.overlay")
    for suffix in (".overlay", ".json"):
        shutil.copy2(other / (stem_of(overlay) + suffix), case.store)
    p = cli("sign", "--ttl", "30", "--key", case.base.signer_key_path, "--app-root", case.app, "--set-name", SET,
            "--python", case.base.other["python"], case.store, cwd=case.root)
    assert p.returncode == 0 and f"'{SET}' v2: 2 overlay(s)" in p.stdout, p
    p = boot_recorded(case, *strict_options(case))
    assert p.returncode == 0 and PATCHED in p.stdout and p.log_lines == [], p
    assert p.unmarshalled == [case.base.payload_sha256], p
    p = run([case.base.other["python"], "-m", "codesuture.boot", *strict_options(case), "app/main.py"], case.root)
    assert p.returncode == 0 and PATCHED in p.stdout, p


def test_other_python_overlay_was_built_by_that_interpreter(case):
    store = other_python_store(case)
    (overlay,) = store.glob("mod.*.overlay")
    header = ovformat.parse(overlay.read_bytes())
    from importlib.util import MAGIC_NUMBER

    assert header.magic_number != MAGIC_NUMBER
    assert TAG not in overlay.name


# --------------------------------------------------------------------------- kill switch and environment


def test_disable_turns_everything_off(case):
    p = boot_recorded(case, *strict_options(case), env=clean_env(CODESUTURE_DISABLE="1"))
    assert_original_ran(p)
    assert p.log_lines == [] and "codesuture:" not in p.stderr, p


def test_disable_also_stops_healing(case):
    """With the kill switch, even --heal does not heal (and writes nothing)."""
    before = sorted(f.name for f in case.store.iterdir())
    p = boot_recorded(case, "--overlays", "overlays", "--heal", env=clean_env(CODESUTURE_DISABLE="1"))
    assert_original_ran(p)
    assert sorted(f.name for f in case.store.iterdir()) == before


def test_disable_with_environment_settings(case):
    env = clean_env(CODESUTURE_DISABLE="1", CODESUTURE_OVERLAYS=str(case.store), CODESUTURE_KEYS=str(case.keys),
                    CODESUTURE_REQUIRE_SIGNED="1", CODESUTURE_HEAL="0")
    p = boot_recorded(case, env=env)
    assert_original_ran(p)
    assert p.log_lines == [], p


def env_settings(c: Case, **extra: str) -> dict[str, str]:
    return clean_env(CODESUTURE_OVERLAYS=str(c.location), CODESUTURE_KEYS=str(c.keys),
                     CODESUTURE_REQUIRE_SIGNED="1", CODESUTURE_HEAL="0", **extra)


@pytest.mark.parametrize("layout", ["set", "file", "bundle"])
def test_environment_variables_without_flags(base, tmp_path, layout):
    c = make_case(base, tmp_path, layout)
    p = boot_recorded(c, env=env_settings(c))
    assert p.returncode == 0 and PATCHED in p.stdout and p.log_lines == [], p
    assert p.unmarshalled == [base.payload_sha256], p


@pytest.mark.parametrize("name, layout", [("signature_flipped_byte", "file"), ("untrusted_key", "file"),
                                          ("expired", "set"), ("forged_set", "set"),
                                          ("bundle_symlink_member", "bundle")])
def test_environment_variables_refuse_attacks(base, tmp_path, name, layout):
    c = make_case(base, tmp_path, layout)
    reason = ATTACKS[name][0](c)
    p = boot_recorded(c, env=env_settings(c))
    assert_refused_once(p, reason)


def test_require_signed_env_alone_refuses_unsigned(case):
    a_unsigned(case)
    env = clean_env(CODESUTURE_OVERLAYS=str(case.store), CODESUTURE_REQUIRE_SIGNED="1", CODESUTURE_HEAL="0")
    assert_refused_once(boot_recorded(case, env=env), r"unsigned overlay refused")


def test_keys_env_alone_refuses_unsigned(case):
    a_unsigned(case)
    env = clean_env(CODESUTURE_OVERLAYS=str(case.store), CODESUTURE_KEYS=str(case.keys), CODESUTURE_HEAL="0")
    assert_refused_once(boot_recorded(case, env=env), r"unsigned overlay refused")


def test_unsigned_loads_only_in_development_mode(case):
    """The control for the two tests above: with no trust root and no --require-signed
    (dev mode) the unsigned overlay loads, with a WARNING line."""
    a_unsigned(case)
    env = clean_env(CODESUTURE_OVERLAYS=str(case.store), CODESUTURE_HEAL="0")
    p = boot_recorded(case, env=env)
    assert p.returncode == 0 and PATCHED in p.stdout, p
    assert len(p.log_lines) == 1 and "loading UNSIGNED overlay" in p.log_lines[0], p


SPAWNER_SRC = '''import os, subprocess, sys
names = ("CODESUTURE_OVERLAYS", "CODESUTURE_KEYS", "CODESUTURE_REQUIRE_SIGNED", "CODESUTURE_HEAL")
print("PARENT-ENV " + " ".join(f"{n}={os.environ.get(n, '')}" for n in names), flush=True)
elsewhere = sys.argv[1]
child = subprocess.run([sys.executable, "-m", "codesuture.boot", os.path.join(os.path.dirname(os.path.abspath(__file__)), "main.py")],
                       cwd=elsewhere)
print(f"CHILD-EXIT {child.returncode}", flush=True)
sys.exit(child.returncode)
'''


def spawn(c: Case, how: str, *options: str) -> Proc:
    """Run app/spawner.py under boot, configured by flags (*options*, relative paths)
    or by the environment; it starts ``python -m codesuture.boot main.py`` WITHOUT any
    option, from another directory."""
    (c.app / "spawner.py").write_text(SPAWNER_SRC)
    elsewhere = c.root / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    if how == "flags":
        args = [PY, "-m", "codesuture.boot", *options, "app/spawner.py", str(elsewhere)]
        return run(args, c.root, clean_env())
    env = clean_env()
    it = iter(options)
    for opt in it:
        if opt == "--overlays":
            env["CODESUTURE_OVERLAYS"] = next(it)
        elif opt == "--keys":
            env["CODESUTURE_KEYS"] = next(it)
        elif opt == "--require-signed":
            env["CODESUTURE_REQUIRE_SIGNED"] = "1"
        elif opt == "--no-heal":
            env["CODESUTURE_HEAL"] = "0"
    return run([PY, "-m", "codesuture.boot", "app/spawner.py", str(elsewhere)], c.root, env)


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_settings_inherited_by_a_subprocess(case, how):
    p = spawn(case, how, "--overlays", "overlays", "--keys", "keys", "--require-signed", "--no-heal")
    assert p.returncode == 0 and PATCHED in p.stdout and "CHILD-EXIT 0" in p.stdout, p
    env_line = next(line for line in p.stdout.splitlines() if line.startswith("PARENT-ENV "))
    assert f"CODESUTURE_OVERLAYS={case.store}" in env_line  # exported as absolute paths
    assert f"CODESUTURE_KEYS={case.keys}" in env_line
    assert "CODESUTURE_REQUIRE_SIGNED=1" in env_line and "CODESUTURE_HEAL=0" in env_line, env_line


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_require_signed_and_no_heal_inherited(case, how):
    """The child refuses an unsigned overlay (it inherited --require-signed; without it
    the overlay would load) and does not heal (it inherited --no-heal)."""
    a_unsigned(case)
    p = spawn(case, how, "--overlays", "overlays", "--require-signed", "--no-heal")
    assert p.returncode == 1 and "CHILD-EXIT 1" in p.stdout and PATCHED not in p.stdout, p
    assert CRASH in p.stderr and "unsigned overlay refused" in p.stderr, p
    assert "patched" not in p.stderr, p


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_keys_inherited(file_case, how):
    """The child refuses a bad signature (it inherited --keys; without a trust root it
    would load the overlay from its sidecar)."""
    c = file_case
    a_signature_flipped_byte(c)
    p = spawn(c, how, "--overlays", "overlays", "--keys", "keys", "--no-heal")
    assert p.returncode == 1 and "CHILD-EXIT 1" in p.stdout and PATCHED not in p.stdout, p
    assert CRASH in p.stderr and f"bad signature (key {c.base.kid})" in p.stderr, p


def test_disable_inherited(case):
    p = run([PY, "-m", "codesuture.boot", *strict_options(case), "app/main.py"], case.root,
            clean_env(CODESUTURE_DISABLE="1"))
    assert p.returncode == 1 and CRASH in p.stderr, p
    (case.app / "spawner.py").write_text(SPAWNER_SRC)
    (case.root / "elsewhere").mkdir()
    env = clean_env(CODESUTURE_DISABLE="1")
    p = run([PY, "-m", "codesuture.boot", *strict_options(case), "app/spawner.py", str(case.root / "elsewhere")],
            case.root, env)
    assert "CHILD-EXIT 1" in p.stdout and PATCHED not in p.stdout and "codesuture:" not in p.stderr, p
