"""POST /metrics: decode, validate per record, ingest; valid records are kept even when
others in the batch are not (each rejection is reported with its index and reason).

Accepts JSON (``Content-Type: application/json``), or MessagePack with ``Content-Type:
application/msgpack``; any other type, or a body without one, is a 415 (a web page could
post those cross-site, docs/OPERATIONS.md#cross-site-requests). Decoding is
strict and happens before anything else; the whole batch is tried in one msgspec pass
and only a batch with a bad record is decoded record by record to name the bad ones.
Contract checks on values (ranges, states, profiles, age) are the engine's
(``fleetcast.contract.records``); accepted records are on disk before the answer.

The ingest is the contract's non-strict path (docs/DATA_CONTRACT.md#extra-columns): a
record field outside the contract (``"site": "x"``) does not refuse the record, but it is
named in the answer's ``ignored_fields`` and logged once per field name. A field outside
``{"records": [...]}`` itself is a 400.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from litestar import Controller, Request, Response, post
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from fleetcast.appliance.auth import write_guard
from fleetcast.appliance.engine_ingest import CAPACITY_REASON
from fleetcast.appliance.errors import write_error_cause
from fleetcast.appliance.forecast import iso
from fleetcast.appliance.http_errors import JSON_TYPE, ApiError, body_type_guard
from fleetcast.appliance.persistence import Columns
from fleetcast.appliance.schemas import IngestResponse, MetricsIn, RawMetricsIn, RecordIn, Rejected
from fleetcast.contract.schema import END_EPOCH_S, METRIC_COLUMNS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar.datastructures import State

__all__ = ["DecodedBatch", "IgnoredFieldWarnings", "MetricsController", "decode_metrics"]

_log = logging.getLogger(__name__)
_SEE = "docs/API.md"
_SEE_EXTRA = "docs/DATA_CONTRACT.md#extra-columns"
_MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
_RECORD_FIELDS = frozenset(RecordIn.__struct_fields__)


class _ExactRecordIn(RecordIn, frozen=True, forbid_unknown_fields=True):
    """A record without fields outside the contract: the type of the one-pass fast path."""


class _ExactMetricsIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    records: list[_ExactRecordIn]


class _RecordKeys(msgspec.Struct, frozen=True):
    """Only the field names of each record (values left raw): finds the ignored fields."""

    records: list[dict[str, msgspec.Raw]]


_JSON_EXACT = msgspec.json.Decoder(_ExactMetricsIn)
_JSON_FULL = msgspec.json.Decoder(MetricsIn)
_JSON_KEYS = msgspec.json.Decoder(_RecordKeys)
_JSON_RAW = msgspec.json.Decoder(RawMetricsIn)
_JSON_RECORD = msgspec.json.Decoder(RecordIn)
_JSON_RECORD_KEYS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_MP_EXACT = msgspec.msgpack.Decoder(_ExactMetricsIn)
_MP_FULL = msgspec.msgpack.Decoder(MetricsIn)
_MP_KEYS = msgspec.msgpack.Decoder(_RecordKeys)
_MP_RAW = msgspec.msgpack.Decoder(RawMetricsIn)
_MP_RECORD = msgspec.msgpack.Decoder(RecordIn)
_MP_RECORD_KEYS = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])
# Decoders are immutable and thread-safe: module-level constants, not state.


@dataclass
class DecodedBatch:
    """Records that decoded (as columns) and the rejections so far, in original indices."""

    columns: Columns
    index: np.ndarray
    """Original index in ``records`` of each row of ``columns`` (int64, (n,))."""
    rejected: list[Rejected]
    ignored_fields: list[str] = field(default_factory=list)
    """Record fields outside the contract, sorted: ignored, reported in the answer."""


class IgnoredFieldWarnings:
    """Logs one warning per record field name outside the contract (one per app).

    At most ``limit`` names are remembered (a client inventing names cannot grow memory
    or flood the log); past it one last warning says that further names are not logged.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self.seen: set[str] = set()
        self._full = False

    def warn(self, names: Iterable[str]) -> None:
        """Warn about each name not warned about before."""
        for name in names:
            if name in self.seen:
                continue
            if len(self.seen) >= self.limit:
                if not self._full:
                    self._full = True
                    _log.warning(
                        "POST /metrics: more record fields outside the contract than the %d "
                        "already logged; further names are not logged (each answer still lists "
                        "them in ignored_fields). See %s",
                        self.limit,
                        _SEE_EXTRA,
                    )
                return
            self.seen.add(name)
            _log.warning(
                "POST /metrics: records carry the field %r, which is not a contract column: "
                "it is ignored (the answer lists it in ignored_fields). Rename it if it was "
                "meant as a contract column, or stop sending it. See %s",
                name[:200],
                _SEE_EXTRA,
            )


