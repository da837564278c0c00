"""What guards report when they fire, and the unit of work they fire in.

Every guard's slow path (the moment it is about to yield its default instead of
letting the operation raise) calls :func:`fired` with its *site*
(``"<guard>@<module>:<line>"``); the healthy path never calls anything. The call
counts the firing for the process and, when a unit of work is open in this context
(a request, a script run: :func:`begin`), records it there, so an HTTP boundary can
say on the response exactly when a default was yielded (the ``X-CodeSuture`` header).

:func:`fired` returns True when the guard must not yield its default but let the
original operation raise (then the genuine exception reaches the program): today
never; the hook is where run-time checks belong.

Kept import-light: it runs inside patched code, possibly in production, where only
``contextvars`` is imported on the first firing.
"""

from __future__ import annotations

import contextvars

#: site -> number of firings in this process.
COUNTS: dict[str, int] = {}


class Unit:
    """One unit of work: the sites that fired during it (in order, with repeats), and
    how many times it was replayed after a heal."""

    __slots__ = ("fired", "replayed", "patched")

    def __init__(self) -> None:
        self.fired: list[str] = []
        self.replayed = 0
        self.patched: list[str] = []

    def __repr__(self) -> str:
        return f"Unit(fired={self.fired!r}, replayed={self.replayed}, patched={self.patched!r})"

    @property
    def degraded(self) -> bool:
        """True when a guard yielded a default or the unit was replayed."""
        return bool(self.fired or self.replayed)

    def header(self) -> str | None:
        """The ``X-CodeSuture`` header value, or None for a healthy unit. Form:
        ``guards=N; guard=<name>; site=<module>:<line>[; replayed=N]``, naming the
        first site that fired (or was patched)."""
        if not self.degraded:
            return None
        parts = [f"guards={len(self.fired)}"]
        first = self.fired[0] if self.fired else (self.patched[0] if self.patched else "")
        if first:
            guard, _, where = first.partition("@")
            parts += [f"guard={guard}", f"site={where}"]
        if self.replayed:
            parts.append(f"replayed={self.replayed}")
        return "; ".join(parts)


_UNIT: contextvars.ContextVar[Unit | None] = contextvars.ContextVar("codesuture_unit", default=None)


def fired(site: str) -> bool:
    """Called by a guard about to yield its default at *site*. Returns True when the
    guard must raise the original exception instead (never, today). Never raises."""
    COUNTS[site] = COUNTS.get(site, 0) + 1
    unit = _UNIT.get()
    if unit is not None:
        unit.fired.append(site)
    return False


def begin() -> tuple[Unit, contextvars.Token[Unit | None]]:
    """Open a unit of work in the current context; returns it and the token for
    :func:`end`."""
    unit = Unit()
    return unit, _UNIT.set(unit)


def end(token: contextvars.Token[Unit | None]) -> None:
    """Close the unit opened with *token*."""
    _UNIT.reset(token)


def current() -> Unit | None:
    """The unit of work open in this context, if any."""
    return _UNIT.get()


__all__ = ["COUNTS", "Unit", "fired", "begin", "end", "current"]
