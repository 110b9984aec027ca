"""The API key and the state stay private: a key file others may read is warned about, a key
that is not printable ASCII is refused at start, and the state directory and snapshot the
appliance creates are owner-only (docs/OPERATIONS.md#api-key, docs/OPERATIONS.md#state)."""

from __future__ import annotations

import json
import logging
import os
import stat
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from fleetcast.appliance import commands
from fleetcast.appliance.commands import main
from fleetcast.appliance.settings import SettingsError, build_settings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

KEY = "s3cret-s3cret-s3cret"
LOGGER = "fleetcast.appliance.settings_layers"


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    """The usual umask, so a file created without an explicit mode would be 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _key_file(path: Path, mode: int, text: str = KEY + "\n") -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- 1. a key file others may read ---------------------------------------------------------
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_a_key_file_others_may_read_is_used_with_a_warning(
    mode: int, tmp_path: Path, caplog: pytest.LogCaptureFixture, svc: Any
) -> None:
    key_file = _key_file(tmp_path / "api-key", mode)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        settings = build_settings({"api_key_file": key_file}, env={})
    assert settings.api_key == KEY  # warned, not refused
    [message] = _warnings(caplog)
    assert str(key_file) in message
    assert f"{mode:04o}" in message
    assert f"chmod 600 {key_file}" in message
    assert "--api-key-file" in message
    assert KEY not in message
    svc.four_parts(message)


@pytest.mark.parametrize("mode", [0o600, 0o400], ids=oct)
def test_a_private_key_file_gives_no_warning(
    mode: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = _key_file(tmp_path / "api-key", mode)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert build_settings({}, env={"FLEETCAST_API_KEY_FILE": str(key_file)}).api_key == KEY
    assert _warnings(caplog) == []


def test_the_warning_names_the_config_file_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = _key_file(tmp_path / "api-key", 0o644)
    config = tmp_path / "fleetcast.toml"
    config.write_text(f'[serve]\napi_key_file = "{key_file}"\n')
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert build_settings({"config": config}, env={}).api_key == KEY
    [message] = _warnings(caplog)
    assert f"api_key_file in {config}" in message
    assert "0644" in message


def test_a_systemd_credential_is_not_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    key_file = _key_file(credentials / "api-key", 0o644)
    env = {"CREDENTIALS_DIRECTORY": str(credentials), "FLEETCAST_API_KEY_FILE": str(key_file)}
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert build_settings({}, env=env).api_key == KEY
    assert _warnings(caplog) == []
    # The same file outside $CREDENTIALS_DIRECTORY is warned about.
    env["CREDENTIALS_DIRECTORY"] = str(tmp_path / "elsewhere")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        build_settings({}, env=env)
    assert len(_warnings(caplog)) == 1


def test_a_key_given_directly_is_not_a_file_and_gives_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert build_settings({}, env={"FLEETCAST_API_KEY": KEY}).api_key == KEY
    assert _warnings(caplog) == []


# -- 2. a key that is not printable ASCII --------------------------------------------------
BAD_KEYS = {
    "non-ASCII": ("ключключключключключ", "a non-ASCII character"),
    "space": ("s3cret s3cret s3cret", "a space"),
    "control": ("s3cret-s3cret\x07s3cret", "a control character"),
    "latin-1": ("s3cret-s3cret-s3crét", "a non-ASCII character"),
}


@pytest.mark.parametrize("source", ["flag", "env", "config", "key file"])
@pytest.mark.parametrize("bad", list(BAD_KEYS))
def test_a_key_that_is_not_printable_ascii_stops_the_start_with_exit_2(
    source: str,
    bad: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    svc: Any,
) -> None:
    key, kind = BAD_KEYS[bad]

    def serve(settings: Any) -> int:
        raise AssertionError("the key was accepted")

    monkeypatch.setattr(commands, "serve", serve)
    for name in ("API_KEY", "API_KEY_FILE", "CONFIG", "READ_KEY_REQUIRED"):
        monkeypatch.delenv(f"FLEETCAST_{name}", raising=False)
    argv = ["--model-dir", str(tmp_path / "no-model"), "--state-dir", str(tmp_path / "state")]
    if source == "flag":
        argv += ["--api-key", key]
        where = "--api-key"
    elif source == "env":
        monkeypatch.setenv("FLEETCAST_API_KEY", key)
        where = "FLEETCAST_API_KEY"
    elif source == "config":
        config = tmp_path / "fleetcast.toml"
        config.write_text(f"[serve]\napi_key = {json.dumps(key)}\n")  # \uXXXX escapes
        argv += ["--config", str(config)]
        where = f"api_key in {config}"
    else:
        argv += ["--api-key-file", str(_key_file(tmp_path / "api-key", 0o600, key + "\n"))]
        where = "--api-key-file"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"The API key (from {where}) contains {kind}" in err
    assert "printable ASCII" in err
    assert "token_urlsafe" in err
    assert key not in err
    svc.four_parts(err)
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_every_printable_ascii_character_is_accepted() -> None:
    key = "".join(chr(c) for c in range(0x21, 0x7F))
    assert build_settings({"api_key": key}, env={}).api_key == key


def test_a_short_key_is_still_refused_for_its_length() -> None:
    with pytest.raises(SettingsError, match="shorter than 16 characters"):
        build_settings({"api_key": "short-key"}, env={})


# -- 3. the state directory and its files are owner-only ------------------------------------
def test_a_state_directory_the_appliance_creates_is_0700(tmp_path: Path, stores: Any) -> None:
    state = tmp_path / "new" / "state"
    store = stores(state)
    store.recover()
    assert _mode(state) == 0o700
    assert _mode(tmp_path / "new") == 0o755  # only the state directory itself
    assert _mode(state / "lock") == 0o600
    assert [_mode(log) for log in store.iter_logs()] == [0o600]


def test_an_existing_state_directory_keeps_its_mode(tmp_path: Path, stores: Any) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o750)
    stores(state).recover()
    assert _mode(state) == 0o750


def test_the_snapshot_is_0600_and_replaced_atomically(
    tmp_path: Path, stores: Any, svc: Any
) -> None:
    state = tmp_path / "state"
    store = stores(state)
    store.recover()
    store.append(svc.make_columns(3))
    store.write_snapshot({"a": np.arange(4)}, store.rotate())
    snapshot = state / "snapshot.npz"
    assert _mode(snapshot) == 0o600
    first = snapshot.stat().st_ino
    # A temporary file left with a wide mode (same name as the next one) does not leak it.
    leftover = state / f"snapshot.npz.tmp{os.getpid()}"
    leftover.write_bytes(b"half a snapshot")
    leftover.chmod(0o644)
    store.write_snapshot({"a": np.arange(5)}, store.rotate())
    assert _mode(snapshot) == 0o600
    assert snapshot.stat().st_ino != first  # renamed over, not rewritten in place
    assert sorted(p.name for p in state.iterdir() if "tmp" in p.name) == []
    with np.load(snapshot) as saved:
        assert saved["a"].tolist() == [0, 1, 2, 3, 4]
