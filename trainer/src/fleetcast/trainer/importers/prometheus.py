"""``fleetcast import prometheus``: a fleet's history from Prometheus as contract Parquet.

The range is read with ``query_range`` in chunks of ``chunk_hours`` (bounded responses,
bounded memory per request), with the appliance's own expressions, label mapping and
time rule (step ``k`` = the expressions at ``k * 300 + 299``; see
``fleetcast.appliance.sources.promql``), so training data and live data match.

Resumable: each finished chunk is written to ``<out>.parts/`` (Parquet, atomically, named
by its steps) next to a ``manifest.json`` of the query settings. Run the same command
again after an interruption and finished chunks are skipped; other settings are refused
(use ``--restart``). The parts are merged, validated and removed at the end.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.schema import METRIC_COLUMNS, STEP_SECONDS
from fleetcast.trainer.importers.common import (
    ImportFailure,
    ImportReport,
    RowBlock,
    compile_profile_rules,
    finish,
    write_parquet,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

__all__ = ["PrometheusImport", "import_prometheus"]

_log = logging.getLogger(__name__)
_SEE = "docs/PROMETHEUS.md#import"


def _promql() -> Any:
    try:
        from fleetcast.appliance.sources import promql
    except ImportError as exc:  # pragma: no cover - the monorepo installs both
        raise ImportFailure(
            "`fleetcast import prometheus` uses the appliance's Prometheus client "
            "(fleetcast.appliance.sources.promql), which is not installed. Why it matters: "
            "training data must be read exactly as the appliance reads live data. Fix: "
            f"pip install -e ./appliance (or fleetcast-appliance). See {_SEE}."
        ) from exc
    return promql


@dataclass
class PrometheusImport:
    """Settings of one import (also the resume manifest)."""

    url: str
    start: int
    """Epoch seconds; the first step is the first that starts at or after it."""
    end: int
    """Epoch seconds; the last step is the last that ends at or before it."""
    queries: Mapping[str, str | None] = field(default_factory=dict)
    """Overrides of the default PromQL per metric (``""`` = none)."""
    server_label: str = "instance"
    strip_port: bool = True
    profile_label: str | None = None
    profile_rules: Sequence[str] = ()
    latency_fill: float = 0.0
    chunk_hours: float = 24.0
    step: int = STEP_SECONDS
    timeout_s: float = 30.0

    def manifest(self, resolved: Mapping[str, str | None]) -> dict[str, Any]:
        """What must match for parts to be reused."""
        return {
            "url": self.url,
            "queries": dict(resolved),
            "server_label": self.server_label,
            "strip_port": self.strip_port,
            "profile_label": self.profile_label,
            "latency_fill": self.latency_fill,
            "step": self.step,
        }


def _steps(spec: PrometheusImport) -> tuple[int, int, int]:
    if spec.step != STEP_SECONDS:
        raise ImportFailure(
            f"Expected --step {STEP_SECONDS} (the contract's step), but got {spec.step}. Why it "
            "matters: a model step differs from the data step only by error, never by "
            "reinterpretation. Fix: import at --step 300. See docs/DATA_CONTRACT.md#step."
        )
    first = -(-int(spec.start) // STEP_SECONDS)
    last = int(spec.end) // STEP_SECONDS - 1
    if last < first:
        raise ImportFailure(
            f"The range {spec.start}..{spec.end} holds no complete 5-minute step. Fix: give "
            f"--end at least 5 minutes after --start. See {_SEE}."
        )
    chunk = max(1, int(spec.chunk_hours * 3600) // STEP_SECONDS)
    if chunk > 11_000:
        raise ImportFailure(
            f"--chunk-hours {spec.chunk_hours} asks for {chunk} points per series per query; "
            f"Prometheus allows 11,000. Fix: use --chunk-hours 24. See {_SEE}."
        )
    return first, last, chunk


def _write_part(path: Path, block: RowBlock, incomplete: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "timestamp": pa.array(block.timestamp, type=pa.int64()),
            "server_name": pa.array(block.server_name.astype(str).tolist(), type=pa.string()),
            **{
                m: pa.array(block.metrics[:, j], type=pa.float64())
                for j, m in enumerate(METRIC_COLUMNS)
            },
            "profile": pa.array(block.profile.tolist(), type=pa.string()),
        }
    ).replace_schema_metadata({"fleetcast.incomplete": str(int(incomplete))})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)  # the rename marks the chunk done


def _read_part(path: Path) -> tuple[RowBlock, int]:
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    incomplete = int((t.schema.metadata or {}).get(b"fleetcast.incomplete", b"0"))
    metrics = np.column_stack(
        [t.column(m).to_numpy(zero_copy_only=False) for m in METRIC_COLUMNS]
    ).reshape(-1, 4)
    block = RowBlock(
        t.column("timestamp").to_numpy(),
        np.array(t.column("server_name").to_pylist(), dtype=object),
        metrics.astype(np.float64),
        np.array(t.column("profile").to_pylist(), dtype=object),
    )
    return block, incomplete


def _parts_dir(out: Path, manifest: dict[str, Any], restart: bool) -> Path:
    parts = out.with_name(out.name + ".parts")
    if restart and parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    path = parts / "manifest.json"
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != manifest:
            changed = sorted(k for k in manifest if saved.get(k) != manifest[k])
            raise ImportFailure(
                f"{parts} holds chunks of an import with other settings ({', '.join(changed)}). "
                "Why it matters: mixing them would train on inconsistent data. Fix: repeat the "
                f"earlier command to resume it, or add --restart to start over. See {_SEE}."
            )
    else:
        path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return parts


def import_prometheus(
    spec: PrometheusImport,
    out: Path,
    restart: bool = False,
    client: Any = None,
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    """Run the import; write ``out`` (+ ``<out stem>.metadata.json``); return the report.

    Raises ImportFailure for bad settings and when Prometheus fails (finished chunks
    stay in ``<out>.parts/`` for the next run).
    """
    promql = _promql()
    try:
        queries = promql.resolve_queries(spec.queries)
    except ValueError as exc:
        raise ImportFailure(str(exc)) from exc
    rules = compile_profile_rules(spec.profile_rules)
    first, last, chunk = _steps(spec)
    mapping = promql.LabelMapping(
        server_label=spec.server_label,
        strip_port=spec.strip_port,
        profile_label=spec.profile_label,
    )
    try:
        client = client or promql.PromClient(spec.url, spec.timeout_s)
    except ValueError as exc:
        raise ImportFailure(str(exc)) from exc
    parts = _parts_dir(out, spec.manifest(queries), restart)
    report = ImportReport(
        source={
            "kind": "prometheus",
            "url": spec.url,
            "queries": queries,
            "server_label": spec.server_label,
            "profile_label": spec.profile_label,
            "profile_rules": list(spec.profile_rules),
            "latency_fill": spec.latency_fill,
            "eval_offset_s": promql.EVAL_OFFSET,
        }
    )
    began = time.perf_counter()
    n_chunks = -(-(last - first + 1) // chunk)
    for i, a in enumerate(range(first, last + 1, chunk)):
        b = min(a + chunk - 1, last)
        path = parts / f"steps-{a}-{b}.parquet"
        if path.exists():
            continue
        results = {}
        for metric, expr in queries.items():
            if not expr:
                continue
            try:
                results[metric] = client.query_range(
                    expr, promql.eval_time(a), promql.eval_time(b), STEP_SECONDS
                )
            except promql.PromError as exc:
                raise ImportFailure(
                    f"{exc} ({i} of {n_chunks} chunks done; run the same command again to resume)",
                    exit_code=1,
                ) from exc
        samples = promql.assemble(results, mapping, spec.latency_fill)
        block = RowBlock(
            samples.times.astype(np.int64) - promql.EVAL_OFFSET,
            np.array(samples.server, dtype=object),
            samples.metrics,
            np.array(samples.profile, dtype=object),
        )
        _write_part(path, block, samples.incomplete)
        if progress is not None:
            progress(
                f"chunk {i + 1}/{n_chunks}: {len(block)} samples, {len(samples.servers_seen)} servers"
            )
    read = [_read_part(p) for p in sorted(parts.glob("steps-*.parquet"))]
    block = RowBlock.concat([b for b, _ in read])
    report.read = len(block)
    incomplete = sum(n for _, n in read)
    if incomplete:
        report.dropped["a required metric (cpu, mem or disk) had no value (gap)"] = incomplete
    table = finish(block, rules, report)
    write_parquet(table, out, report)
    shutil.rmtree(parts)
    _log.info("imported %d rows in %.1f s", report.rows, time.perf_counter() - began)
    return report
