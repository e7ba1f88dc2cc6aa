"""The Link through network faults (a TCP fault proxy in front of the TLS emulator):
every byte of speech the gate forwarded reaches the service across sessions, the final
captions are complete, in order and never duplicated."""

from __future__ import annotations

import time

import pytest

from edgecap.link.worker import DROPPED_UNREACHABLE, PACE_BURST
from tests.emulators.soniox import SessionPlan, SonioxEmulator, expected_words
from tests.link.harness import (
    LinkRun,
    coverage_gaps,
    forwarded_pcm,
    proxied,
    utterances,
    wait_until,
)


def assert_complete(run: LinkRun, emu: SonioxEmulator, events) -> None:
    forwarded = forwarded_pcm(events)
    received = [bytes(s.audio) for s in emu.sessions]
    assert coverage_gaps(forwarded, received) == [], "speech never reached the service"
    assert run.sink.finals == expected_words(forwarded), "captions incomplete or duplicated"


def test_cut_mid_utterance_loses_and_duplicates_nothing(emu, proxy):
    events = utterances([3000, 1000])
    run = LinkRun(emu, url=proxied(emu, proxy)).start()
    run.feed(events, realtime=2.0)
    assert wait_until(lambda: emu.sessions and emu.sessions[0].audio_ms >= 800, 5)
    proxy.cut()
    run.wait_fed()
    assert wait_until(
        lambda: len(emu.sessions) >= 2 and len(emu.sessions[-1].finalize_times) >= 1, 8
    )
    run.stop()
    assert_complete(run, emu, events)
    assert len(emu.sessions) >= 2
    assert run.link.buffer.replayed_samples > 0  # unconfirmed audio was sent again
    assert run.status.snapshot().counters["link_failures"] >= 1


@pytest.mark.slow
def test_refused_for_ten_seconds_then_everything_arrives(emu, proxy):
    events = utterances([2000, 2000, 2000], gap_ms=1500)
    run = LinkRun(emu, url=proxied(emu, proxy), retry_first=0.5, retry_max=2.0)
    delays: list[float] = []
    draw = run.link.backoff.next_delay

    def recorded() -> float:
        delays.append(draw())
        return delays[-1]

    run.link.backoff.next_delay = recorded  # type: ignore[method-assign]
    run.start()
    proxy.refuse(10.0)
    t0 = time.monotonic()
    run.feed(events, realtime=1.0)
    assert wait_until(lambda: run.state() == "retrying", 3)
    assert wait_until(lambda: len(emu.sessions) >= 1, 15)
    outage = time.monotonic() - t0
    assert outage >= 9.5
    # The backoff policy, not a count that a loaded machine changes: each wait is drawn
    # under a ceiling that doubles from retry_first up to retry_max (full jitter), and no
    # attempt comes sooner than the wait drawn before it.
    refused = proxy.refused_at
    assert len(refused) >= 2
    for i, delay in enumerate(delays[: len(refused)]):
        assert 0.0 <= delay <= min(2.0, 0.5 * 2**i) + 1e-9, (i, delay)
    for i in range(len(refused) - 1):
        assert refused[i + 1] - refused[i] >= delays[i] - 0.02, (i, refused, delays)
    run.wait_fed()
    assert wait_until(lambda: emu.sessions[-1].finalize_times and run.link.buffer.empty, 10)
    run.stop()
    assert_complete(run, emu, events)
    assert run.sink.losses == []
    assert len(emu.sessions) == 1  # one session carried the replay and the live speech


def test_half_open_connection_is_noticed_and_replaced(emu, proxy):
    events = utterances([4000])
    run = LinkRun(emu, url=proxied(emu, proxy), dead_after=1.5).start()
    run.feed(events, realtime=2.0)
    assert wait_until(lambda: emu.sessions and emu.sessions[0].audio_ms >= 500, 5)
    proxy.stall()
    t0 = time.monotonic()
    assert wait_until(lambda: run.link.dead_detected == 1, 5)
    noticed = time.monotonic() - t0
    assert noticed <= 1.5 + 0.5
    proxy.resume()
    run.wait_fed()
    assert wait_until(lambda: len(emu.sessions) >= 2 and emu.sessions[-1].finalize_times, 8)
    run.stop()
    assert_complete(run, emu, events)


def test_a_service_that_hangs_but_answers_pings_is_replaced(emu):
    emu.plan(SessionPlan(silent_after_ms=400))
    events = utterances([2500])
    run = LinkRun(emu, dead_after=1.0).start()
    run.feed(events, realtime=2.0)
    assert wait_until(lambda: run.link.dead_detected == 1, 5)
    run.wait_fed()
    assert wait_until(lambda: len(emu.sessions) == 2 and emu.sessions[-1].finalize_times, 8)
    run.stop()
    assert "no answer" in run.link._last_error.message  # type: ignore[union-attr]
    assert_complete(run, emu, events)


