"""The one place where values become shell words."""

from __future__ import annotations

import shlex
from typing import Any


def quote(value: Any) -> str:
    """A single shell word that expands to exactly `value` (str() of it)."""
    return shlex.quote(str(value))
