"""The suite's own arithmetic: medians, spreads, ratios, target checks, timing budget."""

from __future__ import annotations

import math
import time

import pytest
from fleetbench.stats import (
    Target,
    check_target,
    check_targets,
    ratio,
    summarize,
    time_calls,
    time_interleaved,
)


def test_summarize_median_quartiles_and_spread() -> None:
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.median, s.p25, s.p75, s.min, s.max, s.runs) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    assert s.spread == pytest.approx(2.0 / 3.0)
    even = summarize([1.0, 2.0, 3.0, 10.0])
    assert even.median == 2.5
    assert even.p25 == pytest.approx(1.75)
    assert even.p75 == pytest.approx(4.75)


def test_summarize_single_and_scaled() -> None:
    s = summarize([8.0])
    assert s.spread == 0.0
    per = s.scaled(1 / 4)
    assert (per.median, per.min, per.max, per.runs) == (2.0, 2.0, 2.0, 1)
    d = summarize([1.0, 3.0]).to_dict()
    assert d["median"] == 2.0
    assert d["runs"] == 2
    assert d["spread"] == 0.5


@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [math.inf]])
def test_summarize_rejects_empty_or_non_finite(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="Expected"):
        summarize(bad)


def test_ratio_is_slow_over_fast_medians() -> None:
    assert ratio(summarize([10.0, 12.0, 14.0]), summarize([1.0, 2.0, 3.0])) == 6.0
    assert ratio(summarize([1.0]), summarize([0.0])) == math.inf


def test_check_target_max_and_min() -> None:
    lat = Target("a", "latency", 2.0, "max", "ms")
    assert check_target(lat, 1.5).met is True
    assert check_target(lat, 2.5).met is False
    assert check_target(lat, 2.0).met is True
    speed = Target("b", "speed-up", 20.0, "min", "×")
    assert check_target(speed, 25.0).met is True
    assert check_target(speed, 19.9).met is False
    with pytest.raises(ValueError, match="kind"):
        Target("c", "x", 1.0, "avg")


def test_quick_mode_uses_the_loose_bound_or_reports_only() -> None:
    guarded = Target("a", "speed-up", 20.0, "min", "×", quick_limit=1.0)
    quick = check_target(guarded, 7.5, quick=True)
    assert quick.met is True
    assert quick.enforced
    assert quick.to_dict()["limit_checked"] == 1.0
    full = check_target(guarded, 7.5, quick=False)
    assert full.met is False
    assert full.enforced
    unguarded = Target("b", "latency", 0.25, "max", "ms")
    r = check_target(unguarded, 1.0, quick=True)
    assert r.met is False
    assert not r.enforced
    assert "reported only" in r.note
    assert check_target(unguarded, 1.0, quick=False).enforced


def test_report_only_never_fails_and_an_unmeasured_enforced_target_is_missed() -> None:
    """A run that could not measure a target (NaN outputs, a baseline that could not run,
    a benchmark that failed) has not shown that it meets it: it exited 0 before."""
    watch = Target("a", "accuracy share", 1.0, "min", report_only=True)
    r = check_target(watch, 0.5)
    assert r.met is False
    assert not r.enforced
    parity = Target("b", "parity", 1e-4, "max", quick_limit=1e-4)
    results = check_targets(
        [watch, parity, Target("c", "x", 1.0)],
        {"a": None, "b": math.nan, "c": None},
        notes={"c": "PyTorch baselines need the bundle"},
    )
    assert [x.met for x in results] == [None, False, False]
    assert [x.enforced for x in results] == [False, True, True]
    assert results[0].note == "not measured in this run"
    assert results[1].note == "not measured: the value is nan"
    assert results[2].note == "not measured: PyTorch baselines need the bundle"
    # In quick mode a target without a quick bound is not enforced: missing is not missed.
    (quick,) = check_targets([Target("d", "x", 1.0)], {}, quick=True)
    assert (quick.met, quick.enforced) == (None, False)
    (inf,) = check_targets([parity], {"b": math.inf}, quick=True)
    assert inf.met is False


def test_a_skipped_benchmark_never_fails() -> None:
    gpu = Target("g", "GPU servers/s", 50_000, "min")
    (r,) = check_targets([gpu], {}, skipped={"g": "no CUDA execution provider here"})
    assert (r.met, r.enforced) == (None, False)
    assert r.note == "skipped: no CUDA execution provider here"


def test_time_interleaved_rotates_the_order_and_bounds_each_contender() -> None:
    order: list[str] = []

    def slow() -> None:
        order.append("slow")
        time.sleep(0.02)

    out = time_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b"), "slow": slow},
        4,
        warmup=1,
        budget_s=0.03,
    )
    assert order[:3] == ["a", "b", "slow"]  # the warm-up, one each
    timed = order[3:]
    assert timed[:3] == ["a", "b", "slow"]  # round 0
    assert timed[3:6] == ["b", "slow", "a"]  # round 1: rotated
    assert timed[6:] == ["a", "b", "a", "b"]  # 'slow' spent its budget (2 × 20 ms)
    assert [len(out[k]) for k in ("a", "b", "slow")] == [4, 4, 2]
    assert all(t >= 20.0 for t in out["slow"])
    over = time_interleaved({"x": slow, "y": lambda: None}, 3, warmup=1, budget_s=0.01)
    assert len(over["x"]) == 1  # a warm-up over budget is the one measurement
    assert len(over["y"]) == 3


def test_time_calls_warms_up_and_respects_the_budget() -> None:
    calls: list[int] = []
    out = time_calls(lambda: calls.append(1), 4, warmup=2)
    assert len(out) == 4
    assert len(calls) == 6
    assert all(t >= 0 for t in out)
    slow = time_calls(lambda: sum(range(20_000)), 1000, warmup=0, budget_s=0.0)
    assert len(slow) == 1  # the budget stops after the first timed call


def test_time_calls_counts_a_warmup_over_budget_as_the_measurement() -> None:
    calls: list[int] = []

    def slow() -> None:
        calls.append(1)
        time.sleep(0.02)

    out = time_calls(slow, 5, warmup=1, budget_s=0.01)
    assert len(out) == 1
    assert len(calls) == 1
    assert out[0] >= 20.0


def test_best_limits_keeps_the_best_of_each() -> None:
    from fleetbench.machine import best_limits

    start = {"matmul_gflops": 33.0, "memory_gb_s": 20.0}
    end = {"matmul_gflops": 190.0, "memory_gb_s": 7.0}
    assert best_limits(start, end) == {"matmul_gflops": 190.0, "memory_gb_s": 20.0}
