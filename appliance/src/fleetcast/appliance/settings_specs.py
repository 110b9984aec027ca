"""The appliance's settings table: what each setting accepts, and the error it raises.

Split from :mod:`fleetcast.appliance.settings` (which re-exports :data:`ENV_PREFIX` and
:class:`SettingsError`). ``_SPECS`` maps every setting (every ``Settings`` field, plus
``api_key_file``) to its converter from :mod:`fleetcast.appliance.settings_values`, the
accepted form as messages word it, the accepted TOML value types and a TOML example;
``_FLAGS`` names the flags not spelled ``--name-with-dashes``. Constant tables only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleetcast.appliance.settings_values import (
    _LOG_LEVELS,
    _RATE_UNITS,
    _bool,
    _duration_or_off,
    _float_in,
    _int_in,
    _log_level,
    _names,
    _opt_names,
    _opt_path,
    _opt_text,
    _path,
    _providers,
    _proxies,
    _query,
    _rate,
    _seconds_or_off,
    _source,
    _text,
)
from fleetcast.contract.errors import ContractError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ENV_PREFIX", "SettingsError"]

ENV_PREFIX = "FLEETCAST_"
_SEE = "docs/OPERATIONS.md#configuration"


class SettingsError(ContractError):
    """A configuration value that cannot be used (the message says which and how to fix it)."""

    def __init__(self, what: str, fix: str, *, why: str | None = None, see: str = _SEE) -> None:
        super().__init__(
            what, why or "the appliance cannot start with an invalid configuration.", fix, see
        )


# Accepted TOML value types of a setting, and how the error message words them.
_T_INT: tuple[type, ...] = (int,)
_T_NUM: tuple[type, ...] = (int, float)
_T_BOOL: tuple[type, ...] = (bool,)
_T_STR: tuple[type, ...] = (str,)
_T_STRS: tuple[type, ...] = (str, list)
_T_NUM_OR_OFF: tuple[type, ...] = (int, float, str)
_T_DURATION: tuple[type, ...] = (str, int, float)
"""The types of :data:`_T_NUM_OR_OFF` in another order: another key of :data:`_TOML_FORMS`."""
_TOML_FORMS = {
    _T_INT: "an integer (no quotes, no decimals)",
    _T_NUM: "a number (no quotes)",
    _T_BOOL: "true or false (no quotes)",
    _T_STR: "a quoted string",
    _T_STRS: "a quoted string or an array of strings",
    _T_NUM_OR_OFF: 'a number or "off"',
    _T_DURATION: 'a quoted duration such as "7d", a number of seconds, or "off"',
}
_BOOL_FORM = "true or false (also yes/no, on/off, 1/0)"


@dataclass(frozen=True)
class _Spec:
    """How one setting is converted and what it accepts."""

    convert: Callable[[Any], Any]
    form: str
    """The accepted values, for messages ("an integer from 1 to 65535")."""
    toml: tuple[type, ...]
    """Accepted TOML value types."""
    example: str | None = None
    """A TOML line's value for the fix of a wrong TOML type."""


def _flag_spec(default: bool) -> _Spec:
    return _Spec(_bool, _BOOL_FORM, _T_BOOL, "true" if default else "false")


def _seconds(default: str, *, zero: bool = False) -> _Spec:
    convert = _float_in(0.0, above=not zero)
    return _Spec(convert, f"a number of seconds {'>=' if zero else '>'} 0", _T_NUM, default)


_RATE_FORM = (
    f"a rate limit N/UNIT with N > 0 and UNIT one of {', '.join(_RATE_UNITS)} "
    "(e.g. 600/minute), or 'off'"
)

_SPECS: dict[str, _Spec] = {
    "model_dir": _Spec(_path, "a folder path", _T_STR, '"/opt/fleetcast/models/latest"'),
    "host": _Spec(
        _text, "an interface address such as 127.0.0.1 or 0.0.0.0", _T_STR, '"127.0.0.1"'
    ),
    "port": _Spec(_int_in(1, 65535), "an integer from 1 to 65535", _T_INT, "8000"),
    "state_dir": _Spec(_path, "a folder path", _T_STR, '"/var/lib/fleetcast"'),
    "api_key": _Spec(_opt_text, "a key of at least 16 characters", _T_STR),
    "api_key_file": _Spec(_opt_path, "a file path", _T_STR, '"/etc/fleetcast/api-key"'),
    "read_key_required": _flag_spec(False),
    "rate_limit": _Spec(_rate, _RATE_FORM, _T_STR, '"1200/minute"'),
    "max_body_bytes": _Spec(_int_in(1), "an integer >= 1 (bytes)", _T_INT, "8388608"),
    "max_connections": _Spec(_int_in(1), "an integer >= 1", _T_INT, "1024"),
    "request_timeout_s": _seconds("30"),
    "keep_alive_s": _seconds("75"),
    "max_websocket_clients": _Spec(_int_in(0), "an integer >= 0 (0 = no WebSocket)", _T_INT, "32"),
    "trusted_proxies": _Spec(
        _proxies,
        "IP addresses or networks of reverse proxies (comma-separated; * = any)",
        _T_STRS,
        '["127.0.0.1"]',
    ),
    "allowed_hosts": _Spec(
        _opt_names, "host names (comma-separated; * = any)", _T_STRS, '["fleetcast.example"]'
    ),
    "fsync": _flag_spec(True),
    "snapshot_interval_s": _seconds("300"),
    "snapshot_log_bytes": _Spec(_int_in(1), "an integer >= 1 (bytes)", _T_INT, "67108864"),
    "forecast_settle_s": _seconds("10", zero=True),
    "demo": _flag_spec(False),
    "demo_servers": _Spec(_int_in(1), "an integer >= 1", _T_INT, "90"),
    "demo_seed": _Spec(_int_in(0), "an integer >= 0", _T_INT, "7"),
    "speed": _Spec(
        _float_in(0.0, above=True),
        "a number > 0 (simulated seconds per real second)",
        _T_NUM,
        "60",
    ),
    "capacity": _Spec(_int_in(1, 1_000_000), "an integer from 1 to 1000000", _T_INT, "20000"),
    "max_future_seconds": _Spec(
        _seconds_or_off, "seconds >= 0 or 'off' (no check)", _T_NUM_OR_OFF, "3600"
    ),
    "providers": _Spec(
        _providers,
        "a comma-separated list of ONNX Runtime providers",
        _T_STRS,
        '["CUDAExecutionProvider", "CPUExecutionProvider"]',
    ),
    "intra_op_threads": _Spec(_int_in(0), "an integer >= 0 (0 = auto)", _T_INT, "0"),
    "step_cache": _flag_spec(True),
    "forget_after": _Spec(
        _duration_or_off,
        "a duration of data time of at least 300 seconds (one step): seconds, or a number "
        "with a unit s, m, h, d or w such as 7d or 36h; or off (never forget)",
        _T_DURATION,
        '"7d"',
    ),
    "history_steps": _Spec(
        _int_in(1, optional=True),
        "an integer >= 1 (leave it unset for what the model reads)",
        _T_INT,
        "600",
    ),
    "thresholds_file": _Spec(_opt_path, "a file path", _T_STR, '"/etc/fleetcast/thresholds.toml"'),
    "daemon": _flag_spec(False),
    "pid_file": _Spec(_opt_path, "a file path", _T_STR, '"/run/fleetcast/fleetcast.pid"'),
    "log_file": _Spec(_opt_path, "a file path", _T_STR, '"/var/log/fleetcast/fleetcast.log"'),
    "log_level": _Spec(_log_level, f"one of {', '.join(_LOG_LEVELS)}", _T_STR, '"INFO"'),
    "access_log": _flag_spec(True),
    "source": _Spec(_source, "one of push, demo, prometheus", _T_STR, '"push"'),
    "prometheus_url": _Spec(
        _opt_text, "a URL such as http://prometheus:9090", _T_STR, '"http://prometheus:9090"'
    ),
    "prometheus_cpu_pct": _Spec(_query, "a PromQL expression", _T_STR),
    "prometheus_mem_pct": _Spec(_query, "a PromQL expression", _T_STR),
    "prometheus_disk_io_mb_s": _Spec(_query, "a PromQL expression", _T_STR),
    "prometheus_latency_ms": _Spec(_query, "a PromQL expression", _T_STR),
    "prometheus_server_label": _Spec(_text, "a label name", _T_STR, '"instance"'),
    "prometheus_strip_port": _flag_spec(True),
    "prometheus_profile_label": _Spec(_opt_text, "a label name", _T_STR, '"fleetcast_profile"'),
    "prometheus_profile_rules": _Spec(
        _names, "REGEX=PROFILE rules (comma-separated)", _T_STRS, '["^db-=database"]'
    ),
    "prometheus_interval_s": _seconds("30"),
    "prometheus_timeout_s": _seconds("10"),
    "prometheus_backfill_steps": _Spec(
        _int_in(1, optional=True),
        "an integer >= 1 (leave it unset for what the model reads)",
        _T_INT,
        "576",
    ),
    "prometheus_settle_s": _seconds("10", zero=True),
    "prometheus_latency_fill": _Spec(_float_in(0.0), "a number of milliseconds >= 0", _T_NUM, "0"),
    "prometheus_coverage": _Spec(_query, "a PromQL expression", _T_STR),
    "prometheus_backoff_max_s": _seconds("60"),
    "alertmanager_url": _Spec(_opt_text, "an http(s) URL", _T_STR, '"http://alertmanager:9093"'),
    "webhook_url": _Spec(_opt_text, "an http(s) URL", _T_STR, '"http://hooks.example:8080/"'),
    "alert_resend_s": _seconds("60"),
    "alert_keep_firing_s": _seconds("900", zero=True),
    "metrics_max_servers": _Spec(_int_in(1), "an integer >= 1", _T_INT, "500"),
}
_SECRET = frozenset({"api_key"})
_FLAGS = {
    "access_log": "--no-access-log",
    "prometheus_strip_port": "--prometheus-keep-port",
    "prometheus_profile_rules": "--prometheus-profile-rule",
}
"""Flags whose spelling is not ``--name-with-dashes``."""
