"""Drive a real LinkWorker against a service emulator: gate events in, captions out.

The speech fed in is what a gate would forward: utterances of 20 ms frames with sample
positions. What the service should say about it is known independently of edgecap: the
emulators' words are a function of the audio bytes alone (``expected_words``), so a test
compares the captions with the words of the audio the gate forwarded. The Soniox emulator
with the Soniox codec is the default; any other emulator comes with its codec (``codec=``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from edgecap.captions.events import SynthesizedAudio
from edgecap.captions.tokens import TokenUpdate
from edgecap.config.schema import LinkConfig, SonioxConfig
from edgecap.config.secrets import SecretValue
from edgecap.link.fallback import Fallback
from edgecap.link.worker import LinkWorker
from edgecap.runtime.frames import Frame
from edgecap.runtime.speech import GateEvent, SpeechAudio, SpeechEnd, SpeechStart
from edgecap.runtime.speech_queue import SpeechQueue
from edgecap.runtime.status import StatusBoard
from edgecap.services.codec import Codec
from edgecap.services.local.worker import LocalWorker
from edgecap.services.soniox import SonioxCodec
from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.soniox import noise_pcm

FRAME_BYTES = 640  # 20 ms
FRAME = 320


def utterances(lengths_ms: list[int], gap_ms: int = 1000, seed: int = 1) -> list[GateEvent]:
    """Gate events for utterances of word-bearing audio separated by gaps (not forwarded)."""
    events: list[GateEvent] = []
    sample = 16_000  # capture starts 1 s before the first utterance
    for n, ms in enumerate(lengths_ms, start=1):
        pcm = noise_pcm(ms, seed=seed + n)
        events.append(SpeechStart(n, sample, sample, 0.0))
        for k in range(len(pcm) // FRAME_BYTES):
            chunk = pcm[k * FRAME_BYTES : (k + 1) * FRAME_BYTES]
            events.append(SpeechAudio(n, Frame(chunk, sample, 0.0)))
            sample += FRAME
        events.append(SpeechEnd(n, sample, "silence", 0.0))
        sample += gap_ms * 16
    return events


def forwarded_pcm(events: list[GateEvent]) -> bytes:
    return b"".join(e.frame.pcm for e in events if isinstance(e, SpeechAudio))


@dataclass
class RecordingSink:
    """A CaptionSink that records what the link delivered."""

    finals: list[str] = field(default_factory=list)  # spoken final token texts, in order
    translations: list[str] = field(default_factory=list)
    # language → final translation texts, in order; languages of provisional translations
    translated: dict[str, list[str]] = field(default_factory=dict)
    provisional_languages: set[str] = field(default_factory=set)
    audio: list[SynthesizedAudio] = field(default_factory=list)  # sink.synthesized() calls
    speakers: set[str] = field(default_factory=set)
    starts: list[float | None] = field(default_factory=list)
    updates: int = 0
    session_ends: int = 0
    losses: list[tuple[float, float | None, float | None, str]] = field(default_factory=list)
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, u: TokenUpdate, clock) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.updates += 1
            for t in u.final:
                if t.spoken:
                    self.finals.append(t.text)
                    self.starts.append(clock(t.start_ms) if t.start_ms is not None else None)
                else:
                    self.translations.append(t.text)
                    self.translated.setdefault(t.language or "", []).append(t.text)
                if t.speaker:
                    self.speakers.add(t.speaker)
            for t in u.provisional:
                if not t.spoken and t.language:
                    self.provisional_languages.add(t.language)

    def synthesized(self, audio: SynthesizedAudio) -> None:
        with self.lock:
            self.audio.append(audio)

    def session_ended(self) -> None:
        with self.lock:
            self.session_ends += 1

    def loss(self, seconds: float, start: float | None, end: float | None, reason: str) -> None:
        with self.lock:
            self.losses.append((seconds, start, end, reason))

    def close(self) -> None:
        self.closed = True


def soniox_config(url: str, **changes: object) -> SonioxConfig:
    return replace(SonioxConfig(), url=url, **changes)  # type: ignore[arg-type]


class Emulator(Protocol):
    """What the harness needs of a service emulator."""

    @property
    def url(self) -> str: ...
    @property
    def ca_file(self) -> str: ...

    port: int


_STARTED: list[Any] = []  # runs started by the current test (cleanup_runs() ends them)


def cleanup_runs() -> None:
    """End whatever a test started and did not stop (it failed half-way): a link left
    running would keep the test process alive. Never raises: the test's own failure is the
    one to report."""
    while _STARTED:
        run = _STARTED.pop()
        with contextlib.suppress(Exception):
            run.abandon()


class LinkRun:
    """A LinkWorker with its speech queue, fed by a feeder thread the test owns.

    Without ``codec`` it speaks Soniox (to ``url`` or the emulator's URL, ``soniox``: config
    changes); any other service comes with its codec, already pointed at its URL."""

    def __init__(
        self,
        emu: Emulator,
        *,
        url: str | None = None,
        key: str = "test-key",
        ca_file: str | None = None,
        soniox: dict | None = None,
        codec: Codec | None = None,
        replay_speed: float = 10.0,
        clock=time.monotonic,  # type: ignore[no-untyped-def]
        **settings: object,
    ) -> None:
        if codec is None:
            cfg = soniox_config(url or emu.url, **(soniox or {}))
            codec = SonioxCodec(cfg, replay_speed=replay_speed)
        self.codec: Any = codec
        defaults: dict = dict(
            retry_first=0.1, retry_max=0.5, connect_timeout=2.0, dead_after=2.0, finish_timeout=2.0
        )
        defaults.update(settings)
        self.settings = LinkConfig(ca_file=Path(ca_file or emu.ca_file), **defaults)
        self.queue = SpeechQueue(600 * 16_000)
        self.status = StatusBoard()
        self.sink = RecordingSink()
        self.key = SecretValue("test", key)
        self.link = LinkWorker(
            self.queue,
            self.codec,
            lambda: self.key,
            self.settings,
            self.status,
            self.sink,
            clock=clock,
        )
        self._feeder: threading.Thread | None = None
        self._feed_stop = threading.Event()

    def start(self) -> LinkRun:
        self.link.start()
        _STARTED.append(self)
        return self

    def abandon(self) -> None:
        """Stop without checking anything (teardown after a failed test)."""
        self._feed_stop.set()
        if self._feeder is not None:
            self._feeder.join(5)
        self.queue.close()
        self.link.request_stop()
        self.link.join(10)

    def feed(self, events: list[GateEvent], realtime: float | None = None) -> None:
        """Put events into the speech queue; ``realtime``: frames per second factor of
        real time (1.0 = live), None = all at once."""
        if realtime is None:
            for e in events:
                self.queue.put(e)
            return

        def run() -> None:
            # Paced by capture time: frames at their real rate, pauses as long as they were.
            t0 = time.monotonic()
            first: int | None = None
            for e in events:
                if self._feed_stop.is_set():
                    return
                sample = e.frame.end if isinstance(e, SpeechAudio) else e.sample
                first = sample if first is None else first
                delay = t0 + (sample - first) / 16_000 / realtime - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.queue.put(e)

        self._feeder = threading.Thread(target=run, name="test-feeder")
        self._feeder.start()

    @property
    def feeder_ident(self) -> int | None:
        """The feeder thread's id (it may send its speech itself, while the link sleeps)."""
        return None if self._feeder is None else self._feeder.ident

    def wait_fed(self, timeout: float = 30.0) -> None:
        if self._feeder is not None:
            self._feeder.join(timeout)
            assert not self._feeder.is_alive(), "feeder did not finish"

    def stop(self, timeout: float = 5.0) -> None:
        """Close the input (as capture does at stop) and wait for the link to end."""
        self._feed_stop.set()
        self.wait_fed()
        self.queue.close()
        self.link.request_stop()
        assert self.link.join(timeout), "link did not stop in time"
        assert self.link.error is None, f"link failed: {self.link.error!r}"

    def settled(self) -> bool:
        """Everything fed so far was taken by the link and confirmed by the service."""
        fed = self._feeder is None or not self._feeder.is_alive()
        return fed and len(self.queue) == 0 and self.link.frames > 0 and self.link.buffer.empty

    def state(self) -> str | None:
        return self.status.snapshot().state_of("link")

    def detail(self) -> str:
        part = self.status.snapshot().parts.get("link")
        return part.detail if part else ""


