"""fleetcast.dashboard — the Panel web app, a pure client of the appliance API.

``fleetcast dashboard`` (:mod:`.commands`) builds one :class:`.settings.DashboardSettings`
and serves :mod:`.app`; every browser session gets its own :class:`.session.DashboardSession`.
See docs/DASHBOARD.md.
"""

from __future__ import annotations

__all__: list[str] = []
