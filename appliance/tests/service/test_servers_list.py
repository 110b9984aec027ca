"""GET /servers: every tracked server with its state, and ``?state=stale`` to find the ones
to forget (docs/API.md, docs/OPERATIONS.md#forgetting-servers)."""

from __future__ import annotations

from typing import Any

from fleetcast.appliance.forecast import iso
from fleetcast.contract.schema import STEP_SECONDS

STOPPED = "ppetl001"
NEW = "ppweb999"


def _fleet(client: Any, svc: Any) -> int:
    """Three live servers, one whose data stopped 18 steps ago, one new (3 steps): returns
    the newest step's start (epoch seconds)."""
    e = int(client.get("/status").json()["model"]["encoder_length"])
    key = {"X-API-Key": svc.API_KEY}
    steps = e + 20
    records = svc.make_records(names=(*svc.SERVERS, STOPPED), steps=e + 2)
    records += svc.make_records(
        names=svc.SERVERS, steps=steps - (e + 2), start=svc.T0 + (e + 2) * STEP_SECONDS
    )
    records += svc.make_records(names=(NEW,), steps=3, start=svc.T0 + (steps - 3) * STEP_SECONDS)
    assert client.post("/metrics", json={"records": records}, headers=key).status_code == 200
    return svc.T0 + (steps - 1) * STEP_SECONDS


def test_lists_every_server_with_its_state(client_for: Any, svc: Any) -> None:
    client = client_for(api_key=svc.API_KEY)
    newest = _fleet(client, svc)
    body = client.get("/servers").json()
    rows = {row["server_name"]: row for row in body["servers"]}
    assert body["count"] == 5
    assert [row["server_name"] for row in body["servers"]] == sorted(rows)
    for name in svc.SERVERS:
        assert rows[name]["state"] == "ready"
        assert rows[name]["newest_step"] == iso(newest)
    e = int(client.get("/status").json()["model"]["encoder_length"])
    assert rows[STOPPED]["state"] == "stale"
    assert rows[STOPPED]["newest_step"] == iso(svc.T0 + (e + 1) * STEP_SECONDS)
    assert rows[NEW]["state"] == "warming"
    assert rows[NEW]["steps"] < rows["ppdb001"]["steps"]
    assert {row["profile"] for row in rows.values()} >= {"database", "web_api"}
    # The same counts as /status.
    counts = client.get("/status").json()["servers"]
    for state in ("ready", "warming", "stale", "ahead"):
        listed = client.get("/servers", params={"state": state}).json()
        assert listed["count"] == counts[state] == len(listed["servers"]), state
    stale = client.get("/servers", params={"state": "stale"}).json()["servers"]
    assert [row["server_name"] for row in stale] == [STOPPED]
    # Its 404 says which: it said "unknown or still warming up" of every such server.
    gone = svc.error_body(client.get(f"/predictions/{STOPPED}"), 404)
    assert gone.detail.startswith(f"server {STOPPED!r} is stale: its data stopped")
    assert "DELETE /servers/{name}" in gone.fix
    warming = svc.error_body(client.get(f"/predictions/{NEW}"), 404)
    assert warming.detail.startswith(f"server {NEW!r} is warming up")
    assert "warming_detail" in warming.fix
    unknown = svc.error_body(client.get("/predictions/ppweb404"), 404)
    assert unknown.detail == "server 'ppweb404' is not tracked (never seen, or forgotten)"
    assert unknown.see == "docs/RISK.md#buckets"

    # Forgotten: off the list, its slot free.
    key = {"X-API-Key": svc.API_KEY}
    assert client.delete(f"/servers/{STOPPED}", headers=key).status_code == 200
    assert STOPPED not in {row["server_name"] for row in client.get("/servers").json()["servers"]}
    assert client.get("/servers", params={"state": "stale"}).json()["count"] == 0


def test_a_bad_state_is_a_400_and_the_list_is_a_guarded_read(client_for: Any, svc: Any) -> None:
    client = client_for(api_key=svc.API_KEY, read_key_required=True)
    assert svc.error_body(client.get("/servers"), 401).error == "missing API key"
    key = {"X-API-Key": svc.API_KEY}
    assert client.get("/servers", headers=key).json() == {"servers": [], "count": 0, "next": None}
    bad = svc.error_body(client.get("/servers", params={"state": "gone"}, headers=key), 400)
    assert bad.error == "unknown server state"
    assert bad.detail == "state 'gone' is not one of ready, warming, stale, ahead"


