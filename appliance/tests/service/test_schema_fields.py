"""The OpenAPI schema at /schema names exactly the fields the bodies carry (docs/API.md).

The forecast, history and status bodies are plain dicts encoded as they are; the msgspec
Structs of :mod:`fleetcast.appliance.schemas` only give them their schema. A field the
body has and the Struct lacks is missing from ``/schema/openapi.json`` (an alert's
``predicted_p90`` and ``at``, ``step_seconds`` of the histories, ``nonfinite_forecasts``),
so each body's keys are compared with its Struct's fields and with the served schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetcast.appliance.schemas import (
    AlertItem,
    PredictionsCurrent,
    ProfileHistory,
    ServerDetail,
    ServerHistory,
    StatusResponse,
)

if TYPE_CHECKING:
    import msgspec
    from litestar.testing import TestClient


def _fields(struct: type[msgspec.Struct]) -> set[str]:
    return set(struct.__struct_fields__)


def _schema_properties(client: TestClient[Any], name: str) -> set[str]:
    schemas = client.get("/schema/openapi.json").json()["components"]["schemas"]
    found = [v for k, v in schemas.items() if k == name or k.endswith(f"_{name}")]
    assert len(found) == 1, sorted(schemas)
    return set(found[0]["properties"])


def test_every_body_field_is_in_its_schema(client_for: Any, svc: Any, tmp_path: Path) -> None:
    # Thresholds far below every sample: each ready server raises alerts.
    thresholds = tmp_path / "thresholds.toml"
    thresholds.write_text(
        "\n".join(f"[{m}]\ndefault = 0.001" for m in ("cpu_pct", "mem_pct", "latency_ms"))
    )
    client = client_for(thresholds_file=str(thresholds))
    steps = int(client.get("/status").json()["model"]["encoder_length"]) + 2
    records = svc.make_records(steps=steps)
    assert client.post("/metrics", json={"records": records}).status_code == 200

    def alerts() -> list[dict[str, Any]] | None:
        return client.get("/alerts/active").json()["alerts"] or None

    alert = svc.wait_until(alerts, timeout=20)[0]
    assert set(alert) == _fields(AlertItem)
    assert {"predicted_p90", "at"} <= _schema_properties(client, "AlertItem")
    assert alert["predicted_p90"] >= alert["predicted_value"]

    history = client.get("/history/ppml0001", params={"steps": 4}).json()
    assert set(history) == _fields(ServerHistory)
    assert history["step_seconds"] == 300
    assert "step_seconds" in _schema_properties(client, "ServerHistory")

    profile = client.get("/profiles/ml_compute/history", params={"steps": 4}).json()
    assert set(profile) == _fields(ProfileHistory)
    assert profile["step_seconds"] == 300
    assert "step_seconds" in _schema_properties(client, "ProfileHistory")

    current = client.get("/predictions/current").json()
    assert set(current) == _fields(PredictionsCurrent)
    assert current["data_time"] is not None
    detail = client.get("/predictions/ppml0001").json()
    assert set(detail) == _fields(ServerDetail)

    status = client.get("/status").json()
    assert set(status) == _fields(StatusResponse)
    assert status["nonfinite_forecasts"] == 0
    assert "nonfinite_forecasts" in _schema_properties(client, "StatusResponse")


def _documented_keys(row: str, name: str) -> set[str]:
    """The keys docs/API.md lists in ``name {a, b (…), c {…}, …}`` of a table row."""
    start = row.index(f" {name} {{") + len(name) + 3
    items, item, depth = [], "", 0
    for ch in row[start:]:
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            if depth == 0:
                items.append(item)
                break
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(item)
            item = ""
            continue
        item += ch
    return {re.match(r"\s*(\w+)", it).group(1) for it in items}  # type: ignore[union-attr]


def test_status_parts_are_documented_key_for_key(client_for: Any, svc: Any) -> None:
    """docs/API.md's /status row names every key of /status's nested parts, and no other."""
    api_md = Path(__file__).resolve().parents[3] / "docs" / "API.md"
    row = next(line for line in api_md.read_text().splitlines() if "| GET | `/status` |" in line)
    client = client_for()
    steps = int(client.get("/status").json()["model"]["encoder_length"]) + 2
    assert (
        client.post("/metrics", json={"records": svc.make_records(steps=steps)}).status_code == 200
    )
    status = svc.wait_until(lambda: (s := client.get("/status").json())["forecast_runs"] and s)
    for part in ("model", "servers", "ingest", "forgotten", "persistence", "service", "step_cache"):
        assert set(status[part]) == _documented_keys(row, part), part
