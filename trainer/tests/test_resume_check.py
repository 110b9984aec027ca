"""The resume check on its own: a checkpoint's recorded data and split against this run's."""

from __future__ import annotations

import pandas as pd
import pytest

from fleetcast.trainer.resume_check import ResumeDataMismatch, check_resume_data, fingerprint

TARGETS = ("cpu_pct", "mem_pct")


def _frame(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "server_name": pd.Categorical(["a", "a", "b", "b"]),
            "time_idx": [0, 1, 0, 1],
            "cpu_pct": values,
            "mem_pct": [1.0, 2.0, 3.0, 4.0],
        }
    )


def test_the_same_data_and_split_pass_and_any_change_is_named() -> None:
    run = fingerprint(_frame([1.0, 2.0, 3.0, 4.0]), TARGETS, 0, 1)
    assert run == fingerprint(_frame([1.0, 2.0, 3.0, 4.0]), TARGETS, 0, 1)
    check_resume_data("last.ckpt", run, run)  # nothing raised
    other = fingerprint(_frame([1.0, 2.0, 3.0, 9.0]), TARGETS, 0, 1)
    with pytest.raises(ResumeDataMismatch, match=r"\(the data: 4 rows of 2 servers then, 4 rows"):
        check_resume_data("last.ckpt", run, other)
    moved = fingerprint(_frame([1.0, 2.0, 3.0, 4.0]), TARGETS, 1, 1)
    with pytest.raises(ResumeDataMismatch, match="the split: training up to step 0 and"):
        check_resume_data("last.ckpt", run, moved)


def test_a_checkpoint_from_before_the_check_resumes_with_a_warning(caplog) -> None:
    run = fingerprint(_frame([1.0, 2.0, 3.0, 4.0]), TARGETS, 0, 1)
    with caplog.at_level("WARNING", logger="fleetcast.trainer"):
        check_resume_data("old.ckpt", None, run)
    assert "does not record the data it was trained on" in caplog.text
