"""The host cache of bundles pulled from an OCI registry, and one look at a tag.

Every process of a host that loads ``--overlays oci://HOST/REPOSITORY:TAG`` shares one
cache folder (``cache_dir``, default ``<state_dir>/oci-cache``)::

    sha256/<hex>/bundle.cso     a bundle that verified, by manifest digest (content-addressed,
    sha256/<hex>/set.dsse.json  never changed once there), and its signed set as pulled
    refs/<id>.json              the location's current verified digest and set version, and the
                                digests refused on this host with the reason:
                                {"location", "digest", "version", "refused": {digest: reason}}
    refs/<id>.due               when the host's next look at the registry is due (Unix seconds)
    refs/<id>.lock              flock held by the one process that looks

(``<id>``: the first 32 hex digits of the SHA-256 of the location.)

**One process per host looks.** :func:`look` takes the lock without blocking and acts
only when the host's look is due, so a host makes one manifest ``HEAD`` per poll
whatever its number of processes; the others see the new digest in ``refs/<id>.json``.

**A new digest is admitted exactly like a local bundle**: the manifest is fetched by
digest and hashed, the signed-set layer first (a set that does not verify against the
trust root, is older than this host's high-water mark (a tag moved back: a rollback),
or expired is refused before the bundle blob is fetched), then the bundle blob (size
cap :data:`~codesuture.ship.oci.MAX_PULL_BYTES`, digest), whose own signed set must be
the same bytes; then :func:`verify_bundle`: the load policy's checks
(:func:`codesuture.trust.policy.store_set` and :func:`~codesuture.trust.policy.admit`
for every overlay, as the loader runs them on a bundle file). Only then does the
bundle enter the cache and the ref move, and the host's high-water mark rise. A
refusal is recorded in the ref (that digest is not pulled again); the running code
stays as it was. Registry errors are not refusals: the next look tries again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from codesuture.errors import BundleError, CodeSutureError, FileError, RegistryError, TrustError
from codesuture.util.files import atomic_write, locked, read_regular

MAX_REF_BYTES = 1024 * 1024
#: Digests remembered as refused per location (the oldest are forgotten first).
MAX_REFUSED = 64
BUNDLE_FILE = "bundle.cso"
SET_FILE = "set.dsse.json"


@dataclass(frozen=True)
class Current:
    """A location's current verified bundle on this host."""

    digest: str
    path: str
    version: int
    refused: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Look:
    """What one :func:`look` did: ``status`` is ``busy`` (another process is looking),
    ``not-due``, ``unchanged``, ``new`` (``digest`` verified and now current),
    ``refused`` (``digest`` refused, ``reason``), ``known-refused`` or ``unreachable``
    (``reason``); ``requests``: HTTP requests made."""

    status: str
    digest: str | None = None
    reason: str = ""
    requests: int = 0


class HostCache:
    """The cache folder *root*, for the location *location* (``oci://...``)."""

    def __init__(self, root: str, location: str) -> None:
        self.root = os.path.abspath(root)
        self.location = location
        self.ident = hashlib.sha256(location.encode()).hexdigest()[:32]
        #: names this host cache to a registry (its User-Agent): the registry's log tells hosts apart
        self.agent = "cache/" + hashlib.sha256(self.root.encode()).hexdigest()[:12]
        refs = os.path.join(self.root, "refs")
        self.ref_path = os.path.join(refs, self.ident + ".json")
        self.due_path = os.path.join(refs, self.ident + ".due")
        self.lock_path = os.path.join(refs, self.ident + ".lock")

    def __repr__(self) -> str:
        return f"HostCache({self.root!r}, {self.location!r})"

    def bundle_dir(self, digest: str) -> str:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
            raise BundleError(f"not a sha256 digest: {digest!r}", self.location)
        return os.path.join(self.root, "sha256", hexdigest)

    def digest_of(self, path: str | None) -> str | None:
        """The digest whose cached bundle is *path*, or None."""
        if not path:
            return None
        d = os.path.dirname(os.path.abspath(path))
        if os.path.basename(path) != BUNDLE_FILE or os.path.dirname(d) != os.path.join(self.root, "sha256"):
            return None
        return "sha256:" + os.path.basename(d)

    def _ref(self) -> dict[str, Any]:
        try:
            raw = read_regular(self.ref_path, MAX_REF_BYTES)
            data = json.loads(raw) if raw is not None else {}
        except (FileError, ValueError):
            return {}
        return data if isinstance(data, dict) and data.get("location") == self.location else {}

    def current(self) -> Current | None:
        """The current verified bundle of the location on this host, or None (nothing
        verified yet, or its bundle file is gone)."""
        data = self._ref()
        raw = data.get("refused")
        refused: dict[str, str] = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        digest = data.get("digest")
        if not isinstance(digest, str):
            return Current("", "", 0, refused) if refused else None
        try:
            path = os.path.join(self.bundle_dir(digest), BUNDLE_FILE)
        except BundleError:
            return None
        if not os.path.isfile(path):
            return None
        return Current(digest, path, int(data.get("version") or 0), refused)

    def _write_ref(self, change: Any) -> None:
        data = self._ref() or {"location": self.location, "refused": {}}
        data.setdefault("refused", {})
        change(data)
        atomic_write(self.ref_path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())

    def due(self, now: float) -> bool:
        """Whether the host's next look at the registry is due at *now* (Unix seconds)."""
        try:
            raw = read_regular(self.due_path, 64)
            return raw is None or now >= float(raw.decode("ascii").strip())
        except (FileError, ValueError, UnicodeDecodeError):
            return True

    def set_due(self, when: float) -> None:
        atomic_write(self.due_path, f"{when:.3f}\n".encode("ascii"))


