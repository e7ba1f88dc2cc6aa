"""The link thread sleeps until something happens (issue 14).

It wakes for an event (speech, a service message, a stop) or for a deadline it has (a
keepalive, a ping, the idle close, the rest of a late chunk …) — never to poll. Counted
with ``LinkWorker.wakeups`` (the times its one wait returned), against the real Soniox
emulator over TLS. And audio that completes a chunk goes on the wire at once: measured from
the put into the speech queue to the return of ``Connection.send`` (the real send,
wrapped to note the time).
"""

from __future__ import annotations

import itertools
import json
import socket
import statistics
import threading
import time

import pytest

from edgecap.link.connection import Connection
from edgecap.link.fallback import Fallback
from edgecap.link.worker import TIMER_SLACK, LinkWorker
from edgecap.runtime.frames import SAMPLE_RATE, Frame
from edgecap.runtime.speech import SpeechAudio, SpeechEnd, SpeechStart
from edgecap.runtime.speech_queue import SpeechQueue
from edgecap.services.local.worker import LocalWorker
from tests.emulators.soniox import _SessionRunner, noise_pcm
from tests.link.harness import (
    FRAME_BYTES,
    LinkRun,
    RecordingRecognizer,
    RecordingSink,
    forwarded_pcm,
    proxied,
    utterances,
    wait_until,
)

CHUNK_BYTES = 3200  # the Soniox codec's audio_chunk_ms (100 ms)


def wakeups_during(run: LinkRun, seconds: float) -> int:
    before = run.link.wakeups
    time.sleep(seconds)
    return run.link.wakeups - before


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- 1. unconnected -------------------------------------------------------------------------


def test_an_unconnected_link_with_nothing_to_say_does_not_wake(emu):
    run = LinkRun(emu).start()  # on_demand
    time.sleep(0.2)
    assert wakeups_during(run, 1.5) == 0
    assert emu.connections == 0
    began = time.monotonic()
    run.link.request_stop()  # a link asleep with no deadline at all stops at once
    assert run.link.join(1.0)
    assert time.monotonic() - began < 0.2
    run.stop()


def test_a_link_that_cannot_connect_wakes_once_per_attempt(emu):
    """Warm, the service unreachable: the link wakes for its retries and nothing else."""
    url = emu.url.replace(f":{emu.port}/", f":{closed_port()}/")
    run = LinkRun(emu, url=url, connect="warm", retry_first=0.2, retry_max=0.4).start()
    time.sleep(0.3)
    attempts = run.link.attempts
    woke = wakeups_during(run, 1.5)
    attempts = run.link.attempts - attempts
    assert attempts >= 3  # it does retry (backoff up to 0.4 s)
    assert woke <= attempts + 1
    run.stop()


# -- 2. connected, warm and silent ----------------------------------------------------------


@pytest.mark.parametrize(
    ("keepalive", "dead_after", "window", "most"),
    [
        (5.0, 10.0, 1.5, 0),  # the defaults: nothing is due within 1.5 s
        # keepalives every 1 s, pings after 1.5 s of silence and a look at the dead
        # connection 3 s after the last frame received: ≤ 4 deadlines in 1.8 s, not 90
        (1.0, 3.0, 1.8, 4),
    ],
)
def test_a_warm_silent_link_wakes_only_for_its_deadlines(emu, keepalive, dead_after, window, most):
    run = LinkRun(emu, connect="warm", dead_after=dead_after, soniox={"keepalive": keepalive})
    run.start()
    assert wait_until(lambda: run.link.connected and run.state() == "connected", 5)
    time.sleep(0.1)
    woke = wakeups_during(run, window)
    assert woke <= most
    if keepalive < window:
        (session,) = emu.sessions
        times = session.keepalive_times
        assert len(times) >= 1  # woken for it: it went
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # (one may go up to TIMER_SLACK early, with a ping due just after it)
        assert all(keepalive - TIMER_SLACK - 0.01 <= gap <= keepalive + 0.1 for gap in gaps), gaps
    run.stop()


# -- 3. on demand ---------------------------------------------------------------------------


