"""Every setting of CodeSuture, from one place.

Sources, highest precedence first:

1. command-line flags (``python -m codesuture.boot``, ``codesuture run``);
2. ``CODESUTURE_*`` environment variables (boot exports the settings it used, so
   subprocesses and workers agree with their parent);
3. the app's config file: ``codesuture.toml`` (top-level keys) or the
   ``[tool.codesuture]`` table of ``pyproject.toml``, in the *app root*, or the file
   named by ``--config`` / ``CODESUTURE_CONFIG``;
4. defaults, some of which depend on the mode (below).

The **app root** is the nearest directory, from the script's directory upwards (the
current directory for ``-m``/``-c``), that holds ``pyproject.toml`` or
``codesuture.toml``; else the script's directory. Entry-script overlays are keyed by
the script's path relative to it, and relative paths in the config file are relative
to the config file's directory.

Parsing is strict (see :func:`parse_bool` and friends): a boolean is one of
``1/0/true/false/yes/no/on/off`` (any case, surrounding whitespace ignored), anything
else, including an empty value, is a :class:`~codesuture.errors.ConfigError` naming the
variable; an empty path is an error, never "off"; unknown config keys are errors.

**Modes.** ``dev`` heals crashes live and writes overlays; ``prod`` loads verified
overlays only: no healing, nothing written or deleted in the store. The mode is
``--mode``/``CODESUTURE_MODE``/``mode`` when given; otherwise ``prod`` whenever a trust
root (``keys``), ``require_signed`` or a bundle (an ``overlays`` path that is a file) is
given, else ``dev``. In prod, healing needs an explicit ``--heal``, and even then new
patches go to the *pending* directory, which the loader never reads.

Only ``os`` and ``sys`` are imported at module level: boot reads its settings on
every start. :mod:`codesuture.errors` is imported only to raise an error, ``tomllib``
only when a config file with CodeSuture settings exists; no ``from __future__``
import (annotations naming typing-only names are strings).
"""

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any, Callable, Mapping

    from codesuture.errors import ConfigError


def _invalid(name: str, reason: str) -> "ConfigError":
    """A :class:`codesuture.errors.ConfigError` to raise (the errors module is imported
    only when a setting is invalid: its classes cost start-up time)."""
    from codesuture.errors import ConfigError

    return ConfigError(name, reason)

#: Python versions whose bytecode the guards are tested on, as a PEP 440 specifier
#: set. Elsewhere healing is off, with one log line; loading overlays is unaffected.
#: In process it is evaluated by :func:`heal_python_allowed` (the in-process path does
#: not import ``packaging``: an app may pin any version of it); the tests check that
#: evaluation against ``packaging.specifiers.SpecifierSet``.
HEAL_PYTHONS = ">=3.11,<3.14"


def heal_python_allowed(version: tuple[int, int, int], spec: str = HEAL_PYTHONS) -> bool | None:
    """Whether Python *version* is in *spec*, a specifier set restricted to clauses
    ``>=X.Y`` and ``<X.Y`` (release numbers only, as PEP 440 compares them for final
    releases). None when *spec* holds anything else: the caller must then not heal."""
    allowed = True
    for clause in spec.split(","):
        clause = clause.strip()
        op = ">=" if clause.startswith(">=") else "<" if clause.startswith("<") and not clause.startswith("<=") else ""
        parts = clause[len(op):].strip().split(".")
        if not op or not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            return None
        bound = tuple(int(p) for p in parts) + (0,) * (3 - len(parts))
        allowed = allowed and (version >= bound if op == ">=" else version < bound)
    return allowed

#: Exit codes of ``python -m codesuture.boot`` / ``codesuture run`` for start-up
#: failures (the target's own exit code otherwise): 2 for a usage or configuration
#: error (as Python's own command line), 78 (EX_CONFIG, sysexits.h) when
#: ``--require-overlays`` is set and the store cannot be used, 130 after Ctrl-C.
EXIT_USAGE = 2
EXIT_STORE_UNUSABLE = 78
EXIT_INTERRUPTED = 130

