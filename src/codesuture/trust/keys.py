"""Ed25519 keys, key ids and the trust root (``keys/``).

* Private keys: PEM, PKCS#8, optionally encrypted with a passphrase (best available
  encryption of ``cryptography``), file mode 0600. Never written inside a folder named
  ``keys``: the trust root holds public keys only.
* Public keys: PEM, SubjectPublicKeyInfo.
* Key id: lowercase hex SHA-256 of the DER SubjectPublicKeyInfo (64 characters).
* Trust root: a directory of public keys (``*.pem``, ``*.pub``) plus an optional
  ``revoked.json``::

      {"overlays": ["<sha256 hex of an overlay file>", ...], "keys": ["<key id>", ...]}

All crypto goes through ``cryptography`` (public keys of a trust root through its bindings
when they are the public API's own objects: :mod:`codesuture.trust.ed25519`). Errors are :class:`~codesuture.errors.TrustError`
naming the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re

from codesuture.errors import TrustError
from codesuture.logs import logger
from codesuture.util.digest import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# ``cryptography.hazmat.primitives.serialization`` (about 12 ms to import) and the public
# ``...asymmetric.ed25519`` module (``typing``, ``enum``) are imported only where keys are
# written or private keys read; loading a trust root at start-up needs neither (see
# load_public_key_pem and codesuture.trust.ed25519).

log = logger("codesuture.trust")

REVOKED_FILE = "revoked.json"
PUBLIC_KEY_SUFFIXES = (".pem", ".pub")
#: Cap (bytes) on any key or revocation file, checked before parsing.
MAX_KEY_FILE_BYTES = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")


#: DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 section 4): SEQUENCE {
#: SEQUENCE { OID 1.3.101.112 }, BIT STRING (32-byte key) }. DER is canonical, so this
#: prefix + the raw key *is* the key's SubjectPublicKeyInfo.
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def spki_der(public_key: Ed25519PublicKey) -> bytes:
    """DER SubjectPublicKeyInfo of *public_key* (RFC 8410)."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def keyid(public_key: Ed25519PublicKey) -> str:
    """Key id of *public_key*: lowercase hex SHA-256 of its DER SubjectPublicKeyInfo."""
    return sha256(spki_der(public_key)).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    """*public_key* as PEM SubjectPublicKeyInfo bytes."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _as_bytes(passphrase: str | bytes | None) -> bytes | None:
    if passphrase is None or passphrase == "" or passphrase == b"":
        return None
    return passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase


def _path(p: "str | os.PathLike[str]") -> "Path":
    from pathlib import Path

    return Path(p)


def _inside_keys_folder(path: "Path") -> bool:
    return "keys" in path.resolve().parent.parts


def generate(
    private_path: str | os.PathLike[str],
    public_path: str | os.PathLike[str],
    passphrase: str | bytes | None = None,
    *,
    overwrite: bool = False,
) -> str:
    """Generate an Ed25519 key pair; write the private key (PKCS#8 PEM, encrypted when
    *passphrase* is given, mode 0600) and the public key (SPKI PEM). Returns the key id.

    Raises :class:`TrustError` when *private_path* is inside a folder named ``keys``
    (the trust root is public keys only) or when either file exists and not *overwrite*.
    """
    priv, pub = _path(private_path), _path(public_path)
    if _inside_keys_folder(priv):
        raise TrustError("refusing to write a private key inside a folder named 'keys' (the trust root holds public keys only)", priv)
    if priv.resolve() == pub.resolve():
        raise TrustError("private and public key paths are the same file", priv)
    if not overwrite:
        for p in (priv, pub):
            if p.exists() or p.is_symlink():
                raise TrustError("already exists (refusing to overwrite a key)", p)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from codesuture.util.files import atomic_write

    key = Ed25519PrivateKey.generate()
    secret = _as_bytes(passphrase)
    encryption: "serialization.KeySerializationEncryption" = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    atomic_write(priv, pem, mode=0o600)
    atomic_write(pub, public_pem(key.public_key()), mode=0o644)
    kid = keyid(key.public_key())
    log.info("generated Ed25519 key %s (private %s, public %s)", kid, priv, pub)
    return kid


def _read_small(path: "str | os.PathLike[str]") -> bytes:
    """A key or revocation file: a regular file of at most MAX_KEY_FILE_BYTES."""
    from codesuture.errors import FileError
    from codesuture.util.files import read_regular

    try:
        data = read_regular(path, MAX_KEY_FILE_BYTES)
    except FileError as exc:
        raise TrustError(exc.reason, path) from None
    if data is None:
        raise TrustError("unreadable: No such file or directory", path)
    return data


def load_private_key(path: str | os.PathLike[str], passphrase: str | bytes | None = None) -> Ed25519PrivateKey:
    """Load an Ed25519 private key (PEM PKCS#8). Raises :class:`TrustError` naming
    *path* when it is unreadable, encrypted without a passphrase, the passphrase is
    wrong, or it is not an Ed25519 private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = _path(path)
    data = _read_small(p)
    try:
        key = serialization.load_pem_private_key(data, password=_as_bytes(passphrase))
    except TypeError:
        if _as_bytes(passphrase) is None:
            raise TrustError("private key is encrypted: a passphrase is needed", p) from None
        raise TrustError("a passphrase was given but the private key is not encrypted", p) from None
    except ValueError:
        hint = " (or wrong passphrase)" if b"ENCRYPTED" in data else ""
        raise TrustError(f"not a PEM private key{hint}", p) from None
    except Exception as exc:  # cryptography raises a few backend-specific types
        raise TrustError(f"cannot load private key: {exc}", p) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TrustError(f"not an Ed25519 private key ({type(key).__name__})", p)
    return key


def load_public_key_pem(data: bytes, path: object = "<public key>") -> Ed25519PublicKey:
    """Parse PEM SubjectPublicKeyInfo *data* as an Ed25519 public key; raises
    :class:`TrustError` naming *path*. A private key here is an error, not a fallback."""
    if b"PRIVATE KEY" in data:
        raise TrustError("contains a PRIVATE key; the trust root must hold public keys only", path)
    der = _pem_body(data, b"PUBLIC KEY")
    if der is not None and len(der) == 44 and der.startswith(ED25519_SPKI_PREFIX):
        # The common case, without importing serialization nor the public ed25519 module
        # (codesuture.trust.ed25519): cryptography validates the key.
        from codesuture.trust.ed25519 import public_key

        try:
            return public_key(der[12:])
        except ValueError:
            raise TrustError("not a valid Ed25519 public key", path) from None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except Exception:
        raise TrustError("not a PEM public key (SubjectPublicKeyInfo)", path) from None
    if not isinstance(key, Ed25519PublicKey):
        raise TrustError(f"not an Ed25519 public key ({type(key).__name__})", path)
    return key


def _pem_body(data: bytes, label: bytes) -> bytes | None:
    """The DER inside the one PEM block labelled *label* (RFC 7468), or None."""
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    text = data.strip()
    if not (text.startswith(begin) and text.endswith(end)) or text.count(b"-----BEGIN") != 1:
        return None
    try:
        return base64.b64decode(b"".join(text[len(begin) : -len(end)].split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load one Ed25519 public key PEM file; raises :class:`TrustError` naming it."""
    p = _path(path)
    return load_public_key_pem(_read_small(p), p)


def _load_revocations(path: "str | os.PathLike[str]") -> tuple[frozenset[str], frozenset[str]]:
    """``(overlay digests, key ids)`` from *path*, or empty sets when it is absent."""
    if not os.path.exists(path):
        return frozenset(), frozenset()
    try:
        data = json.loads(_read_small(path))
    except ValueError as exc:
        raise TrustError(f"revocation list is not JSON: {exc}", path) from None
    if not isinstance(data, dict):
        raise TrustError('revocation list must be an object {"overlays": [...], "keys": [...]}', path)
    unknown = set(data) - {"overlays", "keys"}
    if unknown:
        raise TrustError(f"revocation list has unknown fields: {', '.join(sorted(unknown))}", path)
    out: list[frozenset[str]] = []
    for name in ("overlays", "keys"):
        items = data.get(name, [])
        if not isinstance(items, list):
            raise TrustError(f'revocation list field "{name}" must be a list of SHA-256 hex strings', path)
        values = set()
        for item in items:
            if not isinstance(item, str) or not _HEX64.fullmatch(item.lower()):
                raise TrustError(f'revocation list field "{name}" has a malformed entry {item!r} (want 64 hex digits)', path)
            values.add(item.lower())
        out.append(frozenset(values))
    return out[0], out[1]


class TrustRoot:
    """Trusted public keys ``{keyid: key}`` and revocations.

    ``revoked_overlays``: SHA-256 hex digests of overlay files that must not load.
    ``revoked_keys``: key ids whose signatures no longer count (even when the public
    key file is still present). ``path``: the directory it was loaded from.
    """

    __slots__ = ("keys", "revoked_overlays", "revoked_keys", "path")

    def __init__(
        self,
        keys: "dict[str, Ed25519PublicKey] | None" = None,
        revoked_overlays: frozenset[str] = frozenset(),
        revoked_keys: frozenset[str] = frozenset(),
        path: "str | Path | None" = None,
    ) -> None:
        self.keys = dict(keys or {})
        self.revoked_overlays = revoked_overlays
        self.revoked_keys = revoked_keys
        self.path = path  # the directory, as given (str or Path)

    def __repr__(self) -> str:
        return f"TrustRoot({len(self.keys)} key(s), path={self.path!s})"

    @classmethod
    def load(cls, keys_dir: str | os.PathLike[str]) -> "TrustRoot":
        """Load every ``*.pem``/``*.pub`` public key in *keys_dir* and its
        ``revoked.json``; *keys_dir* may also be one public key file (then the
        ``revoked.json`` beside it applies). Raises :class:`TrustError` naming the file
        on any malformed input, or the directory when it is missing."""
        d = os.fspath(keys_dir)  # str, not pathlib: this runs at start-up
        only = None
        if os.path.isfile(d):
            d, only = os.path.split(os.path.abspath(d))
        try:
            names = sorted(os.listdir(d)) if only is None else [only]
        except FileNotFoundError:
            raise TrustError("trust root does not exist (give a folder of public keys or one public key file)", d) from None
        except OSError as exc:
            raise TrustError(f"cannot list trust root: {exc.strerror or exc}", d) from None
        keys: dict[str, Ed25519PublicKey] = {}
        for name in names:
            if only is None and (not name.endswith(PUBLIC_KEY_SUFFIXES) or name.startswith(".")):
                continue
            data = _read_small(os.path.join(d, name))
            key = load_public_key_pem(data, os.path.join(d, name))
            der = _pem_body(data, b"PUBLIC KEY")
            kid = sha256(der).hexdigest() if der is not None and der.startswith(ED25519_SPKI_PREFIX) else keyid(key)
            keys[kid] = key
        overlays, revoked_keys = _load_revocations(os.path.join(d, REVOKED_FILE))
        log.debug("trust root %s: %d key(s), %d revoked overlay(s), %d revoked key(s)", d, len(keys), len(overlays), len(revoked_keys))
        return cls(keys, overlays, revoked_keys, d)

    @classmethod
    def of(cls, *public_keys: Ed25519PublicKey) -> "TrustRoot":
        """A trust root of *public_keys* with no revocations (for library callers/tests)."""
        return cls({keyid(k): k for k in public_keys})

    def is_trusted(self, kid: str) -> bool:
        """True when *kid* names a key in this root that is not revoked."""
        return kid in self.keys and kid not in self.revoked_keys
