"""The gateway's per-key rate limit and address checks, broker-free."""

from __future__ import annotations

import pytest

from thumbline.producers.gateway import RateLimiter, is_loopback


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_rate_then_waits_for_it():
    clock = Clock()
    limiter = RateLimiter(100, clock)
    assert limiter.take("k", 60) == 0 and limiter.take("k", 40) == 0  # a second's worth
    assert limiter.take("k", 10) == pytest.approx(0.1)  # 10 more events: 0.1 s away
    clock.now += 0.1
    assert limiter.take("k", 10) == 0


def test_keys_have_their_own_buckets():
    limiter = RateLimiter(10, Clock())
    assert limiter.take("a", 10) == 0
    assert limiter.take("a", 1) > 0 and limiter.take("b", 10) == 0


def test_a_batch_larger_than_the_bucket_passes_once_and_leaves_it_in_debt():
    clock = Clock()
    limiter = RateLimiter(100, clock)
    assert limiter.take("k", 300) == 0  # never refused outright
    clock.now += 1.0
    assert limiter.take("k", 1) > 0  # 200 events of debt, paid back at 100/s
    clock.now += 2.0
    assert limiter.take("k", 100) == 0


def test_a_flood_of_keys_does_not_wipe_the_debt_of_a_key_in_use():
    limiter = RateLimiter(100, Clock())  # no time passes: a debt stays a debt
    assert limiter.take("busy", 300) == 0
    for i in range(101_000):
        limiter.take(f"key-{i}", 1)
        if i % 1_000 == 0:
            assert limiter.take("busy", 1) > 0, i  # still paying back, still refused


def test_buckets_are_bounded_the_least_recently_used_go_first_and_are_counted():
    evicted: list[int] = []
    limiter = RateLimiter(10, Clock(), max_buckets=3, on_evict=lambda: evicted.append(1))
    for who in ("a", "b", "c"):
        limiter.take(who, 10)
    limiter.take("a", 1)  # a is used again: b is now the least recent
    limiter.take("d", 1)
    assert len(limiter) == 3 and len(evicted) == 1
    assert limiter.take("a", 1) > 0 and limiter.take("c", 1) > 0  # kept, still empty
    assert limiter.take("b", 10) == 0  # dropped: starts again with a full bucket


def test_no_rate_means_no_limit():
    assert RateLimiter(0, Clock()).take("k", 10**9) == 0


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),  # noqa: S104
    ("10.0.0.5", False), ("feedback.example.com", False),
])  # fmt: skip
def test_only_loopback_addresses_may_run_without_keys(host, loopback):
    assert is_loopback(host) is loopback
