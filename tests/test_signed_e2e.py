"""The signed-overlay path end to end, through the real importer.

One app (``main.py`` importing ``mod.py``, whose ``lookup`` raises KeyError) is healed
with ``codesuture run``, the overlay signed with ``codesuture sign`` and bundled with
``codesuture bundle create``. Then every attack of docs/threat-model.md is applied to a
copy and the app is run two ways:

* in a subprocess, ``python -m codesuture.boot --overlays D --keys K --require-signed
  --no-heal main.py`` (started through a ``-c`` wrapper that records every
  ``marshal.loads`` call made from CodeSuture's code, with the SHA-256 of its input);
* in process, with :func:`codesuture.loader.finder.install` and ``importlib``, with
  ``codesuture.loader.resolve.marshal`` replaced by a recorder.

An attack passes when: the refusal is one log line with the expected reason, the
ORIGINAL module runs (the app crashes with ``KeyError: 'missing'`` instead of printing
``MARKER patched``), and ``marshal.loads`` was never called by CodeSuture. The positive
controls (the untampered signed overlay, the untampered bundle) print ``MARKER patched``
and unmarshal exactly the verified payload, once.

Also: the kill switch ``CODESUTURE_DISABLE=1``, and the environment-variable
equivalents of the flags, including their inheritance by a subprocess the app starts.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from codesuture.loader import resolve as resolve_mod
from codesuture.loader.finder import install, uninstall
from codesuture.overlay import format as ovformat
from codesuture.overlay.bundle import create_bundle
from codesuture.trust import dsse
from codesuture.trust.keys import keyid, load_private_key
from codesuture.trust.policy import LoadPolicy, clear_trust_root_cache
from codesuture.trust.sign import sign_overlay

PY = sys.executable
TAG = sys.implementation.cache_tag
REPO = Path(__file__).resolve().parents[1]
HERE_VERSION = "%d.%d" % sys.version_info[:2]

MOD_SRC = '''"""A module with a structural bug: a missing mapping key."""


def lookup(d):
    return d["missing"]
'''
MAIN_SRC = '''import mod

value = mod.lookup({"present": 1})
print("MARKER patched" if value is None else f"MARKER unexpected {value!r}")
'''
CRASH = "KeyError: 'missing'"
PATCHED = "MARKER patched"

#: Runs codesuture.boot with marshal.loads wrapped: every call made from CodeSuture's
#: own code prints ``MARSHAL-LOADS <function> <sha256 of the input>`` on stderr.
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


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODESUTURE_") and k != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a one-byte source edit must never meet a stale .pyc
    env.update(extra)
    return env


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
        return [line for line in self.stderr.splitlines() if line.startswith("codesuture:")]

    @property
    def unmarshalled(self) -> list[str]:
        """sha256 of every input CodeSuture passed to marshal.loads (recording runs)."""
        return [line.rsplit(" ", 1)[1] for line in self.stderr.splitlines() if line.startswith("MARSHAL-LOADS ")]


def run(args: list, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Proc:
    args = [os.fspath(a) for a in args]
    p = subprocess.run(args, cwd=cwd, env=env if env is not None else clean_env(), capture_output=True,
                       text=True, timeout=timeout)
    return Proc(args, p.returncode, p.stdout, p.stderr)


def cli(*args, cwd: Path, python: str = PY) -> Proc:
    return run([python, "-m", "codesuture", *args], cwd)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


STEM_SUFFIXES = (".overlay", ".json", ".dsse.json")


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


# --------------------------------------------------------------------------- the healed, signed app


@dataclass
class Base:
    """Built once per module: the app, its healed overlay (signed), keys, a bundle."""

    root: Path
    app: Path
    store: Path
    keys: Path
    signer_key_path: Path
    attacker_key_path: Path
    attacker_keys: Path
    bundle: Path
    stem: str
    kid: str
    attacker_kid: str
    other: dict = field(default_factory=dict)  # cache of the other-Python overlay

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


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    root = tmp_path_factory.mktemp("signed-e2e")
    app = root / "app"
    app.mkdir()
    (app / "mod.py").write_text(MOD_SRC)
    (app / "main.py").write_text(MAIN_SRC)
    plain = run([PY, app / "main.py"], root)
    assert plain.returncode == 1 and CRASH in plain.stderr, plain

    store = root / "overlays"
    healed = cli("run", "--overlays", store, app / "main.py", cwd=root)
    assert healed.returncode == 0 and PATCHED in healed.stdout, healed
    stems = sorted(p.name[: -len(".overlay")] for p in store.glob("*.overlay"))
    prefix = hashlib.sha256(MOD_SRC.encode()).hexdigest()[:16]
    assert stems == [f"mod.{TAG}.{prefix}"], stems

    private = root / "private"
    keys = root / "keys"
    attacker_keys = root / "attacker-keys"
    for name, pub_dir in (("signer", keys), ("attacker", attacker_keys)):
        p = cli("keygen", "--private-key", private / f"{name}.key", "--public-key", pub_dir / f"{name}.pem", cwd=root)
        assert p.returncode == 0, p
    p = cli("sign", "--ttl", "30", "--key", private / "signer.key", store, cwd=root)
    assert p.returncode == 0, p
    p = cli("verify", "--keys", keys, store, cwd=root)
    assert p.returncode == 0, p
    bundle = root / "deploy.zip"
    p = cli("bundle", "create", store, "-o", bundle, "--key", private / "signer.key", cwd=root)
    assert p.returncode == 0, p
    b = Base(root, app, store, keys, private / "signer.key", private / "attacker.key", attacker_keys, bundle,
             stems[0], "", "")
    b.kid = keyid(b.signer().public_key())
    b.attacker_kid = keyid(b.attacker().public_key())
    return b


@dataclass
class Case:
    """A copy of the base artifacts that one test may tamper with."""

    base: Base
    root: Path
    app: Path
    store: Path  # directory store
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


@pytest.fixture
def case(base: Base, tmp_path: Path) -> Case:
    ignore = shutil.ignore_patterns("__pycache__", ".*.lock")
    shutil.copytree(base.app, tmp_path / "app", ignore=ignore)
    shutil.copytree(base.store, tmp_path / "overlays", ignore=ignore)
    shutil.copytree(base.keys, tmp_path / "keys")
    return Case(base, tmp_path, tmp_path / "app", tmp_path / "overlays", tmp_path / "keys", tmp_path / "overlays")


# --------------------------------------------------------------------------- another interpreter


def _pyenv_root() -> str | None:
    if shutil.which("pyenv"):
        try:
            out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            return out
    return os.environ.get("PYENV_ROOT") or (os.path.expanduser("~/.pyenv") if os.path.isdir(os.path.expanduser("~/.pyenv")) else None)


def other_python_candidates() -> list[str]:
    """Interpreters of another supported minor version: $CODESUTURE_OTHER_PYTHON, the
    repository's .venv-X.Y (scripts/test.sh), /work/venvs/pyX.Y, pyenv's versions,
    pythonX.Y on PATH."""
    out: list[str] = []
    if os.environ.get("CODESUTURE_OTHER_PYTHON"):
        out.append(os.environ["CODESUTURE_OTHER_PYTHON"])
    root = _pyenv_root()
    for v in ("3.11", "3.12", "3.13"):
        if v == HERE_VERSION:
            continue
        out += [str(REPO / f".venv-{v}" / "bin" / "python"), f"/work/venvs/py{v}/bin/python"]
        if root:
            out += sorted(glob.glob(f"{root}/versions/{v}.*/bin/python{v}"), reverse=True)
        if shutil.which(f"python{v}"):
            out.append(shutil.which(f"python{v}"))
    return out


def find_other_python() -> tuple[str, bool] | None:
    """(interpreter, whether it can run codesuture) for another Python, or None."""
    for cand in other_python_candidates():
        if not os.access(cand, os.X_OK):
            continue
        try:
            tag = subprocess.run([cand, "-c", "import sys; print(sys.implementation.cache_tag)"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if not tag or tag == TAG:
            continue
        can_heal = subprocess.run([cand, "-c", "import codesuture.cli, bytecode"], capture_output=True,
                                  env=clean_env(), timeout=60).returncode == 0
        return cand, can_heal
    return None


BUILD_WITH_STDLIB = r"""
import base64, importlib.util, json, marshal, platform, sys
path = sys.argv[1]
src = open(path, "rb").read()
print(json.dumps({"payload": base64.b64encode(marshal.dumps(compile(src, path, "exec"))).decode(),
                  "magic": importlib.util.MAGIC_NUMBER.hex(), "cache_tag": sys.implementation.cache_tag,
                  "implementation": sys.implementation.name, "version": platform.python_version()}))
