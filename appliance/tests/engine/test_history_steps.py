"""How many steps of actuals a server keeps (``--history-steps``): never fewer than the
model reads, and a value raised to it is logged, not silent (docs/OPERATIONS.md)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .test_engine import _open

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_a_history_shorter_than_the_model_reads_is_raised_with_a_warning(
    toy_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fleetcast.appliance.engine"):
        engine = _open(toy_dir, history_steps=1)
    need = engine.spec.history_steps
    assert engine.history_steps == need
    assert f"history_steps 1 is fewer steps than the model reads ({need}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fleetcast.appliance.engine"):
        assert _open(toy_dir, history_steps=need + 5).history_steps == need + 5
        assert _open(toy_dir).history_steps == need
    assert "history_steps" not in caplog.text
