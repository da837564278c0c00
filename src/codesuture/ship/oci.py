"""Signed bundles in an OCI registry: push, tag lookups, capped pulls (the ORAS SDK).

An overlay bundle travels as one OCI artifact (OCI image manifest v1, distribution
spec v1.1 API)::

    config   application/vnd.codesuture.bundle.config.v1+json   {"set": name, "version": n, "signer": keyid}
    layer 0  application/vnd.codesuture.overlay-set.v1+dsse+json the bundle's signed overlay set (DSSE)
    layer 1  application/vnd.codesuture.bundle.v1+zip            the bundle (codesuture.store.bundle)
    annotations  dev.codesuture.set.name / .version / .signer    (informational: never trusted)

The registry is an **untrusted transport**: nothing it says is believed until the
signed set verified against the host's trust root. What this module checks is only
what keeps a hostile or broken registry from hurting the host: every manifest is
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
environment variable, never from its command line).

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

from codesuture.errors import RegistryError
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


def _oras() -> Any:
    try:
        import oras.provider
    except ImportError:
        raise RegistryError("oci://", "oci:// locations need the ORAS client: pip install 'codesuture[oci]'") from None
    return oras.provider


_ONCE: Any = None


def _registry_class() -> Any:
    """``oras.provider.Registry`` whose requests are made once, not retried with
    sleeps of up to a minute (ORAS's default): the caller's deadline holds."""
    global _ONCE
    if _ONCE is None:
        provider = _oras()
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
    not installed."""

    def __init__(self, ref: Reference, *, plain_http: bool = False, deadline: float | None = None,
                 username: str | None = None, password: str | None = None, agent: str = "") -> None:
        self.ref = ref
        self.deadline = deadline
        insecure = plain_http or ref.loopback
        self._registry = _registry_class()(hostname=ref.registry, insecure=insecure)
        session = self._registry.session
        from codesuture import __version__

        session.headers["User-Agent"] = f"codesuture/{__version__}" + (f" {agent}" if agent else "")
        if ref.loopback:
            session.trust_env = False  # a proxy from the environment never serves 127.0.0.1
        request = session.request

        def bounded(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self._timeout())
            return request(*args, **kwargs)

        session.request = bounded
        if username is not None:
            self._registry.auth.set_basic_auth(username, password or "")
        self._container = self._registry.get_container(f"{ref.registry}/{ref.repository}:{ref.tag or 'latest'}")
        self._configs_loaded = False
        self.requests = 0

    def _timeout(self) -> float:
        if self.deadline is None:
            return DEFAULT_TIMEOUT
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RegistryError(self.ref, "no answer within the time allowed")
        return left

    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        if not self._configs_loaded:
            self._registry.auth.load_configs(self._container)  # ~/.docker/config.json credentials
            self._configs_loaded = True
        self.requests += 1
        try:
            return self._registry.do_request(url, method, **kwargs)
        except RegistryError:
            raise
        except Exception as exc:  # requests' ConnectionError, Timeout, ORAS's ValueError on auth...
            raise RegistryError(self.ref, f"{method} failed: {_short(exc)}") from None

    def _url(self, kind: str, reference: str) -> str:
        return f"{self._registry.prefix}://{self.ref.registry}/v2/{self.ref.repository}/{kind}/{reference}"

    # ------------------------------------------------------------------ reading

    def resolve(self) -> str:
        """The manifest digest the location's tag points to now (one ``HEAD`` request;
        a location with a digest is returned as it is). Raises RegistryError."""
        if self.ref.digest:
            return self.ref.digest
        r = self._request("HEAD", self._url("manifests", self.ref.reference), headers={"Accept": MEDIA_MANIFEST})
        if r.status_code == 404:
            raise RegistryError(self.ref, "no such tag in the registry")
        if r.status_code != 200:
            raise RegistryError(self.ref, f"manifest lookup answered HTTP {r.status_code}")
        digest = r.headers.get("Docker-Content-Digest", "")
        if not (digest.startswith("sha256:") and len(digest) == 71):
            raise RegistryError(self.ref, "the registry gave no sha256 manifest digest (Docker-Content-Digest)")
        return str(digest)

    def _read(self, response: Any, limit: int, what: str) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response.close()
            raise RegistryError(self.ref, f"{what} is oversized ({declared} bytes > {limit})")
        out = bytearray()
        try:
            for chunk in response.iter_content(chunk_size=65536):
                out += chunk
                if len(out) > limit:
                    raise RegistryError(self.ref, f"{what} is oversized (> {limit} bytes)")
                self._timeout()
        except RegistryError:
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
            raise RegistryError(self.ref, f"manifest bytes do not match their digest {digest}")
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
            raise RegistryError(self.ref, f"manifest {digest[:19]}... refused: {exc}") from None
        return Artifact(digest, layers[MEDIA_SET], layers[MEDIA_BUNDLE], annotations)

    def blob(self, descriptor: dict[str, Any], limit: int, what: str) -> bytes:
        """The blob *descriptor* names, checked against its size, *limit* and digest.
        Raises RegistryError (oversized, truncated, other bytes, HTTP error)."""
        size, digest = descriptor["size"], descriptor["digest"]
        if size > limit:
            raise RegistryError(self.ref, f"{what} is oversized ({size} bytes > {limit})")
        r = self._request("GET", self._url("blobs", digest), stream=True)
        if r.status_code != 200:
            r.close()
            raise RegistryError(self.ref, f"{what} blob answered HTTP {r.status_code}")
        data = self._read(r, limit, what)
        if len(data) != size:
            raise RegistryError(self.ref, f"{what} truncated ({len(data)} of {size} bytes)")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RegistryError(self.ref, f"{what} does not match its digest {digest[:19]}...")
        return data

    def pull(self, digest: str) -> tuple[Artifact, bytes, bytes]:
        """The artifact *digest*: ``(artifact, signed set bytes, bundle bytes)``."""
        art = self.artifact(digest)
        return art, self.blob(art.set_layer, MAX_SET_BYTES, "signed set"), self.blob(art.bundle_layer, MAX_PULL_BYTES, "bundle")

    # ------------------------------------------------------------------ writing

    def push(self, bundle: str, set_bytes: bytes, config: dict[str, Any], annotations: dict[str, str]) -> str:
        """Push bundle file *bundle* and its signed set as the artifact above, tagged
        with the location's tag. Returns the manifest digest. Raises RegistryError."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="codesuture-push-") as tmp:
            set_path = os.path.join(tmp, "overlays.manifest.dsse.json")
            bundle_path = os.path.join(tmp, "overlays.cso")
            config_path = os.path.join(tmp, "config.json")
            with open(set_path, "wb") as fh:
                fh.write(set_bytes)
            with open(bundle, "rb") as src, open(bundle_path, "wb") as dst:
                dst.write(src.read())
            with open(config_path, "w", encoding="utf-8") as fh:
                json.dump(config, fh, sort_keys=True)
            try:
                r = self._registry.push(
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
