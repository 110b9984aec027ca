"""Kept-alive connections against a real local HTTP server that closes them.

The appliance's uvicorn closes an idle keep-alive connection after 5 s; a dashboard polling
every 5 s used to reuse a pooled connection just as the server closed it and flapped to
"disconnected". These tests run the real :class:`ApplianceClient` over real sockets against
a tiny asyncio HTTP/1.1 server that closes connections the same ways, and check that the
client neither flaps nor hides an appliance that is really gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import pytest

from fleetcast.dashboard.client import ApplianceClient, ApplianceUnreachable, quiet_request_logs
from fleetcast.dashboard.settings import DashboardSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

BODY = b'{"uptime_s": 1.0}'


class KeepAliveServer:
    """HTTP/1.1 on 127.0.0.1: answers every request with ``BODY``, keeping the connection.

    ``idle_close_s``: close a connection idle that long (uvicorn's ``timeout_keep_alive``).
    ``drop_reused``: close a reused connection on its next request without answering: the
    race of a server closing an idle connection just as the client sends on it, made
    deterministic. ``drop_all``: close every connection without answering.
    """

    def __init__(
        self, idle_close_s: float | None = None, drop_reused: bool = False, drop_all: bool = False
    ) -> None:
        self.idle_close_s = idle_close_s
        self.drop_reused = drop_reused
        self.drop_all = drop_all
        self.connections = 0
        self.answered = 0
        self.dropped = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop listening and close every open connection (the appliance went away)."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        served = 0
        try:
            while True:
                try:
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_close_s)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.CancelledError:  # stop(): end quietly
                    return
                if self.drop_all or (self.drop_reused and served > 0):
                    self.dropped += 1
                    return
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
                )
                await writer.drain()
                served += 1
                self.answered += 1
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()


def with_server(
    server: KeepAliveServer,
    body: Callable[[ApplianceClient], Awaitable[object]],
    **settings: object,
) -> None:
    async def go() -> None:
        await server.start()
        try:
            config = DashboardSettings(appliance_url=server.url, **settings)  # type: ignore[arg-type]
            async with ApplianceClient(config) as client:
                await body(client)
        finally:
            if server._server is not None:
                await server.stop()

    asyncio.run(go())


def test_a_reused_connection_closed_by_the_server_is_retried_not_disconnected() -> None:
    server = KeepAliveServer(drop_reused=True)

    async def body(client: ApplianceClient) -> None:
        for _ in range(5):  # back to back: each reuses the pooled connection
            status = await client.status()
            assert status.uptime_s == 1.0

    with_server(server, body)
    assert server.answered == 5
    assert server.dropped == 4  # every reuse was closed under the client, every one retried
    assert server.connections == 5


def test_polling_at_the_servers_keepalive_timeout_never_fails() -> None:
    # uvicorn's race scaled down: the server closes idle connections after 0.3 s and the
    # client polls every 0.3 s, so polls keep meeting connections being closed.
    server = KeepAliveServer(idle_close_s=0.3)

    async def body(client: ApplianceClient) -> None:
        for _ in range(12):
            await client.status()
            await asyncio.sleep(0.3)

    with_server(server, body)
    assert server.answered == 12


def test_idle_connections_are_dropped_by_the_client_before_a_5s_server_keepalive() -> None:
    assert DashboardSettings().keepalive_expiry_s <= 2.0  # well under uvicorn's 5 s
    server = KeepAliveServer()  # never closes a connection itself

    async def body(client: ApplianceClient) -> None:
        await client.status()
        await client.status()  # a few ms later: same connection
        assert server.connections == 1
        await asyncio.sleep(0.5)
        await client.status()  # idle longer than keepalive_expiry_s: a fresh connection
        assert server.connections == 2

    with_server(server, body, keepalive_expiry_s=0.2)
    assert server.answered == 3


def test_a_stopped_appliance_is_still_reported_at_once() -> None:
    server = KeepAliveServer()
    elapsed: list[float] = []

    async def body(client: ApplianceClient) -> None:
        await client.status()
        await server.stop()
        t0 = time.monotonic()
        with pytest.raises(ApplianceUnreachable, match="did not answer GET /status"):
            await client.status()
        elapsed.append(time.monotonic() - t0)

    with_server(server, body)
    assert elapsed[0] < 1.0  # refused at once, not after the 3 s timeout


def test_a_server_that_never_answers_is_unreachable_after_one_retry() -> None:
    server = KeepAliveServer(drop_all=True)

    async def body(client: ApplianceClient) -> None:
        with pytest.raises(ApplianceUnreachable) as err:
            await client.status()
        assert "RemoteProtocolError" in str(err.value)
        assert "STALE" in str(err.value)

    with_server(server, body)
    assert server.dropped == 2  # the request and exactly one retry
    assert server.answered == 0


def test_requests_are_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    previous = logging.getLogger("httpx").level
    quiet_request_logs()
    caplog.set_level(logging.INFO)
    try:
        server = KeepAliveServer()

        async def body(client: ApplianceClient) -> None:
            for _ in range(3):
                await client.status()

        with_server(server, body)
    finally:
        logging.getLogger("httpx").setLevel(previous)
    assert server.answered == 3
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []
