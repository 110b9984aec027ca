"""The appliance's one Settings object: built once from CLI args, ``FLEETCAST_*`` env and TOML.

Precedence, highest first: command-line flags, environment variables (``FLEETCAST_PORT``,
``FLEETCAST_API_KEY`` ...), the ``[serve]`` table (or the top level of a file without one)
of the ``--config`` TOML file, the defaults below (``$STATE_DIRECTORY`` is the default state
dir). ``build_settings`` is the only place that reads the environment; everything else
receives the resulting ``Settings``. Every value is checked once, here: a bad one (wrong
type or range, unknown key or table in the file) is a :class:`SettingsError` in four parts.
See docs/OPERATIONS.md#configuration.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetcast.appliance.settings_values import (
    _LOG_LEVELS,
    _RATE_UNITS,
    _bool,
    _float_in,
    _int_in,
    _log_level,
    _names,
    _opt_path,
    _opt_text,
    _path,
    _providers,
    _query,
    _rate,
    _seconds_or_off,
    _source,
    _text,
)
from fleetcast.contract.errors import ContractError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from fleetcast.appliance.engine import EngineConfig

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "build_settings", "parse_rate_limit"]

ENV_PREFIX = "FLEETCAST_"
_SEE = "docs/OPERATIONS.md#configuration"


class SettingsError(ContractError):
    """A configuration value that cannot be used (the message says which and how to fix it)."""

    def __init__(self, what: str, fix: str, *, why: str | None = None, see: str = _SEE) -> None:
        super().__init__(
            what, why or "the appliance cannot start with an invalid configuration.", fix, see
        )


@dataclass(frozen=True)
class Settings:
    """Everything ``fleetcast serve`` is configured with. Immutable; passed down, never global."""

    model_dir: Path = Path("models/latest")
    """Directory holding ``model.onnx`` (+ optional ``server_mapping.json``); never shown by the API."""
    host: str = "127.0.0.1"
    """Interface to bind. Loopback by default: expose it deliberately (docs/OPERATIONS.md#security)."""
    port: int = 8000
    """TCP port to listen on."""
    state_dir: Path = Path("state")
    """Where the sample log and snapshots live; ``$STATE_DIRECTORY`` under systemd, else ``./state``."""
    api_key: str | None = field(default=None, repr=False)
    """Shared secret for the ``X-API-Key`` header; required for writes when set. Never logged."""
    read_key_required: bool = False
    """Also require the API key for GET endpoints and the WebSocket (``/health`` stays open)."""
    rate_limit: tuple[str, int] | None = ("minute", 1200)
    """Requests per client and time unit (Litestar RateLimitConfig) past which the answer is 429; None = off."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest accepted request body in bytes; larger ones get 413 before they are parsed."""
    fsync: bool = True
    """fsync the sample log before acknowledging a POST /metrics (one fsync per request)."""
    snapshot_interval_s: float = 300.0
    """Seconds between snapshots of the engine state (the log is truncated after each)."""
    snapshot_log_bytes: int = 64 * 1024 * 1024
    """Take a snapshot early once the sample log has grown past this many bytes."""
    demo: bool = False
    """Run the built-in simulator as a data source (backfills the model's history, at least 24 h, then streams)."""
    demo_servers: int = 90
    """Fleet size of the demo simulator."""
    demo_seed: int = 7
    """Seed of the demo simulator (same seed, same fleet)."""
    speed: float = 60.0
    """Demo speed: simulated seconds per real second."""
    max_future_seconds: float | None = 3600.0
    """Reject samples more than this many seconds ahead of this machine's clock (a sender
    with a clock in the future would move its server's window past the real data); None
    (``off``) = no check, 0 = nothing ahead of now. The demo's own samples are checked
    against its simulated clock (it runs ahead at --speed); POST /metrics always against
    this machine's."""
    capacity: int = 20_000
    """Maximum number of servers the engine preallocates buffers for."""
    providers: tuple[str, ...] | None = None
    """ONNX Runtime execution providers in order; None = TensorRT, CUDA, CPU filtered by availability."""
    intra_op_threads: int = 0
    """0 = auto (on CPU one single-threaded ONNX Runtime call per usable core, data parallel
    over batches); N = one call at a time with N intra-op threads."""
    step_cache: bool = True
    """Compute each window row's variable selection once and reuse it, when the model has step
    graphs and runs on CPU (docs/MODEL_FORMAT.md#step-cache); off: the full graph every time."""
    history_steps: int | None = None
    """Steps of actuals kept per server for /history; None = the engine's default (>= encoder)."""
    thresholds_file: Path | None = None
    """Optional TOML/JSON file with per-metric, per-profile risk thresholds (docs/OPERATIONS.md#risk)."""
    daemon: bool = False
    """Detach from the terminal (double fork) for hosts without systemd."""
    pid_file: Path | None = None
    """Pid file written by ``--daemon`` (default ``<state_dir>/fleetcast.pid``)."""
    log_file: Path | None = None
    """Log file for ``--daemon`` (default ``<state_dir>/fleetcast.log``); foreground logs go to stderr."""
    log_level: str = "INFO"
    """Python logging level of the appliance."""
    access_log: bool = True
    """Log one structured line per request (method, path, status, ms, client, bytes)."""
    # -- data source, Prometheus, alerts (docs/PROMETHEUS.md) --
    source: str = "push"
    """Where samples come from: push (POST /metrics only), demo (simulator), prometheus (pull)."""
    prometheus_url: str | None = None
    """Prometheus base URL for ``source = "prometheus"``, e.g. http://prometheus:9090."""
    prometheus_cpu_pct: str | None = None
    """PromQL for cpu_pct; None = the node_exporter default (docs/PROMETHEUS.md#queries)."""
    prometheus_mem_pct: str | None = None
    """PromQL for mem_pct; None = the node_exporter default."""
    prometheus_disk_io_mb_s: str | None = None
    """PromQL for disk_io_mb_s (MB/s); None = the node_exporter default."""
    prometheus_latency_ms: str | None = None
    """PromQL for latency_ms; None = none (filled with prometheus_latency_fill)."""
    prometheus_server_label: str = "instance"
    """Label naming the server."""
    prometheus_strip_port: bool = True
    """Cut ``:port`` from the server label (web-1:9100 → web-1)."""
    prometheus_profile_label: str | None = None
    """Label holding a contract profile (optional)."""
    prometheus_profile_rules: tuple[str, ...] = ()
    """``REGEX=PROFILE`` rules on server names, first match wins (then the name's profile)."""
    prometheus_interval_s: float = 30.0
    """Seconds between Prometheus queries."""
    prometheus_timeout_s: float = 10.0
    """HTTP timeout per Prometheus query."""
    prometheus_backfill_steps: int | None = None
    """Steps read from Prometheus on start; None = every step the model's inputs read (its
    encoder, plus a day for a day-ago model)."""
    prometheus_settle_s: float = 10.0
    """A step is read this many seconds after it ends (late scrapes have landed)."""
    prometheus_latency_fill: float = 0.0
    """latency_ms when there is no latency expression or value (docs/PROMETHEUS.md#latency)."""
    prometheus_coverage: str | None = None
    """PromQL naming series that did not cover a step (their servers' steps become gaps);
    None = the ``up``-based default, ``""`` = no check (docs/PROMETHEUS.md#partial-steps)."""
    prometheus_backoff_max_s: float = 60.0
    """Longest retry delay while Prometheus fails."""
    alertmanager_url: str | None = None
    """Push alerts to this Alertmanager (``/api/v2/alerts``)."""
    webhook_url: str | None = None
    """POST alert changes (firing/resolved) as JSON to this URL."""
    alert_resend_s: float = 60.0
    """Re-send firing alerts this often (Alertmanager expects repeats)."""
    metrics_max_servers: int = 500
    """GET /metrics exposes per-server series for at most this many (riskiest) servers."""

    def engine_config(self, model_dir: Path | None = None) -> EngineConfig:
        """The engine's part of these settings (optionally for another model directory)."""
        from fleetcast.appliance.engine import EngineConfig

        wanted: dict[str, Any] = {
            "model_dir": self.model_dir if model_dir is None else model_dir,
            "capacity": self.capacity,
            "providers": self.providers,
            "intra_op_threads": self.intra_op_threads,
            "step_cache": self.step_cache,
            "history_steps": self.history_steps,
            "thresholds": self.load_thresholds(),
            "max_future_s": self.max_future_seconds,
        }
        known = {f.name for f in dataclasses.fields(EngineConfig)}
        return EngineConfig(**{k: v for k, v in wanted.items() if k in known})

    def load_thresholds(self) -> dict[str, Any] | None:
        """The thresholds override read from ``thresholds_file`` (TOML or JSON), or None."""
        if self.thresholds_file is None:
            return None
        from fleetcast.appliance.risk import Thresholds

        try:
            text = self.thresholds_file.read_bytes()
            if self.thresholds_file.suffix == ".json":
                table = json.loads(text)
            else:
                table = tomllib.loads(text.decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise SettingsError(
                f"Cannot read the thresholds file ({type(exc).__name__}: {exc}).",
                "point --thresholds-file at a readable TOML or JSON file.",
            ) from exc
        try:
            if not isinstance(table, dict):
                raise TypeError(
                    f"expected a table {{metric: {{profile: threshold}}}}, got {table!r}"
                )
            Thresholds(table)  # unknown metrics or profiles, non-positive values
        except (TypeError, ValueError) as exc:
            raise SettingsError(
                f"The thresholds file holds an unusable table ({exc}).",
                "fix the file (see docs/RISK.md#configuration for its form).",
            ) from exc
        return table


def parse_rate_limit(text: str) -> tuple[str, int] | None:
    """Parse ``"600/minute"`` into ``("minute", 600)``; ``"off"`` or ``"0"`` disables it.

    >>> parse_rate_limit("600/minute"), parse_rate_limit("off")
    (('minute', 600), None)
    """
    try:
        return _rate(text)
    except ValueError as exc:
        raise SettingsError(
            f"Expected a rate limit like '600/minute', but got {text!r}.",
            f"write N/UNIT with N > 0 and UNIT one of {', '.join(_RATE_UNITS)}, or 'off'.",
        ) from exc


# Accepted TOML value types of a setting, and how the error message words them.
_T_INT: tuple[type, ...] = (int,)
_T_NUM: tuple[type, ...] = (int, float)
_T_BOOL: tuple[type, ...] = (bool,)
_T_STR: tuple[type, ...] = (str,)
_T_STRS: tuple[type, ...] = (str, list)
_T_NUM_OR_OFF: tuple[type, ...] = (int, float, str)
_TOML_FORMS = {
    _T_INT: "an integer (no quotes, no decimals)",
    _T_NUM: "a number (no quotes)",
    _T_BOOL: "true or false (no quotes)",
    _T_STR: "a quoted string",
    _T_STRS: "a quoted string or an array of strings",
    _T_NUM_OR_OFF: 'a number or "off"',
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
    "fsync": _flag_spec(True),
    "snapshot_interval_s": _seconds("300"),
    "snapshot_log_bytes": _Spec(_int_in(1), "an integer >= 1 (bytes)", _T_INT, "67108864"),
    "demo": _flag_spec(False),
    "demo_servers": _Spec(_int_in(1), "an integer >= 1", _T_INT, "90"),
    "demo_seed": _Spec(_int_in(0), "an integer >= 0", _T_INT, "7"),
    "speed": _Spec(
        _float_in(0.0, above=True),
        "a number > 0 (simulated seconds per real second)",
        _T_NUM,
        "60",
    ),
    "capacity": _Spec(_int_in(1), "an integer >= 1", _T_INT, "20000"),
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
    "metrics_max_servers": _Spec(_int_in(1), "an integer >= 1", _T_INT, "500"),
}
_SECRET = frozenset({"api_key"})
_FLAGS = {
    "access_log": "--no-access-log",
    "prometheus_strip_port": "--prometheus-keep-port",
    "prometheus_profile_rules": "--prometheus-profile-rule",
}
"""Flags whose spelling is not ``--name-with-dashes``."""


@dataclass(frozen=True)
class _Origin:
    """Where a raw value came from, to name it in messages."""

    kind: str
    """``flag``, ``env``, ``file`` or ``systemd`` (``$STATE_DIRECTORY``)."""
    path: Path | None = None
    key: str | None = None
    """The key as spelled in the config file."""

    def where(self, name: str) -> str:
        if self.kind == "flag":
            return _FLAGS.get(name, f"--{name.replace('_', '-')}")
        if self.kind == "env":
            return f"{ENV_PREFIX}{name.upper()}"
        if self.kind == "file":
            return f"{self.key or name} in {self.path}"
        return "STATE_DIRECTORY (systemd's StateDirectory=)"

    def shown(self, name: str, raw: Any) -> str:
        value: Any = "<hidden>" if name in _SECRET else raw
        if self.kind == "flag":
            return f"{self.where(name)} {value}"
        if self.kind == "env":
            return f"{ENV_PREFIX}{name.upper()}={value}"
        if self.kind == "file":
            shown = value if name in _SECRET else _toml_literal(value)
            return f"{self.key or name} = {shown} in {self.path}"
        return f"STATE_DIRECTORY={value}"


_Layer = dict[str, tuple[Any, _Origin]]


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for kind, word in ((int, "integer"), (float, "float"), (str, "string"), (list, "array")):
        if isinstance(value, kind):
            return word
    return "table" if isinstance(value, dict) else "date/time"


def _toml_literal(value: Any) -> str:
    """``value`` as it would be written in TOML (for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _toml_fits(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, list):
        return list in kinds and all(isinstance(item, str) for item in value)
    if isinstance(value, int):
        return int in kinds
    return isinstance(value, (float, str)) and type(value) in kinds


def _toml_error(path: Path, what: str, fix: str) -> SettingsError:
    return SettingsError(f"The config file {path} {what}", fix)


def _suggest(word: str, names: Any) -> str:
    close = difflib.get_close_matches(word.replace("-", "_"), list(names), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _read_toml(path: Path) -> _Layer:
    """The settings of ``path``: its ``[serve]`` table, or its top level when it has none.

    Anything else — another table, a nested table, an unknown key, a value of the wrong TOML
    type — is a SettingsError naming the file and the key (nothing is dropped silently).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SettingsError(
            f"Cannot read the config file {path} ({type(exc).__name__}: {reason}).",
            "fix the TOML syntax or point --config / FLEETCAST_CONFIG at another file.",
        ) from exc
    where = "[serve]"
    if "serve" in data:
        table = data["serve"]
        if not isinstance(table, dict):
            raise _toml_error(
                path,
                f"sets serve = {table!r}, but serve must be a table.",
                "write the settings as key = value lines under a [serve] header.",
            )
        for key, value in data.items():
            if key == "serve":
                continue
            kind = f"a table [{key}]" if isinstance(value, dict) else f"a key {key!r}"
            raise _toml_error(
                path,
                f"has {kind} outside [serve]; fleetcast serve reads only the [serve] table.",
                f"move {key} into [serve] if it is a setting, otherwise remove it.",
            )
    else:
        table, where = data, "the top level"
    layer: _Layer = {}
    for key, value in table.items():
        name = str(key).replace("-", "_")
        if isinstance(value, dict) and where == "[serve]":
            raise _toml_error(
                path,
                f"has a table [serve.{key}], which fleetcast serve does not read.",
                f"remove [serve.{key}]: every setting is a plain key = value line under "
                "[serve]; risk thresholds go in their own file, named by thresholds_file "
                "(docs/OPERATIONS.md#risk).",
            )
        if isinstance(value, dict):
            hint = " (did you mean [serve]?)" if _suggest(key, ["serve"]) else ""
            raise _toml_error(
                path,
                f"has a table [{key}]{hint}, which fleetcast serve does not read.",
                f"put the settings under a table named exactly [serve] (or as top-level keys "
                f"of a file without tables), and remove or rename [{key}].",
            )
        spec = _SPECS.get(name)
        if spec is None:
            raise _toml_error(
                path,
                f"has an unknown key {key!r} in {where}{_suggest(key, _SPECS)}.",
                f"use only the documented names: {', '.join(_SPECS)}.",
            )
        if name in layer:
            raise _toml_error(
                path,
                f"sets {name} twice (as {layer[name][1].key!r} and {key!r}).",
                "keep one of the two lines.",
            )
        if not _toml_fits(value, spec.toml):
            shown = "<hidden>" if name in _SECRET else _toml_literal(value)
            form = "" if spec.toml == _T_BOOL else f" ({spec.form})"
            fix = (
                f"{key} = {spec.example}" if spec.example else f"{key} as {_TOML_FORMS[spec.toml]}"
            )
            raise _toml_error(
                path,
                f"sets {key} = {shown} (a TOML {_toml_type(value)}), but {key} takes "
                f"{_TOML_FORMS[spec.toml]}.",
                f"write {fix}{form}.",
            )
        layer[name] = (value, _Origin("file", path, str(key)))
    return layer


def _api_key(layers: list[_Layer]) -> tuple[Any, _Origin, str] | None:
    """The key from the highest layer that gives one, as a key or a key file (both in one
    layer is refused, at every level). Removes ``api_key``/``api_key_file`` from every
    layer. An empty value counts as not given. Returns (key, origin, setting name)."""
    chosen: tuple[Any, _Origin, str] | None = None
    for layer in reversed(layers):  # highest precedence first
        given = {
            name: layer.pop(name)
            for name in ("api_key", "api_key_file")
            if name in layer and layer[name][0] not in (None, "")
        }
        for name in ("api_key", "api_key_file"):
            layer.pop(name, None)
        if len(given) == 2:
            raise SettingsError(
                f"Both {given['api_key'][1].where('api_key')} and "
                f"{given['api_key_file'][1].where('api_key_file')} give the API key, at the "
                "same level of precedence.",
                "give the key once: keep the key file (a key on the command line is visible "
                "in ps) and drop the other.",
                see="docs/OPERATIONS.md#api-key",
            )
        if chosen is not None or not given:
            continue
        if "api_key_file" in given:
            raw, origin = given["api_key_file"]
            key = _read_key_file(Path(str(raw)), origin.where("api_key_file"))
            chosen = (key, origin, "api_key_file")
        else:
            chosen = (*given["api_key"], "api_key")
    return chosen


def _split_message(text: str, see: str) -> SettingsError:
    """A SettingsError of a message that may already hold "Why it matters:", "Fix:" and
    "See" parts (each part appears once in the result)."""
    match = _PARTS.match(text.strip())
    parts = match.groupdict() if match else {"what": text}
    return SettingsError(
        (parts.get("what") or text).strip(),
        (parts.get("fix") or "correct that setting as described.").strip(),
        why=(parts.get("why") or "").strip() or None,
        see=(parts.get("see") or see).strip(),
    )


_PARTS = re.compile(
    r"^(?P<what>.*?)(?:\s+Why it matters:\s*(?P<why>.*?))?(?:\s+Fix:\s*(?P<fix>.*?))?"
    r"(?:\s+See\s+(?P<see>\S+?)\.?)?\s*$",
    re.DOTALL,
)


def build_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge defaults < ``$STATE_DIRECTORY`` < TOML < environment < CLI into one validated
    ``Settings``.

    ``cli`` maps field names to values; None values mean "not given". ``env`` defaults to
    ``os.environ``. ``STATE_DIRECTORY`` (set by systemd's StateDirectory=) is only the
    default state dir: ``state_dir`` in the file, ``FLEETCAST_STATE_DIR`` and
    ``--state-dir`` all beat it. The API key comes from the highest level that gives one,
    either as the key (``--api-key``, ``FLEETCAST_API_KEY``, ``api_key``) or as a file holding
    it (``--api-key-file``, ``FLEETCAST_API_KEY_FILE``, ``api_key_file``; systemd
    credentials: ``%d/api-key``); both at one level is refused. Every value is checked
    against its accepted form and range; a bad one is a :class:`SettingsError` naming the
    setting, where it came from and the fix.
    """
    env = os.environ if env is None else env
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    config_file = config_file or _opt_path(
        cli.pop("config", None) or env.get(f"{ENV_PREFIX}CONFIG")
    )
    unknown = sorted(set(cli) - set(_SPECS))
    if unknown:
        raise SettingsError(
            f"Unknown setting(s): {', '.join(unknown)}.",
            f"use only the documented names ({', '.join(sorted(_SPECS))}).",
        )
    defaults: _Layer = {}
    if env.get("STATE_DIRECTORY"):
        # systemd may list several directories separated by ':'; ours is the first.
        defaults["state_dir"] = (env["STATE_DIRECTORY"].split(":")[0], _Origin("systemd"))
    layers: list[_Layer] = [defaults]
    if config_file is not None:
        layers.append(_read_toml(config_file))
    env_origin = _Origin("env")
    layers.append(
        {
            name: (env[f"{ENV_PREFIX}{name.upper()}"], env_origin)
            for name in _SPECS
            if f"{ENV_PREFIX}{name.upper()}" in env
        }
    )
    layers.append({name: (value, _Origin("flag")) for name, value in cli.items()})

    key = _api_key(layers)
    merged: _Layer = {}
    for layer in layers:
        merged.update(layer)
    if key is not None:
        merged["api_key"] = key[:2]
    values: dict[str, Any] = {}
    for name, (raw, origin) in merged.items():
        spec = _SPECS[name]
        try:
            values[name] = spec.convert(raw)
        except (TypeError, ValueError) as exc:
            raise SettingsError(
                f"Setting {name} is invalid: {origin.shown(name, raw)} ({exc}).",
                f"change {origin.where(name)} to {spec.form}.",
            ) from exc
    settings = Settings(**values)
    if settings.api_key is not None and len(settings.api_key) < 16:
        where = key[1].where(key[2]) if key is not None else "the settings"
        raise SettingsError(
            f"The API key (from {where}) is shorter than 16 characters.",
            "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`.",
            see="docs/OPERATIONS.md#api-key",
        )
    if settings.read_key_required and settings.api_key is None:
        raise SettingsError(
            "--read-key-required was given but no API key is configured, so every read "
            "(and every write) would stay open.",
            "set FLEETCAST_API_KEY or --api-key-file, or drop --read-key-required.",
            see="docs/OPERATIONS.md#api-key",
        )
    if settings.demo and settings.source == "prometheus":
        raise SettingsError(
            "--demo and --source prometheus were both given.",
            "choose one data source: drop --demo, or use --source demo.",
        )
    if settings.demo or settings.source == "demo":
        settings = dataclasses.replace(settings, demo=True, source="demo")
        if settings.demo_servers > settings.capacity:
            raise SettingsError(
                f"The demo simulates {settings.demo_servers} servers (demo_servers) but the "
                f"appliance tracks at most {settings.capacity} (capacity).",
                f"raise --capacity to at least {settings.demo_servers} or lower "
                f"--demo-servers to at most {settings.capacity}.",
                why=f"the samples of the other {settings.demo_servers - settings.capacity} "
                "simulated servers would be rejected at every step, so the demo would show "
                "a fleet with servers missing.",
            )
    from fleetcast.appliance.sources import check_settings

    try:
        check_settings(settings)
    except ContractError as exc:
        raise SettingsError(exc.what, exc.fix, why=exc.why, see=exc.see) from exc
    except ValueError as exc:
        raise _split_message(str(exc), "docs/PROMETHEUS.md#configure") from exc
    return settings


def _read_key_file(path: Path, where: str) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SettingsError(
            f"Cannot read the API key file {path} (from {where}): {reason}.",
            "check the path and that the user running fleetcast may read the file (under "
            "systemd: LoadCredential= and FLEETCAST_API_KEY_FILE=%d/api-key).",
            see="docs/OPERATIONS.md#api-key",
        ) from exc
    if not key:
        raise SettingsError(
            f"The API key file {path} (from {where}) is empty.",
            "write the key into it (one line).",
            see="docs/OPERATIONS.md#api-key",
        )
    return key
