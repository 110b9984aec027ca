"""Settings are checked once, with one four-part message per problem, and the documented
precedence holds for every setting, the API key and ``$STATE_DIRECTORY`` included
(docs/OPERATIONS.md#configuration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetcast.appliance.settings import SettingsError, build_settings

KEY_CLI = "k" * 20
KEY_ENV = "e" * 20
KEY_FILE_TEXT = "f" * 20
KEY_TOML = "t" * 20


def _parts_once(message: str) -> None:
    """What, why, fix, see: each part exactly once (no message wrapped in another)."""
    assert message.count("Why it matters:") == 1, message
    assert message.count("Fix:") == 1, message
    assert message.count(" See ") == 1, message
    assert message.rstrip().endswith(".")


def _error(values: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(SettingsError) as info:
        build_settings(values, env=env or {})
    message = str(info.value)
    _parts_once(message)
    return message


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-key"
    path.write_text(KEY_FILE_TEXT + "\n")
    return path


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleetcast.toml"
    path.write_text(text)
    return path


# -- 1. the API key comes from the highest level, as a key or a key file -----------------


def test_key_file_flag_beats_key_in_environment(key_file: Path) -> None:
    settings = build_settings({"api_key_file": key_file}, env={"FLEETCAST_API_KEY": KEY_ENV})
    assert settings.api_key == KEY_FILE_TEXT


def test_key_flag_beats_key_file_in_environment(key_file: Path) -> None:
    env = {"FLEETCAST_API_KEY_FILE": str(key_file)}
    assert build_settings({"api_key": KEY_CLI}, env=env).api_key == KEY_CLI


def test_environment_beats_config_file_for_the_key(tmp_path: Path, key_file: Path) -> None:
    config = _toml(tmp_path, f'[serve]\napi_key = "{KEY_TOML}"\n')
    env = {"FLEETCAST_API_KEY_FILE": str(key_file)}
    assert build_settings({"config": config}, env=env).api_key == KEY_FILE_TEXT
    config = _toml(tmp_path, f'[serve]\napi_key_file = "{key_file}"\n')
    assert build_settings({"config": config}, env={"FLEETCAST_API_KEY": KEY_ENV}).api_key == (
        KEY_ENV
    )
    assert build_settings({"config": config}, env={}).api_key == KEY_FILE_TEXT


def test_a_lower_key_file_is_not_read(tmp_path: Path) -> None:
    """The key from a higher level wins without the lower one's file being opened."""
    env = {"FLEETCAST_API_KEY_FILE": str(tmp_path / "missing")}
    assert build_settings({"api_key": KEY_CLI}, env=env).api_key == KEY_CLI


@pytest.mark.parametrize("level", ["flag", "env", "file"])
def test_key_and_key_file_at_one_level_are_refused(
    level: str, tmp_path: Path, key_file: Path
) -> None:
    cli: dict[str, Any] = {}
    env: dict[str, str] = {}
    if level == "flag":
        cli = {"api_key": KEY_CLI, "api_key_file": key_file}
        names = ("--api-key", "--api-key-file")
    elif level == "env":
        env = {"FLEETCAST_API_KEY": KEY_ENV, "FLEETCAST_API_KEY_FILE": str(key_file)}
        names = ("FLEETCAST_API_KEY", "FLEETCAST_API_KEY_FILE")
    else:
        cli = {
            "config": _toml(
                tmp_path, f'[serve]\napi_key = "{KEY_TOML}"\napi_key_file = "{key_file}"\n'
            )
        }
        names = ("api_key in", "api_key_file in")
    message = _error(cli, env)
    assert all(name in message for name in names)
    assert "docs/OPERATIONS.md#api-key" in message
    assert KEY_CLI not in message
    assert KEY_ENV not in message


def test_an_empty_key_value_counts_as_not_given(key_file: Path) -> None:
    env = {"FLEETCAST_API_KEY": "", "FLEETCAST_API_KEY_FILE": str(key_file)}
    assert build_settings({}, env=env).api_key == KEY_FILE_TEXT


def test_short_key_names_its_source(key_file: Path) -> None:
    key_file.write_text("short\n")
    message = _error({"api_key_file": key_file})
    assert "16 characters" in message
    assert "--api-key-file" in message


# -- 3. every value is range-checked here, never by the engine ---------------------------