def test_abrupt_drop_by_the_service(emu):
    emu.plan(SessionPlan(drop_after_ms=700))
    events = utterances([2000])
    run = LinkRun(emu).start()
    run.feed(events, realtime=3.0)
    run.wait_fed()
    assert wait_until(lambda: len(emu.sessions) == 2 and emu.sessions[-1].finalize_times, 8)
    run.stop()
    assert_complete(run, emu, events)


@pytest.mark.slow
def test_slow_link_still_delivers_everything(emu, proxy):
    proxy.delay(0.15)
    proxy.throttle(48_000)  # 1.5× the audio's 32 kB/s
    events = utterances([1500, 1500])
    run = LinkRun(emu, url=proxied(emu, proxy), dead_after=3.0).start()
    run.feed(events, realtime=1.0)
    run.wait_fed()
    assert wait_until(lambda: len(emu.sessions[-1].finalize_times) == 2, 10)
    run.stop()
    assert len(emu.sessions) == 1
    assert_complete(run, emu, events)


def test_over_the_buffer_the_oldest_speech_is_dropped_and_reported_exactly(emu, proxy):
    events = utterances([3000])
    run = LinkRun(emu, url=proxied(emu, proxy), buffer=1.0, retry_first=0.2, retry_max=0.5)
    proxy.refuse(30.0)
    run.start()
    run.feed(events)
    assert wait_until(lambda: run.link.buffer.dropped.samples == 32_000, 3)
    assert run.status.snapshot().counters["uplink_lost_s"] == pytest.approx(2.0)
    assert run.sink.losses == []  # reported once the outage is over, as one stretch
    proxy.refuse(0)
    assert wait_until(lambda: emu.sessions and emu.sessions[0].finalize_times, 5)
    run.stop()
    assert len(run.sink.losses) == 1
    seconds, start, end, reason = run.sink.losses[0]
    assert seconds == pytest.approx(2.0)
    assert start == pytest.approx(1.0) and end == pytest.approx(3.0)  # capture time
    assert reason == DROPPED_UNREACHABLE  # the service was down: not "while paced"
    assert run.link.lost.seconds == pytest.approx(2.0) and run.link.loss_reports == 1
    received = b"".join(bytes(s.audio) for s in emu.sessions)
    assert received == forwarded_pcm(events)[-32_000:]  # the newest second


def test_session_is_renewed_before_the_limit_at_a_pause(emu):
    events = utterances([800, 800, 800, 800], gap_ms=600)
    run = LinkRun(emu)
    run.codec.session_max = 1.0
    run.start()
    run.feed(events, realtime=2.0)
    run.wait_fed()
    assert wait_until(lambda: run.link.buffer.empty and len(emu.sessions) >= 2, 8)
    run.stop()
    assert len(emu.sessions) >= 2
    for s in emu.sessions[:-1]:
        assert s.end_received and s.finished_sent  # ended gracefully, not cut
    assert run.link.failures == 0
    assert_complete(run, emu, events)


def test_replay_is_paced_near_real_time(emu, proxy):
    events = utterances([4000])
    run = LinkRun(emu, url=proxied(emu, proxy), replay_speed=1.5, retry_first=0.1)
    proxy.refuse(30.0)
    run.start()
    run.feed(events)  # 4 s of speech queued while the service is unreachable
    time.sleep(0.3)
    proxy.refuse(0)
    assert wait_until(lambda: emu.sessions and emu.sessions[0].finalize_times, 10)
    s = emu.sessions[0]
    took = s.frames[-1][0] - s.first_audio_at
    # 4 s at 1.5× with a 1 s burst: no sooner than (4 - 1) / 1.5 = 2 s
    assert took >= (4.0 - PACE_BURST) / 1.5 - 0.1
    assert s.max_lead_s <= 4.0 - 4.0 / 1.5 + PACE_BURST + 0.2
    run.stop()


def test_untrusted_certificate_is_never_accepted(tmp_path, emu):
    other = SonioxEmulator(tmp_path / "other")
    try:
        run = LinkRun(emu, ca_file=other.ca_file).start()  # trusts the wrong CA
        run.feed(utterances([400]))
        assert wait_until(lambda: run.link.failures >= 1, 5)
        assert "tls_untrusted" in run.detail()
        assert emu.connections == 0  # never got as far as the upgrade
        run.stop()
    finally:
        other.close()
