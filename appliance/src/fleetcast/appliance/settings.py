"""The appliance's one Settings object: built once from CLI args, ``FLEETCAST_*`` env and TOML.

Precedence, highest first: command-line flags, environment variables (``FLEETCAST_PORT``,
``FLEETCAST_API_KEY`` ...), the ``[serve]`` table (or top level) of the ``--config`` TOML
file, the defaults below. ``build_settings`` is the only place that reads the environment;
everything else receives the resulting ``Settings``. See docs/OPERATIONS.md#configuration.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetcast.contract.errors import ContractError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from fleetcast.appliance.engine import EngineConfig

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "build_settings", "parse_rate_limit"]

ENV_PREFIX = "FLEETCAST_"
_SEE = "docs/OPERATIONS.md#configuration"
_RATE_UNITS = ("second", "minute", "hour", "day")


class SettingsError(ContractError):
    """A configuration value that cannot be used (the message says which and how to fix it)."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(
            what, "the appliance cannot start with an invalid configuration.", fix, _SEE
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
    (``off``) = no check, 0 = nothing ahead of now. Not applied to the demo source, whose
    simulated clock runs ahead at --speed."""
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
            "max_future_s": None if self.demo else self.max_future_seconds,
        }
        known = {f.name for f in dataclasses.fields(EngineConfig)}
        return EngineConfig(**{k: v for k, v in wanted.items() if k in known})

    def load_thresholds(self) -> dict[str, Any] | None:
        """The thresholds override read from ``thresholds_file`` (TOML or JSON), or None."""
        if self.thresholds_file is None:
            return None
        import json

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
    raw = str(text).strip().lower()
    if raw in {"off", "none", "0", ""}:
        return None
    count, _, unit = raw.partition("/")
    unit = unit or "minute"
    if unit not in _RATE_UNITS or not count.isdigit() or int(count) <= 0:
        raise SettingsError(
            f"Expected a rate limit like '600/minute', but got {text!r}.",
            f"write N/UNIT with N > 0 and UNIT one of {', '.join(_RATE_UNITS)}, or 'off'.",
        )
    return unit, int(count)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _opt_path(value: Any) -> Path | None:
    return None if value in (None, "") else Path(str(value))


def _opt_int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _providers(value: Any) -> tuple[str, ...] | None:
    if value in (None, ""):
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(p.strip() for p in items if p.strip()) or None


def _rate(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return value
    return parse_rate_limit(str(value))


def _seconds_or_off(value: Any) -> float | None:
    """``off`` (or none, or empty) → None; else a finite number of seconds >= 0."""
    if value is None or str(value).strip().lower() in ("off", "none", ""):
        return None
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected seconds >= 0 or 'off', got {value!r}")
    return seconds


def _positive_float(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError("must be a positive number")
    return number


def _positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "model_dir": lambda v: Path(str(v)),
    "host": str,
    "port": int,
    "state_dir": lambda v: Path(str(v)),
    "api_key": lambda v: None if v in (None, "") else str(v),
    "read_key_required": _bool,
    "rate_limit": _rate,
    "max_body_bytes": _positive_int,
    "fsync": _bool,
    "snapshot_interval_s": _positive_float,
    "snapshot_log_bytes": _positive_int,
    "demo": _bool,
    "demo_servers": _positive_int,
    "demo_seed": int,
    "speed": _positive_float,
    "capacity": _positive_int,
    "max_future_seconds": _seconds_or_off,
    "providers": _providers,
    "intra_op_threads": int,
    "step_cache": _bool,
    "history_steps": _opt_int,
    "thresholds_file": _opt_path,
    "daemon": _bool,
    "pid_file": _opt_path,
    "log_file": _opt_path,
    "log_level": lambda v: str(v).upper(),
    "access_log": _bool,
    "source": lambda v: str(v).strip().lower(),
    "prometheus_url": lambda v: None if v in (None, "") else str(v),
    "prometheus_cpu_pct": lambda v: None if v is None else str(v),
    "prometheus_mem_pct": lambda v: None if v is None else str(v),
    "prometheus_disk_io_mb_s": lambda v: None if v is None else str(v),
    "prometheus_latency_ms": lambda v: None if v is None else str(v),
    "prometheus_server_label": str,
    "prometheus_strip_port": _bool,
    "prometheus_profile_label": lambda v: None if v in (None, "") else str(v),
    "prometheus_profile_rules": lambda v: tuple(
        s.strip() for s in (str(v).split(",") if isinstance(v, str) else v) if str(s).strip()
    ),
    "prometheus_interval_s": _positive_float,
    "prometheus_timeout_s": _positive_float,
    "prometheus_backfill_steps": _opt_int,
    "prometheus_settle_s": float,
    "prometheus_latency_fill": float,
    "prometheus_backoff_max_s": _positive_float,
    "alertmanager_url": lambda v: None if v in (None, "") else str(v),
    "webhook_url": lambda v: None if v in (None, "") else str(v),
    "alert_resend_s": _positive_float,
    "metrics_max_servers": _positive_int,
}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(
            f"Cannot read the config file {path} ({type(exc).__name__}: {exc}).",
            "fix the TOML syntax or point --config at another file.",
        ) from exc
    table = data.get("serve", data)
    return {str(k).replace("-", "_"): v for k, v in table.items() if not isinstance(v, dict)}


def build_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge defaults < TOML < environment < CLI into one validated ``Settings``.

    ``cli`` maps field names to values; None values mean "not given". ``env`` defaults to
    ``os.environ``; ``FLEETCAST_API_KEY_FILE`` / ``api_key_file`` read the key from a file
    (systemd credentials: ``%d/api-key``). ``STATE_DIRECTORY`` (set by systemd's
    StateDirectory=) is the state dir unless one is given explicitly.
    """
    env = os.environ if env is None else env
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    config_file = config_file or _opt_path(
        cli.pop("config", None) or env.get(f"{ENV_PREFIX}CONFIG")
    )
    layers: list[dict[str, Any]] = []
    if config_file is not None:
        layers.append(_read_toml(config_file))
    env_layer: dict[str, Any] = {}
    if env.get("STATE_DIRECTORY"):
        # systemd may list several directories separated by ':'; ours is the first.
        env_layer["state_dir"] = env["STATE_DIRECTORY"].split(":")[0]
    for name in _CONVERTERS:
        key = f"{ENV_PREFIX}{name.upper()}"
        if key in env:
            env_layer[name] = env[key]
    if f"{ENV_PREFIX}API_KEY_FILE" in env:
        env_layer["api_key_file"] = env[f"{ENV_PREFIX}API_KEY_FILE"]
    layers.extend([env_layer, dict(cli)])

    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    key_file = merged.pop("api_key_file", None)
    if key_file and not merged.get("api_key"):
        merged["api_key"] = _read_key_file(Path(str(key_file)))
    unknown = sorted(set(merged) - set(_CONVERTERS))
    if unknown:
        raise SettingsError(
            f"Unknown setting(s): {', '.join(unknown)}.",
            f"use only the documented names ({', '.join(sorted(_CONVERTERS))}).",
        )
    values: dict[str, Any] = {}
    for name, raw in merged.items():
        try:
            values[name] = _CONVERTERS[name](raw)
        except (TypeError, ValueError) as exc:
            raise SettingsError(
                f"Setting {name}={raw!r} is invalid ({exc}).",
                f"give {name} a valid value (flag --{name.replace('_', '-')}, env {ENV_PREFIX}{name.upper()}).",
            ) from exc
    settings = Settings(**values)
    if not 0 < settings.port < 65536:
        raise SettingsError(
            f"Expected a port in 1..65535, but got {settings.port}.", "pass --port 8000."
        )
    if settings.api_key is not None and len(settings.api_key) < 16:
        raise SettingsError(
            "The API key is shorter than 16 characters.",
            "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`.",
        )
    if settings.read_key_required and settings.api_key is None:
        raise SettingsError(
            "--read-key-required was given but no API key is configured, so every read "
            "(and every write) would stay open.",
            "set FLEETCAST_API_KEY or --api-key-file, or drop --read-key-required.",
        )
    if settings.demo and settings.source == "prometheus":
        raise SettingsError(
            "--demo and --source prometheus were both given.",
            "choose one data source: drop --demo, or use --source demo.",
        )
    if settings.demo or settings.source == "demo":
        settings = dataclasses.replace(settings, demo=True, source="demo")
    from fleetcast.appliance.sources import check_settings

    try:
        check_settings(settings)
    except ValueError as exc:
        raise SettingsError(str(exc), "see docs/PROMETHEUS.md#configure.") from exc
    return settings


def _read_key_file(path: Path) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(
            f"Cannot read the API key file ({type(exc).__name__}).",
            "check --api-key-file / FLEETCAST_API_KEY_FILE and its permissions.",
        ) from exc
    if not key:
        raise SettingsError("The API key file is empty.", "write the key into it (one line).")
    return key
