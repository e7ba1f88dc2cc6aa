"""The Link against the strict Soniox emulator over real TLS WebSockets."""

from __future__ import annotations

import time

import pytest

from tests.emulators.connect_proxy import ConnectProxy
from tests.emulators.soniox import SessionPlan, SonioxEmulator, expected_words
from tests.link.harness import (
    LinkRun,
    coverage_gaps,
    fast_clock,
    forwarded_pcm,
    utterances,
    wait_until,
)


@pytest.fixture
def emu(tmp_path):
    with SonioxEmulator(tmp_path, api_key="test-key", lag_ms=300) as emulator:
        yield emulator


def test_two_utterances_arrive_whole_and_every_word_is_final_once(emu):
    events = utterances([1500, 900])
    run = LinkRun(emu).start()
    run.feed(events)
    assert wait_until(
        lambda: len(emu.sessions) == 1 and len(emu.sessions[0].finalize_times) == 2, 10
    )
    run.stop()
    sessions = emu.sessions
    assert len(sessions) == 1
    s = sessions[0]
    forwarded = forwarded_pcm(events)
    assert bytes(s.audio) == forwarded
    assert run.sink.finals == expected_words(forwarded)
    assert s.end_received and s.finished_sent
    assert run.state() == "stopped"
    assert ("Authorization", "Bearer test-key") in [(k, v) for k, v in s.headers]
    assert not s.origin_header
    assert s.config["model"] == "stt-rt-v5" and s.config["audio_format"] == "pcm_s16le"
    assert run.link.attempts == 1 and run.link.failures == 0


def test_on_demand_connects_at_speech_and_closes_when_quiet(emu):
    run = LinkRun(emu, idle_close=1.0).start()
    time.sleep(0.4)
    assert emu.connections == 0, "connected with nothing to say"
    run.feed(utterances([600]))
    assert wait_until(lambda: len(emu.sessions) == 1 and emu.sessions[0].finished_sent, 5)
    assert wait_until(lambda: run.state() == "idle", 3)
    run.feed(utterances([600], seed=9))
    assert wait_until(lambda: len(emu.sessions) == 2, 5)
    run.stop()
    assert emu.sessions[0].end_received, "the idle session was not ended gracefully"


def test_warm_link_keeps_the_session_alive_with_keepalives(tmp_path):
    with SonioxEmulator(tmp_path, idle_timeout=1.0) as emu:
        run = LinkRun(emu, connect="warm", soniox={"keepalive": 0.3}).start()
        assert wait_until(lambda: len(emu.sessions) == 1, 5)
        time.sleep(2.5)  # 2.5 idle-timeouts without a word
        s = emu.sessions[0]
        assert s.error_sent is None, "the emulator timed the session out"
        gaps = [b - a for a, b in zip(s.keepalive_times, s.keepalive_times[1:], strict=False)]
        assert len(s.keepalive_times) >= 5
        assert max(gaps) < 1.0
        run.stop()
        assert len(emu.sessions) == 1


def test_shutdown_mid_utterance_still_delivers_the_last_words(emu):
    events = utterances([2000])
    events = events[:-1]  # the utterance is still going on when the daemon stops
    run = LinkRun(emu).start()
    run.feed(events)
    assert wait_until(lambda: emu.sessions and len(emu.sessions[0].audio) >= 1000 * 32, 5)
    run.stop()
    forwarded = forwarded_pcm(events)
    assert bytes(emu.sessions[0].audio) == forwarded
    assert run.sink.finals == expected_words(forwarded)
    assert emu.sessions[0].end_received


@pytest.mark.slow
def test_a_refused_key_is_not_retried_in_a_loop(tmp_path):
    with SonioxEmulator(tmp_path, api_key="right") as emu:
        run = LinkRun(emu, key="wrong", retry_first=0.05, retry_max=0.2).start()
        run.feed(utterances([800]))
        assert wait_until(lambda: run.state() == "rejected", 5)
        time.sleep(3.0)  # a retry loop at these settings would try ~15 more times
        assert emu.connections == 1
        assert run.link.attempts == 1
        assert "unauthenticated" in run.detail() and "401" in run.detail()
        # the owner fixes the key and reloads: one new attempt, at once
        run.key = type(run.key)("test", "right")
        run.link.request_reload()
        assert wait_until(lambda: emu.connections == 2, 3)
        assert wait_until(lambda: emu.sessions[-1].finalize_times, 5)
        run.stop()
        assert run.sink.finals == expected_words(forwarded_pcm(utterances([800])))


