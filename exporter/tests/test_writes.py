"""How an export writes: atomically and durably, the Triton copy too; a write failure under
``--json`` still answers in JSON; an export without parity batches is refused."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import TYPE_CHECKING

import pytest

from .cli_runs import run_export

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa


def test_atomic_write_syncs_the_file_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a power cut the renamed file must hold its bytes: fsync comes before replace."""
    from fleetcast.exporter import export

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append("replace")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    digest = export._write_atomic(tmp_path / "model.onnx", b"model bytes")
    assert (tmp_path / "model.onnx").read_bytes() == b"model bytes"
    assert (tmp_path / "model.onnx.sha256").read_text() == f"{digest}  model.onnx\n"
    # file synced, renamed, folder synced; then the same for the sidecar
    assert events == ["fsync", "replace", "fsync"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.sha256"]


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleetcast.exporter import export

    target = tmp_path / "model.onnx"
    target.write_bytes(b"old model")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export.write_file_atomic(target, b"new model")
    assert target.read_bytes() == b"old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_triton_copy_never_leaves_a_torn_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy into the repository fails half-way: a Triton server polling the repository
    must still find the earlier model.onnx whole, not half of the new one."""
    from fleetcast.exporter import triton

    model = tmp_path / "model.onnx"
    model.write_bytes(b"N" * 4096)
    repo = tmp_path / "repo"
    served = repo / "fleetcast_tft" / "1" / "model.onnx"
    served.parent.mkdir(parents=True)
    served.write_bytes(b"the earlier model")

    class _File:
        """A writer that stops half-way, as a full disk does."""

        def __init__(self, path: Path) -> None:
            self.fh = open(path, "wb")  # noqa: SIM115

        def write(self, data: bytes) -> int:
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(28, "No space left on device")

        def __enter__(self) -> _File:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

    real_open = pathlib.Path.open
    real_copyfile = shutil.copyfile

    def open_(self: Path, mode: str = "r", *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if "w" in mode and "fleetcast_tft" in str(self):
            return _File(self)
        return real_open(self, mode, *args, **kwargs)  # type: ignore[arg-type]

    def copyfile(src: object, dst: object, **kwargs: object) -> object:  # the old code's copy
        with open(str(dst), "wb") as out, open(str(src), "rb") as inp:
            out.write(inp.read()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "open", open_)
    monkeypatch.setattr(shutil, "copyfile", copyfile)
    spec = _Spec()
    with pytest.raises(OSError, match="No space left"):
        triton.write_triton_repository(model, spec, repo)  # type: ignore[arg-type]
    monkeypatch.setattr(pathlib.Path, "open", real_open)
    monkeypatch.setattr(shutil, "copyfile", real_copyfile)
    assert served.read_bytes() == b"the earlier model"
    assert sorted(p.name for p in served.parent.iterdir()) == ["model.onnx"]


class _Spec:
    """The few ModelSpec fields triton_config reads."""

    encoder_length = 4
    prediction_length = 2
    x_categoricals = ("profile",)
    x_reals = ("encoder_length",)
    n_targets = 1
    quantiles = (0.1, 0.5, 0.9)
    model_version = "m"
    bundle_id = "b"


def test_a_write_failure_with_json_prints_the_refusal_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/EXPORT.md: with --json a refused export prints {"exported": false, "error": …},
    a full disk included (exit 1, the message on stderr)."""
    from fleetcast.exporter import bundle_export

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_export, "export_bundle", full_disk)
    out_path = tmp_path / "out" / "model.onnx"
    code = run_export(["--bundle", str(tmp_path), "--out", str(out_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    answer = json.loads(out)
    assert answer["exported"] is False
    assert "No space left on device" in answer["error"]["what"]
    assert answer["error"]["see"] == "docs/EXPORT.md#refusals"
    assert err.startswith("fleetcast export: cannot write the export (OSError")
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_export_without_parity_batches_is_refused(
    bundle_dir: Path, toy_table: pa.Table, tmp_path: Path, input_scaling: str
) -> None:
    """An empty parity_batches must not write a model no check has compared with PyTorch."""
    from fleetcast.exporter.bundle_export import WindowSource, export_bundle
    from fleetcast.exporter.export import ExportError, ExportOptions

    if input_scaling != "window":
        pytest.skip("one design is enough")
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="No parity batch sizes"):
        export_bundle(
            bundle_dir,
            data=toy_table,
            out=out,
            options=ExportOptions(parity_batches=(), latency_batches=()),
            source=WindowSource(windows=8),
        )
    assert not out.exists()
    assert not out.with_name("model.onnx.sha256").exists()