def _refusal_doc(rejected: list[Rejected]) -> str:
    """Where a batch refused whole reads on: forgetting servers when only the capacity
    refused it (the records were fine), else the contract's columns."""
    if rejected and all(CAPACITY_REASON in r.reason for r in rejected):
        return "docs/OPERATIONS.md#forgetting-servers"
    return "docs/DATA_CONTRACT.md#columns"


def _epoch(ts: datetime | float) -> int | None:
    """Whole epoch seconds, or None when not finite or outside 1970 .. 9998."""
    if isinstance(ts, datetime):
        seconds = math.floor(ts.timestamp())
    elif isinstance(ts, bool) or not math.isfinite(ts):
        return None
    else:
        seconds = math.floor(ts)
    return seconds if 0 <= seconds < END_EPOCH_S else None


def _bad_timestamp(ts: datetime | float) -> str:
    """The rejection of a timestamp :func:`_epoch` refused: the value, the range, and the
    usual cause, a unit error (docs/DATA_CONTRACT.md#time-range)."""
    got = ts.isoformat() if isinstance(ts, datetime) else repr(ts)
    hint = ""
    if not isinstance(ts, (datetime, bool)) and math.isfinite(ts) and ts >= END_EPOCH_S:
        for unit, per_s in (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9)):
            if ts / per_s < END_EPOCH_S:
                hint = f"; as epoch {unit} it would be {iso(ts / per_s)}: send seconds"
                break
    return (
        f"invalid timestamp {got}: not finite epoch seconds from 1970-01-01T00:00:00Z to before "
        f"9999-01-01T00:00:00Z{hint} (docs/DATA_CONTRACT.md#time-range)"
    )


def _decode_records(
    body: bytes, msgpack: bool
) -> tuple[list[RecordIn | None], list[Rejected], set[str]]:
    """The records (None where one does not decode), their rejections and the field names
    outside the contract. Raises ApiError(400) for a body that is not ``{"records": [...]}``
    and RecursionError for one nested too deeply.

    ``except ValueError``: msgspec.DecodeError, and the UnicodeDecodeError msgspec raises
    for a MessagePack string that is not UTF-8 (a 500 before), are both ValueErrors.
    """
    if msgpack:
        exact, full, keys, raw, one, one_keys = (
            _MP_EXACT,
            _MP_FULL,
            _MP_KEYS,
            _MP_RAW,
            _MP_RECORD,
            _MP_RECORD_KEYS,
        )
    else:
        exact, full, keys, raw, one, one_keys = (
            _JSON_EXACT,
            _JSON_FULL,
            _JSON_KEYS,
            _JSON_RAW,
            _JSON_RECORD,
            _JSON_RECORD_KEYS,
        )
    rejected: list[Rejected] = []
    ignored: set[str] = set()
    records: list[RecordIn | None]
    try:
        records = list(exact.decode(body).records)
    except ValueError:
        try:
            records = list(full.decode(body).records)
            for fields in keys.decode(body).records:
                ignored.update(fields.keys() - _RECORD_FIELDS)
        except ValueError:
            try:
                raws = raw.decode(body).records
            except ValueError as exc:
                raise _malformed(msgpack, str(exc) + _nan_hint(body, msgpack)) from exc
            records = []
            for i, item in enumerate(raws):
                try:
                    records.append(one.decode(item))
                except ValueError as exc:
                    records.append(None)
                    reason = _undecodable(str(exc))
                    rejected.append(Rejected(index=i, reason=reason))
                    continue
                try:
                    ignored.update(one_keys.decode(item).keys() - _RECORD_FIELDS)
                except ValueError:  # pragma: no cover - it decoded as a record
                    pass
    return records, rejected, ignored


_AT_FIELD = re.compile(r"at `\$\.(\w+)`|missing required field `(\w+)`")