@pytest.mark.parametrize(
    ("values", "env", "names"),
    [
        ({"intra_op_threads": -3}, {}, ("intra_op_threads", "--intra-op-threads", ">= 0")),
        ({"history_steps": -5}, {}, ("history_steps", "--history-steps", ">= 1")),
        ({"history_steps": 0}, {}, ("history_steps", ">= 1")),
        ({}, {"FLEETCAST_LOG_LEVEL": "BOGUS"}, ("FLEETCAST_LOG_LEVEL=BOGUS", "DEBUG, INFO")),
        ({"demo": True, "demo_seed": -1}, {}, ("demo_seed", "--demo-seed", ">= 0")),
        ({"port": 0}, {}, ("port", "1 to 65535")),
        ({"port": 65536}, {}, ("port", "1 to 65535")),
        ({}, {"FLEETCAST_PORT": "18132.9"}, ("FLEETCAST_PORT", "integer")),
        ({}, {"FLEETCAST_FSYNC": "maybe"}, ("FLEETCAST_FSYNC", "true or false")),
        ({"capacity": 0}, {}, ("capacity", "from 1 to 1000000")),
        ({"capacity": 100_000_000_000}, {}, ("capacity", "more than 1000000")),
        ({"speed": "nan"}, {}, ("speed", "> 0")),
        ({"snapshot_interval_s": 0}, {}, ("snapshot_interval_s", "> 0")),
        ({"prometheus_settle_s": -1}, {}, ("prometheus_settle_s", ">= 0")),
        ({"prometheus_latency_fill": -1}, {}, ("prometheus_latency_fill", ">= 0")),
        ({"prometheus_backfill_steps": 0}, {}, ("prometheus_backfill_steps", ">= 1")),
        ({"metrics_max_servers": 0}, {}, ("metrics_max_servers", ">= 1")),
        ({"host": " "}, {}, ("host", "empty")),
        ({"source": "kafka"}, {}, ("source", "push, demo, prometheus")),
        ({"trusted_proxies": "garbage"}, {}, ("trusted_proxies", "'garbage' is not an IP address")),
        ({}, {"FLEETCAST_TRUSTED_PROXIES": "10.0.0.1/8"}, ("'10.0.0.1/8' is not", "networks")),
        (
            {"providers": "CUDAExecutionProvider,Bogus"},
            {},
            ("providers", "unknown provider 'Bogus'"),
        ),
    ],
)
def test_out_of_range_values_are_one_settings_error(
    values: dict[str, Any], env: dict[str, str], names: tuple[str, ...]
) -> None:
    message = _error(values, env)
    for name in names:
        assert name in message
    assert "docs/OPERATIONS.md#configuration" in message


def test_valid_edges_are_accepted() -> None:
    settings = build_settings(
        {"intra_op_threads": 0, "history_steps": 1, "demo": True, "demo_seed": 0, "port": 65535},
        env={},
    )
    assert build_settings({"capacity": 1_000_000}, env={}).capacity == 1_000_000
    assert (settings.intra_op_threads, settings.history_steps, settings.demo_seed) == (0, 1, 0)
    assert build_settings({}, env={"FLEETCAST_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert build_settings({}, env={"FLEETCAST_HISTORY_STEPS": ""}).history_steps is None


# -- 4. the config file: nothing ignored, nothing coerced ----------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[serv]\nport = 18132\n", ("[serv]", "did you mean [serve]?")),
        ("[serve]\nport = 18132\n[serve.thresholds]\ncpu_pct = 1\n", ("[serve.thresholds]",)),
        ("[serve]\nport = true\n", ("port = true", "TOML boolean", "an integer")),
        ("[serve]\nport = 18132.9\n", ("port = 18132.9", "TOML float", "an integer")),
        ('[serve]\nport = "18132"\n', ("port", "TOML string", "an integer")),
        ('[serve]\nfsync = "no"\n', ("fsync", "true or false")),
        ("[serve]\nspeed = true\n", ("speed", "a number")),
        ("[serve]\nprot = 18132\n", ("'prot'", "did you mean port?")),
        ("[serve]\nport = 18132\n[dashboard]\nport = 5006\n", ("[dashboard]", "outside [serve]")),
        ("port = 18132\n[other]\nx = 1\n", ("[other]",)),
        ('[serve]\nproviders = ["CPUExecutionProvider", 1]\n', ("providers", "array")),
        ("[serve]\nrate-limit = '1/second'\nrate_limit = '2/second'\n", ("twice",)),
        ("[serve]\nintra_op_threads = -3\n", ("intra_op_threads = -3", ">= 0")),
        ("[serve\nport = 1\n", ("TOMLDecodeError",)),
    ],
)
def test_config_file_problems_name_the_file_and_key(
    tmp_path: Path, text: str, names: tuple[str, ...]
) -> None:
    config = _toml(tmp_path, text)
    message = _error({"config": config})
    assert str(config) in message
    for name in names:
        assert name in message


