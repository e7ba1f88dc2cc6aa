"""The link's side of the codec contract v2, through real sessions: every codec call happens
in the link's turn — on the link's thread, or on the producer's while the link sleeps, never
two at once — and an event the link does not know is counted and logged, not lost in
silence."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from edgecap.config.schema import AzureConfig, SarvamConfig
from edgecap.services.azure import AzureCodec
from edgecap.services.codec import Parsed
from edgecap.services.sarvam import SarvamCodec
from edgecap.services.soniox import SonioxCodec
from tests.emulators.azure import AzureEmulator
from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.sarvam import SarvamEmulator
from tests.emulators.soniox import SonioxEmulator, expected_words
from tests.emulators.stateful import StatefulEmulator
from tests.link.harness import (
    LinkRun,
    coverage_gaps,
    forwarded_pcm,
    proxied,
    soniox_config,
    utterances,
    wait_until,
)
from tests.link.stateful_codec import StatefulCodec

CODEC_METHODS = frozenset(
    {
        "handshake",
        "start",
        "begin_turn",
        "audio",
        "end_turn",
        "keepalive",
        "end_of_stream",
        "reset",
        "parse",
        "handshake_refused",
        "closed",
    }
)


class ThreadRecordingCodec:
    """Any codec, with every method call recorded as (method, thread id), and every call
    that began while another was under way (``overlaps``)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._busy = False
        self.overlaps: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in CODEC_METHODS:
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls.append((name, threading.get_ident()))
                if self._busy:
                    self.overlaps.append((name, threading.get_ident()))
                self._busy = True
            try:
                return value(*args, **kwargs)
            finally:
                with self._lock:
                    self._busy = False

        return call

    def threads(self) -> set[int]:
        with self._lock:
            return {ident for _, ident in self.calls}

    def methods(self) -> set[str]:
        with self._lock:
            return {name for name, _ in self.calls}


@dataclass
class Service:
    emu: Any
    make_codec: Callable[[str], Any]
    # PCM a session received (the emulators record it in their own shapes)
    received: Callable[[Any], bytes] = lambda session: bytes(session.audio)
    # the words the captions must be, from the forwarded audio (None: not checked here; the
    # service's own link tests check its words through cuts)
    expected: Callable[[bytes], list[str]] | None = None
    min_parses: int = 10  # service messages such a session gets at least


def _host(url: str) -> str:
    """scheme://host:port of a URL (Azure's ``host`` form)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _azure_received(session: Any) -> bytes:
    return b"".join(bytes(turn.audio) for turn in session.turns)


@pytest.fixture(params=["soniox", "stateful", "azure", "sarvam"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    if request.param == "soniox":
        with SonioxEmulator(tmp_path, lag_ms=300) as emu:
            yield Service(
                emu,
                lambda url: SonioxCodec(soniox_config(url), replay_speed=10.0),
                expected=expected_words,
            )
    elif request.param == "azure":
        with AzureEmulator(tmp_path, api_key="test-key") as emu:
            yield Service(
                emu,
                lambda url: AzureCodec(
                    AzureConfig(host=_host(url), language="en-US"), replay_speed=10
                ),
                received=_azure_received,
            )
    elif request.param == "sarvam":
        with SarvamEmulator(tmp_path, api_key="test-key", max_speed=12.0) as emu:
            yield Service(
                emu,
                lambda url: SarvamCodec(SarvamConfig(url=url, language="hi-IN"), replay_speed=10),
                min_parses=3,  # one transcript per segment, VAD events
            )
    else:
        with StatefulEmulator(tmp_path) as emu:
            yield Service(emu, lambda url: StatefulCodec(url))


def test_every_codec_call_happens_in_the_links_turn(service: Service) -> None:
    """Through a session that is cut mid-utterance and replaced: the codec is only ever
    called from the link's thread, or from the thread that feeds the speech queue (sending
    its speech while the link sleeps), and never by two at once."""
    emu = service.emu
    with FaultProxy(("127.0.0.1", emu.port)) as proxy:
        codec = ThreadRecordingCodec(service.make_codec(proxied(emu, proxy)))
        events = utterances([2500, 800])
        run = LinkRun(emu, codec=codec).start()  # type: ignore[arg-type]
        run.feed(events, realtime=2.0)
        first = lambda: len(service.received(emu.sessions[0])) if emu.sessions else 0  # noqa: E731
        assert wait_until(lambda: first() >= 600 * 32, 5)
        proxy.cut()
        run.wait_fed()
        assert wait_until(lambda: len(emu.sessions) >= 2 and run.link.buffer.empty, 10)
        run.stop()
    link_thread = run.link._thread.ident
    assert link_thread in codec.threads()
    assert codec.threads() <= {link_thread, run.feeder_ident}
    assert codec.overlaps == []
    # parsing (and everything but sending speech) stays on the link thread
    assert {
        ident
        for name, ident in codec.calls
        if name != "audio" and name != "begin_turn" and name != "end_turn"
    } == {link_thread}
    assert {"handshake", "reset", "start", "begin_turn", "audio", "end_turn", "parse"} <= (
        codec.methods()
    )
    assert "end_of_stream" in codec.methods()
    parses = sum(1 for name, _ in codec.calls if name == "parse")
    assert parses >= service.min_parses
    forwarded = forwarded_pcm(events)
    assert coverage_gaps(forwarded, [service.received(s) for s in emu.sessions]) == []
    if service.expected is not None:
        assert run.sink.finals == service.expected(forwarded)
    else:
        assert run.sink.finals  # captions came


def test_a_refused_handshake_is_judged_on_the_link_thread(tmp_path: Path) -> None:
    with StatefulEmulator(tmp_path, api_key="right") as emu:
        codec = ThreadRecordingCodec(StatefulCodec(emu.url))
        run = LinkRun(emu, codec=codec, key="wrong").start()  # type: ignore[arg-type]
        run.feed(utterances([300]))
        assert wait_until(lambda: run.state() == "rejected", 5)
        run.stop()
    assert "handshake_refused" in codec.methods()
    assert codec.threads() == {run.link._thread.ident}


@dataclass(frozen=True)
class Mystery:
    """An event type no link knows."""


def test_an_unknown_event_is_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Inventive(StatefulCodec):
        def parse(self, message: str | bytes) -> Parsed:
            parsed = super().parse(message)
            if parsed.events:
                return Parsed((*parsed.events, Mystery()), parsed.replies)
            return parsed

    events = utterances([1200])
    with StatefulEmulator(tmp_path) as emu:
        run = LinkRun(emu, codec=Inventive(emu.url)).start()  # type: ignore[arg-type]
        with caplog.at_level(logging.WARNING, logger="edgecap.link.worker"):
            run.feed(events)
            assert wait_until(run.settled, 5)
            run.stop()
        for s in emu.sessions:
            assert s.violations == []
    unknown = run.status.snapshot().counters["link_unknown_events"]
    assert unknown == run.link.unknown_events > 10  # one with every result
    warnings = [r for r in caplog.records if "Mystery" in r.getMessage()]
    assert len(warnings) == 1
    # the events the link knows still did their work
    assert run.sink.finals == expected_words(forwarded_pcm(events))
