"""``codesuture bundle push``: publish a signed bundle to an OCI registry.

The bundle is checked first as the loader would open it (structure, caps, a signed
overlay set pinning every member: :class:`~codesuture.store.bundle.BundleStore`), and
refused when it has no signed set or the set is not a signed DSSE envelope (an unsigned
bundle is never published). With a trust root, the set's signature and every overlay
are verified too (:func:`codesuture.ship.verify.verify_paths`). Then it is pushed as
the artifact :mod:`codesuture.ship.oci` describes, and the manifest digest returned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from codesuture.errors import BundleError, CodeSutureError
from codesuture.overlay.names import MAX_SET_BYTES, SET_NAME


@dataclass(frozen=True)
class Pushed:
    """A pushed bundle: where (``location``, tag form), its manifest ``digest``, and
    the signed set's name, version and signer key id."""

    location: str
    digest: str
    set_name: str
    version: int
    keyid: str


def signed_set_of(bundle: str) -> tuple[bytes, str, int, str]:
    """The signed set of bundle file *bundle*: ``(bytes, name, version, signer key id)``.
    Raises :class:`BundleError` for a malformed bundle, or one without a signed set."""
    from codesuture.store.bundle import BundleStore
    from codesuture.trust.dsse import Envelope
    from codesuture.trust.overlay_set import parse_set_statement

    store = BundleStore(bundle)
    try:
        store.members()
        raw = store.read(SET_NAME, MAX_SET_BYTES)
    finally:
        store.close()
    if raw is None:
        raise BundleError(f"unsigned bundle: it has no signed overlay set ({SET_NAME}); sign the folder and "
                          "bundle it again ('codesuture bundle create --key KEY DIR -o FILE')", bundle)
    try:
        envelope = Envelope.loads(raw, f"{bundle}:{SET_NAME}")
        if not envelope.signatures:
            raise BundleError("unsigned bundle: its overlay set carries no signature", bundle)
        vset = parse_set_statement(envelope.payload, envelope.signatures[0].keyid, f"{bundle}:{SET_NAME}")
    except BundleError:
        raise
    except CodeSutureError as exc:
        raise BundleError(f"signed overlay set unreadable: {getattr(exc, 'reason', exc)}", bundle) from None
    return raw, vset.name, vset.version, vset.keyid


def push_bundle(bundle: str, location: str, *, keys_dir: str | None = None, plain_http: bool = False,
                username: str | None = None, password: str | None = None) -> Pushed:
    """Push bundle file *bundle* to *location* (``oci://HOST[:PORT]/REPOSITORY:TAG``).

    HTTPS unless the registry is on a loopback address or *plain_http*. Raises
    :class:`BundleError` (not a signed bundle; with *keys_dir*: a member or the set does
    not verify) and :class:`~codesuture.errors.RegistryError` (a bad location, the
    registry refused the push or cannot be reached)."""
    from codesuture.errors import RegistryError
    from codesuture.ship import oci
    from codesuture.util.ociref import parse

    try:
        ref = parse(location)
    except ValueError as exc:
        raise RegistryError(location, str(exc)) from None
    if ref.digest:
        raise RegistryError(location, "push to a tag (REPOSITORY:TAG), not a digest")
    if not os.path.isfile(bundle):
        raise BundleError("no such bundle file", bundle)
    raw, name, version, keyid = signed_set_of(bundle)
    if keys_dir is not None:
        from codesuture.ship.verify import verify_paths

        failed = [r for r in verify_paths([bundle], keys_dir) if not r.ok]
        if failed:
            raise BundleError(f"does not verify against {keys_dir}: {failed[0].path}: {failed[0].reason}", bundle)
    annotations = {oci.ANNOTATION_SET_NAME: name, oci.ANNOTATION_SET_VERSION: str(version), oci.ANNOTATION_SIGNER: keyid}
    client = oci.Client(ref, plain_http=plain_http, username=username, password=password)
    digest = client.push(bundle, raw, {"set": name, "version": version, "signer": keyid}, annotations)
    return Pushed(str(ref), digest, name, version, keyid)


__all__ = ["Pushed", "push_bundle", "signed_set_of"]
