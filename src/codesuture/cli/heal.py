"""``codesuture run``: run a script with healing and replay (dev mode by default)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click



def _echo_summary(session: Any, default_store: str | None) -> None:
    from codesuture.runtime.session import summary

    healer = getattr(session, "healer", None)
    for result in getattr(healer, "history", []):
        if result.status != "patched":
            continue
        r = result.record
        guard = r.guard.guard + (f"/{r.guard.form}" if r.guard.form else "")
        where = "proposed in" if result.proposed else "->"
        click.echo(f"codesuture: patched {r.module}:{r.line} {r.qualname}: {guard} on `{r.expression}` "
                   f"(yields {r.yields}, +{r.added} instructions)" + (f" {where} {result.overlay}" if result.overlay else ""),
                   err=True)
        if getattr(session, "verbose", 0):
            click.echo(result.diff, err=True)
    for r in getattr(healer, "proposals", []):
        click.echo(f"codesuture: would patch {r.module}:{r.line} {r.qualname}: {r.guard.guard} on `{r.expression}` "
                   f"(yields {r.yields}, +{r.added} instructions)", err=True)
    line = summary(session, default_store)
    if line:
        click.echo(line, err=True)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--overlays", type=click.Path(), default=None,
              help="Overlay store, loaded from and (in dev mode) written to. Default: ./overlays.")
@click.option("--keys", type=click.Path(), default=None, help="Trust root (makes the run prod unless --mode dev).")
@click.option("--mode", type=click.Choice(["dev", "prod"]), default=None, help="dev (default): heal and write; prod: load verified overlays only.")
@click.option("--heal/--no-heal", default=None, help="Heal live (default: on in dev, off in prod).")
@click.option("--pending", type=click.Path(), default=None, help="Where patches are proposed when they cannot go into the store.")
@click.option("--retries", type=click.IntRange(min=0), default=None, help="Replays after a patch (default 3; 0: heal, never replay).")
@click.option("--dry-run", is_flag=True, help="Diagnose crashes and show the patch; change nothing.")
@click.option("--verbose", "-v", count=True, help="Log what CodeSuture does and show each patch's instruction delta.")
@click.option("--ttl", "ttl_days", type=click.FloatRange(min=0), default=None, help="Lifetime of new patches in days (default 30; 0: no expiry).")
@click.option("--record-messages", is_flag=True, default=None, help="Keep raw exception messages in patch metadata.")
@click.option("--config", type=click.Path(dir_okay=False), default=None, help="Config file instead of the app root's.")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(overlays: str | None, keys: str | None, mode: str | None, heal: bool | None, pending: str | None,
        retries: int | None, dry_run: bool, verbose: int, ttl_days: float | None, record_messages: bool | None,
        config: str | None, script: str, args: tuple[str, ...]) -> None:
    """Run SCRIPT like `python SCRIPT ARGS...`, healing structural crashes live, writing
    overlays (to ./overlays unless --overlays says otherwise) and replaying the script
    up to --retries times. Exits with the script's exit code (130 after Ctrl-C)."""
    import logging

    from codesuture import boot, logs, settings
    from codesuture.errors import ConfigError
    from codesuture.runtime import script as runner

    try:
        if settings.disabled():  # the kill switch: run the script as plain python would
            sys.exit(runner.run(runner.script_target(script, list(args))))
        flags = {"overlays": overlays, "keys": keys, "mode": mode, "heal": heal, "pending": pending, "retries": retries,
                 "dry_run": dry_run, "verbose": verbose, "ttl_days": ttl_days, "record_messages": record_messages,
                 "config": config}
        s = settings.load({k: v for k, v in flags.items() if v is not None}, os.environ,
                          start_dir=os.path.dirname(os.path.abspath(script)), command="run")
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logs.request(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    s.export()
    code, session = boot.start(s, runner.script_target(script, list(args)))
    session.verbose = verbose
    _echo_summary(session, s.overlays if "overlays" not in s.sources else None)
    sys.exit(code)