def test_on_demand_sleeps_until_the_idle_close_then_without_any_deadline(emu):
    """A session after speech: the link wakes for the service's answers and for the idle
    close, ends the session — and then sleeps with nothing due."""
    run = LinkRun(emu, idle_close=1.0, dead_after=10.0).start()
    run.feed(utterances([300]))
    assert wait_until(lambda: emu.sessions and emu.sessions[0].finalize_times, 5)
    assert wait_until(lambda: run.link.buffer.empty, 5)  # all confirmed
    quiet_from = run.link.wakeups
    assert wait_until(lambda: emu.sessions[0].finished_sent, 3), "no idle close"
    assert wait_until(lambda: run.state() == "idle", 2)
    # the idle close (1 wake), then the end of the session (finished, the close)
    assert run.link.wakeups - quiet_from <= 5
    assert wakeups_during(run, 1.0) == 0
    run.stop()


# -- sending: at once when a chunk is complete, and a late rest does not hold it back -------


def blocks(pcm: bytes, block_bytes: int, first_sample: int) -> list[SpeechAudio]:
    return [
        SpeechAudio(1, Frame(pcm[i : i + block_bytes], first_sample + i // 2, 0.0))
        for i in range(0, len(pcm), block_bytes)
    ]


@pytest.mark.parametrize("block_ms", [20, 100])  # the gate's frames, and its blocks
def test_a_complete_chunk_goes_on_the_wire_at_once(emu, monkeypatch, block_ms):
    sent: list[tuple[float, int]] = []  # (when send returned, audio bytes)
    real_send = Connection.send

    def timed_send(self: Connection, out) -> None:  # type: ignore[no-untyped-def]
        real_send(self, out)
        if isinstance(out.payload, bytes):
            sent.append((time.monotonic(), len(out.payload)))

    monkeypatch.setattr(Connection, "send", timed_send)
    run = LinkRun(emu, connect="warm", replay_speed=1.5).start()
    assert wait_until(lambda: run.link.connected, 5)
    pcm = noise_pcm(1500, seed=3)
    audio = blocks(pcm, block_ms * 32, 16_000)
    put_at: list[float] = []  # when each block was put
    woke_before = run.link.wakeups

    def feed() -> None:
        run.queue.put(SpeechStart(1, 16_000, 16_000, 0.0))
        t0 = time.monotonic()
        for n, event in enumerate(audio, start=1):
            delay = t0 + n * block_ms / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            put_at.append(time.monotonic())
            run.queue.put(event)

    feeder = threading.Thread(target=feed, name="test-feeder")
    feeder.start()
    feeder.join(5)
    assert wait_until(lambda: sum(n for _, n in sent) == len(pcm), 2)
    woke = run.link.wakeups - woke_before
    run.queue.put(SpeechEnd(1, 16_000 + len(pcm) // 2, "silence", 0.0))
    run.stop()

    # Each full message: from the put of the block that completed it to its send.
    ends = [0]
    for _, n in sent:
        ends.append(ends[-1] + n)
    block_bytes = block_ms * 32
    latencies = [
        when - put_at[end // block_bytes - 1]
        for (when, n), end in zip(sent, ends[1:], strict=True)
        if n >= CHUNK_BYTES
    ]
    full = len(latencies)
    assert full >= 0.8 * len(sent)  # chunks of 100 ms (a late frame may cut one short)
    assert all(n % block_bytes == 0 for _, n in sent)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    print(
        f"\nblocks of {block_ms} ms: put → sent p99 {1000 * p99:.2f} ms, max "
        f"{1000 * max(latencies):.2f} ms over {full} chunks; {woke} wake-ups"
    )
    assert p99 < 0.05
    # a wake per block put and per service message, not a poll every 20 ms
    assert woke <= len(audio) + 3 * len(sent) + 5


def test_the_rest_of_a_chunk_that_is_late_does_not_hold_back_what_came(emu):
    """60 ms of an utterance, then nothing for a while (the capture stalled): what came
    goes after a chunk's time of waiting for the rest, not when the rest comes."""
    run = LinkRun(emu, connect="warm").start()
    assert wait_until(lambda: run.link.connected, 5)
    pcm = noise_pcm(60, seed=4)
    run.queue.put(SpeechStart(1, 16_000, 16_000, 0.0))
    put = time.monotonic()
    for event in blocks(pcm, FRAME_BYTES, 16_000):
        run.queue.put(event)
    assert wait_until(lambda: emu.sessions and len(emu.sessions[0].audio) == len(pcm), 2)
    (session,) = emu.sessions
    arrived = next(t for t, kind, _ in session.frames if kind == "binary")
    assert 0.09 <= arrived - put < 0.5  # it waited a chunk's time (100 ms) for the rest
    run.queue.put(SpeechEnd(1, 16_000 + len(pcm) // 2, "silence", 0.0))
    assert wait_until(lambda: session.finalize_times, 2)
    run.stop()


def test_a_file_held_back_sees_the_end_of_input_that_came_meanwhile(emu):
    """The whole file is in the speech queue, and closed, before the link looks: it takes
    what it may (held back: its put and close wakes are spent), the service refuses the
    key — and the link reads on at once and ends, not after ``patience``."""
    events = utterances([2000, 2000])
    run = LinkRun(emu, key="wrong", buffer=2.0)
    run.queue.producer_waits = True
    run.feed(events)
    run.queue.close()
    began = time.monotonic()
    run.start()
    assert run.link.join(5), "the link waited for a wake that had come already"
    assert time.monotonic() - began < 2.0
    assert run.link.error is None and emu.connections == 1
    assert run.link.lost.seconds == pytest.approx(4.0)


def test_a_service_message_is_handled_as_soon_as_the_service_sends_it(emu, monkeypatch):
    """The link sleeps on its connection's socket too: a message wakes it, and waits for
    none of its deadlines (none is near here: keepalive 5 s, dead_after 10 s). Timed from
    the emulator's send to the codec's parse, through TLS and the link's select()."""
    posted: dict[str, float] = {}
    handled: list[float] = []
    real_send = _SessionRunner._send
    real_on_message = LinkWorker._on_message

    def timed_send(self: _SessionRunner, message: dict) -> None:  # type: ignore[type-arg]
        posted[json.dumps(message)] = time.monotonic()
        real_send(self, message)

    def timed_on_message(self: LinkWorker, data: str | bytes) -> None:
        if isinstance(data, str) and data in posted:
            handled.append(time.monotonic() - posted[data])
        real_on_message(self, data)

    monkeypatch.setattr(_SessionRunner, "_send", timed_send)
    monkeypatch.setattr(LinkWorker, "_on_message", timed_on_message)
    run = LinkRun(emu, connect="warm", dead_after=10.0).start()
    assert wait_until(lambda: run.link.connected, 5)
    run.feed(utterances([1000]), realtime=4.0)
    assert wait_until(lambda: emu.sessions[0].finalize_times and run.link.buffer.empty, 5)
    run.stop()
    assert len(handled) >= 3
    p99 = statistics.quantiles(handled, n=100, method="inclusive")[98]
    print(f"\nservice message sent → handled: p99 {1000 * p99:.2f} ms over {len(handled)}")
    assert p99 < 0.05


class SlowRecognizer(RecordingRecognizer):
    """An offline engine that decodes 20 ms of audio in about 2 ms (10× real time)."""

    def feed(self, pcm: bytes) -> None:
        time.sleep(len(pcm) / 32_000 / 10)
        super().feed(pcm)


def test_a_file_held_back_by_the_offline_engine_goes_on_as_it_makes_room(emu, proxy):
    """A file, the service unreachable, the offline engine taking over with a small queue:
    the link is held back by that queue, and goes on each time the engine makes room — not
    at its next retry (30-60 s away here)."""
    proxy.refuse(1e6)
    events = utterances([2000, 2000], gap_ms=300)
    run = LinkRun(emu, url=proxied(emu, proxy), retry_first=30.0, retry_max=60.0, buffer=2.0)
    run.queue.producer_waits = True
    offline = SpeechQueue(3 * SAMPLE_RATE // 2)  # 1.5 s: the 1 s held at the switch fits
    run.link.fallback = Fallback(offline, 0.0, run.status, service="soniox")
    recognizer = SlowRecognizer()
    local = LocalWorker(offline, recognizer, RecordingSink(), run.status, name="fallback")
    local.start()
    run.feed(events)
    run.queue.close()
    began = time.monotonic()
    run.start()
    assert run.link.join(5), "the link waited for its retry, not for the engine's room"
    assert local.join(5) and local.error is None and run.link.error is None
    assert time.monotonic() - began < 3.0
    assert b"".join(recognizer.utterances) == forwarded_pcm(events)
    assert offline.dropped_samples == 0 and run.link.lost.samples == 0
