"""One browser session: its state, its appliance client, its refresh loop and its panels.

The session owns everything it uses (no module-level state): a :class:`SessionState`, an
:class:`ApplianceClient`, a periodic tick that refreshes every ``refresh_seconds`` (and
sooner when the WebSocket pushes a forecast set, a demo button is pressed or a server is
clicked), and one WebSocket listener task. Both end when the browser tab closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import panel as pn

from .api import ApiFormatError
from .client import ApplianceClient, ApplianceRefused, ApplianceUnreachable
from .live import listen
from .state import DISCONNECTED, REFUSED, SessionState
from .views.advanced import AdvancedView
from .views.header import Header
from .views.heatmap import HeatmapView
from .views.historical import HistoricalView
from .views.overview import OverviewView
from .views.top import TopServersView

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from bokeh.document import Document
    from panel.io.callbacks import PeriodicCallback

    from .api import CurrentPredictions, ServerDetail, ServerHistory, TrackedServer
    from .settings import DashboardSettings
    from .status import StatusInfo

__all__ = ["TAB_NAMES", "TICK_MS", "DashboardSession"]

log = logging.getLogger(__name__)

UNFORECAST_STATES = ("stale", "ahead", "warming")
"""Server states the heatmap shows as grey cells (docs/RISK.md#buckets)."""

UNFORECAST_LIMIT = 5000
"""At most this many grey cells per state (``GET /servers?limit=``)."""

TICK_MS = 500
"""How often a session checks whether to refresh (pushes and clicks are seen this fast)."""

_STALE_CSS = ":host(.fc-stale) { opacity: 0.55; filter: grayscale(70%); }"

TAB_NAMES: tuple[str, ...] = ("Overview", "Heatmap", "Top Servers", "Historical", "Advanced")
"""The codex's five panels, in order."""


class DashboardSession:
    """Build with the settings inside a Panel session; ``view`` is the page."""

    def __init__(self, settings: DashboardSettings, doc: Document | None) -> None:
        self.settings = settings
        self.state = SessionState()
        self.client = ApplianceClient(settings)
        self.refresh_seconds = settings.refresh_seconds
        self._doc = doc
        self._woken = False
        self._busy = False
        self._next_refresh = 0.0
        self._pushed: CurrentPredictions | None = None
        self._ws_live = False
        self._ws_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references
        self._tick_cb: PeriodicCallback | None = None
        self._closed = False

        self.header = Header(on_scenario=self._scenario_clicked)
        self.overview = OverviewView()
        self.heatmap = HeatmapView(on_select=self.select_server)
        self.top = TopServersView(settings.top_servers)
        self.historical = HistoricalView(on_change=self.wake)
        self.advanced = AdvancedView(settings, on_refresh=self._set_refresh)
        self.tabs = pn.Tabs(
            *zip(
                TAB_NAMES,
                (
                    self.overview.view,
                    self.heatmap.view,
                    self.top.view,
                    self.historical.view,
                    self.advanced.view,
                ),
                strict=True,
            ),
            dynamic=False,
            sizing_mode="stretch_width",
        )
        self._dimmable = (
            self.overview.view,
            self.heatmap.view,
            self.top.view,
            self.historical.view,
            self.advanced.view,
        )
        for view in self._dimmable:  # greyed out while the data is STALE
            view.stylesheets = [*view.stylesheets, _STALE_CSS]
        self.view = pn.Column(
            self.header.view, self.tabs, sizing_mode="stretch_width", min_width=900
        )
        self.header.update(self.state)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start ticking (call from the session's onload).

        A Panel periodic callback runs on the server's own event loop with the session's
        document; every ``TICK_MS`` it refreshes if woken or if ``refresh_seconds`` passed.
        """
        self._tick_cb = pn.state.add_periodic_callback(self._tick, period=TICK_MS, start=True)

    def stop(self, session_context: object) -> None:
        """Stop ticking, cancel the listener and close the client (the browser tab went away).

        ``session_context`` is Bokeh's, passed by ``on_session_destroyed``; unused.
        """
        del session_context
        self._closed = True
        if self._tick_cb is not None:
            self._tick_cb.stop()
        if self._ws_task is not None:
            self._ws_task.cancel()
        self._spawn(self.client.aclose())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task held until it ends: an unreferenced task may be collected
        mid-flight (asyncio holds tasks weakly), losing a scenario change or a close."""
        task = asyncio.get_event_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def wake(self) -> None:
        """Refresh at the next tick instead of at the end of the refresh period."""
        self._woken = True

    # -- callbacks from the browser and the socket ------------------------------------------
    def select_server(self, name: str) -> None:
        """A heatmap click: open ``name``'s detail (its curves are fetched by the loop)."""
        if name == self.state.selected_server:
            return
        self.state.selected_server = name
        # Drawn on the next tick: changes made while Panel processes the browser's own
        # event can be dropped, a scheduled render always reaches the page.
        self._schedule(self._render)
        self.wake()

    def _scenario_clicked(self, scenario: str) -> None:
        self._spawn(self._set_scenario(scenario))

    async def _set_scenario(self, scenario: str) -> None:
        try:
            await self.client.set_scenario(scenario)
        except (ApplianceUnreachable, ApplianceRefused, ValueError) as exc:
            self._refresh_refused = False  # the button's answer stays until the next click
            self._schedule(partial(self.header.show_message, str(exc), True))
            return
        self._refresh_refused = False
        self._schedule(
            partial(self.header.show_message, f"Demo scenario set to {scenario}; watch the fleet.")
        )
        self.wake()

    def _set_refresh(self, seconds: float) -> None:
        self.refresh_seconds = max(1.0, seconds)
        self.wake()

    def _on_push(self, current: CurrentPredictions) -> None:
        self._pushed = current
        self.wake()

    def _on_link(self, live: bool) -> None:
        if live != self._ws_live:
            self._ws_live = live
            self.wake()

    # -- the loop ---------------------------------------------------------------------------
    async def _tick(self) -> None:
        if self._closed or self._busy:
            return
        now = time.monotonic()
        if not self._woken and now < self._next_refresh:
            return
        if self.settings.use_websocket and self._ws_task is None:
            self._ws_task = asyncio.get_running_loop().create_task(
                listen(self.settings, self._on_push, self._on_link)
            )
        self._busy = True
        self._woken = False
        try:
            await self.refresh()
        except Exception:  # a bug in a panel must not end the session's updates
            log.exception("Dashboard refresh failed")
        finally:
            self._busy = False
            self._next_refresh = time.monotonic() + self.refresh_seconds

    async def refresh(self) -> None:
        """One round trip: status, forecasts, trend, alerts, then the curves panels need."""
        state = self.state
        client = self.client
        was = state.connection
        try:
            # A pushed set is dropped only once it is on screen: a refresh that fails (a 429,
            # a timeout) keeps it for the next one, which would not poll /predictions/current
            # while the WebSocket is live, and so showed the older set as live until the next
            # push, a step later.
            pushed = self._pushed
            need_current = pushed is None and (not self._ws_live or state.current is None)
            results = await asyncio.gather(
                client.status(),
                client.current() if need_current else _none(),
                client.fleet_history(self.settings.trend_steps),
                client.alerts(),
            )
            status, polled, fleet_history, alerts = results
            state.unforecast = await self._fetch_unforecast(status)
            state.status = status
            state.fleet_history = fleet_history
            state.alerts = alerts
            current = pushed or polled
            if current is not None:
                state.accept(current)
            if self._pushed is pushed:  # not a newer one that arrived meanwhile
                self._pushed = None
            await self._fetch_details()
            self.historical.update_options(state)
            await self.historical.load(client, state)
            state.mark_ok(websocket=self._ws_live)
        except ApplianceUnreachable as exc:
            state.mark_failed(str(exc))
        except (ApplianceRefused, ApiFormatError) as exc:
            # A refused refresh (a key the appliance now requires, its rate limit, an answer
            # this version cannot read) updates nothing: the data on screen is as stale as
            # in an outage, and says why in the banner until a refresh succeeds.
            state.mark_failed(str(exc), refused=True)
        if state.connection != was:  # state changes only; each request is logged at DEBUG
            if state.connection == DISCONNECTED:
                log.warning("Appliance unreachable: %s", state.last_error)
            elif state.connection == REFUSED:
                log.warning("Appliance refuses the dashboard's requests: %s", state.last_error)
            else:
                log.info("Appliance %s: %s", self.settings.base_url, state.connection)
        self._schedule(self._render)

    async def _fetch_unforecast(self, status: StatusInfo) -> list[TrackedServer]:
        """The servers the appliance tracks but does not forecast (their data stopped, a
        clock ahead, warming up), for the heatmap's grey cells: only the states ``/status``
        counts any of. An optional part of the refresh: when ``GET /servers`` fails (an
        older appliance without it, a 429) the cells on screen stay as they were, and the
        rest of the refresh goes on."""
        wanted = [s for s in UNFORECAST_STATES if (status.servers(s) or 0) > 0]
        if not wanted:
            return []
        try:
            lists = await asyncio.gather(
                *(self.client.servers(s, UNFORECAST_LIMIT) for s in wanted)
            )
        except (ApplianceRefused, ApplianceUnreachable, ApiFormatError) as exc:
            log.debug("GET /servers failed: %s", exc)
            return self.state.unforecast
        return [server for listed in lists for server in listed.servers]

    async def _fetch_details(self) -> None:
        """Curves and actuals of the top servers and the selected one, once per forecast set.

        One server the appliance will not give curves for (a 404 in a race with its
        ``DELETE``, a server named ``current``) is noted in ``state.unavailable`` and shown
        as such; it no longer stops the other servers' curves and the Historical panel.
        """
        state = self.state
        names = self.top.names(state)
        if state.selected_server and state.selected_server not in names:
            names.append(state.selected_server)
        known = {s.server_name for s in state.current.servers} if state.current else set()
        missing = [
            n for n in names if n in known and n not in state.details and n not in state.unavailable
        ]
        if not missing:
            return
        results = await asyncio.gather(
            *(self._fetch_detail(n) for n in missing), return_exceptions=True
        )
        for name, result in zip(missing, results, strict=True):
            if isinstance(result, ApplianceUnreachable):
                raise result
            if isinstance(result, ApiFormatError) or (
                isinstance(result, ApplianceRefused) and result.status_code == 404
            ):
                log.debug("No curves for %s: %s", name, result)
                state.unavailable[name] = str(result)
            elif isinstance(result, BaseException):  # a 429, a 401: the refresh's error
                raise result
            else:
                state.details[name], state.histories[name] = result

    async def _fetch_detail(self, name: str) -> tuple[ServerDetail, ServerHistory]:
        """``/predictions/{name}`` and its 8 h of actuals (96 steps, as long as the forecast)."""
        if name == "current":
            # /predictions/current is the fleet's set: such a server has no curves there.
            raise ApplianceRefused(
                "A server named `current` has no /predictions/{server_name} of its own "
                "(that path is the fleet's forecast set; docs/API.md), so its curves cannot "
                "be shown; the numbers above are its own.",
                404,
            )
        detail, history = await asyncio.gather(
            self.client.server(name), self.client.history(name, 96)
        )
        return detail, history

    # -- drawing ----------------------------------------------------------------------------
    def _schedule(self, callback: partial[None] | object) -> None:
        """Run ``callback`` with the document lock held (Bokeh's rule for model changes)."""
        if self._closed:
            return
        if self._doc is not None and self._doc.session_context is not None:
            self._doc.add_next_tick_callback(callback)
        else:
            callback()

    def _render(self) -> None:
        t0 = time.perf_counter()
        try:
            self._draw()
        except Exception:  # one broken panel must not stop the others from updating
            log.exception("Dashboard render failed")
        log.debug("render took %.3f s", time.perf_counter() - t0)

    def _draw(self) -> None:
        state = self.state
        self.header.update(state)
        self.overview.update(state)
        self.heatmap.update(state)
        self.top.update(state)
        self.advanced.update(state)
        classes = ["fc-stale"] if state.stale else []
        for view in self._dimmable:
            if view.css_classes != classes:
                view.css_classes = classes


async def _none() -> None:
    return None
