"""Prometheus metrics: one registry per gateway; the names and labels are listed in
docs/reference.md and are stable (dashboards and alerts query them).

Label values are always bounded: ``issuer`` is a configured name (or ``unknown``), ``reason`` one of
the reason codes, ``outcome``/``result``/``status_class`` fixed vocabularies. Nothing taken from a
request (a kid, an iss, a path) ever becomes a label value.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import values as _values

from gateway import __version__

__all__ = ["CONTENT_TYPE", "Metrics", "status_class"]

# The `_created` series double every counter's cardinality and no dashboard uses them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST


class _Pid:
    """The process id, read once and again after a fork: prometheus-client's multiprocess
    values call their process identifier on every inc/set/observe to notice a fork (about 8
    ``getpid`` system calls per request); a fork is noticed here instead."""

    def __init__(self) -> None:
        self.value = os.getpid()
        os.register_at_fork(after_in_child=self.refresh)

    def refresh(self) -> None:
        self.value = os.getpid()

    def __call__(self) -> int:
        return self.value


if getattr(_values.ValueClass, "_multiprocess", False):
    # Multiprocess mode (workers > 1): chosen by prometheus-client at import from
    # PROMETHEUS_MULTIPROC_DIR, before any metric exists; same files, same pid, fewer calls.
    _values.ValueClass = _values.MultiProcessValue(process_identifier=_Pid())  # type: ignore[no-untyped-call]

# Verification itself is tens of microseconds; a forwarded request is dominated by the backend.
REQUEST_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
FETCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


# Why a push's delivery is unknown (jwksgate_ambiguous_deliveries_total's cause label).
AMBIGUOUS_CAUSES = ("timeout", "disconnected", "cancelled", "error")


def status_class(status: int) -> str:
    """``2xx``..``5xx`` for an HTTP status, ``error`` for no response at all (status 0)."""
    if 100 <= status <= 599:
        return f"{status // 100}xx"
    return "error"


class Metrics:
    """Every metric the gateway exports, on a private registry (tests run many gateways).

    With ``workers > 1`` the values live in prometheus-client's multiprocess files and the
    supervisor exports them; each gauge says how workers combine (``multiprocess_mode``).
    """

    def __init__(self, issuers: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._request_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._upstream_children: dict[str, Histogram] = {}
        r = self.registry
        self.requests = Counter(
            "jwksgate_requests",
            "Requests by issuer, outcome (forwarded, rejected, error) and reason code.",
            ["issuer", "outcome", "reason"],
            registry=r,
        )
        self.request_duration = Histogram(
            "jwksgate_request_duration_seconds",
            "Time from request start to the answer, by issuer and outcome.",
            ["issuer", "outcome"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "jwksgate_upstream_duration_seconds",
            "Time the backend took to answer a forwarded push, by status class.",
            ["status_class"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "jwksgate_inflight_requests",
            "Requests being handled on the webhook listener right now.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.claim_headers_omitted = Counter(
            "jwksgate_claim_headers_omitted",
            "forward_claims headers left out because the value exceeded 4096 bytes.",
            ["issuer"],
            registry=r,
        )
        self.jwks_fetches = Counter(
            "jwksgate_jwks_fetches",
            "JWKS fetches by issuer and result (success, failure, not_modified).",
            ["issuer", "result"],
            registry=r,
        )
        self.jwks_fetch_duration = Histogram(
            "jwksgate_jwks_fetch_duration_seconds",
            "Time a JWKS fetch took, whatever its result.",
            ["issuer"],
            buckets=FETCH_BUCKETS,
            registry=r,
        )
        self.jwks_last_success = Gauge(
            "jwksgate_jwks_last_success_timestamp_seconds",
            "Unix time of the last successful JWKS fetch (0 before the first).",
            ["issuer"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.jwks_keys = Gauge(
            "jwksgate_jwks_keys",
            "Usable keys in the issuer's current key set.",
            ["issuer"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.jwks_age = Gauge(
            "jwksgate_jwks_age_seconds",
            "Seconds since the last successful JWKS fetch (-1 before the first).",
            ["issuer"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.jwks_keys_dropped = Counter(
            "jwksgate_jwks_keys_dropped",
            "Keys of a fetched JWKS that were refused (weak, oct, enc, malformed, duplicate kid).",
            ["issuer", "reason"],
            registry=r,
        )
        self.jwks_rotations = Counter(
            "jwksgate_jwks_key_rotations",
            "Key sets fetched whose kids differ from the previous set's.",
            ["issuer"],
            registry=r,
        )
        self.jwks_refetch_suppressed = Counter(
            "jwksgate_jwks_refetches_suppressed",
            "Unknown-kid refetches refused by min_refresh_interval_seconds.",
            ["issuer"],
            registry=r,
        )
        self.jwks_waits_refused = Counter(
            "jwksgate_jwks_waits_refused",
            "Requests answered 503 jwks_unavailable at once: enough already wait for the"
            " issuer's JWKS fetch.",
            ["issuer"],
            registry=r,
        )
        self.kidless_attempts = Counter(
            "jwksgate_kidless_verify_attempts",
            "Signature checks spent on tokens without kid (require_kid: false).",
            ["issuer"],
            registry=r,
        )
        self.replay_entries = Gauge(
            "jwksgate_replay_entries",
            "Entries held by the replay store (memory: exact; redis: not tracked, -1).",
            ["store"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.replay_store_duration = Histogram(
            "jwksgate_replay_store_duration_seconds",
            "Latency of replay store operations.",
            ["store", "op"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.replay_store_errors = Counter(
            "jwksgate_replay_store_errors",
            "Replay store operations that failed (unreachable, timeout).",
            ["store"],
            registry=r,
        )
        self.ready = Gauge(
            "jwksgate_ready",
            "1 when /readyz answers 200, else 0.",
            multiprocess_mode="liveall",
            registry=r,
        )
        self.issuer_ready = Gauge(
            "jwksgate_issuer_ready",
            "1 when the issuer has a usable key set, else 0 (its pushes are answered 503 "
            "jwks_unavailable).",
            ["issuer"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.config_reloads = Counter(
            "jwksgate_config_reloads",
            "Configuration reloads by result (success, failure).",
            ["result"],
            registry=r,
        )
        self.build_info = Gauge(
            "jwksgate_build_info",
            "Always 1; the version label says which build runs.",
            ["version"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.build_info.labels(version=__version__).set(1)
        self.ambiguous_deliveries = Counter(
            "jwksgate_ambiguous_deliveries",
            "Pushes the backend may have taken without the gateway knowing (a timeout or a broken "
            "connection after the request was sent, before a status line): the token was "
            "released, so the sender's retry is forwarded again (a duplicate unless the backend "
            "de-duplicates on the idempotency key).",
            ["issuer", "cause"],
            registry=r,
        )
        for name in issuers:
            self.add_issuer(name)
        self.replay_commit_failures = Counter(
            "jwksgate_replay_commit_failures",
            "Delivered pushes whose replay key could not be committed before its reservation's "
            "hold ended: a replay of such a token would be forwarded again.",
            ["store"],
            registry=r,
        )

    def record_request(self, issuer: str, outcome: str, reason: str, seconds: float) -> None:
        """Count one request outcome. The label children are cached: every label value is
        bounded (configured issuer names, fixed outcomes and reason codes), so is the cache."""
        key = (issuer, outcome, reason)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(issuer=issuer, outcome=outcome, reason=reason),
                self.request_duration.labels(issuer=issuer, outcome=outcome),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_upstream(self, status: int | None, seconds: float) -> None:
        """One backend answer's duration by status class (``None``: no answer at all); the
        label children are cached like ``record_request``'s (at most six)."""
        cls = "error" if status is None else status_class(status)
        child = self._upstream_children.get(cls)
        if child is None:
            child = self._upstream_children[cls] = self.upstream_duration.labels(status_class=cls)
        child.observe(seconds)

    def add_issuer(self, name: str) -> None:
        """Create the per-issuer series at zero so dashboards and alerts see them at once."""
        self.jwks_keys.labels(issuer=name).set(0)
        self.issuer_ready.labels(issuer=name).set(0)
        self.jwks_age.labels(issuer=name).set(-1)
        self.jwks_last_success.labels(issuer=name).set(0)
        for result in ("success", "failure", "not_modified"):
            self.jwks_fetches.labels(issuer=name, result=result)
        self.jwks_refetch_suppressed.labels(issuer=name)
        self.jwks_waits_refused.labels(issuer=name)
        for cause in AMBIGUOUS_CAUSES:
            self.ambiguous_deliveries.labels(issuer=name, cause=cause)

    def remove_issuer(self, name: str) -> None:
        """Drop the per-issuer gauges of an issuer a reload removed: a stale ``issuer_ready 0``
        or JWKS age would keep its alerts firing for an issuer that no longer exists. Counters
        stay (a rate over them just ends). With ``workers > 1`` the values live in
        prometheus-client's multiprocess files, which cannot drop a series: they go with the
        restart that a change of workers needs anyway."""
        if getattr(_values.ValueClass, "_multiprocess", False):
            return
        for gauge in (self.jwks_keys, self.issuer_ready, self.jwks_age, self.jwks_last_success):
            with contextlib.suppress(KeyError):
                gauge.remove(name)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
