"""Exponential backoff with full jitter, the one retry policy of edgecap.

Full jitter (a uniform wait between 0 and the current ceiling) spreads the retries of many
boxes that lost the same network at the same moment. ``reset_if_healthy`` puts the ceiling
back to ``first`` only once a connection or device has stayed up for ``healthy_after``
seconds, so a peer that accepts and then drops at once still backs off.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        first: float = 1.0,
        cap: float = 30.0,
        factor: float = 2.0,
        *,
        jitter: bool = True,
        healthy_after: float = 30.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if first <= 0 or cap < first or factor < 1:
            raise ValueError("need 0 < first <= cap and factor >= 1")
        self.first = first
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self.healthy_after = healthy_after
        self._rng = rng or random.Random()
        self._clock = clock
        self._ceiling = first
        self._up_since: float | None = None
        self.attempts = 0  # failures since the last reset

    def next_delay(self) -> float:
        """The wait before the next attempt; each call raises the ceiling."""
        ceiling = self._ceiling
        self._ceiling = min(self.cap, self._ceiling * self.factor)
        self.attempts += 1
        self._up_since = None
        return self._rng.uniform(0, ceiling) if self.jitter else ceiling

    def succeeded(self) -> None:
        """The connection or device is up; the ceiling resets once it stays up long enough."""
        self._up_since = self._clock()

    def reset_if_healthy(self) -> bool:
        if self._up_since is not None and self._clock() - self._up_since >= self.healthy_after:
            self.reset()
            return True
        return False

    def reset(self) -> None:
        self._ceiling = self.first
        self.attempts = 0

    @property
    def ceiling(self) -> float:
        return self._ceiling
