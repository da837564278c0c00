"""OCI locations: ``oci://HOST[:PORT]/REPOSITORY(:TAG|@sha256:HEX)``, parsed
(:func:`codesuture.settings.split_oci` holds the grammar) into a :class:`Reference`.
Standard library only."""

from __future__ import annotations

import ipaddress

SCHEME = "oci://"

def is_oci(location: object) -> bool:
    """Whether *location* (a setting's raw value) names an OCI registry location."""
    return isinstance(location, str) and location.strip().startswith(SCHEME)


class Reference:
    """A parsed OCI location: ``registry`` (``host[:port]``), ``repository``, ``tag``
    (or None) and ``digest`` (``sha256:<hex>`` or None; exactly one of the two is set)."""

    __slots__ = ("registry", "repository", "tag", "digest")

    def __init__(self, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest

    def __str__(self) -> str:
        return f"{SCHEME}{self.registry}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag}")

    def __repr__(self) -> str:
        return f"Reference({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def reference(self) -> str:
        """The tag or digest, as the distribution API's ``/manifests/<reference>`` takes it."""
        return self.digest or self.tag or ""

    @property
    def host(self) -> str:
        """The registry's host name or address, without port or brackets."""
        host = self.registry
        if host.startswith("["):
            return host[1:host.index("]")]
        return host.rpartition(":")[0] if ":" in host else host

    @property
    def loopback(self) -> bool:
        """Whether the registry is on this machine (``localhost`` or a loopback address):
        the only place plain HTTP is allowed without ``--plain-http``."""
        host = self.host.lower()
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.registry, self.repository, None, digest)


def parse(location: str) -> Reference:
    """Parse ``oci://HOST[:PORT]/REPOSITORY(:TAG|@sha256:HEX)`` (the grammar is
    :func:`codesuture.settings.split_oci`'s: settings check a location when they load).
    Raises ValueError with a sentence saying what is wrong."""
    from codesuture.settings import split_oci

    return Reference(*split_oci(location))


__all__ = ["SCHEME", "Reference", "is_oci", "parse"]