"""


def other_python_overlay(base: Base) -> Path:
    """A signed (by the trusted key) overlay of mod.py built by another interpreter, in
    its own directory. Skips when no other interpreter is found."""
    if "dir" in base.other:
        return base.other["dir"]
    found = find_other_python()
    if found is None:
        pytest.skip(f"no Python other than {HERE_VERSION} found (looked at: {', '.join(other_python_candidates()) or 'nothing'}; "
                    "set CODESUTURE_OTHER_PYTHON or install one with pyenv)")
    python, can_heal = found
    work = base.root / "other-python"
    app = work / "app"
    shutil.copytree(base.app, app, ignore=shutil.ignore_patterns("__pycache__"))
    store = work / "overlays"
    made = False
    if can_heal:  # the real thing: healed by codesuture running on that interpreter
        healed = cli("run", "--overlays", store, app / "main.py", cwd=work, python=python)
        made = healed.returncode == 0 and any(store.glob("mod.*.overlay"))
    if not made:  # a bare interpreter: a valid overlay of the unpatched module, built with its stdlib
        built = json.loads(run([python, "-c", BUILD_WITH_STDLIB, app / "mod.py"], work).stdout)
        payload = base64.b64decode(built["payload"])
        data = ovformat.HEADER.pack(ovformat.FILE_MAGIC, ovformat.FORMAT_VERSION, bytes.fromhex(built["magic"]),
                                    hashlib.sha256(MOD_SRC.encode()).digest(), len(payload)) + payload
        meta = json.loads(base.overlay.with_suffix(".json").read_bytes())
        meta["python"] = {k: built[k] for k in ("implementation", "version", "cache_tag", "magic")}
        meta["overlay_sha256"] = hashlib.sha256(data).hexdigest()
        stem = f"mod.{built['cache_tag']}.{base.stem.rsplit('.', 1)[1]}"
        store.mkdir(parents=True, exist_ok=True)
        (store / f"{stem}.overlay").write_bytes(data)
        (store / f"{stem}.json").write_text(json.dumps(meta))
    (overlay,) = store.glob("mod.*.overlay")
    sign_overlay(overlay, base.signer(), ttl_seconds=30 * 86400)
    base.other.update(dir=store, python=python, healed=made)
    return store


# --------------------------------------------------------------------------- the attacks
# Each takes a fresh Case, tampers with it and returns the regex the refusal must match.


def a_overlay_flipped_byte(c: Case) -> str:
    flip(c.member(".overlay"), -5)  # inside the marshalled code
    return r"overlay bytes do not match the signed subject digest \(tampered\)"


def a_overlay_header_flipped_byte(c: Case) -> str:
    flip(c.member(".overlay"), 20)  # inside the header's source SHA-256
    return r"overlay bytes do not match the signed subject digest \(tampered\)"


def a_envelope_payload_flipped_byte(c: Case) -> str:
    env_path = c.member(".dsse.json")
    env = json.loads(env_path.read_text())
    payload = bytearray(base64.b64decode(env["payload"]))
    i = payload.index(b'"expiresAt":"') + len(b'"expiresAt":"')
    payload[i] = ord("9")  # a much later expiry: the attacker's obvious edit
    env["payload"] = base64.b64encode(bytes(payload)).decode()
    env_path.write_text(json.dumps(env))
    return rf"bad signature \(key {c.base.kid}\)"


def a_signature_flipped_byte(c: Case) -> str:
    env_path = c.member(".dsse.json")
    env = json.loads(env_path.read_text())
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[10] ^= 0x01
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    env_path.write_text(json.dumps(env))
    return rf"bad signature \(key {c.base.kid}\)"


def a_wrong_key_claiming_trusted_keyid(c: Case) -> str:
    """The attacker re-signs the (edited) statement with their own key and names the
    trusted key id: the key id is only a hint."""
    env_path = c.member(".dsse.json")
    env = json.loads(env_path.read_text())
    forged = dsse.sign(base64.b64decode(env["payload"]), env["payloadType"], c.base.attacker())
    env["signatures"] = [{"keyid": c.base.kid, "sig": base64.b64encode(forged.signatures[0].sig).decode()}]
    env_path.write_text(json.dumps(env))
    return rf"bad signature \(key {c.base.kid}\)"


def a_untrusted_key(c: Case) -> str:
    sign_overlay(c.member(".overlay"), c.base.attacker(), ttl_seconds=86400)  # replaces the envelope
    return rf"untrusted key {c.base.attacker_kid}"


def a_unsigned(c: Case) -> str:
    c.member(".dsse.json").unlink()
    return r"unsigned overlay refused"


def a_other_source_bytes(c: Case) -> str:
    """mod.py edited by one byte after signing: the overlay is stale."""
    with open(c.app / "mod.py", "ab") as fh:
        fh.write(b"\n")
    return r"overlay for mod not applied: stale, source .*mod\.py changed since it was built"


def a_other_source_bytes_renamed(c: Case) -> str:
    """...and the attacker renames the stale overlay to the new source's hash prefix:
    the signed subject names the old file."""
    a_other_source_bytes(c)
    rename_stem(c.store, c.stem, c.new_stem)
    return rf"statement subject '{re.escape(c.stem)}\.overlay' is not this overlay"


def a_other_source_bytes_resigned(c: Case) -> str:
    """A trusted signer mistakenly signs the stale overlay under the new source's name:
    the loader still compares the header's source SHA-256 with the real source."""
    a_other_source_bytes(c)
    rename_stem(c.store, c.stem, c.new_stem)
    c.store.joinpath(c.new_stem + ".dsse.json").unlink()
    sign_overlay(c.store / (c.new_stem + ".overlay"), c.base.signer(), ttl_seconds=86400)
    return r"stale: source .*mod\.py changed since it was built"


