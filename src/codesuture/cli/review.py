"""``codesuture explain``, ``audit``, ``rollback`` and ``rebuild``, on a folder or a bundle."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import click

from codesuture.cli.common import (
    STORE_TARGET, json_error, keys_option, local_targets, resolve_keys, state_dir, state_dir_option, state_file,
)
from codesuture.errors import CodeSutureError
from codesuture.patch.spec import describe_yield


def _fail(exc: CodeSutureError) -> None:
    click.echo(f"codesuture: {exc}", err=True)
    sys.exit(1)


@click.command()
@keys_option("Verify signed Statements against this trust root")
@click.option("--function", metavar="NAME", help="Only patches of this function (qualified or plain name).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (errors too).")
@click.argument("targets", nargs=-1, required=True, type=STORE_TARGET)
def explain(keys_dir: str | None, function: str | None, as_json: bool, targets: tuple[str, ...]) -> None:
    """Describe what each overlay in TARGETS (.overlay files, folders, bundles, oci://
    locations) does:
    module, source digest, interpreter, and every patch, read from its signed Statement
    (from its sidecar only when it is unsigned, and said so). Exit 1 when there is
    nothing to explain."""
    from codesuture.review.explain import explain as describe

    keys_dir = resolve_keys(keys_dir)
    try:
        with local_targets(targets) as local:
            docs = [d for t in local for d in describe(t, keys_dir, function)]
    except CodeSutureError as exc:
        if as_json:
            json_error(str(exc))
        _fail(exc)
        return
    if not docs:
        message = ("no overlays" + (f" with patches of {function}" if function else "")
                   + f" in {', '.join(targets)}")
        if as_json:
            json_error(message)
        click.echo(f"codesuture: {message}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(docs, indent=2))
        return
    for d in docs:
        py = d["python"]
        click.echo(f"{d['overlay']}\n  module {d['module']}  origin {d['origin']}  source sha256 {str(d['source_sha256'])[:16]}...  "
                   f"{py.get('cache_tag')} ({py.get('version')})  tier {d['tier']}  expires {d['expires'] or 'never'}\n"
                   f"  described from: {d['metadata_from']}")
        for p in d["patches"]:
            click.echo(f"  - {p['qualname']} line {p['line']}: {p['guard']['guard']}"
                       f"{'/' + p['guard']['form'] if p['guard']['form'] else ''} on `{p['expression']}` "
                       f"-> yields {describe_yield(p['guard']['default'], (p.get('evidence') or {}).get('default'))}  (+{p['added']} instructions; was {p['exception']})")
            flow = (p.get("evidence") or {}).get("flow")
            if flow:  # what the value-flow policy decided (docs/guards.md)
                click.echo(f"    value flow: {flow}")


@click.command()
@keys_option("Trust root: audit as a deploy with this trust root would load")
@click.option("--app-root", type=click.Path(exists=True, file_okay=False), help="Where app: origins are (default: the app root the heal recorded in the store, else the current directory's).")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (errors too).")
@click.argument("target", type=STORE_TARGET)
def audit(keys_dir: str | None, app_root: str | None, state_dir_given: str | None, as_json: bool, target: str) -> None:
    """Check every overlay of TARGET (a folder, a bundle or an oci:// location) as the loader of this host
    would (signed set, signature, digest, expiry, revocation, withdrawals) and against
    its source found here. Exit 1 when any is refused, stale or its source is not
    found here, or TARGET holds no
    overlays."""
    from codesuture.review.audit import audit as run_audit
    from codesuture.store.app_root import app_root_for

    keys_dir = resolve_keys(keys_dir)
    try:
        with local_targets([target]) as (local,):
            report = run_audit(local, keys_dir, app_root_for(local, app_root, os.getcwd()),
                               state_dir=state_dir(state_dir_given))
    except CodeSutureError as exc:
        if as_json:
            json_error(str(exc))
        _fail(exc)
        return
    if not report.rows and not report.set_status:
        message = f"no overlays in {target}: nothing to audit (an overlay store is a folder of *.overlay files or a bundle)"
        if as_json:
            json_error(message)
        click.echo(f"codesuture: {message}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "set": report.set_status,
                               "overlays": [dataclasses.asdict(r) for r in report.rows]}, indent=2))
    else:
        for r in report.rows:
            click.echo(f"{r.status:12} {r.name}  ({r.patches} patch(es), signed: {r.signed or 'no'}, "
                       f"expires {r.expires or 'never'})")
            for note in r.notes:
                click.echo(f"             {note}")
        if report.set_status:
            click.echo(("" if report.set_ok else "refused      ") + report.set_status)
        if not report.rows:
            click.echo(f"no overlays in {target}")
    sys.exit(0 if report.ok else 1)


@click.command()
@click.option("--module", help="Only this module (import name or store key).")
@click.option("--function", "function", metavar="NAME", help="Only patches of this function (qualified or plain name).")
@click.option("--all", "every", is_flag=True, help="Every patch of every overlay.")
@click.option("--dry-run", is_flag=True, help="Say what would be taken out; change nothing.")
@click.option("--app-root", type=click.Path(exists=True, file_okay=False), help="Where app: origins are, to rebuild what is left (default: the app root the heal recorded in the store, else the current directory's).")
@click.option("--python", "pythons", multiple=True, type=click.Path(dir_okay=False),
              help="Interpreter to rebuild other Pythons' overlays with (repeatable).")
@state_dir_option
@click.argument("target", type=click.Path(exists=True))
def rollback(module: str | None, function: str | None, every: bool, dry_run: bool, app_root: str | None,
             pythons: tuple[str, ...], state_dir_given: str | None, target: str) -> None:
    """Take patches out of the overlays of TARGET (a folder or a bundle): --module,
    --function or --all. Each overlay taken out is recorded as withdrawn on this host
    (in the host-state file of --state-dir, which it names), so its old files cannot
    load again here, from any copy; rewritten overlays are unsigned until signed. Exit
    1 when nothing matched."""
    from codesuture.review.rollback import rollback as run_rollback
    from codesuture.store.app_root import app_root_for

    if every and (module or function):
        raise click.UsageError("--all takes out every patch: give it alone, or use --module/--function")
    if not (module or function or every):
        raise click.UsageError("say what to roll back: --module NAME, --function NAME or --all")
    try:
        results = run_rollback(target, module=module, function=function, every=every, dry_run=dry_run,
                               state_dir=(where := state_dir(state_dir_given)), app_root=app_root_for(target, app_root, os.getcwd()),
                               pythons=pythons)
    except CodeSutureError as exc:
        _fail(exc)
        return
    verb = "would take out" if dry_run else "took out"
    for r in results:
        what = "the whole overlay" if r.deleted else ", ".join(r.removed)
        click.echo(f"{verb} {what} from {r.overlay}" + (f" ({r.note})" if r.note else "")
                   + ("" if dry_run else f"; sha256 {r.withdrawn[:16]}... recorded as withdrawn in {state_file(where)}"))
    if not results:
        what = f"no patch of {module or function}" if (module or function) else "no patches"
        click.echo(f"codesuture: nothing to roll back: {what} in {target}", err=True)
        sys.exit(1)


@click.command()
@click.option("--python", "python", required=True, type=click.Path(dir_okay=False), help="The interpreter to build for.")
@click.option("--app-root", type=click.Path(exists=True, file_okay=False), help="Where app: origins are (default: the app root the heal recorded in the store, else the current directory's).")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Folder to write the new overlays to (default: STORE).")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
def rebuild(python: str, app_root: str | None, output: str | None, store: str) -> None:
    """Re-apply the recorded patches of STORE's overlays for another interpreter, by
    running it: one reviewed heal, overlays for a 3.11/3.12/3.13 fleet. The new
    overlays are unsigned; patches that do not re-locate there are reported."""
    from codesuture.review.rebuild import rebuild_for
    from codesuture.store.app_root import app_root_for

    try:
        results = rebuild_for(store, python, app_root_for(store, app_root, os.getcwd()), output)
    except CodeSutureError as exc:
        _fail(exc)
        return
    bad = 0
    for r in results:
        if r.written:
            click.echo(f"wrote {r.written} ({r.patches} patch(es) re-located)")
        for qualname, why in r.failed:
            bad += 1
            click.echo(f"{r.source}: {qualname}: not re-located: {why}", err=True)
        if r.error:
            bad += 1
            click.echo(f"{r.source}: {r.error}", err=True)
        if r.skipped:
            click.echo(f"{r.source}: {r.skipped}")
    if not results:
        click.echo(f"codesuture: no overlays to rebuild in {store}", err=True)
    sys.exit(1 if bad or not results else 0)
