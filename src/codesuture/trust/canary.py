"""Canary activation: which processes load an overlay whose signed Statement says so.

``codesuture sign --canary-percent N --canary-env K=V`` records *activation
conditions* in each overlay's signed Statement (predicate field ``activation``) and in
its entry of the signed overlay set::

    "activation": {"percent": 30, "env": {"DEPLOY_RING": "canary"}}

* ``percent``: the overlay loads in about that share of processes. A process is
  selected when the stable hash of its identity, ``<host>/<worker id>``, falls below
  the percentage: SHA-256 of ``codesuture-canary/1\\n<host>/<worker id>``, its first 8
  bytes as a number in [0, 100). The host is the node name (``os.uname``); the worker
  id is ``CODESUTURE_WORKER_ID`` when set (give every worker of a fleet a stable one,
  e.g. gunicorn's worker index, a pod name, a job index), else the process id (then
  the selection changes when the process restarts). The same processes are selected
  for every overlay with the same percentage: a canary cohort, not a per-overlay draw.
* ``env``: every variable named must be set in the process to exactly that value.

Both must hold. An overlay whose conditions do not select the process is skipped by
the loader with one INFO line (the original module loads); ``codesuture verify`` and
``audit`` ignore activation (it is a property of the process, not of the overlay).
Malformed conditions in a signed Statement refuse the overlay.

Import-light: only :mod:`os` and :mod:`codesuture.util.digest`, imported by the loader when an admitted
overlay carries conditions.
"""

from __future__ import annotations

import os

from codesuture.util.digest import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Mapping

#: Environment variable naming this process in its fleet (else the process id).
WORKER_ENV = "CODESUTURE_WORKER_ID"
_DOMAIN = "codesuture-canary/1\n"
_MAX_ENV = 16


def check(value: object) -> "dict[str, Any]":
    """*value* as activation conditions, normalized: ``{"percent": number}`` and/or
    ``{"env": {name: value}}``. Raises ValueError when it is anything else (unknown
    keys, a percentage outside 0-100, names or values that are not non-empty strings)."""
    if not isinstance(value, dict) or not value or set(value) - {"percent", "env"}:
        raise ValueError(f"activation must be an object with percent and/or env, not {value!r}")
    out: dict[str, Any] = {}
    if "percent" in value:
        percent = value["percent"]
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise ValueError(f"activation percent must be a number from 0 to 100, not {percent!r}")
        out["percent"] = percent
    if "env" in value:
        env = value["env"]
        if (not isinstance(env, dict) or not env or len(env) > _MAX_ENV
                or not all(isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in env.items())):
            raise ValueError(f"activation env must map variable names to values, not {env!r}")
        out["env"] = dict(sorted(env.items()))
    return out


def host() -> str:
    """This host's name, as the canary hash sees it."""
    try:
        return os.uname().nodename
    except AttributeError:  # pragma: no cover - Windows
        return os.environ.get("COMPUTERNAME", "")


def worker_id(environ: "Mapping[str, str] | None" = None) -> str:
    """``CODESUTURE_WORKER_ID``, else the process id."""
    env = os.environ if environ is None else environ
    return env.get(WORKER_ENV) or str(os.getpid())


def bucket(identity: str) -> float:
    """Where *identity* falls in [0, 100): stable across processes, hosts and Pythons."""
    digest = sha256((_DOMAIN + identity).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 * 100.0


def selects(activation: "Mapping[str, Any]", environ: "Mapping[str, str] | None" = None,
            identity: str | None = None) -> str | None:
    """None when *activation* selects this process (or *identity*), else why not (for
    the log line)."""
    env = os.environ if environ is None else environ
    for name, wanted in (activation.get("env") or {}).items():
        if env.get(name) != wanted:
            return f"canary: needs {name}={wanted} ({name} is {'another value' if name in env else 'unset'} here)"
    percent = activation.get("percent")
    if percent is not None:
        ident = identity if identity is not None else f"{host()}/{worker_id(env)}"
        at = bucket(ident)
        if not at < percent:
            return f"canary: {percent}% of processes, this one ({ident}) is at {at:.1f}%"
    return None


def options(percent: float | None, env: "list[str] | tuple[str, ...]" = ()) -> "dict[str, Any] | None":
    """Activation conditions from ``sign --canary-percent N --canary-env K=V ...``, or
    None when neither is given. Raises ValueError for a malformed ``K=V``."""
    pairs: dict[str, str] = {}
    for item in env:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"--canary-env {item!r} is not NAME=VALUE")
        pairs[name.strip()] = value
    raw: dict[str, Any] = {}
    if percent is not None:
        raw["percent"] = int(percent) if float(percent).is_integer() else float(percent)
    if pairs:
        raw["env"] = pairs
    return check(raw) if raw else None


def with_activation(statement: bytes, activation: "Mapping[str, Any] | None") -> bytes:
    """The Statement JSON *statement* (as :func:`codesuture.trust.statement.build_statement`
    makes it: sorted keys, compact) with ``predicate.activation`` set."""
    if not activation:
        return statement
    import json

    data = json.loads(statement)
    data["predicate"]["activation"] = check(dict(activation))
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


def from_statement(payload: bytes) -> "dict[str, Any] | None":
    """The activation conditions of a (verified) Statement's predicate, or None. Raises
    ValueError when they are malformed."""
    import json

    try:
        pred = json.loads(payload).get("predicate")
    except (ValueError, AttributeError):
        return None
    if not isinstance(pred, dict) or pred.get("activation") is None:
        return None
    return check(pred["activation"])


__all__ = ["WORKER_ENV", "check", "host", "worker_id", "bucket", "selects", "options", "with_activation",
           "from_statement"]