def _use_other_python(c: Case) -> tuple[str, str]:
    src = other_python_overlay(c.base)
    for f in c.store.iterdir():
        f.unlink()
    for f in src.iterdir():
        if not f.name.startswith("."):
            shutil.copy2(f, c.store / f.name)
    (overlay,) = c.store.glob("mod.*.overlay")
    stem = overlay.name[: -len(".overlay")]
    return stem, stem.split(".")[1]


def a_other_python(c: Case) -> str:
    _, tag = _use_other_python(c)
    return rf"overlay for mod not applied: built for another Python \({tag}; this is {TAG}\)"


def a_other_python_renamed(c: Case) -> str:
    """The attacker renames another Python's overlay to this interpreter's cache tag."""
    stem, tag = _use_other_python(c)
    rename_stem(c.store, stem, stem.replace(tag, TAG))
    return rf"statement subject '{re.escape(stem)}\.overlay' is not this overlay"


def a_other_python_resigned(c: Case) -> str:
    """A trusted signer mistakenly signs another Python's overlay as this one's (name
    and metadata say this cache tag): the header's magic number still differs."""
    stem, tag = _use_other_python(c)
    new = stem.replace(tag, TAG)
    rename_stem(c.store, stem, new)
    meta_path = c.store / (new + ".json")
    meta = json.loads(meta_path.read_text())
    meta["python"]["cache_tag"] = TAG
    meta_path.write_text(json.dumps(meta))
    (c.store / (new + ".dsse.json")).unlink()
    sign_overlay(c.store / (new + ".overlay"), c.base.signer(), ttl_seconds=86400)
    return r"built for another Python \(magic number differs\)"


