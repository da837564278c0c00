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


def review_settings() -> Any:
    """The settings as boot would resolve them here: ``CODESUTURE_*`` variables and the
    ``[tool.codesuture]`` table of the current directory's app root. A bad value is a
    usage error naming the variable or key (exit 2)."""
    from codesuture import settings

    try:
        return settings.load(environ=os.environ, start_dir=os.getcwd())
    except CodeSutureError as exc:
        raise click.UsageError(str(exc)) from None


_KEYS_HELP = ("a folder of public keys (*.pem, and its revoked.json) or one public key file; default: "
              "CODESUTURE_KEYS, else the app's [tool.codesuture] keys")


def keys_option(what: str, required: bool = False) -> Any:
    """``--keys``, the same everywhere: a folder or one key file; its default comes from
    the settings (:func:`resolve_keys`)."""
    return click.option("--keys", "keys_dir", type=click.Path(exists=True), metavar="PATH",
                        help=f"{what}: {_KEYS_HELP}" + (" (required)" if required else "") + ".")


def resolve_keys(keys_dir: str | None, required: bool = False) -> str | None:
    """*keys_dir*, else the ``keys`` setting (environment, config file). With *required*,
    a usage error when there is none."""
    if keys_dir is None:
        keys_dir = review_settings().keys
        if keys_dir is not None and not os.path.exists(keys_dir):
            raise click.UsageError(f"trust root {keys_dir} (from the keys setting) does not exist")
    if keys_dir is None and required:
        raise click.UsageError("give a trust root: --keys PATH (or CODESUTURE_KEYS, or keys in [tool.codesuture])")
    return keys_dir


#: ``--state-dir``, the same on every command that reads or writes host state.
state_dir_option = click.option(
    "--state-dir", "state_dir_given", type=click.Path(file_okay=False), metavar="DIR",
    help="This host's state folder (signed-set versions seen, withdrawn overlays): default CODESUTURE_STATE_DIR, "
         "else the app's [tool.codesuture] state_dir, else $XDG_STATE_HOME/codesuture.")


def state_dir(given: str | None = None) -> str:
    """This host's state folder: *given* (``--state-dir``), else the ``state_dir`` setting."""
    if given:
        return os.path.abspath(given)
    return str(review_settings().state_dir)


def state_file(directory: str) -> str:
    """The host-state file in *directory* (what the commands name when they write it)."""
    from codesuture.trust.state import STATE_FILE

    return os.path.join(directory, STATE_FILE)


def json_error(message: str, code: int = 1) -> None:
    """A failure of a command run with ``--json``: ``{"ok": false, "error": ...}`` on
    standard output, the message on standard error, exit *code*."""
    click.echo(json.dumps({"ok": False, "error": message}, indent=2))
    click.echo(f"codesuture: {message}", err=True)
    sys.exit(code)


def overlay_count(folder: str) -> int:
    """How many ``*.overlay`` files *folder* holds (0 when it cannot be listed)."""
    from codesuture.overlay.names import OVERLAY_SUFFIX

    try:
        return sum(1 for n in os.listdir(folder) if n.endswith(OVERLAY_SUFFIX) and not n.startswith("."))
    except OSError:
        return 0


def print_results(results: list[Any], as_json: bool) -> None:
    """Print verify results (one line each, or JSON) and exit 0 when all are OK."""
    ok = bool(results) and all(r.ok for r in results)
    if as_json and not results:
        json_error("nothing to verify")
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
