"""``fleetcast export`` refusals: bad data, unusable outputs, opsets, wrapped messages.

Every refusal exits 1 (2 for bad usage) with one four-part message, no traceback, and
writes nothing: no model, no sidecar, no Triton file, no new folder.
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .cli_runs import copy_bundle, run_export, write_metrics

if TYPE_CHECKING:
    from pathlib import Path


def _one_message(err: str, see: str) -> str:
    """The stderr of a refusal: one message with each of the four parts once."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("fleetcast export:")]
    assert len(lines) == 1, err
    message = lines[0]
    assert message.count("Why it matters:") == 1, message
    assert message.count("Fix:") == 1, message
    assert message.count(" See ") == 1, message
    assert message.rstrip().endswith(".")
    assert f"See {see}" in message, message
    return message


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _with_nan_cpu(table: pa.Table) -> pa.Table:
    cpu = table.column("cpu_pct").to_numpy().copy()
    cpu[5] = np.nan
    i = table.schema.get_field_index("cpu_pct")
    return table.set_column(i, "cpu_pct", pa.array(cpu, table.schema.field("cpu_pct").type))


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    return copy_bundle(bundle_dir, tmp_path)


@pytest.mark.parametrize(
    ("kind", "expected", "see"),
    [
        ("csv", "is not a readable Parquet file", "docs/DATA_CONTRACT.md#files"),
        ("zero-byte", "is not a readable Parquet file", "docs/DATA_CONTRACT.md#files"),
        (
            "missing-column",
            "Missing required column(s) ['latency_ms']",
            "docs/DATA_CONTRACT.md#required-columns",
        ),
        ("empty", "The table has no rows.", "docs/DATA_CONTRACT.md#empty-table"),
        ("nan", "non-finite cpu_pct", "docs/DATA_CONTRACT.md#non-finite-values"),
    ],
)
def test_bad_data_is_refused_with_the_contracts_reason(
    bundle_copy: Path,
    toy_table: pa.Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    expected: str,
    see: str,
) -> None:
    data = tmp_path / ("data.csv" if kind == "csv" else "data.parquet")
    if kind == "csv":
        data.write_text("timestamp,server_name\n2026-01-01T00:00:00Z,a\n")
    elif kind == "zero-byte":
        data.write_bytes(b"")
    elif kind == "missing-column":
        pq.write_table(toy_table.drop_columns(["latency_ms"]), data)
    elif kind == "empty":
        pq.write_table(toy_table.slice(0, 0), data)
    else:
        pq.write_table(_with_nan_cpu(toy_table), data)
    before = _files(tmp_path)
    assert run_export(["--bundle", str(bundle_copy), "--data", str(data), "--fp16"]) == 1
    message = _one_message(capsys.readouterr().err, see)
    assert expected in message
    assert _files(tmp_path) == before  # nothing written, in the bundle or beside the data


def test_export_bundle_validates_a_table_too(
    bundle_dir: Path, toy_table: pa.Table, tmp_path: Path
) -> None:
    from fleetcast.exporter.bundle_export import export_bundle
    from fleetcast.exporter.export import ExportError

    with pytest.raises(ExportError, match="non-finite cpu_pct") as info:
        export_bundle(bundle_dir, data=_with_nan_cpu(toy_table), out=tmp_path / "x.onnx")
    assert info.value.see == "docs/DATA_CONTRACT.md#non-finite-values"
    assert not any(tmp_path.iterdir())


def test_valid_data_too_short_for_a_window_is_refused(
    bundle_dir: Path, toy_table: pa.Table, tmp_path: Path
) -> None:
    import pyarrow.compute as pc

    from fleetcast.exporter.bundle_export import export_bundle
    from fleetcast.exporter.export import ExportError

    first = pc.min(toy_table.column("timestamp"))
    limit = pa.scalar(first.value + 10 * 300 * 1_000_000, first.type)
    short = toy_table.filter(pc.less(toy_table.column("timestamp"), limit))  # 10 steps each
    with pytest.raises(ExportError, match="no window of 12\\+12 steps"):
        export_bundle(bundle_dir, data=short, out=tmp_path / "m.onnx")
    assert not any(tmp_path.iterdir())


