"""``codesuture keygen``, ``sign`` and ``verify``: parse, call :mod:`codesuture.trust`, print."""

from __future__ import annotations

import json
import os
import sys

import click

from codesuture.cli import main
from codesuture.errors import CodeSutureError

_DAY = 24 * 3600


def _passphrase(var: str | None) -> str | None:
    if not var:
        return None
    value = os.environ.get(var)
    if value is None:
        raise click.UsageError(f"--passphrase-env {var}: that environment variable is not set")
    return value


def _fail(exc: CodeSutureError) -> "click.ClickException":
    return click.ClickException(str(exc))


@main.command()
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


@main.command()
@click.option("--key", "key_path", type=click.Path(dir_okay=False, exists=True), help="Ed25519 private key (PEM).")
@click.option("--ttl", "ttl_days", type=click.FloatRange(min=0, min_open=True), help="Days until the attestation expires (default: the metadata's expiry, else 30).")
@click.option("--passphrase-env", metavar="VAR", help="Environment variable holding the private key's passphrase.")
@click.option("--sigstore", "use_sigstore", is_flag=True, help="Sign keyless with Sigstore (needs network and an OIDC identity).")
@click.option("--identity-token", metavar="TOKEN", help="OIDC identity token for --sigstore (default: ambient CI credential).")
@click.option("--staging", is_flag=True, help="With --sigstore: use Sigstore's staging instance.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def sign(
    key_path: str | None, ttl_days: float | None, passphrase_env: str | None, use_sigstore: bool,
    identity_token: str | None, staging: bool, paths: tuple[str, ...],
) -> None:
    """Sign overlays (files or folders): write <stem>.dsse.json (or <stem>.sigstore.json)."""
    from codesuture.trust import sign as signing

    ttl = None if ttl_days is None else ttl_days * _DAY
    try:
        if use_sigstore:
            if key_path:
                raise click.UsageError("--key and --sigstore are exclusive")
            results = signing.sign_path_sigstore(paths, identity_token=identity_token, ttl_seconds=ttl, staging=staging)
        else:
            if not key_path:
                raise click.UsageError("--key PRIVATE is required (or --sigstore)")
            from codesuture.trust.keys import load_private_key

            key = load_private_key(key_path, _passphrase(passphrase_env))
            results = signing.sign_path(paths, key, ttl_seconds=ttl)
    except CodeSutureError as exc:
        raise _fail(exc) from None
    failed = 0
    for r in results:
        if r.ok:
            click.echo(f"signed {r.overlay} -> {r.output} ({r.signer})")
        else:
            failed += 1
            click.echo(f"{r.overlay}: {r.reason}", err=True)
    if not results:
        click.echo("no overlays found", err=True)
    sys.exit(1 if failed or not results else 0)


@main.command()
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False), help="Trust root: folder of public keys and revoked.json.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--sigstore", "use_sigstore", is_flag=True, help="Verify Sigstore bundles (<file>.sigstore.json) offline.")
@click.option("--cert-identity", metavar="ID", help="With --sigstore: the signing certificate's identity (SAN).")
@click.option("--cert-oidc-issuer", metavar="URL", help="With --sigstore: the OIDC issuer of that identity.")
@click.option("--staging", is_flag=True, help="With --sigstore: Sigstore's staging trust root.")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def verify(
    keys_dir: str | None, as_json: bool, use_sigstore: bool, cert_identity: str | None,
    cert_oidc_issuer: str | None, staging: bool, paths: tuple[str, ...],
) -> None:
    """Verify overlays, folders of overlays and bundles. Exit 0 when all verify."""
    from codesuture.trust import sign as signing

    if use_sigstore:
        if not cert_identity or not cert_oidc_issuer:
            raise click.UsageError("--sigstore needs --cert-identity and --cert-oidc-issuer")
        results = signing.verify_path_sigstore(paths, identity=cert_identity, issuer=cert_oidc_issuer, staging=staging)
    else:
        if not keys_dir:
            raise click.UsageError("--keys KEYS_DIR is required (or --sigstore)")
        results = signing.verify_path(paths, keys_dir)
    ok = bool(results) and all(r.ok for r in results)
    if as_json:
        click.echo(json.dumps({"ok": ok, "results": [r.to_json() for r in results]}, indent=2))
    else:
        for r in results:
            if r.ok:
                extra = f" module {r.module}" if r.module else ""
                extra += f", expires {r.expires}" if r.expires else ""
                extra += f", {r.reason}" if r.reason else ""
                click.echo(f"OK {r.path} (signer {r.signer}{extra})")
            else:
                click.echo(f"FAIL {r.path}: {r.reason}")
    sys.exit(0 if ok else 1)
