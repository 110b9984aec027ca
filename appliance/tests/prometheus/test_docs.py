"""The Prometheus/Grafana files in docs/ cannot rot: names exist, promtool accepts the rules."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleetcast.appliance import exposition, exposition_parts

DOCS = Path(__file__).parents[3] / "docs"
RULES = sorted((DOCS / "prometheus").glob("fleetcast-*-rules.yml"))
DASHBOARD = DOCS / "grafana" / "fleetcast.json"


def _exposed_families() -> set[str]:
    source = inspect.getsource(exposition) + inspect.getsource(exposition_parts)
    return set(re.findall(r'"(fleetcast_[a-z_]+)"', source))


def _names_in(text: str, prefix: str) -> set[str]:
    names = set(re.findall(rf"\b({prefix}[a-zA-Z0-9_:]*)", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def _recorded() -> set[str]:
    return {m for path in RULES for m in re.findall(r"record: (\S+)", path.read_text())}


def test_dashboard_queries_only_exposed_or_recorded_series() -> None:
    if not DASHBOARD.is_file():
        pytest.skip("docs/grafana/fleetcast.json not in this checkout")
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    text = "\n".join(exprs)
    used = _names_in(text, "fleetcast_")
    assert used, "the dashboard should chart fleetcast metrics"
    assert used <= _exposed_families(), used - _exposed_families()
    assert _names_in(text, "fleetcast:") <= _recorded()
    variables = {v["name"] for v in dash["templating"]["list"]}
    for var in re.findall(r"\$\{?(\w+)", text):
        assert var in variables


def test_rules_use_exposed_series() -> None:
    text = "\n".join(p.read_text() for p in RULES)
    assert len(RULES) == 2
    assert _names_in(text, "fleetcast_") <= _exposed_families()


def _exposed_labels() -> set[str]:
    """Label names the exposition writes (its label dicts' keys), what Prometheus adds, and
    node_exporter's ``mode`` (read by the ``fleetcast:actual`` recording rule)."""
    source = inspect.getsource(exposition) + inspect.getsource(exposition_parts)
    written = set(re.findall(r'"([a-z_]+)": ', source))
    return written | {"job", "instance", "mode"}


def test_dashboard_and_rules_use_only_exposed_labels() -> None:
    if not DASHBOARD.is_file():
        pytest.skip("docs/grafana/fleetcast.json not in this checkout")
    dash = json.loads(DASHBOARD.read_text())
    targets = [t for p in dash["panels"] for t in p.get("targets", [])]
    text = "\n".join([t["expr"] for t in targets] + [p.read_text() for p in RULES])
    used = set(
        re.findall(r"\{\{\s*(\w+)\s*\}\}", " ".join(t.get("legendFormat", "") for t in targets))
    )
    used |= set(re.findall(r"\$labels\.(\w+)", text))
    used |= set(re.findall(r"[{,]\s*(\w+)\s*(?:=~|!=|=)", text))
    for group in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", text):
        used |= {x.strip() for x in group.split(",") if x.strip()}
    assert used, "the dashboard and rules should select by labels"
    assert used <= _exposed_labels(), used - _exposed_labels()


def test_dashboard_colours_risk_as_the_codex() -> None:
    """green < 0.3 <= yellow <= 0.7 < red (docs/RISK.md#risk-model): Grafana colours a
    value from its step's value up, so red must start just above 0.7 (risks have four
    decimals), and 0.7 itself stays yellow as on the fleetcast dashboard."""
    if not DASHBOARD.is_file():
        pytest.skip("docs/grafana/fleetcast.json not in this checkout")
    dash = json.loads(DASHBOARD.read_text())
    checked = 0
    for panel in dash["panels"]:
        steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {})
        colours = {s["color"]: s["value"] for s in steps.get("steps", [])}
        if "red" not in colours:
            continue
        checked += 1
        assert colours["yellow"] == 0.3, panel["title"]
        assert 0.7 < colours["red"] <= 0.7001, panel["title"]
    assert checked, "the riskiest-servers panel colours by risk"


