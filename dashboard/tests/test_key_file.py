"""`fleetcast dashboard --api-key-file` / `FLEETCAST_API_KEY_FILE`: the appliance's key from a
file (a credential under systemd), never only from the command line or the environment."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fleetcast.dashboard.commands import register_dashboard, run_dashboard, settings_from_args

KEY = "s3cret-s3cret-s3cret"
UNIT = Path(__file__).resolve().parents[2] / "systemd" / "fleetcast-dashboard.service"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register_dashboard(parser.add_subparsers(dest="command"))
    return parser.parse_args(["dashboard", *argv])


def key_file(tmp_path: Path, text: str = KEY + "\n", name: str = "api-key") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def four_parts(message: str) -> None:
    assert "Why it matters:" in message
    assert "Fix:" in message
    assert "See docs/DASHBOARD.md#running" in message


def test_the_key_is_read_from_the_flag_s_file_with_the_newline_stripped(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    settings = settings_from_args(parse("--api-key-file", str(path)), env={})
    assert settings.api_key == KEY
    assert KEY not in repr(settings)


def test_the_key_is_read_from_the_environment_s_file(tmp_path: Path) -> None:
    path = key_file(tmp_path, f"  {KEY}\r\n")
    env = {"FLEETCAST_API_KEY_FILE": str(path)}
    assert settings_from_args(parse(), env=env).api_key == KEY


def test_the_environment_is_read_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEETCAST_API_KEY", raising=False)
    monkeypatch.setenv("FLEETCAST_API_KEY_FILE", str(key_file(tmp_path)))
    assert settings_from_args(parse()).api_key == KEY


def test_flags_beat_the_environment_whichever_form_gives_the_key(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    missing = str(tmp_path / "missing")
    # A flag's key file beats the variable's key; the variable's file is not even read.
    env = {"FLEETCAST_API_KEY": "from-env-from-env", "FLEETCAST_API_KEY_FILE": missing}
    assert settings_from_args(parse("--api-key-file", str(path)), env={**env}).api_key == KEY
    env = {"FLEETCAST_API_KEY_FILE": missing}
    assert settings_from_args(parse("--api-key", "from-flag"), env=env).api_key == "from-flag"
    # An empty value counts as not given.
    env = {"FLEETCAST_API_KEY_FILE": str(path)}
    assert settings_from_args(parse("--api-key", "", "--api-key-file", ""), env=env).api_key == KEY
    assert settings_from_args(parse(), env={"FLEETCAST_API_KEY_FILE": ""}).api_key is None


@pytest.mark.parametrize("level", ["flags", "environment"])
def test_a_key_and_a_key_file_at_one_level_exit_2(
    level: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = key_file(tmp_path)
    monkeypatch.delenv("FLEETCAST_API_KEY", raising=False)
    monkeypatch.delenv("FLEETCAST_API_KEY_FILE", raising=False)
    if level == "flags":
        args = parse("--api-key", "other-key-other-key", "--api-key-file", str(path))
        both = "Both --api-key and --api-key-file"
    else:
        monkeypatch.setenv("FLEETCAST_API_KEY", "other-key-other-key")
        monkeypatch.setenv("FLEETCAST_API_KEY_FILE", str(path))
        args = parse()
        both = "Both FLEETCAST_API_KEY and FLEETCAST_API_KEY_FILE"
    assert run_dashboard(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("fleetcast dashboard: ")
    assert both in err
    assert "other-key" not in err
    four_parts(err)


@pytest.mark.parametrize("problem", ["missing", "empty", "directory", "not UTF-8"])
def test_a_key_file_that_gives_no_key_exits_2_naming_it(
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("FLEETCAST_API_KEY", raising=False)
    monkeypatch.delenv("FLEETCAST_API_KEY_FILE", raising=False)
    path = tmp_path / "api-key"
    if problem == "empty":
        key_file(tmp_path, "\n")
    elif problem == "directory":
        path.mkdir()
    elif problem == "not UTF-8":
        path.write_bytes(b"\xff\xfe key")
    assert run_dashboard(parse("--api-key-file", str(path))) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "(from --api-key-file)" in err
    assert ("is empty" if problem == "empty" else "Cannot read the API key file") in err
    four_parts(err)


def test_the_unit_passes_the_key_as_a_credential_not_in_the_environment() -> None:
    lines = UNIT.read_text().splitlines()
    assert "LoadCredential=api-key:/etc/fleetcast/api-key" in lines
    assert "Environment=FLEETCAST_API_KEY_FILE=%d/api-key" in lines
    assert not [line for line in lines if line.startswith("Environment=FLEETCAST_API_KEY=")]
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    assert "--api-key" not in exec_start
