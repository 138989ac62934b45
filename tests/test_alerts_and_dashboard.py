"""The alerting rules, their promtool unit tests and the Grafana dashboard against the real metrics.

Every ``jwksgate_*`` name in the rules file and in the dashboard's queries must be a series the
gateway exports, with labels it exports: a renamed metric or a typo would otherwise give an alert
that never fires and a panel that stays empty, silently. The promtool tests need the ``promtool``
binary (Debian's ``prometheus`` package, installed by ``scripts/test``); without it they fail,
since a skipped rule test looks like a passing one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram, Summary
from prometheus_client.metrics import MetricWrapperBase

from gateway.errors import REASONS as gateway_reasons
from gateway.metrics import Metrics, status_class

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "helm" / "jwksgate" / "files" / "prometheus-rules.yaml"
DASHBOARD = ROOT / "helm" / "jwksgate" / "files" / "grafana-dashboard.json"
RULE_TESTS = ROOT / "tests" / "promtool" / "alerts_test.yaml"
OPERATING = ROOT / "docs" / "operating.md"

METRIC_NAME = re.compile(r"\bjwksgate_[A-Za-z0-9_:]*")
SELECTOR = re.compile(r"\b(jwksgate_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
ALTERNATION = re.compile(r"[A-Za-z0-9_]+(?:\|[A-Za-z0-9_]+)*")
RATE_INTERVAL = "$__rate_interval"

# Labels the scrape adds to every series (Prometheus' job and instance, the Kubernetes namespace).
TARGET_LABELS = frozenset({"job", "instance", "namespace"})
SEVERITIES = frozenset({"warning", "critical"})
# Label vocabularies (the reason codes and metric labels of docs/reference.md): a misspelt value
# matches nothing, like a misspelt name.
# Forwarded requests are counted with reason "none".
REASONS = frozenset(gateway_reasons) | {"none"}
VOCABULARIES: Mapping[str, frozenset[str]] = {
    "outcome": frozenset({"forwarded", "rejected", "error"}),
    "result": frozenset({"success", "failure", "not_modified"}),
    "status_class": frozenset(status_class(s) for s in range(600)),
    "reason": REASONS,
}


# --- what the gateway exports ---------------------------------------------------------------------


def populated_metrics() -> Metrics:
    """A ``Metrics`` whose every metric has a sample, so that the exposition shows every series.

    A labelled metric yields no sample until a child exists, and promtool only lints families with
    samples, so each labelled metric gets one child. New metrics are picked up without editing this.
    """
    metrics = Metrics(["orders"])
    for wrapper in vars(metrics).values():
        if not isinstance(wrapper, MetricWrapperBase):
            continue
        # prometheus-client has no public accessor for a metric's label names.
        labelnames = wrapper._labelnames
        child = wrapper.labels(*["x"] * len(labelnames)) if labelnames else wrapper
        if isinstance(child, Counter):
            child.inc()
        elif isinstance(child, Gauge):
            child.set(1)
        elif isinstance(child, Histogram | Summary):
            child.observe(0.01)
        else:
            pytest.fail(f"{type(child).__name__} {wrapper}: teach populated_metrics() this type")
    return metrics


@cache
def exported_series() -> Mapping[str, frozenset[str]]:
    """Series name as exposed (``_total``, ``_bucket``, ...) -> its label names."""
    labels: dict[str, set[str]] = {}
    for family in populated_metrics().registry.collect():
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(names) for name, names in labels.items()}


def test_exported_series_cover_every_kind_of_metric() -> None:
    series = exported_series()
    # A counter, a histogram and an unlabelled gauge, as exposed: guards the helper above.
    assert series["jwksgate_requests_total"] == {"issuer", "outcome", "reason"}
    assert series["jwksgate_request_duration_seconds_bucket"] == {"issuer", "outcome", "le"}
    assert "jwksgate_request_duration_seconds_sum" in series
    assert "jwksgate_request_duration_seconds_count" in series
    assert series["jwksgate_ready"] == frozenset()
    assert not any(name.endswith("_created") for name in series)


# --- promtool -------------------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: `apt-get install prometheus` (scripts/test does it); "
            "the alert and metrics checks cannot be skipped"
        )
    return path


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def test_promtool_check_rules_passes_with_lint() -> None:
    result = run_promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert result.returncode == 0, output_of(result)
    assert "SUCCESS" in result.stdout + result.stderr, output_of(result)


def test_promtool_rule_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, output_of(result)
    assert "SUCCESS" in result.stdout + result.stderr, output_of(result)


def test_promtool_check_metrics_reports_nothing() -> None:
    """Issue 6: `promtool check metrics` on the gateway's /metrics output reports no problem."""
    exposition = Metrics(["orders"]).exposition().decode()
    result = run_promtool("check", "metrics", stdin=exposition)
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), output_of(result)


