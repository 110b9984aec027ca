"""The dashboard in a real Chromium, against a real appliance (`fleetcast serve --demo`).

One page for the whole module (loading a Panel page costs seconds); the tests run in file
order and the last one stops the appliance. Every test also checks the page logged no
console error and asked no host other than this machine for anything (air-gapped).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from fleetcast.dashboard.risk import LEVEL_COLOURS, risk_level
from fleetcast.dashboard.session import TAB_NAMES
from fleetcast.dashboard.shaping import format_risk

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Browser, Page

    from .conftest import Process

pytestmark = pytest.mark.browser

LOCAL_HOSTS = {"127.0.0.1", "localhost", "(inline data)"}


def host_of(url: str) -> str:
    """The host a request goes to; ``blob:`` URLs name their origin, ``data:`` has none."""
    if url.startswith("data:"):
        return "(inline data)"
    if url.startswith("blob:"):
        url = url[len("blob:") :]
    return urlsplit(url).hostname or url


class Recorder:
    """Console errors, page errors and request hosts seen by the page."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.hosts: set[str] = set()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: self.hosts.add(host_of(r.url)))

    def check(self) -> None:
        """No console error, no request to another host."""
        assert self.errors == []
        assert self.hosts <= LOCAL_HOSTS, f"requests left the machine: {self.hosts - LOCAL_HOSTS}"