def test_config_file_at_top_level_and_in_serve(tmp_path: Path) -> None:
    top = _toml(tmp_path, 'port = 18133\nproviders = ["CPUExecutionProvider"]\n')
    settings = build_settings({"config": top}, env={})
    assert settings.port == 18133
    assert settings.providers == ("CPUExecutionProvider",)
    serve = _toml(tmp_path, '[serve]\nmax_future_seconds = "off"\nspeed = 2\nfsync = false\n')
    settings = build_settings({"config": serve}, env={})
    assert settings.max_future_seconds is None
    assert settings.speed == 2.0
    assert settings.fsync is False


def test_config_file_api_key_type_error_hides_the_value(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[serve]\napi_key = 12345678901234567890\n")
    message = _error({"config": config})
    assert "12345678901234567890" not in message
    assert "api_key" in message


def test_state_directory_is_only_the_default(tmp_path: Path) -> None:
    """systemd's ``$STATE_DIRECTORY`` is the default state dir: the file, the environment
    and the flag all beat it (the Configuration table)."""
    systemd = {"STATE_DIRECTORY": "/var/lib/fleetcast:/var/lib/other"}
    config = _toml(tmp_path, '[serve]\nstate_dir = "/srv/from-file"\n')
    assert build_settings({}, env=systemd).state_dir == Path("/var/lib/fleetcast")
    assert build_settings({"config": config}, env=systemd).state_dir == Path("/srv/from-file")
    env = {**systemd, "FLEETCAST_STATE_DIR": "/srv/from-env"}
    assert build_settings({"config": config}, env=env).state_dir == Path("/srv/from-env")
    cli = {"config": config, "state_dir": Path("/srv/from-flag")}
    assert build_settings(cli, env=env).state_dir == Path("/srv/from-flag")


# -- 7. the demo fleet must fit the capacity ----------------------------------------------


def test_demo_fleet_larger_than_capacity_is_refused() -> None:
    message = _error({"demo": True, "demo_servers": 10, "capacity": 5})
    assert "10 servers" in message
    assert "--capacity" in message
    assert "--demo-servers" in message
    assert build_settings({"demo": True, "demo_servers": 5, "capacity": 5}, env={}).demo
    assert "6 servers" in _error({"source": "demo", "demo_servers": 6, "capacity": 5})


# -- 8. each part of a message once ---------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "part"),
    [
        ({"rate_limit": "5/fortnight"}, "rate limit"),
        ({"source": "prometheus"}, "--prometheus-url"),
        ({"source": "prometheus", "prometheus_url": "ftp://p"}, "http://HOST:9090"),
        ({"alertmanager_url": "alertmanager:9093"}, "alertmanager_url"),
        (
            {
                "source": "prometheus",
                "prometheus_url": "http://p:9090",
                "prometheus_profile_rules": ["^db-=nope"],
            },
            "REGEX=PROFILE",
        ),
    ],
)
def test_each_message_part_appears_once(values: dict[str, Any], part: str) -> None:
    assert part in _error(values)


def test_the_global_log_level_flag_is_a_flag_of_serve() -> None:
    """`fleetcast --log-level X serve` beats FLEETCAST_LOG_LEVEL (flags > environment > file);
    without it, the environment's level holds."""
    from fleetcast.appliance.commands import cli_values
    from fleetcast.contract.cli import _build_parser

    parser, _ = _build_parser()
    given = parser.parse_args(["--log-level", "ERROR", "serve", "--model-dir", "m"])
    env = {"FLEETCAST_LOG_LEVEL": "DEBUG"}
    assert build_settings(cli_values(given), env=env).log_level == "ERROR"
    plain = parser.parse_args(["serve", "--model-dir", "m"])
    assert "log_level" not in cli_values(plain)
    assert build_settings(cli_values(plain), env=env).log_level == "DEBUG"


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
def test_the_log_level_flag_takes_every_level_the_environment_takes(level: str) -> None:
    """docs/OPERATIONS.md#configuration: `fleetcast --log-level` and FLEETCAST_LOG_LEVEL
    take the same five levels (the flag refused CRITICAL)."""
    from fleetcast.appliance.commands import cli_values
    from fleetcast.contract.cli import _build_parser

    given = _build_parser()[0].parse_args(["--log-level", level, "serve"])
    assert build_settings(cli_values(given), env={}).log_level == level
    assert build_settings({}, env={"FLEETCAST_LOG_LEVEL": level}).log_level == level


