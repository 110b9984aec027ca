"""One session's refresh against a real appliance, polling only (no browser, no WebSocket)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from fleetcast.dashboard.session import DashboardSession
from fleetcast.dashboard.settings import DashboardSettings
from fleetcast.dashboard.state import DISCONNECTED, POLLING, REFUSED

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


def test_a_model_reload_at_the_same_step_redraws_the_curves() -> None:
    # POST /admin/reload (or a restart on the same data) forecasts the same step again with
    # the new model: same prediction_time, other numbers. The curves of the old model were
    # kept (state and plot were keyed by prediction_time) until the next step, 5 minutes
    # on a real fleet, beside a table of the new model's numbers.
    from .fake_appliance import FakeAppliance, session_for

    fake = FakeAppliance()
    session = session_for(fake)

    async def go() -> None:
        await session.refresh()
        session.select_server("ppml0015")
        await session.refresh()
        fake.p50 = 7.0  # the reloaded model
        fake.current["model_version"] = "tft_model_reloaded"
        fake.current["servers"][1]["risk"] = 0.5
        await session.refresh()
        await session.client.aclose()

    asyncio.run(go())
    state = session.state
    assert state.current.model_version == "tft_model_reloaded"
    assert state.details["ppml0015"].curves["cpu_pct"]["p50"][0] == 7.0
    assert list(session.heatmap.detail.plot.bands["cpu_pct"].data["p50"])[:2] == [7.0, 7.0]
    top = session.top.details[0]  # ppml0002, the riskiest: its curves are redrawn too
    assert list(top.plot.bands["cpu_pct"].data["p50"])[:2] == [7.0, 7.0]


def test_a_refused_refresh_marks_the_data_stale_until_a_refresh_succeeds() -> None:
    # A refresh the appliance refuses (here a 401: restarted with --read-key-required; a
    # lasting 429 is the same) updates nothing. The page said "connected (polling)" with
    # the old data unmarked for as long as the refusal lasted.
    from .fake_appliance import FakeAppliance, session_for

    fake = FakeAppliance()
    session = session_for(fake)

    async def go() -> tuple[str, bool, str, str]:
        await session.refresh()
        fake.refuse = {"/status": 401}
        await session.refresh()
        refused = (
            session.state.connection,
            session.state.stale,
            session.header.banner.object,
            session.header.status.object,
        )
        fake.refuse.clear()
        await session.refresh()
        await session.client.aclose()
        return refused

    connection, stale, banner, status = asyncio.run(go())
    assert connection == REFUSED
    assert stale
    assert "STALE DATA — the appliance refuses the dashboard's requests since" in banner
    assert "HTTP 401" in banner
    assert 'data-connection="refused"' in status
    assert session.state.connection == POLLING
    assert not session.state.stale
    assert not session.header.banner.visible
    assert session.header.message.object == ""  # the banner says it; the demo note stays free


def test_a_server_without_curves_does_not_blank_the_others() -> None:
    # A server named `current` (its /predictions/{name} is the fleet's set) in the top 3, or
    # a 404 for a server forgotten between two requests, failed the whole refresh on every
    # tick: no curves for any top server, no Historical panel, a "versions differ" error.
    from .fake_appliance import FakeAppliance, session_for
    from .samples import forecast_body

    fake = FakeAppliance(refuse={"/predictions/ppweb001": 404})
    fake.current["servers"].insert(0, forecast_body("current", "web_api", 0.95))
    session = session_for(fake)

    async def go() -> None:
        await session.refresh()
        session.select_server("ppweb001")
        await session.refresh()
        await session.client.aclose()

    asyncio.run(go())
    state = session.state
    assert session.top.names(state) == ["current", "ppml0002", "ppml0015"]
    assert sorted(state.details) == ["ppml0002", "ppml0015"]
    assert sorted(state.unavailable) == ["current", "ppweb001"]
    assert session.header.message.object == ""
    assert [d.plot.view.visible for d in session.top.details] == [False, True, True]
    assert "No curves: A server named `current`" in session.top.details[0].summary.object
    assert "No curves: The appliance refused" in session.heatmap.detail.summary.object
    assert len(session.historical.plot.source.data["time"]) > 0
    # asked once per forecast set, not again on every refresh
    assert fake.requests.count("/predictions/ppweb001") == 1


def test_a_scenario_click_is_held_until_it_is_sent() -> None:
    # The click's task was created and dropped: asyncio holds tasks weakly, so a collection
    # mid-flight could lose the scenario change. The session now holds it until it ends.
    from .fake_appliance import FakeAppliance, session_for

    fake = FakeAppliance()
    session = session_for(fake)

    async def go() -> tuple[int, int]:
        session._scenario_clicked("degrading")
        held = len(session._tasks)
        await asyncio.gather(*session._tasks)
        await asyncio.sleep(0)  # the done callback runs on the next loop turn
        await session.client.aclose()
        return held, len(session._tasks)

    held, after = asyncio.run(go())
    assert (held, after) == (1, 0)
    assert "/demo/scenario" in fake.requests
    assert "degrading" in session.header.message.object


def test_a_pushed_forecast_survives_a_failed_refresh() -> None:
    # The WebSocket pushes the 10:10 set while a refresh fails (here a 429 on /status). The
    # failed refresh dropped the set, and the next one does not poll /predictions/current
    # while the socket is live: the 10:05 set stayed on screen as "connected (live)" until
    # the next push, a step later.
    from fleetcast.dashboard.api import CurrentPredictions, parse

    from .fake_appliance import FakeAppliance, session_for
    from .samples import current_body

    fake = FakeAppliance()
    session = session_for(fake)
    session._ws_live = True  # as the socket's link callback sets it
    newer = current_body()
    newer["prediction_time"] = "2026-11-27T10:10:00Z"
    newer["servers"][0]["risk"] = 0.9

    async def go() -> str:
        await session.refresh()  # nothing on screen yet: polls the 10:05 set
        fake.refuse = {"/status": 429}
        session._on_push(parse(newer, CurrentPredictions, "push"))
        await session.refresh()
        failed = session.state.connection
        fake.refuse.clear()
        await session.refresh()
        await session.client.aclose()
        return failed

    assert asyncio.run(go()) == REFUSED
    assert session.state.current.prediction_time == "2026-11-27T10:10:00Z"
    assert session.state.current.servers[0].risk == 0.9
    assert fake.requests.count("/predictions/current") == 1  # the set came from the push


def test_servers_without_a_forecast_reach_the_heatmap_as_grey_cells() -> None:
    from .fake_appliance import FakeAppliance, session_for

    stopped = {"server_name": "ppdb007", "profile": "database", "state": "stale",
               "newest_step": "2026-11-27T09:00:00Z"}  # fmt: skip
    fake = FakeAppliance(tracked=[stopped])
    session = session_for(fake)

    async def go() -> None:
        await session.refresh()
        session.select_server("ppdb007")
        await session.refresh()
        await session.client.aclose()

    asyncio.run(go())
    assert [s.server_name for s in session.state.unforecast] == ["ppdb007"]
    cells = {c["name"]: c for c in session.heatmap.grid.cells}
    assert (cells["ppdb007"]["level"], cells["ppdb007"]["label"]) == ("unknown", "stale")
    assert "ppdb007 (database) has no forecast: its data stopped" in (
        session.heatmap.detail.summary.object
    )
    assert "/servers" in fake.requests
    assert fake.requests.count("/servers") == 2  # only the states /status counts any of


def test_an_appliance_without_the_servers_list_still_refreshes() -> None:
    from .fake_appliance import FakeAppliance, session_for

    fake = FakeAppliance(tracked=[{"server_name": "x", "state": "warming"}])
    fake.refuse = {"/servers": 404}  # an older appliance
    session = session_for(fake)

    async def go() -> None:
        await session.refresh()
        await session.client.aclose()

    asyncio.run(go())
    assert session.state.connection == POLLING
    assert session.state.unforecast == []
    assert len(session.heatmap.grid.cells) == 3


def test_a_failed_servers_list_keeps_the_grey_cells_on_screen() -> None:
    # A 429 on GET /servers emptied the list: the grey cells flickered away and back.
    from .fake_appliance import FakeAppliance, session_for

    fake = FakeAppliance(tracked=[{"server_name": "ppdb007", "state": "stale"}])
    session = session_for(fake)

    async def go() -> None:
        await session.refresh()
        fake.refuse = {"/servers": 429}
        await session.refresh()
        await session.client.aclose()

    asyncio.run(go())
    assert session.state.connection == POLLING  # the rest of the refresh went on
    assert [s.server_name for s in session.state.unforecast] == ["ppdb007"]
