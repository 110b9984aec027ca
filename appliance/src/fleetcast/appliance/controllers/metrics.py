"""POST /metrics: decode, validate per record, ingest; valid records are kept even when
others in the batch are not (each rejection is reported with its index and reason).

Accepts JSON, or MessagePack with ``Content-Type: application/msgpack``. Decoding is
strict and happens before anything else; the whole batch is tried in one msgspec pass
and only a batch with a bad record is decoded record by record to name the bad ones.
Contract checks on values (ranges, states, profiles, age) are the engine's
(``fleetcast.contract.records``); accepted records are on disk before the answer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from litestar import Controller, Request, Response, post
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from fleetcast.appliance.auth import write_guard
from fleetcast.appliance.http_errors import ApiError
from fleetcast.appliance.persistence import Columns
from fleetcast.appliance.runtime import iso
from fleetcast.appliance.schemas import IngestResponse, MetricsIn, RawMetricsIn, RecordIn, Rejected

if TYPE_CHECKING:
    from litestar.datastructures import State

__all__ = ["DecodedBatch", "MetricsController", "decode_metrics"]

_log = logging.getLogger(__name__)
_SEE = "docs/API.md"
_MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
_JSON_FULL = msgspec.json.Decoder(MetricsIn)
_JSON_RAW = msgspec.json.Decoder(RawMetricsIn)
_JSON_RECORD = msgspec.json.Decoder(RecordIn)
_MP_FULL = msgspec.msgpack.Decoder(MetricsIn)
_MP_RAW = msgspec.msgpack.Decoder(RawMetricsIn)
_MP_RECORD = msgspec.msgpack.Decoder(RecordIn)
_MAX_EPOCH = 253_370_764_800
"""9999-01-01T00:00:00Z: later timestamps (and their forecast horizons) cannot be written
as ISO dates, so a record past it would break every later answer; it is rejected."""
# Decoders are immutable and thread-safe: module-level constants, not state.


@dataclass
class DecodedBatch:
    """Records that decoded (as columns) and the rejections so far, in original indices."""

    columns: Columns
    index: np.ndarray
    """Original index in ``records`` of each row of ``columns`` (int64, (n,))."""
    rejected: list[Rejected]


def _epoch(ts: datetime | float) -> int | None:
    """Whole epoch seconds, or None when not finite or outside 1970 .. 9998."""
    if isinstance(ts, datetime):
        seconds = math.floor(ts.timestamp())
    elif isinstance(ts, bool) or not math.isfinite(ts):
        return None
    else:
        seconds = math.floor(ts)
    return seconds if 0 <= seconds < _MAX_EPOCH else None


def decode_metrics(body: bytes, msgpack: bool) -> DecodedBatch:
    """Decode a POST /metrics body; raises ApiError(400) when it is not ``{"records": [...]}``."""
    full, raw, one = (
        (_MP_FULL, _MP_RAW, _MP_RECORD) if msgpack else (_JSON_FULL, _JSON_RAW, _JSON_RECORD)
    )
    rejected: list[Rejected] = []
    try:
        records: list[RecordIn | None] = list(full.decode(body).records)
    except msgspec.DecodeError:
        try:
            raws = raw.decode(body).records
        except msgspec.DecodeError as exc:
            raise ApiError(
                400,
                "malformed body",
                f"expected {'MessagePack' if msgpack else 'JSON'} of the form "
                f'{{"records": [record, ...]}}: {exc}',
                "send an object with a 'records' list of contract records (schema at /schema)",
                _SEE,
            ) from exc
        records = []
        for i, item in enumerate(raws):
            try:
                records.append(one.decode(item))
            except msgspec.DecodeError as exc:
                records.append(None)
                rejected.append(Rejected(index=i, reason=f"invalid record: {exc}"))
    keep: list[int] = []
    ts: list[int] = []
    for i, rec in enumerate(records):
        if rec is None:
            continue
        epoch = _epoch(rec.timestamp)
        if epoch is None:
            rejected.append(
                Rejected(
                    index=i,
                    reason="invalid timestamp: not finite epoch seconds between 1970 and 9998 "
                    "(docs/DATA_CONTRACT.md#timestamp)",
                )
            )
            continue
        keep.append(i)
        ts.append(epoch)
    good = [records[i] for i in keep]
    metrics = np.array(
        [(r.cpu_pct, r.mem_pct, r.disk_io_mb_s, r.latency_ms) for r in good],  # type: ignore[union-attr]
        dtype=np.float64,
    ).reshape(-1, 4)
    cols = Columns(
        ts=np.array(ts, dtype=np.int64),
        metrics=metrics,
        server=[r.server_name for r in good],  # type: ignore[union-attr]
        state=[r.state for r in good],  # type: ignore[union-attr]
        profile=[r.profile for r in good],  # type: ignore[union-attr]
    )
    return DecodedBatch(cols, np.array(keep, dtype=np.int64), rejected)


def _record_schema() -> Schema:
    number = Schema(type=OpenAPIType.NUMBER)
    nullable_str = Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)])
    record = Schema(
        type=OpenAPIType.OBJECT,
        required=["timestamp", "server_name", "cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms"],
        properties={
            "timestamp": Schema(
                one_of=[Schema(type=OpenAPIType.STRING, format="date-time"), number],  # type: ignore[arg-type]
                description="ISO 8601 with a time zone, or epoch seconds",
            ),
            "server_name": Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
            "cpu_pct": number,
            "mem_pct": number,
            "disk_io_mb_s": number,
            "latency_ms": number,
            "state": nullable_str,
            "profile": nullable_str,
        },
    )
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["records"],
        properties={"records": Schema(type=OpenAPIType.ARRAY, items=record)},
    )


@dataclass
class _MetricsOperation(Operation):
    """OpenAPI of POST /metrics: the body is read raw (per-record errors), so describe it here."""

    def __post_init__(self) -> None:
        schema = _record_schema()
        self.request_body = RequestBody(
            required=True,
            description="A batch of contract records (docs/DATA_CONTRACT.md#columns)",
            content={
                "application/json": OpenAPIMediaType(schema=schema),
                "application/msgpack": OpenAPIMediaType(schema=schema),
            },
        )


class MetricsController(Controller):
    """Data in."""

    path = "/metrics"
    tags = ["ingest"]  # noqa: RUF012

    @post(
        "/",
        guards=[write_guard],
        status_code=200,
        operation_class=_MetricsOperation,
        summary="Ingest a batch of contract records",
    )
    async def ingest(
        self, request: Request[Any, Any, Any], state: State
    ) -> Response[IngestResponse]:
        """200 with ``accepted`` and per-index ``rejected`` when any record was kept; 422 when none."""
        runtime = state.runtime
        content_type = (
            request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        )
        body = await request.body()
        batch = decode_metrics(body, msgpack=content_type in _MSGPACK_TYPES)
        rejected = list(batch.rejected)
        accepted = 0
        latest = None
        if len(batch.columns):
            try:
                result = await runtime.ingest(batch.columns)
            except OSError as exc:
                _log.error("sample log write failed: %s", exc)
                raise ApiError(
                    503,
                    "cannot persist samples",
                    f"the state directory is not writable ({type(exc).__name__}); nothing was acknowledged",
                    "free disk space or fix the state directory's permissions, then resend the batch",
                    "docs/OPERATIONS.md#state",
                ) from exc
            accepted = result.accepted
            latest = iso(result.latest_step)
            rejected.extend(
                Rejected(index=int(batch.index[i]), reason=reason) for i, reason in result.rejected
            )
        rejected.sort(key=lambda r: r.index)
        if accepted == 0:
            raise ApiError(
                422,
                "no record accepted",
                "none of the records passed validation"
                if rejected
                else "the batch holds no records",
                "fix the records named in 'rejected' (each with its index and reason) and resend them",
                "docs/DATA_CONTRACT.md#columns",
                rejected=rejected,
            )
        return Response(IngestResponse(accepted=accepted, rejected=rejected, latest_step=latest))