def verify_bundle(path: str, s: Any, now: float | None = None) -> Any:
    """Check bundle file *path* as the loader of this host would load it (settings *s*:
    its trust root, Sigstore identity, ``min_set_version``, host state), and that it is
    no older than this host's high-water mark and unexpired. Returns the
    :class:`~codesuture.trust.overlay_set.VerifiedSet`. Raises :class:`TrustError`
    (a :class:`BundleError` for the bundle itself) or an
    :class:`~codesuture.errors.OverlayRefused` naming the overlay and the reason. The
    host state is read, never written."""
    from codesuture.store.bundle import BundleStore
    from codesuture.trust import state
    from codesuture.trust.policy import LoadPolicy, admit, pinned_problem, store_set
    from codesuture.util.clock import parse_iso_utc

    now = time.time() if now is None else now
    policy = LoadPolicy(s.keys, True, s.sigstore_identity, s.sigstore_issuer, s.sigstore_staging, False, None,
                        s.min_set_version, False)
    store = BundleStore(path)
    try:
        vset = store_set(store, policy)
        if vset is None:
            raise BundleError("bundle has no signed overlay set", path)
        if vset.expires and parse_iso_utc(vset.expires) <= now:
            raise TrustError(f"signed overlay set {vset.name!r} v{vset.version} expired at {vset.expires}", path)
        for stem in sorted(vset.overlays):  # every overlay's side files, not only those a start imports
            problem = pinned_problem(store, vset, stem)
            if problem:
                raise BundleError(f"{stem}: {problem}", path)
        state.clear_cache()  # another process of this host may have raised the mark
        seen = state.HostState(s.state_dir).seen_version(vset.keyid, vset.name) if s.state_dir else 0
        if vset.version < seen:
            raise TrustError(f"signed overlay set {vset.name!r} version {vset.version} is older than version {seen} "
                             "already seen on this host (a tag moved back: rollback refused)", path)
        for entries in store.index().values():
            for entry in entries:
                admit(entry, policy, now)
        return vset
    finally:
        store.close()


def _check_set_layer(raw: bytes, s: Any, where: str, now: float) -> Any:
    """The pulled signed-set layer, verified before the bundle blob is fetched."""
    from codesuture.trust import state
    from codesuture.trust.overlay_set import verify_set
    from codesuture.trust.policy import LoadPolicy, trust_root
    from codesuture.util.clock import parse_iso_utc

    vset = verify_set(raw, trust_root(LoadPolicy(s.keys)), where)
    if vset.expires and parse_iso_utc(vset.expires) <= now:
        raise TrustError(f"signed overlay set {vset.name!r} v{vset.version} expired at {vset.expires}", where)
    if vset.version < s.min_set_version:
        raise TrustError(f"signed overlay set {vset.name!r} version {vset.version} is below min_set_version "
                         f"{s.min_set_version}", where)
    state.clear_cache()
    seen = state.HostState(s.state_dir).seen_version(vset.keyid, vset.name) if s.state_dir else 0
    if vset.version < seen:
        raise TrustError(f"signed overlay set {vset.name!r} version {vset.version} is older than version {seen} "
                         "already seen on this host (a tag moved back: rollback refused)", where)
    return vset


