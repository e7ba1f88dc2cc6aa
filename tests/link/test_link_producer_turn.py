"""The producer sends its own speech while the link sleeps (issue 14): no thread hand-over
per block.

A put into the speech queue calls the link's waker on the producer's thread (capture, in
the daemon). When the link thread sleeps with an open session that only needs that speech
sent, the producer takes the link's turn and sends it itself; everything else — reading,
timers, failures, the end of a session — stays on the link thread. Checked against the real
Soniox emulator over TLS, with the real ``Connection.send`` wrapped to note which thread
sent each message.
"""

from __future__ import annotations

import socket
import threading
import time

from edgecap.link.connection import Connection
from edgecap.runtime.frames import Frame
from edgecap.runtime.speech import SpeechAudio, SpeechEnd, SpeechStart
from tests.emulators.soniox import SonioxEmulator, noise_pcm
from tests.link.harness import (
    LinkRun,
    coverage_gaps,
    forwarded_pcm,
    proxied,
    utterances,
    wait_until,
)

BLOCK_MS = 100
BLOCK_BYTES = BLOCK_MS * 32


def record_senders(monkeypatch) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """(thread id, audio bytes) of every audio message sent, by the real send."""
    sent: list[tuple[int, int]] = []
    real_send = Connection.send

    def send(self: Connection, out) -> None:  # type: ignore[no-untyped-def]
        real_send(self, out)
        if isinstance(out.payload, bytes):
            sent.append((threading.get_ident(), len(out.payload)))

    monkeypatch.setattr(Connection, "send", send)
    return sent


def feed_blocks(run: LinkRun, pcm: bytes, durations: list[float]) -> threading.Thread:
    """A thread that puts one utterance in 100 ms blocks at real time, like capture; the
    time each put took (the waker included) goes into ``durations``."""

    def feed() -> None:
        run.queue.put(SpeechStart(1, 16_000, 16_000, 0.0))
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), BLOCK_BYTES), start=1):
            delay = t0 + n * BLOCK_MS / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            block = SpeechAudio(1, Frame(pcm[i : i + BLOCK_BYTES], 16_000 + i // 2, 0.0))
            began = time.monotonic()
            run.queue.put(block)
            durations.append(time.monotonic() - began)
        run.queue.put(SpeechEnd(1, 16_000 + len(pcm) // 2, "silence", 0.0))

    feeder = threading.Thread(target=feed, name="test-feeder")
    feeder.start()
    return feeder


def test_blocks_go_on_the_wire_from_the_producers_thread(emu, monkeypatch):
    sent = record_senders(monkeypatch)
    run = LinkRun(emu, connect="warm").start()
    assert wait_until(lambda: run.link.connected, 5)
    pcm = noise_pcm(2000, seed=11)
    durations: list[float] = []
    feeder = feed_blocks(run, pcm, durations)
    feeder.join(10)
    assert wait_until(lambda: run.link.buffer.empty and sum(n for _, n in sent) == len(pcm), 5)
    producer = feeder.ident
    run.stop()

    by_producer = sum(n for ident, n in sent if ident == producer)
    # The link thread may take a block while it is awake anyway (a service message came
    # at that moment), but most go from the producer, and none is lost or reordered.
    assert by_producer >= 0.6 * len(pcm), (by_producer, len(pcm))
    assert run.link.producer_turns >= 0.6 * len(durations)
    assert bytes(emu.sessions[0].audio) == pcm
    assert run.link.lost.samples == 0


def test_a_socket_that_could_make_the_producer_wait_leaves_the_send_to_the_link(emu, monkeypatch):
    # What the kernel would say of a connection whose send buffer is full (a stall, a slow
    # uplink: Connection.has_room itself is tested on a real stalled socket in
    # test_connection.py): the producer never sends, the link thread does, nothing is lost.
    monkeypatch.setattr(Connection, "has_room", lambda self, need=0: False)
    sent = record_senders(monkeypatch)
    run = LinkRun(emu, connect="warm").start()
    assert wait_until(lambda: run.link.connected, 5)
    pcm = noise_pcm(1000, seed=12)
    feeder = feed_blocks(run, pcm, [])
    feeder.join(10)
    assert wait_until(lambda: run.link.buffer.empty and sum(n for _, n in sent) == len(pcm), 5)
    link_thread = run.link._thread.ident
    run.stop()
    assert {ident for ident, _ in sent} == {link_thread}
    assert run.link.producer_turns == 0
    assert bytes(emu.sessions[0].audio) == pcm


def test_a_send_that_fails_on_the_producers_thread_is_handled_on_the_links(emu, proxy, monkeypatch):
    """The connection is reset under the producer's sends: the failure is left to the link
    thread (a teardown may wait on the network), which starts a new session and replays
    what was not confirmed — every block arrives, and no put waited on the network."""
    record_senders(monkeypatch)
    run = LinkRun(emu, url=proxied(emu, proxy), connect="warm").start()
    assert wait_until(lambda: run.link.connected, 5)
    pcm = noise_pcm(3000, seed=13)
    durations: list[float] = []
    feeder = feed_blocks(run, pcm, durations)
    assert wait_until(lambda: run.link.producer_turns >= 5, 5)
    proxy.cut()
    feeder.join(10)
    assert wait_until(lambda: len(emu.sessions) >= 2 and run.link.buffer.empty, 10)
    run.stop()
    assert run.link.failures >= 1
    received = [bytes(s.audio) for s in emu.sessions]
    assert coverage_gaps(pcm, received) == []
    assert max(durations) < 0.5, max(durations)


def test_a_link_handed_over_leaves_what_it_did_not_send_to_its_successor(tmp_path):
    """A reload replaces the link while the service is unreachable: the old link's buffer
    goes back in front of the speech queue, whole and in order, and nothing is lost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once this block ends: nothing listens there
    with SonioxEmulator(tmp_path, api_key="test-key") as emu:
        run = LinkRun(emu, url=f"wss://127.0.0.1:{port}/transcribe-websocket").start()
        events = utterances([600, 400])
        run.feed(events)  # all at once: the link takes them and cannot send them
        assert wait_until(lambda: len(run.queue) == 0 and run.link.frames > 0, 5)
        run.queue.put(SpeechStart(9, 900_000, 900_000, 0.0))  # came after: stays behind
        run.link.hand_over()
        assert run.link.join(5)
        assert run.link.error is None
        assert run.link.lost.samples == 0 and run.link.loss_reports == 0
        left = []
        while len(run.queue):
            left.append(run.queue.get(0))
        run.queue.close()
    assert forwarded_pcm(left) == forwarded_pcm(events)
    assert [type(e).__name__ for e in left[:1]] == ["SpeechStart"]
    assert isinstance(left[-1], SpeechStart) and left[-1].utterance == 9
