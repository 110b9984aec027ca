"""The keep-firing window in the engine: an alert outlives a short dip of its probability,
by data steps, across a restart too (docs/RISK.md#alerts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetcast.appliance.engine import Engine, EngineConfig

from .test_engine import START, STEP, _batch, _open
from .test_stale_alerts import _through_a_snapshot

if TYPE_CHECKING:
    from pathlib import Path

HOT = [30, 50, 5, 400.0]  # latency far above the database threshold
COOL = [30, 50, 5, 10.0]


def _keys(engine) -> set[tuple[str, str]]:
    fs = engine.current()
    return {(a["metric"], a["horizon"]) for a in (fs.alerts if fs else [])}


def _feed(engine, k: int, values: list[float]) -> None:
    engine.ingest(_batch([START + k * STEP], ["ppdb007"], [values]))
    engine.ingest(_batch([START + (k + 1) * STEP], ["ppdb007"], [values]))  # closes step k
    engine.run_forecast()


def _hot(toy_dir: Path, keep_s: float) -> Engine:
    """An engine whose one server's first forecast (data up to step 28) raises alerts."""
    engine = _open(toy_dir, capacity=4, alert_keep_firing_s=keep_s)
    for k in range(30):
        engine.ingest(_batch([START + k * STEP], ["ppdb007"], [HOT]))
    engine.run_forecast()
    return engine


def _run(toy_dir: Path, keep_s: float, cool: int) -> list[set[tuple[str, str]]]:
    """The alert keys of the hot forecast, then of ``cool`` forecasts of cool data (their
    data steps 30, 31, 32, ...)."""
    engine = _hot(toy_dir, keep_s)
    try:
        seen = [_keys(engine)]
        for k in range(30, 30 + cool):
            _feed(engine, k, COOL)
            seen.append(_keys(engine))
        return seen
    finally:
        engine.close()


def test_an_alert_outlives_a_dip_for_the_window_then_resolves(toy_dir: Path) -> None:
    hot = {("latency_ms", h) for h in ("30min", "1hr", "8hr")}
    at_once = _run(toy_dir, 0, 3)
    assert at_once[0] == hot
    assert at_once[1:] == [set(), set(), set()]
    # 900 s = 3 steps of data after step 28, the last that raised them: kept at steps 30
    # and 31, resolved at 32.
    kept = _run(toy_dir, 900, 3)
    assert kept == [hot, hot, hot, set()]


def test_a_restart_keeps_the_window(toy_dir: Path, tmp_path: Path) -> None:
    engine = _hot(toy_dir, 900)
    _feed(engine, 30, COOL)
    kept = engine.current().alerts
    assert kept
    assert all(a["probability"] < 0.25 for a in kept)  # held by the window alone
    config = EngineConfig(model_dir=toy_dir, capacity=4, alert_keep_firing_s=900)
    arrays = _through_a_snapshot(engine, tmp_path / "s.npz")
    engine.close()
    again = Engine.restore(config, arrays)
    _feed(again, 31, COOL)
    assert {a["since"] for a in again.current().alerts} == {a["since"] for a in kept}
    _feed(again, 32, COOL)  # 4 steps after the last forecast that raised them
    assert again.current().alerts == []
    again.close()
    # A snapshot from before the window was saved: it restarts at the alerts' data (step
    # 30), so they are still kept at steps 32 and 33.
    older = Engine.restore(config, {k: v for k, v in arrays.items() if k != "alert_seen"})
    for k in (31, 32, 33):
        _feed(older, k, COOL)
        assert {a["horizon"] for a in older.current().alerts} == {"30min", "1hr", "8hr"}, k
    older.close()


def test_a_server_left_out_keeps_its_window_for_when_it_is_back(
    toy_dir: Path, record_batch
) -> None:
    """Its alerts were carried while it was stale, but not their window: forecast again
    within it at a low probability, they resolved at once."""
    from .test_forget import _alerting_fleet
    from .test_forget import _feed as feed
    from .test_stale_alerts import _of, _others

    # A window of 24 steps, longer than stale_after_steps (12).
    engine = _open(toy_dir, capacity=8, alert_keep_firing_s=24 * STEP)
    for k in range(30):
        feed(engine, record_batch, k, _alerting_fleet(k))
    raised = _of(engine.run_forecast().alerts, "ppdb007")
    assert raised
    for k in range(30, 44):  # ppdb007 stops: stale after 12 steps, its alerts carried
        feed(engine, record_batch, k, _others(k))
        engine.run_forecast()
    assert all(a["stale"] for a in _of(engine.alerts(), "ppdb007"))
    # Back with cool data at step 44, 16 steps after the last forecast that raised them.
    for k in (44, 45):
        feed(engine, record_batch, k, {**_others(k), "ppdb007": COOL})
    back = _of(engine.run_forecast().alerts, "ppdb007")
    assert back
    assert not any(a["stale"] for a in back)
    assert {a["since"] for a in back} == {a["since"] for a in raised}
    engine.close()
