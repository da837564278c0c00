"""RFC 3339 UTC timestamps, the only time format CodeSuture writes.

Form: ``YYYY-MM-DDTHH:MM:SSZ`` (RFC 3339, section 5.6, UTC, whole seconds). Strings of
this exact form order as the instants they name, so the load path compares expiry
times as strings without parsing them.
"""

from __future__ import annotations

import time


def iso_utc(epoch: float) -> str:
    """Format *epoch* (seconds since the Unix epoch) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def is_iso_utc(text: object) -> bool:
    """True when *text* has exactly the form :func:`iso_utc` writes."""
    if not isinstance(text, str) or len(text) != 20:
        return False
    return (text[4] == text[7] == "-" and text[10] == "T" and text[13] == text[16] == ":" and text[19] == "Z"
            and (text[:4] + text[5:7] + text[8:10] + text[11:13] + text[14:16] + text[17:19]).isdigit())


def parse_iso_utc(text: str) -> float:
    """Inverse of :func:`iso_utc`: seconds since the epoch. Raises ``ValueError`` on
    any other form."""
    import calendar

    if not is_iso_utc(text):
        raise ValueError(f"not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ): {text!r}")
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


_NOW: list = [None, ""]


def now_text(now: float) -> str:
    """``iso_utc(now)``, formatted once per second (admission runs once per module)."""
    second = int(now)
    if _NOW[0] != second:
        _NOW[0], _NOW[1] = second, iso_utc(second)
    return _NOW[1]
