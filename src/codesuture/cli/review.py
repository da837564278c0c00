"""``codesuture explain``, ``audit`` and ``rollback``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from codesuture.cli import main
from codesuture.errors import CodeSutureError


def _fail(exc: CodeSutureError) -> None:
    click.echo(f"codesuture: {exc}", err=True)
    sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("overlays", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def explain(as_json: bool, overlays: tuple[Path, ...]) -> None:
    """Describe what each OVERLAY (a .overlay file) does: module, source digest,
    interpreter, signatures present, and every patch. Reads metadata only."""
    from codesuture.review.audit import explain as describe

    try:
        docs = [describe(p) for p in overlays]
    except CodeSutureError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(docs, indent=2))
        return
    for d in docs:
        py = d["python"]
        click.echo(f"{d['overlay']}\n  module {d['module']}  source sha256 {str(d['source_sha256'])[:16]}...  "
                   f"{py.get('cache_tag')} ({py.get('version')})  tier {d['tier']}  expires {d['expires'] or 'never'}"
                   f"  signed: {', '.join(d['signed']) or 'no'}")
        for p in d["patches"]:
            click.echo(f"  - {p['qualname']} line {p['line']}: {p['guard']['guard']}"
                       f"{'/' + p['guard']['form'] if p['guard']['form'] else ''} on `{p['expression']}` "
                       f"-> yields {p['guard']['default']}  (+{p['added']} instructions; was {p['exception']})")


@main.command()
@click.option("--keys", "keys_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Trust root: audit as a deploy with this trust root would load.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def audit(keys_dir: Path | None, as_json: bool, directory: Path) -> None:
    """Check every overlay in DIRECTORY as the loader would (signature, digest,
    expiry, revocation) and against its origin source. Exit 1 when any is refused or stale."""
    from codesuture.review.audit import audit as run_audit

    try:
        rows = run_audit(directory, keys_dir)
    except CodeSutureError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        for r in rows:
            click.echo(f"{r.status:12} {r.name}  ({r.patches} patch(es), signed: {r.signed or 'no'}, "
                       f"expires {r.expires or 'never'})")
            for note in r.notes:
                click.echo(f"             {note}")
        if not rows:
            click.echo(f"no overlays in {directory}")
    bad = [r for r in rows if r.status.startswith("refused") or r.status == "stale"]
    sys.exit(1 if bad else 0)


@main.command()
@click.option("--module", help="Only this module (import name or store key).")
@click.option("--function", "qualname", help="Only patches of this function (qualified name).")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def rollback(module: str | None, qualname: str | None, directory: Path) -> None:
    """Take patches out of the overlays in DIRECTORY (all, or --module/--function).
    Rewritten overlays are unsigned until signed again; empty ones are deleted."""
    from codesuture.review.rollback import rollback as run_rollback

    try:
        results = run_rollback(directory, module, qualname)
    except CodeSutureError as exc:
        _fail(exc)
        return
    for r in results:
        click.echo(f"{'deleted' if r.deleted else 'rewrote'} {r.overlay}: removed {', '.join(r.removed)}")
    if not results:
        click.echo("nothing to roll back")
