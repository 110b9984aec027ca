"""``forget_after`` (docs/OPERATIONS.md#forgetting-servers): a duration from the flag, the
environment or the config file, in that precedence; off by default; a bad value is one
four-part message naming where it came from."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pytest

from fleetcast.appliance.commands import add_serve_arguments, cli_values
from fleetcast.appliance.settings import SettingsError, build_settings

if TYPE_CHECKING:
    from pathlib import Path


def _forget_after(cli: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Any:
    return build_settings(cli or {}, env=env or {}).forget_after


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("7d", 604_800.0),
        ("36h", 129_600.0),
        ("1.5h", 5_400.0),
        ("90m", 5_400.0),
        ("2w", 1_209_600.0),
        (" 600S ", 600.0),
        ("300", 300.0),
        (86_400, 86_400.0),
        ("off", None),
        ("OFF", None),
        ("", None),
        ("0", None),
        ("0d", None),
        (0, None),
    ],
)
def test_durations_and_off(raw: Any, seconds: float | None) -> None:
    assert _forget_after({"forget_after": raw}) == seconds


def test_off_by_default_and_the_engine_gets_seconds() -> None:
    assert _forget_after() is None
    settings = build_settings({"forget_after": "2h"}, env={})
    assert settings.engine_config().forget_after_s == 7200.0
    assert build_settings({}, env={}).engine_config().forget_after_s is None


def test_flag_beats_environment_beats_config_file(tmp_path: Path) -> None:
    config = tmp_path / "fleetcast.toml"
    config.write_text('[serve]\nforget_after = "7d"\n')
    env = {"FLEETCAST_FORGET_AFTER": "2d"}
    assert _forget_after({"config": config}) == 7 * 86_400.0
    assert _forget_after({"config": config}, env) == 2 * 86_400.0
    assert _forget_after({"config": config, "forget_after": "off"}, env) is None
    config.write_text("[serve]\nforget_after = 3600\n")  # a TOML number: seconds
    assert _forget_after({"config": config}) == 3600.0


def test_the_flag_is_parsed() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    values = cli_values(parser.parse_args(["--forget-after", "7d"]))
    assert values["forget_after"] == "7d"
    assert build_settings(values, env={}).forget_after == 604_800.0
    assert "forget_after" not in cli_values(parser.parse_args([]))


@pytest.mark.parametrize(
    ("values", "env", "names"),
    [
        ({"forget_after": "7x"}, {}, ("--forget-after 7x", "not a duration")),
        ({"forget_after": "d"}, {}, ("--forget-after d", "not a duration")),
        ({"forget_after": "-1d"}, {}, ("not a duration >= 0",)),
        ({"forget_after": "60"}, {}, ("shorter than one 300-second step",)),
        ({"forget_after": "nan"}, {}, ("not a duration",)),
        ({}, {"FLEETCAST_FORGET_AFTER": "soon"}, ("FLEETCAST_FORGET_AFTER=soon",)),
    ],
)
def test_bad_values_are_one_settings_error(
    values: dict[str, Any], env: dict[str, str], names: tuple[str, ...]
) -> None:
    with pytest.raises(SettingsError) as info:
        build_settings(values, env=env)
    message = str(info.value)
    for name in (*names, "7d or 36h", "docs/OPERATIONS.md#configuration"):
        assert name in message
    for part in ("Why it matters:", "Fix:", " See "):
        assert message.count(part) == 1, message


def test_a_config_file_value_of_the_wrong_type_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "fleetcast.toml"
    config.write_text("[serve]\nforget_after = true\n")
    with pytest.raises(SettingsError) as info:
        build_settings({"config": config}, env={})
    message = str(info.value)
    assert "forget_after = true" in message
    assert 'a quoted duration such as "7d"' in message
    assert 'forget_after = "7d"' in message  # the example of the fix
