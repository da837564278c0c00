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
from codesuture.overlay.names import parse_stem, stem_for
from codesuture.patch.spec import GuardSpec, PatchRecord
from codesuture.ship.sign import write_envelope
from codesuture.store import Entry
from codesuture.store.directory import DirectoryStore
from codesuture.trust import keys as keymod
from codesuture.trust.policy import LoadPolicy, clear_trust_root_cache

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
        module=module, key=module, origin=f"app:{module.replace('.', '/')}.py", source_sha256=src_sha,
        overlay_sha256=hashlib.sha256(data).hexdigest(), created="2026-01-01T00:00:00Z",
        expires=expires, patches=[patch],
    )
    (directory / (stem + ".overlay")).write_bytes(data)
    (directory / (stem + ".json")).write_bytes(meta.dumps())
    return directory / (stem + ".overlay")


def entry_for(overlay: Path) -> Entry:
    stem = overlay.name[: -len(".overlay")]
    parsed = parse_stem(stem)
    assert parsed
    return Entry(DirectoryStore(overlay.parent, budget=None), stem, *parsed)


def sign_overlay(overlay: Path, key: Ed25519PrivateKey, ttl_seconds: float | None = None, now: float | None = None,
                 set_name: str | None = None):
    """Sign a hand-made overlay (no rebuild check: it has no source); returns
    ``(SignResult, set member)``."""
    data = overlay.read_bytes()
    sidecar = overlay.with_name(overlay.name[: -len(".overlay")] + ".json").read_bytes()
    return write_envelope(str(overlay), data, sidecar, OverlayMeta.loads(sidecar), key, ttl_seconds=ttl_seconds,
                          now=now, set_name=set_name)


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
    def entry(self) -> Entry:
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


# --------------------------------------------------------------- signed folders (sets)

SET = "demo"


def sign_folder_raw(directory: Path, key: Ed25519PrivateKey, *, set_name: str = SET, now: float | None = None,
                    ttl_seconds: float | None = None, expires: str | None = None,
                    stems: "set[str] | None" = None, envelopes: bool = True):
    """Sign every hand-made overlay of *directory* into its signed overlay set, through
    the unchecked low half of ``codesuture sign`` (:func:`write_envelope` +
    :func:`write_set`; no rebuild check: these overlays have no source). The set gets
    the version after the one already there. *stems*: only these overlays (default
    all). *envelopes*: False re-signs only the set over the files as they are (their
    envelopes must exist). Returns the set's :class:`SignResult`."""
    from codesuture.overlay.names import ENVELOPE_SUFFIX, META_SUFFIX, OVERLAY_SUFFIX
    from codesuture.ship.sign import write_set

    members = {}
    for overlay in sorted(directory.glob("*" + OVERLAY_SUFFIX)):
        stem = overlay.name[: -len(OVERLAY_SUFFIX)]
        if stems is not None and stem not in stems:
            continue
        if envelopes:
            _, member = sign_overlay(overlay, key, ttl_seconds=ttl_seconds, now=now, set_name=set_name)
        else:
            from codesuture.trust.dsse import Envelope
            from codesuture.trust.statement import meta_from_statement

            files = {stem + s: (directory / (stem + s)).read_bytes() for s in (OVERLAY_SUFFIX, META_SUFFIX, ENVELOPE_SUFFIX)}
            meta = meta_from_statement(Envelope.loads(files[stem + ENVELOPE_SUFFIX]).payload, overlay.name, strict=False)[0]
            fields = {"key": meta.key, "module": meta.module, "source_sha256": meta.source_sha256,
                      "cache_tag": meta.python.get("cache_tag", ""), "magic": meta.python.get("magic", ""),
                      "expiresAt": meta.expires, "tier": meta.tier}
            member = (fields, files)
        members[stem] = member
    result = write_set(str(directory), members, key, set_name, now=now, expires=expires)
    clear_trust_root_cache()
    return result


