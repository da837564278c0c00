"""Process-wide crash hooks (zero-code-change recovery): being written."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any


def install(session: Any) -> None:
    """Install the process-wide crash hooks for *session* (idempotent)."""