@pytest.mark.slow
def test_a_refused_key_is_tried_once_a_minute_at_most_then_after_fatal_retry(tmp_path):
    """Over a minute of link time (a clock running 20× fast) with retries set to be
    hasty, a 401 causes exactly one attempt; once fatal_retry (60 s) has passed, one more."""
    with SonioxEmulator(tmp_path, api_key="right") as emu:
        run = LinkRun(
            emu,
            key="wrong",
            retry_first=0.05,
            retry_max=0.2,
            fatal_retry=60.0,
            dead_after=100.0,
            clock=fast_clock(20.0),
        ).start()
        run.feed(utterances([800]))
        assert wait_until(lambda: run.state() == "rejected", 5)
        time.sleep(2.5)  # 50 s of link time
        assert emu.connections == 1
        assert wait_until(lambda: emu.connections == 2, 2.0)  # at 60 s of link time
        time.sleep(0.5)
        assert emu.connections == 2
        run.stop()


@pytest.mark.parametrize("code", [402, 400])
def test_account_and_config_errors_are_fatal(emu, code):
    emu.plan(SessionPlan(error=code, error_after_ms=0))
    run = LinkRun(emu).start()
    run.feed(utterances([500]))
    assert wait_until(lambda: run.state() == "rejected", 5)
    time.sleep(1.0)
    assert emu.connections == 1
    run.stop()


def test_503_starts_a_new_session_at_once_and_loses_nothing(emu):
    emu.plan(SessionPlan(error=503, error_after_ms=600))
    events = utterances([2000])
    run = LinkRun(emu, retry_first=5.0, retry_max=10.0).start()  # a backoff would be long
    run.feed(events, realtime=4.0)
    assert wait_until(lambda: len(emu.sessions) == 2, 3), "no immediate new session"
    run.wait_fed()
    assert wait_until(lambda: len(emu.sessions[-1].finalize_times) == 1, 5)
    run.stop()
    forwarded = forwarded_pcm(events)
    assert coverage_gaps(forwarded, [bytes(s.audio) for s in emu.sessions]) == []
    assert run.sink.finals == expected_words(forwarded)


def test_429_backs_off_at_least_the_codecs_minimum(emu):
    emu.plan(SessionPlan(error=429, error_after_ms=0))
    run = LinkRun(emu, retry_first=0.05, retry_max=0.1)
    run.codec.slow_retry_min = 1.0
    run.start()
    run.feed(utterances([500]))
    assert wait_until(lambda: emu.connections == 1, 3)
    t_first = time.monotonic()
    assert wait_until(lambda: emu.connections == 2, 5)
    assert time.monotonic() - t_first >= 0.9
    run.stop()
    assert run.link.failures == 1


def test_a_malformed_message_is_counted_and_the_session_goes_on(emu):
    # the emulator speaks proper Soniox; a bad frame goes into the inbox the reader posts
    # to, and the link thread's parse refuses it
    from edgecap.link.connection import Message

    events = utterances([1000])
    run = LinkRun(emu).start()
    run.feed(events)
    assert wait_until(lambda: run.link.connected, 5)
    run.link._inbox.put(Message(run.link._conn.number, "not JSON"))  # type: ignore[union-attr]
    assert wait_until(lambda: run.link.bad_messages == 1, 3)
    run.stop()
    assert len(emu.sessions) == 1
    assert run.status.snapshot().counters["link_bad_messages"] == 1
    assert run.sink.finals == expected_words(forwarded_pcm(events))


def test_the_link_goes_through_an_http_proxy_and_tls_stays_end_to_end(emu):
    with ConnectProxy(allow={f"127.0.0.1:{emu.port}"}) as proxy:
        events = utterances([800])
        run = LinkRun(emu, proxy=proxy.url).start()
        run.feed(events)
        assert wait_until(lambda: emu.sessions and emu.sessions[0].finalize_times, 5)
        run.stop()
        assert proxy.targets == [f"127.0.0.1:{emu.port}"]
        assert run.sink.finals == expected_words(forwarded_pcm(events))


def test_a_proxy_that_refuses_the_tunnel_is_a_retried_failure(emu):
    with ConnectProxy(allow=set()) as proxy:
        run = LinkRun(emu, proxy=proxy.url, retry_first=0.1, retry_max=0.2).start()
        run.feed(utterances([400]))
        assert wait_until(lambda: run.link.failures >= 2, 5)
        assert run.state() == "retrying" and "connect_failed" in run.detail()
        assert emu.connections == 0
        run.stop()