@pytest.fixture(scope="module")
def session(browser: Browser, dashboard: Process) -> Iterator[tuple[Page, Recorder]]:
    """One browser page on the dashboard, loaded until the first forecast is on screen."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    recorder = Recorder(page)
    page.goto(dashboard.url)
    page.locator(".fc-conn", has_text="connected").wait_for(timeout=60_000)
    page.locator(".fc-card[data-level='green'] .fc-value").wait_for(timeout=60_000)
    page.evaluate("window.__fleetcast_marker = 'same page'")
    yield page, recorder
    context.close()


def tab(page: Page, name: str) -> None:
    """Open one of the five panels."""
    page.locator(".bk-tab", has_text=re.compile(f"^{name}$")).click()


def counts(page: Page) -> tuple[int, int, int]:
    """(green, yellow, red) as the Overview shows them, read in one JavaScript call (the
    page updates live: three separate reads could mix two forecasts)."""
    shown = dict(
        page.locator(".fc-card[data-level]").evaluate_all(
            "els => els.map(e => [e.dataset.level, e.querySelector('.fc-value').innerText])"
        )
    )
    return int(shown["green"]), int(shown["yellow"]), int(shown["red"])


def test_every_panel_renders_with_data(
    session: tuple[Page, Recorder], appliance: Process, artifacts: Path
) -> None:
    page, recorder = session
    body = httpx.get(appliance.url + "/predictions/current", timeout=5).json()
    fleet_size = len(body["servers"])
    # Overview: the counts add up to the fleet, incident probability per horizon, trend.
    tab(page, "Overview")
    assert sum(counts(page)) == fleet_size
    for horizon in ("30min", "1hr", "8hr"):
        assert page.get_by_text(f"incident within {horizon}").is_visible()
    page.locator("canvas >> visible=true").first.wait_for(timeout=20_000)  # trend, bars
    page.screenshot(path=str(artifacts / "1_overview.png"), full_page=True)
    page.screenshot(path=str(artifacts / "dashboard.png"))  # docs/img/dashboard.png
    # Heatmap: one named cell per server.
    tab(page, "Heatmap")
    cells = page.locator("button.fc-cell")
    cells.first.wait_for()
    assert cells.count() == fleet_size
    page.screenshot(path=str(artifacts / "2_heatmap.png"), full_page=True)
    # Top Servers: the ranking, riskiest first, and the forecast curves of the top ones.
    tab(page, "Top Servers")
    first = page.locator("h3.fc-server", has_text="#1 ").first
    first.wait_for(timeout=20_000)
    assert first.get_attribute("data-server") in {s["server_name"] for s in body["servers"]}
    # One JavaScript call reads the whole ranking at once (the page updates live).
    risks = [
        float(r)
        for r in page.locator(".fc-ranking .fc-badge").evaluate_all(
            "els => els.map(e => e.dataset.risk)"
        )
    ]
    assert len(risks) >= 3
    assert risks == sorted(risks, reverse=True)
    page.locator("canvas >> visible=true").first.wait_for(timeout=20_000)
    page.screenshot(path=str(artifacts / "3_top_servers.png"), full_page=True)
    # Historical: the chosen target's actuals are plotted.
    tab(page, "Historical")
    page.get_by_text(re.compile(r"\d+ steps, ")).wait_for(timeout=20_000)
    page.screenshot(path=str(artifacts / "4_historical.png"), full_page=True)
    # A profile: the appliance's per-step means over its servers, in one request.
    profile = body["servers"][0]["profile"]
    members = sum(s["profile"] == profile for s in body["servers"])
    page.locator("select").first.select_option(label=f"profile: {profile}")
    page.get_by_text(re.compile(rf"{profile} \(mean of {members}\): \d+ steps")).wait_for(
        timeout=20_000
    )
    # Advanced: model identity and the raw /status.
    tab(page, "Advanced")
    status = httpx.get(appliance.url + "/status", timeout=5).json()
    assert page.get_by_text(status["model"]["bundle_id"]).first.is_visible()
    assert page.get_by_text("CPUExecutionProvider").first.is_visible()
    assert page.locator("pre.fc-json").inner_text().lstrip().startswith("{")
    page.screenshot(path=str(artifacts / "5_advanced.png"), full_page=True)
    assert [t for t in TAB_NAMES if page.locator(".bk-tab", has_text=t).count() == 0] == []
    recorder.check()


def test_heatmap_shows_names_coloured_by_the_codex_scale(
    session: tuple[Page, Recorder], appliance: Process
) -> None:
    page, recorder = session
    tab(page, "Heatmap")
    names = {
        s["server_name"]
        for s in httpx.get(appliance.url + "/predictions/current").json()["servers"]
    }
    cells = page.locator("button.fc-cell")
    snapshot = cells.evaluate_all(
        "els => els.map(e => [e.dataset.server, e.dataset.level, e.dataset.risk,"
        " getComputedStyle(e).backgroundColor, e.innerText, e.title])"
    )
    seen, grey = set(), set()
    for name, level, risk, colour, text, title in snapshot:
        seen.add(name)
        assert name in text
        if risk == "":  # a tracked server without a forecast: grey, its state, no number
            grey.add(name)
            assert level == "unknown", (name, level)
            assert "has no forecast" in title, title
            continue
        # The appliance's level (decided before rounding; docs/RISK.md#risk-model) is the
        # codex scale on the risk shown, except where the rounding crosses a level (0.3,
        # 0.7; test_shaping checks that case). The page's forecast set may be newer or older
        # than a separate GET's, so the level is checked against the page's own risk.
        assert level == risk_level(float(risk)) or risk in ("0.3", "0.7"), (name, risk, level)
        hex_colour = LEVEL_COLOURS[level].lstrip("#")
        rgb = tuple(int(hex_colour[k : k + 2], 16) for k in (0, 2, 4))
        assert colour == f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})", (name, colour)
        assert f"risk {format_risk(float(risk), level)} — {level}" in title  # the numbers
    # The forecast set on the page may be a step apart from the GET's; a server the demo
    # has not warmed up yet is a grey cell, never a made-up green one.
    assert names <= seen
    assert seen - names <= grey
    assert all(not re.fullmatch(r"\d+", n) for n in seen)  # names, never IDs
    recorder.check()


def test_clicking_a_cell_opens_that_server(session: tuple[Page, Recorder], artifacts: Path) -> None:
    page, recorder = session
    tab(page, "Heatmap")
    cell = page.locator("button.fc-cell").nth(3)
    name = cell.get_attribute("data-server")
    cell.click()
    heading = page.locator(f"h3.fc-server[data-server='{name}']").first
    heading.wait_for(timeout=20_000)
    assert name in heading.inner_text()
    page.screenshot(path=str(artifacts / "2b_heatmap_detail.png"), full_page=True)
    # Live updates keep the page and the selection: wait for a newer forecast.
    before = page.locator(".fc-last").inner_text()
    deadline = time.monotonic() + 30
    while page.locator(".fc-last").inner_text() == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert page.locator(".fc-last").inner_text() != before
    assert page.evaluate("window.__fleetcast_marker") == "same page"
    assert page.locator(f"button.fc-cell.fc-selected[data-server='{name}']").count() == 1
    assert heading.is_visible()
    recorder.check()


def mean_risk(page: Page) -> float:
    """The Overview's "mean risk" card (two decimals)."""
    label = page.locator(".fc-card", has_text="mean risk")
    return float(label.locator(".fc-value").inner_text())


