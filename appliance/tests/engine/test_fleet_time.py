"""The fleet's "now" in data time (engine_state.reference_step, docs/RISK.md#buckets).

A server whose clock runs fast, within the ingest's limit, must not stop forecasts; a fleet
most of which stops sending must go on with the servers still sending, and call the others
stale, not the live ones "ahead". Both as an operator sees them: /status, /servers, the
forecast set's data time, and ``forget_after``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetcast.appliance.engine import Engine, EngineConfig

from .test_engine import START, STEP, _batch, _iso

if TYPE_CHECKING:
    from pathlib import Path

ROW = [20, 40, 2, 30]


def _open(toy_dir: Path, **kw) -> Engine:
    return Engine.open(EngineConfig(model_dir=toy_dir, capacity=16, **kw))


def _step(engine: Engine, names: list[str], k: int):
    """Every server in ``names`` sends step ``k``, at that step's time plus 10 s."""
    ts = START + k * STEP
    return engine.ingest(_batch([ts] * len(names), names, [ROW] * len(names)), now=ts + 10)


def test_one_fast_clock_within_the_limit_does_not_freeze_the_fleet(toy_dir: Path) -> None:
    engine = _open(toy_dir, max_future_s=3600.0)
    fleet = [f"ppweb{i:03d}" for i in range(10)]
    for k in range(31):
        _step(engine, fleet, k)
    assert engine.run_forecast().data_time == _iso(START + 29 * STEP)
    # ppweb003 sends one sample 55 minutes ahead: accepted (under the 1 h limit).
    now = START + 30 * STEP + 20
    r = engine.ingest(_batch([now + 3300], ["ppweb003"], [ROW]), now=now)
    assert r.accepted == 1
    assert not engine.forecast_due()  # the fleet's step did not move
    for k in range(31, 41):  # every step the rest of the fleet closes is forecast
        r = _step(engine, fleet, k)
        assert r.closed_steps == 1
        assert engine.forecast_due()
        fs = engine.run_forecast()
        assert fs.data_time == _iso(START + (k - 1) * STEP)
        assert engine.status()["data_time"] == fs.data_time
        by_name = {s["server_name"]: s["data_time"] for s in fs.servers}
        assert by_name["ppweb000"] == _iso(START + (k - 1) * STEP)


def test_when_most_of_the_fleet_stops_the_servers_still_sending_are_its_now(
    toy_dir: Path,
) -> None:
    engine = _open(toy_dir, forget_after_s=3 * 3600.0)
    fleet = [f"ppdb{i:03d}" for i in range(10)]
    for k in range(31):
        _step(engine, fleet, k)
    engine.run_forecast()
    # Nine stop; ppdb000 goes on for 2.5 h. For three steps the fleet waits for the nine
    # (they could be late), then it goes on without them, one forecast per step.
    closed = [_step(engine, fleet[:1], k).closed_steps for k in range(31, 35)]
    assert closed == [0, 0, 0, 4]
    for k in range(35, 61):
        r = _step(engine, fleet[:1], k)
        assert r.closed_steps == 1, k
        fs = engine.run_forecast()
        assert fs.data_time == _iso(START + (k - 1) * STEP)
    assert engine.server_state("ppdb000") == "ready"
    assert {engine.server_state(n) for n in fleet[1:]} == {"stale"}
    status = engine.status()
    assert status["data_time"] == _iso(START + 59 * STEP)
    assert (status["servers"]["ready"], status["servers"]["stale"]) == (1, 9)
    assert status["servers"]["ahead"] == 0
    assert [s["server_name"] for s in fs.servers] == ["ppdb000"]
    # Data time went on, so forget_after (3 h) frees the stopped servers in time.
    assert engine.expired() == []
    for k in range(61, 68):
        _step(engine, fleet[:1], k)
    assert engine.expired() == fleet[1:]


def test_the_stopped_servers_stay_stale_across_a_restart(toy_dir: Path) -> None:
    engine = _open(toy_dir)
    fleet = [f"ppdb{i:03d}" for i in range(10)]
    for k in range(31):
        _step(engine, fleet, k)
    for k in range(31, 51):
        _step(engine, fleet[:1], k)
    restored = Engine.restore(EngineConfig(model_dir=toy_dir, capacity=16), engine.state_arrays())
    assert restored.status()["data_time"] == _iso(START + 49 * STEP)
    assert restored.server_state("ppdb000") == "ready"
    assert restored.server_state("ppdb005") == "stale"
    r = _step(restored, fleet[:1], 51)
    assert (r.closed_steps, r.latest_step) == (1, START + 50 * STEP)
    assert [s["server_name"] for s in restored.run_forecast().servers] == ["ppdb000"]


def test_a_replay_without_a_clock_leaves_no_server_out(toy_dir: Path) -> None:
    """The sample log's replay (and a fleet sent faster than real time) passes no clock:
    the reference is the robust one over every server, so the one server still going
    after the others stopped is the outlier there, as its data alone cannot tell."""
    engine = _open(toy_dir)
    fleet = [f"ppdb{i:03d}" for i in range(10)]
    for k in range(31):
        engine.ingest(_batch([START + k * STEP] * 10, fleet, [ROW] * 10))
    for k in range(31, 51):
        engine.ingest(_batch([START + k * STEP], fleet[:1], [ROW]))
    assert engine.status()["data_time"] == _iso(START + 29 * STEP)
    assert engine.server_state("ppdb000") == "ahead"


