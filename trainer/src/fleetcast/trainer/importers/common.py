"""Turning imported rows into a contract-valid Parquet file (shared by every importer).

Rows arrive as numpy columns (``timestamp`` epoch seconds, ``server_name``, the four
metrics, ``profile`` or None). This module buckets them to the 5-minute step (the last
sample of a server in a step wins, as in the appliance), fills the profile (rule or name,
docs/DATA_CONTRACT.md#profiles) and keeps it stable per server, drops rows that break the
contract *with their reasons counted* (never silently), leaves missing steps missing
(gaps stay gaps; state is null = unknown), writes the Parquet atomically with
``fleetcast.contract.schema.arrow_schema()`` and validates the result with
``DataValidator``. pyarrow + numpy only (no pandas, no torch).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.encoder import (
    MAPPING_FILE,
    ServerEncoder,
    parse_profile_rules,
    profile_from_name,
)
from fleetcast.contract.errors import ContractError, explain
from fleetcast.contract.records import validate_columns
from fleetcast.contract.schema import (
    CONTRACT_VERSION,
    METRIC_COLUMNS,
    METRIC_RANGES,
    STEP_SECONDS,
    VALID_PROFILES,
    arrow_schema,
)
from fleetcast.trainer.importers.paths import atomic_write

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    import pyarrow as pa

__all__ = [
    "ImportFailure",
    "ImportReport",
    "RowBlock",
    "bucket_last",
    "check_latency_fill",
    "compile_profile_rules",
    "count_gaps",
    "drop_invalid",
    "fill_profiles",
    "finish",
    "parse_time",
    "to_table",
    "write_parquet",
]

_SEE = "docs/PROMETHEUS.md#import"


class ImportFailure(ValueError):
    """An import cannot proceed; the message says what, why, how to fix, where.

    ``exit_code``: 2 for bad arguments or input (the default), 1 when the source failed.
    ``report``: the import's report so far, when the failure came after reading (the CLI
    prints its dropped-row reasons before the message).
    """

    def __init__(
        self, message: str, exit_code: int = 2, report: ImportReport | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.report = report


@dataclass
class RowBlock:
    """Rows as columns: ``timestamp`` int64 epoch seconds (n,), ``server_name`` object (n,),
    ``metrics`` float64 (n, 4) in contract order, ``profile`` object (n,) (None = derive)."""

    timestamp: np.ndarray
    server_name: np.ndarray
    metrics: np.ndarray
    profile: np.ndarray

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    def take(self, index: np.ndarray) -> RowBlock:
        """The rows at ``index``."""
        return RowBlock(
            self.timestamp[index], self.server_name[index], self.metrics[index], self.profile[index]
        )

    @staticmethod
    def concat(blocks: Sequence[RowBlock]) -> RowBlock:
        """All ``blocks`` in order."""
        if not blocks:
            return RowBlock(
                np.zeros(0, np.int64), np.zeros(0, object), np.zeros((0, 4)), np.zeros(0, object)
            )
        return RowBlock(
            np.concatenate([b.timestamp for b in blocks]),
            np.concatenate([b.server_name for b in blocks]),
            np.concatenate([b.metrics for b in blocks]),
            np.concatenate([b.profile for b in blocks]),
        )


@dataclass
class ImportReport:
    """What an import did (printed by the CLI, written beside the Parquet as JSON)."""

    source: dict[str, Any]
    rows: int = 0
    servers: int = 0
    start: str | None = None
    end: str | None = None
    read: int = 0
    """Samples read from the source."""
    superseded: int = 0
    """Samples replaced by a later one of the same server and step."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Rows left out, by reason (contract violations, missing required metrics)."""
    gaps: int = 0
    """Missing (server, step) pairs inside each server's span (kept as gaps)."""
    profile_counts: dict[str, int] = field(default_factory=dict)
    profile_changes: list[str] = field(default_factory=list)
    """Servers whose source gave several profiles (the first one is kept)."""
    valid: bool | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mapping_file: str | None = None
    """The ``server_mapping.json`` written beside the Parquet (docs/DATA_CONTRACT.md#server-ids)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``<out>.metadata.json``)."""
        return {
            "contract_version": CONTRACT_VERSION,
            "step_seconds": STEP_SECONDS,
            "source": self.source,
            "rows": self.rows,
            "servers": self.servers,
            "start": self.start,
            "end": self.end,
            "row_order": ["server_name", "timestamp"],
            "samples_read": self.read,
            "samples_superseded": self.superseded,
            "rows_dropped": dict(self.dropped),
            "missing_steps": self.gaps,
            "profile_counts": self.profile_counts,
            "profile_changes": self.profile_changes,
            "state_counts": {"null": self.rows},
            "server_mapping": self.mapping_file,
            "valid": self.valid,
            "errors": self.errors,
            "warnings": self.warnings,
            "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def dropped_lines(self) -> list[str]:
        """One line per reason rows were left out, the most frequent first."""
        return [f"dropped {n:,} rows: {reason}" for reason, n in self.dropped.most_common()]

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{self.rows:,} rows, {self.servers} servers, {self.start} .. {self.end}",
            f"samples read {self.read:,}, superseded in-step {self.superseded:,}, "
            f"missing steps kept as gaps {self.gaps:,}",
        ]
        lines += self.dropped_lines()
        if self.mapping_file:
            lines.append(f"server mapping: {self.mapping_file}")
        for change in self.profile_changes[:5]:
            lines.append(f"profile changed: {change}")
        lines.append(f"profiles: {self.profile_counts}")
        if self.valid is not None:
            lines.append(
                "contract validation: "
                + ("valid" if self.valid else f"INVALID ({len(self.errors)} errors)")
                + (f", {len(self.warnings)} warnings" if self.warnings else "")
            )
        return "\n".join(lines)


