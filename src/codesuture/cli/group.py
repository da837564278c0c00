"""The ``codesuture`` click group: the review side (keys, signing, bundles, explain,
audit, rollback, rebuild, suggest, sbom, incidents), plus ``run`` and ``watch`` handed to
:mod:`codesuture.cli.launch`, which parses them without click."""

from __future__ import annotations

import sys

import click

from codesuture import __version__
from codesuture.cli import bundle, launch, review, trust
from codesuture.cli.common import STORE_TARGET, json_error, keys_option, local_targets, resolve_keys


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codesuture")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors in the log output.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Heal structural crashes in running Python programs and ship the hotfixes as
    signed code-object overlays."""
    from codesuture import logs

    ctx.obj = -1 if quiet else verbose
    logs.request(logs.level_for(ctx.obj))


_PASS_THROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False, "help_option_names": []}


@cli.command("run", context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Run a script, app folder or zip, -m module or -c code, healing crashes live
    (dev mode: writes overlays to overlays/ beside the script) and replaying the run. See `codesuture
    run --help`."""
    sys.exit(launch.run(list(args), verbose=ctx.obj or 0))


@cli.command("watch", context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def watch(args: tuple[str, ...]) -> None:
    """Run a program under boot and restart it after each run that wrote a patch. See
    `codesuture watch --help`."""
    sys.exit(launch.watch(list(args)))


@cli.command("suggest")
@click.option("--app-root", type=click.Path(exists=True, file_okay=False),
              help="Where app: origins are (default: the app root the heal recorded in the store, else the current directory's).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the diff to FILE (default: standard output).")
@click.argument("target", type=click.Path(exists=True))
def suggest(app_root: str | None, output: str | None, target: str) -> None:
    """Write each patch of TARGET (a folder, a bundle or one .overlay file) as Python
    source: a unified diff that guards the patched expression at its line (d[k] ->
    d.get(k), x.a -> (x.a if x is not None else None), a / b -> (a / b if b != 0 else
    0.0), ...). Paths are relative to where each source is rooted (the app root for
    app: origins, the site-packages directory for site-packages: origins, found with
    this interpreter): apply there with `patch -p1` or `git apply`. Exit 1 when a patch
    has no suggestion (the others are still written), or there are no patches."""
    import os

    from codesuture.errors import CodeSutureError
    from codesuture.review.suggest import suggest as make
    from codesuture.store.app_root import app_root_for

    try:
        report = make(target, app_root_for(target, app_root, os.getcwd()))
    except CodeSutureError as exc:
        click.echo(f"codesuture: {exc}", err=True)
        sys.exit(1)
    text = report.text()
    if output:
        try:
            with open(output, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        except OSError as err:
            click.echo(f"codesuture: {output}: {err.strerror or err}", err=True)
            sys.exit(1)
    elif text:
        click.echo(text, nl=False)
    for s in report.suggestions:
        click.echo(f"suggested: {s.module}:{s.line} {s.qualname}: {s.guard} on `{' '.join(s.before.split())}`", err=True)
    for f in report.failures:
        click.echo(f"codesuture: no suggestion: {f}", err=True)
    if not report.suggestions and not report.failures:
        click.echo(f"codesuture: no patches to suggest in {target}", err=True)
    sys.exit(1 if report.failures or not report.suggestions else 0)


@cli.command("sbom")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="CycloneDX JSON file to write.")
@keys_option("Verify the signed set and each signed Statement against this trust root")
@click.argument("target", type=STORE_TARGET)
def sbom(output: str, keys_dir: str | None, target: str) -> None:
    """Write the CycloneDX SBOM of TARGET (a folder of overlays, a bundle or an oci://
    location, pulled into a temporary folder): one
    component per installed package its overlays modify (name, version, purl), every
    overlay as a modification of its package (pedigree: each patch, type unofficial,
    with what it does and where; the overlay and source SHA-256), app-module overlays
    as components of their own. Validated with cyclonedx-python-lib's JSON schema
    validator before it is written (needs codesuture[sbom])."""
    from codesuture.errors import CodeSutureError
    from codesuture.ship.sbom import write_sbom

    try:
        with local_targets([target]) as (local,):
            info = write_sbom(local, output, keys_dir=resolve_keys(keys_dir))
    except CodeSutureError as exc:
        click.echo(f"codesuture: {exc}", err=True)
        sys.exit(1)
    click.echo(f"wrote {info.path}: CycloneDX {info.spec_version} (validated), {info.components} component(s), "
               f"{info.overlays} overlay(s), {info.patches} patch(es)")


@cli.command("incidents")
@click.option("--since", metavar="ISO|DURATION",
              help="Only incidents at or after this time: ISO 8601 (2025-01-02T03:04:05Z; no offset: UTC) or a "
                   "duration back from now (90s, 15m, 2h, 7d, 1h30m).")
@click.option("--json", "as_json", is_flag=True, help="Print the incidents themselves, one JSON object per line "
              "(an error: one JSON object with ok false).")
@click.argument("file", type=click.Path(dir_okay=False))
def incidents(since: str | None, as_json: bool, file: str) -> None:
    """Read the incidents file FILE (the `incidents` setting; FILE.1, its rotated
    predecessor, is read first) and print a digest: counts per kind and per refusal
    reason, the sites with the most events and the fingerprints they share. With
    --json, the incidents themselves. Exit 1 when FILE cannot be read."""
    import json

    from codesuture.review.incidents import digest, parse_since, read, render

    try:
        cutoff = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    try:
        found = read(file, cutoff)
    except OSError as err:
        if as_json:
            json_error(f"{file}: {err.strerror or err}")
        click.echo(f"codesuture: {file}: {err.strerror or err}", err=True)
        sys.exit(1)
    if as_json:
        for item in found.items:
            click.echo(json.dumps(item, separators=(",", ":")))
        if found.malformed:
            click.echo(f"codesuture: {found.malformed} malformed line(s) skipped", err=True)
    else:
        click.echo(render(digest(found)), nl=False)


@cli.command("repro")
@click.option("--function", metavar="NAME", help="Only patches of this function (qualified or plain name).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder to write the tests into.")
@click.option("--prove", "do_prove", is_flag=True,
              help="Run each test without the overlays (must fail with the original exception) and with them under "
                   "boot (must pass); record the outcome as the patch's evidence.")
@click.option("--python", "python", type=click.Path(dir_okay=False, exists=True),
              help="Interpreter to prove with (default: this one; the overlays' cache tag must match).")
@keys_option("Trust root for the booted run (a signed store)")
@click.option("--app-root", type=click.Path(exists=True, file_okay=False),
              help="Where app: origins are (default: the app root the heal recorded in the store, else the nearest pyproject.toml above it).")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds per test run.")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
def repro(function: str | None, output: str, do_prove: bool, python: str | None, keys_dir: str | None,
          app_root: str | None, timeout: float, store: str) -> None:
    """Write one pytest file per patch of STORE (the folder the crashes were healed
    into) that reproduces its crash from the capture taken at heal time: it calls the
    function with the captured arguments (or runs the program with its argv) and fails
    when the original exception is raised again. Exit 1 when a patch has no usable
    capture or, with --prove, a proof did not pass."""
    import os

    from codesuture.errors import CodeSutureError
    from codesuture.review import repro as rp
    from codesuture.store.app_root import app_root_for

    try:
        tests, missing = rp.write_tests(store, output, function)
    except (CodeSutureError, OSError) as exc:
        click.echo(f"codesuture: {exc}", err=True)
        sys.exit(1)
    for t in tests:
        how = {"call": "calls it with the captured arguments", "program": f"runs the program ({t.why})",
               "none": f"skips: {t.why}"}[t.by]
        click.echo(f"wrote {t.path}: {t.capture.record.qualname} in {t.capture.descriptor.get('module')} "
                   f"({t.capture.descriptor.get('exception')}), {how}")
    for m in missing:
        click.echo(f"codesuture: no repro for {m.record.qualname} ({m.stem}): {m.reason}", err=True)
    if not tests and not missing:
        click.echo("no patches" + (f" of {function}" if function else ""), err=True)
    failed = bool(missing) or not tests
    if do_prove and tests:
        root = app_root_for(store, app_root, os.path.dirname(os.path.abspath(store)))
        try:
            proofs = rp.prove(tests, python, resolve_keys(keys_dir), timeout, app_root=root)
        except (CodeSutureError, OSError) as exc:
            click.echo(f"codesuture: {exc}", err=True)
            sys.exit(1)
        for p in proofs:
            name = f"{p.test.capture.record.qualname} ({os.path.basename(p.test.path)})"
            state = "proved" if p.passed else "NOT proved"
            click.echo(f"{state} {name}: without the overlay: {p.without}; with it: {p.with_}"
                       + (f" -> evidence in {p.recorded}" if p.recorded else ""))
            failed = failed or not p.passed
    sys.exit(1 if failed else 0)


@cli.command("prove")
@click.option("--tests", "command", required=True, metavar="CMD",
              help="The app's test command, e.g. 'pytest -q' (pytest commands run under boot with the store).")
@click.option("--python", "python", type=click.Path(dir_okay=False, exists=True),
              help="Interpreter to run pytest with (default: this one).")
@keys_option("Trust root for the booted run (a signed store)")
@click.option("--cwd", type=click.Path(exists=True, file_okay=False), help="Where to run the command (default: here).")
@click.option("--timeout", type=click.FloatRange(min=1), default=1800, show_default=True, help="Seconds per run.")
@click.option("--no-record", is_flag=True, help="Compare only; write no evidence into the sidecars.")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
def prove(command: str, python: str | None, keys_dir: str | None, cwd: str | None, timeout: float, no_record: bool,
          store: str) -> None:
    """Run the app's tests without the overlays of STORE and with them (under boot),
    record both outcomes (passed/failed counts) as every patch's evidence, and exit 1
    when the overlays turn a passing test into a failing one, or when a run printed no
    pytest summary (nothing was compared; no evidence is recorded)."""
    from codesuture.errors import CodeSutureError
    from codesuture.review import prove as pv

    def counts(run: pv.Run) -> str:
        c = run.counts
        return (", ".join(f"{c[k]} {k}" for k in ("passed", "failed", "errors", "skipped") if c.get(k))
                or "no summary") + f" (exit {run.exit})"

    try:
        result = pv.run_tests(store, command, python=python, keys=resolve_keys(keys_dir), cwd=cwd, timeout=timeout)
        if not result.without.counts or not result.with_.counts:
            click.echo(f"without the overlays: {counts(result.without)}")
            click.echo(f"with the overlays:    {counts(result.with_)}")
            bad = result.with_ if not result.with_.counts else result.without
            click.echo(f"codesuture: the test command printed no pytest summary line ('N passed, M failed in S s'): "
                       f"nothing was compared and no evidence recorded. Its output ended:\n{bad.tail}", err=True)
            sys.exit(1)
        written = [] if no_record else pv.record(store, result)
    except (CodeSutureError, OSError) as exc:
        click.echo(f"codesuture: {exc}", err=True)
        sys.exit(1)

    click.echo(f"without the overlays: {counts(result.without)}")
    click.echo(f"with the overlays:    {counts(result.with_)}")
    if result.fixed:
        click.echo(f"fixed by the overlays: {len(result.fixed)}: {', '.join(result.fixed[:10])}")
    for w in written:
        click.echo(f"evidence in {w}")
    if result.regressions:
        click.echo(f"codesuture: REGRESSION: tests that pass without the overlays fail with them: "
                   f"{'; '.join(result.regressions[:10])}", err=True)
        if not result.with_.counts and not result.with_.tests:
            click.echo(result.with_.tail, err=True)
        sys.exit(1)
    sys.exit(0)


for _command in (trust.keygen, trust.sign, trust.verify, bundle.bundle, review.explain, review.audit, review.rollback,
                 review.rebuild):
    cli.add_command(_command)

__all__ = ["cli"]