def test_demo_button_raises_the_fleet_risk_and_the_page_follows(
    session: tuple[Page, Recorder], appliance: Process, artifacts: Path
) -> None:
    page, recorder = session
    tab(page, "Overview")
    # The healthy fleet's risk wanders a little: its mean over a few forecasts (5 s = 4 steps
    # at 240x) is the baseline, and its fewest green servers the count to go below.
    healthy: dict[str, dict] = {}
    until = time.monotonic() + 5
    while time.monotonic() < until:
        body = httpx.get(appliance.url + "/predictions/current").json()
        healthy[body["prediction_time"]] = body["fleet"]
        time.sleep(0.25)
    base_risk = sum(f["mean_risk"] for f in healthy.values()) / len(healthy)
    base_green = min(f["green"] for f in healthy.values())
    # Forecasts are stamped with data time (the demo's clock runs at 240x): the newest one
    # before the click marks "before"; the switch applies from the next step.
    switched_at = httpx.get(appliance.url + "/predictions/current").json()["prediction_time"]
    page.get_by_role("button", name="Demo: Critical").click()
    page.get_by_text("Demo scenario set to critical").wait_for(timeout=10_000)
    status = httpx.get(appliance.url + "/status").json()
    assert status["demo"]["scenario"] == "critical"
    page.locator(".fc-header", has_text="critical").wait_for(timeout=10_000)
    # 10 % of the simulated fleet goes into incidents after a 15-30 minute ramp and 20 %
    # degrades; the fixture model (trained on such a fleet) raises their risk within an hour
    # or two of data time (12-24 steps at 240x: 15-30 s); in trial runs the fleet's mean
    # risk rose by 0.02-0.04 and 2-6 more servers left green. Every forecast set the
    # appliance serves is recorded by its time. The page must show one made after the
    # switch, with exactly that set's numbers, whose mean risk is 0.02 above the baseline;
    # and some set after the switch must have fewer green servers than any healthy one.
    served: dict[str, dict] = {}
    deadline = time.monotonic() + 120
    page_rose = fewer_green = False
    while not (page_rose and fewer_green) and time.monotonic() < deadline:
        body = httpx.get(appliance.url + "/predictions/current").json()
        at = body["prediction_time"]
        served[at] = body["fleet"]
        fewer_green |= at > switched_at and body["fleet"]["green"] < base_green
        shown_at = page.locator(".fc-last b").inner_text()  # "2026-11-27 15:40:00 UTC"
        shown = (counts(page), mean_risk(page))
        if page.locator(".fc-last b").inner_text() != shown_at:
            continue  # the page changed while it was read
        key = shown_at.replace(" UTC", "Z").replace(" ", "T")
        fleet = served.get(key)
        page_rose |= (
            fleet is not None
            and key > switched_at
            and shown[0] == (fleet["green"], fleet["yellow"], fleet["red"])
            and abs(shown[1] - fleet["mean_risk"]) <= 0.0051
            and fleet["mean_risk"] >= base_risk + 0.02
        )
        time.sleep(0.2)
    after = [f for t, f in sorted(served.items()) if t > switched_at]
    assert page_rose, (base_risk, [f["mean_risk"] for f in after])
    assert fewer_green, (base_green, [f["green"] for f in after])
    page.screenshot(path=str(artifacts / "1b_overview_critical.png"), full_page=True)
    recorder.check()


def test_unreachable_appliance_shows_disconnected_and_stale_data(
    session: tuple[Page, Recorder], appliance: Process, artifacts: Path
) -> None:
    page, recorder = session
    tab(page, "Heatmap")
    names_before = page.locator("button.fc-cell").count()
    appliance.stop()
    page.locator(".fc-conn", has_text="disconnected").wait_for(timeout=30_000)
    banner = page.locator(".fc-banner")
    banner.wait_for(timeout=10_000)
    assert "STALE" in banner.inner_text()
    # The last data stays on screen, marked, and nothing new is invented.
    assert page.locator("button.fc-cell").count() == names_before
    assert page.locator(".fc-grid.fc-stale").count() == 1
    page.screenshot(path=str(artifacts / "6_disconnected_stale.png"), full_page=True)
    # Browsers log a failed WebSocket reconnect of the appliance? No: only the dashboard
    # server talks to the appliance, so the page itself must still be error-free.
    recorder.check()
