"""Overlays reaching running processes: being written."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any


def start(session: Any) -> None:
    """Start watching the session's store for new overlays (idempotent)."""
