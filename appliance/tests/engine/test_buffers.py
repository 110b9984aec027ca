"""Ring buffers: bucketing by data time, duplicates, out-of-order, too-old, replay equality."""

from __future__ import annotations

import numpy as np
import pytest

from fleetcast.appliance.buffers import (
    CODE_ACCEPTED,
    CODE_DUPLICATE,
    CODE_SUPERSEDED,
    CODE_TOO_OLD,
    RingBuffers,
)

STEP = 300
T0 = 1_795_000_000 - 1_795_000_000 % STEP  # a step boundary in 2026


def _feed(buf: RingBuffers, ts, srv, metrics, state) -> np.ndarray:
    return buf.append(
        np.asarray(srv, dtype=np.int64),
        np.asarray(ts, dtype=np.int64),
        np.asarray(metrics, dtype=np.float64),
        np.asarray(state, dtype=np.int8),
    )


def _canonical(buf: RingBuffers) -> tuple[np.ndarray, ...]:
    n = buf.n
    return (
        buf.values[:n].copy(),
        buf.state[:n].copy(),
        buf.slot_step[:n].copy(),
        buf.slot_off[:n].copy(),
        buf.last_step[:n].copy(),
    )


@pytest.mark.parametrize("every", [1, 10, 60, 300, 900])
def test_bucketing_keeps_the_last_sample_of_each_step(every: int) -> None:
    buf = RingBuffers(capacity=2, ring_steps=32)
    buf.register("a")
    ts = np.arange(T0, T0 + 12 * STEP, every, dtype=np.int64)
    vals = np.column_stack([np.arange(ts.size) % 100, np.full(ts.size, 50.0), ts - T0, ts % 7])
    codes = _feed(buf, ts, np.zeros(ts.size), vals, np.zeros(ts.size))
    assert set(codes.tolist()) <= {CODE_ACCEPTED}
    for k in range(12):
        in_step = ts // STEP == T0 // STEP + k
        present, got, _ = buf.series(0, T0 // STEP + k, 1)
        if not in_step.any():
            assert not present[0]
            continue
        last = np.flatnonzero(in_step)[-1]
        assert present[0]
        np.testing.assert_array_equal(got[0], vals[last].astype(np.float32))
    assert buf.last_step[0] == ts[-1] // STEP


def test_same_samples_in_any_chunking_and_order_give_identical_buffers(make_samples) -> None:
    names = ["ppweb001", "ppdb001", "x-1"]
    data = make_samples(names, T0 + 17, 60 * STEP, 37, seed=3)  # 60 steps > ring of 40
    n = data["ts"].size
    # add exact duplicates and a same-timestamp conflict
    dup = np.arange(0, n, 11)
    ts = np.concatenate([data["ts"], data["ts"][dup], data["ts"][:5]])
    srv_names = np.concatenate([data["server"], data["server"][dup], data["server"][:5]])
    metrics = np.concatenate([data["metrics"], data["metrics"][dup], data["metrics"][:5] + 1.0])
    state = np.concatenate([np.arange(n) % 8, (np.arange(n) % 8)[dup], np.zeros(5)]).astype(np.int8)
    srv = np.array([names.index(s) for s in srv_names], dtype=np.int64)

    def build(order: np.ndarray, chunk: int) -> tuple[np.ndarray, ...]:
        buf = RingBuffers(capacity=4, ring_steps=40)
        for name in names:
            buf.register(name)
        for lo in range(0, order.size, chunk):
            sel = order[lo : lo + chunk]
            _feed(buf, ts[sel], srv[sel], metrics[sel], state[sel])
        return _canonical(buf)

    reference = build(np.arange(ts.size), ts.size)
    rng = np.random.default_rng(0)
    for chunk in (1, 7, 100, 1000):
        for order in (np.arange(ts.size), rng.permutation(ts.size), np.arange(ts.size)[::-1]):
            got = build(order, chunk)
            for a, b in zip(reference, got, strict=True):
                np.testing.assert_array_equal(a, b)


def test_duplicates_are_idempotent_and_conflicts_resolve_deterministically() -> None:
    buf = RingBuffers(capacity=1, ring_steps=8)
    buf.register("a")
    row = [[10.0, 20.0, 1.0, 5.0]]
    assert _feed(buf, [T0 + 5], [0], row, [1]).tolist() == [CODE_ACCEPTED]
    before = _canonical(buf)
    assert _feed(buf, [T0 + 5], [0], row, [1]).tolist() == [CODE_DUPLICATE]
    for a, b in zip(before, _canonical(buf), strict=True):
        np.testing.assert_array_equal(a, b)
    # same timestamp, smaller tuple: kept out; larger tuple: wins
    assert _feed(buf, [T0 + 5], [0], [[9.0, 99.0, 1.0, 5.0]], [1]).tolist() == [CODE_SUPERSEDED]
    assert _feed(buf, [T0 + 5], [0], [[11.0, 0.0, 1.0, 5.0]], [1]).tolist() == [CODE_ACCEPTED]
    assert buf.values[0, (T0 // STEP) % 8, 0] == 11.0
    # an earlier sample of the same step never replaces a later one
    assert _feed(buf, [T0 + 1], [0], [[50.0, 50.0, 1.0, 5.0]], [2]).tolist() == [CODE_SUPERSEDED]
    assert buf.samples[0] == 5  # every acknowledged sample is counted


def test_out_of_order_within_the_ring_is_stored_and_older_is_rejected() -> None:
    buf = RingBuffers(capacity=1, ring_steps=8)
    buf.register("a")
    step0 = T0 // STEP
    _feed(buf, [T0 + 10 * STEP], [0], [[1.0, 1.0, 1.0, 1.0]], [0])
    codes = _feed(
        buf,
        [T0 + 5 * STEP, T0 + 3 * STEP, T0 + 2 * STEP],
        [0, 0, 0],
        [[2.0, 2, 2, 2], [3.0, 3, 3, 3], [4.0, 4, 4, 4]],
        [0, 0, 0],
    )
    # ring of 8 steps ending at step 10 holds steps 3..10: step 2 is too old
    assert codes.tolist() == [CODE_ACCEPTED, CODE_ACCEPTED, CODE_TOO_OLD]
    present, vals, _ = buf.series(0, step0 + 10, 8)
    assert present.tolist() == [True, False, True, False, False, False, False, True]
    assert vals[0, 0] == 3.0
    assert vals[2, 0] == 2.0
    assert vals[7, 0] == 1.0
    assert buf.last_step[0] == step0 + 10


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_a_sample_too_old_for_the_batchs_newest_step_is_refused_in_any_order(order) -> None:
    """Judged against the step the server reached before the batch, a two-day-old sample
    first in a batch was "accepted", then pushed out of the ring by the next one."""
    buf = RingBuffers(capacity=1, ring_steps=8)
    buf.register("a")
    ts = np.array([T0, T0 + 576 * STEP])[order]
    codes = _feed(buf, ts, [0, 0], [[1.0, 1, 1, 1], [2.0, 2, 2, 2]], [0, 0])
    by_time = dict(zip(ts.tolist(), codes.tolist(), strict=True))
    assert by_time == {T0: CODE_TOO_OLD, T0 + 576 * STEP: CODE_ACCEPTED}
    assert buf.last_step[0] == T0 // STEP + 576


def test_advancing_clears_steps_that_leave_the_ring() -> None:
    buf = RingBuffers(capacity=1, ring_steps=4)
    buf.register("a")
    _feed(buf, [T0, T0 + STEP], [0, 0], [[1.0, 1, 1, 1], [2.0, 2, 2, 2]], [0, 0])
    _feed(buf, [T0 + 5 * STEP], [0], [[3.0, 3, 3, 3]], [0])  # ring now steps 2..5
    assert sorted(buf.slot_step[0].tolist()) == [-1, -1, -1, T0 // STEP + 5]
    _feed(buf, [T0 + 100 * STEP], [0], [[4.0, 4, 4, 4]], [0])  # a long jump
    assert sorted(buf.slot_step[0].tolist()) == [-1, -1, -1, T0 // STEP + 100]


def test_capacity_is_a_clear_refusal() -> None:
    buf = RingBuffers(capacity=2, ring_steps=4)
    assert buf.register("a") == 0
    assert buf.register("b") == 1
    assert buf.register("a") == 0
    assert buf.register("c") == -1
    assert buf.n == 2


def test_state_arrays_round_trip_and_rebucket(make_samples) -> None:
    data = make_samples(["a", "b"], T0, 30 * STEP, 120, seed=1)
    srv = (data["server"] == "b").astype(np.int64)
    buf = RingBuffers(capacity=3, ring_steps=20)
    buf.register("a")
    buf.register("b")
    _feed(buf, data["ts"], srv, data["metrics"], np.zeros(srv.size))
    arrays = buf.state_arrays()
    assert all(a.dtype != object for a in arrays.values())
    same = RingBuffers(capacity=3, ring_steps=20)
    same.load_arrays(arrays)
    for a, b in zip(_canonical(buf), _canonical(same), strict=True):
        np.testing.assert_array_equal(a, b)
    bigger = RingBuffers(capacity=3, ring_steps=50)
    bigger.load_arrays(arrays)
    end = int(buf.last_step[1])
    for s in (0, 1):
        p1, v1, _ = buf.series(s, end, 20)
        p2, v2, _ = bigger.series(s, end, 20)
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(v1[p1], v2[p2])
    assert bigger.names == ["a", "b"]


def test_a_freed_slot_is_empty_reused_lowest_first_and_kept_by_snapshots() -> None:
    buf = RingBuffers(capacity=3, ring_steps=4)
    for name in ("a", "b", "c"):
        buf.register(name)
    srv = [0, 1, 1, 2]
    _feed(buf, [T0, T0, T0 + STEP, T0], srv, [[1.0, 2.0, 3.0, 4.0]] * 4, [0, 0, 1, 0])
    assert buf.free(1) == 2  # two steps held
    assert buf.free(0) == 1
    with pytest.raises(ValueError, match="slot 1 holds no server"):
        buf.free(1)
    assert (buf.count, buf.n, buf.names) == (1, 3, ["", "", "c"])
    assert buf.used.tolist() == [False, False, True]
    assert (buf.slot_step[:2] == -1).all()
    assert buf.last_step[:2].tolist() == [-1, -1]
    assert buf.samples[:2].tolist() == [0, 0]
    assert buf.generation.tolist() == [1, 1, 0]
    arrays = buf.state_arrays()
    assert arrays["names"].tolist() == ["", "", "c"]
    again = RingBuffers(capacity=3, ring_steps=4)
    again.load_arrays(arrays)
    for b in (buf, again):
        assert b.register("d") == 0  # the lowest free slot first
        assert b.register("e") == 1
        assert b.register("f") == -1  # full again
        assert b.index == {"d": 0, "e": 1, "c": 2}
        p, _, _ = b.series(1, int(T0 // STEP) + 1, 2)
        assert not p.any()  # nothing of b's steps in e's slot


def test_snapshots_keep_every_character_of_a_name() -> None:
    # numpy's unicode arrays drop trailing NULs: "trail\0" came back as a second "trail",
    # and "\0" as "", a free slot, its data orphaned.
    names = ["trail\0", "trail", "\0", "a\0b", "é\0\0"]
    buf = RingBuffers(capacity=6, ring_steps=4)
    for name in names:
        buf.register(name)
    buf.free(1)  # a free slot between them stays free
    arrays = buf.state_arrays()
    again = RingBuffers(capacity=6, ring_steps=4)
    again.load_arrays(arrays)
    assert again.names == ["trail\0", "", "\0", "a\0b", "é\0\0"]
    assert again.index == {"trail\0": 0, "\0": 2, "a\0b": 3, "é\0\0": 4}
    assert again.used[:5].tolist() == [True, False, True, True, True]
    # A snapshot written before the lengths were kept still loads (as it always did).
    older = RingBuffers(capacity=6, ring_steps=4)
    older.load_arrays({k: v for k, v in arrays.items() if k != "name_lengths"})
    assert older.names == ["trail", "", "", "a\0b", "é"]


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_large_capacity_costs_memory_only_as_servers_arrive() -> None:
    from fleetcast.appliance.history import RiskHistory

    capacity, ring = 100_000, 386  # ~2.3 GB of buffers and risk history if all were touched
    before = _rss_kib()
    buf = RingBuffers(capacity, ring)
    history = RiskHistory(capacity, ring, 288)
    for i in range(50):
        history.initialise(buf.register(f"pp{i}") + 1)
    grown_mib = (_rss_kib() - before) / 1024
    assert grown_mib < 64, grown_mib  # 50 servers' rows are ~1 MB
    # A slot in use has its empty marks; so does every slot a snapshot restores.
    assert (buf.state[:50] == -1).all()
    assert (buf.slot_step[:50] == -1).all()
    assert np.isnan(history.risk[:50]).all()
    assert (history.risk_step[:50] == -1).all()
    _feed(buf, [T0 + 10], [49], [[1.0, 2.0, 3.0, 4.0]], [0])
    restored = RingBuffers(capacity, ring)
    restored.load_arrays(buf.state_arrays())
    np.testing.assert_array_equal(_canonical(restored)[2], _canonical(buf)[2])
    assert restored.register("pp50") == 50
    assert (restored.state[50] == -1).all()
    assert (restored.slot_step[50] == -1).all()
    hist2 = RiskHistory(capacity, ring, 288)
    hist2.load_arrays({}, 50)  # nothing saved for them: empty, not zeros
    assert np.isnan(hist2.risk[:50]).all()
    assert (hist2.risk_step[:50] == -1).all()
