"""candidates() keeps its answers per (issuers, path): the same answers, bounded, never another
config's."""

from __future__ import annotations

import gc

from gateway import verify
from gateway.config import IssuerConfig


def issuer(name: str, prefix: str) -> IssuerConfig:
    return IssuerConfig(name=name, jwks_url=f"https://{name}.test/jwks.json", path_prefix=prefix)


ISSUERS = (
    issuer("root", "/"),
    issuer("hooks", "/hooks"),
    issuer("pay", "/hooks/payments/"),
    issuer("pay2", "/hooks/payments"),
    issuer("semi", "/a;b"),
)
PATHS = [
    "/", "/x", "/hooks", "/hooks/", "/hooksx", "/hooks/payments", "/hooks/payments/1",
    "/hooks/%70ayments/1", "/hooks/payments;x/1", "/hooks;p/payments", "/a", "/a;b", "/a;c/d",
    "/hooks/pay%6dents", "/hooks/%2e", "",
]  # fmt: skip


def test_cached_answers_are_the_computed_ones() -> None:
    for path in PATHS * 3:
        expected = verify._candidates(ISSUERS, path)
        got = verify.candidates(ISSUERS, path)
        assert [i.name for i in got] == [i.name for i in expected], path
        got.append(ISSUERS[0])  # a caller's list is its own
        assert [i.name for i in verify.candidates(ISSUERS, path)] == [i.name for i in expected]


def test_a_new_config_in_the_place_of_an_old_one_gets_its_own_answers() -> None:
    for n in range(40):
        prefix = "/a" if n % 2 else "/b"
        issuers = (issuer("only", prefix),)
        assert [i.path_prefix for i in verify.candidates(issuers, "/a/x")] == (
            ["/a"] if n % 2 else []
        )
        del issuers
        gc.collect()


def test_the_answers_kept_are_bounded() -> None:
    for n in range(3 * verify.MAX_ROUTES):
        verify.candidates(ISSUERS, f"/hooks/{n}")
        assert len(verify._ROUTES) <= verify.MAX_ROUTES


def test_a_list_of_issuers_is_never_kept_since_it_can_change() -> None:
    issuers = [issuer("a", "/a")]
    assert [i.name for i in verify.candidates(issuers, "/a/x")] == ["a"]
    issuers[0] = issuer("b", "/a")
    assert [i.name for i in verify.candidates(issuers, "/a/x")] == ["b"]
