"""The config fuzz tests' case counts, in the terminal summary (see fuzzcount.py)."""

from __future__ import annotations

from typing import Any

from tests.config.fuzzcount import CASES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not CASES:
        return
    parts = ", ".join(f"{name} {n}" for name, n in sorted(CASES.items()))
    terminalreporter.write_line(f"config fuzz: {sum(CASES.values())} cases ({parts})")
