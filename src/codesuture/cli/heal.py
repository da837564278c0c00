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
@click.option("-m", "module", metavar="MODULE", default=None, help="Run a module like `python -m MODULE` (then every argument goes to it).")
@click.argument("target", nargs=-1, type=click.UNPROCESSED)
def run(overlays: str | None, keys: str | None, mode: str | None, heal: bool | None, pending: str | None,
        retries: int | None, dry_run: bool, verbose: int, ttl_days: float | None, record_messages: bool | None,
        config: str | None, module: str | None, target: tuple[str, ...]) -> None:
    """Run SCRIPT ARGS... like `python SCRIPT ARGS...` (a script, an app folder or zip),
    or `-m MODULE ARGS...`, healing structural crashes live, writing overlays (to
    ./overlays unless --overlays says otherwise) and replaying the run up to --retries
    times. Exits with the program's exit code (130 after Ctrl-C)."""
    import logging

    from codesuture import boot, logs, settings
    from codesuture.errors import ConfigError
    from codesuture.runtime import script as runner

    if module is None and not target:
        raise click.UsageError("give SCRIPT [ARGS]... or -m MODULE [ARGS]...")
    if module is None and not os.path.exists(target[0]):
        raise click.UsageError(f"SCRIPT {target[0]!r} does not exist")
    try:
        start_dir = os.getcwd() if module else (os.path.abspath(target[0]) if os.path.isdir(target[0])
                                               else os.path.dirname(os.path.abspath(target[0])))
        the_target = runner.module_target(module, list(target)) if module else runner.script_target(target[0], list(target[1:]))
    except ImportError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        if settings.disabled():  # the kill switch: run the program as plain python would
            sys.exit(runner.run(the_target))
        flags = {"overlays": overlays, "keys": keys, "mode": mode, "heal": heal, "pending": pending, "retries": retries,
                 "dry_run": dry_run, "verbose": verbose, "ttl_days": ttl_days, "record_messages": record_messages,
                 "config": config}
        s = settings.load({k: v for k, v in flags.items() if v is not None}, os.environ, start_dir=start_dir,
                          command="run")
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logs.request(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    s.export()
    code, session = boot.start(s, the_target)
    session.verbose = verbose
    _echo_summary(session, s.overlays if "overlays" not in s.sources else None)
    sys.exit(code)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--overlays", type=click.Path(file_okay=False), default="overlays", show_default=True,
              help="Overlay store (a folder) the runs heal into and load from.")
@click.option("--max-restarts", type=click.IntRange(min=0), default=3, show_default=True,
              help="Restarts after runs that crashed and wrote a patch.")
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
def watch(overlays: str, max_restarts: int, program: tuple[str, ...]) -> None:
    """Run PROGRAM (`script.py ARGS...` or `-m MODULE ARGS...`) under boot, and start it
    again from the beginning after each run that crashed and wrote a patch, so it runs
    with every overlay loaded at import. Stops at exit 0, when a run patched nothing,
    or after --max-restarts restarts; exits with the last run's code."""
    from codesuture.runtime.watch import watch as run_watch

    def told(n: int, rc: int) -> None:
        click.echo(f"codesuture: watch: run ended with exit code {rc} after a patch: restart {n} of {max_restarts}",
                   err=True)

    rc, restarts = run_watch(os.path.abspath(overlays), program, max_restarts=max_restarts, on_restart=told)
    click.echo(f"codesuture: watch: {restarts} restart(s), exit code {rc}", err=True)
    sys.exit(rc)
