"""``codesuture keygen``, ``sign`` and ``verify``: parse, call :mod:`codesuture.trust`, print."""

from __future__ import annotations

import sys

import click

from codesuture.cli.common import failure as _fail
from codesuture.cli.common import passphrase as _passphrase
from codesuture.cli.common import print_results
from codesuture.cli.common import keys_option, overlay_count, resolve_keys, state_dir_option, state_file
from codesuture.cli.common import state_dir as _state_dir
from codesuture.errors import CodeSutureError

_DAY = 24 * 3600


@click.command()
@click.option("--private-key", "private_key", required=True, type=click.Path(dir_okay=False), help="Where to write the private key (PEM, mode 0600). Never inside keys/.")
@click.option("--public-key", "public_key", required=True, type=click.Path(dir_okay=False), help="Where to write the public key (PEM), e.g. keys/<name>.pem.")
@click.option("--passphrase-env", metavar="VAR", help="Encrypt the private key with the passphrase in this environment variable.")
def keygen(private_key: str, public_key: str, passphrase_env: str | None) -> None:
    """Generate an Ed25519 signing key pair."""
    from codesuture.trust.keys import generate

    try:
        kid = generate(private_key, public_key, _passphrase(passphrase_env))
    except CodeSutureError as exc:
        raise _fail(exc) from None
    click.echo(f"key id {kid}")
    click.echo(f"private key {private_key} (keep it out of the repository)")
    click.echo(f"public key  {public_key} (add it to the trust root, keys/)")


@click.command()
@click.option("--key", "key_path", type=click.Path(dir_okay=False, exists=True), help="Ed25519 private key (PEM).")
@click.option("--ttl", "ttl_days", type=click.FloatRange(min=0, min_open=True), help="Days until the attestations expire (default: the metadata's expiry, else 30).")
@click.option("--passphrase-env", metavar="VAR", help="Environment variable holding the private key's passphrase.")
@click.option("--set-name", metavar="NAME", help="Name of the folder's signed overlay set (default: the app's project name).")
@click.option("--set-version", type=click.IntRange(min=1), help="Version of the signed overlay set (default: one above the last).")
@click.option("--app-root", type=click.Path(file_okay=False, exists=True), help="Where app: origins are (default: the app root the heal recorded in the folder, else the nearest pyproject.toml above it).")
@click.option("--python", "pythons", multiple=True, type=click.Path(dir_okay=False), help="Interpreter to rebuild other Pythons' overlays with (repeatable).")
@click.option("--sigstore", "use_sigstore", is_flag=True, help="Sign keyless with Sigstore (needs network and an OIDC identity).")
@click.option("--identity-token", metavar="TOKEN", help="OIDC identity token for --sigstore (default: ambient CI credential).")
@click.option("--staging", is_flag=True, help="With --sigstore: use Sigstore's staging instance.")
@click.option("--canary-percent", type=click.FloatRange(0, 100), metavar="N",
              help="Canary: the overlays load in about N percent of processes (stable hash of host and CODESUTURE_WORKER_ID, else the pid).")
@click.option("--canary-env", multiple=True, metavar="NAME=VALUE",
              help="Canary: the overlays load only where NAME=VALUE is set (repeatable: all must hold).")
@click.option("--require-evidence", is_flag=True,
              help="Refuse an overlay with a patch that lacks a passing repro proof (codesuture repro --prove).")
@click.option("--allow-empty", is_flag=True,
              help="Sign a folder with no overlays: a signed set of none, which withdraws everything older versions of the set listed.")
