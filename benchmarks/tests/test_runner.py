"""The runner's command line, the docs rendering, and a small real run on the fixture model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fleetbench.report import END, START
from fleetbench.runner import _parser, main, updates_docs

FIXTURES = Path(__file__).resolve().parents[2] / "appliance" / "tests" / "fixtures"


def test_unknown_benchmark_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--only", "nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_missing_model_dir_is_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model-dir", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_render_rewrites_only_the_generated_block(tmp_path: Path) -> None:
    docs = tmp_path / "BENCHMARKS.md"
    docs.write_text(f"# B\n\nhand\n\n{START}\nold\n{END}\n\ntail\n")
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"suite": {"mode": "full", "seconds": 1}, "machine": {"nproc": 2},
                                   "targets": []}))  # fmt: skip
    assert main(["--render", str(results), "--update-docs", "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert text.startswith("# B\n\nhand\n\n" + START)
    assert text.endswith(END + "\n\ntail\n")
    assert "old" not in text
    assert "2 CPU cores" in text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--full"], True),
        (["--full", "--only", "inference"], False),  # would blank the other sections
        (["--full", "--skip", "service"], False),
        (["--full", "--only", "inference", "--update-docs"], True),
        (["--full", "--no-update-docs"], False),
        (["--quick"], False),
        (["--quick", "--update-docs"], True),
    ],
)
def test_only_a_whole_full_run_rewrites_the_docs_unless_told(
    argv: list[str], expected: bool
) -> None:
    args = _parser().parse_args(argv)
    assert updates_docs(args, args.mode) is expected


@pytest.fixture(params=["tiny_model.onnx", "tiny_model_steps.onnx"])
def model_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The window-scaled fixture, and the one with step graphs (the appliance's step cache)."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copyfile(FIXTURES / request.param, folder / "model.onnx")
    digest = (FIXTURES / f"{request.param}.sha256").read_text().split()[0]
    (folder / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    return folder


@pytest.mark.slow
def test_quick_run_on_the_fixture_model(
    model_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out = tmp_path / "results"
    code = main(["--quick", "--model-dir", str(model_dir), "--only", "inference,windows,gpu",
                 "--results-dir", str(out), "--no-update-docs"])  # fmt: skip
    # An ONNX-only folder cannot run predict(): the two ratios quick mode enforces are not
    # measured, and a target not measured is missed (it once passed, exit 0).
    assert code == 1
    (result_file,) = out.glob("quick-*.json")
    res = json.loads(result_file.read_text())
    assert res["passed"] is False
    assert res["errors"] == []
    missed = {t["name"]: t for t in res["targets"] if t["enforced"] and t["met"] is False}
    assert set(missed) == {"inference.speedup_vs_predict@1", "inference.speedup_vs_predict@90"}
    assert all("baselines need the bundle" in t["note"] for t in missed.values())
    assert all(
        t["met"] is True for t in res["targets"] if t["enforced"] and t["name"] not in missed
    )
    rows = res["inference"]["rows"]
    assert [r["servers"] for r in rows] == [1, 90]
    assert all(r["per_server_ms"]["ort"]["median"] > 0 for r in rows)
    # With step graphs the appliance's path is the step cache, timed beside the full graph.
    steps = request.node.callspec.params["model_dir"] == "tiny_model_steps.onnx"
    assert all(("ort_full" in r["per_server_ms"]) == steps for r in rows)
    assert "baselines need the bundle" in rows[0]["note"]  # an ONNX-only folder: no PyTorch
    windows = res["windows"]["rows"]
    assert [w["servers"] for w in windows] == [90, 1000]
    assert all(w["max_abs_diff_vs_numpy"]["numba"] < 1e-5 for w in windows)
    names = {t["name"]: t for t in res["targets"]}
    assert names["windows.speedup_vs_numpy@1000"]["enforced"] is True
    assert names["windows.numba_diff_vs_numpy"]["met"] is True
    assert names["windows.numba_diff_vs_numpy"]["value"] < 1e-6
    assert names["inference.ort_ms_per_server@1000"]["met"] is None  # not measured in quick
    assert res["gpu"]["skipped"] in (True, False)
    assert (out / result_file.name.replace(".json", ".md")).read_text().startswith("Run:")


def test_accuracy_alone_does_not_miss_the_agreement_it_cannot_measure(
    model_dir: Path, tmp_path: Path
) -> None:
    """ONNX-vs-predict() agreement comes from the inference benchmark: with it left out
    (--only accuracy, --skip inference) the target is skipped, as a left-out benchmark's."""
    out = tmp_path / "results"
    code = main(["--quick", "--model-dir", str(model_dir), "--only", "accuracy",
                 "--results-dir", str(out), "--no-update-docs"])  # fmt: skip
    assert code == 0
    (result_file,) = out.glob("quick-*.json")
    (target,) = (
        t for t in json.loads(result_file.read_text())["targets"]
        if t["name"] == "accuracy.onnx_vs_pytorch_rel_range"
    )  # fmt: skip
    assert (target["met"], target["enforced"]) == (None, False)
    assert target["note"].startswith("skipped: measured by the inference benchmark")
