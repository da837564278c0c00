"""``codesuture bundle create`` / ``bundle verify``: parse, call :mod:`codesuture.overlay.bundle`, print."""

from __future__ import annotations

import json
import os
import sys

import click

from codesuture.cli import main
from codesuture.errors import CodeSutureError


@main.group()
def bundle() -> None:
    """Ship overlays as one signed bundle file."""


@bundle.command("create")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Bundle file to write.")
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Ed25519 private key that signs the manifest.")
@click.option("--passphrase-env", metavar="VAR", help="Environment variable holding the private key's passphrase.")
def create(directory: str, output: str, key_path: str, passphrase_env: str | None) -> None:
    """Bundle every signed overlay in DIRECTORY into one file with a signed manifest."""
    from codesuture.overlay.bundle import create_bundle
    from codesuture.trust.keys import load_private_key

    passphrase = None
    if passphrase_env:
        passphrase = os.environ.get(passphrase_env)
        if passphrase is None:
            raise click.UsageError(f"--passphrase-env {passphrase_env}: that environment variable is not set")
    try:
        info = create_bundle(directory, output, load_private_key(key_path, passphrase))
    except CodeSutureError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {info.path}: {len(info.stems)} overlay(s), {len(info.members)} member(s), manifest key {info.keyid}")


@bundle.command("verify")
@click.option("--keys", "keys_dir", required=True, type=click.Path(file_okay=False), help="Trust root: folder of public keys and revoked.json.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("file", type=click.Path(dir_okay=False))
def verify(keys_dir: str, as_json: bool, file: str) -> None:
    """Verify a bundle: structure, signed manifest, member digests, every overlay."""
    from codesuture.overlay.bundle import verify_bundle

    report = verify_bundle(file, keys_dir)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        if report.reason and not report.overlays:
            click.echo(f"FAIL {report.path}: {report.reason}")
        for m in report.overlays:
            if m.ok:
                click.echo(f"OK {report.path}:{m.stem} (signer {m.signer})")
            else:
                click.echo(f"FAIL {report.path}:{m.stem}: {m.reason}")
        if report.ok:
            click.echo(f"bundle {report.path} verified (manifest key {report.manifest_keyid})")
    sys.exit(0 if report.ok else 1)