@dataclass
class SignedSet:
    """A folder ``tmp/overlays`` of hand-made overlays signed into set ``demo``, with
    its trust root ``tmp/keys`` and a host-state folder ``tmp/state``."""

    directory: Path
    keys_dir: Path
    key: Ed25519PrivateKey
    keyid: str
    overlays: dict
    state_dir: Path
    now: float | None = None
    ttl_seconds: float | None = None

    @property
    def set_path(self) -> Path:
        from codesuture.overlay.names import SET_NAME

        return self.directory / SET_NAME

    def overlay(self, module: str = "demo.mod") -> Path:
        return self.overlays[module]

    def file(self, module: str, suffix: str) -> Path:
        o = self.overlays[module]
        return o.with_name(o.name[: -len(".overlay")] + suffix)

    def entry(self, module: str = "demo.mod") -> Entry:
        return entry_for(self.overlays[module])

    def policy(self, **kw) -> LoadPolicy:
        kw.setdefault("state_dir", str(self.state_dir))
        return LoadPolicy(self.keys_dir, **kw)

    def resign(self, **kw):
        """Sign the folder again (the set's next version)."""
        kw.setdefault("now", self.now)
        kw.setdefault("ttl_seconds", self.ttl_seconds)
        return sign_folder_raw(self.directory, self.key, **kw)


def make_signed_set(tmp: Path, modules: tuple = ("demo.mod", "pkg.other"), *, now: float | None = None,
                    ttl_seconds: float | None = None, set_name: str = SET) -> SignedSet:
    """Hand-made overlays of *modules* in ``tmp/overlays``, signed into a set (v1)."""
    keys_dir = tmp / "keys"
    key = add_key(keys_dir)
    overlays = {}
    for i, module in enumerate(modules):
        overlays[module] = make_overlay(tmp / "overlays", module=module, source=SOURCE + f"N = {i}\n".encode())
    s = SignedSet(tmp / "overlays", keys_dir, key, keymod.keyid(key.public_key()), overlays, tmp / "state", now,
                  ttl_seconds)
    sign_folder_raw(s.directory, key, set_name=set_name, now=now, ttl_seconds=ttl_seconds)
    return s


# --------------------------------------------------------------- real, rebuildable overlays

APP_MODULES = {
    "seta": "def get(d):\n    return d['k']\n",
    "setb": "def get(d):\n    return d.attr\n",
    "setc": "def get(d):\n    return d[0]\n",
}


def healed_app(root: Path, modules: dict | None = None) -> tuple[Path, Path]:
    """An app ``root/app`` (pyproject.toml named ``demoapp``) whose modules crash, healed
    by ``codesuture run`` into ``root/app/overlays``: real overlays that ``codesuture
    sign`` can rebuild. Returns ``(app, overlays)``."""
    import subprocess
    import sys

    from heal_helpers import clean_env

    modules = APP_MODULES if modules is None else modules
    app = root / "app"
    app.mkdir(parents=True)
    (app / "pyproject.toml").write_text('[project]\nname = "demoapp"\n')
    for name, text in modules.items():
        (app / f"{name}.py").write_text(text)
    calls = {"seta": "{}", "setb": "None", "setc": "[]"}
    (app / "main.py").write_text(
        "".join(f"import {m}\n" for m in modules) + "".join(f"print({m}.get({calls.get(m, '{}')}))\n" for m in modules))
    p = subprocess.run([sys.executable, "-m", "codesuture", "run", "--retries", str(len(modules) + 2), "--overlays",
                        str(app / "overlays"), str(app / "main.py")], cwd=app, env=clean_env(), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    found = sorted(x.name for x in (app / "overlays").glob("*.overlay"))
    assert len(found) == len(modules), (found, p.stderr)
    return app, app / "overlays"


# --------------------------------------------------------------- hostile files

class Hung(AssertionError):
    """Raised in the main thread when a call blocks past its deadline."""


def deadline(seconds: float = 5.0):
    """Context manager: fail with :class:`Hung` if the block runs longer than
    *seconds* (SIGALRM interrupts a blocking ``open``/``read`` of a FIFO)."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def _cm():
        def _alarm(signum, frame):
            raise Hung(f"blocked for more than {seconds} s")

        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    return _cm()