class RecordingRecognizer:
    """An offline engine that keeps what it was fed, utterance by utterance."""

    name = "recording"

    def __init__(self) -> None:
        self.utterances: list[bytes] = []
        self._current: bytearray | None = None

    def start(self) -> None:
        assert self._current is None, "an utterance started inside another"
        self._current = bytearray()

    def feed(self, pcm: bytes) -> None:
        assert self._current is not None, "audio outside an utterance"
        self._current += pcm

    def partial(self) -> str:
        return "partial" if self._current else ""

    def finish(self) -> list[tuple[str, int, int]]:
        assert self._current is not None
        pcm, self._current = bytes(self._current), None
        self.utterances.append(pcm)
        return [("offline", 0, len(pcm) // 32)] if pcm else []

    def close(self) -> None:
        """Nothing to release."""


class FallbackRun:
    """A LinkRun whose link has an offline fallback (a LocalWorker on its own queue)."""

    def __init__(self, emu: Emulator, proxy: FaultProxy, after: float, **settings: Any) -> None:
        self.queue = SpeechQueue(600 * 16_000)
        self.recognizer = RecordingRecognizer()
        self.offline_sink = RecordingSink()
        self.run = LinkRun(emu, url=proxied(emu, proxy), **settings)
        self.run.status.set("audio", "listening")  # as capture would
        self.fallback = Fallback(self.queue, after, self.run.status, service=self.run.codec.name)
        self.run.link.fallback = self.fallback
        self.local = LocalWorker(
            self.queue, self.recognizer, self.offline_sink, self.run.status, name="fallback"
        )

    def start(self) -> FallbackRun:
        self.local.start()
        self.run.start()
        _STARTED.append(self)
        return self

    def abandon(self) -> None:
        self.run.abandon()
        self.queue.close()
        self.local.request_stop()
        self.local.join(10)

    def stop(self) -> None:
        self.run.stop()  # the link closes the fallback's queue as it ends
        assert self.local.join(5), "the offline engine did not stop"
        assert self.local.error is None


def proxied(emu: Emulator, proxy: FaultProxy) -> str:
    """The emulator's URL, through the fault proxy."""
    parts = urlsplit(emu.url)
    return parts._replace(netloc=f"{parts.hostname}:{proxy.port}").geturl()


def fast_clock(factor: float):  # type: ignore[no-untyped-def]
    """A monotonic clock running ``factor`` times faster than real time: the link's timers
    (backoff, fatal_retry, keepalive) then cover minutes in seconds of test."""
    t0 = time.monotonic()
    return lambda: t0 + (time.monotonic() - t0) * factor


def wait_until(predicate, timeout: float, step: float = 0.02) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def pace_excess(frames: list[tuple[float, str, int | str]], speed: float) -> float:
    """Seconds of audio a session received beyond ``speed`` × real time, at the worst
    moment: the largest (audio in [t_i, t_j]) − speed × (t_j − t_i) over all windows of its
    binary frames (the emulator's record: monotonic time, kind, length)."""
    audio = [(t, n / 32_000) for t, kind, n in frames if kind == "binary"]  # type: ignore[operator]
    worst = 0.0
    lowest = float("inf")  # min over i of (audio before frame i) − speed × t_i
    total = 0.0
    for t, seconds in audio:
        lowest = min(lowest, total - speed * t)
        total += seconds
        worst = max(worst, total - speed * t - lowest)
    return worst


def coverage_gaps(forwarded: bytes, received: list[bytes]) -> list[tuple[int, int]]:
    """Stretches (byte offsets) of ``forwarded`` that no session received.

    Each session's audio must be one contiguous, frame-aligned piece of the forwarded
    stream (replay starts at a frame); anything else is an error, not a gap.
    """
    covered: list[tuple[int, int]] = []
    for audio in received:
        if not audio:
            continue
        at = forwarded.find(audio)
        while at >= 0 and at % FRAME_BYTES:
            at = forwarded.find(audio, at + 1)
        assert at >= 0, f"a session received {len(audio)} bytes that are not a piece of the input"
        covered.append((at, at + len(audio)))
    covered.sort()
    gaps = []
    pos = 0
    for a, b in covered:
        if a > pos:
            gaps.append((pos, a))
        pos = max(pos, b)
    if pos < len(forwarded):
        gaps.append((pos, len(forwarded)))
    return gaps
