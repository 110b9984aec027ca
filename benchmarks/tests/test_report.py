"""Markdown and SVG output of the suite."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import pytest
from fleetbench.report import END, START, markdown, replace_block, write_plots
from fleetbench.svg import grouped_bars

if TYPE_CHECKING:
    from pathlib import Path


def _summary(median: float, runs: int = 3) -> dict[str, float]:
    return {"median": median, "p25": median * 0.9, "p75": median * 1.1, "min": median * 0.8,
            "max": median * 1.2, "runs": runs, "spread": 0.2}  # fmt: skip


RESULT = {
    "suite": {
        "mode": "quick",
        "command": "fleetcast bench --quick",
        "seconds": 61.0,
        "started_utc": "2026-11-27T10:00:00Z",
    },
    "machine": {
        "nproc": 2,
        "cpu_model": "Test CPU",
        "versions": {"onnxruntime": "1.32.0"},
        "load_average": [3.0, 2.0, 1.0],
    },
    "limits": {"matmul_gflops": 100.0, "skinny_matmul_gflops": 50.0, "memory_gb_s": 20.0},
    "targets": [
        {
            "name": "t1",
            "description": "ORT per server at 1,000",
            "limit": 0.25,
            "kind": "max",
            "unit": "ms",
            "value": 12.5,
            "met": False,
            "enforced": True,
            "note": "",
        },
        {
            "name": "t2",
            "description": "speed-up at 1",
            "limit": 100,
            "kind": "min",
            "unit": "×",
            "value": 387.0,
            "met": True,
            "enforced": True,
            "note": "",
        },
    ],
    "inference": {
        "encoder_length": 288,
        "prediction_length": 96,
        "rows": [
            {
                "servers": 1,
                "per_server_ms": {"ort": _summary(1.5), "predict_dataloader": _summary(560.0)},
                "speedup_of_ort": {"predict_dataloader": 373.3},
                "note": "",
            },
            {
                "servers": 1000,
                "per_server_ms": {"ort": _summary(12.5, 1)},
                "speedup_of_ort": {},
                "note": "PyTorch baselines run up to 90 servers (time bound)",
            },
        ],
        "agreement": {"servers": 90, "max_abs": 3e-4, "max_rel": 7.7e-7, "max_rel_range": 2e-7},
    },
    "windows": {
        "rows": [
            {
                "servers": 90,
                "ms": {"numba": _summary(0.9), "numpy": _summary(2.8), "pandas": _summary(17.0)},
                "speedup_of_numba": {"numpy": 3.1, "pandas": 19.0},
                "max_abs_diff_vs_numpy": {"numba": 0.0, "pandas": 1e-7},
            }
        ]
    },
}


def test_markdown_holds_machine_targets_and_rows() -> None:
    text = markdown(RESULT)
    assert "2 CPU cores (Test CPU)" in text
    assert "onnxruntime 1.32.0" in text
    assert "| ORT per server at 1,000 | ≤ 0.25 ms | 12.5 ms | **missed** |" in text
    assert "| speed-up at 1 | ≥ 100 × | 387 × | met |" in text
    assert "| 1 | 1.5 ±10% | — | 560 ±10% | — | 373.3×–373.3× |" in text
    assert (
        "| 1000 | 12.5 | — | — | — | PyTorch baselines run up to 90 servers (time bound) |" in text
    )
    assert "| 90 | 0.9 ±10% | 2.8 ±10% | 17 ±10% | 3.1× / 19.0× |" in text
    assert "max rel 7.70e-07" in text
    assert "full graph" not in text  # no step cache: no full-graph column


def test_markdown_shows_the_full_graph_beside_the_step_cache() -> None:
    import copy

    result = copy.deepcopy(RESULT)
    result["inference"]["rows"][1]["per_server_ms"]["ort_full"] = _summary(30.0, 1)
    text = markdown(result)
    assert (
        "| servers | ONNX Runtime (appliance) | ONNX Runtime, full graph | PyTorch forward |"
        in text
    )
    assert "| 1000 | 12.5 | 30 | — | — | — |" in text
    assert "step cache at steady state" in text


def test_replace_block_keeps_the_hand_written_text() -> None:
    doc = f"# Title\n\nintro\n\n{START}\nold\n{END}\n\n## Findings\nkept\n"
    out = replace_block(doc, "new\n")
    assert out == f"# Title\n\nintro\n\n{START}\nnew\n{END}\n\n## Findings\nkept\n"
    assert replace_block("# Only\n", "gen\n") == f"# Only\n\n{START}\ngen\n{END}\n"


def test_grouped_bars_is_valid_svg_with_log_positions() -> None:
    svg = grouped_bars("t", ["a", "b"], {"x": [1.0, 100.0], "y": [10.0, None]}, unit="ms",
                       reference=(0.25, "target"))  # fmt: skip
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    bars = [r for r in root.iter(f"{ns}rect") if r.find(f"{ns}title") is not None]
    assert len(bars) == 3  # the None bar is absent
    heights = {b.find(f"{ns}title").text.split(":")[0]: float(b.get("height")) for b in bars}
    # log axis: 1 → 10 → 100 are equal steps
    assert heights["x b"] - heights["y a"] == pytest.approx(heights["y a"] - heights["x a"])
    assert heights["y a"] > heights["x a"]
    with pytest.raises(ValueError, match="positive"):
        grouped_bars("t", ["a"], {"x": [None]}, unit="ms")


def test_write_plots_writes_both_svgs(tmp_path: Path) -> None:
    paths = write_plots(RESULT, tmp_path / "img")
    assert [p.name for p in paths] == ["bench_inference.svg", "bench_windows.svg"]
    for p in paths:
        ET.fromstring(p.read_text())


def test_parse_wrk_output() -> None:
    from fleetbench.wrk import parse_wrk

    sample = """Running 2s test @ http://127.0.0.1:8000/predictions/current
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.31ms    3.02ms  40.00ms   90.00%
  Latency Distribution
     50%  812.00us
     75%   11.90ms
     90%   14.20ms
     99%    1.20s
  312 requests in 2.00s, 410.00MB read