def test_promtool_check_metrics_reports_nothing_with_every_series_present() -> None:
    # promtool lints only families that have samples; this covers the labelled ones too.
    exposition = populated_metrics().exposition().decode()
    result = run_promtool("check", "metrics", stdin=exposition)
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), output_of(result)


# --- PromQL name and label checks -----------------------------------------------------------------


def unknown_names(text: str) -> list[str]:
    series = exported_series()
    return sorted({name for name in METRIC_NAME.findall(text) if name not in series})


def label_problems(expr: str) -> list[str]:
    """Labels a query selects or groups by that the series do not have, and values no one sets."""
    series = exported_series()
    problems: list[str] = []
    used = set(TARGET_LABELS)
    for name, matchers in SELECTOR.findall(expr):
        known = series.get(name, frozenset()) | TARGET_LABELS
        used |= known
        for label, _op, value in MATCHER.findall(matchers):
            if label not in known:
                problems.append(f"{name} has no label {label!r}")
            vocabulary = VOCABULARIES.get(label)
            if vocabulary is None or not ALTERNATION.fullmatch(value):
                continue  # free-form (issuer names), a template variable or a real regex
            problems.extend(
                f'{name}{{{label}="{v}"}}: {v!r} is not a {label}'
                for v in value.split("|")
                if v not in vocabulary
            )
    for name in METRIC_NAME.findall(expr):
        used |= series.get(name, frozenset())
    for group in GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in used:
                problems.append(f"grouping by {label!r}, which no series of the query has")
    return problems


def test_name_and_label_checks_catch_typos() -> None:
    assert unknown_names("rate(jwksgate_request_total[5m])") == ["jwksgate_request_total"]
    assert unknown_names("jwksgate_ready == 0") == []
    assert label_problems('jwksgate_requests_total{outcome="rejectd"}') != []
    assert label_problems('jwksgate_requests_total{isuer="orders"}') != []
    assert label_problems("sum by (isuer) (jwksgate_requests_total)") != []
    assert label_problems('sum by (issuer, job) (jwksgate_requests_total{reason=~"expired"})') == []


# --- the rules file -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    alert: str
    expr: str
    for_: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules() -> list[Rule]:
    rules: list[Rule] = []
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            rules.append(
                Rule(
                    alert=rule["alert"],
                    expr=rule["expr"],
                    for_=rule.get("for", ""),
                    labels=rule.get("labels", {}),
                    annotations=rule.get("annotations", {}),
                )
            )
    return rules


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_rules_file_is_a_plain_rule_file_usable_as_prometheusrule_spec() -> None:
    document = load_yaml(RULES)
    assert isinstance(document, dict)
    assert set(document) == {"groups"}
    assert all(set(group) <= {"name", "interval", "rules"} for group in document["groups"])


def test_expected_alerts_exist() -> None:
    assert {rule.alert for rule in alert_rules()} == {
        "JwksgateJwksStale",
        "JwksgateJwksFetchFailing",
        "JwksgateRejectionRatioHigh",
        "JwksgateUpstreamErrors",
        "JwksgateReplayStoreDown",
        "JwksgateNotReady",
        "JwksgateIssuerKeysUnavailable",
        "JwksgateAmbiguousDeliveries",
        "JwksgateReplayCommitFailures",
    }


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule.alert)
def test_alert_has_severity_annotations_and_runbook(rule: Rule) -> None:
    assert rule.labels.get("severity") in SEVERITIES
    assert rule.for_, "an alert without `for` pages on a single evaluation"
    assert rule.annotations.get("summary")
    assert rule.annotations.get("description")
    runbook = rule.annotations.get("runbook_url", "")
    assert runbook == f"docs/operating.md#{rule.alert.lower()}"
    assert rule.alert.lower() in github_anchors(OPERATING.read_text(encoding="utf-8"))


