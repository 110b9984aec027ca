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
import math
import shutil
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.errors import explain
from fleetcast.contract.schema import METRIC_COLUMNS, STEP_SECONDS
from fleetcast.trainer.importers.common import (
    ImportFailure,
    ImportReport,
    RowBlock,
    check_latency_fill,
    compile_profile_rules,
    finish,
    write_parquet,
)
from fleetcast.trainer.importers.paths import atomic_write, check_out

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

__all__ = ["PrometheusImport", "check_settings", "import_prometheus"]

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
    coverage: str | None = None
    """PromQL naming series that did not cover a step (those steps become gaps); None = the
    appliance's default (``DEFAULT_COVERAGE``), ``""`` = no check."""
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
            "coverage": self.coverage,
            "step": self.step,
        }


def _g(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float) else repr(value)


def check_settings(spec: PrometheusImport) -> None:
    """Refuse settings that cannot work before anything is read or written (ImportFailure)."""
    parsed = urllib.parse.urlsplit(str(spec.url))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ImportFailure(
            explain(
                f"--url {spec.url!r} is not a Prometheus URL like http://host:9090 "
                "(http or https, a host, optionally a path prefix).",
                "the import reads the fleet's history from Prometheus' HTTP API at that URL.",
                "Pass --url http://HOST:9090 (the address of Prometheus itself, not of an "
                "exporter).",
                _SEE,
            )
        )
    timeout = spec.timeout_s
    if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise ImportFailure(
            explain(
                f"--timeout {_g(timeout)} is not a positive number of seconds.",
                "every query_range waits at most this long for Prometheus; zero or less "
                "cannot wait at all.",
                "Pass --timeout 30 (the default) or more for a slow Prometheus.",
                _SEE,
            )
        )
    hours = spec.chunk_hours
    if (
        not isinstance(hours, int | float)
        or not math.isfinite(hours)
        or hours * 3600 < STEP_SECONDS
    ):
        raise ImportFailure(
            explain(
                f"--chunk-hours {_g(hours)} is not a chunk length: expected hours >= "
                f"{STEP_SECONDS / 3600:.4g} (one {STEP_SECONDS // 60}-minute step).",
                "the range is read in query_range chunks of this length; a chunk must hold "
                "at least one step.",
                "Pass --chunk-hours 24 (the default; 288 points per series).",
                _SEE,
            )
        )
    check_latency_fill(spec.latency_fill)


def _source_failure(
    exc: Any, spec: PrometheusImport, metric: str, expr: str, done: int, total: int, parts: Path
) -> ImportFailure:
    """The import's own words for a failed query_range (the client's speak of the appliance)."""
    detail = getattr(exc, "detail", "") or str(exc)
    if done:
        why = (
            "the import cannot read the history it was asked for "
            f"({done} of {total} chunks done; they are kept in {parts} and skipped when the "
            "same command runs again)."
        )
        again = "then run the same command again to resume"
    else:
        why = (
            f"the import cannot read the history it was asked for (0 of {total} chunks done; "
            "nothing was written)."
        )
        again = "then run the command again"
    see = _SEE
    if exc.kind == "unreachable":
        what = f"Cannot reach Prometheus at {spec.url} ({detail})."
        fix = f"Start Prometheus or correct --url (http://HOST:9090), {again}."
    elif exc.kind == "timeout":
        what = (
            f"Prometheus at {spec.url} did not answer the {metric} query_range within "
            f"--timeout {spec.timeout_s:g} s."
        )
        fix = f"Raise --timeout or lower --chunk-hours (now {spec.chunk_hours:g}), {again}."
    elif exc.kind == "http":
        what = f"Prometheus at {spec.url} answered {detail} to the {metric} query_range."
        fix = (
            "Check that --url is Prometheus itself (not an exporter or a login proxy) and that "
            f"it is healthy, {again}."
        )
    elif exc.kind == "bad_query" and metric == "coverage":
        what = f"Prometheus refused the coverage check {expr!r} ({detail})."
        fix = (
            "Correct it with --coverage PROMQL, or pass --coverage '' to import without "
            f"the check, {again}."
        )
        see = "docs/PROMETHEUS.md#partial-steps"
    elif exc.kind == "bad_query":
        what = f"Prometheus refused the {metric} expression {expr!r} ({detail})."
        fix = (
            f"Correct it with --query {metric}=PROMQL (try it in Prometheus' graph page first), "
            f"{again}."
        )
        see = "docs/PROMETHEUS.md#queries"
    else:
        what = (
            f"The answer of {spec.url} to the {metric} query_range is not Prometheus API JSON "
            f"({detail})."
        )
        fix = (
            "Point --url at Prometheus itself (http://HOST:9090), not at an exporter or a "
            f"proxy login page, {again}."
        )
    return ImportFailure(explain(what, why, fix, see), exit_code=1)


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
    chunk = int(spec.chunk_hours * 3600) // STEP_SECONDS  # >= 1: check_settings
    if chunk > 11_000:
        raise ImportFailure(
            f"--chunk-hours {spec.chunk_hours} asks for {chunk} points per series per query; "
            f"Prometheus allows 11,000. Fix: use --chunk-hours 24. See {_SEE}."
        )
    return first, last, chunk


