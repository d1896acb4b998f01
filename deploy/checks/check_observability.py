#!/usr/bin/env python3
"""Checks the Grafana dashboard and the Prometheus alert rules against docs/metrics.md
(used by scripts/check-deploy.sh).

- the dashboard JSON parses, has a `datasource` variable (every panel and query uses it) and a
  `job` variable, panels do not overlap, and it shows what the dashboard promises (progress,
  ETA, throughput, latency quantiles, errors, queues, dead letters, hallucinations);
- every metric name in a dashboard query, an alert expression or annotation, and an alert test
  series is documented in docs/metrics.md (a histogram also has `_bucket`, `_sum`, `_count`);
- every alert of alerts.yml has a test case where it fires and one where it stays silent;
- with --query-tests DIR: writes every dashboard query (Grafana variables replaced by example
  values) as an alert rule `count(QUERY) > 0`, and a `promtool test rules` file that runs them
  over the synthetic series of dashboard_series.yml (every documented metric, with the
  documented labels) and expects each to fire: each query parses and returns data.

Usage: check_observability.py --repo ROOT [--query-tests DIR]
  then: promtool test rules DIR/dashboard_test.yml
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import yaml

NAME = re.compile(r"\bdftg_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def documented_metrics(path: str) -> dict[str, str]:
    """name -> type, from the table rows of docs/metrics.md: | `name` | type | labels | meaning |"""
    out = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^\|\s*`(dftg_[a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|", line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def resolve(name: str, docs: dict[str, str]) -> bool:
    if name in docs:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and docs.get(name[: -len(suffix)]) == "histogram":
            return True
    return False


def grafana_to_promql(expr: str) -> str:
    """Replaces Grafana's variables by example values so that the query parses as PromQL."""
    for var, val in (("$__rate_interval", "2m"), ("$__interval", "1m"), ("$__range", "6h"), ("${job}", ".*"), ("$job", ".*")):
        expr = expr.replace(var, val)
    return expr


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--query-tests", help="write the dashboard query tests (rules + promtool test file) into this directory")
    args = ap.parse_args()
    failures: list[str] = []
    passed = 0

    def check(ok: bool, what: str) -> None:
        nonlocal passed
        if ok:
            passed += 1
        else:
            failures.append(what)

    docs = documented_metrics(os.path.join(args.repo, "docs/metrics.md"))
    check(len(docs) >= 10, f"docs/metrics.md: found only {len(docs)} documented metrics")

    # ------------------------------------------------------------------ dashboard
    dash_path = os.path.join(args.repo, "deploy/grafana/dftg.json")
    try:
        with open(dash_path) as f:
            dash = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"FAIL {dash_path}: {e}")
        return 1
    check(bool(dash.get("uid")) and bool(dash.get("title")), "dashboard: uid and title")
    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list") or []}
    ds_var = variables.get("datasource") or {}
    check(ds_var.get("type") == "datasource" and ds_var.get("query") == "prometheus", "dashboard: a `datasource` variable of type datasource (prometheus)")
    job_var = variables.get("job") or {}
    check(job_var.get("type") == "query" and "dftg_job" in json.dumps(job_var.get("query")), "dashboard: a `job` query variable over the dftg_job_* series")

    panels = []
    for p in dash.get("panels") or []:
        panels.append(p)
        panels.extend(p.get("panels") or [])
    queries: list[tuple[str, str]] = []  # (where, expr)
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        gp = p.get("gridPos") or {}
        overlaps = set()
        for x in range(gp.get("x", 0), gp.get("x", 0) + gp.get("w", 0)):
            for y in range(gp.get("y", 0), gp.get("y", 0) + gp.get("h", 0)):
                if (x, y) in cells:
                    overlaps.add(cells[(x, y)])
                cells[(x, y)] = p.get("title")
        check(not overlaps, f"dashboard: panel '{p.get('title')}' overlaps {sorted(overlaps)}")
        check(gp.get("x", 0) + gp.get("w", 0) <= 24, f"dashboard: panel '{p.get('title')}' is wider than the grid")
        if p.get("type") == "row":
            continue
        check((p.get("datasource") or {}).get("uid") == "${datasource}", f"dashboard: panel '{p.get('title')}' does not use ${{datasource}}")
        check(bool(p.get("targets")), f"dashboard: panel '{p.get('title')}' has no query")
        for t in p.get("targets") or []:
            check((t.get("datasource") or {}).get("uid") == "${datasource}", f"dashboard: a query of '{p.get('title')}' does not use ${{datasource}}")
            check(bool(t.get("expr")), f"dashboard: a query of '{p.get('title')}' has no expr")
            queries.append((f"panel '{p.get('title')}' {t.get('refId')}", t.get("expr", "")))
    queries.append(("variable job", json.dumps(job_var.get("query"))))
    all_exprs = "\n".join(e for _, e in queries)
    must_show = {
        "job progress (dftg_job_items / dftg_job_shards)": r"dftg_job_items\{[^}]*state=\"done\"",
        "ETA (dftg_job_eta_seconds)": r"dftg_job_eta_seconds",
        "images/s per stage": r"sum by \(stage[^)]*\) \(rate\(dftg_images_processed_total",
        "model latency p50": r"histogram_quantile\(0\.5, sum by \(le\) \(rate\(dftg_model_request_duration_seconds_bucket",
        "model latency p95": r"histogram_quantile\(0\.95, sum by \(le\) \(rate\(dftg_model_request_duration_seconds_bucket",
        "model latency p99": r"histogram_quantile\(0\.99, sum by \(le\) \(rate\(dftg_model_request_duration_seconds_bucket",
        "errors by reason": r"sum by \(reason\) \(rate\(dftg_(model_request|image)_errors_total",
        "queue depth per queue": r"by \(queue\) \(dftg_queue_messages",
        "consumers per queue": r"by \(queue\) \(dftg_queue_consumers",
        "dead letters": r"dftg_dead_letters_total",
        "hallucination rate per image": r"dftg_hallucinations_found_total[^\n]*/[^\n]*dftg_images_processed_total",
        "top hallucinated concepts": r"topk\([0-9]+, sum by \(concept\) \((rate|increase)\(dftg_concept_hallucinations_total",
    }
    for what, pattern in must_show.items():
        check(re.search(pattern, all_exprs) is not None, f"dashboard: does not show {what}")

    # ------------------------------------------------------------------ alerts and their tests
    rules_path = os.path.join(args.repo, "deploy/prometheus/alerts.yml")
    tests_path = os.path.join(args.repo, "deploy/prometheus/alerts_test.yml")
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    with open(tests_path) as f:
        tests = yaml.safe_load(f)
    alerts = [r for g in rules["groups"] for r in g.get("rules") or [] if "alert" in r]
    for r in alerts:
        queries.append((f"alert {r['alert']}", str(r["expr"])))
        for k, v in (r.get("annotations") or {}).items():
            queries.append((f"alert {r['alert']} annotation {k}", v))
    for t in tests.get("tests") or []:
        for s in t.get("input_series") or []:
            queries.append((f"test '{t.get('name')}' series", s["series"]))
    fires = {r["alert"]: 0 for r in alerts}
    silent = {r["alert"]: 0 for r in alerts}
    for t in tests.get("tests") or []:
        for case in t.get("alert_rule_test") or []:
            name = case.get("alertname")
            check(name in fires, f"alerts_test.yml: tests an unknown alert {name}")
            if name in fires:
                if case.get("exp_alerts"):
                    fires[name] += 1
                else:
                    silent[name] += 1
    for name in fires:
        check(fires[name] >= 1, f"alerts_test.yml: no case where {name} fires")
        check(silent[name] >= 1, f"alerts_test.yml: no case where {name} stays silent")

    # ------------------------------------------------------------------ metric names
    used: dict[str, set[str]] = {}
    for where, expr in queries:
        for name in NAME.findall(expr):
            used.setdefault(name, set()).add(where)
    for name, wheres in sorted(used.items()):
        check(resolve(name, docs), f"{name} is not in docs/metrics.md (used by {', '.join(sorted(wheres))})")
    print(f"  metric names: {len(used)} distinct names in {len(queries)} queries/annotations/series, checked against {len(docs)} documented metrics")
    print(f"  dashboard: {sum(1 for p in panels if p.get('type') != 'row')} panels; alerts: {len(alerts)}, test cases firing/silent: " + ", ".join(f"{n} {fires[n]}/{silent[n]}" for n in fires))

    series_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard_series.yml")
    with open(series_path) as f:
        synthetic = yaml.safe_load(f)
    for s_ in synthetic["input_series"]:
        for name in NAME.findall(s_["series"]):
            check(resolve(name, docs), f"dashboard_series.yml: {name} is not in docs/metrics.md")
    if args.query_tests:
        os.makedirs(args.query_tests, exist_ok=True)
        panel_queries = [q for q in queries if q[0].startswith("panel ")]
        rules, cases = [], []
        for i, (where, expr) in enumerate(panel_queries):
            alert = f"DashboardQuery{i:02d}"
            rules.append({"alert": alert, "expr": f"count(\n{grafana_to_promql(expr)}\n) > 0", "annotations": {"query": where}})
            cases.append({"eval_time": "60m", "alertname": alert, "exp_alerts": [{"exp_labels": {}, "exp_annotations": {"query": where}}]})
        with open(os.path.join(args.query_tests, "dashboard_rules.yml"), "w") as f:
            yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False, width=1000)
        test = {"rule_files": ["dashboard_rules.yml"], "evaluation_interval": "1m",
                "tests": [{"name": "every dashboard query returns data", "interval": synthetic["interval"],
                           "input_series": synthetic["input_series"], "alert_rule_test": cases}]}
        with open(os.path.join(args.query_tests, "dashboard_test.yml"), "w") as f:
            yaml.safe_dump(test, f, sort_keys=False, width=1000)
        print(f"  wrote {len(rules)} dashboard queries as rules and their promtool test to {args.query_tests}")

    for f_ in failures:
        print(f"  FAIL {f_}")
    print(f"  observability: {passed} checks passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
