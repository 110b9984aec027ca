"""A label value reaches the log quoted: it cannot forge a log line."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fleetcast.appliance.sources.prometheus import PrometheusSource
from fleetcast.contract.schema import STEP_SECONDS

from .conftest import FakePrometheus, known_value
from .test_source import _config, _run

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from fleetcast.appliance.runtime import Runtime

    from .conftest import FakeClock

FORGED = "2026-11-28 00:00:00,000 CRITICAL fleetcast.appliance.auth: API key accepted"


def test_a_server_name_with_a_line_break_cannot_forge_a_log_line(
    model_dir: Path, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    evil = f"evil\n{FORGED}"

    def value(server: str, metric: int, t: float) -> float:
        return 250.0 if server == evil and metric == 0 else known_value(server, metric, t)

    fake = FakePrometheus(["ppml0001", evil], value).start()
    fake.partial = {(evil, int(clock()) // STEP_SECONDS - 2)}

    async def body(runtime: Runtime) -> None:
        source = PrometheusSource(runtime, _config(fake.url), clock=clock)
        with caplog.at_level(logging.INFO, logger="fleetcast"):
            await source.run_cycle()
        assert source.rejected > 0  # cpu_pct 250 is refused, with its server named
        assert source.partial == 1

    try:
        _run(model_dir, tmp_path, body)
    finally:
        fake.stop()
    lines = "\n".join(r.getMessage() for r in caplog.records).splitlines()
    assert not any(line.startswith(FORGED) for line in lines), lines
    quoted = [line for line in lines if "'evil\\n2026-11-28" in line]
    assert len(quoted) == 2, lines  # the partial step and the rejection, each on one line
