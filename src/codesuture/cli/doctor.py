"""``codesuture doctor``: what boot would do here, and why (standard library only).

Takes boot's options (``codesuture doctor --keys keys deploy.cso``, optionally the
target script, whose directory starts the app root search) and reports, without
running anything or writing anything: the mode, the store and what it holds, the
trust root, the state directory, every effective setting with its source (flag,
environment variable, config file key, default) and the installed extras. ``--json``
prints the same as one JSON object. Like ``ddtrace-run --info`` for its users.

Exit codes: 0 when boot would start; 1 when ``--require-overlays`` is set and the
store or trust root cannot be used (boot would exit 78); 2 for a usage or
configuration error (the message boot would print).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

USAGE = "usage: codesuture doctor [--json] [boot options] [script.py | app-folder | -m module]"

#: Extras of the codesuture distribution: name -> the distributions they install.
EXTRAS = {
    "cli": ("click", "sigstore"),
    "sigstore": ("sigstore",),
    "sbom": ("cyclonedx-python-lib",),
}


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _store(s: Any) -> dict[str, Any]:
    """What the configured store is: kind, existence, overlay count."""
    path = s.overlays
    if path is None:
        return {"path": None, "state": "none configured: no store is read"}
    if os.path.isfile(path):
        return {"path": path, "kind": "bundle", "state": "exists"}
    if not os.path.lexists(path):
        state = "does not exist" + ("; the first patch creates it" if s.heal and not s.prod else "")
        return {"path": path, "kind": "folder", "state": state}
    if not os.path.isdir(path):
        return {"path": path, "state": "neither a folder nor a bundle file: unusable"}
    try:
        names = os.listdir(path)
    except OSError as exc:
        return {"path": path, "kind": "folder", "state": f"cannot be listed: {exc.strerror or exc}"}
    overlays = sum(1 for n in names if n.endswith(".overlay") and not n.startswith("."))
    signed_set = os.path.isfile(os.path.join(path, "overlays.manifest.dsse.json"))
    return {"path": path, "kind": "folder", "state": "exists", "overlays": overlays, "signed_set": signed_set}


def _trust_root(s: Any) -> dict[str, Any]:
    path = s.keys
    if path is None:
        return {"path": None, "state": "none: unsigned overlays load in dev, every signed check fails in prod"
                if not s.require_signed else "none: every overlay will be refused (require_signed)"}
    if os.path.isfile(path):
        return {"path": path, "state": "one public key file", "keys": 1}
    if not os.path.isdir(path):
        return {"path": path, "state": "does not exist: every signed overlay will be refused"}
    try:
        names = os.listdir(path)
    except OSError as exc:
        return {"path": path, "state": f"cannot be listed: {exc.strerror or exc}"}
    keys = sum(1 for n in names if n.endswith((".pem", ".pub")) and not n.startswith("."))
    return {"path": path, "state": "folder", "keys": keys, "revoked_json": "revoked.json" in names}


def _mode_source(s: Any) -> str:
    if "mode" in s.sources:
        return str(s.source("mode"))
    if not s.prod:
        return "default: no trust root, require_signed or bundle"
    why = [w for w, on in (("a trust root", s.keys is not None), ("a bundle", s.is_bundle),
                           ("require_signed", "require_signed" in s.sources)) if on]
    return "default: prod because of " + " and ".join(why)


def report(s: Any) -> dict[str, Any]:
    """Everything ``doctor`` says about settings *s*, as one JSON-ready dict."""
    from codesuture import __version__, settings

    fields = []
    for f in settings.FIELDS:
        value = getattr(s, f.name, None)
        fields.append({"name": f.name, "value": list(value) if isinstance(value, tuple) else value,
                       "source": s.source(f.name) if f.name != "config" else (s.config_file or "default")})
    healable = settings.heal_python_allowed(tuple(sys.version_info[:3]))  # type: ignore[arg-type]
    return {
        "codesuture": __version__,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "mode": s.mode,
        "mode_source": _mode_source(s),
        "heal": s.heal,
        "heal_on_this_python": bool(healable),
        "app_root": s.app_root,
        "config_file": s.config_file,
        "store": _store(s),
        "trust_root": _trust_root(s),
        "state_dir": {"path": s.state_dir, "exists": os.path.isdir(s.state_dir)},
        "settings": fields,
        "extras": {name: {d: _version(d) for d in dists} for name, dists in EXTRAS.items()},
        "disabled": settings.disabled(),
    }


def render(r: dict[str, Any]) -> str:
    st, tr = r["store"], r["trust_root"]
    store = f"{st['path']} ({st['kind'] + ', ' if 'kind' in st else ''}{st['state']}" if st["path"] else st["state"]
    if "overlays" in st:
        store += f", {st['overlays']} overlay(s), {'a' if st['signed_set'] else 'no'} signed overlay set"
    store += ")" if st["path"] else ""
    trust = (f"{tr['path']} ({tr['state']}" + (f", {tr['keys']} key(s)" if "keys" in tr else "") + ")"
             if tr["path"] else tr["state"])
    lines = [
        f"codesuture {r['codesuture']} (Python {r['python']}, {r['executable']})",
        f"mode:            {r['mode']} ({r['mode_source']})" + ("  [CODESUTURE_DISABLE: everything off]" if r["disabled"] else ""),
        f"healing:         {'on' if r['heal'] else 'off'}" + ("" if r["heal_on_this_python"] else
                                                           " (but not on this Python: guards are untested here)"),
        f"app root:        {r['app_root']}",
        f"config file:     {r['config_file'] or 'none'}",
        f"store:           {store}",
        f"trust root:      {trust}",
        f"state directory: {r['state_dir']['path']} ({'exists' if r['state_dir']['exists'] else 'not created yet'})",
        "",
        "settings (value, source):",
    ]
    width = max(len(f["name"]) for f in r["settings"])
    for f in r["settings"]:
        value = f["value"]
        shown = ",".join(value) if isinstance(value, list) else "-" if value is None else str(value).lower() \
            if isinstance(value, bool) else str(value)
        lines.append(f"  {f['name']:<{width}}  {shown}  ({f['source']})")
    lines += ["", "extras (pip install 'codesuture[NAME]'):"]
    for name, dists in r["extras"].items():
        have = all(dists.values())
        detail = ", ".join(f"{d} {v}" if v else f"{d} missing" for d, v in dists.items())
        lines.append(f"  {name:<9} {'installed' if have else 'not installed'} ({detail})")
    return "\n".join(lines)


def doctor(argv: list[str], verbose: int = 0) -> int:
    """``codesuture doctor ARGV...``; returns the exit code."""
    from codesuture import boot, settings
    from codesuture.errors import ConfigError

    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE + "\n\n" + (__doc__ or "").split("\n\n", 1)[1].strip())
        return 0
    try:
        inv = boot.parse(argv or ["-c", ""])
    except boot.UsageError as exc:
        if str(exc) == "--version":
            print(boot.version())
            return 0
        if "nothing to run" in str(exc):
            inv = boot.parse([*argv, "-c", ""])
        else:
            print(f"codesuture doctor: {exc or 'bad command line'}", file=sys.stderr)
            print(USAGE, file=sys.stderr)
            return settings.EXIT_USAGE
    try:
        s = settings.load(inv.flags, os.environ, start_dir=inv.start_dir(), command="boot")
        r = report(s)
    except ConfigError as exc:
        if as_json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        else:
            print(f"codesuture doctor: {exc}", file=sys.stderr)
        return settings.EXIT_USAGE
    unusable = s.require_overlays and (
        r["store"]["path"] is None or r["store"]["state"] not in ("exists",)
        or (r["trust_root"]["path"] is not None and "does not exist" in r["trust_root"]["state"]))
    r["ok"] = not unusable
    print(json.dumps(r, indent=2) if as_json else render(r))
    if unusable and not as_json:
        print(f"codesuture doctor: --require-overlays is set and the store or trust root cannot be used: boot would "
              f"exit {settings.EXIT_STORE_UNUSABLE}", file=sys.stderr)
    return 1 if unusable else 0


__all__ = ["doctor", "report", "render", "EXTRAS"]
