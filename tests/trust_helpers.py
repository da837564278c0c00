"""Shared helpers for the trust/bundle/sigstore tests: hand-made overlays and keys."""

from __future__ import annotations

import hashlib
import marshal
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from codesuture.overlay import format as ovformat
from codesuture.overlay.model import OverlayMeta
from codesuture.overlay.store import DirEntry, parse_stem, stem_for
from codesuture.patch.spec import GuardSpec, PatchRecord
from codesuture.trust import keys as keymod
from codesuture.trust.policy import LoadPolicy, clear_trust_root_cache
from codesuture.trust.sign import sign_overlay

SOURCE = b"def f(x):\n    return x.attr\n\nVALUE = 42\n"


def shared_dir() -> Path | None:
    """../shared (or $CODESUTURE_SHARED) when present."""
    env = os.environ.get("CODESUTURE_SHARED")
    p = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    return p if p.is_dir() else None


def make_overlay(directory: Path, module: str = "demo.mod", source: bytes = SOURCE, expires: str = "") -> Path:
    """Write ``<stem>.overlay`` and ``<stem>.json`` for *source*; return the overlay path."""
    directory.mkdir(parents=True, exist_ok=True)
    code = compile(source, f"{module}.py", "exec")
    data = ovformat.pack(marshal.dumps(code), source)
    src_sha = hashlib.sha256(source).hexdigest()
    stem = stem_for(module, src_sha)
    patch = PatchRecord(
        module=module, qualname="f", firstlineno=1, offset=4, opname="LOAD_ATTR", line=2,
        expression="x.attr", exception="AttributeError", guard=GuardSpec("null_guard", "attr", "None"),
        added=5, removed=0, evidence={"repro": "fails-without-passes-with"},
    )
    meta = OverlayMeta(
        module=module, key=module, origin=f"/src/{module}.py", source_sha256=src_sha,
        overlay_sha256=hashlib.sha256(data).hexdigest(), created="2026-01-01T00:00:00Z",
        expires=expires, patches=[patch],
    )
    (directory / (stem + ".overlay")).write_bytes(data)
    (directory / (stem + ".json")).write_bytes(meta.dumps())
    return directory / (stem + ".overlay")


def entry_for(overlay: Path) -> DirEntry:
    stem = overlay.name[: -len(".overlay")]
    parsed = parse_stem(stem)
    assert parsed
    return DirEntry(overlay.parent, stem, *parsed)


def add_key(keys_dir: Path, name: str = "ci") -> Ed25519PrivateKey:
    """A fresh private key whose public half is in *keys_dir* as ``<name>.pem``."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    (keys_dir / f"{name}.pem").write_bytes(keymod.public_pem(key.public_key()))
    clear_trust_root_cache()
    return key


@dataclass
class Signed:
    """One signed overlay in ``tmp/overlays`` with its trust root ``tmp/keys``."""

    overlay: Path
    keys_dir: Path
    key: Ed25519PrivateKey
    keyid: str

    @property
    def envelope(self) -> Path:
        return self.overlay.with_name(self.overlay.name[: -len(".overlay")] + ".dsse.json")

    @property
    def entry(self) -> DirEntry:
        return entry_for(self.overlay)

    @property
    def policy(self) -> LoadPolicy:
        return LoadPolicy(self.keys_dir)


def make_signed(tmp: Path, ttl_seconds: float | None = None, now: float | None = None, module: str = "demo.mod") -> Signed:
    keys_dir = tmp / "keys"
    key = add_key(keys_dir)
    overlay = make_overlay(tmp / "overlays", module=module)
    sign_overlay(overlay, key, ttl_seconds=ttl_seconds, now=now)
    return Signed(overlay, keys_dir, key, keymod.keyid(key.public_key()))


def forbid_unmarshal(monkeypatch) -> list:
    """Make ``marshal.loads`` fail loudly unless the import system calls it (reading a
    ``.pyc`` of a lazily imported module). Returns the list of forbidden calls."""
    import marshal
    import sys

    real = marshal.loads
    calls: list = []

    def guarded(*args, **kwargs):
        caller = sys._getframe(1)
        if "importlib" in caller.f_code.co_filename:
            return real(*args, **kwargs)
        calls.append(caller.f_code.co_filename)
        raise AssertionError("marshal.loads reached outside the import system")

    monkeypatch.setattr(marshal, "loads", guarded)
    return calls
