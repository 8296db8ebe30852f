"""Shared test helpers."""

from __future__ import annotations

import uuid


def unique(name: str) -> str:
    """A name no other test or run uses: ``t_<name>_<8 hex>``."""
    return f"t_{name}_{uuid.uuid4().hex[:8]}"