def _pull(cache: HostCache, client: Any, digest: str, s: Any, now: float) -> tuple[str, Any]:
    """Pull artifact *digest* into the cache (checked as the module docstring says);
    returns its bundle path and verified set. Raises RegistryError (transient) or a
    refusal."""
    from codesuture.overlay.names import MAX_SET_BYTES, SET_NAME
    from codesuture.ship.oci import MAX_PULL_BYTES

    final = cache.bundle_dir(digest)
    if os.path.isfile(os.path.join(final, BUNDLE_FILE)):
        path = os.path.join(final, BUNDLE_FILE)
        return path, verify_bundle(path, s, now)  # pulled before (a tag moved back, say): checked again
    art = client.artifact(digest)
    set_raw = client.blob(art.set_layer, MAX_SET_BYTES, "signed set")
    _check_set_layer(set_raw, s, f"{cache.location}@{digest}", now)
    bundle_raw = client.blob(art.bundle_layer, MAX_PULL_BYTES, "bundle")
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        atomic_write(os.path.join(tmp, BUNDLE_FILE), bundle_raw)
        atomic_write(os.path.join(tmp, SET_FILE), set_raw)
        from codesuture.store.bundle import BundleStore

        store = BundleStore(os.path.join(tmp, BUNDLE_FILE))
        try:
            inner = store.read(SET_NAME, MAX_SET_BYTES)
        finally:
            store.close()
        if inner != set_raw:
            raise BundleError("the bundle's signed overlay set is not the artifact's signed-set layer", cache.location)
        vset = verify_bundle(os.path.join(tmp, BUNDLE_FILE), s, now)
        try:
            os.replace(tmp, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, BUNDLE_FILE)):  # not another process's identical copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(final, BUNDLE_FILE), vset


def look(cache: HostCache, s: Any, *, force: bool = False, wait: float = 0.0, deadline: float | None = None) -> Look:
    """One look at the location's tag for this host (see the module docstring).

    *force*: look even when the host's look is not due. *wait*: seconds to wait for
    another process's look to finish (0: do not wait). *deadline*: a
    ``time.monotonic()`` value bounding the registry requests. Never raises for the
    registry or the bundle (the outcome says); raises ``OSError`` when the cache
    cannot be written."""
    os.makedirs(os.path.dirname(cache.lock_path), exist_ok=True)
    until = time.monotonic() + wait
    while True:
        with locked(cache.lock_path, blocking=False) as held:
            if held:
                return _look_locked(cache, s, force, deadline)
        if time.monotonic() >= until:
            return Look("busy")
        time.sleep(0.02)


def _look_locked(cache: HostCache, s: Any, force: bool, deadline: float | None) -> Look:
    from codesuture.ship.oci import Client
    from codesuture.util.ociref import parse

    now = time.time()
    current = cache.current()
    if not force and not cache.due(now):
        return Look("not-due")
    cache.set_due(now + s.poll * random.uniform(0.8, 1.2))  # before the network: a failure is one look too
    client = None
    digest = ""
    try:
        client = Client(parse(cache.location), plain_http=s.plain_http, deadline=deadline, agent=cache.agent)
        digest = client.resolve()
        if current is not None and digest == current.digest:
            return Look("unchanged", digest, requests=client.requests)
        if current is not None and digest in current.refused:
            return Look("known-refused", digest, current.refused[digest], client.requests)
        path, vset = _pull(cache, client, digest, s, now)
    except RegistryError as exc:
        return Look("unreachable", None, exc.reason, client.requests if client else 0)
    except CodeSutureError as exc:
        reason = str(getattr(exc, "reason", None) or exc)
        refused = digest or "?"

        def note(data: dict[str, Any]) -> None:
            data["refused"][refused] = reason
            while len(data["refused"]) > MAX_REFUSED:
                data["refused"].pop(next(iter(data["refused"])))

        cache._write_ref(note)
        return Look("refused", refused, reason, client.requests if client else 0)
    def publish(data: dict[str, Any]) -> None:
        data.update(location=cache.location, digest=digest, version=vset.version)

    cache._write_ref(publish)
    from codesuture.trust.state import HostState

    if s.state_dir:
        HostState(s.state_dir).record_version(vset.keyid, vset.name, vset.version)
    return Look("new", digest, requests=client.requests)


__all__ = ["HostCache", "Current", "Look", "look", "verify_bundle"]
