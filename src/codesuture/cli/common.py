"""What several commands share: passphrases, host state, result printing."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from codesuture.errors import CodeSutureError


def passphrase(var: str | None) -> str | None:
    """The passphrase in environment variable *var* (None when no variable is named)."""
    if not var:
        return None
    value = os.environ.get(var)
    if value is None:
        raise click.UsageError(f"--passphrase-env {var}: that environment variable is not set")
    return value


def failure(exc: CodeSutureError) -> click.ClickException:
    """The error as the CLI prints it: one line, control characters escaped (paths,
    names and key ids in it may come from a store, a bundle or an envelope)."""
    from codesuture.logs import escape

    return click.ClickException(escape(str(exc)))


def state_dir() -> str | None:
    """This host's state folder from the settings (None when they are invalid)."""
    from codesuture import settings

    try:
        return settings.load(environ=os.environ).state_dir
    except CodeSutureError:
        return None


def print_results(results: list[Any], as_json: bool) -> None:
    """Print verify results (one line each, or JSON) and exit 0 when all are OK."""
    ok = bool(results) and all(r.ok for r in results)
    if as_json:
        click.echo(json.dumps({"ok": ok, "results": [r.to_json() for r in results]}, indent=2))
    else:
        from codesuture.logs import escape

        for r in results:
            if r.ok:
                extra = f" module {r.module}" if r.module else ""
                extra += f", expires {r.expires}" if r.expires else ""
                extra += f", {r.reason}" if r.reason else ""
                click.echo(escape(f"OK {r.path} (signer {r.signer}{extra})"))
            else:
                click.echo(escape(f"FAIL {r.path}: {r.reason}"))
    sys.exit(0 if ok else 1)


class StoreTarget(click.ParamType):
    """A folder, file or bundle that exists, or an ``oci://`` location (pulled into a
    temporary folder by :func:`local_targets`)."""

    name = "PATH|oci://HOST/REPOSITORY:TAG"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = os.fspath(value)
        if isinstance(text, str) and text.startswith("oci://"):
            from codesuture.util.ociref import parse

            try:
                return str(parse(text))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if not os.path.exists(text):
            self.fail(f"{text!r} does not exist", param, ctx)
        return str(text)


STORE_TARGET = StoreTarget()


class local_targets:
    """``with local_targets(targets) as paths:`` -- *targets* with every ``oci://``
    location pulled into a temporary folder (removed afterwards); plain HTTP for
    loopback registries or with ``CODESUTURE_PLAIN_HTTP``. A pull that fails exits 1
    with the reason."""

    def __init__(self, targets: Any) -> None:
        self.targets = list(targets)
        self._tmp: Any = None

    def __enter__(self) -> list[str]:
        if not any(t.startswith("oci://") for t in self.targets):
            return self.targets
        import tempfile

        from codesuture import settings
        from codesuture.ship.oci import pull_to

        self._tmp = tempfile.TemporaryDirectory(prefix="codesuture-pull-")
        raw = os.environ.get("CODESUTURE_PLAIN_HTTP")
        try:
            plain = settings.parse_bool("CODESUTURE_PLAIN_HTTP", raw) if raw is not None else False
        except CodeSutureError as exc:
            raise click.ClickException(str(exc)) from None
        out = []
        for t in self.targets:
            if not t.startswith("oci://"):
                out.append(t)
                continue
            try:
                path, digest = pull_to(t, self._tmp.name, plain_http=plain)
            except CodeSutureError as exc:
                self._tmp.cleanup()
                click.echo(f"codesuture: {exc}", err=True)
                sys.exit(1)
            click.echo(f"pulled {t} ({digest}) into {path}", err=True)
            out.append(path)
        return out

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
