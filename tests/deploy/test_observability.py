"""The alert rules pass promtool, and the dashboard and alerts use only metrics that mlmarket exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import ml_worker.metrics  # noqa: F401 - all four register their metrics
from tests.conftest import unavailable

# The chart ships both files; these are their only copies.
DEPLOY = Path(__file__).resolve().parents[2] / "helm" / "mlmarket" / "files"
METRIC = re.compile(r"\bmlmarket_[a-z_]+")


def exported_names() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        names.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum"))
    return names


def test_the_alert_rules_pass_promtool(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        unavailable("promtool is not installed (scripts/install_promtool.sh installs Debian's prometheus)")
    rule = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"MlmarketDeadLetterQueueGrowing", "MlmarketLedgerMismatch", "MlmarketNoWorkerHeartbeat"} <= alerts
    assert "MlmarketHighErrorRate" in alerts
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs.append((DEPLOY / "prometheus-rules.yaml").read_text())
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used - exported_names() == set()
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
