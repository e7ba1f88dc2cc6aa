"""Fixtures for the emulator tests (tests elsewhere use the classes directly as context
managers: ``with SonioxEmulator(tmp_path) as emu``, ``with FaultProxy(addr) as px``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .fault_proxy import FaultProxy
from .soniox import SonioxEmulator
from .tls import TlsMaterial, make_tls

API_KEY = "test-key"


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Fail a test that leaves a thread running (emulators and proxies join theirs)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    leaked = [t for t in threading.enumerate() if t not in before]
    while leaked and time.monotonic() < deadline:
        time.sleep(0.01)
        leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """One CA and server certificate for the whole test session."""
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def soniox_factory(
    tmp_path: Path, tls_material: TlsMaterial
) -> Iterator[Callable[..., SonioxEmulator]]:
    """Make emulators (key ``API_KEY``, short timeouts) that are closed after the test."""
    made: list[SonioxEmulator] = []

    def make(**kwargs: Any) -> SonioxEmulator:
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("idle_timeout", 5.0)
        kwargs.setdefault("tls", tls_material)
        emu = SonioxEmulator(tmp_path, **kwargs)
        made.append(emu)
        return emu

    yield make
    for emu in made:
        emu.close()


@pytest.fixture
def soniox(soniox_factory: Callable[..., SonioxEmulator]) -> SonioxEmulator:
    """A running emulator with the default settings of :func:`soniox_factory`."""
    return soniox_factory()


@pytest.fixture
def fault_proxy_factory() -> Iterator[Callable[[tuple[str, int]], FaultProxy]]:
    """Make fault proxies that are closed after the test."""
    made: list[FaultProxy] = []

    def make(upstream: tuple[str, int]) -> FaultProxy:
        proxy = FaultProxy(upstream)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
