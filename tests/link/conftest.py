"""The Soniox emulator (lag 300 ms) and a TCP fault proxy in front of it, for the link tests
that cut, refuse and stall connections."""

from __future__ import annotations

import pytest

from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.soniox import SonioxEmulator
from tests.link.harness import cleanup_runs


@pytest.fixture(autouse=True)
def _end_what_the_test_left_running():
    """A test that fails half-way leaves its link running: end it, before the emulator."""
    yield
    cleanup_runs()


@pytest.fixture
def emu(tmp_path):
    with SonioxEmulator(tmp_path, api_key="test-key", lag_ms=300) as emulator:
        yield emulator


@pytest.fixture
def proxy(emu):
    with FaultProxy(("127.0.0.1", emu.port)) as px:
        yield px
