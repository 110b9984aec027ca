"""The numpy reference preprocessing equals pytorch-forecasting's dataloader, window by window.

This is the contract the appliance's Numba kernels implement: from raw windows and the
ONNX metadata alone, :func:`fleetcast.contract.features.build_inputs` must give the tensors
the model was trained on.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pytest

from fleetcast.contract.features import build_inputs, day_ago_rows, encode_states
from fleetcast.exporter.graph import INPUT_NAMES

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

    from fleetcast.exporter.export import ExportReport


@pytest.fixture(scope="module")
def compared(bundle_dir: Path, toy_table: pa.Table, exported: ExportReport) -> dict:
    """Dataloader tensors and build_inputs tensors for the same 60 mixed-length windows."""
    from fleetcast.exporter.metadata import read_spec
    from fleetcast.exporter.parity import collate_windows, select_windows
    from fleetcast.trainer.bundle import load_bundle
    from fleetcast.trainer.dataset import prepare_frame

    bundle = load_bundle(bundle_dir)
    spec = read_spec(exported.path)
    frame = prepare_frame(toy_table)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = bundle.build_dataset(frame)
        indices = select_windows(dataset, 60, seed=1) + _gap_windows(dataset, frame, 8)
        loader = collate_windows(dataset, indices)
        x, _ = dataset._collate_fn([dataset[i] for i in indices])
    group_encoder = dataset.get_parameters()["categorical_encoders"]["__group_id__server_name"]
    names = group_encoder.inverse_transform(x["groups"][:, 0].numpy())
    e = spec.encoder_length
    lengths = x["encoder_lengths"].numpy()
    last = x["decoder_time_idx"][:, 0].numpy() - 1
    values = np.zeros((len(indices), e, spec.n_targets))
    states = np.full((len(indices), e), -1, dtype=np.int64)
    filled = np.zeros((len(indices), e), dtype=bool)  # rows forward-filled over a gap
    sources = np.zeros((len(indices), e), dtype=np.int64)  # the step each row repeats
    day_ago = np.zeros((len(indices), e + spec.prediction_length, spec.n_targets))
    profiles = []
    by_server = {str(k): g for k, g in frame.groupby("server_name", observed=True)}
    for i, (name, length, end) in enumerate(zip(names, lengths, last, strict=True)):
        g = by_server[str(name)]
        steps = g["time_idx"].to_numpy()
        pos = np.searchsorted(steps, np.arange(end - length + 1, end + 1), side="right") - 1
        filled[i, :length] = steps[pos] != np.arange(end - length + 1, end + 1)
        sources[i, :length] = steps[pos]
        values[i, :length] = g[list(spec.targets)].to_numpy(dtype=np.float64)[pos]
        raw_states = g["state"].astype(str).to_numpy()[pos]
        states[i, :length] = encode_states(spec, [None if s == "nan" else s for s in raw_states])
        profiles.append(str(g["profile"].iloc[0]))
        if spec.max_lag:
            history = g[list(spec.targets)].to_numpy(dtype=np.float64)
            day_ago[i] = day_ago_rows(spec, steps, history, int(length), int(end))
    ours = build_inputs(
        spec,
        values,
        lengths,
        states,
        profiles,
        [str(n) for n in names],
        last,
        day_ago=day_ago if spec.max_lag else None,
        source_steps=sources,
    )
    return {
        "spec": spec, "loader": loader, "ours": ours, "model": bundle.model, "filled": filled,
    }  # fmt: skip


def _gap_windows(dataset, frame, count: int) -> list[int]:
    """Up to ``count`` windows whose encoder spans missing steps (the toy fleet has a gap),
    with their last encoder step and every decoder step observed (an appliance window ends
    at an observed step, and its future steps are never filled)."""
    index = dataset.index
    groups = dataset.get_parameters()["categorical_encoders"]["__group_id__server_name"]
    e_len = index["sequence_length"].to_numpy() - dataset.max_prediction_length
    first = index["time"].to_numpy()
    names = groups.inverse_transform(index["sequence_id"].to_numpy())
    steps = {
        str(k): set(g["time_idx"].tolist()) for k, g in frame.groupby("server_name", observed=True)
    }
    out = []
    seq_len = index["sequence_length"].to_numpy()
    for i in range(len(index)):
        have = steps[str(names[i])]
        enc = range(int(first[i]), int(first[i] + e_len[i]))
        dec = range(int(first[i] + e_len[i]) - 1, int(first[i] + seq_len[i]))
        if any(t not in have for t in enc) and all(t in have for t in dec):
            out.append(i)
    return out[:: max(1, len(out) // count)][:count]


def test_windows_have_mixed_lengths(compared: dict) -> None:
    lengths = compared["loader"]["encoder_lengths"].numpy()
    assert lengths.min() < 24
    assert lengths.max() == 48
    assert len(set(lengths.tolist())) > 5


def _known(spec) -> list[int]:
    return [i for i, n in enumerate(spec.x_reals) if n in spec.feature_roles["known_reals"]]


def test_encoder_tensors_equal_the_dataloader(compared: dict) -> None:
    """Equal everywhere, rows forward-filled over a gap included (next test)."""
    loader, ours, filled = compared["loader"], compared["ours"], compared["filled"]
    assert filled.any(), "no window spans a gap"
    np.testing.assert_array_equal(ours.encoder_lengths, loader["encoder_lengths"].numpy())
    np.testing.assert_array_equal(ours.encoder_cat, loader["encoder_cat"].numpy())
    np.testing.assert_allclose(
        ours.encoder_cont, loader["encoder_cont"].numpy(), rtol=1e-5, atol=2e-5
    )
    np.testing.assert_allclose(
        ours.target_scale, loader["target_scale"].numpy(), rtol=1e-6, atol=1e-6
    )


def test_filled_rows_repeat_the_previous_row_whole_as_in_training(compared: dict) -> None:
    """pytorch-forecasting fills a missing step by repeating the last observed row whole, its
    calendar and day-ago columns included (docs/MODEL_FORMAT.md#features); given each row's
    source step, the reference does the same."""
    loader, ours, filled = compared["loader"], compared["ours"], compared["filled"]
    want = loader["encoder_cont"].numpy()
    b, t = np.nonzero(filled)
    known = _known(compared["spec"])
    assert known
    for col in known:
        np.testing.assert_array_equal(want[b, t, col], want[b, t - 1, col])
        np.testing.assert_array_equal(
            ours.encoder_cont[b, t, col], ours.encoder_cont[b, t - 1, col]
        )


def test_decoder_known_and_static_columns_equal_the_dataloader(compared: dict) -> None:
    spec, loader, ours = compared["spec"], compared["loader"], compared["ours"]
    roles = spec.feature_roles
    cat_cols = [i for i, n in enumerate(spec.x_categoricals) if n in roles["static_categoricals"]]
    real_cols = [
        i
        for i, n in enumerate(spec.x_reals)
        if n in roles["static_reals"] or n in roles["known_reals"]
    ]
    assert len(real_cols) == len(spec.x_reals) - spec.n_targets
    np.testing.assert_array_equal(
        ours.decoder_cat[..., cat_cols], loader["decoder_cat"].numpy()[..., cat_cols]
    )
    np.testing.assert_allclose(
        ours.decoder_cont[..., real_cols],
        loader["decoder_cont"].numpy()[..., real_cols],
        rtol=1e-5,
        atol=2e-5,
    )


def test_forecast_from_reference_inputs_equals_pytorch(
    compared: dict, exported: ExportReport
) -> None:
    """End to end: ORT on build_inputs' tensors = PyTorch on the dataloader's tensors."""
    import onnxruntime as ort

    from fleetcast.exporter.graph import reference_forward

    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    ours = session.run(None, compared["ours"].as_feed())[0]
    loader = compared["loader"]
    ref = reference_forward(compared["model"], *(loader[k] for k in INPUT_NAMES)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)


def test_calendar_features_match_the_trainer() -> None:
    from fleetcast.contract.features import calendar_features
    from fleetcast.trainer.dataset import calendar_features as trainer_calendar

    steps = np.arange(5_890_000, 5_890_000 + 2016 * 3, 7)
    np.testing.assert_array_equal(calendar_features(steps, 300), trainer_calendar(steps, 300))


def test_target_scale_matches_the_trainer_rule(compared: dict) -> None:
    from fleetcast.contract.features import window_target_scale
    from fleetcast.trainer.normalizer import window_scale

    spec = compared["spec"]
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 10.0, size=(5, spec.encoder_length, spec.n_targets))
    lengths = np.array([1, 2, 12, 30, spec.encoder_length])
    _, scale = window_target_scale(spec, values, lengths)
    for b, length in enumerate(lengths):
        for j, target in enumerate(spec.targets):
            center, s = window_scale(
                values[b, :length, j], spec.target_transforms[target], spec.target_min_scale[target]
            )
            assert scale[b, j, 0] == pytest.approx(center, rel=1e-12)
            assert scale[b, j, 1] == pytest.approx(s, rel=1e-9)