MODES = ("dev", "prod")
#: When a run is replayed after a heal (``replay``): see :mod:`codesuture.runtime.effects`.
REPLAY_MODES = ("auto", "always", "never")
#: Parameter names whose values a repro capture never keeps, by default (``repro_redact``).
REPRO_REDACT = ("*password*", "*passwd*", "*token*", "*secret*", "*key*", "*credential*", "*auth*", "*cookie*")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(name: str, value: object) -> bool:
    """``1/true/yes/on`` -> True, ``0/false/no/off`` -> False (any case, surrounding
    whitespace ignored; a TOML boolean as it is). Raises ConfigError naming *name*."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _invalid(name, f"{value!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def parse_path(name: str, value: object, base: str | None = None) -> str:
    """A non-empty path, made absolute against *base* (default: the current directory).
    Raises ConfigError naming *name* for an empty value."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(text, str) or not text.strip():
        raise _invalid(name, "is empty (give a path; an empty value never means 'off')")
    text = os.path.expanduser(text)
    return os.path.normpath(os.path.join(base or os.getcwd(), text))


def parse_int(name: str, value: object, minimum: int = 0) -> int:
    """A whole number >= *minimum*. Raises ConfigError naming *name*."""
    if isinstance(value, bool):
        raise _invalid(name, f"{value!r} is not a whole number")
    try:
        number = value if isinstance(value, int) else int(str(value).strip(), 10)
    except ValueError:
        raise _invalid(name, f"{value!r} is not a whole number") from None
    if number < minimum:
        raise _invalid(name, f"{number} is below the minimum {minimum}")
    return number


def parse_float(name: str, value: object, minimum: float = 0.0) -> float:
    """A number >= *minimum*. Raises ConfigError naming *name*."""
    if isinstance(value, bool):
        raise _invalid(name, f"{value!r} is not a number")
    try:
        number = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    except ValueError:
        raise _invalid(name, f"{value!r} is not a number") from None
    if number != number or number < minimum:
        raise _invalid(name, f"{value!r} is not a number >= {minimum}")
    return number


def parse_mode(name: str, value: object) -> str:
    text = str(value).strip().lower()
    if text not in MODES:
        raise _invalid(name, f"{value!r} is not a mode (use dev or prod)")
    return text


def parse_replay(name: str, value: object) -> str:
    """A replay mode: ``auto``, ``always`` or ``never`` (case-insensitive). Raises
    ConfigError naming *name*."""
    text = str(value).strip().lower()
    if text not in REPLAY_MODES:
        raise _invalid(name, f"{value!r} is not a replay mode (use {', '.join(REPLAY_MODES)})")
    return text