def check_latency_fill(value: float | None, see: str = _SEE) -> float | None:
    """``--latency-fill`` if it is a valid latency (finite, >= 0 ms), else ImportFailure.

    Checked before anything is read: a fill the contract refuses would drop every filled
    row (docs/DATA_CONTRACT.md#latency_ms).
    """
    if value is None:
        return None
    low, high = METRIC_RANGES["latency_ms"]
    if not math.isfinite(value) or not low <= value <= high:
        raise ImportFailure(
            explain(
                f"--latency-fill {value:g} is not a latency: expected a finite number of "
                f"milliseconds >= {low:g}.",
                "every row whose latency is filled would break the contract's latency_ms "
                "range and be dropped, leaving nothing (or only part of the fleet) to train on.",
                "Pass --latency-fill 0 (or the fleet's typical latency in ms), or give a "
                "latency_ms expression / column.",
                see,
            )
        )
    return float(value)


def compile_profile_rules(rules: Iterable[str]) -> list[tuple[re.Pattern[str], str]]:
    """``"REGEX=PROFILE"`` strings (matched on the server name, first wins), compiled."""
    try:
        return list(parse_profile_rules(rules))
    except ValueError as exc:
        raise ImportFailure(
            f"{exc} Why it matters: the profile conditions the model. See {_SEE}."
        ) from exc


def bucket_last(block: RowBlock, report: ImportReport) -> RowBlock:
    """Floor timestamps to the step and keep the last sample per (server, step)."""
    if not len(block):
        return block
    step = block.timestamp // STEP_SECONDS
    names, inv = np.unique(block.server_name.astype(str), return_inverse=True)
    order = np.lexsort((block.timestamp, step, inv))  # by server, step, then time
    inv_o, step_o = inv[order], step[order]
    last = np.ones(order.shape[0], dtype=bool)
    last[:-1] = (inv_o[1:] != inv_o[:-1]) | (step_o[1:] != step_o[:-1])
    report.superseded += int(np.count_nonzero(~last))
    keep = order[last]
    out = block.take(keep)
    out.timestamp = step[keep] * STEP_SECONDS
    out.server_name = names[inv[keep]].astype(object)
    return out


