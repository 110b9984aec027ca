"""The REST client against a real appliance (`fleetcast serve --demo`) and a closed port."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from fleetcast.dashboard.client import ApplianceClient, ApplianceRefused, ApplianceUnreachable
from fleetcast.dashboard.settings import DashboardSettings

from .conftest import free_port

T = TypeVar("T")

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from .conftest import Process

pytestmark = pytest.mark.slow


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion."""
    return asyncio.run(coro)


def test_reads_every_endpoint_of_a_real_appliance(appliance: Process) -> None:
    async def go():
        async with ApplianceClient(DashboardSettings(appliance_url=appliance.url)) as client:
            status = await client.status()
            current = await client.current()
            name = current.servers[0].server_name
            detail = await client.server(name)
            history = await client.history(name, 12)
            profile = await client.profile_history(current.servers[0].profile, 12)
            fleet = await client.fleet_history(12)
            alerts = await client.alerts()
            return status, current, detail, history, profile, fleet, alerts

    status, current, detail, history, profile, fleet, alerts = run(go())
    assert status.demo_enabled
    assert status.providers
    assert current.fleet.servers == len(current.servers) > 0
    assert current.fleet.green + current.fleet.yellow + current.fleet.red == current.fleet.servers
    assert all(not s.server_name.isdigit() for s in current.servers)
    assert detail.server_name == current.servers[0].server_name
    assert len(detail.curves["cpu_pct"]["p50"]) == 96
    assert 0 < len(history.timestamps) <= 12
    assert len(history.cpu_pct) == len(history.timestamps)
    members = [s for s in current.servers if s.profile == profile.profile]
    assert profile.servers >= len(members) > 0
    assert len(profile.cpu_pct) == len(profile.reporting) == len(profile.timestamps) <= 12
    assert max(profile.reporting) <= profile.servers
    assert len(fleet.mean_risk) == len(fleet.timestamps)
    assert all(a.server_name for a in alerts)


def test_unknown_server_is_refused_with_the_appliance_message(appliance: Process) -> None:
    async def go():
        async with ApplianceClient(DashboardSettings(appliance_url=appliance.url)) as client:
            await client.server("ppnothere999")

    with pytest.raises(ApplianceRefused) as err:
        run(go())
    assert err.value.status_code == 404
    assert "ppnothere999" in str(err.value) or "404" in str(err.value)


def test_bad_scenario_is_rejected_before_any_request() -> None:
    async def go():
        async with ApplianceClient(DashboardSettings(appliance_url="http://127.0.0.1:1")) as c:
            await c.set_scenario("apocalypse")

    with pytest.raises(ValueError, match="healthy"):
        run(go())


def test_closed_port_is_unreachable_with_a_codex_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def go():
        settings = DashboardSettings(appliance_url=url, request_timeout_s=1.0)
        async with ApplianceClient(settings) as client:
            await client.status()

    with pytest.raises(ApplianceUnreachable) as err:
        run(go())
    text = str(err.value)
    assert url in text
    assert "STALE" in text
    assert "Fix:" in text


def test_a_name_of_dots_is_one_segment_not_a_relative_path() -> None:
    # quote("..") is "..": httpx (as browsers) resolves it as the folder above, so the
    # server ".." could never be fetched; "%2E%2E" reaches the appliance as its name.
    import asyncio

    import httpx

    from fleetcast.dashboard.client import ApplianceClient, segment
    from fleetcast.dashboard.settings import DashboardSettings

    assert [segment(n) for n in ("..", ".", "a/b", "a.b", "...")] == [
        "%2E%2E", "%2E", "a%2Fb", "a.b", "%2E%2E%2E",
    ]  # fmt: skip
    seen: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return httpx.Response(404, json={"error": "unknown server", "detail": "x"})

    config = DashboardSettings(use_websocket=False)
    client = ApplianceClient(config, transport=httpx.MockTransport(handle))

    async def go() -> None:
        with contextlib.suppress(Exception):
            await client.history("..", 3)
        await client.aclose()

    asyncio.run(go())
    assert seen == [b"/history/%2E%2E?steps=3"]


def test_an_unchanged_forecast_set_is_not_downloaded_again(appliance: Process) -> None:
    """Polled with the last ETag, the same set is a bodiless 304 and the set parsed before is
    returned; a new set is a 200 with a new tag (docs/API.md#conditional-requests)."""
    import httpx

    sent: list[tuple[str | None, int, int]] = []

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            await response.aread()
            sent.append(
                (request.headers.get("if-none-match"), response.status_code, len(response.content))
            )
            return response

    async def go() -> list[Any]:
        settings = DashboardSettings(appliance_url=appliance.url)
        async with ApplianceClient(settings, transport=Recording()) as client:
            sets = [await client.current()]
            while len(sets) < 40 and not any(status == 304 for _, status, _ in sent):
                sets.append(await client.current())
            return sets

    sets = run(go())
    assert sent[0][0] is None  # nothing to revalidate yet
    assert all(tag for tag, _, _ in sent[1:])  # then always the last answer's tag
    not_modified = [i for i, (_, status, _) in enumerate(sent) if status == 304]
    assert not_modified, sent
    for i in not_modified:
        assert sent[i][2] == 0
        assert sets[i] is sets[i - 1]  # the set parsed before, not a new one
    for i, (_, status, size) in enumerate(sent):
        if status == 200 and i:
            assert size > 0
            assert sets[i].prediction_time >= sets[i - 1].prediction_time
