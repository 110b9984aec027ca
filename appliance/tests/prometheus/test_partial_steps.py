"""Partial steps: a step its series cover only in part is a gap, not a biased value.

``rate(x[5m])`` over a window a series covers in part divides what the samples rose by
the whole five minutes, so a server whose node_exporter series start mid-step reads
cpu_pct 55 where the truth is 10. The coverage expression names such (server, step)
pairs and :func:`assemble` leaves them out (docs/PROMETHEUS.md#partial-steps). The
unit tests run the source against the fake API; the last test measures the bias and the
check on Debian's real Prometheus.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from fleetcast.appliance.sources.prometheus import PrometheusConfig, PrometheusSource
from fleetcast.appliance.sources.promql import (
    DEFAULT_COVERAGE,
    DEFAULT_QUERIES,
    LabelMapping,
    PromClient,
    PromError,
    Series,
    assemble,
    eval_time,
    resolve_coverage,
)
from fleetcast.contract.schema import STEP_SECONDS

from .conftest import T0
from .promstack import missing_binaries, start_prometheus
from .test_source import _config, _run, _until

if TYPE_CHECKING:
    from pathlib import Path

    from fleetcast.appliance.runtime import Runtime

    from .conftest import FakeClock, FakePrometheus

K0 = T0 // STEP_SECONDS


def _series(server: str, times: list[int], value: float) -> Series:
    t = np.array(times, dtype=np.float64)
    return Series({"instance": f"{server}:9100"}, t, np.full(t.shape, value))


def _metrics(servers: list[str], times: list[int]) -> dict[str, list[Series]]:
    return {
        m: [_series(s, times, v) for s in servers]
        for m, v in (("cpu_pct", 10.0), ("mem_pct", 50.0), ("disk_io_mb_s", 2.0))
    }


def test_the_pairs_coverage_names_become_gaps() -> None:
    times = [eval_time(K0 + i) for i in range(3)]
    coverage = [
        _series("b", [times[1]], 1.0),
        _series("c", [times[0], times[2]], 1.0),
        _series("unknown", [times[0]], 1.0),  # no metrics for it: nothing to drop
        _series("a", [times[0] + 150], 1.0),  # not an evaluation time of the metrics
        Series({"job": "node"}, np.array([float(times[1])]), np.array([1.0])),  # unlabelled
    ]
    samples = assemble(_metrics(["a", "b", "c"], times), LabelMapping(), coverage=coverage)
    kept = set(zip(samples.server, samples.times.tolist(), strict=True))
    assert kept == {
        ("a", times[0]),
        ("a", times[1]),
        ("a", times[2]),
        ("b", times[0]),
        ("b", times[2]),
        ("c", times[1]),
    }
    assert samples.partial == 3
    assert samples.partial_example == ("b", times[1])
    assert samples.incomplete == 0


def test_an_incomplete_pair_counts_once_as_a_gap_not_as_partial() -> None:
    times = [eval_time(K0)]
    results = _metrics(["a"], times)
    results["mem_pct"] = []
    samples = assemble(results, LabelMapping(), coverage=[_series("a", times, 1.0)])
    assert len(samples) == 0
    assert (samples.incomplete, samples.partial) == (1, 0)


def test_resolve_coverage() -> None:
    assert resolve_coverage(None) == DEFAULT_COVERAGE
    assert resolve_coverage("") is None
    assert resolve_coverage("  ") is None
    assert resolve_coverage(" up == 0 ") == "up == 0"
    cfg = PrometheusConfig.from_settings(SimpleNamespace(prometheus_url="http://p:9090"))
    assert cfg.coverage == DEFAULT_COVERAGE
    off = SimpleNamespace(prometheus_url="http://p:9090", prometheus_coverage="")
    assert PrometheusConfig.from_settings(off).coverage is None


def test_partial_steps_are_gaps_in_backfill_and_in_the_open_step(
    model_dir: Path,
    tmp_path: Path,
    fake_prom: FakePrometheus,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    open_step = int(clock()) // STEP_SECONDS
    fake_prom.partial = {("ppdb001", open_step - 3), ("ppweb001", open_step)}

    async def body(runtime: Runtime) -> None:
        source = PrometheusSource(runtime, _config(fake_prom.url), clock=clock)
        with caplog.at_level(logging.INFO, logger="fleetcast.appliance.sources.prometheus"):
            await source.run_cycle()
        engine: Any = runtime.engine
        encoder = engine.spec.encoder_length

        def steps(server: str) -> set[int]:
            """The steps with a value in the server's history (a gap is null)."""
            hist = engine.history(server, encoder + 5)
            return {
                int(np.datetime64(t.rstrip("Z"), "s").astype(np.int64)) // STEP_SECONDS
                for t, cpu in zip(hist["timestamps"], hist["cpu_pct"], strict=True)
                if cpu is not None
            }

        window = set(range(open_step - encoder, open_step))
        assert steps("ppml0001") == window | {open_step}
        assert steps("ppdb001") == (window - {open_step - 3}) | {open_step}
        # the open step's provisional sample is left out as well
        assert steps("ppweb001") == window
        status = source.source_status()
        assert status["partial_steps"] == 2
        assert status["coverage_check"] is True
        assert "2 partially covered server-steps left as gaps" in status["detail"]
        assert "did not cover the whole step" in caplog.text
        assert "docs/PROMETHEUS.md#partial-steps" in caplog.text

    _run(model_dir, tmp_path, body)