def parse_globs(name: str, value: object) -> tuple[str, ...]:
    """Module-name patterns (``fnmatch``): a TOML list of strings, or a comma-separated
    string. Raises ConfigError naming *name* for an empty pattern."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = tuple(str(i).strip() for i in items)
    if not out or any(not i for i in out):
        raise _invalid(name, f"{value!r} is not a list of module patterns (e.g. 'app.*,billing')")
    return out


def parse_sink(name: str, value: object, base: str | None = None) -> str:
    """``-`` (standard error) or a non-empty path (see :func:`parse_path`). Raises
    ConfigError naming *name* for an empty value."""
    if isinstance(value, str) and value.strip() == "-":
        return "-"
    return parse_path(name, value, base)


#: Policy tiers (docs/governance.md).
TIERS = ("observe", "propose", "auto")


def parse_tiers(name: str, value: object) -> tuple[str, ...]:
    """Ordered ``glob=tier`` rules (a TOML list or a comma-separated string)."""
    out = []
    for item in value if isinstance(value, (list, tuple)) else str(value).split(","):
        glob, eq, tier = str(item).partition("=")
        if not eq or not glob.strip() or tier.strip().lower() not in TIERS:
            raise _invalid(name, f"{item!r} is not a rule glob=tier (tier: {', '.join(TIERS)})")
        out.append(f"{glob.strip()}={tier.strip().lower()}")
    return tuple(out)


def parse_signal(name: str, value: object) -> str:
    """A signal name (``SIGUSR2``, ``usr2``) or number as this platform has it, or ``off``."""
    import _signal  # type: ignore[import-not-found]  # builtin, no stub; `signal` imports enum

    text = str(value).strip().upper()
    canonical = text if text.isdigit() or text.startswith("SIG") else "SIG" + text
    if text in ("OFF", "NONE"):
        return "off"
    if (0 < int(text) < _signal.NSIG) if text.isdigit() else (
            isinstance(getattr(_signal, canonical, None), int) and not canonical.startswith("SIG_")):
        return canonical
    raise _invalid(name, f"{value!r} is not a signal here (e.g. SIGUSR2, USR2, 12, off)")


def parse_oci(name: str, value: object) -> str:
    """An OCI location (:func:`codesuture.util.ociref.split_oci`) in its canonical form.
    Raises ConfigError naming *name*."""
    from codesuture.util.ociref import split_oci

    try:
        registry, repository, tag, digest = split_oci(str(value))
    except ValueError as exc:
        raise _invalid(name, str(exc)) from None
    return f"oci://{registry}/{repository}" + (f"@{digest}" if digest else f":{tag}")


#: What the ``X-CodeSuture`` response header may say (``header``).
HEADER_LEVELS = ("off", "counts", "full")


def parse_header(name: str, value: object) -> str:
    """``off``, ``counts`` or ``full`` (a boolean: off, or counts). Raises ConfigError naming *name*."""
    text = str(value).strip().lower() if not isinstance(value, bool) else ("counts" if value else "off")
    if text in HEADER_LEVELS:
        return text
    if text in _TRUE:
        return "counts"
    if text in _FALSE:
        return "off"
    raise _invalid(name, f"{value!r} is not a header level (use off, counts or full)")


def parse_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(name, "is empty")
    return value.strip()


_METAVARS = {"bool": "", "int": "N", "float": "SECONDS", "mode": "dev|prod", "path": "PATH", "globs": "GLOBS",
             "sink": "FILE|-", "tiers": "RULES", "signal": "SIGNAL", "text": "TEXT", "header": "off|counts|full"}


class Field:
    """One setting: its attribute name, flag, environment variable, config key,
    parser and help text."""

    __slots__ = ("name", "flag", "env", "key", "kind", "help", "default", "_metavar")

    def __init__(self, name: str, flag: str | None, kind: str, help: str, *, env: bool = True, key: bool = True,
                 default: "str | None" = None, metavar: "str | None" = None) -> None:
        self.name = name
        self.flag = flag
        self.env = f"CODESUTURE_{name.upper()}" if env else None
        self.key = name if key else None
        self.kind = kind
        self.help = help
        #: The default as ``--help`` and ``codesuture doctor`` state it (text).
        self.default = default
        self._metavar = metavar

    @property
    def metavar(self) -> str:
        """What the flag's value looks like in ``--help`` (empty for a boolean flag)."""
        return self._metavar if self._metavar is not None else _METAVARS.get(self.kind, self.kind.upper())


