"""The metric names the Grafana dashboard queries and the README documents are the ones server/metrics.py
defines, so a rename cannot leave either behind."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase

from server import metrics

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bovms_[a-z0-9_]+")


def defined() -> dict[str, object]:
    """Exposed family name -> metric object (counters are exposed with _total)."""
    names = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name + ("_total" if isinstance(value, Counter) else "")
            names[name] = value
    return names


def exposed(name: str, families: dict[str, object]) -> bool:
    if name in families:
        return True
    for suffix in ("_bucket", "_count", "_sum"):
        base = name.removesuffix(suffix)
        if base != name and isinstance(families.get(base), Histogram):
            return True
    return False


def test_the_dashboard_queries_only_defined_metrics() -> None:
    dashboard = json.loads((ROOT / "docker" / "grafana-dashboard.json").read_text())
    families = defined()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    used = {name for expr in exprs for name in NAME.findall(expr)}
    assert used and not {name for name in used if not exposed(name, families)}
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dashboard["templating"]["list"])


def test_the_readme_lists_every_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Logs and metrics", 1)[1].split("\n## ", 1)[0]
    assert "docker/grafana-dashboard.json" in section
    assert set(defined()) <= set(NAME.findall(section)), set(defined()) - set(NAME.findall(section))


def test_metric_names_follow_the_conventions() -> None:
    for name, metric in defined().items():
        assert name.startswith("ovms_"), name
        if name.endswith("_total"):
            assert isinstance(metric, Counter), name
        if name.endswith("_seconds"):
            assert isinstance(metric, Histogram), name
