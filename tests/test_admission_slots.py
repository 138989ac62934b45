"""Admission's bounds as context managers: counted in on entry, out on every exit."""

from __future__ import annotations

import pytest

from gateway.admission import Admission
from gateway.config import LimitsConfig
from gateway.errors import Rejection

LIMITS = LimitsConfig(max_inflight=2, max_unverified_inflight=1)


def test_a_slot_is_held_inside_and_given_back_on_any_exit() -> None:
    admission = Admission()
    with admission.slot(LIMITS):
        assert admission.inflight == 1
        with admission.slot(LIMITS):
            assert admission.inflight == 2
            with pytest.raises(Rejection) as refused, admission.slot(LIMITS):
                pass
            assert refused.value.reason == "overloaded"
            assert admission.inflight == 2
    assert admission.inflight == 0
    with pytest.raises(KeyError), admission.slot(LIMITS):
        raise KeyError("boom")
    assert admission.inflight == 0


def test_no_slot_while_draining() -> None:
    admission = Admission(draining=True)
    with pytest.raises(Rejection) as refused, admission.slot(LIMITS):
        pass
    assert refused.value.reason == "shutting_down"
    assert admission.inflight == 0


def test_the_unverified_pool_is_given_back_on_any_exit() -> None:
    admission = Admission()
    with pytest.raises(KeyError), admission.body_wait(LIMITS, authenticated=False, issuer="a"):
        assert (admission.unverified, admission.unverified_by_issuer) == (1, {"a": 1})
        raise KeyError("boom")
    assert (admission.unverified, admission.unverified_by_issuer) == (0, {})
    with admission.body_wait(LIMITS, authenticated=False, issuer="a"):
        with (
            pytest.raises(Rejection) as refused,
            admission.body_wait(LIMITS, authenticated=False, issuer="b"),
        ):
            pass
        assert refused.value.reason == "overloaded"
        assert admission.unverified_by_issuer == {"a": 1}
        # An authenticated request never waits in the pool, however full.
        for _ in range(3):
            with admission.body_wait(LIMITS, authenticated=True, issuer="a"):
                assert admission.unverified == 1
    assert (admission.unverified, admission.unverified_by_issuer) == (0, {})


def test_an_exception_inside_is_never_swallowed() -> None:
    admission = Admission()
    for cm in (
        admission.slot(LIMITS),
        admission.body_wait(LIMITS, authenticated=True),
        admission.body_wait(LIMITS, authenticated=False, issuer="a"),
    ):
        with pytest.raises(ZeroDivisionError), cm:
            _ = 1 / 0
