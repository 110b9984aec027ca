"""Pull sources of the appliance: samples fetched from a monitoring system into the same
ingest path as ``POST /metrics`` (docs/PROMETHEUS.md).

``create_source(runtime, settings)`` returns the configured source (or None for the push
and demo modes); the app's lifespan starts and stops it. ``add_integration_arguments``
adds the ``fleetcast serve`` flags of the Prometheus source, the alert receivers and the
exposition; ``check_settings`` validates them when the Settings are built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from fleetcast.appliance.runtime import Runtime
    from fleetcast.appliance.sources.prometheus import PrometheusSource

__all__ = ["SOURCE_KINDS", "add_integration_arguments", "check_settings", "create_source"]

SOURCE_KINDS: tuple[str, ...] = ("push", "demo", "prometheus")
"""``--source`` values: push (POST /metrics only), demo (simulator), prometheus (pull)."""


def create_source(runtime: Runtime, settings: Any) -> PrometheusSource | None:
    """The pull source ``settings`` asks for (``source = "prometheus"``), else None.

    Raises ValueError with a fix when its configuration is incomplete.
    """
    if getattr(settings, "source", "push") != "prometheus":
        return None
    from fleetcast.appliance.sources.prometheus import PrometheusConfig, PrometheusSource

    return PrometheusSource(runtime, PrometheusConfig.from_settings(settings))


def check_settings(settings: Any) -> None:
    """Raise ContractError (what, why, fix, see: each part once) when the source or alert
    settings cannot work; other problems of the Prometheus settings raise ValueError."""
    from fleetcast.contract.errors import ContractError

    source = getattr(settings, "source", "push")
    if source not in SOURCE_KINDS:
        raise ContractError(
            f"Expected source to be one of {', '.join(SOURCE_KINDS)}, but got {source!r}.",
            "the appliance would not know where its samples come from.",
            "pass --source push|demo|prometheus.",
            "docs/PROMETHEUS.md#configure",
        )
    if source == "prometheus":
        from fleetcast.appliance.sources.prometheus import PrometheusConfig
        from fleetcast.appliance.sources.promql import PromClient

        if not getattr(settings, "prometheus_url", None):
            raise ContractError(
                "The Prometheus source needs a URL, but no prometheus_url is set.",
                "the appliance cannot read metrics without it.",
                "pass --prometheus-url http://HOST:9090 (or FLEETCAST_PROMETHEUS_URL, or "
                "prometheus_url in the config file).",
                "docs/PROMETHEUS.md#configure",
            )
        _check_url(
            "prometheus_url",
            settings.prometheus_url,
            "the appliance could not read any metric from it.",
            "http://HOST:9090",
            "docs/PROMETHEUS.md#configure",
        )
        config = PrometheusConfig.from_settings(settings)
        PromClient(config.url)  # checks the URL's form
    for name in ("alertmanager_url", "webhook_url"):
        url = getattr(settings, name, None)
        if url:
            _check_url(
                name,
                url,
                "alerts could not be delivered to it.",
                "http://HOST:9093" if name == "alertmanager_url" else "http://HOST:PORT/PATH",
                "docs/PROMETHEUS.md#alerts",
            )


def _check_url(name: str, url: Any, why: str, example: str, see: str) -> None:
    """Raise ContractError when setting ``name``'s ``url`` is not a usable http(s) URL
    (scheme, host, a numeric port in 1..65535: what urllib would only find when sending)."""
    from fleetcast.appliance.sources.promql import url_problem
    from fleetcast.appliance.urls import shown
    from fleetcast.contract.errors import ContractError

    problem = url_problem(str(url))
    if problem is not None:
        raise ContractError(
            f"Expected {name} to be an http(s) URL like {example}, but got "
            f"{shown(str(url), path=name != 'webhook_url')!r}: "
            f"{problem}.",
            why,
            f"pass --{name.replace('_', '-')} {example} (or FLEETCAST_{name.upper()}, or "
            f"{name} in the config file).",
            see,
        )


def add_integration_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the Prometheus source, the alert receivers and GET /metrics (all default
    to None: unset flags defer to env/TOML)."""
    group = parser.add_argument_group(
        "data source, Prometheus and alerts", "See docs/PROMETHEUS.md."
    )
    add = group.add_argument
    add("--source", choices=SOURCE_KINDS, help="where samples come from (default push)")
    add("--prometheus-url", help="Prometheus base URL for --source prometheus")
    for metric in ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms"):
        add(
            f"--prometheus-{metric.replace('_', '-')}",
            metavar="PROMQL",
            help=f"PromQL for {metric} (default: node_exporter"
            + (", none" if metric == "latency_ms" else "")
            + ")",
        )
    add("--prometheus-server-label", help="label naming the server (default instance)")
    add(
        "--prometheus-keep-port",
        dest="prometheus_strip_port",
        action="store_false",
        default=None,
        help="keep ':port' in server names (default: cut it)",
    )
    add("--prometheus-profile-label", help="label holding a contract profile")
    add(
        "--prometheus-profile-rule",
        dest="prometheus_profile_rules",
        action="append",
        metavar="REGEX=PROFILE",
        help="profile for server names matching REGEX (repeatable, first match wins)",
    )
    add("--prometheus-interval-s", type=float, help="seconds between queries (default 30)")
    add("--prometheus-timeout-s", type=float, help="HTTP timeout per query (default 10)")
    add("--prometheus-backfill-steps", type=int, help="steps read on start (default: encoder)")
    add("--prometheus-settle-s", type=float, help="read a step this long after it ends (10)")
    add("--prometheus-latency-fill", type=float, help="latency_ms without a value (default 0)")
    add(
        "--prometheus-coverage",
        metavar="PROMQL",
        help="PromQL naming the series that did not cover a step (default: the up-based "
        "check; '' = no check)",
    )
    add("--prometheus-backoff-max-s", type=float, help="longest retry delay (default 60)")
    add("--alertmanager-url", help="push alerts to this Alertmanager (/api/v2/alerts)")
    add("--webhook-url", help="POST alert changes as JSON to this URL")
    add("--alert-resend-s", type=float, help="re-send firing alerts this often (default 60)")
    add(
        "--alert-keep-firing-s",
        type=float,
        help="keep an alert raised (and a critical one critical) this many seconds of data "
        "after its probability last raised it (default 900; 0: resolve at once)",
    )
    add(
        "--metrics-max-servers",
        type=int,
        help="GET /metrics: per-server series for this many riskiest servers (default 500)",
    )
