"""The WebSocket listener against a real local tornado WebSocket server: a large fleet's
forecast set arrives whole (docs/API.md WS /ws/predictions)."""

from __future__ import annotations

import asyncio
import json
import socket

from fleetcast.dashboard.live import listen
from fleetcast.dashboard.settings import DashboardSettings

from .samples import current_body, forecast_body


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_20000_server_forecast_set_arrives_whole() -> None:
    # About 1.3 KB per server: 20,000 servers (the appliance's default capacity) make a
    # 27 MB message, past tornado's default limit of 10 MiB (the client closed the socket
    # and the dashboard fell back to polling from about 8,000 servers on).
    from tornado.web import Application
    from tornado.websocket import WebSocketHandler

    body = current_body()
    body["servers"] = [forecast_body(f"ppweb{i:05d}", "web_api", 0.1) for i in range(20_000)]
    message = json.dumps(body)
    assert len(message) > 20 * 2**20

    class Push(WebSocketHandler):
        def open(self) -> None:
            self.write_message(message)

    got: list[int] = []
    links: list[bool] = []

    async def main() -> None:
        port = _port()
        server = Application([(r"/ws/predictions", Push)]).listen(port, "127.0.0.1")
        settings = DashboardSettings(appliance_url=f"http://127.0.0.1:{port}")
        task = asyncio.create_task(
            listen(settings, lambda c: got.append(len(c.servers)), links.append)
        )
        try:
            for _ in range(300):
                if got:
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            server.stop()

    asyncio.run(main())
    assert got == [20_000]
    assert links[0] is True
