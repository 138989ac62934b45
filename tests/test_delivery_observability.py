"""The delivery metrics of issue 14 are watched: an alert and a dashboard panel for each.

``jwksgate_ambiguous_deliveries_total`` (backends must de-duplicate), ``jwksgate_issuer_ready``
(one issuer without keys) and ``jwksgate_replay_commit_failures_total`` (a delivered token that
could be forwarded again) would otherwise be exported and never looked at. The generic checks in
tests/test_alerts_and_dashboard.py make sure each query names real series and labels, and that
each alert has promtool cases where it fires and where it stays silent.
"""

from __future__ import annotations

import pytest

from tests.test_alerts_and_dashboard import alert_rules, all_panels

WATCHED = {
    "jwksgate_ambiguous_deliveries_total": "JwksgateAmbiguousDeliveries",
    "jwksgate_issuer_ready": "JwksgateIssuerKeysUnavailable",
    "jwksgate_replay_commit_failures_total": "JwksgateReplayCommitFailures",
}


@pytest.mark.parametrize(("metric", "alert"), sorted(WATCHED.items()))
def test_metric_has_an_alert(metric: str, alert: str) -> None:
    assert [rule.alert for rule in alert_rules() if metric in rule.expr] == [alert]


@pytest.mark.parametrize("metric", sorted(WATCHED))
def test_metric_has_a_panel_naming_its_alert(metric: str) -> None:
    found = [
        panel
        for panel in all_panels()
        if any(metric in target["expr"] for target in panel.get("targets", []))
    ]
    assert found, f"no dashboard panel queries {metric}"
    assert any(WATCHED[metric] in panel.get("description", "") for panel in found)