def test_the_check_can_be_turned_off(
    model_dir: Path, tmp_path: Path, fake_prom: FakePrometheus, clock: FakeClock
) -> None:
    open_step = int(clock()) // STEP_SECONDS
    fake_prom.partial = {("ppdb001", open_step - 3)}

    async def body(runtime: Runtime) -> None:
        source = PrometheusSource(runtime, _config(fake_prom.url, coverage=None), clock=clock)
        n = await source.run_cycle()
        encoder = runtime.engine.spec.encoder_length  # type: ignore[union-attr]
        assert n == 3 * encoder + 3
        assert all(r["query"] != DEFAULT_COVERAGE for r in fake_prom.requests)
        status = source.source_status()
        assert (status["partial_steps"], status["coverage_check"]) == (0, False)

    _run(model_dir, tmp_path, body)


def test_a_refused_coverage_expression_says_how_to_fix_or_disable_it(
    model_dir: Path, tmp_path: Path, fake_prom: FakePrometheus, clock: FakeClock
) -> None:
    async def body(runtime: Runtime) -> None:
        source = PrometheusSource(runtime, _config(fake_prom.url, coverage="up[("), clock=clock)
        with pytest.raises(PromError) as info:
            await source.run_cycle()
        assert info.value.kind == "bad_query"
        message = str(info.value)
        assert "coverage check 'up[('" in message
        assert "prometheus_coverage" in message
        assert "docs/PROMETHEUS.md#partial-steps" in message
        await _until(lambda: True)

    _run(model_dir, tmp_path, body)


# -- Debian's real Prometheus ----------------------------------------------------------
_INTERVAL = 15
_CPU = DEFAULT_QUERIES["cpu_pct"]


