"""HTTP semantics pollers, probes and scripts rely on: HEAD, conditional GETs (ETag → 304) and
query parameters a route does not take (400, not ignored). docs/API.md."""

from __future__ import annotations

from typing import Any

import pytest

from fleetcast.appliance.http_cache import etag, matches
from fleetcast.appliance.query_params import ANY_QUERY, QUERY_OPT


def _ready(client: Any, svc: Any) -> None:
    """Forecast the fleet (records for one step past the encoder)."""
    e = int(client.get("/status").json()["model"]["encoder_length"])
    records = svc.make_records(steps=e + 2)
    assert client.post("/metrics", json={"records": records}).status_code == 200
    svc.wait_until(lambda: client.get("/predictions/current").json()["servers"], timeout=20)


def test_an_unchanged_forecast_set_is_a_304_and_a_new_one_a_new_tag(
    client_for: Any, svc: Any
) -> None:
    client = client_for()
    empty = client.get("/predictions/current")
    assert empty.json()["servers"] == []
    assert empty.headers["etag"] == etag(empty.content)
    assert empty.headers["cache-control"] == "no-cache"
    _ready(client, svc)
    first = client.get("/predictions/current")
    tag = first.headers["etag"]
    assert tag != empty.headers["etag"]
    assert tag == etag(first.content)  # the tag of the body served
    for sent in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        polled = client.get("/predictions/current", headers={"If-None-Match": sent})
        assert (polled.status_code, polled.content) == (304, b""), sent
        assert polled.headers["etag"] == tag
    stale = client.get("/predictions/current", headers={"If-None-Match": empty.headers["etag"]})
    assert stale.status_code == 200
    assert stale.content == first.content

    # A forget changes the served set: the old tag no longer matches.
    gone = svc.SERVERS[0]
    assert client.delete(f"/servers/{gone}").status_code == 200
    after = client.get("/predictions/current", headers={"If-None-Match": tag})
    assert after.status_code == 200
    assert after.headers["etag"] != tag
    assert gone not in {s["server_name"] for s in after.json()["servers"]}


@pytest.mark.parametrize(
    "path", ["/health", "/status", "/predictions/current", "/servers", "/fleet/history"]
)
def test_head_is_get_without_the_body(client_for: Any, path: str) -> None:
    client = client_for()
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if path != "/status":  # its uptime and rates change between the two calls
        assert head.headers["content-length"] == str(len(got.content))


def test_a_head_is_counted_and_logged_as_head_on_its_route(client_for: Any) -> None:
    client = client_for()
    for _ in range(2):
        assert client.head("/health").status_code == 200
    exposition = client.get("/metrics").text
    assert 'fleetcast_http_requests_total{method="HEAD",route="/health",status="200"} 2' in (
        exposition
    )


def test_head_answers_like_get_when_get_would_refuse(client_for: Any, svc: Any) -> None:
    client = client_for(api_key=svc.API_KEY, read_key_required=True)
    assert client.head("/predictions/current").status_code == 401
    assert client.head("/nowhere").status_code == 404
    refused = client.head("/admin/reload")  # POST only: a 405 naming what it takes
    assert (refused.status_code, refused.content) == (405, b"")
    assert "POST" in refused.headers["allow"]
    assert "HEAD" not in refused.headers["allow"]


def test_allow_lists_head_beside_get(client_for: Any) -> None:
    client = client_for()
    wrong = client.post("/predictions/current", json={})
    assert wrong.status_code == 405
    allowed = {m.strip() for m in wrong.headers["allow"].split(",")}
    assert {"GET", "HEAD"} <= allowed
    assert "POST" not in allowed
    # OPTIONS names the methods whatever the parameters (not a 400 for the GET's own).
    options = client.options("/servers", params={"state": "stale"})
    assert options.status_code < 300
    assert {"GET", "HEAD"} <= {m.strip() for m in options.headers["allow"].split(",")}


def test_matches_reads_if_none_match_as_rfc_9110_says() -> None:
    assert matches('"a"', '"a"')
    assert matches('W/"a"', '"a"')
    assert matches(' "b" ,"a"', '"a"')
    assert matches("*", '"a"')
    assert not matches(None, '"a"')
    assert not matches("", '"a"')
    assert not matches('"ab"', '"a"')
    assert not matches("a", '"a"')  # unquoted: not a tag


def test_a_misspelt_query_parameter_is_a_400_not_every_server(client_for: Any, svc: Any) -> None:
    client = client_for()
    _ready(client, svc)
    # ?status=stale instead of ?state=stale: ignored, it would list the whole fleet.
    bad = svc.error_body(client.get("/servers", params={"status": "stale"}), 400)
    assert bad.error == "unknown query parameter"
    assert bad.detail.startswith("'status' is not a parameter of /servers")
    assert bad.fix == "/servers takes only: state, limit, after; check the spelling"
    assert bad.see == "docs/API.md#query-parameters"
    assert client.get("/servers", params={"state": "stale"}).json()["count"] == 0

    none = svc.error_body(client.get("/predictions/current?servers=a&z=1"), 400)
    assert none.detail.startswith("'servers', 'z' are not parameters of /predictions/current")
    assert none.fix == "/predictions/current takes no query parameters: leave them out"
    many = svc.error_body(client.get("/health?" + "&".join(f"p{i}=1" for i in range(7))), 400)
    assert "and 2 more" in many.detail
    # Writes too: a POST's parameters are never read, so one sent is a mistake.
    assert client.post("/metrics?dry_run=1", json={"records": []}).status_code == 400

    name = svc.SERVERS[0]
    assert client.get(f"/history/{name}", params={"steps": 3}).status_code == 200
    assert client.get(f"/history/{name}", params={"step": 3}).status_code == 400
    assert client.get("/fleet/history", params={"steps": 3}).status_code == 200
    assert client.get("/profiles/database/history", params={"steps": 3}).status_code == 200
    assert client.get("/servers", params={"limit": 1, "after": "a"}).status_code == 200
    # The OpenAPI pages add their own parameters.
    assert client.get("/schema/openapi.json", params={"v": "1"}).status_code == 200


def test_a_request_without_the_key_gets_the_401_before_a_400_for_its_parameters(
    client_for: Any, svc: Any
) -> None:
    """The parameters a route takes are not told to a client without the key."""
    client = client_for(api_key=svc.API_KEY, read_key_required=True)
    assert svc.error_body(client.get("/servers?bogus=1"), 401).error == "missing API key"
    posted = client.post("/metrics?x=1", json={"records": []})
    assert svc.error_body(posted, 401).error == "missing API key"
    key = {"X-API-Key": svc.API_KEY}
    bad = svc.error_body(client.get("/servers?bogus=1", headers=key), 400)
    assert bad.error == "unknown query parameter"


def test_each_route_takes_exactly_the_query_parameters_it_declares(client_for: Any) -> None:
    """The guard's lists and the handlers' signatures (the OpenAPI schema) cannot drift."""
    client = client_for()
    app = client.app
    declared: dict[tuple[str, str], set[str]] = {}
    for path, item in (app.openapi_schema.paths or {}).items():
        for method in ("get", "post", "delete"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            names = {p.name for p in operation.parameters or [] if p.param_in == "query"}
            declared[(path, method.upper())] = names
    checked = 0
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            allowed = handler.opt.get(QUERY_OPT, ())
            if allowed == ANY_QUERY:
                continue
            for method in handler.http_methods:
                key = (route.path_format, method)
                if key in declared:
                    assert set(allowed) == declared[key], key
                    checked += 1
    assert checked >= 12
