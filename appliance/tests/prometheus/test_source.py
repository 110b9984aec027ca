"""The Prometheus source against a fake Prometheus API (real HTTP) and the real engine.

Data time is driven by a fake clock, so steps close at will: the backfill, the catch-up of
completed steps, an outage and the recovery are checked value by value.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from fleetcast.appliance.notify import Notifier
from fleetcast.appliance.runtime import Runtime
from fleetcast.appliance.settings import build_settings
from fleetcast.appliance.sources.prometheus import PrometheusConfig, PrometheusSource
from fleetcast.appliance.sources.promql import (
    DEFAULT_QUERIES,
    PromError,
    eval_time,
    resolve_queries,
)
from fleetcast.contract.schema import METRIC_COLUMNS, STEP_SECONDS

from .conftest import T0, TEST_QUERIES, known_value

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .conftest import FakeClock, FakePrometheus


def _config(url: str, **overrides: Any) -> PrometheusConfig:
    values: dict[str, Any] = {
        "url": url,
        "queries": resolve_queries(TEST_QUERIES),
        "interval_s": 0.05,
        "timeout_s": 2.0,
        "settle_s": 0.0,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
    }
    values.update(overrides)
    return PrometheusConfig(**values)


def _run(model_dir: Path, tmp_path: Path, body: Callable[[Runtime], Awaitable[None]]) -> None:
    settings = build_settings(
        {
            "model_dir": model_dir,
            "state_dir": tmp_path / "state",
            "capacity": 64,
            "rate_limit": "off",
        },
        env={},
    )

    async def main() -> None:
        runtime = Runtime(settings, Notifier(None))
        await runtime.start()
        try:
            await body(runtime)
        finally:
            await runtime.stop()

    asyncio.run(main())


async def _until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    for _ in range(int(timeout / 0.02)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def _history_matches(runtime: Runtime, server: str, steps: list[int]) -> None:
    hist = runtime.engine.history(server, 80)  # type: ignore[union-attr]
    by_time = {t: i for i, t in enumerate(hist["timestamps"])}
    for k in steps:
        from fleetcast.appliance.runtime import iso

        i = by_time[iso(k * STEP_SECONDS)]
        for j, metric in enumerate(METRIC_COLUMNS):
            assert hist[metric][i] == pytest.approx(known_value(server, j, eval_time(k)), abs=1e-3)


def test_backfill_fills_the_window_then_catches_up(
    model_dir: Path, tmp_path: Path, fake_prom: FakePrometheus, clock: FakeClock
) -> None:
    async def body(runtime: Runtime) -> None:
        source = PrometheusSource(runtime, _config(fake_prom.url), clock=clock)
        encoder = runtime.engine.spec.encoder_length  # type: ignore[union-attr]
        open_step = int(clock()) // STEP_SECONDS
        n = await source.run_cycle()
        # encoder steps x 3 servers from query_range + 3 from the instant query
        assert n == encoder * 3 + 3
        ranges = [r for r in fake_prom.requests if r["path"].endswith("query_range")]
        assert len(ranges) == 5  # one chunk (48 steps) x (4 metrics + the coverage check)
        assert float(ranges[0]["start"]) == eval_time(open_step - encoder)
        assert float(ranges[0]["end"]) == eval_time(open_step - 1)
        assert source.backfilled_steps == encoder
        status = runtime.engine.status()  # type: ignore[union-attr]
        assert status["servers"]["ready"] == 3
        assert status["servers"]["warming"] == 0
        engine: Any = runtime.engine
        want = _iso((open_step - 1) * STEP_SECONDS)  # the newest completed step
        forecast = await _until(lambda: (c := engine.current()) and c.data_time == want and c)
        assert {s["server_name"] for s in forecast.servers} == {"ppml0001", "ppdb001", "ppweb001"}
        _history_matches(runtime, "ppml0001", list(range(open_step - encoder, open_step)))

        # Three steps later: one query_range over exactly the completed steps.
        fake_prom.requests.clear()
        clock.advance(3 * STEP_SECONDS)
        await source.run_cycle()
        ranges = [r for r in fake_prom.requests if r["path"].endswith("query_range")]
        assert {(float(r["start"]), float(r["end"])) for r in ranges} == {
            (eval_time(open_step), eval_time(open_step + 2))
        }
        _history_matches(runtime, "ppdb001", [open_step, open_step + 1, open_step + 2])
        want = _iso((open_step + 2) * STEP_SECONDS)
        await _until(lambda: engine.current().data_time == want)
        st = source.source_status()
        assert st["samples_ingested"] == n + 3 * 3 + 3
        assert st["samples_rejected"] == 0
        assert st["servers"] == 3
        assert st["last_error"] is None

    _run(model_dir=model_dir, tmp_path=tmp_path, body=body)


def _iso(t: int) -> str:
    from fleetcast.appliance.runtime import iso

    return str(iso(t))


def test_backfill_reads_the_day_a_day_ago_model_looks_back_to(
    tmp_path: Path, fake_prom: FakePrometheus, clock: FakeClock
) -> None:
    """A model with day-ago inputs reads its encoder and the day before it: the backfill
    fetches all of it, so its first forecast has real day-ago values, not a backward fill."""
    import shutil

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_model_steps.onnx"
    folder = tmp_path / "models" / "current"
    folder.mkdir(parents=True)
    shutil.copyfile(fixture, folder / "model.onnx")
    digest = fixture.with_name(fixture.name + ".sha256").read_text().split()[0]
    (folder / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")

    async def body(runtime: Runtime) -> None:
        spec = runtime.engine.spec  # type: ignore[union-attr]
        assert spec.max_lag == 288
        assert spec.history_steps == spec.encoder_length + 288
        source = PrometheusSource(runtime, _config(fake_prom.url), clock=clock)
        open_step = int(clock()) // STEP_SECONDS
        n = await source.run_cycle()
        assert source.backfilled_steps == spec.history_steps
        assert n == spec.history_steps * 3 + 3
        starts = [float(r["start"]) for r in fake_prom.requests if r["path"].endswith("range")]
        assert min(starts) == eval_time(open_step - spec.history_steps)
        engine: Any = runtime.engine
        want = _iso((open_step - 1) * STEP_SECONDS)
        await _until(lambda: (c := engine.current()) and c.data_time == want)

    _run(folder, tmp_path, body)


def test_outage_is_reported_then_recovered_without_holes(
    model_dir: Path, tmp_path: Path, fake_prom: FakePrometheus, clock: FakeClock
) -> None:
    async def body(runtime: Runtime) -> None:
        source = PrometheusSource(runtime, _config(fake_prom.url), clock=clock)
        await source.start()
        await _until(lambda: source.source_status()["healthy"])
        engine: Any = runtime.engine
        open_step = int(clock()) // STEP_SECONDS
        want = _iso((open_step - 1) * STEP_SECONDS)
        forecast = await _until(lambda: (c := engine.current()) and c.data_time == want and c)

        fake_prom.stop()
        st = await _until(lambda: (s := source.source_status())["consecutive_failures"] >= 2 and s)
        assert st["healthy"] is False
        assert "Cannot reach Prometheus" in st["last_error"]
        assert st["detail"].startswith("failing (")
        clock.advance(2 * STEP_SECONDS)  # two steps pass while it is down
        await asyncio.sleep(0.3)
        assert engine.current() is forecast  # the last forecast is still served
        assert source.forecast_age_s() == pytest.approx(2 * STEP_SECONDS + 10, abs=1)

        fake_prom.start()  # same port
        await _until(lambda: source.source_status()["healthy"], timeout=10)
        assert source.source_status()["consecutive_failures"] == 0
        _history_matches(runtime, "ppweb001", [open_step, open_step + 1])  # no hole
        await source.stop()

    _run(model_dir=model_dir, tmp_path=tmp_path, body=body)


def test_refused_expression_and_rejected_values_are_reported(
    model_dir: Path, tmp_path: Path, fake_prom: FakePrometheus, clock: FakeClock
) -> None:
    async def body(runtime: Runtime) -> None:
        bad = dict(TEST_QUERIES, mem_pct="rate(x[5m)")
        source = PrometheusSource(
            runtime, _config(fake_prom.url, queries=resolve_queries(bad)), clock=clock
        )
        with pytest.raises(PromError, match="Prometheus refused 'rate") as info:
            await source.run_cycle()
        assert not info.value.retryable
        await source.start()
        st = await _until(lambda: (s := source.source_status())["last_error"] and s)
        assert st["healthy"] is False
        assert "parse error" in st["last_error"]
        await source.stop()

        fake_prom.value = lambda s, m, t: (
            250.0 if (m == 0 and s == "ppdb001") else known_value(s, m, t)
        )
        good = PrometheusSource(runtime, _config(fake_prom.url, backfill_steps=2), clock=clock)
        accepted = await good.run_cycle()
        assert accepted == 2 * 2 + 2  # ppdb001's 3 samples are refused by the contract
        st = good.source_status()
        assert st["samples_rejected"] == 3
        assert st["last_rejection"].startswith("'ppdb001': cpu_pct=250")

    _run(model_dir=model_dir, tmp_path=tmp_path, body=body)


def test_config_from_settings() -> None:
    settings = SimpleNamespace(
        prometheus_url="http://prom:9090",
        prometheus_latency_ms="histogram_quantile(0.5, rate(h_bucket[5m])) * 1000",
        prometheus_profile_rules=("^db-=database",),
        prometheus_profile_label="role",
        prometheus_interval_s=15,
    )
    cfg = PrometheusConfig.from_settings(settings)
    assert cfg.queries["cpu_pct"] == DEFAULT_QUERIES["cpu_pct"]
    assert cfg.queries["latency_ms"].startswith("histogram_quantile")
    assert cfg.mapping.server_label == "instance"
    assert cfg.mapping.profile_label == "role"
    assert cfg.mapping.profile("db-1", {}) == "database"
    assert cfg.interval_s == 15.0
    assert cfg.settle_s == 10.0
    with pytest.raises(ValueError, match="--prometheus-url"):
        PrometheusConfig.from_settings(SimpleNamespace())


def test_restart_reads_only_after_the_saved_state(clock: FakeClock) -> None:
    spec = SimpleNamespace(encoder_length=48, history_steps=48)
    runtime: Any = SimpleNamespace(engine=SimpleNamespace(spec=spec), latest_step=None)
    source = PrometheusSource(runtime, _config("http://127.0.0.1:9"), clock=clock)
    open_step = int(clock()) // STEP_SECONDS
    assert source._first_step(open_step) == open_step - 48
    runtime.latest_step = (open_step - 5) * STEP_SECONDS
    assert source._first_step(open_step) == open_step - 4
    runtime.latest_step = T0  # older than the window: the window bounds it
    assert source._first_step(open_step) == open_step - 48


def test_open_step_waits_until_the_previous_step_settled(
    model_dir: Path, tmp_path: Path, fake_prom: FakePrometheus, clock: FakeClock
) -> None:
    async def body(runtime: Runtime) -> None:
        clock.t = T0 + 60 * STEP_SECONDS + 5  # 5 s after a boundary, settle_s = 10
        source = PrometheusSource(
            runtime, _config(fake_prom.url, settle_s=10.0, backfill_steps=20), clock=clock
        )
        await source.run_cycle()
        paths = [r["path"] for r in fake_prom.requests]
        assert "/api/v1/query" not in paths  # would close step 59 before it is read
        k0 = T0 // STEP_SECONDS
        assert source.done_step == k0 + 58
        assert max(float(r["end"]) for r in fake_prom.requests) == eval_time(k0 + 58)
        fake_prom.requests.clear()
        clock.advance(6)
        await source.run_cycle()
        ranges = [r for r in fake_prom.requests if r["path"].endswith("query_range")]
        assert {(float(r["start"]), float(r["end"])) for r in ranges} == {
            (eval_time(k0 + 59), eval_time(k0 + 59))
        }
        # the instant query: 4 metrics + the coverage check
        assert sum(r["path"] == "/api/v1/query" for r in fake_prom.requests) == 5
        engine: Any = runtime.engine
        want = _iso(59 * STEP_SECONDS + T0)
        await _until(lambda: (c := engine.current()) and c.data_time == want)

    _run(model_dir=model_dir, tmp_path=tmp_path, body=body)