#: Every setting, in the order ``--help`` lists them.
FIELDS: tuple[Field, ...] = (
    Field("mode", "--mode", "mode", "dev (heal, write overlays) or prod (load verified overlays only)",
          default="prod when keys, require_signed or a bundle is given, else dev"),
    Field("overlays", "--overlays", "path", "overlay store: a directory, a bundle file, or a bundle in an OCI registry, oci://HOST[:PORT]/REPOSITORY:TAG (needs keys and codesuture[oci])",
          default="codesuture run: overlays/ beside the script (the directory Python puts first on sys.path; never the current directory's for a script); boot: none (no store is read)"),
    Field("keys", "--keys", "path", "trust root: a folder of public keys (*.pem) and revoked.json, or one public key file",
          default="none (unsigned overlays load in dev)"),
    Field("require_signed", "--require-signed", "bool", "refuse every unsigned overlay", default="on in prod, off in dev"),
    Field("require_overlays", "--require-overlays", "bool",
          f"exit {EXIT_STORE_UNUSABLE} at start-up when the store or trust root is missing or unusable", default="off"),
    Field("min_set_version", "--min-set-version", "int", "refuse a signed overlay set older than this version (0: any)",
          default="0"),
    Field("heal", "--heal", "bool", "heal crashes live (in prod new patches go to the pending directory)",
          default="on in dev, off in prod"),
    Field("pending", "--pending", "path", "where patches made in prod, or beside a signed store, are proposed",
          default="<overlays>.pending"),
    Field("retries", "--retries", "int", "most replays of a run, each after a heal that made progress (0: heal, never replay)",
          default="16"),
    Field("replay", "--replay", "replay", "when a run is replayed after a heal, in a fresh process: auto (only a run that had no side effect before its crash: no file written or appended, nothing removed, renamed or created, no socket connect/send, subprocess or sqlite3 database; otherwise the patch is kept for the next run), always, never",
          default="auto", metavar="auto|always|never"),
    Field("ttl_days", "--ttl", "float", "lifetime of new patches in days (0: no expiry)", default="30", metavar="DAYS"),
    Field("record_messages", "--record-messages", "bool", "record raw exception messages in patch metadata",
          default="off: the type and a redacted message"),
    Field("control_flow", "--control-flow", "globs", "modules (fnmatch patterns, comma-separated) where a guard may decide control flow (elsewhere such sites become proposals for review)",
          default="none"),
    Field("incidents", "--incidents", "sink", "write every crash, heal, refusal, guard firing (rate-limited per site) and rollback as a JSON line to this file (appended, shared by processes), or - for standard error",
          default="off"),
    Field("incidents_max_bytes", None, "int", "size in bytes at which the incidents file is renamed to <file>.1 and a new one started (0: never)",
          default="10485760"),
    Field("shadow", "--shadow", "bool", "shadow mode: warn (rate-limited) when a patched function returns a guard's default to its caller",
          default="off"),
    Field("metrics", None, "bool", "count heals, refusals, guard firings and rollbacks with prometheus_client, and add OpenTelemetry span events, when installed",
          default="on"),
    Field("poll", "--poll", "float", "with an oci:// store: seconds between two looks at the tag (one manifest HEAD per host, whichever process is due; +-20% jitter)",
          default="30"),
    Field("pull_timeout", "--pull-timeout", "float", "with an oci:// store: longest wait for the registry at start-up, in seconds, before the last verified bundle in the host cache is used",
          default="2"),
    Field("plain_http", "--plain-http", "bool", "with an oci:// store: talk plain HTTP to the registry (no TLS); a loopback registry (localhost, 127.0.0.1, ::1) is plain HTTP without it",
          default="off"),
    Field("cache_dir", "--cache-dir", "path", "host cache of bundles pulled from a registry, content-addressed by manifest digest and shared by the host's processes",
          default="<state_dir>/oci-cache"),
    Field("state_dir", "--state-dir", "path", "host state (signed-set versions seen, withdrawn overlays)",
          default="$XDG_STATE_HOME/codesuture, else ~/.local/state/codesuture"),
    Field("tiers", None, "tiers", "ordered glob=tier rules on module names; tiers: observe, propose, auto", default="auto everywhere"),
    Field("allow", None, "globs", "heal and load overlays only for these modules", default="all"),
    Field("deny", None, "globs", "never heal nor load overlays for these modules (the stdlib and CodeSuture always)",
          default="none"),
    Field("max_patches_per_process", None, "int", "cap on new live patches per process, then observe (0: none)", default="0"),
    Field("max_patches_per_module", None, "int", "cap on patched sites per module in a process, then observe (0: none)",
          default="0"),
    Field("max_patches_per_hour", None, "int", "cap on patches created per hour in the store, then observe (0: none)",
          default="0"),
    Field("rollback_after", None, "int", "revert a patch after N requests failed after its guard fired (0: never)", default="3"),
    Field("kill_signal", None, "signal", "signal that reverts every live patch (off: none)", default="SIGUSR2"),
    Field("kill_file", None, "path", "file whose appearance reverts every live patch", default="none"),
    Field("repro", None, "bool", "capture the crashing call at heal time (arguments, interpreter and package versions, a script's argv) beside the overlay, for codesuture repro",
          default="off: arguments are users' data"),
    Field("repro_max_bytes", None, "int", "largest pickled arguments a repro capture keeps, in bytes (larger ones are recorded as too large)",
          default="65536"),
    Field("repro_redact", None, "globs", "parameter and option names (fnmatch patterns, case-insensitive) whose values a repro capture never keeps",
          default=",".join(REPRO_REDACT)),
    Field("sigstore_identity", None, "text", "accept Sigstore-signed overlays for this certificate identity", default="none"),
    Field("sigstore_issuer", None, "text", "... issued by this OIDC issuer", default="none"),
    Field("sigstore_staging", None, "bool", "verify Sigstore bundles against the staging trust root", default="off"),
    Field("header", None, "header", "what the X-CodeSuture response header says: off, counts (guards=N; replayed=N) or full (adds the guard and the patched site, module:line, which every client then sees)",
          default="counts"),
    Field("disable", None, "bool", "kill switch: CodeSuture does nothing, the target runs as with plain python", key=False,
          default="off"),
    Field("config", "--config", "path", "config file to read instead of the app root's codesuture.toml / pyproject.toml", key=False,
          default="the app root's codesuture.toml, else pyproject.toml [tool.codesuture]"),
)
FIELD = {f.name: f for f in FIELDS}