def _write_part(path: Path, block: RowBlock, incomplete: int, partial: int) -> None:
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
    ).replace_schema_metadata(
        {"fleetcast.incomplete": str(int(incomplete)), "fleetcast.partial": str(int(partial))}
    )
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))  # the rename marks it done


def _read_part(path: Path) -> tuple[RowBlock, int, int]:
    """A finished chunk: its rows, and the (server, step) pairs it left as gaps because a
    required metric had no value, and because the coverage check named them."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    meta = t.schema.metadata or {}
    incomplete = int(meta.get(b"fleetcast.incomplete", b"0"))
    partial = int(meta.get(b"fleetcast.partial", b"0"))
    metrics = np.column_stack(
        [t.column(m).to_numpy(zero_copy_only=False) for m in METRIC_COLUMNS]
    ).reshape(-1, 4)
    block = RowBlock(
        t.column("timestamp").to_numpy(),
        np.array(t.column("server_name").to_pylist(), dtype=object),
        metrics.astype(np.float64),
        np.array(t.column("profile").to_pylist(), dtype=object),
    )
    return block, incomplete, partial


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet (deepest first)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_created(parts: Path, created: list[Path]) -> None:
    """Remove the parts folder (manifest only) and the empty folders this run created."""
    if parts in created:
        shutil.rmtree(parts, ignore_errors=True)
    for folder in created[1:]:
        try:
            folder.rmdir()
        except OSError:
            break


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
    check_settings(spec)
    promql = _promql()
    try:
        queries = promql.resolve_queries(spec.queries)
    except ValueError as exc:
        raise ImportFailure(str(exc)) from exc
    coverage = promql.resolve_coverage(spec.coverage)
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
    check_out(out, _SEE)
    created = _missing_dirs(out.with_name(out.name + ".parts"))
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
            "coverage": coverage,
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
        exprs = [(m, e) for m, e in queries.items() if e]
        if coverage:
            exprs.append(("coverage", coverage))
        for metric, expr in exprs:
            try:
                results[metric] = client.query_range(
                    expr, promql.eval_time(a), promql.eval_time(b), STEP_SECONDS
                )
            except promql.PromError as exc:
                done = len(list(parts.glob("steps-*.parquet")))
                if not done:  # nothing to resume: leave no folder behind
                    _remove_created(parts, created)
                raise _source_failure(exc, spec, metric, expr, done, n_chunks, parts) from exc
        checked = results.pop("coverage", ())
        samples = promql.assemble(results, mapping, spec.latency_fill, coverage=checked)
        block = RowBlock(
            samples.times.astype(np.int64) - promql.EVAL_OFFSET,
            np.array(samples.server, dtype=object),
            samples.metrics,
            np.array(samples.profile, dtype=object),
        )
        _write_part(path, block, samples.incomplete, samples.partial)
        if progress is not None:
            progress(
                f"chunk {i + 1}/{n_chunks}: {len(block)} samples, {len(samples.servers_seen)} servers"
            )
    read = [_read_part(p) for p in sorted(parts.glob("steps-*.parquet"))]
    block = RowBlock.concat([b for b, _, _ in read])
    report.read = len(block)
    incomplete = sum(n for _, n, _ in read)
    if incomplete:
        report.dropped["a required metric (cpu, mem or disk) had no value (gap)"] = incomplete
    partial = sum(n for _, _, n in read)
    if partial:
        report.dropped[
            "the server's series did not cover the whole step, so a rate over it would be "
            "wrong (gap; docs/PROMETHEUS.md#partial-steps)"
        ] = partial
    table = finish(block, rules, report)
    write_parquet(table, out, report)
    shutil.rmtree(parts)
    _log.info("imported %d rows in %.1f s", report.rows, time.perf_counter() - began)
    return report