def _openmetrics(t: int) -> str:
    """Idle-CPU counters at 90 % (cpu_pct 10), their ``up``, and gauges for mem and disk,
    around step ``t``: ``full`` throughout; ``new`` starts mid-step; ``relabel`` changes its
    labels mid-step; ``outage`` misses the scrapes from a minute before ``t`` to 150 s after
    it (Prometheus down); ``late`` misses the last 30 s before ``t``; ``down`` is scraped
    throughout, but its scrapes over the same span fail (its exporter down): ``up`` 0 and
    no samples; ``twojobs`` is ``full`` with a second exporter that never answers (``up`` 0
    throughout, another job and port)."""
    start, end = t - 3600, t + 1800
    lines = ["# TYPE node_cpu_seconds counter"]
    ups = ["# TYPE up gauge"]
    gauges = {"fc_mem": ["# TYPE fc_mem gauge"], "fc_disk": ["# TYPE fc_disk gauge"]}

    def scrapes(first: int, last: int, skip: tuple[int, int] | None = None) -> list[int]:
        out = list(range(first, last + 1, _INTERVAL))
        return [s for s in out if skip is None or not skip[0] <= s <= skip[1]]

    def target(
        server: str, times: list[int], extra: str = "", failed: tuple[int, int] | None = None
    ) -> None:
        labels = f'instance="{server}:9100"{extra}'
        for s in times:
            if failed is not None and failed[0] <= s <= failed[1]:
                ups.append(f'up{{{labels},job="node"}} 0 {s}')  # a failed scrape
                continue
            idle = 1e6 + 0.9 * (s - start)
            lines.append(f'node_cpu_seconds_total{{{labels},cpu="0",mode="idle"}} {idle:.3f} {s}')
            ups.append(f'up{{{labels},job="node"}} 1 {s}')

    target("full", scrapes(start, end))
    target("new", scrapes(t + 150, end))
    target("relabel", scrapes(start, t + 135))
    target("relabel", scrapes(t + 150, end), ',role="database"')
    target("outage", scrapes(start, end, skip=(t - 60, t + 150)))
    target("late", scrapes(start, end, skip=(t - 30, t - 1)))
    target("down", scrapes(start, end), failed=(t - 60, t + 150))
    target("twojobs", scrapes(start, end))
    ups += [f'up{{instance="twojobs:9187",job="postgres"}} 0 {s}' for s in scrapes(start, end)]
    for server in ("full", "new", "relabel", "outage", "late", "down", "twojobs"):
        for name, value in (("fc_mem", 50.0), ("fc_disk", 2.0)):
            gauges[name] += [
                f'{name}{{instance="{server}:9100"}} {value} {s}' for s in scrapes(start, end)
            ]
    text = lines + ups + gauges["fc_mem"] + gauges["fc_disk"] + ["# EOF"]
    return "\n".join(text) + "\n"


def _instant(url: str, expr: str, at: int) -> dict[str, float]:
    body = urllib.parse.urlencode({"query": expr, "time": at}).encode()
    with urllib.request.urlopen(f"{url}/api/v1/query", data=body, timeout=10) as resp:
        result = json.loads(resp.read())["data"]["result"]
    return {r["metric"]["instance"].split(":")[0]: float(r["value"][1]) for r in result}


@pytest.mark.prometheus
@pytest.mark.skipif(bool(missing_binaries(("prometheus", "promtool"))), reason="needs prometheus")
def test_real_prometheus_partial_steps_are_biased_and_the_default_check_finds_them(
    tmp_path: Path,
) -> None:
    k = int(time.time()) // STEP_SECONDS - 12  # inside Prometheus' head-free past
    t = k * STEP_SECONDS
    path = tmp_path / "fleet.om"
    path.write_text(_openmetrics(t), encoding="utf-8")
    prom = start_prometheus(tmp_path, {}, openmetrics=path)
    try:
        # The bias the check exists for: a rate over part of the step.
        cpu = _instant(prom.url, _CPU, eval_time(k))
        assert cpu["full"] == pytest.approx(10.0, abs=1e-6)
        assert min(cpu["new"], cpu["relabel"], cpu["outage"], cpu["down"]) > 40
        assert _instant(prom.url, _CPU, eval_time(k - 1))["late"] > 15

        client = PromClient(prom.url)
        queries = {"cpu_pct": _CPU, "mem_pct": "fc_mem", "disk_io_mb_s": "fc_disk"}
        first, last = eval_time(k - 3), eval_time(k + 3)
        results = {m: client.query_range(e, first, last, STEP_SECONDS) for m, e in queries.items()}
        coverage = client.query_range(DEFAULT_COVERAGE, first, last, STEP_SECONDS)
        samples = assemble(results, LabelMapping(), coverage=coverage)
        kept: dict[str, set[int]] = {}
        for server, at, row in zip(samples.server, samples.times, samples.metrics, strict=True):
            kept.setdefault(server, set()).add(int(at) // STEP_SECONDS - k)
            assert row[0] == pytest.approx(10.0, abs=1e-6), (server, int(at) // STEP_SECONDS - k)
        every = set(range(-3, 4))
        assert kept["full"] == every
        assert kept["new"] == {1, 2, 3}  # it exists from step 0 on; step 0 is partial
        assert kept["relabel"] == every - {0}
        assert kept["outage"] == every - {-1, 0}
        assert kept["late"] == every - {-1}
        # Its failed scrapes still write up (0): it was named by none of the other clauses.
        assert kept["down"] == every - {-1, 0}
        # Another exporter of the host that never answers biases nothing: every step stays.
        assert kept["twojobs"] == every
        assert samples.partial == 7
    finally:
        prom.stop()
