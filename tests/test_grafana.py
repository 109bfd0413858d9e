"""The Grafana dashboard in cluster/ plots exactly the metrics the library exports, under their Prometheus names."""

from __future__ import annotations

import json
import re

from conftest import REPO

from concurry_ray.metrics import METRICS

DASHBOARD = REPO / "cluster" / "grafana-concurry-ray.json"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def exported() -> set[str]:
    """Every series name Prometheus shows for our metrics (Ray prefixes ``ray_``)."""
    return {f"ray_{name}{suffix}" for name, (kind, _, _) in METRICS.items() for suffix in SUFFIXES[kind]}


def plotted() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_query_names_an_exported_metric_and_tags_it_has():
    for title, expr in plotted():
        names = set(re.findall(r"\bray_concurry_\w+", expr))
        assert names and names <= exported(), (title, expr)
        metric = re.sub(r"^ray_|(_total|_bucket|_count|_sum)$", "", next(iter(names)))
        grouped = set(re.findall(r"by \(([^)]*)\)", expr)[0].replace(" ", "").split(",")) - {"le"}
        assert grouped <= set(METRICS[metric][2]), (title, grouped)


def test_every_exported_metric_has_a_panel():
    queried = " ".join(expr for _, expr in plotted())
    assert [name for name in METRICS if f"ray_{name}" not in queried] == []
