"""The numpy reference preprocessing and the metadata layout (no torch, no onnx).

The equality with pytorch-forecasting's dataloader is proven in the exporter's tests
(exporter/tests/test_reference_preprocessing.py); these tests pin the rules themselves.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from fleetcast.contract.encoder import server_id
from fleetcast.contract.errors import ContractError
from fleetcast.contract.features import (
    METADATA_KEYS,
    ModelSpec,
    RealScaler,
    build_inputs,
    calendar_features,
    day_ago_rows,
    encode_states,
    window_target_scale,
)
from fleetcast.contract.schema import VALID_PROFILES, VALID_STATES

TARGETS = ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")


def make_spec(e: int = 8, d: int = 4) -> ModelSpec:
    """A small spec with the production feature layout."""
    reals = (
        "encoder_length",
        *(f"{t}_{k}" for t in TARGETS for k in ("center", "scale")),
        "hour_sin",
        "hour_cos",
        "dow_sin",
        "dow_cos",
        *TARGETS,
    )
    scalers = {"encoder_length": RealScaler("encoder_length", e / 2, e / 2)}
    for i, t in enumerate(TARGETS):
        scalers[f"{t}_center"] = RealScaler("target_center", 1.0 + i, 2.0, t)
        scalers[f"{t}_scale"] = RealScaler("target_scale", 0.5, 0.25, t)
        scalers[t] = RealScaler("target", target=t)
    for name in ("hour_sin", "hour_cos", "dow_sin", "dow_cos"):
        scalers[name] = RealScaler("calendar")
    return ModelSpec(
        contract_version="1.0.0",
        model_version="m1",
        bundle_id="tft_model_20260101_000000",
        weights_sha256="ab" * 32,
        step_seconds=300,
        encoder_length=e,
        min_encoder_length=2,
        prediction_length=d,
        horizons={"30min": 6} if d >= 6 else {},
        targets=TARGETS,
        target_transforms={
            "cpu_pct": "identity",
            "mem_pct": "identity",
            "disk_io_mb_s": "log1p",
            "latency_ms": "log1p",
        },
        target_min_scale={"cpu_pct": 0.5, "mem_pct": 0.5, "disk_io_mb_s": 0.02, "latency_ms": 0.02},
        quantiles=(0.1, 0.5, 0.9),
        profiles=VALID_PROFILES,
        states=VALID_STATES,
        x_categoricals=("profile", "server_id", "state"),
        x_reals=reals,
        feature_roles={
            "static_categoricals": ("profile", "server_id"),
            "static_reals": reals[:9],
            "known_categoricals": (),
            "known_reals": ("hour_sin", "hour_cos", "dow_sin", "dow_cos"),
            "unknown_categoricals": ("state",),
            "unknown_reals": TARGETS,
        },
        categorical_classes={
            "profile": {"nan": 0, **{p: i + 1 for i, p in enumerate(sorted(VALID_PROFILES))}},
            "server_id": {"nan": 0, server_id("ppdb001"): 1, server_id("ppweb001"): 2},
            "state": {"nan": 0, **{s: i + 1 for i, s in enumerate(sorted(VALID_STATES))}},
        },
        unknown_codes={"profile": 0, "server_id": 0, "state": 0},
        real_scalers=scalers,
        server_mapping={"ppdb001": server_id("ppdb001"), "ppweb001": server_id("ppweb001")},
        provenance={"note": "test"},
    )


def test_metadata_round_trip_is_json_strings() -> None:
    spec = make_spec()
    meta = spec.to_metadata()
    assert set(meta) == set(METADATA_KEYS.values())
    assert all(isinstance(v, str) for v in meta.values())
    assert json.loads(meta["fleetcast.encoder_length"]) == 8
    assert ModelSpec.from_metadata(meta) == spec


def test_missing_or_bad_metadata_is_a_contract_error() -> None:
    meta = make_spec().to_metadata()
    del meta["fleetcast.x_reals"]
    with pytest.raises(ContractError, match=r"no 'fleetcast\.x_reals' entry") as info:
        ModelSpec.from_metadata(meta)
    assert "fleetcast export" in str(info.value)
    meta = make_spec().to_metadata()
    meta["fleetcast.format_version"] = "99"
    with pytest.raises(ContractError, match="format 1"):
        ModelSpec.from_metadata(meta)
    meta = make_spec().to_metadata()
    meta["fleetcast.real_scalers"] = json.dumps({"hour_sin": {"source": "calendar"}})
    with pytest.raises(ContractError, match=r"malformed|no scaler"):
        ModelSpec.from_metadata(meta)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("horizons", {"30min": 6, "8hr": 96}, "horizon '8hr' is 96 steps, not in 1..8"),
        ("horizons", {"now": 0}, "horizon 'now' is 0 steps"),
        ("quantiles", (0.9, 0.5, 0.1), "quantiles [0.9, 0.5, 0.1] are not two or more"),
        ("quantiles", (0.5, 0.5), "quantiles [0.5, 0.5]"),
        ("quantiles", (0.5,), "quantiles [0.5]"),
        ("quantiles", (0.0, 0.5), "quantiles [0.0, 0.5]"),
    ],
)
def test_a_spec_the_appliance_cannot_serve_is_refused(field, value, problem) -> None:
    """The exporter and the appliance share these checks: an export cannot make such a file."""
    meta = dataclasses.replace(make_spec(d=8), **{field: value}).to_metadata()
    with pytest.raises(ContractError, match="metadata is inconsistent") as info:
        ModelSpec.from_metadata(meta)
    assert problem in str(info.value)


def test_calendar_features_at_known_times() -> None:
    # 2026-01-05 is a Monday; 06:00 UTC → hour 6, dow 0.25.
    t = 1_767_571_200 + 6 * 3600
    out = calendar_features(np.array([t // 300]), 300)[0]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:2], [1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(
        out[2:], [math.sin(2 * math.pi * 0.25 / 7), math.cos(2 * math.pi * 0.25 / 7)], atol=1e-7
    )
    assert calendar_features(np.zeros((2, 3), dtype=np.int64), 300).shape == (2, 3, 4)


def test_window_target_scale_rule() -> None:
    spec = make_spec()
    values = np.zeros((2, 8, 4))
    values[0, :3, 0] = [10.0, 20.0, 30.0]
    values[0, :3, 2] = [0.0, 1.0, 3.0]
    values[1, :1] = 5.0  # one step: scale = floor
    values[0, 3:] = 1e9  # padding rows are ignored
    transformed, scale = window_target_scale(spec, values, np.array([3, 1]))
    assert scale.shape == (2, 4, 2)
    assert scale[0, 0, 0] == 30.0
    assert scale[0, 0, 1] == pytest.approx(10.0)
    y = np.log1p([0.0, 1.0, 3.0])
    assert scale[0, 2, 0] == pytest.approx(y[-1])
    assert scale[0, 2, 1] == pytest.approx(np.std(y, ddof=1))
    assert scale[0, 1, 1] == 0.5  # constant mem_pct → the floor
    np.testing.assert_allclose(scale[1, :, 1], [0.5, 0.5, 0.02, 0.02])
    assert (transformed[0, 3:] == 0).all()


def test_build_inputs_shapes_codes_and_values() -> None:
    spec = make_spec()
    rng = np.random.default_rng(0)
    values = rng.uniform(1, 50, size=(3, 8, 4))
    lengths = np.array([8, 2, 5])
    states = encode_states(
        spec, np.array([["healthy"] * 8, [None] * 8, ["offline"] * 5 + [None] * 3], dtype=object)
    )
    last = np.array([1000, 2000, 3000])
    out = build_inputs(
        spec,
        values,
        lengths,
        states,
        ["database", "web_api", "nope"],
        ["ppdb001", "ppweb001", "unknown-host"],
        last,
    )
    assert out.encoder_cat.shape == (3, 8, 3)
    assert out.encoder_cat.dtype == np.int64
    assert out.encoder_cont.shape == (3, 8, 17)
    assert out.encoder_cont.dtype == np.float32
    assert out.decoder_cat.shape == (3, 4, 3)
    assert out.decoder_cont.shape == (3, 4, 17)
    assert out.target_scale.shape == (3, 4, 2)
    assert out.target_scale.dtype == np.float32
    profile, sid, state = 0, 1, 2
    assert out.encoder_cat[0, 0, profile] == spec.categorical_classes["profile"]["database"]
    assert out.encoder_cat[2, 0, profile] == 0  # unknown profile
    assert out.encoder_cat[0, 0, sid] == 1
    assert out.encoder_cat[1, 0, sid] == 2
    assert out.encoder_cat[2, 0, sid] == 0  # unknown server
    assert out.encoder_cat[0, 0, state] == spec.categorical_classes["state"]["healthy"]
    assert out.encoder_cat[1, 0, state] == 0  # null state
    assert (out.decoder_cat[:, :, state] == 0).all()
    # padding rows are all zero, as pytorch-forecasting pads
    assert (out.encoder_cat[1, 2:] == 0).all()
    assert (out.encoder_cont[1, 2:] == 0).all()
    # encoder_length: (L - E/2) / (E/2)
    np.testing.assert_allclose(out.encoder_cont[:, 0, 0], [1.0, -0.5, 0.25])
    np.testing.assert_allclose(out.decoder_cont[:, 0, 0], [1.0, -0.5, 0.25])
    # the target column is normalised by the window: its last valid row is 0 (centre)
    col = spec.x_reals.index("cpu_pct")
    assert out.encoder_cont[0, 7, col] == pytest.approx(0.0, abs=1e-6)
    assert out.encoder_cont[2, 4, col] == pytest.approx(0.0, abs=1e-6)
    assert (out.decoder_cont[..., col] == 0).all()
    # centre column: (centre - mean) / scale
    c = spec.x_reals.index("cpu_pct_center")
    assert out.encoder_cont[0, 3, c] == pytest.approx((values[0, 7, 0] - 1.0) / 2.0, rel=1e-6)
    # calendar: decoder step j is last + 1 + j; encoder row i is last - L + 1 + i
    h = spec.x_reals.index("hour_sin")
    np.testing.assert_allclose(
        out.decoder_cont[1, :, h], calendar_features(np.arange(2001, 2005), 300)[:, 0]
    )
    np.testing.assert_allclose(
        out.encoder_cont[2, :5, h], calendar_features(np.arange(2996, 3001), 300)[:, 0]
    )
    assert set(out.as_feed()) == {
        "encoder_cat",
        "encoder_cont",
        "encoder_lengths",
        "decoder_cat",
        "decoder_cont",
        "target_scale",
    }


def test_a_filled_row_repeats_its_source_rows_calendar_and_day_ago_values() -> None:
    """pytorch-forecasting fills a missing step by repeating the previous row whole: given
    the row's source step, build_inputs takes that step's calendar features, and
    day_ago_rows the value a lag before that step."""
    spec = make_spec()
    last, length = 1000, 8
    own = np.arange(last - length + 1, last + 1)  # 993..1000
    observed = np.array([993, 994, 997, 998, 999, 1000])  # 995 and 996 are missing
    source = observed[np.searchsorted(observed, own, side="right") - 1]
    assert source.tolist() == [993, 994, 994, 994, 997, 998, 999, 1000]
    values = np.full((1, 8, 4), 10.0)
    args = (spec, values, np.array([length]), np.zeros((1, 8)), ["generic"], ["a"], [last])
    plain = build_inputs(*args)
    filled = build_inputs(*args, source_steps=source[None])
    cols = [spec.x_reals.index(n) for n in ("hour_sin", "hour_cos", "dow_sin", "dow_cos")]
    want = calendar_features(source, 300)
    np.testing.assert_allclose(filled.encoder_cont[0][:, cols], want, atol=1e-7)
    np.testing.assert_allclose(plain.encoder_cont[0][:, cols], calendar_features(own, 300))
    assert not np.allclose(filled.encoder_cont[0, 2, cols], plain.encoder_cont[0, 2, cols])
    np.testing.assert_array_equal(filled.decoder_cont, plain.decoder_cont)
    with pytest.raises(ValueError, match=r"source_steps of shape \(1, 8\)"):
        build_inputs(*args, source_steps=source[None, :7])

    # day_ago_rows: lag 3 over a series whose value is its step number
    day_ago = RealScaler("target_day_ago", lag=3, target="cpu_pct")
    lagged = replace(spec, real_scalers={**spec.real_scalers, "cpu_pct_day_ago": day_ago})
    assert lagged.max_lag == 3
    history = np.arange(980, 1001)
    history = history[~np.isin(history, [995, 996])]
    rows = day_ago_rows(lagged, history, np.repeat(history[:, None], 4, axis=1), length, last)

    def at(steps: np.ndarray) -> np.ndarray:  # the value at a step: forward-filled
        return history[np.searchsorted(history, steps, side="right") - 1]

    np.testing.assert_array_equal(rows[:length, 0], at(source - 3))
    assert rows[:length, 0].tolist() == [990, 991, 991, 991, 994, 994, 994, 997]
    np.testing.assert_array_equal(rows[8:, 0], at(np.arange(1001, 1005) - 3))


def test_build_inputs_rejects_bad_shapes_and_states() -> None:
    spec = make_spec()
    with pytest.raises(ValueError, match=r"values of shape \(B, 8, 4\)"):
        build_inputs(
            spec,
            np.zeros((1, 7, 4)),
            np.array([7]),
            np.zeros((1, 7)),
            ["generic"],
            ["a"],
            np.array([1]),
        )
    with pytest.raises(ValueError, match=r"lengths in 1\.\.8"):
        build_inputs(
            spec,
            np.zeros((1, 8, 4)),
            np.array([0]),
            np.zeros((1, 8)),
            ["generic"],
            ["a"],
            np.array([1]),
        )
    with pytest.raises(ContractError, match="Unknown state 'sleepy'"):
        encode_states(spec, np.array(["sleepy"], dtype=object))


def test_state_code_table_maps_minus_one_to_unknown() -> None:
    spec = make_spec()
    table = spec.state_code_table()
    assert table.shape == (len(VALID_STATES) + 1,)
    assert table[-1] == 0
    assert table[VALID_STATES.index("idle")] == spec.categorical_classes["state"]["idle"]
