"""A stop is a stop: no new session once stopping, in time whatever the network does, and
every second of speech either captioned, handed to the offline engine, or reported lost
with its cause.

Every test here checks the same account at the end: each frame the link took from the
speech queue was either confirmed by the service or reported lost — nothing vanishes.
"""

from __future__ import annotations

import socket
import time

import pytest

from edgecap.link.worker import STOP_SEND, UNCONFIRMED_AT_STOP, UNSENT_AT_STOP
from tests.emulators.black_hole import BlackHole
from tests.emulators.soniox import PATH, SessionPlan, SonioxEmulator
from tests.link.harness import (
    FRAME,
    FallbackRun,
    LinkRun,
    forwarded_pcm,
    proxied,
    utterances,
    wait_until,
)


def assert_accounted(run: LinkRun) -> None:
    """Every frame taken is confirmed or reported lost, and the totals are the reports."""
    link = run.link
    assert link.buffer.empty
    assert link.buffer.confirmed_samples + link.lost.samples == link.frames * FRAME
    assert sum(loss[0] for loss in run.sink.losses) == pytest.approx(link.lost.seconds)
    assert len(run.sink.losses) == link.loss_reports
    assert run.sink.closed and run.state() == "stopped"


def confirmed_ms(emu: SonioxEmulator) -> int:
    return max(m.get("final_audio_proc_ms", 0) for m in emu.sessions[0].sent)


def stop_in_time(run: LinkRun, finish_timeout: float) -> float:
    began = time.monotonic()
    run.stop(timeout=STOP_SEND + finish_timeout + 1.5)
    return time.monotonic() - began


def test_a_service_that_never_confirms_the_end_gets_no_second_session(emu):
    """Stopping mid-utterance, the service answers neither the finalize nor the end of
    stream: after finish_timeout the session is given up — no reconnect, no replay — and
    the speech it had not confirmed is reported, exactly."""
    emu.plan(SessionPlan(unanswered_end=True))
    events = utterances([4000])[:-1]  # still speaking at stop
    run = LinkRun(emu, finish_timeout=0.5).start()
    run.feed(events, realtime=2.0)
    assert wait_until(lambda: emu.sessions and emu.sessions[0].audio_ms >= 1500, 5)
    assert wait_until(lambda: run.sink.finals, 2)
    took = stop_in_time(run, 0.5)
    assert took < STOP_SEND + 0.5 + 1.0
    assert emu.connections == 1 and len(emu.sessions) == 1 and run.link.attempts == 1
    s = emu.sessions[0]
    assert s.end_received and not s.finished_sent
    unconfirmed = s.audio_ms - confirmed_ms(emu)
    assert unconfirmed >= 300  # the emulator's lag at least
    ((seconds, _, end, reason),) = run.sink.losses
    assert reason == UNCONFIRMED_AT_STOP
    assert seconds == pytest.approx(unconfirmed / 1000, abs=0.001)
    assert end == pytest.approx(1.0 + s.audio_ms / 1000)  # capture time: the utterance's end
    assert run.sink.finals == s.final_words  # every final word that came was delivered
    assert_accounted(run)


def test_a_half_open_connection_at_stop_ends_in_time_without_a_new_connection(emu, proxy):
    events = utterances([4000])[:-1]
    run = LinkRun(emu, url=proxied(emu, proxy), finish_timeout=0.5, dead_after=5.0).start()
    run.feed(events, realtime=2.0)
    assert wait_until(lambda: emu.sessions and emu.sessions[0].audio_ms >= 1000, 5)
    proxy.stall()  # nothing passes any more, both ways; the connection stays open
    time.sleep(0.3)
    took = stop_in_time(run, 0.5)
    assert took < STOP_SEND + 0.5 + 1.0
    assert proxy.accepted == 1 and run.link.attempts == 1  # no "last chance" connection
    assert [r for _, _, _, r in run.sink.losses] == [UNCONFIRMED_AT_STOP]
    assert run.link.lost.seconds >= 0.3 + 0.3  # the lag, and what went into the stall
    assert_accounted(run)


@pytest.mark.parametrize("kind", ["unanswered", "silent"])
def test_a_stop_during_a_connect_into_a_black_hole_is_at_once(emu, kind):
    """A SYN nobody answers, or a TLS handshake nobody answers, with a 10 s connect
    timeout: the stop interrupts the attempt, and the speech is reported unsent."""
    with BlackHole(kind) as hole:
        run = LinkRun(emu, url=hole.url(PATH), connect_timeout=10.0).start()
        run.feed(utterances([1000]))
        assert wait_until(lambda: run.state() == "connecting", 3)
        if kind == "silent":
            assert hole.wait_accepted(1, 3)
        time.sleep(0.2)
        began = time.monotonic()
        run.stop(timeout=1.0)
        assert time.monotonic() - began < 0.5
        assert run.link.attempts == 1 and run.link.sessions == 0
        assert hole.accepted == (1 if kind == "silent" else 0)
    # the attempt our own stop ended is not the service's failure
    assert run.link.failures == 0
    assert run.status.snapshot().counters.get("link_failures", 0) == 0
    ((seconds, start, end, reason),) = run.sink.losses
    assert (seconds, reason) == (pytest.approx(1.0), UNSENT_AT_STOP)
    assert (start, end) == (pytest.approx(1.0), pytest.approx(2.0))
    assert_accounted(run)


def test_a_stop_that_lands_as_the_session_starts_is_not_a_failure(emu):
    """The stop's interrupt can shut the socket just as the upgrade completes, so that the
    start message's send is what fails: that attempt is abandoned for the stop, like one
    cut in its connect (a CI run once counted it as the service's failure)."""
    run = LinkRun(emu)
    start = run.codec.start

    def start_as_the_stop_lands():  # on the link thread, the upgrade just done
        run.link.request_stop()
        conn = run.link._opening
        assert conn is not None and conn.interrupted
        conn._ws.sock.shutdown(socket.SHUT_RDWR)  # where the interrupt's shutdown lands
        return start()

    run.codec.start = start_as_the_stop_lands  # type: ignore[method-assign]
    run.start()
    run.feed(utterances([600]))
    assert wait_until(lambda: run.link.stopping, 5)
    run.stop()
    assert emu.connections == 1 and run.link.sessions == 0
    assert run.link.failures == 0
    assert run.status.snapshot().counters.get("link_failures", 0) == 0
    ((seconds, _, _, reason),) = run.sink.losses
    assert (seconds, reason) == (pytest.approx(0.6), UNSENT_AT_STOP)
    assert_accounted(run)


def test_at_stop_the_offline_engine_gets_what_the_service_did_not_confirm(emu, proxy):
    emu.plan(SessionPlan(unanswered_end=True))
    events = utterances([3000])[:-1]
    fr = FallbackRun(emu, proxy, after=30.0, finish_timeout=0.5).start()
    fr.run.feed(events, realtime=2.0)
    assert wait_until(lambda: emu.sessions and emu.sessions[0].audio_ms >= 1500, 5)
    fr.stop()
    taken = forwarded_pcm(events)[: fr.run.link.frames * FRAME * 2]
    assert bytes(emu.sessions[0].audio) == taken  # all of it was sent
    cut = confirmed_ms(emu) * 32
    assert 0 < cut < len(taken)
    assert fr.recognizer.utterances == [taken[cut:]]  # from the first unconfirmed byte on
    assert fr.run.sink.losses == [] and fr.run.link.lost.samples == 0
    assert len(emu.sessions) == 1
