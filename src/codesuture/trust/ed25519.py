"""Ed25519 public keys for signature checks at start-up, at the cost of the bindings only.

Why this module exists: importing ``cryptography``'s public
``cryptography.hazmat.primitives.asymmetric.ed25519`` costs a start about 40 M
instructions (3.12; ``cryptography.utils`` and ``_serialization`` import ``typing`` and
``enum``), of which ``cryptography``'s compiled bindings are about a fifth. Since
``cryptography`` 42 the public ``Ed25519PublicKey.from_public_bytes`` is one line that
returns the bindings' key object (``openssl.ed25519.from_public_bytes``), so a key made
here is *the same object*, verified by the same implementation, as the public API's: this
module only skips the import of the public wrapper module. It is a deliberate start-up
choice (``docs/threat-model.md``, "Signature checks at start-up"); everything else in
CodeSuture (signing, key files, ``serialization``) goes through the public API.

The bindings are used only behind a strict capability check (:func:`_from_bindings`):
``cryptography`` 42 or later, ``openssl.ed25519.from_public_bytes`` callable and its
key type exposing ``verify``. Any other ``cryptography`` (the project supports 3.4 and
later) gets the public API, unchanged.

A failed check raises ``cryptography.exceptions.InvalidSignature`` on either path (the
bindings raise the public exception class). :func:`is_bad_signature` classifies an
exception without importing ``cryptography.exceptions`` (which imports ``typing``) until
a check actually fails, so a start whose signatures all verify never pays for it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any, Callable

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

#: The first ``cryptography`` major version whose public ``from_public_bytes`` returns
#: the bindings' key object as is.
MIN_BINDINGS_MAJOR = 42

_UNSET: Any = object()
_FROM_BINDINGS: "Callable[[bytes], Any] | None" = _UNSET


def _from_bindings() -> "Callable[[bytes], Any] | None":
    """``openssl.ed25519.from_public_bytes`` of ``cryptography``'s bindings when this
    ``cryptography`` passes the capability check, else None (checked once per process)."""
    global _FROM_BINDINGS
    if _FROM_BINDINGS is not _UNSET:
        return _FROM_BINDINGS
    found = None
    try:
        import cryptography

        major = int(str(getattr(cryptography, "__version__", "0")).partition(".")[0])
        if major >= MIN_BINDINGS_MAJOR:
            from cryptography.hazmat.bindings._rust import openssl

            ed = openssl.ed25519
            make = getattr(ed, "from_public_bytes", None)
            if callable(make) and callable(getattr(getattr(ed, "Ed25519PublicKey", None), "verify", None)):
                found = make
    except Exception:  # any other layout of the bindings: the public API
        found = None
    _FROM_BINDINGS = found
    return found


def public_key(raw: bytes) -> "Ed25519PublicKey":
    """The Ed25519 public key whose 32 raw bytes (RFC 8032 section 5.1.5) are *raw*.

    Raises ``ValueError`` when *raw* is not a valid key (as the public
    ``Ed25519PublicKey.from_public_bytes`` does). The key verifies with
    ``key.verify(signature: bytes, message: bytes) -> None``, raising
    ``cryptography.exceptions.InvalidSignature`` on a bad signature."""
    make = _from_bindings()
    if make is not None:
        key: Ed25519PublicKey = make(raw)
        return key
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_via_api(raw: bytes) -> "Ed25519PublicKey":
    """:func:`public_key` through ``cryptography``'s public API only (the fallback path)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


def is_bad_signature(exc: BaseException) -> bool:
    """True when *exc* is what a failed ``verify`` raises: ``InvalidSignature``, or the
    ``ValueError`` some ``cryptography`` versions raise for a signature of the wrong
    length. ``cryptography.exceptions`` is imported here, on the first failure only."""
    if isinstance(exc, ValueError):
        return True
    from cryptography.exceptions import InvalidSignature

    return isinstance(exc, InvalidSignature)