@state_dir_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def sign(
    key_path: str | None, ttl_days: float | None, passphrase_env: str | None, set_name: str | None,
    set_version: int | None, app_root: str | None, pythons: tuple[str, ...], use_sigstore: bool, identity_token: str | None, staging: bool,
    canary_percent: float | None, canary_env: tuple[str, ...], require_evidence: bool, allow_empty: bool,
    state_dir_given: str | None, paths: tuple[str, ...],
) -> None:
    """Sign overlays (files or folders) after rebuilding each from its source and
    recorded patches (any byte difference refuses it). A folder also gets its signed
    overlay set, overlays.manifest.dsse.json, with the next version number (recorded in
    this host's state file, which it names). Signing a proposal (tier propose) approves
    it; --canary-* record activation conditions in each Statement and set entry
    (docs/governance.md). Exit 1 when anything is refused, or there is nothing to sign
    (a folder with no overlays and no signed set to supersede, unless --allow-empty)."""
    import os

    from codesuture.overlay.names import SET_NAME
    from codesuture.trust.canary import options as canary_options
    from codesuture.ship import sign as signing

    empty = [p for p in paths if os.path.isdir(p) and not overlay_count(p) and not os.path.exists(os.path.join(p, SET_NAME))]
    if empty and not allow_empty:
        click.echo(f"codesuture: no overlays in {', '.join(empty)}: nothing to sign (nothing was written;"
                   " --allow-empty signs a set of none)", err=True)
        sys.exit(1)

    try:
        activation = canary_options(canary_percent, canary_env)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--canary-env") from None
    host_state = _state_dir(state_dir_given)
    options = signing.SignOptions(None if ttl_days is None else ttl_days * _DAY, set_name, app_root, pythons, host_state,
                                  set_version=set_version, activation=activation, require_evidence=require_evidence)
    try:
        if use_sigstore:
            if key_path:
                raise click.UsageError("--key and --sigstore are exclusive")
            results = signing.sign_sigstore(paths, identity_token=identity_token, options=options, staging=staging)
        else:
            if not key_path:
                raise click.UsageError("--key PRIVATE is required (or --sigstore)")
            from codesuture.trust.keys import load_private_key

            key = load_private_key(key_path, _passphrase(passphrase_env))
            results = signing.sign_paths(paths, key, options)
    except CodeSutureError as exc:
        raise _fail(exc) from None
    failed = 0
    for r in results:
        if r.ok:
            recorded = (f"; version recorded in {state_file(host_state)}"
                        if os.path.basename(str(r.output)) == SET_NAME else "")  # host state written: named
            click.echo(f"signed {r.overlay} -> {r.output} ({r.signer})" + (f": {r.reason}" if r.reason else "") + recorded)
        else:
            failed += 1
            click.echo(f"{r.overlay}: {r.reason}", err=True)
    if not results:
        click.echo("codesuture: no overlays found: nothing signed", err=True)
    sys.exit(1 if failed or not results else 0)


@click.command()
@keys_option("Trust root")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (errors too).")
@click.option("--sigstore", "use_sigstore", is_flag=True, help="Verify Sigstore bundles (<file>.sigstore.json) offline.")
@click.option("--cert-identity", metavar="ID", help="With --sigstore: the signing certificate's identity (SAN).")
@click.option("--cert-oidc-issuer", metavar="URL", help="With --sigstore: the OIDC issuer of that identity.")
@click.option("--staging", is_flag=True, help="With --sigstore: Sigstore's staging trust root.")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def verify(
    keys_dir: str | None, as_json: bool, use_sigstore: bool, cert_identity: str | None,
    cert_oidc_issuer: str | None, staging: bool, paths: tuple[str, ...],
) -> None:
    """Verify overlays, signed folders and bundles (files, or oci://HOST/REPOSITORY:TAG
    locations, pulled into a temporary folder) as the strictest load policy would admit
    them. Exit 0 when all verify; 1 when any fails or there is nothing to verify."""
    from codesuture.cli.common import local_targets
    from codesuture.ship import verify as verifying

    if use_sigstore:
        if not cert_identity or not cert_oidc_issuer:
            raise click.UsageError("--sigstore needs --cert-identity and --cert-oidc-issuer")
    else:
        keys_dir = resolve_keys(keys_dir, required=True)
        assert keys_dir is not None
    with local_targets(paths) as local:
        if use_sigstore:
            results = verifying.verify_paths_sigstore(local, identity=cert_identity or "", issuer=cert_oidc_issuer or "",
                                                      staging=staging)
        else:
            results = verifying.verify_paths(local, keys_dir or "")
        print_results(results, as_json)
