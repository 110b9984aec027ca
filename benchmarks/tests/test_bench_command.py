"""``fleetcast bench`` (fleetcast.exporter.bench): finds the checkout, forwards the options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fleetcast.exporter.bench import find_checkout, register_bench, run_bench, suite_argv

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parents[2]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register_bench(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


def test_finds_this_checkout_from_a_subfolder() -> None:
    assert find_checkout(ROOT / "docs") == ROOT


def test_forwards_flags_and_makes_paths_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    args = _parse(["--full", "--no-fail", "--model-dir", "models/latest", "--only", "inference"])
    assert suite_argv(args) == [
        "--full", "--no-fail", "--model-dir", str(tmp_path / "models" / "latest"),
        "--only", "inference",
    ]  # fmt: skip


def test_without_a_checkout_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["--checkout", str(tmp_path)])
    assert run_bench(args) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is not a fleetcast source checkout (no benchmarks/run.py in it)" in err
    assert "pass the folder of a clone of the repository to --checkout" in err


def test_every_suite_option_is_a_bench_option(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fleetbench.runner import _parser

    suite = {o for a in _parser()._actions for o in a.option_strings if o.startswith("--")}
    parser = argparse.ArgumentParser()
    register_bench(parser.add_subparsers())
    bench = parser._subparsers._group_actions[0].choices["bench"]  # type: ignore[union-attr]
    ours = {o for a in bench._actions for o in a.option_strings if o.startswith("--")}
    assert suite - {"--help"} <= ours - {"--checkout"}  # fleetcast bench forwards them all
    monkeypatch.chdir(tmp_path)
    args = _parse(["--render", "r.json", "--update-docs"])
    assert suite_argv(args) == ["--update-docs", "--render", str(tmp_path / "r.json")]