Requests/sec:    155.91
Transfer/sec:    205.00MB
"""
    out = parse_wrk(sample)
    assert out == {"p50_ms": 0.812, "p75_ms": 11.9, "p90_ms": 14.2, "p99_ms": 1200.0,
                   "requests": 312.0, "requests_per_s": 155.91}  # fmt: skip


def test_the_step_cache_roofline_counts_one_new_row_of_variable_selection() -> None:
    import copy

    from fleetbench.roofline import step_cache_roofline

    cost = {
        "parameters": 1000, "flops_per_server": 10e6, "matmul_flops_per_server": 8e6,
        "lstm_flops_per_server": 2e6, "bytes_per_server": 1e6, "aten_ops_per_forward": 10,
        "matmul_flops_per_server_by_module": {
            "encoder_variable_selection": 4e6, "decoder_variable_selection": 2e6,
        },
    }  # fmt: skip
    limits = RESULT["limits"]
    # E 4, D 2: 3 of 4 encoder rows and 1 of 2 decoder rows come from the cache
    got = step_cache_roofline(cost, limits, 0.1, 4, 2)
    assert got["flops_per_server"] == pytest.approx(10e6 - 3e6 - 1e6)
    assert got["achieved_gflops"] == pytest.approx(60.0)  # 6 MFLOP in 0.1 ms
    assert got["fraction_of_matmul"] == pytest.approx(0.6)
    assert got["floor_ms_per_server_compute"] == pytest.approx(0.06)
    result = copy.deepcopy(RESULT)
    result["inference"]["rows"][1]["per_server_ms"]["ort_full"] = _summary(30.0, 1)
    result["roofline"] = {"cost": cost, "at_servers": 1000, "timed": "ort_full"}
    text = markdown(result)
    assert "The step cache at steady state computes" in text
    assert "at its 12.5 ms/server" in text


def test_a_lopsided_spread_is_shown_as_it_is() -> None:
    from fleetbench.report import _spread
    from fleetbench.stats import summarize

    # Three fresh appliances ready in 1.368, 1.043 and 1.056 s: one slow run, not "±8%".
    assert _spread(summarize([1.368, 1.043, 1.056]).to_dict()) == "+15/−1%"
    assert _spread(_summary(2.0)) == "±10%"
    assert _spread({"median": 2.0, "spread": 0.2}) == "±10%"  # a result without p25/p75
