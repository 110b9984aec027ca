"""``fleetcast import prometheus`` against Debian's real Prometheus holding a simulated day.

The day is loaded the way operators backfill (OpenMetrics → promtool); the import must
give back exactly the simulated rows. Skipped with a reason without the binaries.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from fleetcast.contract.schema import METRIC_COLUMNS, STEP_SECONDS

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("promtool") is None,
        reason="needs Debian's prometheus package (apt-get install prometheus)",
    ),
]

_PROMSTACK = Path(__file__).parents[3] / "appliance" / "tests" / "prometheus" / "promstack.py"


def _promstack() -> Any:
    if not _PROMSTACK.is_file():
        pytest.skip("the appliance's test helpers (promstack.py) are not in this checkout")
    spec = importlib.util.spec_from_file_location("fleetcast_promstack", _PROMSTACK)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]  # dataclasses look it up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_import_gives_back_the_simulated_day(tmp_path: Path) -> None:
    from fleetcast.contract.simulate import FleetStream
    from fleetcast.trainer.importers.prometheus import PrometheusImport, import_prometheus

    ps = _promstack()
    open_step = int(time.time()) // STEP_SECONDS
    start = (open_step - 288) * STEP_SECONDS
    rows = FleetStream(n_servers=4, seed=11, start=start).backfill(288)
    om = tmp_path / "day.om"
    ps.write_openmetrics(om, rows)
    prom = ps.start_prometheus(tmp_path, {}, om)
    try:
        spec = PrometheusImport(
            url=prom.url,
            start=start,
            end=open_step * STEP_SECONDS,
            queries={m: name for m, name in ps.METRIC_NAMES.items()},
            chunk_hours=6,
        )
        out = tmp_path / "real.parquet"
        report = import_prometheus(spec, out)
    finally:
        prom.stop()
    assert report.valid
    assert report.rows == 4 * 288
    assert report.gaps == 0
    table = pq.read_table(out)
    got_ts = table.column("timestamp").cast("int64").to_numpy() // 1_000_000
    got_names = np.array(table.column("server_name").to_pylist(), dtype=object)
    order = np.lexsort((rows["timestamp"], rows["server_name"].astype(str)))
    np.testing.assert_array_equal(got_ts, rows["timestamp"][order])
    np.testing.assert_array_equal(got_names, rows["server_name"][order])
    for metric in METRIC_COLUMNS:
        np.testing.assert_allclose(
            table.column(metric).to_numpy(), rows[metric][order], rtol=0, atol=1e-3
        )
    profiles = dict(zip(got_names.tolist(), table.column("profile").to_pylist(), strict=True))
    assert profiles == {n: p for n, p in zip(rows["server_name"], rows["profile"], strict=True)}
