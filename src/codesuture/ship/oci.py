"""Signed bundles in an OCI registry: push, tag lookups, capped pulls (the ORAS SDK).

An overlay bundle travels as one OCI artifact (OCI image manifest v1, distribution
spec v1.1 API)::

    config   application/vnd.codesuture.bundle.config.v1+json   {"set": name, "version": n, "signer": keyid}
    layer 0  application/vnd.codesuture.overlay-set.v1+dsse+json the bundle's signed overlay set (DSSE)
    layer 1  application/vnd.codesuture.bundle.v1+zip            the bundle (codesuture.store.bundle)
    annotations  dev.codesuture.set.name / .version / .signer    (informational: never trusted)

The registry is an **untrusted transport**: nothing it says is believed until the
signed set verified against the host's trust root. What this module checks is only
what keeps a hostile or broken registry from hurting the host (a refusal is a
:class:`~codesuture.errors.BundleError`; a registry that cannot be reached or answers
an error, a :class:`~codesuture.errors.RegistryError`): every manifest is
fetched by digest and its bytes hashed (SHA-256) against that digest, every blob is
hashed against its descriptor, and nothing is read past a cap (manifest
:data:`MAX_MANIFEST_BYTES`, set :data:`~codesuture.overlay.names.MAX_SET_BYTES`,
bundle :data:`MAX_PULL_BYTES`); the descriptor's declared size must fit the cap before
a byte is fetched. Each HTTP request is made once (no retries: the next poll is the
retry) with a timeout, so a caller bounds its wait (:class:`Client` ``deadline``).

Plain HTTP is used for a registry on a loopback address, or with ``plain_http``;
anything else is HTTPS with certificate verification. Credentials: ``~/.docker/config.json``
(``auths``, ``credsStore``, ``credHelpers``: ORAS reads them as docker does), or a
username and password given to :class:`Client` (the CLI reads the password from an
environment variable, never from its command line); sent as the registry's challenge
asks: the distribution token flow, or HTTP basic for an htpasswd registry.

``oras`` and ``requests`` are imported when a :class:`Client` is made: only by a
command or a process that uses an ``oci://`` location (``pip install codesuture[oci]``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from codesuture.errors import BundleError, RegistryError
from codesuture.overlay.names import MAX_SET_BYTES
from codesuture.util.ociref import Reference

MEDIA_CONFIG = "application/vnd.codesuture.bundle.config.v1+json"
MEDIA_SET = "application/vnd.codesuture.overlay-set.v1+dsse+json"
MEDIA_BUNDLE = "application/vnd.codesuture.bundle.v1+zip"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ANNOTATION_SET_NAME = "dev.codesuture.set.name"
ANNOTATION_SET_VERSION = "dev.codesuture.set.version"
ANNOTATION_SIGNER = "dev.codesuture.set.signer"
#: Caps (bytes): a manifest, and a bundle blob pulled from a registry.
MAX_MANIFEST_BYTES = 64 * 1024
MAX_PULL_BYTES = 64 * 1024 * 1024
#: Seconds one request may take when the caller gives no deadline.
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Artifact:
    """A bundle artifact as its manifest describes it: manifest ``digest``, the set and
    bundle layer descriptors (``{"digest", "size", "mediaType"}``) and the manifest's
    (unverified, informational) annotations."""

    digest: str
    set_layer: dict[str, Any]
    bundle_layer: dict[str, Any]
    annotations: dict[str, str]


def _oras(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RegistryError("oci://", "oci:// locations need the ORAS client: pip install 'codesuture[oci]'") from None


_ONCE: Any = None


def _registry_class() -> Any:
    """``oras.provider.Registry`` whose requests are made once, not retried with
    sleeps of up to a minute (ORAS's default): the caller's deadline holds."""
    global _ONCE
    if _ONCE is None:
        provider = _oras("oras.provider")
        once = getattr(provider.Registry.do_request, "__wrapped__", provider.Registry.do_request)

        class OneShotRegistry(provider.Registry):  # type: ignore[name-defined]
            def do_request(self, url: str, method: str = "GET", data: Any = None, headers: Any = None,
                           json: Any = None, stream: bool = False) -> Any:
                return once(self, url, method, data, headers, json, stream)

        _ONCE = OneShotRegistry
    return _ONCE


class Client:
    """One registry repository, for one command or one look at a tag.

    *ref*: the location. *plain_http*: no TLS (implied for loopback). *deadline*: a
    ``time.monotonic()`` value after which every request fails (None: each request has
    :data:`DEFAULT_TIMEOUT`). *username*/*password*: basic credentials (else docker's
    config file). *agent*: appended to the ``User-Agent`` (the host cache's id, so a
    registry's log tells hosts apart). Raises :class:`RegistryError` when ``oras`` is
    not installed.

    Lookups and pulls use ORAS's authentication (``oras.auth``: docker's config file,
    credential helpers, the distribution token flow) over one ``requests`` session;
    ``oras.provider`` (which imports ``jsonschema`` to validate what it pushes: seconds
    of start-up in a worker) is imported by :meth:`push` only."""

    def __init__(self, ref: Reference, *, plain_http: bool = False, deadline: float | None = None,
                 username: str | None = None, password: str | None = None, agent: str = "") -> None:
        from http.cookiejar import DefaultCookiePolicy

        from codesuture import __version__

        auth_mod, container_mod, requests = _oras("oras.auth"), _oras("oras.container"), _oras("requests")
        self.ref = ref
        self.deadline = deadline
        self.insecure = plain_http or ref.loopback
        self.prefix = "http" if self.insecure else "https"
        self.agent = f"codesuture/{__version__}" + (f" {agent}" if agent else "")
        self.username, self.password = username, password
        session = self.session = requests.Session()
        session.headers["User-Agent"] = self.agent
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        if ref.loopback:
            session.trust_env = False  # a proxy from the environment never serves 127.0.0.1
        self.auth = auth_mod.get_auth_backend("token", session, self.insecure, tls_verify=True)
        self.auth.hostname = ref.registry
        if username is not None:
            self.auth.set_basic_auth(username, password or "")
        self._container = container_mod.Container(f"{ref.registry}/{ref.repository}:{ref.tag or 'latest'}",
                                                  registry=ref.registry)
        self._configs_loaded = False
        self.requests = 0

    def _timeout(self) -> float:
        if self.deadline is None:
            return DEFAULT_TIMEOUT
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RegistryError(self.ref, "no answer within the time allowed")
        return left

    def _request(self, method: str, url: str, headers: dict[str, str] | None = None, stream: bool = False) -> Any:
        """One request (and one more after an authentication challenge), no retries."""
        if not self._configs_loaded:
            self.auth.load_configs(self._container)  # ~/.docker/config.json: auths, credsStore, credHelpers
            self._configs_loaded = True
        headers = dict(headers or {})
        headers.update(self.auth.get_auth_header())
        try:
            self.requests += 1
            r = self.session.request(method, url, headers=headers, stream=stream, timeout=self._timeout())
            if r.status_code in (401, 403):
                challenge = r.headers.get("Www-Authenticate", "")
                basic = getattr(self.auth, "_basic_auth", None)  # what ORAS read from docker's config, or ours
                if challenge.lower().startswith("basic"):  # an htpasswd registry: no token flow
                    if basic:
                        headers["Authorization"] = f"Basic {basic}"
                    changed = bool(basic)
                else:
                    headers, changed = self.auth.authenticate_request(r, headers)
                if changed:
                    r.close()
                    self.requests += 1
                    r = self.session.request(method, url, headers=headers, stream=stream, timeout=self._timeout())
            return r
        except RegistryError:
            raise
        except Exception as exc:  # requests' ConnectionError, Timeout, ...
            raise RegistryError(self.ref, f"{method} failed: {_short(exc)}") from None

    def _url(self, kind: str, reference: str) -> str:
        return f"{self.prefix}://{self.ref.registry}/v2/{self.ref.repository}/{kind}/{reference}"

    # ------------------------------------------------------------------ reading

    def resolve(self) -> str:
        """The manifest digest the location's tag points to now (one ``HEAD`` request;
        a location with a digest is returned as it is). Raises RegistryError."""
        if self.ref.digest:
            return self.ref.digest
        r = self._request("HEAD", self._url("manifests", self.ref.reference), headers={"Accept": MEDIA_MANIFEST})
        if r.status_code == 404:
            raise RegistryError(self.ref, "no such tag in the registry")
        if r.status_code in (401, 403):
            raise RegistryError(self.ref, f"HTTP {r.status_code}: the registry wants credentials (~/.docker/config.json, "
                                          "or --username with --password-env)")
        if r.status_code != 200:
            raise RegistryError(self.ref, f"manifest lookup answered HTTP {r.status_code}")
        digest = r.headers.get("Docker-Content-Digest", "")
        if not (digest.startswith("sha256:") and len(digest) == 71):
            raise RegistryError(self.ref, "the registry gave no sha256 manifest digest (Docker-Content-Digest)")
        return str(digest)

    def _read(self, response: Any, limit: int, what: str, expected: int | None = None) -> bytes:
        """The body of *response*, at most *limit* bytes, within the deadline (a body
        that trickles in past it is cut: RegistryError)."""
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response.close()
            raise BundleError(f"{what} is oversized ({declared} bytes > {limit})", str(self.ref))
        out = bytearray()
        try:
            for chunk in response.iter_content(chunk_size=65536):
                out += chunk
                if len(out) > limit:
                    raise BundleError(f"{what} is oversized (> {limit} bytes)", str(self.ref))
                if expected is None or len(out) < expected:
                    self._timeout()
        except (RegistryError, BundleError):
            raise
        except Exception as exc:  # a connection cut mid-body
            raise RegistryError(self.ref, f"{what} truncated: {_short(exc)}") from None
        finally:
            response.close()
        return bytes(out)

    def artifact(self, digest: str) -> Artifact:
        """Fetch the manifest *digest* (by digest), check its bytes hash to it and that
        it is a CodeSuture bundle artifact. Raises RegistryError."""
        r = self._request("GET", self._url("manifests", digest), headers={"Accept": MEDIA_MANIFEST}, stream=True)
        if r.status_code != 200:
            r.close()
            raise RegistryError(self.ref, f"manifest {digest} answered HTTP {r.status_code}")
        raw = self._read(r, MAX_MANIFEST_BYTES, "manifest")
        if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise BundleError(f"manifest bytes do not match their digest {digest}", str(self.ref))
        try:
            manifest = json.loads(raw)
            config_type = manifest["config"]["mediaType"]
            layers = {layer["mediaType"]: layer for layer in manifest["layers"]}
            if config_type != MEDIA_CONFIG or len(layers) != 2 or set(layers) != {MEDIA_SET, MEDIA_BUNDLE}:
                raise ValueError("not a CodeSuture bundle artifact")
            for layer in layers.values():
                if not (isinstance(layer.get("digest"), str) and layer["digest"].startswith("sha256:")
                        and isinstance(layer.get("size"), int) and layer["size"] >= 0):
                    raise ValueError("a layer descriptor has no sha256 digest or size")
            annotations = {str(k): str(v) for k, v in (manifest.get("annotations") or {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"manifest {digest[:19]}... refused: {exc}", str(self.ref)) from None
        return Artifact(digest, layers[MEDIA_SET], layers[MEDIA_BUNDLE], annotations)

    def blob(self, descriptor: dict[str, Any], limit: int, what: str) -> bytes:
        """The blob *descriptor* names, checked against its size, *limit* and digest.
        Raises RegistryError (oversized, truncated, other bytes, HTTP error)."""
        size, digest = descriptor["size"], descriptor["digest"]
        if size > limit:
            raise BundleError(f"{what} is oversized ({size} bytes > {limit})", str(self.ref))
        r = self._request("GET", self._url("blobs", digest), stream=True)
        if r.status_code != 200:
            r.close()
            raise RegistryError(self.ref, f"{what} blob answered HTTP {r.status_code}")
        data = self._read(r, limit, what, size)
        if len(data) != size:
            raise BundleError(f"{what} truncated ({len(data)} of {size} bytes)", str(self.ref))
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise BundleError(f"{what} does not match its digest {digest[:19]}...", str(self.ref))
        return data

    def pull(self, digest: str) -> tuple[Artifact, bytes, bytes]:
        """The artifact *digest*: ``(artifact, signed set bytes, bundle bytes)``."""
        art = self.artifact(digest)
        return art, self.blob(art.set_layer, MAX_SET_BYTES, "signed set"), self.blob(art.bundle_layer, MAX_PULL_BYTES, "bundle")

    # ------------------------------------------------------------------ writing

    def _basic_challenge(self) -> bool:
        """Whether the registry asks for HTTP basic authentication (an htpasswd
        registry) rather than the distribution token flow (one ``GET /v2/``)."""
        try:
            self.requests += 1
            r = self.session.request("GET", f"{self.prefix}://{self.ref.registry}/v2/", timeout=self._timeout())
        except Exception as exc:  # requests' ConnectionError, Timeout, ...
            raise RegistryError(self.ref, f"push failed: {_short(exc)}") from None
        r.close()
        return r.status_code == 401 and r.headers.get("Www-Authenticate", "").lower().startswith("basic")

    def push(self, bundle: str, set_bytes: bytes, config: dict[str, Any], annotations: dict[str, str]) -> str:
        """Push bundle file *bundle* and its signed set as the artifact above, tagged
        with the location's tag. Returns the manifest digest. Raises RegistryError."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="codesuture-push-") as tmp:
            set_path = os.path.join(tmp, "overlays.manifest.dsse.json")
            bundle_path = os.path.join(tmp, "overlays.cso")
            config_path = os.path.join(tmp, "config.json")
            with open(bundle, "rb") as src:
                bundle_bytes = src.read()
            for path, data in ((set_path, set_bytes), (bundle_path, bundle_bytes),
                               (config_path, json.dumps(config, sort_keys=True).encode())):
                with open(path, "wb") as out:
                    out.write(data)
            registry = _registry_class()(hostname=self.ref.registry, insecure=self.insecure,
                                         auth_backend="basic" if self._basic_challenge() else "token")
            registry.session.headers["User-Agent"] = self.agent
            if self.ref.loopback:
                registry.session.trust_env = False
            request = registry.session.request

            def bounded(*args: Any, **kwargs: Any) -> Any:
                kwargs.setdefault("timeout", self._timeout())
                return request(*args, **kwargs)

            registry.session.request = bounded
            if self.username is not None:
                registry.auth.set_basic_auth(self.username, self.password or "")
            try:
                r = registry.push(
                    target=f"{self.ref.registry}/{self.ref.repository}:{self.ref.tag}",
                    files=[f"{set_path}:{MEDIA_SET}", f"{bundle_path}:{MEDIA_BUNDLE}"],
                    manifest_config=f"{config_path}:{MEDIA_CONFIG}", manifest_annotations=annotations,
                    disable_path_validation=True, quiet=True)
            except Exception as exc:  # requests errors, ORAS's ValueError on an HTTP error
                raise RegistryError(self.ref, f"push failed: {_short(exc)}") from None
        digest = r.headers.get("Docker-Content-Digest", "")
        if not digest.startswith("sha256:"):
            raise RegistryError(self.ref, "the registry gave no manifest digest for the push")
        return str(digest)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


__all__ = ["Client", "Artifact", "MEDIA_BUNDLE", "MEDIA_SET", "MEDIA_CONFIG", "MAX_PULL_BYTES", "MAX_MANIFEST_BYTES",
           "ANNOTATION_SET_NAME", "ANNOTATION_SET_VERSION", "ANNOTATION_SIGNER"]


def pull_to(location: str, directory: str, *, plain_http: bool = False) -> tuple[str, str]:
    """Pull the bundle at *location* (``oci://...:TAG`` or ``@sha256:...``) into folder
    *directory*, for review: ``(bundle path, manifest digest)``. The registry's bytes
    are checked against their digests and caps only; what the bundle holds is for the
    review command to verify. Raises RegistryError or BundleError."""
    from codesuture.util.ociref import parse

    try:
        ref = parse(location)
    except ValueError as exc:
        raise RegistryError(location, str(exc)) from None
    client = Client(ref, plain_http=plain_http)
    digest = client.resolve()
    _, set_raw, bundle_raw = client.pull(digest)
    name = f"{ref.repository.replace('/', '_')}@{digest[7:19]}.cso"
    path = os.path.join(directory, name)
    with open(path, "xb") as fh:
        fh.write(bundle_raw)
    return path, digest


__all__ += ["pull_to"]
