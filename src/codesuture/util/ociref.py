"""OCI locations: ``oci://HOST[:PORT]/REPOSITORY(:TAG|@sha256:HEX)``, parsed into a
:class:`Reference` (settings check a location with :func:`split_oci` when they load).
Standard library only; ``re`` and ``ipaddress`` are imported when a location is used."""

from __future__ import annotations

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
        import ipaddress

        host = self.host.lower()
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.registry, self.repository, None, digest)


def split_oci(location: str) -> tuple[str, str, str | None, str | None]:
    """``oci://HOST[:PORT]/REPOSITORY(:TAG|@sha256:HEX)`` -> ``(registry, repository,
    tag, digest)``, one of the last two None. The grammar is the OCI distribution
    spec's: a repository is ``/``-separated components of
    ``[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*``; a tag matches
    ``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``; a digest is ``sha256:`` and 64 lower-case hex
    digits. A location without a tag or digest is refused (a fleet follows one named
    tag, never an implied ``latest``). Raises ValueError saying what is wrong."""
    import re

    component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    text = location.strip()
    if not text.startswith("oci://"):
        raise ValueError(f"{location!r} is not an OCI location (oci://HOST[:PORT]/REPOSITORY:TAG)")
    registry, slash, path = text[len("oci://"):].partition("/")
    if not slash or not registry or not path:
        raise ValueError(f"{location!r}: give a registry and a repository (oci://HOST[:PORT]/REPOSITORY:TAG)")
    host_ok = re.match(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::([0-9]{1,5}))?$", registry)
    if not host_ok or (host_ok.group(1) is not None and not 0 < int(host_ok.group(1)) < 65536):
        raise ValueError(f"{location!r}: {registry!r} is not a registry host[:port]")
    tag = digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not re.match(r"^sha256:[0-9a-f]{64}$", digest):
            raise ValueError(f"{location!r}: {digest!r} is not a sha256 digest (sha256:<64 hex digits>)")
    else:
        head, colon, tag = path.rpartition(":")
        if not colon or "/" in tag:
            raise ValueError(f"{location!r}: name a tag (REPOSITORY:TAG) or a digest (REPOSITORY@sha256:...)")
        path = head
        if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$", tag):
            raise ValueError(f"{location!r}: {tag!r} is not a valid tag")
    if not re.match(rf"^{component}(?:/{component})*$", path):
        raise ValueError(f"{location!r}: {path!r} is not a valid repository name (lower-case components separated by /)")
    return registry, path, tag, digest


def parse(location: str) -> Reference:
    """Parse ``oci://HOST[:PORT]/REPOSITORY(:TAG|@sha256:HEX)`` (:func:`split_oci`).
    Raises ValueError with a sentence saying what is wrong."""
    return Reference(*split_oci(location))


__all__ = ["SCHEME", "Reference", "is_oci", "parse", "split_oci"]
