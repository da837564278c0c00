"""The one error hierarchy of CodeSuture.

Every error the library raises on purpose derives from :class:`CodeSutureError`, so a
caller (the CLI, a boundary) can contain all of them with one ``except``::

    CodeSutureError
      ConfigError        a setting (flag, environment variable, config file) is invalid
      DiagnosisError     no guard answers this crash
      PatchError         a guard cannot be synthesized, validated or swapped in
      FileError          a file is missing, not a regular file, oversized or unreadable
        OverlayError     an overlay, its metadata or its store is malformed
          OverlayRefused policy refuses an overlay (the original module loads)
      TrustError         a key, signature, envelope, statement or trust root is invalid
        BundleError      a deploy bundle is malformed, unsafe or does not match its set
      RegistryError      an OCI registry cannot be reached, refuses a request or hands over
                         bytes that do not match their digest, media type or size cap
"""

from __future__ import annotations


class CodeSutureError(Exception):
    """Base class of every error CodeSuture raises on purpose."""


class ConfigError(CodeSutureError):
    """A setting is invalid. ``name`` is the flag, environment variable or config key
    as the user wrote it; ``reason`` a short sentence."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")


class DiagnosisError(CodeSutureError):
    """A crash cannot be answered by a guard (unsupported instruction or exception,
    the program catches it itself, the code is not patchable)."""


class PatchError(CodeSutureError):
    """A guard could not be synthesized, was over its diff budget, failed validation,
    or could not be propagated (for example free variables differ)."""


class FileError(CodeSutureError):
    """A file cannot be used: missing, not a regular file (FIFO, device, directory,
    socket, a symlink leaving its store), oversized, or unreadable.

    ``path`` names the file; ``reason`` is a short human sentence.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class OverlayError(FileError):
    """An overlay file, its metadata or its store is malformed or unreadable."""


class OverlayRefused(OverlayError):
    """An overlay exists but policy refuses to load it (stale source, other Python,
    expired, revoked, withdrawn, untrusted key, bad signature, not in the signed set,
    unsigned under --require-signed).

    The original module is loaded instead.
    """


class TrustError(CodeSutureError):
    """A key, signature, envelope, statement or trust root is invalid.

    ``path`` names the file involved when there is one.
    """

    def __init__(self, reason: str, path: object | None = None) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class BundleError(TrustError):
    """A deploy bundle is malformed, unsafe (``..``, absolute paths, links) or does
    not match its signed overlay set."""


class RegistryError(CodeSutureError):
    """An OCI registry cannot be reached in time, answers a request with an error, or
    hands over a manifest or blob that does not match its digest, media type or size
    cap. ``location`` is the ``oci://`` location; ``reason`` a short sentence."""

    def __init__(self, location: object, reason: str) -> None:
        self.location = str(location)
        self.reason = reason
        super().__init__(f"{self.location}: {reason}")
