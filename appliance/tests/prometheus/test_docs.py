"""The Prometheus/Grafana files in docs/ cannot rot: names exist, promtool accepts the rules."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fleetcast.appliance import exposition

DOCS = Path(__file__).parents[3] / "docs"
RULES = sorted((DOCS / "prometheus").glob("fleetcast-*-rules.yml"))
DASHBOARD = DOCS / "grafana" / "fleetcast.json"


def _exposed_families() -> set[str]:
    return set(re.findall(r'"(fleetcast_[a-z_]+)"', inspect.getsource(exposition)))


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
    path = tmp_path / "tests.yml"
    path.write_text(json.dumps(tests))  # JSON is YAML
    result = subprocess.run(
        ["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [e["labels"].split('server="')[1][:-2] for e in expected] == [
        "app-1", "web-1", "::1", "fe80::1", "fe80::1", "db.example",
    ]  # fmt: skip
