"""The Numba window kernels equal the numpy reference preprocessing (fleetcast.contract.features)."""

from __future__ import annotations

import numpy as np

from fleetcast.appliance.buffers import RingBuffers
from fleetcast.appliance.windows import WindowInputs, build_windows, plan_from_spec, window_lengths
from fleetcast.contract.encoder import profile_from_name, server_id
from fleetcast.contract.features import build_inputs, day_ago_rows
from fleetcast.contract.schema import VALID_STATES

STEP = 300
T0 = 1_795_000_000 - 1_795_000_000 % STEP


def _reference_fill(
    buf: RingBuffers, s: int, end: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward-filled (n, 4) values, (n,) states and (n,) source steps (the step each row
    repeats) of steps end-n+1..end, written plainly."""
    span = buf.ring_steps - 1
    present, vals, states = buf.series(s, end, span)
    cur_v, cur_s, cur_src = None, -1, -1
    out_v, out_s, out_src = [], [], []
    for t in range(span):
        if present[t]:
            cur_v, cur_s, cur_src = vals[t], int(states[t]), end - span + 1 + t
        out_v.append(cur_v)
        out_s.append(cur_s)
        out_src.append(cur_src)
    return (
        np.array(out_v[-n:], dtype=np.float64),
        np.array(out_s[-n:], dtype=np.int64),
        np.array(out_src[-n:], dtype=np.int64),
    )


def test_kernel_windows_equal_the_reference(spec, make_samples) -> None:
    e = spec.encoder_length  # 24
    buf = RingBuffers(capacity=16, ring_steps=e + 2)
    names = ["ppweb001", "ppdb001", "ppml0001", "ppetl001", "host-x", "ppgen001", "ppcon01"]
    for name in names:
        buf.register(name)
    rng = np.random.default_rng(7)
    t_end = T0 + 60 * STEP

    def put(s: int, steps: np.ndarray) -> None:
        ts = T0 + steps * STEP + rng.integers(0, STEP, steps.size)
        vals = np.column_stack(
            [
                rng.uniform(0, 100, steps.size),
                rng.uniform(0, 100, steps.size),
                rng.lognormal(2, 1, steps.size),
                rng.lognormal(3, 0.5, steps.size),
            ]
        )
        vals[::7, 2] = 0.0  # zeros in a log1p target
        st = rng.integers(-1, len(VALID_STATES), steps.size)
        buf.append(np.full(steps.size, s), ts, vals, st.astype(np.int8))

    put(0, np.arange(0, 61))  # full history
    put(1, np.setdiff1d(np.arange(0, 61), [40, 41, 50, 59]))  # gaps incl. the last closed step
    put(2, np.arange(50, 61))  # short: 10 closed steps
    put(3, np.array([30, 35, 45, 52, 60]))  # the window starts at 45: 36..44 are no rows
    put(4, np.arange(46, 61, 1))  # unknown server, 14 closed steps
    put(5, np.array([60]))  # only the open step: not ready
    put(6, np.arange(55, 61))  # 5 closed steps < min 6: warming
    last = int(t_end // STEP)
    n = buf.n
    lengths = window_lengths(buf.slot_step, buf.last_step, n, e)
    assert lengths.tolist() == [e, e, 10, 15, 14, 0, 5]
    ready = np.flatnonzero(lengths >= spec.min_encoder_length)
    assert ready.tolist() == [0, 1, 2, 3, 4]

    static = np.zeros((16, 2), dtype=np.int64)
    for i, name in enumerate(names):
        static[i, 0] = spec.encode_categorical("profile", [profile_from_name(name)])[0]
        static[i, 1] = spec.encode_categorical("server_id", [server_id(name)])[0]
    plan = plan_from_spec(spec)
    out = WindowInputs.allocate(plan, 8)
    out.encoder_cont[:] = 99.0  # stale garbage must be overwritten
    build_windows(
        plan,
        out,
        ready,
        lengths[ready],
        buf.values,
        buf.state,
        buf.slot_step,
        buf.last_step,
        static,
    )

    b = ready.size
    values = np.zeros((b, e, 4))
    states = np.full((b, e), -1, dtype=np.int64)
    sources = np.zeros((b, e), dtype=np.int64)
    for row, s in enumerate(ready.tolist()):
        nn = int(lengths[s])
        v, st, src = _reference_fill(buf, s, last - 1, nn)
        values[row, :nn] = v
        states[row, :nn] = st
        sources[row, :nn] = src
    # Filled rows repeat their source row's calendar columns: server 1's steps 40 and 41
    # repeat 39; server 3's window starts at its first sample in it, 45, and 46..51 repeat it.
    base, start = T0 // STEP, last - e
    assert sources[1, base + 40 - start : base + 42 - start].tolist() == [base + 39] * 2
    assert sources[3, :8].tolist() == [base + 45] * 7 + [base + 52]
    assert start == base + 36
    ref = build_inputs(
        spec,
        values,
        lengths[ready],
        states,
        [profile_from_name(names[s]) for s in ready],
        [names[s] for s in ready],
        np.full(b, last - 1),
        source_steps=sources,
    )
    got = out.feed(0, b)
    for key, want in ref.as_feed().items():
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got[key], want, rtol=2e-6, atol=2e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], want, err_msg=key)
    # unknown servers get the unknown server_id code; known ones their class code
    sid_col = list(spec.x_categoricals).index("server_id")
    assert got["encoder_cat"][:, 0, sid_col].tolist()[3:] == [0, 0]
    assert all(c > 0 for c in got["encoder_cat"][:3, 0, sid_col].tolist())


def test_lengths_of_empty_and_single_step_servers() -> None:
    buf = RingBuffers(capacity=3, ring_steps=10)
    buf.register("a")
    buf.register("b")
    buf.append(
        np.array([1, 1], dtype=np.int64),
        np.array([T0, T0 + STEP], dtype=np.int64),
        np.ones((2, 4)),
        np.zeros(2, dtype=np.int8),
    )
    assert window_lengths(buf.slot_step, buf.last_step, 2, 8).tolist() == [0, 1]


def test_kernel_day_ago_inputs_equal_the_reference(spec_factory) -> None:
    """A model with day-ago inputs: the kernel's lagged columns equal day_ago_rows' rule
    (forward fill over gaps, backward fill before the first step) in encoder and decoder."""
    spec = spec_factory(day_ago_lag=100)
    e, lag = spec.encoder_length, spec.max_lag
    assert spec.history_steps == e + lag
    buf = RingBuffers(capacity=8, ring_steps=spec.history_steps + 2)
    names = ["ppweb001", "ppdb001", "ppml0001", "ppetl001", "ppgen001"]
    for name in names:
        buf.register(name)
    rng = np.random.default_rng(11)
    last_open = 300
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def put(s: int, steps: np.ndarray) -> None:
        vals = np.column_stack(
            [
                rng.uniform(0, 100, steps.size),
                rng.uniform(0, 100, steps.size),
                rng.lognormal(2, 1, steps.size),
                rng.lognormal(3, 0.5, steps.size),
            ]
        )
        vals[::5, 3] = 0.0
        ts = T0 + steps * STEP + rng.integers(0, STEP, steps.size)
        buf.append(np.full(steps.size, s), ts, vals, np.zeros(steps.size, dtype=np.int8))
        kept[s] = (steps, vals.astype(np.float32).astype(np.float64))

    all_steps = np.arange(0, last_open + 1)
    put(0, all_steps)  # more history than the ring holds
    # gaps where the lagged rows fall (encoder 176..275 - 100, decoder 276..371 - 100)
    put(1, np.setdiff1d(all_steps, [150, 175, 176, 177, 200, 240, 241, 299]))
    put(2, np.arange(250, last_open + 1))  # younger than a day: backward fill, then the series
    put(3, np.arange(290, last_open + 1))  # every lagged row before its first step
    put(4, np.array([10, 120, 180, 230, 260, 285, 290, 295, 300]))  # sparse
    lengths = window_lengths(buf.slot_step, buf.last_step, buf.n, e)
    ready = np.flatnonzero(lengths >= spec.min_encoder_length)
    assert ready.tolist() == [0, 1, 2, 3, 4]
    plan = plan_from_spec(spec)
    assert plan.lag == lag
    out = WindowInputs.allocate(plan, 8)
    out.decoder_cont[:] = 99.0
    static = np.zeros((8, 2), dtype=np.int64)
    build_windows(
        plan, out, ready, lengths[ready], buf.values, buf.state, buf.slot_step,
        buf.last_step, static,
    )  # fmt: skip
    end = last_open - 1
    for row, s in enumerate(ready.tolist()):
        n = int(lengths[s])
        steps, vals = kept[s]
        # The appliance fills from what its ring holds: closed steps of the last W - 1.
        held = (steps <= end) & (steps > last_open - buf.ring_steps)
        want = day_ago_rows(spec, steps[held], vals[held], n, end)
        values = np.zeros((1, e, 4))
        pos = np.searchsorted(steps, np.arange(end - n + 1, end + 1), side="right") - 1
        values[0, :n] = vals[np.maximum(pos, 0)]
        ref = build_inputs(
            spec, values, np.array([n]), np.full((1, e), -1), ["generic"], [names[s]],
            np.array([end]), day_ago=want[None],
        )  # fmt: skip
        cols = [i for i, c in enumerate(spec.x_reals) if c.endswith("_day_ago")]
        np.testing.assert_allclose(
            out.encoder_cont[row, :n][:, cols], ref.encoder_cont[0, :n][:, cols], rtol=2e-6,
            atol=2e-6, err_msg=names[s],
        )  # fmt: skip
        np.testing.assert_allclose(
            out.decoder_cont[row][:, cols], ref.decoder_cont[0][:, cols], rtol=2e-6,
            atol=2e-6, err_msg=names[s],
        )  # fmt: skip
    # Server 3 starts at step 290: decoder steps up to 390 look back to its first value or
    # before it (backward fill), the last five see steps 291..295.
    first = kept[3][1][0]
    col = list(spec.x_reals).index("cpu_pct_day_ago")
    sc = spec.real_scalers["cpu_pct_day_ago"]
    row3 = ready.tolist().index(3)
    np.testing.assert_allclose(
        out.decoder_cont[row3, :91, col], (first[0] - sc.mean) / sc.scale, rtol=1e-6
    )
    assert len(set(out.decoder_cont[row3, 91:, col].tolist())) == 5


def test_a_window_starts_at_its_first_sample_however_wide_the_ring() -> None:
    """A day-ago model's ring is a day wider than its encoder; a server back from a long
    outage must still start cold, not forward-fill the outage, and a window that begins in a
    gap starts at its first sample, not filled from the step before it: pytorch-forecasting's
    windows start at a row (docs/RISK.md#windows)."""
    e = 24
    buf = RingBuffers(capacity=2, ring_steps=e + 100 + 2)
    buf.register("back")
    buf.register("edge")

    def put(s: int, steps: np.ndarray) -> None:
        n = steps.size
        buf.append(np.full(n, s), T0 + steps * STEP, np.ones((n, 4)), np.zeros(n, dtype=np.int8))

    put(0, np.r_[np.arange(150, 200), np.arange(294, 301)])  # 6 closed steps after 94 missing
    put(1, np.r_[np.arange(150, 276), np.arange(290, 301)])  # step 275 = just before the window
    assert window_lengths(buf.slot_step, buf.last_step, 2, e).tolist() == [6, 10]
