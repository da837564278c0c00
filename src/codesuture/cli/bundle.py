"""``codesuture bundle create`` / ``verify`` / ``push``: parse, call :mod:`codesuture.ship.bundle` or
:mod:`codesuture.ship.publish`, print."""

from __future__ import annotations

import os
import sys

import click

from codesuture.cli.common import keys_option, overlay_count, resolve_keys, state_dir_option
from codesuture.errors import CodeSutureError


@click.group()
def bundle() -> None:
    """Ship a signed folder of overlays as one bundle file."""


@bundle.command("create")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Bundle file to write.")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False), help="Sign the folder with this Ed25519 key first.")
@click.option("--passphrase-env", metavar="VAR", help="Environment variable holding the private key's passphrase.")
@click.option("--set-name", metavar="NAME", help="With --key: name of the signed overlay set.")
@click.option("--app-root", type=click.Path(file_okay=False, exists=True), help="With --key: where app: origins are.")
@click.option("--python", "pythons", multiple=True, type=click.Path(dir_okay=False), help="With --key: interpreters for rebuilding.")
@click.option("--sbom", is_flag=True, help="Also embed the CycloneDX SBOM of its overlays (sbom.cdx.json: unsigned, "
              "not pinned by the signed set, ignored by the loader; needs codesuture[sbom]).")
@state_dir_option
def create(directory: str, output: str, key_path: str | None, passphrase_env: str | None, set_name: str | None,
           app_root: str | None, pythons: tuple[str, ...], sbom: bool, state_dir_given: str | None) -> None:
    """Bundle the signed folder DIRECTORY (what its signed overlay set pins) into one
    file. Exit 1 when DIRECTORY holds no overlays and no signed set (nothing is
    written); a signed set of none (sign --allow-empty) bundles as a withdrawal."""
    from codesuture.cli.common import passphrase as _passphrase
    from codesuture.cli.common import state_dir as _state_dir
    from codesuture.ship.bundle import create_bundle
    from codesuture.ship.sign import SignOptions

    from codesuture.overlay.names import SET_NAME

    if not overlay_count(directory) and not os.path.isfile(os.path.join(directory, SET_NAME)):
        click.echo(f"codesuture: no overlays in {directory}: nothing to bundle (nothing was written)", err=True)
        sys.exit(1)

    try:
        key = None
        if key_path:
            from codesuture.trust.keys import load_private_key

            key = load_private_key(key_path, _passphrase(passphrase_env))
        info = create_bundle(directory, output, private_key=key,
                             options=SignOptions(None, set_name, app_root, pythons, _state_dir(state_dir_given)),
                             sbom=sbom)
    except CodeSutureError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {info.path}: {len(info.stems)} overlay(s), {len(info.members)} member(s), "
               f"signed overlay set {info.set_name!r} v{info.version} (key {info.keyid})"
               + (", with an unsigned CycloneDX SBOM (sbom.cdx.json)" if info.sbom else ""))


@bundle.command("verify")
@keys_option("Trust root", required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (errors too).")
@click.argument("file", type=click.Path(dir_okay=False))
def verify(keys_dir: str | None, as_json: bool, file: str) -> None:
    """Verify a bundle (a file, or an oci://HOST/REPOSITORY:TAG location, pulled into a
    temporary folder): structure, signed overlay set, every member and overlay."""
    from codesuture.cli.common import local_targets, print_results
    from codesuture.ship.verify import VerifyResult, verify_paths

    keys_dir = resolve_keys(keys_dir, required=True)
    assert keys_dir is not None
    with local_targets([file]) as (local,):
        results = verify_paths([local], keys_dir) if os.path.isfile(local) else [VerifyResult(file, False, "no such file")]
        print_results(results, as_json)


@bundle.command("push")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("location", metavar="oci://HOST[:PORT]/REPOSITORY:TAG")
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False, exists=True),
              help="Verify the bundle against this trust root before pushing it.")
@click.option("--plain-http", is_flag=True, help="Plain HTTP, no TLS (a loopback registry is plain HTTP without it).")
@click.option("--username", help="Registry user (default: the credentials in ~/.docker/config.json).")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the registry password (with --username).")
def push(file: str, location: str, keys_dir: str | None, plain_http: bool, username: str | None,
         password_env: str | None) -> None:
    """Push the signed bundle FILE to an OCI registry as an artifact (its own media types;
    the signed set's name and version in annotations) and print the manifest digest.
    An unsigned bundle is refused. Needs codesuture[oci]."""
    from codesuture.ship.publish import push_bundle

    password = None
    if password_env:
        if not username:
            raise click.UsageError("--password-env needs --username")
        password = os.environ.get(password_env)
        if password is None:
            raise click.UsageError(f"--password-env {password_env}: that environment variable is not set")
    elif username:
        raise click.UsageError("--username needs --password-env VAR (a password is never given on the command line)")
    try:
        pushed = push_bundle(file, location, keys_dir=keys_dir, plain_http=plain_http, username=username,
                             password=password)
    except CodeSutureError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"pushed {file} to {pushed.location}: signed overlay set {pushed.set_name!r} v{pushed.version} "
               f"(key {pushed.keyid})")
    click.echo(pushed.digest)
