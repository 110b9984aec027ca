"""Benchmark 3, repeated: the appliance over HTTP run several times, medians and spreads.

One run of :func:`fleetbench.service.run_service` is one measurement of each figure (time to
ready, ingest rate, GET p99, peak RSS, step → forecast). In full mode the suite starts the
appliance afresh ``runs`` times; the report keeps the first run's details and adds, per
figure, the median and spread over the runs, and the targets are checked against the
medians. A GET p99 that did not count in any run (the load fell behind the rate, or error
answers: :func:`fleetbench.wrk.get_p99`) makes the target unmeasured, with that run's
reason: a median must not hide a run whose load was lighter.
"""

from __future__ import annotations

import logging
from typing import Any

from fleetbench.stats import summarize

__all__ = ["FIGURES", "run_service_repeated"]

log = logging.getLogger("fleetbench")

FIGURES: dict[str, str] = {
    "service.ready_s": "time to ready (s)",
    "service.ingest_samples_per_s": "ingest (samples/s)",
    "service.get_current_p99_ms": "GET /predictions/current p99 at 200 req/s (ms)",
    "service.rss_mb": "RSS at 1,000 servers, peak (MB)",
    "step_to_forecast_ms": "step → forecast on the WebSocket (ms)",
}
"""The figures summarised over runs: target names, and the step → forecast median."""


def _figures(run: dict[str, Any]) -> dict[str, float | None]:
    out = dict(run.get("target_values") or {})
    out["step_to_forecast_ms"] = (run.get("step_to_forecast_ms") or {}).get("median")
    return out


def run_service_repeated(runs: int, run_once: Any) -> dict[str, Any]:
    """``run_once()`` (a :func:`~fleetbench.service.run_service` call) ``runs`` times."""
    results = []
    for i in range(max(runs, 1)):
        log.info("service: run %d of %d", i + 1, max(runs, 1))
        results.append(run_once())
    first = dict(results[0])
    if len(results) == 1:
        return first
    per_run = [_figures(r) for r in results]
    repeats: dict[str, Any] = {}
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for name in FIGURES:
        got = [p.get(name) for p in per_run]
        if any(v is None for v in got):
            values[name] = None
            why = next(
                (
                    (r.get("target_notes") or {}).get(name)
                    for r in results
                    if (r.get("target_notes") or {}).get(name)
                ),
                None,
            )
            if why:
                notes[name] = f"in one of {len(results)} runs, {why}"
            repeats[name] = {"runs": got}
            continue
        summary = summarize([float(v) for v in got])
        repeats[name] = {**summary.to_dict(), "runs": got}
        values[name] = summary.median
    first["repeats"] = repeats
    first["runs"] = len(results)
    first["target_values"] = {k: v for k, v in values.items() if k.startswith("service.")}
    first["target_notes"] = notes
    return first