def test_triton_on_a_regular_file_writes_nothing(
    bundle_copy: Path, toy_table: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_metrics(toy_table, tmp_path)
    blocker = tmp_path / "triton"
    blocker.write_text("not a folder")
    before = _files(tmp_path)
    code = run_export(["--bundle", str(bundle_copy), "--data", str(data), "--triton", str(blocker)])
    assert code == 1
    assert "is a file, not a folder" in _one_message(capsys.readouterr().err, "docs/EXPORT.md")
    assert _files(tmp_path) == before
    assert not (bundle_copy / "model.onnx").exists()
    assert not (bundle_copy / "model.onnx.sha256").exists()


@pytest.mark.parametrize("where", ["under-a-file", "a-folder", "triton-under-a-file"])
def test_unusable_output_paths_write_nothing(
    bundle_copy: Path,
    toy_table: pa.Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    data = write_metrics(toy_table, tmp_path)
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder.onnx").mkdir()
    argv = ["--bundle", str(bundle_copy), "--data", str(data)]
    if where == "under-a-file":
        argv += ["--out", str(tmp_path / "file" / "x.onnx")]
        expected = "is a file, so no folder can be made inside it"
    elif where == "a-folder":
        argv += ["--out", str(tmp_path / "folder.onnx")]
        expected = "is a folder, not a file"
    else:
        argv += [
            "--out",
            str(tmp_path / "new" / "m.onnx"),
            "--triton",
            str(tmp_path / "file" / "t"),
        ]
        expected = "is a file, so no folder can be made inside it"
    before = _files(tmp_path)
    assert run_export(argv) == 1
    assert expected in _one_message(capsys.readouterr().err, "docs/EXPORT.md#refusals")
    assert _files(tmp_path) == before


@pytest.mark.parametrize("opset", ["0", "5", "10", "24", "99"])
def test_opsets_outside_the_supported_range_are_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], opset: str
) -> None:
    from fleetcast.exporter.export import MIN_OPSET, max_opset

    assert (MIN_OPSET, max_opset()) == (11, 23)  # torch 2.13; update with docs/EXPORT.md
    code = run_export(["--bundle", str(tmp_path / "none"), "--opset", opset])
    assert code == 2
    message = _one_message(capsys.readouterr().err, "docs/EXPORT.md#refusals")
    assert f"--opset {opset} is outside the opsets this exporter supports (11..23)" in message
    assert not any(tmp_path.iterdir())


def test_check_opset_accepts_the_range() -> None:
    from fleetcast.exporter.export import ExportError, check_opset

    assert [check_opset(n) for n in (11, 17, 23)] == [11, 17, 23]
    for bad in (10, 24, True, 17.0):
        with pytest.raises(ExportError):
            check_opset(bad)


def test_lowest_opset_exports_and_passes_parity(
    bundle_dir: Path, toy_table: pa.Table, tmp_path: Path, input_scaling: str
) -> None:
    import onnx

    from fleetcast.exporter.bundle_export import WindowSource, export_bundle
    from fleetcast.exporter.export import MIN_OPSET, ExportOptions

    if input_scaling != "fixed":
        pytest.skip("one design is enough (the step graphs included)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = export_bundle(
            bundle_dir,
            data=toy_table,
            out=tmp_path / "m.onnx",
            options=ExportOptions(opset=MIN_OPSET, parity_batches=(7,), latency_batches=()),
            source=WindowSource(windows=16),
        )
    assert all(p.passed for p in report.parity + report.step_parity)
    assert report.step_parity
    opsets = {o.domain: o.version for o in onnx.load(str(report.path)).opset_import}
    assert opsets[""] == MIN_OPSET


