"""The semi-Markov state process: dwell times, ordering, problem children, offline rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .conftest import Week


def test_every_state_occurs_in_a_week(week: Week) -> None:
    seen = set(np.unique(week.states))
    assert seen == {
        "critical_issue",
        "healthy",
        "heavy_load",
        "idle",
        "maintenance",
        "morning_spike",
        "offline",
        "recovery",
    }
    assert np.mean(week.states == "healthy") > 0.6


def test_incidents_last_tens_of_minutes_to_hours(week: Week) -> None:
    lengths = np.array([n for _, _, n in week.runs("critical_issue")])
    assert len(lengths) >= 15
    assert lengths.min() >= 4  # 20 minutes; never a one-step incident
    assert lengths.max() <= 72  # 6 hours
    assert 6 <= np.median(lengths) <= 24


def test_recovery_always_follows_critical(week: Week) -> None:
    for server, first, length in week.runs("critical_issue"):
        assert week.states[first + length, server] == "recovery"
        assert week.states[first - 1, server] == "healthy"  # the hidden ramp is labelled healthy


def test_maintenance_is_a_weekly_night_window(week: Week) -> None:
    runs = week.runs("maintenance")
    per_server = np.bincount([s for s, _, _ in runs], minlength=90)
    assert per_server.max() <= 1
    assert per_server.sum() >= 80
    for _, first, length in runs:
        hour = (week.timestamps[first] % 86_400) / 3600
        assert hour < 5.0
        assert 12 <= length <= 36


def test_morning_spike_starts_at_business_hours(week: Week) -> None:
    runs = week.runs("morning_spike")
    assert len(runs) > 100
    hours = np.array([(week.timestamps[f] % 86_400) / 3600 for _, f, _ in runs])
    assert np.all((hours >= 7.0) & (hours <= 9.0))
    weekdays = ((week.timestamps[[f for _, f, _ in runs]] // 86_400) + 3) % 7
    assert np.all(weekdays < 5)


def test_problem_children_have_many_more_incidents(week: Week) -> None:
    onsets = np.zeros(90)
    for server, _, _ in week.runs("critical_issue"):
        onsets[server] += 1
    pc = week.sim.problem_child
    assert onsets[pc].mean() > 4 * onsets[~pc].mean()


def test_offline_servers_keep_emitting_zero_rows(week: Week) -> None:
    off = week.states == "offline"
    assert off.sum() > 0
    for metric in week.metrics.values():
        assert np.all(metric[off] == 0.0)
        assert np.all(metric[~off] > 0.0)
    for server, first, length in week.runs("offline"):
        assert week.states[first + length, server] == "recovery"