def fill_profiles(
    block: RowBlock, rules: Sequence[tuple[re.Pattern[str], str]], report: ImportReport
) -> RowBlock:
    """Profile per row: the source's (valid) value, else a rule, else the name; then one
    profile per server (its first row's, in time order), changes reported."""
    names = block.server_name.astype(str)
    uniq, inv = np.unique(names, return_inverse=True)
    fallback = []
    for name in uniq.tolist():
        chosen = next((p for rx, p in rules if rx.search(name)), None)
        fallback.append(chosen or profile_from_name(name))
    given = block.profile
    prof = np.array(
        [p if isinstance(p, str) and p in VALID_PROFILES else None for p in given.tolist()],
        dtype=object,
    )
    bad = [p for p in given.tolist() if p not in (None, "") and p not in VALID_PROFILES]
    if bad:
        report.warnings.append(
            f"{len(bad)} rows had a profile value that is not a contract profile "
            f"(e.g. {bad[0]!r}); the rule or name was used instead. See docs/DATA_CONTRACT.md#profiles."
        )
    missing = np.array([p is None for p in prof.tolist()], dtype=bool)
    fb = np.array(fallback, dtype=object)
    prof[missing] = fb[inv[missing]]
    order = np.lexsort((block.timestamp, inv))
    first = np.full(len(uniq), -1, dtype=np.int64)
    first[inv[order][::-1]] = order[::-1]
    stable = prof[first][inv]
    changed = np.flatnonzero(stable != prof)
    if changed.size:
        for s in np.unique(inv[changed])[:20].tolist():
            others = sorted(set(prof[inv == s].tolist()) - {stable[first[s]]})
            report.profile_changes.append(
                f"{uniq[s]}: kept {prof[first[s]]!r}, ignored {others} (docs/DATA_CONTRACT.md#stable-profile)"
            )
    block.profile = stable
    return block


_NO_NUMBER = "no number: an empty cell, NaN, or text such as n/a"


def drop_invalid(block: RowBlock, report: ImportReport) -> RowBlock:
    """Drop rows that break the record rules (ranges, finiteness, names); count reasons."""
    if not len(block):
        return block
    cols = {"server_name": block.server_name, "timestamp": block.timestamp}
    for j, m in enumerate(METRIC_COLUMNS):
        cols[m] = block.metrics[:, j]
    ok, reasons = validate_columns(cols)
    for reason in reasons.values():
        reason = re.sub(r"=[^ ]+", "=…", reason.split(";")[0])
        # A value that was never a number reaches the check as NaN: name what it was.
        reason = reason.replace("(got nan)", f"(got {_NO_NUMBER})")
        report.dropped[reason] += 1
    return block.take(np.flatnonzero(ok))


def count_gaps(block: RowBlock) -> int:
    """Missing steps inside each server's first..last step."""
    if not len(block):
        return 0
    names, inv = np.unique(block.server_name.astype(str), return_inverse=True)
    step = block.timestamp // STEP_SECONDS
    lo = np.full(len(names), np.iinfo(np.int64).max)
    hi = np.full(len(names), np.iinfo(np.int64).min)
    np.minimum.at(lo, inv, step)
    np.maximum.at(hi, inv, step)
    counts = np.bincount(inv, minlength=len(names))
    return int(np.sum(hi - lo + 1 - counts))


