"""Reading incidents back (``codesuture incidents [--since ISO|DURATION] [--json] FILE``).

The file is what :mod:`codesuture.runtime.incidents` writes: one JSON object per line.
Its rotated predecessor ``FILE.1`` is read first when it exists, so the incidents come
in the order they were written. Lines that are not a JSON object with a ``time`` and a
``kind`` are skipped and counted (a process killed mid-write, a file that is not an
incidents file).

:func:`digest` sums them up: counts per kind, per refusal reason, per fingerprint
(with the sites that share it) and the sites with the most incidents (guard firings
counted by the firings each incident stands for).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

from codesuture.util.clock import iso_utc, parse_iso_utc

#: Longest line read (longer ones are skipped as malformed).
MAX_LINE = 64 * 1024
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """Seconds since the epoch from ``--since``: an ISO 8601 time (``2025-01-02T03:04:05Z``,
    an offset, or none: UTC), or a duration back from *now* (``90s``, ``15m``, ``2h``,
    ``7d``, ``1w``, ``1h30m``). Raises ValueError naming what is wrong."""
    value = text.strip()
    if value and _DURATIONS.fullmatch(value):
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(value))
        return (time.time() if now is None else now) - seconds
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 time (2025-01-02T03:04:05Z) nor a duration "
                         f"(90s, 15m, 2h, 7d, 1h30m)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


@dataclass
class Incidents:
    """What :func:`read` found: the incidents (oldest first), the files read and the
    number of lines skipped."""

    items: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    malformed: int = 0


def files_of(path: str) -> list[str]:
    """``[path.1, path]``, those that exist."""
    return [p for p in (path + ".1", path) if os.path.isfile(p)]


def _lines(path: str) -> Iterator[bytes | None]:
    """The lines of *path*; None for one over :data:`MAX_LINE` (skipped unread)."""
    with open(path, "rb") as fh:
        while True:
            raw = fh.readline(MAX_LINE + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):
                    raw = fh.readline(MAX_LINE + 1)
                yield None
                continue
            yield raw


def read(path: str, since: float | None = None) -> Incidents:
    """The incidents in *path* (and ``path.1``) at or after *since* (seconds since the
    epoch; None: all). Raises OSError when neither file can be read."""
    out = Incidents(files=files_of(path))
    if not out.files:
        raise FileNotFoundError(2, "no such incidents file", path)
    cutoff = iso_utc(since) if since is not None else None
    for name in out.files:
        for raw in _lines(name):
            if raw is None or not raw.strip():
                out.malformed += raw is None
                continue
            try:
                item = json.loads(raw)
            except ValueError:
                out.malformed += 1
                continue
            if not (isinstance(item, dict) and isinstance(item.get("time"), str) and isinstance(item.get("kind"), str)):
                out.malformed += 1
                continue
            try:
                parse_iso_utc(item["time"])
            except ValueError:
                out.malformed += 1
                continue
            if cutoff is not None and item["time"] < cutoff:  # RFC 3339 UTC strings order as instants
                continue
            out.items.append(item)
    return out


def _weight(item: dict[str, Any]) -> int:
    """Events one incident stands for: a guard_fired incident counts its firings."""
    n = item.get("firings", 1) if item.get("kind") == "guard_fired" else 1
    return n if isinstance(n, int) and n > 0 else 1


def digest(found: Incidents, top: int = 10) -> dict[str, Any]:
    """The digest of *found* as plain data (see the module docstring)."""
    items = found.items
    kinds = Counter(str(i["kind"]) for i in items)
    reasons = Counter(str(i.get("reason", "")) for i in items if i["kind"] == "refusal")
    sites: dict[str, dict[str, Any]] = {}
    prints: dict[str, dict[str, Any]] = {}
    for item in items:
        site = str(item.get("site") or "?")
        entry = sites.setdefault(site, {"site": site, "incidents": 0, "events": 0, "kinds": Counter(),
                                        "fingerprint": "", "guard": ""})
        entry["incidents"] += 1
        entry["events"] += _weight(item)
        entry["kinds"][item["kind"]] += 1
        entry["fingerprint"] = entry["fingerprint"] or str(item.get("fingerprint") or "")
        entry["guard"] = entry["guard"] or str(item.get("guard") or "")
        fp = str(item.get("fingerprint") or "")
        if fp:
            p = prints.setdefault(fp, {"fingerprint": fp, "incidents": 0, "events": 0, "sites": [], "guards": []})
            p["incidents"] += 1
            p["events"] += _weight(item)
            if site not in p["sites"]:
                p["sites"].append(site)
            guard = str(item.get("guard") or "")
            if guard and guard not in p["guards"]:
                p["guards"].append(guard)
    ranked = sorted(sites.values(), key=lambda e: (-e["events"], -e["incidents"], e["site"]))
    return {
        "files": found.files,
        "incidents": len(items),
        "malformed": found.malformed,
        "first": items[0]["time"] if items else None,
        "last": items[-1]["time"] if items else None,
        "processes": len({i.get("pid") for i in items}),
        "kinds": dict(sorted(kinds.items())),
        "refusals": dict(sorted(reasons.items())),
        "top_sites": [{**e, "kinds": dict(sorted(e["kinds"].items()))} for e in ranked[:top]],
        "fingerprints": sorted(prints.values(), key=lambda p: (-p["events"], p["fingerprint"])),
    }


def render(d: dict[str, Any]) -> str:
    """*d* (from :func:`digest`) as text."""
    lines = [f"{d['incidents']} incident(s)" + (f" from {d['first']} to {d['last']}" if d["incidents"] else "")
             + f", {d['processes']} process(es); read {', '.join(d['files'])}"]
    if d["malformed"]:
        lines.append(f"{d['malformed']} malformed line(s) skipped")
    if d["kinds"]:
        lines.append("by kind: " + ", ".join(f"{k} {n}" for k, n in d["kinds"].items()))
    if d["refusals"]:
        lines.append("refusals: " + ", ".join(f"{k or '?'} {n}" for k, n in d["refusals"].items()))
    if d["top_sites"]:
        lines.append("top sites (events; guard firings counted one by one):")
        for e in d["top_sites"]:
            kinds = ", ".join(f"{k} {n}" for k, n in e["kinds"].items())
            extra = f"  [{e['guard']}]" if e["guard"] else ""
            fp = f"  fingerprint {e['fingerprint']}" if e["fingerprint"] else ""
            lines.append(f"  {e['events']:>7}  {e['site']}{extra}  ({kinds}){fp}")
    if d["fingerprints"]:
        lines.append("by fingerprint:")
        for p in d["fingerprints"]:
            guards = f" [{', '.join(p['guards'])}]" if p["guards"] else ""
            lines.append(f"  {p['fingerprint']}  {p['events']} event(s) at {len(p['sites'])} site(s){guards}: "
                         + "; ".join(p["sites"]))
    return "\n".join(lines) + "\n"


__all__ = ["parse_since", "read", "digest", "render", "files_of", "Incidents"]
