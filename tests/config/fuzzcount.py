"""How many cases each config fuzz test ran: the issue asks that fuzz tests report it.

Each property test calls ``count(name)`` once per case; ``tests/config/conftest.py`` prints
the totals in pytest's terminal summary (one line, also without ``-s`` or ``-v``), e.g.
``config fuzz: 1840 cases (arbitrary-bytes 300, check-in-process 250, ...)``. Hypothesis
alone reports them only with ``--hypothesis-show-statistics``.
"""

from __future__ import annotations

from collections import Counter

CASES: Counter[str] = Counter()


def count(name: str) -> None:
    CASES[name] += 1
