"""The ``fleetcast`` program: --version, plugins, commands of missing or broken distributions."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from fleetcast.contract import cli
from fleetcast.contract.schema import CONTRACT_VERSION

VALIDATE = EntryPoint(
    name="validate",
    value="fleetcast.contract.commands:register_validate",
    group="fleetcast.commands",
)


def only_validate(monkeypatch, *extra: EntryPoint) -> None:
    """Pretend that only fleetcast-contract's validate (and ``extra``) are installed."""
    monkeypatch.setattr(cli, "entry_points", lambda **_: [VALIDATE, *extra])


def test_version_lists_distributions_and_contract():
    out = subprocess.run(
        [sys.executable, "-m", "fleetcast.contract.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("fleetcast-contract ")
    assert lines[-1] == f"data contract {CONTRACT_VERSION}"
    assert len(lines) == 6


def test_missing_distribution_names_the_package(monkeypatch, capsys):
    only_validate(monkeypatch)
    assert cli.main(["train", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "the 'train' command is provided by fleetcast-trainer, which is not installed" in err
    assert "pip install ./trainer from a fleetcast source checkout" in err
    assert cli.main(["--log-level", "ERROR", "serve"]) == 2
    assert (
        "pip install './appliance[cpu]' from a fleetcast source checkout" in capsys.readouterr().err
    )


def test_broken_plugin_does_not_break_other_commands(monkeypatch, capsys, tmp_path):
    broken = EntryPoint(
        name="generate", value="fleetcast.contract.nope:register", group="fleetcast.commands"
    )
    only_validate(monkeypatch, broken)
    assert cli.main(["generate"]) == 2
    err = capsys.readouterr().err
    assert "the 'generate' command is installed but failed to load (ModuleNotFoundError" in err
    assert "reinstall fleetcast-contract" in err
    assert cli.main(["validate", str(tmp_path / "none.parquet")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_no_command_prints_help(monkeypatch, capsys):
    only_validate(monkeypatch)
    assert cli.main([]) == 0
    assert "validate" in capsys.readouterr().out


def test_unknown_command_is_an_argparse_error(monkeypatch):
    only_validate(monkeypatch)
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2


def test_known_commands_are_exactly_the_registered_entry_points():
    """A name in KNOWN_COMMANDS that no distribution registers would make ``fleetcast <name>``
    claim that an installed distribution is missing ('evaluate' once did)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    registered: dict[str, str] = {}
    for component in ("contract", "trainer", "exporter", "appliance", "dashboard"):
        project = tomllib.loads((root / component / "pyproject.toml").read_text())["project"]
        for name in project["entry-points"]["fleetcast.commands"]:
            registered[name] = project["name"]
    assert registered == cli.KNOWN_COMMANDS