def _undecodable(text: str) -> str:
    """The rejection of a record that does not decode: msgspec's words (what, where), then
    what to send instead and the contract's section."""
    m = _AT_FIELD.search(text)
    name = (m.group(1) or m.group(2)) if m else None
    if "timezone component" in text:
        fix = "append Z for UTC (2026-11-28T16:00:00Z) or an offset (+02:00)"
        see = "utc-timestamps"
    elif name == "timestamp":
        fix = "send the sample's time: ISO 8601 with a time zone, or epoch seconds as a number"
        fix += " (not a string)" if "missing" not in text else ""
        see = "timestamp"
    elif name in METRIC_COLUMNS and ("null" in text or "missing" in text):
        fix = "leave out a sample whose metrics were not all measured; never send 0 for one"
        see = "null-values"
    elif name in METRIC_COLUMNS:
        fix = f"send {name} as a number"
        see = "columns"
    else:
        fix, see = "send each contract column with its type", "columns"
    return f"invalid record: {text}; {fix} (docs/DATA_CONTRACT.md#{see})"


_NAN_TOKEN = re.compile(rb"[:\[,]\s*-?(?:NaN|Infinity)\s*[,\]}]")


def _nan_hint(body: bytes, msgpack: bool) -> str:
    """Why a JSON body with Python's NaN/Infinity tokens is malformed ('' otherwise)."""
    if msgpack or _NAN_TOKEN.search(body) is None:
        return ""
    return (
        "; it carries NaN or Infinity, which are not JSON (Python's json.dumps writes them "
        "unless allow_nan=False): leave those samples out (docs/DATA_CONTRACT.md#non-finite-values)"
    )


def _malformed(msgpack: bool, reason: str) -> ApiError:
    return ApiError(
        400,
        "malformed body",
        f"expected {'MessagePack' if msgpack else 'JSON'} of the form "
        f'{{"records": [record, ...]}} (no other field): {reason}',
        "send an object with a 'records' list of contract records (schema at /schema)",
        _SEE,
    )


def decode_metrics(body: bytes, msgpack: bool) -> DecodedBatch:
    """Decode a POST /metrics body; raises ApiError(400) when it is not ``{"records": [...]}``.

    One msgspec pass when every record is well-formed and has only contract fields; a
    second (field names only) when some carry other fields; record by record otherwise.
    A body nested deeper than msgspec decodes (``[[[...]]]``, anywhere in it) is the same
    400: msgspec raises RecursionError, which must not become a 500 with a traceback.
    """
    try:
        records, rejected, ignored = _decode_records(body, msgpack)
    except RecursionError:
        raise _malformed(msgpack, "arrays or objects nested too deeply") from None
    keep: list[int] = []
    ts: list[int] = []
    for i, rec in enumerate(records):
        if rec is None:
            continue
        epoch = _epoch(rec.timestamp)
        if epoch is None:
            rejected.append(Rejected(index=i, reason=_bad_timestamp(rec.timestamp)))
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
    return DecodedBatch(cols, np.array(keep, dtype=np.int64), rejected, sorted(ignored))


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
        # The key first (401), then the body's type (415: no cross-site "simple" POST).
        guards=[write_guard, body_type_guard(JSON_TYPE, *_MSGPACK_TYPES)],
        status_code=200,
        operation_class=_MetricsOperation,
        summary="Ingest a batch of contract records",
    )
    async def ingest(
        self, request: Request[Any, Any, Any], state: State
    ) -> Response[IngestResponse]:
        """200 with ``accepted``, per-index ``rejected`` and the ``ignored_fields`` outside the
        contract when any record was kept; 422 when none."""
        runtime = state.runtime
        content_type = (
            request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        )
        body = await request.body()
        batch = decode_metrics(body, msgpack=content_type in _MSGPACK_TYPES)
        if batch.ignored_fields:
            warnings = state.get("ignored_fields")
            if warnings is not None:
                warnings.warn(batch.ignored_fields)
        rejected = list(batch.rejected)
        if rejected and runtime.engine is not None:  # records that did not decode: invalid
            runtime.engine.count_undecodable(len(rejected))
            runtime.records_rejected += len(rejected)
        if not len(batch.columns):  # runtime.ingest counts the requests that reach it
            runtime.ingest_requests += 1
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
                    f"{write_error_cause(exc)}; nothing of the batch was stored or acknowledged",
                    "free disk space or fix the state directory (permissions, read-only mount), "
                    "then resend the batch",
                    "docs/OPERATIONS.md#state",
                ) from exc
            accepted = result.accepted
            latest = None if result.latest_step is None else iso(result.latest_step)
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
                "fix the records named in 'rejected' (each with its index and reason) and resend them"
                if rejected
                else 'send at least one record: {"records": [record, ...]}',
                _refusal_doc(rejected),
                rejected=rejected,
            )
        return Response(
            IngestResponse(
                accepted=accepted,
                rejected=rejected,
                latest_step=latest,
                ignored_fields=batch.ignored_fields,
            )
        )