def test_every_setting_has_its_flag() -> None:
    """docs/PROMETHEUS.md#configure: every setting is a flag (``--name-with-dashes`` unless
    the table of flags says otherwise), except the two the docs name: snapshot_log_bytes
    (environment and file only) and log_level (``fleetcast --log-level``, before ``serve``)."""
    import argparse

    from fleetcast.appliance.commands import add_serve_arguments
    from fleetcast.appliance.settings_specs import _FLAGS, _SPECS

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    flags = {s for action in parser._actions for s in action.option_strings}
    missing = {
        name for name in _SPECS if _FLAGS.get(name, f"--{name.replace('_', '-')}") not in flags
    }
    assert missing == {"snapshot_log_bytes", "log_level"}
    args = ["--source", "prometheus", "--prometheus-url", "http://p:9090"]
    for value in ("", "up == 0"):
        given = vars(parser.parse_args([*args, "--prometheus-coverage", value]))
        got = build_settings({k: v for k, v in given.items() if v is not None}, env={})
        assert got.prometheus_coverage == value


@pytest.mark.parametrize(
    ("values", "named", "source"),
    [
        ({"prometheus_url": "http://127.0.0.1:9090"}, "--prometheus-url", "--source prometheus"),
        ({"speed": 100}, "--speed", "--demo"),
        ({"demo_servers": 5, "source": "prometheus", "prometheus_url": "http://p:9090"},
         "--demo-servers", "--demo"),
    ],
)  # fmt: skip
def test_a_flag_of_a_source_not_in_use_is_refused(
    values: dict[str, Any], named: str, source: str
) -> None:
    message = _error(values)
    assert f"{named} applies to another data source than the one in use" in message
    assert f"add the source they belong to ({source})" in message  # only the one it needs
    both = _error({"prometheus_url": "http://p:9090", "speed": 100})
    assert "apply to another data source" in both
    assert "(--source prometheus and --demo)" in both


def test_a_pid_or_log_file_without_daemon_is_refused(tmp_path: Path) -> None:
    # They were accepted and ignored: a foreground appliance writes neither.
    message = _error({"pid_file": tmp_path / "x.pid"})
    assert "--pid-file applies to --daemon only." in message
    assert "docs/OPERATIONS.md#without-systemd" in message
    assert "apply to --daemon only" in _error(
        {"pid_file": tmp_path / "p", "log_file": tmp_path / "l"}
    )
    daemon = build_settings({"daemon": True, "pid_file": tmp_path / "x.pid"}, env={})
    assert daemon.pid_file == tmp_path / "x.pid"


def test_the_environment_may_hold_the_other_sources_settings() -> None:
    env = {"FLEETCAST_PROMETHEUS_URL": "http://127.0.0.1:9090", "FLEETCAST_SPEED": "100"}
    assert build_settings({}, env=env).source == "push"
    assert build_settings({"speed": 100, "demo": True}, env={}).speed == 100


def test_a_misspelt_environment_variable_is_refused_not_ignored() -> None:
    message = _error({}, {"FLEETCAST_PROT": "18199", "FLEETCAST_MODELDIR": "/x"})
    assert "Unknown environment variable(s) FLEETCAST_MODELDIR, FLEETCAST_PROT" in message
    env = {"FLEETCAST_PORT": "18199", "FLEETCAST_TEST_ONNX": "/t.onnx", "OTHER_PROT": "1"}
    assert build_settings({}, env=env).port == 18199


def test_trusted_proxies_take_addresses_networks_and_any() -> None:
    got = build_settings({"trusted_proxies": "127.0.0.1, ::1, 10.0.0.0/8, *"}, env={})
    assert got.trusted_proxies == ("127.0.0.1", "::1", "10.0.0.0/8", "*")


def test_a_missing_config_file_is_not_called_bad_toml(tmp_path: Path) -> None:
    message = _error({"config": tmp_path / "nope.toml"})
    assert "Cannot read the config file" in message
    assert "create it, or point --config" in message
    assert "TOML syntax" not in message


def test_an_invalid_value_is_refused_also_where_a_higher_layer_overrides_it(
    tmp_path: Path,
) -> None:
    """FLEETCAST_PORT=abc under --port was ignored: a broken setting that would take effect
    the day the flag is dropped (a unit edited, a drop-in removed)."""
    message = _error({"port": 8001}, env={"FLEETCAST_PORT": "abc"})
    assert "Setting port is invalid: FLEETCAST_PORT=abc (" in message
    assert "overridden by --port for now" in message
    assert "Fix: change FLEETCAST_PORT to an integer from 1 to 65535, or remove it." in message
    config = tmp_path / "fleetcast.toml"
    config.write_text("capacity = 0\n")
    message = _error({"config": config}, env={"FLEETCAST_CAPACITY": "64"})
    assert f"capacity = 0 in {config}" in message
    assert "overridden by FLEETCAST_CAPACITY for now" in message
    # Not overridden: the message as before, without the remark.
    alone = _error({}, env={"FLEETCAST_PORT": "abc"})
    assert "overridden" not in alone
    assert "Fix: change FLEETCAST_PORT to an integer from 1 to 65535." in alone
    assert build_settings({"port": 8001}, env={"FLEETCAST_PORT": "8002"}).port == 8001
