"""fleetcast.appliance — see docs/ARCHITECTURE.md."""

from __future__ import annotations

__all__: list[str] = []