def a_expired(c: Case) -> str:
    sign_overlay(c.member(".overlay"), c.base.signer(), ttl_seconds=60, now=time.time() - 3600)
    return r"expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def a_revoked_overlay(c: Case) -> str:
    digest = sha256_file(c.member(".overlay"))
    (c.keys / "revoked.json").write_text(json.dumps({"overlays": [digest], "keys": []}))
    return rf"revoked overlay \(sha256 {digest} is in revoked.json\)"


def a_revoked_key(c: Case) -> str:
    (c.keys / "revoked.json").write_text(json.dumps({"overlays": [], "keys": [c.base.kid]}))
    return rf"revoked key {c.base.kid}"


def a_public_key_removed(c: Case) -> str:
    """The signer's public key is gone from keys/ (only another key remains)."""
    (c.keys / "signer.pem").unlink()
    shutil.copy2(c.base.attacker_keys / "attacker.pem", c.keys / "attacker.pem")
    return rf"untrusted key {c.base.kid}"


def a_truncated_overlay(c: Case) -> str:
    p = c.member(".overlay")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return r"overlay bytes do not match the signed subject digest \(tampered\)"


def a_truncated_envelope(c: Case) -> str:
    p = c.member(".dsse.json")
    p.write_bytes(p.read_bytes()[:-40])
    return r"malformed envelope: not JSON"