def to_table(block: RowBlock) -> pa.Table:
    """The contract table (rows ordered server, then time; state null)."""
    import pyarrow as pa

    names = block.server_name.astype(str)
    order = np.lexsort((block.timestamp, names))
    b = block.take(order)
    ts_us = b.timestamp.astype(np.int64) * 1_000_000
    arrays = [
        pa.array(ts_us, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        pa.array(b.server_name.astype(str).tolist(), type=pa.string()),
        *[pa.array(b.metrics[:, j].astype(np.float32), type=pa.float32()) for j in range(4)],
        pa.nulls(len(b), type=pa.string()),
        pa.array(b.profile.astype(str).tolist(), type=pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=arrow_schema())


def finish(
    block: RowBlock, rules: Sequence[tuple[re.Pattern[str], str]], report: ImportReport
) -> pa.Table:
    """Validate samples, bucket them, fill profiles; fill the report's counts; the table."""
    block = drop_invalid(block, report)  # as the appliance: check each sample, then bucket
    block = bucket_last(block, report)
    block = fill_profiles(block, rules, report)
    report.gaps = count_gaps(block)
    table = to_table(block)
    report.rows = table.num_rows
    report.servers = len(np.unique(block.server_name.astype(str))) if len(block) else 0
    if len(block):
        report.start = _iso(int(block.timestamp.min()))
        report.end = _iso(int(block.timestamp.max()))
        _, first = np.unique(block.server_name.astype(str), return_index=True)
        report.profile_counts = dict(Counter(block.profile[first].tolist()))  # servers per profile
    return table


def _no_rows(report: ImportReport, see: str) -> ImportFailure:
    if report.dropped:
        reasons = len(report.dropped)
        what = (
            f"The import produced no rows: all {report.read:,} samples read were dropped, "
            f"for the {reasons} reason{'s' if reasons > 1 else ''} listed above."
        )
        fix = (
            "Correct what the dropped-row reasons above name (the queries or column mapping, "
            "unit factors, --latency-fill), then run the import again."
        )
    else:
        what = f"The import produced no rows: the source gave no sample ({report.read:,} read)."
        fix = (
            "Check the time range (--start/--end), the queries or column mapping and the "
            "server label, then run the import again."
        )
    return ImportFailure(
        explain(what, "there is nothing to train on; no Parquet file was written.", fix, see),
        report=report,
    )


def _mapping(table: pa.Table, out: Path, report: ImportReport) -> ServerEncoder:
    """The ServerEncoder of the table's servers, merged with a mapping already beside ``out``.

    The IDs are a hash of the name, so one mapping serves every data set of the folder
    (``fleetcast generate``'s too). A collision is an ImportFailure (nothing written yet).
    """
    import pyarrow.compute as pc

    names = sorted(str(n) for n in pc.unique(table.column("server_name")).to_pylist())
    try:
        encoder = ServerEncoder(names)
    except ContractError as exc:
        raise ImportFailure(str(exc)) from exc
    existing = out.parent / MAPPING_FILE
    if existing.exists():
        try:
            kept = ServerEncoder.load(existing)
            kept.fit(names)
        except ContractError as exc:
            raise ImportFailure(str(exc)) from exc
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ImportFailure(
                explain(
                    f"{existing} is there but cannot be read as a server mapping "
                    f"({type(exc).__name__}: {exc}).",
                    "the import merges its servers into the folder's mapping and will not "
                    "overwrite a file it cannot read; no Parquet file was written.",
                    f"Repair or move {existing} away, or pass --out in another folder.",
                    "docs/DATA_CONTRACT.md#server-ids",
                )
            ) from exc
        encoder = kept
    return encoder


def write_parquet(table: pa.Table, out: Path, report: ImportReport, see: str = _SEE) -> Path:
    """Write ``table`` atomically, validate it (strict), write ``<out stem>.metadata.json``
    and ``server_mapping.json`` beside it (docs/DATA_CONTRACT.md#server-ids); a failed
    write leaves no ``.tmp`` file behind."""
    import pyarrow.parquet as pq

    from fleetcast.contract.validate import DataValidator

    if table.num_rows == 0:
        raise _no_rows(report, see)
    encoder = _mapping(table, out, report)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: pq.write_table(table, tmp, compression="snappy"))
    mapping = out.parent / MAPPING_FILE
    atomic_write(mapping, encoder.save)
    report.mapping_file = str(mapping)
    result = DataValidator(strict=True).validate(out)
    report.valid = result.is_valid
    report.errors = list(result.errors)
    report.warnings = report.warnings + list(result.warnings)
    meta = out.with_name(out.stem + ".metadata.json")
    meta.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return out


def _iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, flag: str = "--start/--end", see: str = _SEE) -> int:
    """Epoch seconds of ``text``: epoch seconds, or ISO 8601 with ``Z`` or an offset.

    A time without a zone is refused, as the contract refuses it
    (docs/DATA_CONTRACT.md#timestamp). ``flag`` names the option in messages.
    """
    raw = str(text).strip()
    try:
        number = float(raw)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number):
            raise ImportFailure(
                explain(
                    f"{flag} {text!r} is not a time.",
                    "the import reads the steps between --start and --end.",
                    "Pass ISO 8601 with a zone (2026-11-01T00:00:00Z) or epoch seconds.",
                    see,
                )
            )
        return int(number)
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ImportFailure(
            f"Expected a time like 2026-11-01T00:00:00Z or epoch seconds, but got {text!r} "
            f"for {flag}. Why it matters: the import reads the steps between --start and "
            f"--end. Fix: pass {flag} in ISO 8601 UTC. See {see}."
        ) from exc
    if dt.tzinfo is None:
        raise ImportFailure(
            explain(
                f"{flag} {text!r} has no time zone.",
                "the data contract stores UTC instants and refuses a time without a zone: it "
                "could be any local time, and every step would shift.",
                f"Add the zone, e.g. {raw}Z for UTC (or an offset such as +01:00), or pass "
                "epoch seconds.",
                see,
            )
        )
    return int(dt.timestamp())
