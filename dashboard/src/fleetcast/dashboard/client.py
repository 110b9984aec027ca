"""The appliance's REST API as async methods returning typed bodies (docs/API.md).

One :class:`ApplianceClient` per browser session, closed when the session ends. Network
failures become :class:`ApplianceUnreachable` (the dashboard then shows "disconnected" and
marks its data stale); answers the appliance gave but refused (4xx) become
:class:`ApplianceRefused` with the appliance's own message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from fleetcast.contract.errors import explain

from .api import (
    Alert,
    AlertList,
    CurrentPredictions,
    FleetHistory,
    ProfileHistory,
    ServerDetail,
    ServerHistory,
    ServerList,
    parse,
)
from .status import StatusInfo

if TYPE_CHECKING:
    from .settings import DashboardSettings

__all__ = [
    "DEMO_SCENARIOS",
    "ApplianceClient",
    "ApplianceRefused",
    "ApplianceUnreachable",
    "quiet_request_logs",
    "segment",
]

log = logging.getLogger(__name__)

DEMO_SCENARIOS: tuple[str, ...] = ("healthy", "degrading", "critical")
"""The demo scenarios ``POST /demo/scenario`` accepts."""

RETRIED_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
"""Errors retried once, at once: a kept-alive connection the server closed as it was reused.