def _promtool_test(tmp_path: Path, tests: dict[str, Any]) -> None:
    """Run ``promtool test rules`` on ``tests`` (JSON is YAML); fail with its output."""
    path = tmp_path / "tests.yml"
    path.write_text(json.dumps(tests))
    result = subprocess.run(
        ["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _alert_rules_test(
    tmp_path: Path, input_series: list[dict[str, str]], alert_rule_test: list[dict[str, Any]]
) -> None:
    """:func:`_promtool_test` of the alert rules file: series one minute apart, evaluated
    every minute."""
    _promtool_test(
        tmp_path,
        {
            "rule_files": [str(DOCS / "prometheus" / "fleetcast-alert-rules.yml")],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": input_series,
                    "alert_rule_test": alert_rule_test,
                }
            ],
        },
    )


@pytest.mark.prometheus
@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="needs promtool (apt-get install prometheus)"
)
def test_promtool_accepts_the_rules_and_config() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", *map(str, RULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = subprocess.run(
        [
            "promtool",
            "check",
            "config",
            "--syntax-only",
            str(DOCS / "prometheus" / "prometheus.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.prometheus
@pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="needs amtool (apt-get install prometheus-alertmanager)",
)
def test_amtool_accepts_the_example_alertmanager_config() -> None:
    config = DOCS / "prometheus" / "alertmanager.yml"
    result = subprocess.run(
        ["amtool", "check-config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 inhibit rules" in result.stdout
    # The inhibit rule names the labels fleetcast's forecast alerts carry.
    text = config.read_text(encoding="utf-8")
    assert 'alertname="FleetcastForecastRisk", severity="critical"' in text
    assert "equal: [server, metric, horizon]" in text


@pytest.mark.prometheus
@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="needs promtool (apt-get install prometheus)"
)
def test_recorded_actuals_name_servers_as_the_appliance_does(tmp_path: Path) -> None:
    """``fleetcast:actual``'s ``server`` label is the appliance's server name for every
    ``instance`` form (with and without a port, bracketed IPv6), so the recorded actuals
    and the forecasts share their labels."""
    from fleetcast.appliance.sources.promql import LabelMapping

    instances = ["app-1:9100", "web-1", "[::1]:9100", "[fe80::1]", "fe80::1", "db.example:80"]
    series = []
    expected = []
    for k, instance in enumerate(instances):
        series += [
            {"series": f'node_memory_MemAvailable_bytes{{instance="{instance}"}}',
             "values": f"{64 - 16 * (k % 4 + 1)}x10"},  # exact in binary: 25 % steps
            {"series": f'node_memory_MemTotal_bytes{{instance="{instance}"}}', "values": "64x10"},
        ]  # fmt: skip
        server = LabelMapping().server({"instance": instance})
        expected.append(
            {
                "labels": f'fleetcast:actual{{instance="{instance}", metric="mem_pct", '
                f'server="{server}"}}',
                "value": 25 * (k % 4 + 1),
            }
        )
    tests = {
        "rule_files": [str(DOCS / "prometheus" / "fleetcast-recording-rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": 'fleetcast:actual{metric="mem_pct"}',
                        "eval_time": "5m",
                        "exp_samples": expected,
                    },
                ],
            }
        ],
    }
    _promtool_test(tmp_path, tests)
    assert [e["labels"].split('server="')[1][:-2] for e in expected] == [
        "app-1", "web-1", "::1", "fe80::1", "fe80::1", "db.example",
    ]  # fmt: skip


