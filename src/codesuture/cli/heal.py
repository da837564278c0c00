"""``codesuture run``: run a script with healing and replay."""

from __future__ import annotations

import sys

import click

from codesuture.cli import main


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--overlays", "overlays", default="overlays", show_default=True, type=click.Path(file_okay=False),
              help="Directory that overlays are loaded from and written to.")
@click.option("--retries", default=3, show_default=True, type=click.IntRange(min=0),
              help="How many times the script is replayed after a patch.")
@click.option("--dry-run", is_flag=True, help="Diagnose crashes and show the patch; change nothing.")
@click.option("--verbose", is_flag=True, help="Show each patch's instruction delta.")
@click.option("--ttl", "ttl_days", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="Lifetime of new patches, in days (0: no expiry).")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(overlays: str, retries: int, dry_run: bool, verbose: bool, ttl_days: float, script: str, args: tuple[str, ...]) -> None:
    """Run SCRIPT like `python SCRIPT ARGS...`, healing structural crashes live,
    writing overlays to --overlays and replaying the script (up to --retries times).
    Exits with the script's exit code."""
    import logging
    import os
    from pathlib import Path

    from codesuture.boot import export
    from codesuture.loader.finder import install
    from codesuture.runtime import script as runner
    from codesuture.runtime.healer import Healer
    from codesuture.trust.policy import LoadPolicy

    from codesuture import logs
    from codesuture.runtime.healer import disabled

    if disabled():  # the kill switch: run the script as plain python would
        sys.exit(runner.run(runner.script_target(script, list(args))))
    logs.request(logging.INFO if verbose else logging.WARNING)
    export({"overlays": overlays, "keys": os.environ.get("CODESUTURE_KEYS"), "require_signed": False, "heal": True})
    policy = LoadPolicy.from_env()
    finder = install(overlays, policy) if os.path.isdir(overlays) else None
    healer = Healer(overlays=None if dry_run else Path(overlays), dry_run=dry_run, ttl=ttl_days * 86400)
    code = runner.run(
        runner.script_target(script, list(args)),
        heal=healer.heal,
        retries=retries,
        entries=finder.index if finder is not None else None,
        policy=policy,
    )
    for result in healer.history:
        r = result.record
        where = f"{r.module}:{r.line} {r.qualname}"
        guard = r.guard.guard + (f"/{r.guard.form}" if r.guard.form else "")
        click.echo(f"codesuture: patched {where}: {guard} on `{r.expression}` "
                   f"(yields {r.yields}, +{r.added} instructions)"
                   + (f" -> {result.overlay}" if result.overlay else ""), err=True)
        if verbose:
            click.echo(result.diff, err=True)
    for r in healer.proposals:
        click.echo(f"codesuture: would patch {r.module}:{r.line} {r.qualname}: {r.guard.guard} on `{r.expression}` "
                   f"(yields {r.yields}, +{r.added} instructions)", err=True)
    sys.exit(code)
