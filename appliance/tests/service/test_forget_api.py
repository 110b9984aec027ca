"""DELETE /servers/{server_name} through the app (docs/API.md, docs/OPERATIONS.md#forgetting-servers):
guarded like every write, the server gone from every endpoint at once, a 404 in four
parts, names with slashes, and the same name later a new server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest

from fleetcast.appliance.schemas import ForgetOut
from fleetcast.contract.schema import STEP_SECONDS

if TYPE_CHECKING:
    from pathlib import Path

TARGET = "ppdb001"
ODD = "rack 1/node-7"


def _forecast(client: Any, svc: Any, servers: int) -> dict[str, Any]:
    def got() -> dict[str, Any] | None:
        body = client.get("/predictions/current").json()
        return body if len(body["servers"]) >= servers else None

    return svc.wait_until(got, timeout=20)


def _names(body: dict[str, Any]) -> set[str]:
    return {s["server_name"] for s in body["servers"]}


def test_delete_forgets_a_server_everywhere_at_once(client_for: Any, svc: Any) -> None:
    client = client_for(api_key=svc.API_KEY)
    key = {"X-API-Key": svc.API_KEY}
    steps = int(client.get("/status").json()["model"]["encoder_length"]) + 2
    names = (*svc.SERVERS, ODD)
    records = svc.make_records(names=names, steps=steps)
    assert client.post("/metrics", json={"records": records}, headers=key).status_code == 200
    assert _names(_forecast(client, svc, len(names))) == set(names)
    runtime = client.app.state.runtime
    changes = runtime.current_changes

    # Guarded like POST /metrics: the key, and no cross-site page even with it.
    assert svc.error_body(client.delete(f"/servers/{TARGET}"), 401).error == "missing API key"
    wrong = {"X-API-Key": "another-key-0123456789"}
    assert svc.error_body(client.delete(f"/servers/{TARGET}", headers=wrong), 401).error == (
        "wrong API key"
    )
    evil = {**key, "origin": "http://evil.example"}
    refused = svc.error_body(client.delete(f"/servers/{TARGET}", headers=evil), 403)
    assert refused.error == "cross-site request refused"
    assert refused.see == "docs/OPERATIONS.md#cross-site-requests"
    assert TARGET in _names(client.get("/predictions/current").json())

    # "ppdb001/" is another name, percent-encoded: it fell back to the router's normalised
    # "ppdb001" and forgot that server. A literal trailing slash still finds it (reads).
    other = svc.error_body(client.delete(f"/servers/{TARGET}%2F", headers=key), 404)
    assert f"{TARGET + '/'!r}" in other.detail
    assert svc.error_body(client.get(f"/history/{TARGET}%2F"), 404).error == "unknown server"
    assert svc.error_body(client.get(f"/history/{TARGET}%2F%2F"), 404).error == "unknown server"
    assert client.get(f"/history/{TARGET}/").json()["server_name"] == TARGET
    # A doubled slash (a base URL ending in "/") still finds it.
    assert client.get(f"/history//{TARGET}").json()["server_name"] == TARGET
    assert client.get(f"/predictions//{TARGET}").json()["server_name"] == TARGET
    assert TARGET in _names(client.get("/predictions/current").json())

    answer = client.delete(f"/servers/{TARGET}", headers=key)
    assert answer.status_code == 200, answer.text
    body = msgspec.convert(answer.json(), ForgetOut)
    assert (body.server_name, body.profile, body.steps_dropped) == (TARGET, "database", steps)
    assert "new server with an empty history" in body.comes_back
    assert runtime.current_changes == changes + 1  # republished: alerts resolve at once

    current = client.get("/predictions/current").json()
    assert _names(current) == set(names) - {TARGET}
    assert current["fleet"]["servers"] == len(names) - 1
    assert sum(current["fleet"][level] for level in ("green", "yellow", "red")) == 3
    assert "database" not in current["fleet"]["by_profile"]
    assert svc.error_body(client.get(f"/predictions/{TARGET}"), 404).error == (
        "no forecast for this server"
    )
    assert svc.error_body(client.get(f"/history/{TARGET}"), 404).error == "unknown server"
    assert svc.error_body(client.get("/profiles/database/history"), 404).error == "no servers"
    alerts = client.get("/alerts/active").json()["alerts"]
    assert all(a["server_name"] != TARGET for a in alerts)
    status = client.get("/status").json()
    assert status["servers"]["known"] == len(names) - 1
    assert status["forgotten"] == {"deleted": 1, "expired": 0, "forget_after_s": None}
    exposed = client.get("/metrics").text
    assert 'fleetcast_servers_forgotten_total{reason="deleted"} 1\n' in exposed
    assert 'fleetcast_servers{state="known"} 3\n' in exposed

    # A name with a slash, percent-encoded as one segment.
    odd = client.delete("/servers/rack%201%2Fnode-7", headers=key)
    assert odd.status_code == 200, odd.text
    assert odd.json()["server_name"] == ODD
    assert svc.error_body(client.get("/history/rack%201%2Fnode-7"), 404).error == "unknown server"

    # Unknown now: a 404 in four parts.
    missing = svc.error_body(client.delete(f"/servers/{TARGET}", headers=key), 404)
    assert missing.error == "unknown server"
    assert f"{TARGET!r}" in missing.detail
    assert missing.see == "docs/OPERATIONS.md#forgetting-servers"

    # The same name later is a new server: one step of history, no risk.
    again = svc.make_records(names=(TARGET,), steps=1, start=svc.T0 + steps * STEP_SECONDS)
    assert client.post("/metrics", json={"records": again}, headers=key).status_code == 200
    history = client.get(f"/history/{TARGET}", params={"steps": 3}).json()
    assert history["cpu_pct"][:2] == [None, None]
    assert history["cpu_pct"][2] == again[0]["cpu_pct"]
    assert history["risk"] == [None, None, None]


def test_delete_is_a_write_of_a_keyless_appliance_and_takes_the_next_servers(
    client_for: Any, svc: Any
) -> None:
    client = client_for(capacity=3)
    records = svc.make_records(steps=2)
    assert client.post("/metrics", json={"records": records}).status_code == 200
    full = client.post("/metrics", json={"records": svc.make_records(names=("ppweb002",))})
    refused = svc.error_body(full, 422)
    assert "capacity of 3 servers" in refused.rejected[0].reason
    assert refused.see == "docs/OPERATIONS.md#forgetting-servers"  # the records were fine
    # Visible to monitoring: the refusals by result, and the capacity to alert against.
    exposed = client.get("/metrics").text
    refusals = len(refused.rejected)  # every sample of the new server
    assert f'fleetcast_ingest_samples_total{{result="capacity"}} {refusals}\n' in exposed
    assert 'fleetcast_ingest_samples_total{result="invalid"} 0\n' in exposed
    assert "fleetcast_servers_capacity 3\n" in exposed
    assert client.delete(f"/servers/{TARGET}").status_code == 200
    later = svc.make_records(names=("ppweb002",), steps=1, start=svc.T0 + 2 * STEP_SECONDS)
    assert client.post("/metrics", json={"records": later}).json()["accepted"] == 1
    assert client.get("/status").json()["servers"]["known"] == 3
    # Other methods on the path are still not there, and a GET is not a forget.
    assert client.get(f"/servers/{TARGET}").status_code == 405


@pytest.mark.slow
def test_an_answered_delete_survives_kill_9(server_factory: Any, svc: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = server_factory(state)
    records = svc.make_records(steps=4)
    assert httpx.post(f"{first.url}/metrics", json={"records": records}).status_code == 200
    assert httpx.delete(f"{first.url}/servers/{TARGET}").status_code == 200
    later = svc.make_records(steps=1, start=svc.T0 + 4 * STEP_SECONDS)
    assert httpx.post(f"{first.url}/metrics", json={"records": later}).status_code == 200
    first.kill()  # no final snapshot: the forget comes back from the log, in its place
    again = server_factory(state)
    history = httpx.get(f"{again.url}/history/{TARGET}", params={"steps": 5}).json()
    assert history["cpu_pct"][:4] == [None] * 4  # a new server since the forget
    assert history["cpu_pct"][4] is not None
    assert httpx.get(f"{again.url}/history/ppweb001", params={"steps": 5}).json()["cpu_pct"][0]
    assert httpx.get(f"{again.url}/status").json()["servers"]["known"] == 3