@pytest.mark.prometheus
@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="needs promtool (apt-get install prometheus)"
)
def test_snapshots_that_fail_from_the_start_are_alerted(tmp_path: Path) -> None:
    """Before the first snapshot there is no snapshot timestamp (a NaN never compared older
    than an hour): the process start stands in, so a new install whose snapshots fail
    alerts too, and one that snapshots does not."""
    series = []
    for instance, snapshot in (("new", None), ("fine", "4000+60x120")):
        labels = f'job="fleetcast", instance="{instance}"'
        series.append({"series": f"process_start_time_seconds{{{labels}}}", "values": "0x120"})
        series.append(
            {"series": f"fleetcast_persistence_log_bytes{{{labels}}}", "values": "500x120"}
        )
        if snapshot:
            series.append(
                {"series": f"fleetcast_persistence_last_snapshot_timestamp_seconds{{{labels}}}",
                 "values": snapshot}
            )  # fmt: skip
    alert = {
        "exp_labels": {"severity": "warning", "job": "fleetcast", "instance": "new"},
        "exp_annotations": {
            "summary": "fleetcast has written no snapshot for 1h 15m 0s: its sample log grows",
            "description": "Snapshots run every 5 minutes by default; see the appliance's log "
            '("snapshot failed") and docs/OPERATIONS.md#state.',
        },
    }
    checks = [
        {"eval_time": "65m", "alertname": "FleetcastSnapshotsFailing", "exp_alerts": []},
        {"eval_time": "75m", "alertname": "FleetcastSnapshotsFailing",
         "exp_alerts": [alert]},
    ]  # fmt: skip
    _alert_rules_test(tmp_path, series, checks)


@pytest.mark.prometheus
@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="needs promtool (apt-get install prometheus)"
)
def test_servers_whose_data_stopped_are_alerted(tmp_path: Path) -> None:
    """A stale server has no fleetcast_server_risk, so FleetcastServerAtRisk resolves for it:
    FleetcastServersStale fires after 15 minutes of stale servers, and not for a blip."""
    labels = 'job="fleetcast", instance="edge"'
    series = [
        {"series": f'fleetcast_servers{{{labels}, state="stale"}}', "values": "0x10 3x5 0x5 2x30"},
    ]
    checks = [
        {"eval_time": "20m", "alertname": "FleetcastServersStale", "exp_alerts": []},
        {"eval_time": "40m", "alertname": "FleetcastServersStale", "exp_alerts": [
            {"exp_labels": {"severity": "warning", "job": "fleetcast",
                            "instance": "edge", "state": "stale"},
             "exp_annotations": {
                 "summary": "2 servers stopped sending data to fleetcast and are "
                 "not forecast",
                 "description": "GET /servers?state=stale on the appliance lists "
                 "them; forget the ones retired "
                 "(docs/OPERATIONS.md#forgetting-servers).",
             }},
        ]},
    ]  # fmt: skip
    _alert_rules_test(tmp_path, series, checks)


@pytest.mark.prometheus
@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="needs promtool (apt-get install prometheus)"
)
def test_new_servers_refused_for_the_capacity_are_alerted(tmp_path: Path) -> None:
    """The appliance logs only the first capacity refusal: the rule says while they last."""
    labels = 'job="fleetcast", instance="edge"'
    series = [
        {
            "series": f'fleetcast_ingest_samples_total{{{labels}, result="capacity"}}',
            "values": "0x10 0+4x15 60x40",
        },
    ]
    checks = [
        {"eval_time": "10m", "alertname": "FleetcastAtCapacity", "exp_alerts": []},
        {"eval_time": "20m", "alertname": "FleetcastAtCapacity", "exp_alerts": [
            {"exp_labels": {"severity": "warning", "job": "fleetcast",
                            "instance": "edge", "result": "capacity"},
             "exp_annotations": {
                 "summary": "fleetcast refused 36 samples of new servers in 15 "
                 "min: it already tracks its capacity (fleetcast_servers_capacity)",
                 "description": "Raise --capacity, or forget retired servers "
                 "(DELETE /servers/{server_name}, --forget-after; "
                 "docs/OPERATIONS.md#forgetting-servers).",
             }},
        ]},
        # The refusals stopped (servers forgotten): resolved 15 minutes later.
        {"eval_time": "50m", "alertname": "FleetcastAtCapacity", "exp_alerts": []},
    ]  # fmt: skip
    _alert_rules_test(tmp_path, series, checks)