def test_forward_filled_steps_do_not_make_a_server_ready(toy_dir: Path) -> None:
    """One sample an hour spans an hour of steps, but is two samples, not an hour of data."""
    engine = _open(toy_dir)
    fleet = [f"ppweb{i:03d}" for i in range(5)]
    for k in range(14):
        _step(engine, fleet, k)
        if k in (0, 12):
            engine.ingest(
                _batch([START + k * STEP], ["ppdb001"], [[95, 40, 2, 30]]), now=START + k * STEP
            )
    assert engine.server_state("ppdb001") == "warming"
    rows = {row["server_name"]: row for row in engine.servers()[0]}
    assert rows["ppdb001"]["steps"] == 1  # step 12 is still open
    assert rows["ppweb000"]["steps"] == 13
    status = engine.status()["servers"]
    assert status["warming_detail"] == [
        {"server_name": "ppdb001", "steps": 1, "needed": 6, "ready_in_s": 5 * STEP}
    ]
    assert "ppdb001" not in {s["server_name"] for s in engine.run_forecast().servers}


def test_a_server_that_stops_while_warming_is_stale_not_warming_for_ever(toy_dir: Path) -> None:
    engine = _open(toy_dir)
    fleet = [f"ppweb{i:03d}" for i in range(5)]
    for k in range(30):
        _step(engine, fleet if k >= 2 else [*fleet, "ppdb001"], k)
    assert engine.server_state("ppdb001") == "stale"
    stale, count, _ = engine.servers(state="stale")
    assert [row["server_name"] for row in stale] == ["ppdb001"]
    assert count == 1
    assert engine.status()["servers"]["warming"] == 0


def test_a_silence_of_the_whole_fleet_counts_against_no_one(toy_dir: Path) -> None:
    """Four hours without a sample (the appliance down, a network outage), then one host
    sends first: it is not the fleet, and forget_after frees no one for the silence."""
    engine = _open(toy_dir, forget_after_s=3 * 3600.0)
    fleet = [f"ppweb{i:03d}" for i in range(10)]
    for k in range(31):
        _step(engine, fleet, k)
    r = _step(engine, fleet[:1], 31 + 48)
    assert r.closed_steps == 0
    assert engine.expired() == []
    assert engine.server_state("ppweb001") == "ready"
    assert engine.server_state("ppweb000") == "ahead"  # until the others are back
    r = _step(engine, fleet[1:], 31 + 48)
    assert r.closed_steps == 49  # closed: 29 -> 78
    assert engine.expired() == []
    # Back, every one; their windows are four hours of filled gaps: warming up again.
    assert {engine.server_state(n) for n in fleet} == {"warming"}


def test_an_older_snapshot_counts_every_server_as_sending(toy_dir: Path) -> None:
    engine = _open(toy_dir)
    fleet = [f"ppweb{i:03d}" for i in range(10)]
    for k in range(31):
        _step(engine, fleet, k)
    arrays = {k: v for k, v in engine.state_arrays().items() if k not in ("heard", "clock")}
    restored = Engine.restore(EngineConfig(model_dir=toy_dir, capacity=16), arrays)
    for k in range(31, 34):  # one host first, a fast one: the fleet's step stays
        assert _step(restored, fleet[:1], k + 11).closed_steps == 0
    assert _step(restored, fleet[1:], 31).closed_steps == 1


def test_old_samples_sent_again_do_not_keep_a_stopped_server_sending(toy_dir: Path) -> None:
    """Only data that moves a server's newest step counts: a client retrying an old batch
    must not hold the fleet at the stopped servers' step."""
    engine = _open(toy_dir)
    fleet = [f"ppdb{i:03d}" for i in range(10)]
    for k in range(31):
        _step(engine, fleet, k)
    old = START + 25 * STEP
    closed = []
    for k in range(31, 40):
        live = _step(engine, fleet[:1], k)
        again = engine.ingest(_batch([old] * 9, fleet[1:], [ROW] * 9), now=START + k * STEP + 20)
        closed.append(live.closed_steps + again.closed_steps)
    # The fleet waits three steps of the clock for the nine, then goes on without them.
    assert closed[:2] == [0, 0]
    assert sum(closed[2:4]) == 4
    assert closed[4:] == [1] * 5


def test_the_wait_for_stragglers_is_for_the_servers_one_step_short(toy_dir: Path) -> None:
    """Each host posting its own: the step is complete once every server whose next sample
    closes it has sent; a host whose data always runs two steps behind is not waited for."""
    engine = _open(toy_dir)
    fleet = [f"ppweb{i:03d}" for i in range(10)]
    for k in range(30):
        _step(engine, fleet[:9], k)
        _step(engine, fleet[9:], k - 2)
    for k in range(30, 33):
        for i, name in enumerate(fleet[:9]):
            _step(engine, [name], k)
            # The fleet's step moves at the second host (a tenth of the fleet); from then on
            # the rest are waited for, until the ninth.
            assert engine.step_complete() == (i in (0, 8)), (k, i)
        _step(engine, fleet[9:], k - 2)
        assert engine.step_complete()


def test_two_servers_one_clock_fast_does_not_freeze_the_other(toy_dir: Path) -> None:
    engine = _open(toy_dir, max_future_s=3600.0)
    pair = ["ppdb001", "ppdb002"]
    for k in range(30):
        _step(engine, pair, k)
    now = START + 30 * STEP + 20
    engine.ingest(_batch([now + 3300], pair[1:], [ROW]), now=now)
    for k in range(30, 36):
        assert _step(engine, pair[:1], k).closed_steps == 1
        _step(engine, pair[1:], k)
        assert engine.run_forecast().data_time == _iso(START + (k - 1) * STEP)
