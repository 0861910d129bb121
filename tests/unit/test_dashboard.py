"""The Grafana dashboard asks only for what the worker exports, in PromQL that parses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.metrics import Metrics
from streams.machine import AppserviceState
from streams.matrix import AppserviceID

DASHBOARD = Path(__file__).parents[2] / "deploy/grafana/dashboards/appservice-streams.json"
# Grafana's own variables, as Grafana would fill them in.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$appservice": ".*"}
FUNCTIONS = {"sum", "max", "rate", "increase", "histogram_quantile", "by"}
RANGE_FUNCTIONS = ("rate", "increase")


def panels() -> list[dict[str, Any]]:
    return list(json.loads(DASHBOARD.read_text())["panels"])


def expressions() -> list[str]:
    found = [target["expr"] for panel in panels() for target in panel["targets"]]
    for variable, value in GRAFANA_VARIABLES.items():
        found = [expr.replace(variable, value) for expr in found]
    return found


def exported() -> set[str]:
    """Every sample name a worker's registry writes, with each kind of series present."""
    metrics = Metrics([AppserviceID("bridge")])
    metrics.owned.assigned([0])
    metrics.owned.stepped(AppserviceID("bridge"), 0, AppserviceState(), 0)
    metrics.set_assignment("app", "app.inbox", [0])
    metrics.set_lag("app", {("app.inbox", 0): 2}, {("app.inbox", 0): 5})
    metrics.oldest.found("app", "app.inbox", 0, 5, 0)
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


def test_the_dashboard_has_the_panels_an_operator_needs() -> None:
    titles = {panel["title"] for panel in panels()}
    assert {
        "Appservice up",
        "Backlog by kind",
        "Oldest undelivered item",
        "Transactions sent / failed by reason",
        "Transaction duration p50 / p99",
        "Consumer lag (records)",
        "Consumer lag (seconds)",
        "Dead letters",
        "Rebalances",
        "Assigned partitions",
    } <= titles


def test_every_metric_the_dashboard_asks_for_is_exported_by_the_worker() -> None:
    used = {name for expr in expressions() for name in re.findall(r"\bappservice_streams_[a-z_]+", expr)}
    assert used and used <= exported(), used - exported()


@pytest.mark.parametrize("expr", expressions())
def test_every_expression_is_balanced_and_its_range_functions_take_a_range(expr: str) -> None:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for char in expr:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            assert depth[closing[char]] >= 0, expr
    assert set(depth.values()) == {0}, expr
    assert set(re.findall(r"\b([a-z_]+)\s*\(", expr)) <= FUNCTIONS, expr
    for function in RANGE_FUNCTIONS:
        for argument in re.findall(rf"\b{function}\(([^()]*)\)", expr):
            assert re.search(r"\[\d+[smh]\]$", argument), expr


def test_every_expression_parses_as_promql_when_promtool_is_there(tmp_path: Path) -> None:
    """Each expression as a recording rule, checked by ``promtool check rules`` (its PromQL parser)."""
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:{n}", "expr": e} for n, e in enumerate(expressions())],
            }
        ]
    }
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
