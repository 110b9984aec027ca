"""One session's refresh against a real appliance, polling only (no browser, no WebSocket)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from fleetcast.dashboard.session import DashboardSession
from fleetcast.dashboard.settings import DashboardSettings
from fleetcast.dashboard.state import DISCONNECTED, POLLING

from .conftest import free_port

if TYPE_CHECKING:
    from .conftest import Process

pytestmark = pytest.mark.slow


def test_polling_refresh_fills_every_panel(appliance: Process) -> None:
    settings = DashboardSettings(appliance_url=appliance.url, use_websocket=False)

    async def go() -> DashboardSession:
        session = DashboardSession(settings, doc=None)
        await session.refresh()
        session.select_server(session.state.current.servers[-1].server_name)
        await session.refresh()  # fetches the selected server's curves
        await session.client.aclose()
        return session

    session = asyncio.run(go())
    state = session.state
    assert state.connection == POLLING
    assert state.status is not None
    assert state.status.demo_enabled
    names = [s.server_name for s in state.current.servers]
    selected = state.selected_server
    assert selected == names[-1]
    assert set(session.top.names(state)) | {selected} <= set(state.details)
    assert "polling" in session.header.status.object
    assert session.header.demo.visible
    assert selected in session.heatmap.detail.summary.object
    assert sorted(c["name"] for c in session.heatmap.grid.cells) == sorted(names)
    assert session.heatmap.detail.plot.view.visible
    assert len(session.overview.trend.source.data["time"]) > 0
    assert session.historical.target.value in session.historical.target.options
    assert len(session.historical.plot.source.data["time"]) > 0


def test_unreachable_appliance_before_any_data() -> None:
    settings = DashboardSettings(
        appliance_url=f"http://127.0.0.1:{free_port()}", use_websocket=False, request_timeout_s=1
    )

    async def go() -> DashboardSession:
        session = DashboardSession(settings, doc=None)
        await session.refresh()
        await session.client.aclose()
        return session

    session = asyncio.run(go())
    assert session.state.connection == DISCONNECTED
    assert not session.state.stale  # nothing on screen to call stale
    assert "disconnected" in session.header.status.object
    assert "has sent no forecast yet" in session.header.banner.object
    assert session.heatmap.grid.cells == []
