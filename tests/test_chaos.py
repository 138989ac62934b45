"""Delivery under faults, end to end (issue 14): two gateway replicas sharing a real
redis-server, a sender that retries like real webhook senders, and SIGKILL/SIGSTOP/restart of the
backend, Redis and one replica, plus SIGHUP, while a few hundred unique pushes go through.

``tests/chaos.py`` runs it and states the rules; ``scripts/chaos --pushes 2000`` is the long run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import chaos


@pytest.mark.slow
async def test_chaos_nothing_lost_duplicates_only_after_ambiguous_attempts(
    tmp_path: Path,
) -> None:
    report = await chaos.run(tmp_path, pushes=300, rate=20, min_faults=2 * len(chaos.FAULTS))
    counts = report.counts()
    figures = chaos.main_figures(report)
    assert not report.problems, figures
    assert counts["lost"] == 0, figures
    # Every kind of fault ran at least once while pushes were in flight, and was seen: the
    # senders had to retry.
    assert set(counts["faults_by_kind"]) == set(chaos.FAULTS), figures
    assert counts["attempts"] > counts["pushes"] >= 300, figures
    # The counts add up: each push delivered at least once at the backend, and more than once
    # only where an attempt was ambiguous.
    times = {int(k): v for k, v in counts["delivered_by_backend_times"].items()}
    assert sum(times.values()) == counts["pushes"] and 0 not in times, figures
    twice = sum(v for k, v in times.items() if k > 1)
    assert twice <= counts["pushes_with_an_ambiguous_attempt"], figures
    # ... and each duplicate has a cause that was seen (check() says which push otherwise): an
    # attempt a replica logged and counted as ambiguous (every replica's
    # jwksgate_ambiguous_deliveries_total equals its log lines), an attempt that died with the
    # SIGKILLed replica, or Redis restarted empty while the push was retried.
    assert twice == counts["delivered_twice_or_more"], figures
    assert "none" not in counts["duplicates_by_cause"], figures
    answers = counts["answers"]
    assert (
        sum(v for k, v in answers.items() if k.startswith("2"))
        + sum(v for k, v in answers.items() if k.startswith("409"))
        == counts["pushes"]
    ), figures