_PARSERS: "dict[str, Callable[[str, Any], Any]]" = {
    "bool": parse_bool, "int": parse_int, "float": parse_float, "mode": parse_mode, "text": parse_text,
    "globs": parse_globs, "tiers": parse_tiers, "signal": parse_signal, "header": parse_header, "replay": parse_replay,
}


class Settings:
    """Resolved settings. Every attribute of :data:`FIELDS` plus ``dry_run``,
    ``verbose``, ``app_root``, ``config_file``, ``is_bundle`` and ``sources`` (attribute
    name -> where its value came from: ``--flag``, ``CODESUTURE_X``, ``<file> key``
    or ``default``)."""

    __slots__ = tuple(f.name for f in FIELDS) + ("dry_run", "verbose", "app_root", "config_file", "is_bundle", "is_oci",
                                                 "sources")

    if TYPE_CHECKING:  # for mypy only: evaluated, 48 annotations cost every start
        mode: str
        overlays: str | None
        keys: str | None
        require_signed: bool
        require_overlays: bool
        min_set_version: int
        heal: bool
        pending: str | None
        retries: int
        replay: str
        ttl_days: float
        record_messages: bool
        control_flow: tuple[str, ...]
        incidents: str | None
        incidents_max_bytes: int
        shadow: bool
        metrics: bool
        poll: float
        pull_timeout: float
        plain_http: bool
        cache_dir: str
        state_dir: str
        tiers: tuple[str, ...]
        allow: tuple[str, ...]
        deny: tuple[str, ...]
        max_patches_per_process: int
        max_patches_per_module: int
        max_patches_per_hour: int
        rollback_after: int
        kill_signal: str
        kill_file: str | None
        repro: bool
        repro_max_bytes: int
        repro_redact: tuple[str, ...]
        sigstore_identity: str | None
        sigstore_issuer: str | None
        sigstore_staging: bool
        header: str
        disable: bool
        config: str | None
        dry_run: bool
        verbose: int
        app_root: str
        config_file: str | None
        is_bundle: bool
        is_oci: bool
        sources: dict[str, str]

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in ("mode", "overlays", "keys", "require_signed", "heal", "pending"))
        return f"Settings({shown})"

    @property
    def prod(self) -> bool:
        return self.mode == "prod"

    @property
    def ttl_seconds(self) -> float:
        return self.ttl_days * 86400.0

    def source(self, name: str) -> str:
        """Where setting *name* came from, for messages (``--overlays``, ``CODESUTURE_KEYS``...)."""
        return self.sources.get(name, "default")

    def export(self, environ: "os._Environ[str] | dict[str, str] | None" = None) -> None:
        """Publish the resolved settings as ``CODESUTURE_*`` variables, so subprocesses
        and workers started with ``python -m codesuture.boot`` agree with this process."""
        env = os.environ if environ is None else environ
        before = own_variables(env)  # one pass: a missing os.environ key costs a KeyError inside
        for f in FIELDS:
            if f.env is None or f.name in ("disable", "config"):
                continue
            if env is os.environ:
                EXPORTED_OVER.setdefault(f.env, before.get(f.env))
            value = getattr(self, f.name)
            if value is None or (isinstance(value, tuple) and not value):
                if f.env in before:
                    del env[f.env]
                continue
            if isinstance(value, bool):
                text = "1" if value else "0"
            elif isinstance(value, float):
                text = repr(value)
            elif isinstance(value, tuple):
                text = ",".join(value)
            else:
                text = str(value)
            if before.get(f.env) != text:
                env[f.env] = text


#: What :meth:`Settings.export` replaced in ``os.environ``: each variable's value before
#: the first export (None: it was unset). A replay (:func:`codesuture.runtime.rerun.replay`)
#: restores them, so the command line starts again as the user started it (a store it
#: chose by default is still the default there, not a ``CODESUTURE_OVERLAYS`` it set).
EXPORTED_OVER: dict[str, "str | None"] = {}


