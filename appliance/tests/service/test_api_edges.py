"""Edges of the HTTP API, in-process (Litestar TestClient, real engine, tiny ONNX fixture):
rate-limited answers in the access log and request metrics, an all-green fleet's incident
probability, one profile per server, unknown fields, names with slashes, the guarded
OpenAPI schema and the /status fields docs/API.md lists."""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from litestar.exceptions import WebSocketDisconnect

from fleetcast.appliance.schemas import IngestResponse, ServerDetail, ServerHistory

if TYPE_CHECKING:
    from litestar.testing import TestClient

API_MD = Path(__file__).resolve().parents[3] / "docs" / "API.md"
ACCESS = "fleetcast.appliance.access"
INGEST_LOG = "fleetcast.appliance.controllers.metrics"


def _ready_steps(client: TestClient[Any], headers: dict[str, str] | None = None) -> int:
    return int(client.get("/status", headers=headers).json()["model"]["encoder_length"]) + 2


def _wait_servers(
    client: TestClient[Any], svc: Any, n: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    def got() -> dict[str, Any] | None:
        body = client.get("/predictions/current", headers=headers).json()
        return body if len(body["servers"]) >= n else None

    return svc.wait_until(got, timeout=30)


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [msgspec.json.decode(r.getMessage()) for r in caplog.records if r.name == ACCESS]


# -- rate limit: 429 in the access log and the request metrics ----------------------------


def test_rate_limited_requests_are_logged_and_counted_as_429(
    client_for: Any, caplog: pytest.LogCaptureFixture, svc: Any
) -> None:
    client = client_for(rate_limit="3/minute")
    with caplog.at_level(logging.INFO, logger=ACCESS):
        codes = [client.get("/status").status_code for _ in range(4)]
    lines = _access_lines(caplog)  # these four (later requests may be logged too)
    assert codes == [200, 200, 200, 429]
    refused = svc.error_body(client.get("/status"), 429)
    assert "rate limit" in refused.error
    assert [x["status"] for x in lines] == [200, 200, 200, 429]
    assert lines[-1]["path"] == "/status"
    assert lines[-1]["bytes_out"] > 0  # the four-part body went out through the logger
    # The request metrics (GET /metrics, itself limited here) are checked over a real
    # server with a second client address: test_api_edges_process.


# -- an all-green fleet: incident probability 0.0, never -0.0 -----------------------------


def test_all_green_fleet_reports_incident_probability_zero_not_negative(
    client_for: Any, svc: Any
) -> None:
    client = client_for()
    records = svc.make_records(names=("ppweb001", "ppweb002"), steps=_ready_steps(client))
    for r in records:  # far below every threshold: each server's risk is exactly 0
        r.update(cpu_pct=5.0, mem_pct=10.0, disk_io_mb_s=0.5, latency_ms=5.0)
    assert client.post("/metrics", json={"records": records}).status_code == 200
    _wait_servers(client, svc, 2)
    raw = client.get("/predictions/current")
    body = raw.json()
    assert [s["risk"] for s in body["servers"]] == [0.0, 0.0]
    incident = body["fleet"]["incident_probability"]
    assert set(incident) == {"30min", "1hr", "8hr"}
    for value in incident.values():
        assert value == 0.0
        assert math.copysign(1.0, value) == 1.0
    assert b"-0.0" not in raw.content
    exposition = client.get("/metrics").text
    lines = [x for x in exposition.splitlines() if x.startswith("fleetcast_fleet_incident")]
    assert len(lines) == 3
    assert all(line.endswith(" 0.0") or line.endswith(" 0") for line in lines), lines


# -- one profile per server (docs/DATA_CONTRACT.md#stable-profile) ------------------------


def test_a_second_profile_for_a_known_server_is_refused_and_changes_nothing(
    client_for: Any, svc: Any
) -> None:
    client = client_for()
    first = svc.make_records(names=("ppml0001",), steps=3)  # no profile: from the name
    assert client.post("/metrics", json={"records": first}).status_code == 200
    later = svc.make_records(names=("ppml0001",), steps=2, start=svc.T0 + 3 * 300)
    later[0]["profile"] = "database"
    body = svc.error_body(client.post("/metrics", json={"records": later[:1]}), 422)
    assert body.rejected is not None
    assert [r.index for r in body.rejected] == [0]
    reason = body.rejected[0].reason
    assert "'database'" in reason
    assert "'ml_compute'" in reason
    assert "new name" in reason
    assert reason.endswith("(docs/DATA_CONTRACT.md#stable-profile)")
    history = msgspec.convert(client.get("/history/ppml0001").json(), ServerHistory)
    assert history.profile == "ml_compute"
    # The refused sample was not stored: the newest step is still the third.
    assert [v for v in history.cpu_pct if v is not None] == [r["cpu_pct"] for r in first]

    # The same profile, or none, is accepted; the stored profile never changed.
    later[1]["profile"] = "ml_compute"
    ok = client.post("/metrics", json={"records": [later[1]]})
    assert ok.status_code == 200, ok.text
    assert client.get("/history/ppml0001").json()["profile"] == "ml_compute"
    assert client.get("/status").json()["ingest"]["invalid"] == 1


def test_an_explicit_first_profile_holds_even_against_the_name(client_for: Any, svc: Any) -> None:
    """The first record's profile wins over the name; afterwards the name's profile is the
    "other" one and is refused like any other."""
    client = client_for()
    batch = svc.make_records(names=("ppdb009",), steps=3)
    batch[0]["profile"] = "web_api"  # explicit, not what the name says
    batch[1]["profile"] = None  # none: keeps web_api
    batch[2]["profile"] = "database"  # what the name says, but not the server's profile
    response = client.post("/metrics", json={"records": batch})
    assert response.status_code == 200, response.text
    body = msgspec.convert(response.json(), IngestResponse)
    assert body.accepted == 2
    assert [r.index for r in body.rejected] == [2]
    assert "stable-profile" in body.rejected[0].reason
    assert client.get("/history/ppdb009").json()["profile"] == "web_api"


# -- unknown fields --------------------------------------------------------------------


def test_reload_with_an_unknown_field_is_400_and_reloads_nothing(
    client_for: Any, caplog: pytest.LogCaptureFixture, svc: Any
) -> None:
    client = client_for()
    with caplog.at_level(logging.INFO, logger="fleetcast.appliance.controllers.admin"):
        body = svc.error_body(client.post("/admin/reload", json={"foo": 1}), 400)
        misspelt = svc.error_body(client.post("/admin/reload", json={"modeldir": "next"}), 400)
    assert "`foo`" in body.detail
    assert "model_dir" in body.fix
    assert body.see == "docs/API.md"
    assert "`modeldir`" in misspelt.detail
    assert not [r for r in caplog.records if "model reloaded" in r.getMessage()]
    # The documented bodies still work.
    assert client.post("/admin/reload").status_code == 200
    assert client.post("/admin/reload", json={}).status_code == 200
    scenario = svc.error_body(
        client.post("/demo/scenario", json={"scenario": "critical", "x": 1}), 400
    )
    assert "`x`" in scenario.detail


def test_extra_record_fields_are_accepted_named_and_logged_once(
    client_for: Any, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for()
    records = [dict(r, site="x") for r in svc.make_records(names=("ppml0001",), steps=2)]
    with caplog.at_level(logging.WARNING, logger=INGEST_LOG):
        first = client.post("/metrics", json={"records": records[:1]})
        second = client.post(
            "/metrics",
            content=msgspec.msgpack.encode({"records": [dict(records[1], zone="b")]}),
            headers={"content-type": "application/msgpack"},
        )
        clean = client.post(
            "/metrics",
            json={"records": svc.make_records(names=("ppml0001",), steps=1, start=svc.T0 + 600)},
        )
    assert first.status_code == 200, first.text
    body = msgspec.convert(first.json(), IngestResponse)
    assert (body.accepted, body.ignored_fields) == (1, ["site"])
    assert second.json()["ignored_fields"] == ["site", "zone"]
    assert second.json()["accepted"] == 1
    assert clean.json()["ignored_fields"] == []
    warnings = [r.getMessage() for r in caplog.records if r.name == INGEST_LOG]
    assert len(warnings) == 2  # one per field name, not one per request
    assert "'site'" in warnings[0]
    assert "'zone'" in warnings[1]
    assert all("docs/DATA_CONTRACT.md#extra-columns" in w for w in warnings)
    # A bad record beside one with an extra field: both reported, the good one kept.
    mixed = [dict(records[0], site="y", timestamp=svc.T0 + 900), dict(records[0], cpu_pct="x")]
    answer = client.post("/metrics", json={"records": mixed}).json()
    assert answer["accepted"] == 1
    assert answer["ignored_fields"] == ["site"]
    assert [r["index"] for r in answer["rejected"]] == [1]


def test_an_unknown_field_beside_records_is_400(client_for: Any, svc: Any) -> None:
    client = client_for()
    payload = {"records": svc.make_records(names=("ppml0001",), steps=1), "source": "x"}
    body = svc.error_body(client.post("/metrics", json=payload), 400)
    assert "`source`" in body.detail
    assert client.get("/history/ppml0001").status_code == 404  # nothing was stored


# -- names with slashes and other reserved characters ------------------------------------


def test_servers_named_with_slashes_are_reachable(client_for: Any, svc: Any) -> None:
    client = client_for()
    names = ("a/b", "rack 1/node?2#%")
    records = svc.make_records(names=names, steps=_ready_steps(client))
    assert client.post("/metrics", json={"records": records}).status_code == 200
    _wait_servers(client, svc, 2)
    detail = client.get("/predictions/a%2Fb")
    assert detail.status_code == 200, detail.text
    assert msgspec.convert(detail.json(), ServerDetail).server_name == "a/b"
    odd = client.get("/predictions/rack%201%2Fnode%3F2%23%25")
    assert odd.status_code == 200, odd.text
    assert odd.json()["server_name"] == "rack 1/node?2#%"
    history = client.get("/history/a%2Fb", params={"steps": 3})
    assert history.status_code == 200, history.text
    assert history.json()["server_name"] == "a/b"
    assert len(history.json()["timestamps"]) == 3
    assert client.get("/history/a/b").json()["server_name"] == "a/b"  # unencoded works too
    assert client.get("/predictions/current").json()["fleet"]["servers"] == 2
    missing = svc.error_body(client.get("/predictions/a%2Fc"), 404)
    assert "'a/c'" in missing.detail
    assert "'x/y'" in svc.error_body(client.get("/history/x%2Fy"), 404).detail


# -- --read-key-required guards the schema; the WebSocket refusal -------------------------


def test_read_key_required_guards_the_openapi_schema(client_for: Any, svc: Any) -> None:
    client = client_for(api_key=svc.API_KEY, read_key_required=True)
    key = {"X-API-Key": svc.API_KEY}
    for path in ("/schema", "/schema/openapi.json", "/schema/swagger", "/schema/openapi.yaml"):
        body = svc.error_body(client.get(path), 401)
        assert body.error == "missing API key", path
        assert client.get(path, headers=key).status_code == 200, path
    assert client.get("/health").status_code == 200  # the one open path
    # Without --read-key-required the schema stays open, as every read does.
    open_client = client_for(state="open", api_key=svc.API_KEY)
    assert open_client.get("/schema/openapi.json").status_code == 200


def test_websocket_without_key_is_refused_as_401(client_for: Any, svc: Any) -> None:
    """The test client has no denial responses: the refusal is a close with 4000 + 401
    (over a real server it is an HTTP 401 answer: test_api_edges_process)."""
    client = client_for(api_key=svc.API_KEY, read_key_required=True)
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/ws/predictions") as ws,
    ):
        ws.receive_text()
    assert refused.value.code == 4401
    assert "X-API-Key" in str(refused.value.detail)


# -- /status fields are all documented ---------------------------------------------------


def test_docs_list_every_status_servers_field(client_for: Any, svc: Any) -> None:
    client = client_for()
    assert client.post("/metrics", json={"records": svc.make_records(steps=2)}).status_code == 200
    servers = client.get("/status").json()["servers"]
    assert "ahead" in servers
    row = next(line for line in API_MD.read_text().splitlines() if "| `/status` |" in line)
    documented = re.search(r"servers \{([^}]*)\}", row)
    assert documented is not None
    listed = {re.split(r"[\s:(\[]", part.strip())[0] for part in documented[1].split(",")}
    assert set(servers) <= listed, set(servers) - listed
    ingest = client.get("/status").json()["ingest"]
    listed_ingest = re.search(r"ingest \{([^}]*)\}", row)
    assert listed_ingest is not None
    assert set(ingest) <= {part.strip() for part in listed_ingest[1].split(",")}


def test_ingest_answer_fields_are_documented() -> None:
    row = next(line for line in API_MD.read_text().splitlines() if "| POST | `/metrics` |" in line)
    for name in IngestResponse.__struct_fields__:
        assert f'"{name}"' in row, name


# -- the listening sockets handed to uvicorn ---------------------------------------------


def test_listen_binds_before_serving_and_names_a_taken_port() -> None:
    import socket

    from fleetcast.appliance.app import ListenError, listen

    sockets = listen("127.0.0.1", 0)
    try:
        [sock] = sockets
        port = sock.getsockname()[1]
        # Listening already: a client connects (and waits in the backlog) before any server.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        with pytest.raises(ListenError) as taken:
            listen("127.0.0.1", port)
    finally:
        for sock in sockets:
            sock.close()
    message = str(taken.value)
    assert message.startswith(f"Cannot listen on 127.0.0.1:{port}: the address is already in use")
    assert "another process holds that port" in taken.value.why
    assert "--port" in taken.value.fix
    assert taken.value.see == "docs/OPERATIONS.md#configuration"
    with pytest.raises(ListenError) as nowhere:
        listen("no-such-host.invalid", 8000)
    assert "does not resolve" in nowhere.value.what
    assert "--host" in nowhere.value.fix


# -- records that do not decode are counted like the engine's invalid ones ----------------


def test_records_refused_while_decoding_are_counted_as_invalid(client_for: Any, svc: Any) -> None:
    """A wrong type, a missing field or a naive time is refused before the engine sees the
    record; /status and the push source's detail still count it (docs/API.md /status)."""
    client = client_for()
    good, typed, missing, naive = svc.make_records(names=("ppml0001",), steps=4)
    typed["cpu_pct"] = "5"
    del missing["latency_ms"]
    naive["timestamp"] = "2026-11-27T10:00:00"
    answer = client.post("/metrics", json={"records": [typed, good, missing]})
    assert answer.status_code == 200, answer.text
    reasons = [r["reason"] for r in answer.json()["rejected"]]
    assert [r["index"] for r in answer.json()["rejected"]] == [0, 2]
    assert reasons[0].endswith(
        "got `str` - at `$.cpu_pct`; send cpu_pct as a number (docs/DATA_CONTRACT.md#columns)"
    )
    assert reasons[1].endswith(
        "missing required field `latency_ms`; leave out a sample whose metrics were not all "
        "measured; never send 0 for one (docs/DATA_CONTRACT.md#null-values)"
    )
    status = client.get("/status").json()
    assert (status["ingest"]["accepted"], status["ingest"]["rejected"]) == (1, 2)
    assert status["ingest"]["invalid"] == 2
    for _ in range(3):  # nothing decodes: 422, and still counted
        svc.error_body(client.post("/metrics", json={"records": [naive]}), 422)
    status = client.get("/status").json()
    assert (status["ingest"]["rejected"], status["ingest"]["invalid"]) == (5, 5)
    assert status["source"]["detail"] == (
        "4 POST /metrics requests, 1 samples accepted, 5 rejected"
    )
    metrics = client.get("/metrics").text
    assert 'fleetcast_ingest_samples_total{result="rejected"} 5' in metrics
    # The usual two: a time without its zone, epoch seconds sent as a string.
    answer = client.post("/metrics", json={"records": [naive, dict(good, timestamp="1795881900")]})
    assert [r["reason"].split("; ", 1)[1] for r in answer.json()["rejected"]] == [
        "append Z for UTC (2026-11-28T16:00:00Z) or an offset (+02:00) "
        "(docs/DATA_CONTRACT.md#utc-timestamps)",
        "send the sample's time: ISO 8601 with a time zone, or epoch seconds as a number "
        "(not a string) "
        "(docs/DATA_CONTRACT.md#timestamp)",
    ]


def test_a_json_body_with_nan_tokens_is_a_400_that_names_them(client_for: Any, svc: Any) -> None:
    import json

    (record,) = svc.make_records(names=("ppml0001",), steps=1)
    record["latency_ms"] = float("nan")
    body = json.dumps({"records": [record]})  # Python writes NaN: not JSON
    client = client_for()
    answer = client.post("/metrics", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert "it carries NaN or Infinity, which are not JSON" in detail
    assert "docs/DATA_CONTRACT.md#non-finite-values" in detail
    record["latency_ms"] = 5.0
    plain = client.post("/metrics", content=b'{"records": [nope]}',
                        headers={"Content-Type": "application/json"})  # fmt: skip
    assert plain.status_code == 400
    assert "NaN" not in plain.json()["detail"]


def test_a_timestamp_out_of_range_is_refused_with_its_value_and_likely_unit(
    client_for: Any, svc: Any
) -> None:
    # The reason was a fixed "not finite epoch seconds between 1970 and 9998": it named
    # neither the value nor the usual cause, milliseconds (docs/DATA_CONTRACT.md#time-range).
    ms, iso_late, negative, good = svc.make_records(names=("ppml0001",), steps=4)
    ms["timestamp"] = svc.T0 * 1000
    iso_late["timestamp"] = "9999-06-01T00:00:00Z"
    negative["timestamp"] = -5
    answer = client_for().post("/metrics", json={"records": [ms, iso_late, negative, good]})
    assert answer.status_code == 200, answer.text
    reasons = [r["reason"] for r in answer.json()["rejected"]]
    assert len(reasons) == 3
    assert reasons[0].startswith(f"invalid timestamp {svc.T0 * 1000!r}: not finite epoch")
    when = datetime.fromtimestamp(svc.T0, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"as epoch milliseconds it would be {when}: send seconds" in reasons[0]
    assert reasons[1].startswith("invalid timestamp 9999-06-01T00:00:00+00:00:")
    assert reasons[2].startswith("invalid timestamp -5:")
    assert "milliseconds" not in reasons[1] + reasons[2]
    assert all(r.endswith("(docs/DATA_CONTRACT.md#time-range)") for r in reasons)


def test_a_compressed_or_non_utf8_body_is_a_415_that_says_so(client_for: Any, svc: Any) -> None:
    # Both were read as UTF-8 and refused as "JSON is malformed: invalid character (byte 0)".
    import gzip
    import json

    body = json.dumps({"records": svc.make_records(names=("ppml0001",), steps=1)}).encode()
    client = client_for()
    gz = client.post(
        "/metrics",
        content=gzip.compress(body),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    refused = svc.error_body(gz, 415)
    assert refused.error == "unsupported body encoding"
    assert "Content-Encoding 'gzip'" in refused.detail
    assert refused.fix == "send the body uncompressed"
    latin = client.post(
        "/metrics", content=body, headers={"Content-Type": "application/json; charset=ISO-8859-1"}
    )
    assert "charset 'iso-8859-1'" in svc.error_body(latin, 415).detail
    utf8 = client.post(
        "/metrics", content=body, headers={"Content-Type": 'application/json; charset="UTF-8"'}
    )
    assert utf8.status_code == 200, utf8.text
    ascii_ = client.post(  # ASCII is UTF-8: taken, as before the check
        "/metrics", content=body, headers={"Content-Type": "application/json; charset=us-ascii"}
    )
    assert ascii_.status_code == 200, ascii_.text
    assert client.get("/status").json()["ingest"]["duplicates"] == 1


def test_an_empty_batch_is_told_to_send_a_record(client_for: Any, svc: Any) -> None:
    empty = svc.error_body(client_for().post("/metrics", json={"records": []}), 422)
    assert empty.detail == "the batch holds no records"
    assert empty.fix == 'send at least one record: {"records": [record, ...]}'  # no 'rejected'
