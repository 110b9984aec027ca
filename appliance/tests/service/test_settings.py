"""One Settings object: defaults < TOML < env < CLI, validated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetcast.appliance.settings import Settings, SettingsError, build_settings, parse_rate_limit


def test_defaults() -> None:
    settings = build_settings({}, env={})
    assert settings == Settings()
    assert settings.host == "127.0.0.1"
    assert settings.rate_limit == ("minute", 1200)
    assert settings.fsync is True


def test_precedence_cli_over_env_over_toml(tmp_path: Path) -> None:
    config = tmp_path / "fleetcast.toml"
    config.write_text(
        '[serve]\nport = 9001\nhost = "0.0.0.0"\nspeed = 10\nrate-limit = "5/second"\n'
    )
    env = {"FLEETCAST_PORT": "9002", "FLEETCAST_DEMO": "true"}
    settings = build_settings({"port": 9003, "config": config}, env=env)
    assert settings.port == 9003
    assert settings.host == "0.0.0.0"
    assert settings.demo is True
    assert settings.speed == 10.0
    assert settings.rate_limit == ("second", 5)
    assert build_settings({"config": config}, env=env).port == 9002
    assert build_settings({"config": config}, env={}).port == 9001


def test_state_directory_from_systemd(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": f"{tmp_path}/a:{tmp_path}/b"}
    assert build_settings({}, env=env).state_dir == tmp_path / "a"
    assert build_settings({"state_dir": Path("x")}, env=env).state_dir == Path("x")


def test_api_key_from_file_and_env(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("  s3cret-s3cret-s3cret\n")
    assert (
        build_settings({}, env={"FLEETCAST_API_KEY_FILE": str(key_file)}).api_key
        == "s3cret-s3cret-s3cret"
    )
    assert build_settings({"api_key_file": key_file}, env={}).api_key == "s3cret-s3cret-s3cret"
    assert build_settings({}, env={"FLEETCAST_API_KEY": "x" * 16}).api_key == "x" * 16
    assert "s3cret" not in repr(build_settings({"api_key_file": key_file}, env={}))


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"port": 0}, "port"),
        ({"api_key": "short"}, "16 characters"),
        ({"rate_limit": "many/minute"}, "rate limit"),
        ({"speed": "-1"}, "speed"),
        ({"bogus": 1}, "Unknown setting"),
        ({"api_key_file": Path("/nonexistent/key")}, "API key file"),
        ({"read_key_required": True}, "no API key is configured"),
        ({"max_future_seconds": "nan"}, "--max-future-seconds"),
        ({"max_future_seconds": "-5"}, "seconds >= 0 or 'off'"),
    ],
)
def test_invalid_values_say_what_and_how(values: dict[str, object], match: str) -> None:
    with pytest.raises(SettingsError, match=match) as info:
        build_settings(values, env={})
    assert "Fix:" in str(info.value)
    assert "docs/OPERATIONS.md" in str(info.value)


def test_future_check_from_every_source_and_kept_for_the_demo(tmp_path: Path) -> None:
    assert build_settings({}, env={}).engine_config().max_future_s == 3600.0
    env = {"FLEETCAST_MAX_FUTURE_SECONDS": "off"}
    assert build_settings({}, env=env).engine_config().max_future_s is None
    config = tmp_path / "fleetcast.toml"
    config.write_text("[serve]\nmax_future_seconds = 7200\n")
    assert build_settings({"config": config}, env={}).engine_config().max_future_s == 7200.0
    assert build_settings({"max_future_seconds": "0"}, env={}).max_future_seconds == 0.0
    # The demo's own samples are checked against its simulated clock (demo.py), POST
    # /metrics against this machine's: the engine keeps the check in demo mode too.
    assert build_settings({"demo": True}, env={}).engine_config().max_future_s == 3600.0


def test_parse_rate_limit() -> None:
    assert parse_rate_limit("600/minute") == ("minute", 600)
    assert parse_rate_limit("10") == ("minute", 10)
    assert parse_rate_limit("off") is None


def test_every_cli_flag_maps_to_a_setting(tmp_path: Path) -> None:
    import argparse

    from fleetcast.appliance.commands import add_serve_arguments, cli_values

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    key_file = tmp_path / "key"
    key_file.write_text("k" * 20)
    args = parser.parse_args(
        [
            "--port",
            "9000",
            "--no-fsync",
            "--demo",
            "--speed",
            "120",
            "--providers",
            "CUDAExecutionProvider,CPUExecutionProvider",
            "--api-key-file",
            str(key_file),
            "--rate-limit",
            "off",
            "--read-key-required",
            "--no-access-log",
            "--no-step-cache",
        ]
    )
    settings = build_settings(cli_values(args), env={})
    assert settings.port == 9000
    assert settings.fsync is False
    assert settings.demo is True
    assert settings.speed == 120.0
    assert settings.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert settings.api_key == "k" * 20
    assert settings.rate_limit is None
    assert settings.read_key_required is True
    assert settings.access_log is False
    assert settings.step_cache is False
    assert settings.engine_config().step_cache is False
    assert build_settings({}, env={"FLEETCAST_STEP_CACHE": "off"}).step_cache is False
    assert build_settings({}, env={}).engine_config().step_cache is True
    # unset flags defer to the environment
    assert build_settings(cli_values(parser.parse_args([])), env={"FLEETCAST_PORT": "7"}).port == 7


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("bad_profile.json", '{"cpu_pct": {"bogus": 5}}', "Unknown profile 'bogus'"),
        ("bad_value.json", '{"cpu_pct": {"web_api": "x"}}', "positive number"),
        ("not_a_table.json", "[1, 2]", "expected a table"),
        ("bad_metric.toml", "[gpu_pct]\ndefault = 5\n", "Unknown metric 'gpu_pct'"),
    ],
)
def test_unusable_thresholds_file_is_a_settings_error(
    tmp_path: Path, name: str, text: str, match: str
) -> None:
    """A bad thresholds file is one clear SettingsError (no traceback at `fleetcast serve`)."""
    path = tmp_path / name
    path.write_text(text)
    settings = build_settings({"thresholds_file": path}, env={})
    with pytest.raises(SettingsError, match=match) as info:
        settings.load_thresholds()
    assert "Fix:" in str(info.value)
    good = tmp_path / "good.toml"
    good.write_text("[cpu_pct]\nweb_api = 80\n")
    assert build_settings({"thresholds_file": good}, env={}).load_thresholds() == {
        "cpu_pct": {"web_api": 80}
    }