def test_bundle_errors_are_not_wrapped_twice(
    bundle_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = bundle_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00\x01\x02\x03\x04\x05\x06\x07"
    weights.write_bytes(bytes(data))
    assert run_export(["--bundle", str(bundle_copy)]) == 1
    message = _one_message(capsys.readouterr().err, "docs/MODEL_FORMAT.md")
    assert message.startswith(f"fleetcast export: Cannot load the bundle at {bundle_copy}: ")
    assert "does not match the SHA-256" in message
    assert "docs/EXPORT.md" not in message


def test_split_explained() -> None:
    from fleetcast.contract.errors import explain
    from fleetcast.exporter.export import split_explained

    text = explain("A: b.", "why. it is.", "Do x. See y first.", "docs/EXPORT.md#checks")
    assert split_explained(text) == (
        "A: b.",
        "why. it is.",
        "Do x. See y first.",
        "docs/EXPORT.md#checks",
    )
    assert split_explained("plain RuntimeError text") is None


def test_a_failure_after_writing_puts_everything_back(
    bundle_copy: Path,
    toy_table: pa.Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    input_scaling: str,
) -> None:
    """The Triton copy fails half-way (disk full): the earlier model comes back, the new
    files and folders go; exit 1 with a four-part message."""
    from fleetcast.exporter import triton

    if input_scaling != "window":
        pytest.skip("one design is enough")
    data = write_metrics(toy_table, tmp_path)
    (bundle_copy / "model.onnx").write_bytes(b"the earlier export")
    real = triton.write_triton_repository

    failure: BaseException = OSError(28, "No space left on device")

    def half_then_fail(*args, **kwargs):
        real(*args, **kwargs)
        raise failure

    monkeypatch.setattr(triton, "write_triton_repository", half_then_fail)
    before = _files(tmp_path)
    argv = ["--bundle", str(bundle_copy), "--data", str(data), "--parity-batches", "1"]
    assert run_export([*argv, "--fp16", "--triton", str(tmp_path / "repo" / "triton")]) == 1
    message = _one_message(capsys.readouterr().err, "docs/EXPORT.md#refusals")
    assert "No space left on device" in message
    assert _files(tmp_path) == before
    assert (bundle_copy / "model.onnx").read_bytes() == b"the earlier export"
    # With --json the same failure, half-way through the writes, is a JSON refusal too.
    assert run_export([*argv, "--json", "--triton", str(tmp_path / "repo" / "triton")]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["exported"] is False
    assert "No space left on device" in answer["error"]["what"]
    assert _files(tmp_path) == before
    assert (bundle_copy / "model.onnx").read_bytes() == b"the earlier export"
    # Anything else (here Ctrl-C: the CLI's exit 130) still leaves nothing behind.
    failure = KeyboardInterrupt()
    assert run_export([*argv, "--fp16", "--triton", str(tmp_path / "repo" / "triton")]) == 130
    assert _files(tmp_path) == before
    assert (bundle_copy / "model.onnx").read_bytes() == b"the earlier export"


def test_data_at_another_step_is_refused_as_train_refuses_it(
    bundle_dir: Path, toy_table: pa.Table, tmp_path: Path
) -> None:
    import pyarrow.compute as pc

    from fleetcast.exporter.bundle_export import export_bundle
    from fleetcast.exporter.export import ExportError

    micros = pc.cast(toy_table.column("timestamp"), pa.int64()).to_numpy()
    ten_min = toy_table.filter(pa.array(micros // 1_000_000 % 600 == 0))  # every 600 s
    with pytest.raises(ExportError) as info:
        export_bundle(bundle_dir, data=ten_min, out=tmp_path / "m.onnx")
    assert info.value.see == "docs/DATA_CONTRACT.md#step"
    assert "600" in info.value.what
    assert not any(tmp_path.iterdir())


def test_a_refused_export_with_json_prints_the_refusal_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    assert run_export(["--bundle", str(tmp_path / "none"), "--json"]) == 1
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert answer["exported"] is False
    assert answer["error"]["what"].startswith(f"Cannot load the bundle at {tmp_path / 'none'}")
    assert answer["error"]["see"] == "docs/MODEL_FORMAT.md"
    assert err.startswith("fleetcast export: Cannot load the bundle")


@pytest.mark.parametrize("victim", ["data", "config.json", "model.safetensors"])
def test_an_out_that_is_an_input_of_the_export_is_refused(
    bundle_copy: Path,
    toy_table: pa.Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    victim: str,
) -> None:
    """`--out` the training data, or a file of the bundle, was overwritten with the ONNX
    file (exit 0); the next export then failed with a UnicodeDecodeError."""
    data = write_metrics(toy_table, tmp_path)
    target = data if victim == "data" else bundle_copy / victim
    before = target.read_bytes()
    argv = ["--bundle", str(bundle_copy), "--data", str(data), "--out", str(target)]
    assert run_export(argv) == 1
    message = _one_message(capsys.readouterr().err, "docs/EXPORT.md#refusals")
    assert f"would overwrite {target}, which this export reads" in message
    assert target.read_bytes() == before
