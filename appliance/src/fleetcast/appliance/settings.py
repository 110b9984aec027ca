"""The appliance's one Settings object: built once from CLI args, ``FLEETCAST_*`` env and TOML.

Precedence, highest first: command-line flags, environment variables (``FLEETCAST_PORT``,
``FLEETCAST_API_KEY`` ...), the ``[serve]`` table (or the top level of a file without one)
of the ``--config`` TOML file, the defaults below (``$STATE_DIRECTORY`` is the default state
dir). ``build_settings`` is the only place that reads the environment; everything else
receives the resulting ``Settings``. Every value is checked once, here: a bad one (wrong
type or range, unknown key or table in the file) is a :class:`SettingsError` in four parts.
Each setting's accepted form is in :mod:`~fleetcast.appliance.settings_specs` (its
converter in :mod:`~fleetcast.appliance.settings_values`); the config file and the layers
merged here are read by :mod:`~fleetcast.appliance.settings_layers`.
See docs/OPERATIONS.md#configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetcast.appliance.settings_layers import _api_key, _Origin, _read_toml
from fleetcast.appliance.settings_specs import _SPECS, ENV_PREFIX, SettingsError
from fleetcast.appliance.settings_values import _RATE_UNITS, _opt_path, _rate
from fleetcast.contract.errors import ContractError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fleetcast.appliance.engine import EngineConfig
    from fleetcast.appliance.settings_layers import _Layer

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "build_settings", "parse_rate_limit"]


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
    max_connections: int = 1024
    """Open connections (and tasks) served at once; beyond it new ones get 503 (uvicorn's
    ``limit_concurrency``; docs/OPERATIONS.md#security)."""
    request_timeout_s: float = 30.0
    """Seconds a request may take to arrive whole (line, headers, body) from its first byte;
    past it the answer is 408 and the connection closes (docs/OPERATIONS.md#limits)."""
    keep_alive_s: float = 75.0
    """Seconds an idle HTTP connection stays open between requests; longer than pollers wait
    between requests (the dashboard: 5 s, uvicorn's default), so a request is not sent on a
    connection the server closes at that very moment (docs/OPERATIONS.md#limits)."""
    max_websocket_clients: int = 32
    """WebSocket subscribers at once; more are refused (each can hold two forecast bodies)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses of reverse proxies whose ``X-Forwarded-For`` names the client; empty = the
    header is ignored (the rate limit and the access log use the peer address)."""
    allowed_hosts: tuple[str, ...] | None = None
    """``Host`` header values answered (others get 400); None = the loopback names when
    bound to a loopback address (no DNS rebinding), any host otherwise."""
    fsync: bool = True
    """fsync the sample log before acknowledging a POST /metrics (one fsync per request)."""
    snapshot_interval_s: float = 300.0
    """Seconds between snapshots of the engine state (the log is truncated after each)."""
    snapshot_log_bytes: int = 64 * 1024 * 1024
    """Take a snapshot early once the sample log has grown past this many bytes."""
    forecast_settle_s: float = 10.0
    """Seconds a forecast waits, once the fleet's step has closed, for the servers that have
    not closed it yet (0: never; docs/RISK.md#buckets)."""
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
    forget_after: float | None = None
    """Forget a server (free its slot, drop its history) once the fleet's data is this many
    seconds past its newest sample (data time, not the wall clock); None (``off``) = never.
    Written as a duration (``7d``). docs/OPERATIONS.md#forgetting-servers."""
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
    alert_keep_firing_s: float = 900.0
    """An alert stays raised this many seconds of data after its probability last raised it,
    and a critical one stays critical as long; 0: resolved by the first forecast below its
    hysteresis (docs/RISK.md#alerts)."""
    metrics_max_servers: int = 500
    """GET /metrics exposes per-server series for at most this many (riskiest) servers."""

    @property
    def address(self) -> str:
        """``host:port`` as the log and systemd show it (``[::1]:8000`` for IPv6)."""
        host, port = self.host, self.port
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

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
            "forget_after_s": self.forget_after,
            "alert_keep_firing_s": self.alert_keep_firing_s,
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
    _refuse_unknown_env(env)
    env_origin = _Origin("env")
    layers.append(
        {
            name: (env[f"{ENV_PREFIX}{name.upper()}"], env_origin)
            for name in _SPECS
            if f"{ENV_PREFIX}{name.upper()}" in env
        }
    )
    layers.append({name: (value, _Origin("flag")) for name, value in cli.items()})

    key = _api_key(layers, env.get("CREDENTIALS_DIRECTORY"))
    merged: _Layer = {}
    for layer in layers:
        merged.update(layer)
    if key is not None:
        merged["api_key"] = key[:2]
    values: dict[str, Any] = {}
    # Every layer's value is checked, also one a higher layer overrides: FLEETCAST_PORT=abc
    # under a --port flag is a broken setting that takes effect the day the flag goes.
    for name, (raw, origin) in (item for layer in layers for item in layer.items()):
        spec, used = _SPECS[name], merged[name][1]
        try:
            spec.convert(raw)
        except (TypeError, ValueError) as exc:
            hidden = "" if used is origin else f", overridden by {used.where(name)} for now"
            raise SettingsError(
                f"Setting {name} is invalid: {origin.shown(name, raw)} ({exc}{hidden}).",
                f"change {origin.where(name)} to {spec.form}"
                + (", or remove it." if hidden else "."),
            ) from exc
    for name, (raw, _) in merged.items():
        values[name] = _SPECS[name].convert(raw)
    settings = Settings(**values)
    if settings.api_key is not None:
        where = key[1].where(key[2]) if key is not None else "the settings"
        generate = "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        bad = next((c for c in settings.api_key if not "!" <= c <= "~"), None)
        if bad is not None:
            kind = (
                "a space"
                if bad == " "
                else "a control character"
                if bad.isascii()
                else "a non-ASCII character"
            )
            raise SettingsError(
                f"The API key (from {where}) contains {kind}; a key must be printable ASCII "
                "(letters, digits and punctuation, no spaces).",
                f"generate one with {generate}.",
                why="the X-API-Key header travels as single bytes (latin-1), so such a key "
                "could never match and every request that needs it would be refused with 401.",
                see="docs/OPERATIONS.md#api-key",
            )
        if len(settings.api_key) < 16:
            raise SettingsError(
                f"The API key (from {where}) is shorter than 16 characters.",
                f"generate one with {generate}.",
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
    _refuse_idle_flags(settings, {n for n, (_, origin) in merged.items() if origin.kind == "flag"})
    from fleetcast.appliance.sources import check_settings

    try:
        check_settings(settings)
    except ContractError as exc:
        raise SettingsError(exc.what, exc.fix, why=exc.why, see=exc.see) from exc
    except ValueError as exc:
        raise _split_message(str(exc), "docs/PROMETHEUS.md#configure") from exc
    return settings


def _refuse_idle_flags(settings: Settings, flags: set[str]) -> None:
    """A flag of a data source that is not in use (``--prometheus-url`` without ``--source
    prometheus``, ``--speed`` without ``--demo``) is a mistake: refused, not ignored. The
    environment and the file may hold both sources' settings and are left alone. So is
    ``--pid-file`` or ``--log-file`` without ``--daemon``."""
    if not settings.daemon and (files := sorted(flags & {"pid_file", "log_file"})):
        given = ", ".join(_Origin("flag").where(n) for n in files)
        raise SettingsError(
            f"{given} {'applies' if len(files) == 1 else 'apply'} to --daemon only.",
            "add --daemon, or drop them (in the foreground the log goes to stderr, under "
            "systemd to the journal, and no pid file is written).",
            why="the appliance would start without writing them, and whatever reads them "
            "would find nothing.",
            see="docs/OPERATIONS.md#without-systemd",
        )
    idle = set()
    if settings.source != "prometheus":
        idle = {n for n in flags if n.startswith("prometheus_")}
    if not settings.demo:
        idle |= flags & {"speed", "demo_servers", "demo_seed"}
    if idle:
        given = ", ".join(_Origin("flag").where(n) for n in sorted(idle))
        verb = "applies" if len(idle) == 1 else "apply"
        sources = []
        if any(n.startswith("prometheus_") for n in idle):
            sources.append("--source prometheus")
        if idle & {"speed", "demo_servers", "demo_seed"}:
            sources.append("--demo")
        raise SettingsError(
            f"{given} {verb} to another data source than the one in use ({settings.source}).",
            f"add the source they belong to ({' and '.join(sources)}), or drop them.",
            why="the appliance would start without them, waiting for data that never comes "
            "the way you meant.",
        )


_OTHER_ENV = frozenset({"CONFIG"})
"""``FLEETCAST_*`` names that are not settings of their own (the config file's path)."""


def _refuse_unknown_env(env: Mapping[str, str]) -> None:
    """A ``FLEETCAST_*`` variable that names no setting is a typo (``FLEETCAST_PROT``):
    refused, as an unknown key of the config file is, not silently ignored."""
    known = {name.upper() for name in _SPECS} | _OTHER_ENV
    unknown = sorted(
        k
        for k in env
        if k.startswith(ENV_PREFIX)
        and k[len(ENV_PREFIX) :] not in known
        and not k.startswith(f"{ENV_PREFIX}TEST_")  # the test suites' own switches
    )
    if unknown:
        raise SettingsError(
            f"Unknown environment variable(s) {', '.join(unknown)}: no fleetcast setting has "
            "that name.",
            "fix the spelling (each setting's variable is in the table of this section), or "
            "unset it.",
            why="a misspelt variable would be ignored, and the appliance would start with a "
            "value you did not mean.",
        )
