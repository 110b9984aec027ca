"""Reading /status leniently: missing facts are None, never guessed."""

from __future__ import annotations

from fleetcast.dashboard.status import StatusInfo, dig

STATUS = {
    "model": {
        "version": "tft_model_20261127_091902",
        "bundle_id": "tft_model_20261127_091902",
        "contract_version": "1.0.0",
        "providers": ["CPUExecutionProvider"],
        "step_seconds": 300,
    },
    "uptime_s": 6.7,
    "servers": {"known": 90, "ready": 88, "warming": 2, "unknown": 86},
    "predictions_per_second": 43.9,
    "inference_latency_ms": {"avg": 372.7, "p99": 538.1},
    "error_rate": 0.0,
    "last_prediction_time": "2026-11-27T09:31:39Z",
    "source": {"kind": "demo", "healthy": True},
    "demo": {"enabled": True, "scenario": "healthy"},
}


def test_status_facts() -> None:
    info = StatusInfo(STATUS)
    assert info.model_version == "tft_model_20261127_091902"
    assert info.contract_version == "1.0.0"
    assert info.step_seconds == 300.0
    assert info.providers == ["CPUExecutionProvider"]
    assert (info.servers("ready"), info.servers("warming"), info.servers("unknown")) == (88, 2, 86)
    assert info.latency_ms("p99") == 538.1
    assert info.predictions_per_second == 43.9
    assert info.demo_enabled
    assert info.demo_scenario == "healthy"
    assert info.source == "demo (source healthy)"  # the source's health, not the fleet's
    assert StatusInfo({"source": {"kind": "push", "healthy": False}}).source == (
        "push (source unhealthy)"
    )
    assert StatusInfo({"source": {"kind": "push"}}).source == "push (health n/a)"


def test_missing_facts_are_none_and_demo_is_off() -> None:
    info = StatusInfo({"model": "not a dict", "servers": {"ready": True}})
    assert info.model_version is None
    assert info.servers("ready") is None  # a bool is not a count
    assert info.step_seconds is None
    assert info.latency_ms("avg") is None
    assert info.providers == []
    assert not info.demo_enabled
    assert dig({"a": {"b": 1}}, "a", "b") == 1
    assert dig({"a": 1}, "a", "b") is None
