"""From PromQL results to contract records: server names, profiles, and which steps count.

Shared, like :mod:`fleetcast.appliance.sources.promql`, by the appliance's Prometheus
source and the trainer's importer. Standard library + numpy only.

**Partial steps** (docs/PROMETHEUS.md#partial-steps). ``rate(x[5m])`` over a window that
its series covers only in part is not a gap but a wrong number: Prometheus divides what
the samples it has rose by the whole five minutes. A server whose node_exporter series
start mid-step (a new target, changed target labels) reads cpu_pct 55 where the truth is
10. The *coverage* expression names the series whose scrapes did not cover the step; the
(server, step) pairs it names become gaps (:func:`assemble`), like a missing metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract.schema import METRIC_COLUMNS, VALID_PROFILES

if TYPE_CHECKING:
    import re
    from collections.abc import Mapping, Sequence

    from fleetcast.appliance.sources.promql import Series

__all__ = [
    "DEFAULT_COVERAGE",
    "REQUIRED_METRICS",
    "LabelMapping",
    "Samples",
    "assemble",
    "resolve_coverage",
]

REQUIRED_METRICS: tuple[str, ...] = ("cpu_pct", "mem_pct", "disk_io_mb_s")
"""A server/step without one of these is a gap (no record); latency may be filled."""

DEFAULT_COVERAGE = (
    "(up unless up offset 299s)"
    " or count_over_time(up[5m]) < 0.9 * count_over_time(up[5m] offset 5m)"
    " or (time() - timestamp(up)) * count_over_time(up[5m]) > 600"
    " or (min_over_time(up[5m]) == 0 and max_over_time(up[5m]) == 1)"
)
"""Scrape targets whose last five minutes are not fully covered, by their ``up`` series:
a series that did not exist five minutes before (a new target, or its labels changed);
fewer scrapes than in the five minutes before (Prometheus or the scrape was down for part
of it); a newest scrape older than two scrape intervals (scrapes stopped near the end); or
a target that went down or came back within them (its failed scrapes still write ``up``
0). A target down throughout (e.g. another exporter of the host that never answers) has
no metrics to bias, and naming it would drop every step of its host.
Any result names its server's step partial; an empty result is a fully covered fleet."""

_PERCENT_SLACK = 1.0
"""Percentages in [-1, 101] are clamped to [0, 100] (rate arithmetic rounds); beyond that
the value is passed on and the contract check rejects it with its reason."""


def resolve_coverage(expr: str | None) -> str | None:
    """The coverage expression: None = :data:`DEFAULT_COVERAGE`, ``""`` = no check."""
    if expr is None:
        return DEFAULT_COVERAGE
    return expr.strip() or None


@dataclass(frozen=True)
class LabelMapping:
    """How a series' labels become a server name and (optionally) a profile."""

    server_label: str = "instance"
    """Label holding the server; node_exporter's targets are ``instance="host:9100"``."""
    strip_port: bool = True
    """Cut a trailing ``:port`` (``host:9100`` → ``host``, ``[::1]:9100`` → ``::1``)."""
    profile_label: str | None = None
    """Optional label holding a contract profile (e.g. ``fleetcast_profile="database"``)."""
    profile_rules: tuple[tuple[re.Pattern[str], str], ...] = ()
    """``(regex, profile)`` tried on the server name when the label gives none."""

    def server(self, labels: Mapping[str, str]) -> str | None:
        """The server name of a series, or None when it lacks the label."""
        name = labels.get(self.server_label)
        if not name:
            return None
        if self.strip_port:
            if name.startswith("[") and "]" in name:
                return name[1 : name.index("]")]
            head, sep, tail = name.rpartition(":")
            if sep and tail.isdigit() and head and ":" not in head:
                return head
        return name

    def profile(self, server: str, labels: Mapping[str, str]) -> str | None:
        """Profile from the label, else the first matching rule, else None (= from the name)."""
        if self.profile_label:
            value = labels.get(self.profile_label, "").strip()
            if value in VALID_PROFILES:
                return value
        for pattern, profile in self.profile_rules:
            if pattern.search(server):
                return profile
        return None


@dataclass
class Samples:
    """Records assembled from the four metrics' results, one per (server, time).

    ``times`` int64 (n,) evaluation times; ``metrics`` float64 (n, 4) in contract order;
    ``server``/``profile`` (n,). Counters say what was left out and why.
    """

    times: np.ndarray
    metrics: np.ndarray
    server: list[str]
    profile: list[str | None]
    incomplete: int = 0
    """(server, time) pairs dropped because a required metric had no value (gaps)."""
    unlabelled: int = 0
    """Series without the server label (ignored)."""
    unlabelled_by_metric: dict[str, int] = field(default_factory=dict)
    """``unlabelled`` per metric (only metrics with such series)."""
    duplicates: int = 0
    """Extra series for the same server and metric (averaged)."""
    clamped: int = 0
    """Percentages within 1 point outside [0, 100], clamped."""
    filled_latency: int = 0
    """Records whose latency was filled (no expression, or no value)."""
    partial: int = 0
    """(server, time) pairs dropped because the coverage expression named them (gaps)."""
    partial_example: tuple[str, int] | None = None
    """One of them, (server, evaluation time), for a log line."""
    servers_seen: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.server)