def test_rules_use_only_exported_metric_names() -> None:
    # The whole file, comments and annotations included: they name metrics for the reader too.
    assert unknown_names(RULES.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule.alert)
def test_rule_labels_exist_on_the_series(rule: Rule) -> None:
    assert METRIC_NAME.search(rule.expr)
    assert label_problems(rule.expr) == []


def test_every_alert_has_firing_and_silent_unit_tests() -> None:
    fired: set[tuple[str, str]] = set()
    silent: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            if not expected:
                silent.add(check["alertname"])
            for alert in expected:
                fired.add((check["alertname"], alert["exp_labels"]["severity"]))
    variants = {(rule.alert, rule.labels["severity"]) for rule in alert_rules()}
    assert variants - fired == set(), "alerts (and severities) no unit test makes fire"
    assert {alert for alert, _ in variants} - silent == set(), "alerts with no must-not-fire case"


# --- the dashboard --------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))  # collapsed rows hold their panels


def all_panels() -> list[dict[str, Any]]:
    return list(panels(dashboard()["panels"]))


def variables() -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard()["templating"]["list"]}


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def exprs() -> list[str]:
    return [target["expr"] for panel in all_panels() for target in panel.get("targets", [])]


def test_dashboard_has_datasource_and_issuer_variables() -> None:
    found = variables()
    assert found["datasource"]["type"] == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    issuer = found["issuer"]
    assert issuer["type"] == "query"
    assert variable_query(issuer) == "label_values(jwksgate_requests_total, issuer)"
    assert issuer["datasource"]["uid"] == "${datasource}"


def test_dashboard_panels_are_unique_and_titled() -> None:
    found = all_panels()
    assert len(found) >= 15
    assert len({panel["id"] for panel in found}) == len(found)
    assert all(panel.get("title") for panel in found)


@pytest.mark.parametrize("panel", all_panels(), ids=lambda panel: str(panel["title"]))
def test_panel_queries_prometheus_through_the_datasource_variable(panel: dict[str, Any]) -> None:
    targets = panel.get("targets", [])
    assert targets, "a panel without a query"
    assert all(target.get("expr", "").strip() for target in targets)
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for target in targets:
        assert target.get("datasource", panel["datasource"]) == panel["datasource"]
    refs = [target["refId"] for target in targets]
    assert len(set(refs)) == len(refs)


def test_dashboard_covers_the_requested_views() -> None:
    text = "\n".join(exprs())
    for needle in (
        "sum by (outcome) (rate(jwksgate_requests_total",
        "reason) (rate(jwksgate_requests_total",
        'outcome="rejected"',
        "histogram_quantile(0.5, sum by (le) (rate(jwksgate_request_duration_seconds_bucket",
        "histogram_quantile(0.9, sum by (le) (rate(jwksgate_request_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(jwksgate_request_duration_seconds_bucket",
        "jwksgate_upstream_duration_seconds_bucket",
        "sum by (status_class) (rate(jwksgate_upstream_duration_seconds_count",
        "jwksgate_jwks_age_seconds",
        "jwksgate_jwks_fetches_total",
        "jwksgate_jwks_fetch_duration_seconds_bucket",
        "jwksgate_jwks_keys{",
        "jwksgate_jwks_refetches_suppressed_total",
        "jwksgate_replay_entries",
        "jwksgate_replay_store_duration_seconds_bucket",
        "jwksgate_replay_store_errors_total",
        "jwksgate_inflight_requests",
        "jwksgate_ready",
        "jwksgate_config_reloads_total",
    ):
        assert needle in text, needle


def test_dashboard_uses_only_exported_metric_names() -> None:
    queries = exprs() + [variable_query(v) for v in variables().values() if v["type"] == "query"]
    assert unknown_names("\n".join(queries)) == []


def test_dashboard_query_labels_exist_on_the_series() -> None:
    assert [(expr, label_problems(expr)) for expr in exprs() if label_problems(expr)] == []


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, Grafana's variables replaced by what Grafana would send."""
    substitutions = {RATE_INTERVAL: "5m", "$job": ".*", "$issuer": ".*"}
    rules = []
    for number, expr in enumerate(exprs()):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    rule_file = tmp_path / "dashboard-queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", str(rule_file))
    assert result.returncode == 0, output_of(result)
