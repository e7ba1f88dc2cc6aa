import random

import pytest

from edgecap.runtime.backoff import Backoff


def test_ceiling_doubles_up_to_the_cap_and_jitter_stays_below_it():
    b = Backoff(first=1, cap=30, rng=random.Random(7))
    ceilings, delays = [], []
    for _ in range(8):
        ceilings.append(b.ceiling)
        delays.append(b.next_delay())
    assert ceilings == [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # full jitter: spread, not a fixed step


def test_without_jitter_delays_are_the_ceilings():
    b = Backoff(first=0.5, cap=4, jitter=False)
    assert [b.next_delay() for _ in range(5)] == [0.5, 1, 2, 4, 4]


def test_reset_only_after_staying_healthy():
    now = [0.0]
    b = Backoff(first=1, cap=30, jitter=False, healthy_after=10, clock=lambda: now[0])
    for _ in range(4):
        b.next_delay()
    b.succeeded()
    now[0] = 5
    assert not b.reset_if_healthy()
    assert b.ceiling == 16  # a connection that drops quickly keeps backing off
    now[0] = 10
    assert b.reset_if_healthy()
    assert b.ceiling == 1 and b.attempts == 0


def test_bad_parameters():
    with pytest.raises(ValueError):
        Backoff(first=0)
    with pytest.raises(ValueError):
        Backoff(first=5, cap=1)
