"""`fleetcast dashboard`: arguments become one Settings object; bad input exits cleanly."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys

import pytest

from fleetcast.dashboard.commands import register_dashboard, run_dashboard, settings_from_args


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register_dashboard(parser.add_subparsers(dest="command"))
    return parser.parse_args(["dashboard", *argv])


def test_defaults_and_options_become_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETCAST_API_KEY", raising=False)
    settings = settings_from_args(parse())
    assert settings.base_url == "http://127.0.0.1:8000"
    assert (settings.port, settings.address, settings.refresh_seconds) == (5006, "127.0.0.1", 5.0)
    assert settings.api_key is None
    args = parse(
        "--appliance", "https://edge:8443/", "--port", "7000", "--api-key", "k",
        "--refresh-seconds", "2", "--address", "0.0.0.0", "--no-websocket",
    )  # fmt: skip
    settings = settings_from_args(args)
    assert settings.base_url == "https://edge:8443"
    assert settings.websocket_url == "wss://edge:8443/ws/predictions"
    assert (settings.port, settings.api_key, settings.refresh_seconds) == (7000, "k", 2.0)
    assert settings.use_websocket is False
    assert args.handler is run_dashboard


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETCAST_API_KEY", "from-env")
    assert settings_from_args(parse()).api_key == "from-env"


def test_bad_input_exits_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_dashboard(parse("--appliance", "edge:8000")) == 2
    err = capsys.readouterr().err
    assert "http://" in err
    assert "Fix:" in err
    assert run_dashboard(parse("--port", "70000")) == 2
    with pytest.raises(SystemExit):
        parse("--refresh-seconds", "0")


@pytest.mark.parametrize("value", ["0", "-1", "11", "three"])
def test_top_servers_outside_1_to_10_is_refused_not_clamped(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("--top-servers", value)
    assert exit_info.value.code == 2
    assert "from 1 to 10" in capsys.readouterr().err
    assert settings_from_args(parse("--top-servers", "10")).top_servers == 10


def test_a_port_in_use_exits_1_without_printing_a_url() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "fleetcast.contract.cli", "dashboard", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert "Address already in use" in result.stderr
    assert "pick a free --port" in result.stderr
    assert "http://" not in result.stdout


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:abc", "Invalid port"),
        ("http://", "no valid host"),
        ("http://edge:70000", "outside 1..65535"),
        ("http://edge:8000/?x=1", "query"),
        ("ftp://edge", "http:// or https://"),
    ],
)
def test_an_appliance_url_httpx_cannot_use_is_refused_at_start(url: str, why: str) -> None:
    # It used to be accepted: every browser session then failed building its client (a
    # traceback on the page) or stayed `disconnected` for good.
    with pytest.raises(ValueError, match="Expected --appliance") as refused:
        settings_from_args(parse("--appliance", url), env={})
    assert why in str(refused.value)
    assert "Fix:" in str(refused.value)


def test_an_upper_case_scheme_is_normalised_for_the_websocket_too() -> None:
    settings = settings_from_args(parse("--appliance", "HTTP://Edge:8000/"), env={})
    assert settings.base_url == "http://edge:8000"
    assert settings.websocket_url == "ws://edge:8000/ws/predictions"


@pytest.mark.parametrize("value", ["inf", "1e999", "nan", "abc", "-2"])
def test_refresh_seconds_must_be_a_finite_positive_number(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `inf` was accepted and stopped the polling after the first refresh; `abc` was
    # reported as "invalid _positive value".
    with pytest.raises(SystemExit) as exit_info:
        parse("--refresh-seconds", value)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Expected a number of seconds > 0" in err
    assert "_positive" not in err


@pytest.mark.parametrize("value", ["https://proxy.example:8443", "proxy.example:https", ":8443"])
def test_an_allow_origin_that_is_not_host_port_is_refused_with_a_message(value: str) -> None:
    # Bokeh raised on these at start: a Python traceback instead of a message.
    with pytest.raises(ValueError, match="Expected --allow-origin to be HOST or HOST:PORT"):
        settings_from_args(parse("--allow-origin", value), env={})
    settings = settings_from_args(
        parse("--allow-origin", "proxy.example:8443", "--allow-origin", "*"), env={}
    )
    assert settings.allow_websocket_origin == ("proxy.example:8443", "*")


def test_an_address_it_cannot_bind_names_address_not_port() -> None:
    # The message told the operator to pick a free --port for a mistyped --address.
    result = subprocess.run(
        [sys.executable, "-m", "fleetcast.contract.cli", "dashboard", "--port", "5999",
         "--address", "host.invalid"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot listen on host.invalid:5999" in result.stderr
    assert "give --address as an address of this machine" in result.stderr
    assert "pick a free --port" not in result.stderr
