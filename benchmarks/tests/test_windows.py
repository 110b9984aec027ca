"""The pandas and Numba contenders of benchmark 2 compute exactly the reference's tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "appliance" / "tests" / "fixtures"


@pytest.fixture(scope="module", params=["tiny_model.onnx", "tiny_model_steps.onnx"])
def spec(request):  # type: ignore[no-untyped-def]
    """The window-scaled fixture's spec, and the fixed one's (with day-ago inputs)."""
    import onnxruntime as ort

    from fleetcast.contract.features import ModelSpec

    session = ort.InferenceSession(
        str(FIXTURES / request.param), providers=["CPUExecutionProvider"]
    )
    return ModelSpec.from_metadata(session.get_modelmeta().custom_metadata_map)


def test_pandas_and_numba_equal_the_numpy_reference(spec) -> None:  # type: ignore[no-untyped-def]
    from fleetbench.fleet import simulate_fleet
    from fleetbench.windows import _long_frame, _NumbaSide, pandas_inputs

    fleet = simulate_fleet(12, spec.history_steps + 2, seed=3)
    closed = fleet.steps(None, -1)
    reference = closed.model_inputs(spec).as_feed()
    from_pandas = pandas_inputs(spec, _long_frame(closed, spec.history_steps))
    numba = _NumbaSide(spec, fleet)
    numba.run()
    from_numba = numba.inputs.feed(0, 12)
    for name, ref in reference.items():
        assert from_pandas[name].shape == ref.shape, name
        np.testing.assert_allclose(from_pandas[name], ref, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(from_numba[name], ref, atol=1e-5, err_msg=name)
    # the tensors are not trivially equal: real, varied values
    assert np.ptp(reference["encoder_cont"]) > 1.0
    assert np.all(reference["target_scale"][..., 1] > 0)
    assert len(np.unique(reference["encoder_cat"])) > 2


def test_raw_windows_are_the_last_steps(spec) -> None:  # type: ignore[no-untyped-def]
    from fleetbench.fleet import simulate_fleet

    fleet = simulate_fleet(3, spec.history_steps + 5, seed=1)
    raw = fleet.raw_windows(spec)
    e = spec.encoder_length
    assert raw["values"].shape == (3, e, 4)
    np.testing.assert_array_equal(raw["values"][1, -1], fleet.metrics[-1, 1])
    np.testing.assert_array_equal(raw["values"][2, 0], fleet.metrics[-e, 2])
    assert raw["last_time_idx"].tolist() == [int(fleet.timestamps[-1]) // 300] * 3
    if spec.max_lag:  # a day before encoder row 0 and decoder step 0 (fleet steps are gap-free)
        k, lag = fleet.timestamps.shape[0], spec.max_lag
        assert raw["day_ago"].shape == (3, e + spec.prediction_length, 4)
        np.testing.assert_array_equal(raw["day_ago"][2, 0], fleet.metrics[k - e - lag, 2])
        np.testing.assert_array_equal(raw["day_ago"][0, e], fleet.metrics[k - lag, 0])
    else:
        assert "day_ago" not in raw