def a_oversized_overlay(c: Case) -> str:
    os.truncate(c.member(".overlay"), ovformat.MAX_OVERLAY_BYTES + 1)  # sparse: costs no disk
    return rf"oversized \({ovformat.MAX_OVERLAY_BYTES + 1} bytes > {ovformat.MAX_OVERLAY_BYTES}\)"


def a_oversized_envelope(c: Case) -> str:
    from codesuture.overlay.index import MAX_ENVELOPE_BYTES

    os.truncate(c.member(".dsse.json"), MAX_ENVELOPE_BYTES + 1)
    return rf"oversized \({MAX_ENVELOPE_BYTES + 1} bytes > {MAX_ENVELOPE_BYTES}\)"


def _bundle(c: Case, name: str = "deploy.zip") -> Path:
    c.location = c.root / name
    return c.location


def a_bundle_dotdot_member(c: Case) -> str:
    name = f"../{c.stem}.overlay"
    rewrite_zip(c.base.bundle, _bundle(c), add=[(zinfo(name), c.member(".overlay").read_bytes())])
    return r"overlays not loaded from .*deploy\.zip: .*unsafe member name '\.\./.*' \(contains '\.\.'\)"


def a_bundle_absolute_member(c: Case) -> str:
    name = f"/tmp/{c.stem}.overlay"
    rewrite_zip(c.base.bundle, _bundle(c), add=[(zinfo(name), c.member(".overlay").read_bytes())])
    return r"overlays not loaded from .*deploy\.zip: .*unsafe member name '/tmp/.*' \(absolute path\)"


def a_bundle_symlink_member(c: Case) -> str:
    """The overlay member replaced by a symlink to a file outside the bundle."""
    outside = c.root / "outside.overlay"
    outside.write_bytes(c.member(".overlay").read_bytes())
    name = f"{c.stem}.overlay"
    rewrite_zip(c.base.bundle, _bundle(c),
                replace={name: (zinfo(name, stat.S_IFLNK | 0o777), str(outside).encode())})
    return rf"overlays not loaded from .*deploy\.zip: .*member '{re.escape(name)}' is a symlink"