A server closes an idle keep-alive connection after its own timeout (uvicorn: 5 s); a
request sent on it just then fails with one of these although the server is fine. Refused
connections (``ConnectError``) and timeouts are not retried: a stopped or hung appliance is
reported on the first failure (refused at once, hung after ``request_timeout_s``).
"""


def quiet_request_logs() -> None:
    """Log each request to the appliance at DEBUG only (httpx logs every one at INFO).

    A session polls several endpoints every few seconds; at INFO they buried the log.
    Failures still surface: as ``disconnected`` state changes (session) and as errors.
    Left alone when the log is already at DEBUG.
    """
    httpx_log = logging.getLogger("httpx")
    if httpx_log.getEffectiveLevel() > logging.DEBUG:
        httpx_log.setLevel(logging.WARNING)


def segment(name: str) -> str:
    """``name`` as one path segment: percent-encoded, ``/`` included (docs/API.md), and a
    name that is only dots (``.``, ``..``) as ``%2E``s, which HTTP clients would otherwise
    resolve as "this folder" and "the folder above" and so ask for another path."""
    if name and set(name) == {"."}:
        return "%2E" * len(name)
    return quote(name, safe="")


class ApplianceUnreachable(ConnectionError):
    """The appliance did not answer (refused, timed out, or failed with a 5xx)."""


class ApplianceRefused(RuntimeError):
    """The appliance answered with a 4xx; ``status_code`` and its message are kept."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class ApplianceClient:
    """Async client of one appliance. Use as ``async with ApplianceClient(settings) as c``."""

    def __init__(
        self, settings: DashboardSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        headers = {"Accept": "application/json"}
        if settings.api_key:
            headers["X-API-Key"] = settings.api_key
        self._settings = settings
        self._http = httpx.AsyncClient(
            base_url=settings.base_url,
            headers=headers,
            timeout=settings.request_timeout_s,
            # Drop idle pooled connections well before the server would (uvicorn and
            # hypercorn close them after 5 s): a poll every 5 s then opens a fresh one
            # instead of racing the server's close. Requests of one refresh, a few ms
            # apart, still share connections. A shorter server keep-alive is covered by
            # the one retry in _send.
            limits=httpx.Limits(keepalive_expiry=settings.keepalive_expiry_s),
            transport=transport,
            trust_env=False,
        )
        self._current: tuple[str, CurrentPredictions] | None = None
        """The last ``/predictions/current`` set with its ``ETag``, for a 304 to reuse."""

    async def __aenter__(self) -> ApplianceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, retried once at once when a reused connection was closed under it."""
        try:
            return await self._http.request(method, path, **kwargs)
        except RETRIED_ERRORS as exc:
            log.debug("%s %s failed (%s: %s); retrying once", method, path, type(exc).__name__, exc)
            return await self._http.request(method, path, **kwargs)

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return _json(await self._response(method, path, **kwargs), f"{method} {path}")

    async def _response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The appliance's answer below 400 (a 304 included); the failures as exceptions."""
        endpoint = f"{method} {path}"
        try:
            response = await self._send(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApplianceUnreachable(
                explain(
                    f"The appliance at {self._settings.base_url} did not answer {endpoint} "
                    f"({type(exc).__name__}: {exc}).",
                    "without it the dashboard gets no new forecasts; whatever it already "
                    "shows stays on screen, marked STALE.",
                    "check that `fleetcast serve` runs and that --appliance points at it.",
                    "docs/DASHBOARD.md#disconnected",
                )
            ) from exc
        log.debug("%s -> HTTP %s", endpoint, response.status_code)
        if response.status_code >= 500:
            raise ApplianceUnreachable(
                f"The appliance failed {endpoint} with HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        if response.status_code >= 400:
            raise ApplianceRefused(
                f"The appliance refused {endpoint} with HTTP {response.status_code}: "
                f"{_message(response)}",
                response.status_code,
            )
        return response

    async def status(self) -> StatusInfo:
        """``GET /status``."""
        body = await self._request("GET", "/status")
        if not isinstance(body, dict):
            raise ApplianceRefused("GET /status did not return a JSON object.", 200)
        return StatusInfo(body)

    async def current(self) -> CurrentPredictions:
        """``GET /predictions/current``: every server's forecast and the fleet summary. Sent
        with the last answer's ``ETag``: a 304 (the same set, docs/API.md#conditional-requests)
        returns the set parsed then, without 1.3 MB per 1,000 servers downloaded again."""
        endpoint = "GET /predictions/current"
        kept = self._current
        headers = {"If-None-Match": kept[0]} if kept is not None else None
        response = await self._response("GET", "/predictions/current", headers=headers)
        if response.status_code == 304 and kept is not None:
            return kept[1]
        current = parse(_json(response, endpoint), CurrentPredictions, endpoint)
        tag = response.headers.get("etag")
        self._current = (tag, current) if tag else None
        return current

    async def server(self, server_name: str) -> ServerDetail:
        """``GET /predictions/{server_name}``: one forecast with its full curves."""
        path = f"/predictions/{segment(server_name)}"
        return parse(await self._request("GET", path), ServerDetail, f"GET {path}")

    async def history(self, server_name: str, steps: int) -> ServerHistory:
        """``GET /history/{server_name}?steps=N``: the last N steps of actuals and risk."""
        path = f"/history/{segment(server_name)}"
        body = await self._request("GET", path, params={"steps": int(steps)})
        return parse(body, ServerHistory, f"GET {path}")

    async def profile_history(self, profile: str, steps: int) -> ProfileHistory:
        """``GET /profiles/{profile}/history?steps=N``: per-step means over its servers."""
        path = f"/profiles/{quote(profile, safe='')}/history"
        body = await self._request("GET", path, params={"steps": int(steps)})
        return parse(body, ProfileHistory, f"GET {path}")

    async def fleet_history(self, steps: int) -> FleetHistory:
        """``GET /fleet/history?steps=N``: the fleet risk trend."""
        body = await self._request("GET", "/fleet/history", params={"steps": int(steps)})
        return parse(body, FleetHistory, "GET /fleet/history")

    async def servers(self, state: str, limit: int) -> ServerList:
        """``GET /servers?state=S&limit=N``: the tracked servers in one state, by name."""
        params = {"state": state, "limit": int(limit)}
        return parse(
            await self._request("GET", "/servers", params=params), ServerList, "GET /servers"
        )

    async def alerts(self) -> list[Alert]:
        """``GET /alerts/active``."""
        body = await self._request("GET", "/alerts/active")
        return parse(body, AlertList, "GET /alerts/active").alerts

    async def set_scenario(self, scenario: str) -> None:
        """``POST /demo/scenario``; raises ValueError for a scenario the appliance lacks."""
        if scenario not in DEMO_SCENARIOS:
            raise ValueError(f"Expected a demo scenario in {DEMO_SCENARIOS}, but got {scenario!r}.")
        await self._request("POST", "/demo/scenario", json={"scenario": scenario})


def _message(response: httpx.Response) -> str:
    """The appliance's error text: ``detail``/``message`` of a JSON body, else the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "detail", "message", "fix") if body.get(k)]
        if parts:
            return " ".join(parts)[:600]
    return str(body)[:300]


def _json(response: httpx.Response, endpoint: str) -> Any:
    """The body as JSON; a body that is not JSON is an :class:`ApplianceRefused`."""
    try:
        return response.json()
    except ValueError as exc:
        raise ApplianceRefused(
            f"The appliance answered {endpoint} with a body that is not JSON.", 200
        ) from exc
