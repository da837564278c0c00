"""When a boundary replays its unit of work after a heal: the one rule they all share.

A replay is worth it while it makes progress: each heal before it either made a new
patch or adopted one another process made. A heal that changed nothing (the site was
already patched in this process: a thread still ran the old code) earns one replay;
two such in a row end the replays. And never more than *limit* replays in one unit of
work (a script run, a request, a call), however many distinct sites it heals: one
expression may fail at several sites in turn (``a.x + b.y``), each healed on its replay.

No ``from __future__`` import: it is a module of its own to load.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

#: Default replay limit of a unit of work.
DEFAULT_LIMIT = 16


class Replays:
    """Counts the replays of one unit of work. ``allow(result)`` after each heal (its
    :class:`~codesuture.runtime.healer.HealResult`, or None when not healed): True when
    the unit may run again. ``done``: replays allowed so far."""

    __slots__ = ("limit", "done", "_stalled")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.done = 0
        self._stalled = 0

    def state(self) -> "dict[str, int]":
        """What a replay in a fresh process continues from (:meth:`restore`)."""
        return {"done": self.done, "stalled": self._stalled}

    def restore(self, state: "dict[str, Any]") -> None:
        try:
            self.done, self._stalled = int(state.get("done", 0)), int(state.get("stalled", 0))
        except (TypeError, ValueError):
            pass

    def allow(self, result: "Any") -> bool:
        if result is None or self.done >= self.limit:
            return False
        if getattr(result, "status", "patched") in ("patched", "adopted"):
            self._stalled = 0
        else:
            self._stalled += 1
            if self._stalled > 1:
                return False
        self.done += 1
        return True


__all__ = ["Replays", "DEFAULT_LIMIT"]
