"""The unit files pass ``systemd-analyze verify`` (skipped where systemd-analyze is missing)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[3] / "systemd"
INSTALLED_BIN = "/opt/fleetcast/venv/bin/fleetcast"


@pytest.mark.parametrize("unit", ["fleetcast-appliance.service", "fleetcast-dashboard.service"])
def test_unit_verifies(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package: systemd)")
    # verify wants ExecStart's binary to exist: point it at this venv's fleetcast.
    fleetcast = Path(sys.executable).parent / "fleetcast"
    text = (UNITS / unit).read_text()
    assert INSTALLED_BIN in text
    (tmp_path / unit).write_text(text.replace(INSTALLED_BIN, str(fleetcast)))
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_appliance_unit_has_the_required_settings() -> None:
    lines = set((UNITS / "fleetcast-appliance.service").read_text().splitlines())
    for wanted in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=fleetcast",
        "MemoryDenyWriteExecute=no",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ):
        assert wanted in lines, wanted
    env = (UNITS / "fleetcast-appliance.env").read_text()
    assert "FLEETCAST_API_KEY=" not in env  # the key is a credential, not an env var