def a_bundle_overlay_missing_from_manifest(c: Case) -> str:
    """A correctly signed bundle of another overlay, with this (individually validly
    signed) overlay slipped in: it is not in the signed manifest."""
    decoy_dir = c.root / "decoy"
    decoy_dir.mkdir()
    shutil.copy2(c.member(".overlay"), decoy_dir / f"decoy.{TAG}.{'0' * 16}.overlay")
    meta = json.loads(c.member(".json").read_text())
    meta.update(module="decoy", key="decoy", source_sha256="0" * 64)
    (decoy_dir / f"decoy.{TAG}.{'0' * 16}.json").write_text(json.dumps(meta))
    sign_overlay(decoy_dir / f"decoy.{TAG}.{'0' * 16}.overlay", c.base.signer(), ttl_seconds=86400)
    legit = create_bundle(decoy_dir, c.root / "legit.zip", c.base.signer()).path
    rewrite_zip(legit, _bundle(c), add=[(zinfo(c.stem + s), c.member(s).read_bytes()) for s in STEM_SUFFIXES])
    return rf"overlays not loaded from .*deploy\.zip: .*member '{re.escape(c.stem)}\..*' is not in the signed manifest"


def a_bundle_manifest_untrusted_key(c: Case) -> str:
    create_bundle(c.store, _bundle(c), c.base.attacker())
    return r"overlays not loaded from .*deploy\.zip: .*manifest does not verify: untrusted key"


def a_bundle_tampered_member(c: Case) -> str:
    name = f"{c.stem}.overlay"
    data = bytearray(c.member(".overlay").read_bytes())
    data[-5] ^= 0x01
    rewrite_zip(c.base.bundle, _bundle(c), replace={name: (zinfo(name), bytes(data))})
    return rf"member '{re.escape(name)}' does not match its digest in the signed manifest"


ATTACKS: dict[str, Callable[[Case], str]] = {
    name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("a_") and callable(fn)
}


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
    lines = p.log_lines
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
    case's store (or bundle) under the strict policy; marshal inside resolve recorded."""
    recorder = MarshalRecorder()
    monkeypatch.setattr(resolve_mod, "marshal", recorder)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setenv("CODESUTURE_KEYS", str(c.keys))  # a bundle store reads its policy from the environment
    monkeypatch.setenv("CODESUTURE_REQUIRE_SIGNED", "1")
    monkeypatch.syspath_prepend(str(c.app))
    monkeypatch.delitem(sys.modules, "mod", raising=False)
    clear_trust_root_cache()
    collect = Collect()
    log = logging.getLogger("codesuture")
    old_level = log.level
    log.addHandler(collect)
    log.setLevel(logging.INFO)
    try:
        finder = install(str(c.location), LoadPolicy(c.keys, require_signed=True))
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
    assert finder is not None or c.location.is_file(), "the store was not indexed"
    assert os.path.samefile(module.__file__, c.app / "mod.py")
    return InProcess(module, recorder.calls, collect.lines)


# --------------------------------------------------------------------------- positive controls


def test_the_app_crashes_without_codesuture(case):
    p = run([PY, "app/main.py"], case.root)
    assert p.returncode == 1 and CRASH in p.stderr, p


@pytest.mark.parametrize("store", ["directory", "bundle"])
def test_signed_overlay_loads(case, store):
    if store == "bundle":
        case.location = case.base.bundle
    p = boot_recorded(case, *strict_options(case))
    assert p.returncode == 0 and PATCHED in p.stdout, p
    assert p.log_lines == [], p
    assert p.unmarshalled == [case.base.payload_sha256], f"want one marshal.loads, of the verified payload:\n{p}"


@pytest.mark.parametrize("store", ["directory", "bundle"])
def test_signed_overlay_loads_in_process(case, store, monkeypatch):
    if store == "bundle":
        case.location = case.base.bundle
    got = import_in_process(case, monkeypatch)
    assert got.module.lookup({}) is None  # the patched code
    assert got.unmarshalled == [case.base.payload_sha256]
    assert got.warnings() == [], got.log
    assert any(f"loaded overlay {case.stem} for mod" in line for line in got.log), got.log


def test_signed_overlay_loads_with_plain_boot(case):
    """The documented command line itself, no wrapper."""
    p = run([PY, "-m", "codesuture.boot", *strict_options(case), "app/main.py"], case.root)
    assert p.returncode == 0 and p.stdout == PATCHED + "\n" and p.stderr == "", p


def test_cli_verify_and_bundle_verify(case):
    assert cli("verify", "--keys", case.keys, case.store, cwd=case.root).returncode == 0
    assert cli("verify", "--keys", case.keys, case.base.bundle, cwd=case.root).returncode == 0
    assert cli("bundle", "verify", "--keys", case.keys, case.base.bundle, cwd=case.root).returncode == 0


