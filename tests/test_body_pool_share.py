"""Each body-signed issuer holds at most its share of the unauthenticated body pool (finding 5)."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from gateway.admission import Admission, issuer_share
from gateway.config import LimitsConfig
from gateway.errors import Rejection


def test_the_share_is_an_equal_part_and_at_least_one() -> None:
    assert issuer_share(256, 4) == 64
    assert issuer_share(256, 3) == 85
    assert issuer_share(2, 10) == 1
    assert issuer_share(8, 0) == 8


def test_a_full_share_refuses_only_its_own_issuer() -> None:
    limits = LimitsConfig(max_inflight=16, max_unverified_inflight=4)
    admission = Admission()
    with ExitStack() as held:
        for _ in range(2):
            held.enter_context(
                admission.body_wait(
                    limits, authenticated=False, issuer="stripe", body_signed_issuers=2
                )
            )
        with (
            pytest.raises(Rejection) as refused,
            admission.body_wait(
                limits, authenticated=False, issuer="stripe", body_signed_issuers=2
            ),
        ):
            pass
        assert refused.value.reason == "overloaded"
        with admission.body_wait(
            limits, authenticated=False, issuer="github", body_signed_issuers=2
        ):
            assert admission.unverified == 3
        # A sender whose credential already verified never waits in the pool.
        with admission.body_wait(limits, authenticated=True, issuer="stripe"):
            assert admission.unverified == 2
    assert admission.unverified == 0
    assert admission.unverified_by_issuer == {}