def test_pages_follow_each_other_by_name(client_for: Any, svc: Any) -> None:
    client = client_for(api_key=svc.API_KEY)
    _fleet(client, svc)
    everything = client.get("/servers").json()
    assert everything["next"] is None
    names = [row["server_name"] for row in everything["servers"]]
    pages, after = [], None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = client.get("/servers", params=params).json()
        assert page["count"] == 5  # all pages
        assert len(page["servers"]) <= 2
        pages.append([row["server_name"] for row in page["servers"]])
        after = page["next"]
        if after is None:
            break
        assert after == pages[-1][-1]
    assert pages == [names[0:2], names[2:4], names[4:5]]
    # A page that ends exactly at the end has no next; an `after` between names works.
    last = client.get("/servers", params={"limit": 1, "after": names[3]}).json()
    assert [row["server_name"] for row in last["servers"]] == [names[4]]
    assert last["next"] is None
    between = client.get("/servers", params={"after": names[1] + "0"}).json()
    assert [row["server_name"] for row in between["servers"]] == names[2:]
    # With a state: the pages and the count are of that state only.
    ready = client.get("/servers", params={"state": "ready", "limit": 1}).json()
    assert ready["count"] == 3
    assert ready["servers"][0]["state"] == "ready"
    assert ready["next"] == ready["servers"][0]["server_name"]
    for bad in ({"limit": 0}, {"limit": 100_001}, {"limit": "many"}):
        assert svc.error_body(client.get("/servers", params=bad), 400).error


def test_known_means_the_model_learnt_the_server_itself(client_for: Any, svc: Any) -> None:
    """ppdb008 is in the fixture's server mapping, but training nulled its ID to train the
    unknown-server embedding: the model forecasts it as a new server of its profile."""
    client = client_for(api_key=svc.API_KEY)
    names = ("ppdb001", "ppdb008", "ppdb999")
    records = svc.make_records(names=names, steps=3)
    key = {"X-API-Key": svc.API_KEY}
    assert client.post("/metrics", json={"records": records}, headers=key).status_code == 200
    rows = {row["server_name"]: row["known"] for row in client.get("/servers").json()["servers"]}
    assert rows == {"ppdb001": True, "ppdb008": False, "ppdb999": False}
    status = client.get("/status").json()
    assert status["servers"]["unknown"] == 2
    # /status counts the servers the model learnt, as `known` does: not the whole mapping
    # (60 names, 6 of them nulled to train the unknown-server embedding, ppdb008 one).
    mapping = client.app.state.runtime.engine.spec.server_mapping
    assert "ppdb008" in mapping
    assert status["model"]["known_servers"] == len(mapping) - 6 == 54


def test_servers_of_an_untrained_profile_are_marked(client_for: Any, svc: Any) -> None:
    """A model that names the profiles no training server had (the exporter copies the
    trainer's profiles_untrained into its provenance) marks their servers; one that does
    not say (the fixture, exported before it did) marks none either way."""
    import dataclasses

    client = client_for(api_key=svc.API_KEY)
    _fleet(client, svc)
    model_info = client.get("/status").json()["model"]
    assert model_info["profiles_untrained"] is None
    assert list(model_info["horizons"]) == ["30min", "1hr", "8hr"]  # nearest first
    rows = client.get("/servers").json()["servers"]
    assert {row["profile_trained"] for row in rows} == {None}

    model = client.app.state.runtime.engine.model
    provenance = {**model.spec.provenance, "profiles_untrained": ["generic", "database"]}
    model.spec = dataclasses.replace(model.spec, provenance=provenance)
    assert client.get("/status").json()["model"]["profiles_untrained"] == ["database", "generic"]
    rows = client.get("/servers").json()["servers"]
    marked = {row["server_name"]: row["profile_trained"] for row in rows}
    assert {row["profile"] for row in rows} >= {"database", "web_api"}
    assert marked == {row["server_name"]: row["profile"] != "database" for row in rows}
