"""A source that is not live waits for the link, and the link never outpaces the service;
a loss report names its real cause; a run whose input ended gives up a service that
refuses it (or stays unreachable) instead of waiting for ever.

``queue.producer_waits = True`` is what the capture of a file read as fast as possible
says; the harness's feeder then plays that capture (it puts everything at once, the queue
holds it, and the link takes from it only as fast as it may send).
"""

from __future__ import annotations

import time

import pytest

from edgecap.link.worker import (
    DROPPED_PACED,
    DROPPED_UNREACHABLE,
    PACE_BURST,
    UNSENT_REFUSED,
    UNSENT_UNREACHABLE,
)
from tests.emulators.soniox import expected_words
from tests.link.harness import (
    FRAME,
    LinkRun,
    forwarded_pcm,
    pace_excess,
    proxied,
    utterances,
    wait_until,
)

CHUNK = 0.1  # s of audio per message (the Soniox codec's audio_chunk_ms)


def test_a_file_waits_for_the_link_and_nothing_is_dropped(emu):
    """12 s of speech at once into a 2 s buffer: the link takes no more than it may send,
    everything arrives, paced at replay_speed (with its one-second burst), also at the end
    of input, and every word comes back."""
    events = utterances([4000, 3000, 5000], gap_ms=500)
    run = LinkRun(emu, replay_speed=5.0, buffer=2.0)
    run.queue.producer_waits = True
    run.start()
    run.feed(events)
    run.queue.close()  # the end of the file: the link delivers everything, then ends
    assert run.link.join(15), "the link did not end after the end of input"
    assert run.link.error is None
    forwarded = forwarded_pcm(events)
    (s,) = emu.sessions
    assert bytes(s.audio) == forwarded
    assert run.sink.finals == expected_words(forwarded)
    assert run.sink.losses == [] and run.link.buffer.dropped.samples == 0
    assert s.end_received and s.finished_sent
    assert pace_excess(s.frames, 5.0) <= PACE_BURST + CHUNK + 0.15
    took = s.frames[-1][0] - s.first_audio_at
    assert took >= (12.0 - PACE_BURST) / 5.0 - 0.1


def test_speech_dropped_while_sending_is_paced_says_so(emu):
    """A live source (it does not wait) with more speech at once than the buffer holds,
    while connected: the oldest is dropped and reported as dropped while sending was
    paced — the service was up — once sending has caught up."""
    run = LinkRun(emu, replay_speed=1.5, buffer=1.0).start()
    run.feed(utterances([400], seed=5))
    assert wait_until(lambda: emu.sessions and emu.sessions[0].finalize_times, 5)
    burst = utterances([3000], seed=7)
    run.feed(burst)
    assert wait_until(lambda: run.sink.losses, 5), "no loss reported once sending caught up"
    ((seconds, start, end, reason),) = run.sink.losses
    assert reason == DROPPED_PACED
    # The burst (1–4 s) overfills the 1 s buffer by 2 s, less what went out while it was
    # being put (the link sends as it comes: more of it on a slow, busy machine).
    assert 0 < seconds <= 2.0 and run.link.buffer.dropped.seconds == pytest.approx(seconds)
    # the oldest unsent: up to the newest second the buffer keeps
    assert end == pytest.approx(3.0) and end - start == pytest.approx(seconds)
    assert wait_until(run.settled, 5)
    run.stop()
    assert run.link.lost.seconds == pytest.approx(seconds)
    assert len(emu.sessions) == 1
    # the rest reached the service, once: the first utterance and the burst less the loss
    assert len(emu.sessions[0].audio) / 32_000 == pytest.approx(0.4 + 3.0 - seconds, abs=0.05)


def test_a_file_run_with_a_refused_key_ends_by_itself_and_reports_everything(emu):
    events = utterances([2000, 3000])
    run = LinkRun(emu, key="wrong")
    run.queue.producer_waits = True
    run.start()
    run.feed(events)
    run.queue.close()
    assert run.link.join(5), "a refused file run must not wait for a reload"
    assert emu.connections == 1
    ((seconds, start, end, reason),) = run.sink.losses
    assert (seconds, reason) == (pytest.approx(5.0), UNSENT_REFUSED)
    assert (start, end) == (pytest.approx(1.0), pytest.approx(1.0 + 2.0 + 1.0 + 3.0))
    assert run.link.lost.samples == len(forwarded_pcm(events)) // 2
    assert run.state() == "stopped"


def test_a_file_run_waits_for_an_unreachable_service_then_gives_up(emu, proxy):
    """Unreachable: the file is held back (nothing dropped) while the link retries; after
    ``patience`` the link stops waiting, reads on, and at the end of input reports all of
    it — dropped while unreachable, then not sent — and ends by itself."""
    events = utterances([3000, 3000, 3000], gap_ms=300)
    proxy.refuse(1e6)
    run = LinkRun(emu, url=proxied(emu, proxy), buffer=2.0, retry_first=0.1, retry_max=0.3)
    run.queue.producer_waits = True
    run.link.patience = 2.0
    run.start()
    run.feed(events)
    run.queue.close()
    time.sleep(1.0)
    assert run.link.frames * FRAME <= 1.0 * 16_000 + FRAME  # held back: 1 s (buffer / 2)
    assert run.link.buffer.dropped.samples == 0 and run.link.alive
    assert run.link.join(5), "the link did not give up"
    reasons = [r for _, _, _, r in run.sink.losses]
    assert reasons == [DROPPED_UNREACHABLE, UNSENT_UNREACHABLE]
    assert run.link.lost.seconds == pytest.approx(9.0)  # all of it, reported
    assert sum(x[0] for x in run.sink.losses) == pytest.approx(9.0)
    assert emu.connections == 0 and proxy.refused >= 3