def assemble(
    results: Mapping[str, Sequence[Series]],
    mapping: LabelMapping,
    latency_fill: float = 0.0,
    coverage: Sequence[Series] = (),
) -> Samples:
    """Join per-metric results into records keyed by (server, evaluation time).

    ``results`` maps each metric to its series (a metric without an expression may be
    absent). Rows are ordered by time, then server name. Non-finite values count as
    missing; a missing required metric makes the (server, time) a gap; a missing latency is
    ``latency_fill``. Several series for one server and metric are averaged. ``coverage``:
    the coverage expression's series (:data:`DEFAULT_COVERAGE`); each (server, time) they
    hold a value at is a partial step, a gap too.
    """
    names: dict[str, int] = {}
    profiles: dict[str, str | None] = {}
    unlabelled = 0
    by_metric: dict[str, int] = {}
    per_metric: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    for j, metric in enumerate(METRIC_COLUMNS):
        for s in results.get(metric, ()):
            name = mapping.server(s.labels)
            if name is None:
                unlabelled += 1
                by_metric[metric] = by_metric.get(metric, 0) + 1
                continue
            idx = names.setdefault(name, len(names))
            prof = mapping.profile(name, s.labels)
            if prof is not None or name not in profiles:
                profiles[name] = prof if prof is not None else profiles.get(name)
            per_metric.append((j, np.full(s.times.shape, idx, dtype=np.int64), s.times, s.values))
    empty = Samples(
        np.zeros(0, np.int64),
        np.zeros((0, 4)),
        [],
        [],
        unlabelled=unlabelled,
        unlabelled_by_metric=by_metric,
    )
    if not per_metric:
        return empty
    all_t = np.concatenate([t for _, _, t, _ in per_metric])
    t_round = np.floor(all_t + 1e-6).astype(np.int64)  # never round into the next step
    uniq_t, t_inv = np.unique(t_round, return_inverse=True)
    n_srv, n_t = len(names), len(uniq_t)
    sums = np.zeros((n_srv * n_t, 4), dtype=np.float64)
    counts = np.zeros((n_srv * n_t, 4), dtype=np.int64)
    offset = 0
    for j, srv, t, v in per_metric:
        k = t.shape[0]
        key = srv * n_t + t_inv[offset : offset + k]
        offset += k
        good = np.isfinite(v)
        np.add.at(sums[:, j], key[good], v[good])
        np.add.at(counts[:, j], key[good], 1)
    duplicates = int(np.count_nonzero(counts > 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = sums / counts  # NaN where no value
    present = counts > 0
    any_value = present.any(axis=1)
    required = [METRIC_COLUMNS.index(m) for m in REQUIRED_METRICS]
    complete = present[:, required].all(axis=1)
    incomplete = int(np.count_nonzero(any_value & ~complete))
    partial_rows = _partial_rows(coverage, mapping, names, uniq_t)
    partial_rows = partial_rows[complete[partial_rows]]
    complete[partial_rows] = False
    order_names = sorted(names, key=names.__getitem__)  # by index
    partial_example = None
    if partial_rows.size:
        first = int(partial_rows[0])
        partial_example = (order_names[first // n_t], int(uniq_t[first % n_t]))
    lat = METRIC_COLUMNS.index("latency_ms")
    keep = np.flatnonzero(complete)
    fill = keep[~present[keep, lat]]
    values[fill, lat] = float(latency_fill)
    clamped = 0
    for m in ("cpu_pct", "mem_pct"):
        col = values[keep, METRIC_COLUMNS.index(m)]
        slack = ((col < 0) & (col >= -_PERCENT_SLACK)) | (
            (col > 100) & (col <= 100 + _PERCENT_SLACK)
        )
        clamped += int(np.count_nonzero(slack))
        values[keep[slack], METRIC_COLUMNS.index(m)] = np.clip(col[slack], 0.0, 100.0)
    # Order by time, then server name.
    srv_of = keep // n_t
    t_of = keep % n_t
    name_rank = np.argsort(np.argsort(np.array(order_names, dtype=object)))
    order = np.lexsort((name_rank[srv_of], t_of))
    keep, srv_of, t_of = keep[order], srv_of[order], t_of[order]
    return Samples(
        times=uniq_t[t_of],
        metrics=values[keep],
        server=[order_names[i] for i in srv_of.tolist()],
        profile=[profiles.get(order_names[i]) for i in srv_of.tolist()],
        incomplete=incomplete,
        unlabelled=unlabelled,
        unlabelled_by_metric=by_metric,
        duplicates=duplicates,
        clamped=clamped,
        filled_latency=int(fill.size),
        partial=int(partial_rows.size),
        partial_example=partial_example,
        servers_seen=set(names),
    )


def _partial_rows(
    coverage: Sequence[Series],
    mapping: LabelMapping,
    names: Mapping[str, int],
    times: np.ndarray,
) -> np.ndarray:
    """Rows (``server index * len(times) + time index``) the coverage series name.

    Servers the metrics did not name, and times outside ``times``, are no rows; series
    without the server label are ignored (the coverage check then cannot apply to them).
    """
    n_t = len(times)
    rows: list[np.ndarray] = []
    for s in coverage:
        name = mapping.server(s.labels)
        if name is None or name not in names:
            continue
        t = np.floor(s.times[np.isfinite(s.values)] + 1e-6).astype(np.int64)
        at = np.searchsorted(times, t)
        hit = at < n_t
        hit[hit] = times[at[hit]] == t[hit]
        rows.append(names[name] * n_t + at[hit])
    if not rows:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(rows))