def own_variables(environ: "Mapping[str, str]") -> "dict[str, str]":
    """The ``CODESUTURE_*`` variables of *environ*, read in one pass (looking up each
    setting's variable in ``os.environ`` instead costs a raised KeyError per missing one,
    on every start)."""
    return {k: environ[k] for k in environ if k.startswith("CODESUTURE_")}


def default_state_dir(environ: "Mapping[str, str]") -> str:
    """``$XDG_STATE_HOME/codesuture``, else ``~/.local/state/codesuture``."""
    base = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "codesuture")


def find_app_root(start: str) -> str:
    """The nearest directory from *start* upwards holding ``pyproject.toml`` or
    ``codesuture.toml``; *start* itself when there is none."""
    here = os.path.abspath(start)
    d = here
    while True:
        if os.path.isfile(os.path.join(d, "pyproject.toml")) or os.path.isfile(os.path.join(d, "codesuture.toml")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return here
        d = parent


def read_config(path: str, *, explicit: bool) -> "dict[str, Any]":
    """CodeSuture's settings from a config file: the top level of a ``*.toml`` file
    other than ``pyproject.toml``, the ``[tool.codesuture]`` table of a
    ``pyproject.toml``. ``{}`` when a pyproject has no such table. Raises ConfigError
    naming the file when it is missing (*explicit*), unreadable or not TOML."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(1 << 20)
    except OSError as exc:
        if not explicit and isinstance(exc, FileNotFoundError):
            return {}
        raise _invalid(path, f"cannot read config file: {exc.strerror or exc}") from None
    is_pyproject = os.path.basename(path) == "pyproject.toml"
    if is_pyproject and b"[tool.codesuture" not in raw:
        return {}  # most apps: no tomllib import at all
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _invalid(path, f"not valid TOML: {exc}") from None
    if is_pyproject:
        table = data.get("tool", {}).get("codesuture", {})
    else:
        table = data.get("tool", {}).get("codesuture", data) if "tool" in data else data
    if not isinstance(table, dict):
        raise _invalid(path, "[tool.codesuture] is not a table")
    return table


def load(
    flags: "Mapping[str, Any] | None" = None,
    environ: "Mapping[str, str] | None" = None,
    *,
    start_dir: str | None = None,
    command: str = "boot",
    store_dir: str | None = None,
) -> Settings:
    """Resolve every setting.

    *flags*: values given on the command line, by attribute name (``overlays``,
    ``require_signed``, ``retries``...; plus ``dry_run`` and ``verbose``); strings are
    parsed like environment values. *environ*: default ``os.environ``. *start_dir*:
    where the app root search starts (the script's directory; default: the current
    directory). *command*: ``boot`` or ``run``. Only ``run`` has a default store:
    ``<store_dir>/overlays``, where *store_dir* is the directory Python puts first on
    ``sys.path`` for the target (:meth:`codesuture.boot.Invocation.store_dir`: the
    script's directory, never the current one for a script); None: no default store.
    ``boot`` never has one.

    Raises :class:`~codesuture.errors.ConfigError` naming the flag, variable or config
    key whose value is invalid.
    """
    flags = dict(flags or {})
    env = os.environ if environ is None else environ
    mine = own_variables(env)
    s = Settings()
    s.sources = {}
    s.dry_run = bool(flags.pop("dry_run", False))
    s.verbose = int(flags.pop("verbose", 0) or 0)
    s.app_root = find_app_root(start_dir or os.getcwd())

    config_path, config_explicit = None, False
    if flags.get("config") is not None:
        config_path, config_explicit = parse_path("--config", flags["config"]), True
    elif mine.get("CODESUTURE_CONFIG") is not None:
        config_path, config_explicit = parse_path("CODESUTURE_CONFIG", mine["CODESUTURE_CONFIG"]), True
    else:
        for name in ("codesuture.toml", "pyproject.toml"):
            candidate = os.path.join(s.app_root, name)
            if os.path.isfile(candidate):
                config_path = candidate
                break
    config = read_config(config_path, explicit=config_explicit) if config_path else {}
    s.config_file = config_path if (config or config_explicit) else None
    s.config = config_path if config_explicit else None
    allowed = {f.key for f in FIELDS if f.key}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise _invalid(f"{config_path}", f"unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    config_base = os.path.dirname(config_path) if config_path else None

    values: dict[str, Any] = {}
    for f in FIELDS:
        if f.name == "config":
            continue
        raw: Any = None
        where = base = None
        if f.name in flags and flags[f.name] is not None:
            raw, where = flags[f.name], f.flag or f.name
        elif f.env and f.env in mine:
            raw, where = mine[f.env], f.env
        elif f.key and f.key in config:
            raw, where, base = config[f.key], f"{config_path} {f.key}", config_base
        if where is None:
            continue
        if f.name == "overlays" and isinstance(raw, str) and raw.strip().startswith("oci://"):
            values[f.name] = parse_oci(where, raw)
        elif f.kind == "path":
            values[f.name] = parse_path(where, raw, base)
        elif f.kind == "sink":
            values[f.name] = parse_sink(where, raw, base)
        else:
            values[f.name] = _PARSERS[f.kind](where, raw)
        s.sources[f.name] = where

    s.disable = values.get("disable", False)
    s.overlays = values.get("overlays")
    if s.overlays is None and command == "run" and store_dir is not None:
        s.overlays = os.path.join(os.path.abspath(store_dir), "overlays")
    s.keys = values.get("keys")
    s.is_oci = s.overlays is not None and s.overlays.startswith("oci://")
    s.is_bundle = s.is_oci or (s.overlays is not None and os.path.isfile(s.overlays))
    explicit_signed = values.get("require_signed")
    if "mode" in values:
        s.mode = values["mode"]
    else:
        s.mode = "prod" if (s.keys is not None or explicit_signed or s.is_bundle) else "dev"
    if s.is_oci and (s.keys is None or not s.prod):
        raise _invalid(s.source("overlays"), "an oci:// store is loaded in prod mode only, and needs a trust root "
                          "(--keys / CODESUTURE_KEYS): a registry is an untrusted transport")
    s.require_signed = explicit_signed if explicit_signed is not None else s.prod
    s.heal = values.get("heal", not s.prod)
    s.require_overlays = values.get("require_overlays", False)
    s.min_set_version = values.get("min_set_version", 0)
    s.state_dir = values.get("state_dir") or default_state_dir(env)
    default_pending = (os.path.join(s.state_dir, "pending") if s.is_oci
                       else s.overlays.rstrip(os.sep) + ".pending" if s.overlays else None)
    s.pending = values.get("pending", default_pending)
    s.retries = values.get("retries", 16)
    s.replay = values.get("replay", "auto")
    s.ttl_days = values.get("ttl_days", 30.0)
    s.record_messages = values.get("record_messages", False)
    s.control_flow = values.get("control_flow", ())
    s.incidents = values.get("incidents")
    s.incidents_max_bytes = values.get("incidents_max_bytes", 10 * 1024 * 1024)
    s.shadow = values.get("shadow", False)
    s.metrics = values.get("metrics", True)
    s.poll = values.get("poll", 30.0)
    s.pull_timeout = values.get("pull_timeout", 2.0)
    s.plain_http = values.get("plain_http", False)
    s.cache_dir = values.get("cache_dir") or os.path.join(s.state_dir, "oci-cache")
    if s.poll < 0.1:
        raise _invalid(s.source("poll"), f"{s.poll} is below the minimum 0.1 seconds")
    s.tiers = values.get("tiers", ())
    s.allow = values.get("allow", ())
    s.deny = values.get("deny", ())
    s.max_patches_per_process = values.get("max_patches_per_process", 0)
    s.max_patches_per_module = values.get("max_patches_per_module", 0)
    s.max_patches_per_hour = values.get("max_patches_per_hour", 0)
    s.rollback_after = values.get("rollback_after", 3)
    s.kill_signal = values.get("kill_signal", "SIGUSR2")
    s.kill_file = values.get("kill_file")
    s.repro = values.get("repro", False)
    s.repro_max_bytes = values.get("repro_max_bytes", 64 * 1024)
    s.repro_redact = values.get("repro_redact", REPRO_REDACT)
    s.sigstore_identity = values.get("sigstore_identity")
    s.sigstore_issuer = values.get("sigstore_issuer")
    s.sigstore_staging = values.get("sigstore_staging", False)
    s.header = values.get("header", "counts")
    if s.overlays is not None and s.pending is not None and os.path.realpath(s.pending) == os.path.realpath(s.overlays):
        raise _invalid(s.source("pending"), "the pending directory must not be the overlay store itself")
    return s


def disabled(environ: "Mapping[str, str] | None" = None) -> bool:
    """The kill switch, ``CODESUTURE_DISABLE``, parsed strictly. Raises ConfigError."""
    env = os.environ if environ is None else environ
    value = env.get("CODESUTURE_DISABLE")
    return False if value is None else parse_bool("CODESUTURE_DISABLE", value)


#: Options of boot and ``codesuture run`` that are not settings: (names, help).
COMMAND_LINE_OPTIONS = (
    ("--dry-run", "say what would be patched, one line per crash site; change nothing"),
    ("-v, --verbose", "more of CodeSuture's log: each patch's instruction offset and counts (-vv: debug)"),
    ("-q, --quiet", "only errors from CodeSuture's own log handler (the app's logging configuration is untouched)"),
    ("-V, --version", "print CodeSuture's and Python's versions and exit"),
    ("-h, --help", "print this help and exit"),
    ("--", "end of CodeSuture's options: the next argument is the script, even when it starts with -"),
)

#: Exit codes of ``python -m codesuture.boot`` and ``codesuture run``: (code, meaning).
EXIT_CODES = (
    ("N", "the program's own exit code (0 when it ends normally)"),
    ("1", "the program ended with an unhandled exception, a syntax error, or -m found no module (as python)"),
    ("2", "usage or configuration error (a bad flag, variable or config key), or the script cannot be opened "
          "(as python)"),
    (str(EXIT_STORE_UNUSABLE), "--require-overlays is set and the store or trust root cannot be used"),
    (str(EXIT_INTERRUPTED), "interrupted (Ctrl-C)"),
)


def _wrap(text: str, indent: str, later: str | None = None, width: int = 88) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent if later is None else later,
                         break_on_hyphens=False)


def help_text(prog: str | None = None, doc: str = "") -> str:
    """Plain-text help: the usage line of *prog* and *doc* (when *prog* is given), then
    every setting (flag and its value, environment variable, config key, default),
    the command-line-only options and the exit codes. Generated from :data:`FIELDS`,
    so a new setting appears here by itself."""
    lines: list[str] = []
    if prog is not None:
        lines += [f"usage: {prog} [options] [--] (script.py | app-folder | app.zip | -m module | -c code) [args...]", ""]
        lines += [doc.strip(), ""] if doc.strip() else []
    lines += _wrap("Settings: a flag, else its CODESUTURE_* environment variable, else the key in the app's "
                   "[tool.codesuture] table (pyproject.toml) or codesuture.toml, else the default.", "")
    for f in FIELDS:
        if f.flag:
            head = f"{f.flag} {f.metavar}" if f.metavar else f"{f.flag} | --no-{f.flag[2:]}"
        else:
            head = f"{f.env}=" + (f.metavar or "1|0")
        lines.append("  " + head)
        lines += _wrap(f.help, "      ")
        where = [f"env {f.env}" + ("" if f.flag is None else ("=1|0" if f.kind == "bool" else ""))] if f.env and f.flag else []
        if f.key:
            where.append(f"config {f.key}")
        if f.default is not None:
            where.append(f"default: {f.default}")
        if where:
            lines += _wrap("; ".join(where), "      ")
    lines += ["", "Options of the command line only:"]
    for names, text in COMMAND_LINE_OPTIONS:
        lines.append(f"  {names}")
        lines += _wrap(text, "      ")
    lines += ["", "Exit codes:"]
    for code, text in EXIT_CODES:
        lines += _wrap(text, f"  {code:<5}", " " * 7)
    return "\n".join(lines)


__all__ = [
    "Settings", "FIELDS", "load", "disabled", "find_app_root", "read_config", "parse_bool", "parse_path",
    "parse_int", "parse_float", "help_text", "EXIT_CODES", "COMMAND_LINE_OPTIONS", "HEADER_LEVELS", "HEAL_PYTHONS", "EXIT_USAGE", "EXIT_STORE_UNUSABLE", "EXIT_INTERRUPTED",
]

if sys.version_info < (3, 11):  # pragma: no cover - requires-python says so too
    raise ImportError("CodeSuture needs Python 3.11 or newer")
