"""The dashboard's panels: one module per panel, each a class with an ``update`` method."""

from __future__ import annotations

__all__: list[str] = []