# --------------------------------------------------------------------------- the attacks


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_refused_through_boot(case, attack):
    reason = ATTACKS[attack](case)
    p = boot_recorded(case, *strict_options(case))
    assert_refused_once(p, reason)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_refused_in_process(case, attack, monkeypatch):
    reason = ATTACKS[attack](case)
    got = import_in_process(case, monkeypatch)
    with pytest.raises(KeyError, match="missing"):
        got.module.lookup({})  # the original code
    assert got.unmarshalled == [], "marshal.loads reached with unverified bytes"
    warnings = got.warnings()
    assert len(warnings) == 1 and re.search(reason, warnings[0]), got.log


@pytest.mark.parametrize("attack", ["overlay_flipped_byte", "signature_flipped_byte", "untrusted_key", "expired",
                                    "revoked_overlay", "revoked_key", "truncated_overlay", "oversized_overlay"])
def test_attack_fails_cli_verify(case, attack):
    """``codesuture verify`` refuses what the loader refuses (for attacks it can see
    without the module's source)."""
    reason = ATTACKS[attack](case)
    p = cli("verify", "--keys", case.keys, case.store, cwd=case.root)
    assert p.returncode == 1 and p.stdout.startswith("FAIL ") and re.search(reason, p.stdout), p


def test_other_python_overlay_beside_this_pythons_loads(case):
    """Overlays for several interpreters can share a store: each Python picks its own."""
    src = other_python_overlay(case.base)
    for f in src.iterdir():
        if not f.name.startswith("."):
            shutil.copy2(f, case.store / f.name)
    p = boot_recorded(case, *strict_options(case))
    assert p.returncode == 0 and PATCHED in p.stdout and p.log_lines == [], p
    assert p.unmarshalled == [case.base.payload_sha256], p


def test_other_python_overlay_was_built_by_that_interpreter(base):
    """Report how the other-Python overlay was made (healed there, or a bare build)."""
    store = other_python_overlay(base)
    (overlay,) = store.glob("mod.*.overlay")
    header = ovformat.parse(overlay.read_bytes())
    from importlib.util import MAGIC_NUMBER

    assert header.magic_number != MAGIC_NUMBER
    assert TAG not in overlay.name
    if not base.other["healed"]:
        pytest.skip(f"{base.other['python']} cannot run codesuture; a stdlib-built overlay was used instead")


# --------------------------------------------------------------------------- kill switch and environment


def test_disable_turns_everything_off(case):
    p = boot_recorded(case, *strict_options(case), env=clean_env(CODESUTURE_DISABLE="1"))
    assert_original_ran(p)
    assert p.log_lines == [], p


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


@pytest.mark.parametrize("store", ["directory", "bundle"])
def test_environment_variables_without_flags(case, store):
    if store == "bundle":
        case.location = case.base.bundle
    p = boot_recorded(case, env=env_settings(case))
    assert p.returncode == 0 and PATCHED in p.stdout and p.log_lines == [], p
    assert p.unmarshalled == [case.base.payload_sha256], p


@pytest.mark.parametrize("attack", ["signature_flipped_byte", "untrusted_key", "expired", "bundle_symlink_member"])
def test_environment_variables_refuse_attacks(case, attack):
    reason = ATTACKS[attack](case)
    p = boot_recorded(case, env=env_settings(case))
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
    the unsigned overlay loads, with a WARNING line."""
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
def test_keys_inherited(case, how):
    """The child refuses a bad signature (it inherited --keys; without a trust root it
    would load the overlay from its sidecar)."""
    a_signature_flipped_byte(case)
    p = spawn(case, how, "--overlays", "overlays", "--keys", "keys", "--no-heal")
    assert p.returncode == 1 and "CHILD-EXIT 1" in p.stdout and PATCHED not in p.stdout, p
    assert CRASH in p.stderr and f"bad signature (key {case.base.kid})" in p.stderr, p


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
