"""Azure Speech through the faults (issue 12, items 6 and 7): the real LinkWorker and
AzureCodec against the strict Azure emulator over TLS, directly or through the TCP fault
proxy — the same bar as the Soniox fault tests (test_link_faults.py, test_fallback.py).

Every test knows the words of the speech it forwards (the emulator's recognition is a pure
function of the audio) and checks the strongest thing the service's records allow: the
turns the service answered with ``turn.end`` are, in order, exactly the forwarded audio —
no byte lost, none made final twice — and the captions are its words, once each, in order.

The limits are short so the tests are fast: the codec's ``session_max`` (540 s in service)
is set on the instance, the emulator's ``connection_limit`` (600 s) and ``idle_timeout``
(180 s) on the emulator, and ``ROLLOVER_GRACE`` (30 s) is patched where a renewal in the
middle of an utterance is wanted. The policy under test (AzureCodec's docstring): no silence
keepalive; ``on_demand`` closes a quiet connection itself before the idle limit, renewal
before the connection limit at a pause (or ``ROLLOVER_GRACE`` later, mid-utterance), and a
``warm`` connection's idle close answered by a new connection at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgecap.link import worker
from edgecap.runtime.speech import SpeechEnd
from edgecap.services.codec import Retry
from tests.emulators.azure import SessionPlan
from tests.emulators.fault_proxy import FaultProxy
from tests.link.azure_rig import (
    TimedAzureEmulator,
    acknowledged,
    azure_codec,
    azure_run,
    base_url,
    by_utterance,
    captioned,
    finalized,
    finalized_bytes,
    received,
    session_ends,
    through,
    translated_line,
    use_line_sink,
    utterance_bounds,
    violations,
    words,
)
from tests.link.harness import (
    FallbackRun,
    LinkRun,
    coverage_gaps,
    fast_clock,
    forwarded_pcm,
    utterances,
    wait_until,
)

log = logging.getLogger(__name__)

TARGETS = ("de", "fr")


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[TimedAzureEmulator]:
    with TimedAzureEmulator(tmp_path, api_key="test-key") as emulator:
        yield emulator


@pytest.fixture
def proxy(emu: TimedAzureEmulator) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", emu.port)) as px:
        yield px


def direct(emu: TimedAzureEmulator) -> str:
    return base_url(emu.port)


def figure(what: str, value: object) -> None:
    """A figure worth reading in the run's log (``--log-cli-level=INFO``)."""
    log.info("figure: %s = %s", what, value)


def record_delays(run: LinkRun) -> list[float]:
    """The backoff waits the link draws from now on (a ONCE retry at once draws none)."""
    delays: list[float] = []
    draw = run.link.backoff.next_delay

    def recorded() -> float:
        delays.append(draw())
        return delays[-1]

    run.link.backoff.next_delay = recorded  # type: ignore[method-assign]
    return delays


def delivered(run: LinkRun, emu: TimedAzureEmulator, forwarded: bytes) -> bool:
    """The service made all the forwarded audio final and the link has it confirmed."""
    return finalized_bytes(emu) >= len(forwarded) and run.link.buffer.empty


def assert_whole_and_once(run: LinkRun, emu: TimedAzureEmulator, forwarded: bytes) -> None:
    """Nothing lost or doubled: the service made final exactly the forwarded audio, in
    order; every byte reached it; the captions are its words, once each, in order; the
    strict peer saw nothing wrong; no loss reported."""
    assert b"".join(finalized(emu)) == forwarded, "audio lost or made final twice"
    assert coverage_gaps(forwarded, received(emu)) == []
    expected = words(forwarded)
    assert len(expected) >= 10  # the comparison below means something
    assert captioned(run.sink) == expected, "captions missing, doubled or out of order"
    assert violations(emu) == []
    assert run.sink.losses == []
    figure("words captioned / expected", f"{len(captioned(run.sink))} / {len(expected)}")


def wait_first_close_and_next_session(emu: TimedAzureEmulator, timeout: float = 5.0) -> float:
    """Wait until the first session is over, then for the next one: seconds in between."""
    assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].done, timeout)
    t0 = time.monotonic()
    assert emu.wait_for(lambda: len(emu.sessions) >= 2, timeout)
    return time.monotonic() - t0


# -- 1. limits: renewal by the link, the service's own close, idle --------------------------


@pytest.mark.slow
def test_renewal_before_the_connection_limit_at_pauses_and_mid_utterance(emu, monkeypatch):
    """The link renews before the service's limit — at a pause, or ROLLOVER_GRACE past
    session_max inside an utterance longer than that — and every word is captioned once:
    the turn ended at the renewal was answered, the utterance goes on in a new turn."""
    monkeypatch.setattr(worker, "ROLLOVER_GRACE", 0.3)
    emu.connection_limit = 2.5  # a session lives at most ~0.9 s + its graceful end
    codec = azure_codec(direct(emu), session_max=0.6)
    events = utterances([600, 600, 600, 5000, 500], gap_ms=400)
    forwarded = forwarded_pcm(events)
    run = azure_run(emu, direct(emu), codec=codec).start()
    run.feed(events, realtime=2.5)  # the long one lasts 2 s: longer than a session may
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    assert emu.wait_for(lambda: all(s.done for s in emu.sessions), 3)

    assert_whole_and_once(run, emu, forwarded)
    assert received(emu) == finalized(emu)  # every turn was ended and answered: none cut
    sessions = emu.sessions
    assert len(sessions) >= 3
    for s in sessions:
        assert s.limit is None, "the service's limit came first"
        assert s.client_close_code == 1000 and not s.lost  # we ended it, gracefully
        assert all(t.telemetry is not None for t in s.turns)
    renewals = session_ends(emu)[:-1]
    bounds = utterance_bounds(events)
    assert any(end in bounds for end in renewals), "no renewal at a pause"
    assert any(end not in bounds for end in renewals), "no renewal inside an utterance"
    assert run.link.failures == 0
    assert run.link.buffer.replayed_samples == 0  # nothing had to be sent twice
    figure("rollover: sessions", len(sessions))


def test_the_services_limit_close_mid_utterance_is_replayed_in_a_new_turn(emu):
    """The service ends a connection first (its 10-minute limit, close 1000) in the middle
    of an utterance: a new connection at once, the utterance again in a new turn."""
    emu.connection_limit = 0.6
    events = utterances([4000, 800], gap_ms=1000)
    forwarded = forwarded_pcm(events)
    run = azure_run(emu, direct(emu))
    delays = record_delays(run)
    run.start()
    run.feed(events, realtime=4.0)  # the first utterance lasts 1 s: longer than a connection
    recover = wait_first_close_and_next_session(emu)
    assert delays == []  # Retry.ONCE: at once, no backoff
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()

    first, second = emu.sessions[:2]
    assert first.limit == "connection" and first.close_code == 1000
    assert first.turns and not first.turns[-1].turn_end_sent  # closed mid-utterance
    again = bytes(second.turns[0].audio)  # the utterance from its start, in a new turn
    assert again and by_utterance(events)[1].startswith(again)
    assert_whole_and_once(run, emu, forwarded)
    assert run.link.buffer.replayed_samples > 0
    assert run.link.failures >= 1
    assert recover < 0.5
    figure("service limit close: reconnected after (s)", f"{recover:.3f}")


def test_on_demand_closes_a_quiet_connection_before_the_idle_limit(emu):
    emu.idle_timeout = 1.5
    run = azure_run(emu, direct(emu), idle_close=0.6).start()
    first = utterances([800])
    run.feed(first)
    assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].done, 5), "no idle close"
    assert wait_until(lambda: run.state() == "idle", 2)
    s1 = emu.sessions[0]
    assert s1.client_close_code == 1000 and s1.close_code is None  # we closed, not it
    second = utterances([700], seed=7)
    run.feed(second)
    assert wait_until(lambda: acknowledged(emu) == 2 and run.link.buffer.empty, 5)
    run.stop()
    assert len(emu.sessions) == 2
    assert all(s.limit is None for s in emu.sessions)  # never the service's idle limit
    assert captioned(run.sink) == words(forwarded_pcm(first)) + words(forwarded_pcm(second))
    assert violations(emu) == []
    assert run.link.failures == 0 and run.sink.losses == []


def test_warm_the_services_idle_close_is_answered_by_a_new_connection_at_once(emu):
    emu.idle_timeout = 1.0
    run = azure_run(emu, direct(emu), connect="warm")
    delays = record_delays(run)
    run.start()
    recover = wait_first_close_and_next_session(emu)
    assert emu.sessions[0].limit == "idle" and emu.sessions[0].close_code == 1000
    assert run.link.failures == 1  # the close itself, nothing more
    assert delays == []  # Retry.ONCE: at once
    events = utterances([1200])
    run.feed(events)
    assert wait_until(lambda: acknowledged(emu) == 1 and run.link.buffer.empty, 5)
    run.stop()
    assert emu.sessions[1].turns  # the speech went to the new connection
    assert run.link.failures == 1
    assert captioned(run.sink) == words(forwarded_pcm(events))
    assert violations(emu) == [] and run.sink.losses == []
    assert recover < 0.5
    figure("warm idle close: reconnected after (s)", f"{recover:.3f}")


# A warm link's quiet periods, in the service's proportions, at FAST × real time: the idle
# limit 180 s, a session healthy after 30 s (HEALTHY_AFTER), fallback_after 10 s (default).
FAST = 600.0


def quiet_warm(emu: TimedAzureEmulator) -> dict[str, Any]:
    """The emulator's idle limit and the link's settings (LinkRun's) of a quiet warm link
    at FAST × real time."""
    emu.idle_timeout = 180.0 / FAST
    return dict(
        connect="warm",
        clock=fast_clock(FAST),
        dead_after=600.0,
        finish_timeout=600.0,
        retry_first=1.0,
        retry_max=10.0,
    )


def test_warm_every_idle_close_of_a_healthy_connection_is_answered_at_once(emu):
    """Minutes of silence on a warm link: the service's idle close every 180 s, each after
    a session that worked for longer than HEALTHY_AFTER, is not a repeated failure."""
    run = azure_run(emu, direct(emu), **quiet_warm(emu))
    delays = record_delays(run)
    run.start()
    assert emu.wait_for(lambda: sum(s.limit == "idle" for s in emu.sessions) >= 3, 5)
    run.stop()
    assert delays == []  # each came after a healthy session: each was the first in a row


def test_warm_idle_closes_in_a_long_silence_never_switch_to_the_offline_engine(emu, proxy):
    """fallback = local, fallback_after 10 s: nine minutes of silence (three idle closes)
    on a service that works must not send anything to the offline engine."""
    settings = quiet_warm(emu)
    fr = FallbackRun(emu, proxy, after=10.0, codec=azure_codec(through(proxy)), **settings)
    fr.start()
    assert emu.wait_for(lambda: sum(s.limit == "idle" for s in emu.sessions) >= 3, 5)
    fr.stop()
    assert fr.fallback.switches == 0
    assert fr.run.status.snapshot().state_of("fallback") != "offline"


# -- 2. cuts --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["proxy_cut", "service_reset"])
def test_a_cut_mid_utterance_is_replayed_nothing_lost_or_doubled(emu, proxy, fault):
    events = utterances([3000, 1000])
    forwarded = forwarded_pcm(events)
    if fault == "service_reset":
        emu.plan(SessionPlan(drop_after_ms=800))  # the service's side resets the TCP
    run = azure_run(emu, through(proxy)).start()
    run.feed(events, realtime=4.0)
    assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].audio_bytes >= 25_600, 5)
    t0 = time.monotonic()
    if fault == "proxy_cut":
        proxy.cut()
    assert emu.wait_for(lambda: len(emu.sessions) >= 2, 5)
    recover = time.monotonic() - t0
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    first = emu.sessions[0]
    assert first.lost or first.fault == "drop"
    assert not first.turns[-1].turn_end_sent  # cut inside the turn
    assert_whole_and_once(run, emu, forwarded)
    assert run.link.buffer.replayed_samples > 0
    assert run.link.failures >= 1
    figure(f"{fault}: reconnected after (s)", f"{recover:.3f}")


def test_a_stalled_connection_is_noticed_and_replaced(emu, proxy):
    events = utterances([4000])
    forwarded = forwarded_pcm(events)
    run = azure_run(emu, through(proxy), dead_after=1.0).start()
    run.feed(events, realtime=4.0)
    assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].audio_bytes >= 16_000, 5)
    proxy.stall()
    t0 = time.monotonic()
    assert wait_until(lambda: run.link.dead_detected == 1, 5)
    noticed = time.monotonic() - t0
    assert noticed <= 1.0 + 0.5
    proxy.resume()
    assert emu.wait_for(lambda: len(emu.sessions) >= 2, 5)
    recover = time.monotonic() - t0
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    assert_whole_and_once(run, emu, forwarded)
    assert "no answer" in run.link._last_error.message or "nothing received" in (  # type: ignore[union-attr]
        run.link._last_error.message  # type: ignore[union-attr]
    )
    figure("stall: noticed after (s)", f"{noticed:.3f}")
    figure("stall: new session after (s)", f"{recover:.3f}")


# -- 3. close codes and refusals --------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "our_bug"),
    [
        (1011, "server_error", False),
        (1007, "invalid_payload", True),
        (1002, "protocol_error", True),
    ],
)
def test_a_close_code_is_retried_with_backoff_and_recovers(emu, caplog, code, kind, our_bug):
    emu.plan(SessionPlan(close_after_ms=600, close_code=code, close_reason="planned"))
    events = utterances([2000, 800], gap_ms=400)
    forwarded = forwarded_pcm(events)
    run = azure_run(emu, direct(emu))
    delays = record_delays(run)
    caplog.set_level(logging.INFO)
    run.start()
    run.feed(events, realtime=4.0)
    recover = wait_first_close_and_next_session(emu)
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    first = emu.sessions[0]
    assert first.fault == "close" and first.close_code == code
    error = run.link._last_error
    assert error is not None and error.code == code and error.kind == kind
    assert error.retry is Retry.BACKOFF
    assert len(delays) == 1  # one backoff wait, then the new session worked
    assert recover >= delays[0] - 0.05
    bugs = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and "this is a bug" in r.getMessage()
    ]
    assert len(bugs) == (1 if our_bug else 0)
    if our_bug:
        assert str(code) in bugs[0].getMessage()
    assert_whole_and_once(run, emu, forwarded)
    assert run.link.failures == 1
    figure(f"close {code}: reconnected after (s)", f"{recover:.3f}")


def test_recognition_status_error_replays_the_turn(emu):
    """A phrase of RecognitionStatus Error (then close 1000, as the service did): the turn
    was not recognised, so its audio is sent again on a new connection."""
    emu.plan(SessionPlan(status_error=True))
    events = utterances([1200, 900], gap_ms=400)
    forwarded = forwarded_pcm(events)
    run = azure_run(emu, direct(emu)).start()
    run.feed(events)
    assert wait_until(lambda: acknowledged(emu) >= 2 and run.link.buffer.empty, 10)
    run.stop()
    first = emu.sessions[0]
    assert first.fault == "status_error"
    assert not first.turns[0].turn_end_sent  # the failed turn never got its turn.end
    assert bytes(first.turns[0].audio) == by_utterance(events)[1]
    assert bytes(emu.sessions[1].turns[0].audio) == by_utterance(events)[1]  # sent again
    assert_whole_and_once(run, emu, forwarded)
    assert run.link._last_error.kind == "service_error"  # type: ignore[union-attr]
    assert violations(emu) == [] and run.sink.losses == []


@pytest.mark.parametrize("refusal", [401, 403])
def test_a_refused_key_is_fatal_after_one_attempt(tmp_path, refusal):
    with TimedAzureEmulator(tmp_path, api_key="right-key") as emu:
        key = "wrong-key" if refusal == 401 else "right-key"
        if refusal == 403:
            emu.plan(SessionPlan(refuse=403))  # a key the resource no longer takes (quota)
        run = azure_run(emu, direct(emu), key=key, retry_first=0.05, retry_max=0.2).start()
        run.feed(utterances([600]))
        assert wait_until(lambda: run.state() == "rejected", 5)
        time.sleep(1.5)  # a retry loop at these settings would try many times more
        assert emu.connections == 1 and emu.sessions == [] and len(emu.upgrades) == 1
        assert run.link.attempts == 1 and run.link.failures == 1
        slug = "unauthenticated" if refusal == 401 else "forbidden"
        assert f"{slug} {refusal}" in run.detail()
        assert run.state() == "rejected"
        run.stop()
        assert key not in run.detail()  # the key itself is never shown


def test_too_many_requests_waits_slow_retry_min(emu):
    emu.plan(SessionPlan(refuse=429))
    codec = azure_codec(direct(emu))
    codec.slow_retry_min = 0.8
    events = utterances([2000])
    forwarded = forwarded_pcm(events)
    run = azure_run(emu, direct(emu), codec=codec, retry_first=0.05, retry_max=0.1).start()
    run.feed(events)
    assert wait_until(lambda: run.state() == "retrying", 3)
    assert "too_many_requests 429" in run.detail()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    first, second = emu.upgrades[:2]
    assert second - first >= 0.8 - 0.02  # not the 0.1 s the backoff alone would allow
    assert len(emu.upgrades) == 2
    assert_whole_and_once(run, emu, forwarded)
    figure("429: retried after (s)", f"{second - first:.3f}")


# -- 4. the offline engine while Azure is gone (as test_fallback.py) --------------------------


def _utt(e) -> int:  # type: ignore[no-untyped-def]
    return e.utterance


def _end_index(events, n: int) -> int:  # type: ignore[no-untyped-def]
    return next(i for i, e in enumerate(events) if isinstance(e, SpeechEnd) and e.utterance == n)


def fallback_run(
    emu: TimedAzureEmulator, proxy: FaultProxy, after: float, **settings: Any
) -> FallbackRun:
    return FallbackRun(emu, proxy, after=after, codec=azure_codec(through(proxy)), **settings)


@pytest.mark.slow
def test_outage_speech_goes_offline_and_azure_takes_over_again(emu, proxy):
    events = utterances([1500, 1200, 1400, 1300, 1100], gap_ms=700)
    by_utt = by_utterance(events)
    fr = fallback_run(emu, proxy, after=1.0, retry_first=0.2, retry_max=0.5).start()
    # 1. Azure captions the first utterance
    fr.run.feed(events[: _end_index(events, 1) + 1])
    assert wait_until(lambda: fr.run.link.buffer.empty and acknowledged(emu) == 1, 10)
    # 2. the service goes away (connections cut and refused); speech goes on
    proxy.refuse(1e6)
    proxy.cut()
    t_down = time.monotonic()
    fr.run.feed([e for e in events if _utt(e) in (2, 3)], realtime=1.0)
    assert wait_until(lambda: fr.fallback.active, 5), fr.run.state()
    took_over = time.monotonic() - t_down
    fr.run.wait_fed()
    assert wait_until(lambda: len(fr.recognizer.utterances) == 2, 10)
    assert fr.run.status.snapshot().state_of("fallback") == "offline"
    assert wait_until(
        lambda: (
            "Offline captions (speech service unreachable)" in fr.run.status.snapshot().summary()
        ),
        5,
    ), fr.run.status.snapshot().summary()
    # 3. the service is back: the next utterance goes to it
    proxy.refuse(0)
    t_back = time.monotonic()
    assert wait_until(lambda: not fr.fallback.active, 10)
    returned = time.monotonic() - t_back
    fr.run.feed([e for e in events if _utt(e) in (4, 5)], realtime=2.0)
    fr.run.wait_fed()
    assert wait_until(lambda: fr.run.link.buffer.empty and acknowledged(emu) == 3, 10)
    fr.stop()

    assert fr.recognizer.utterances == [by_utt[2], by_utt[3]]
    cloud = by_utt[1] + by_utt[4] + by_utt[5]
    assert captioned(fr.run.sink) == words(cloud)
    assert b"".join(received(emu)) == cloud  # the outage's speech never went to Azure
    assert b"".join(finalized(emu)) == cloud
    assert fr.run.sink.losses == []
    assert fr.fallback.switches == 1 and fr.fallback.returns == 1
    assert fr.run.status.snapshot().state_of("fallback") == "standby"
    assert violations(emu) == []
    figure("fallback: offline engine took over after (s) (after = 1.0)", f"{took_over:.3f}")
    figure("fallback: back on Azure after the service returned (s)", f"{returned:.3f}")


@pytest.mark.slow
def test_cut_mid_utterance_the_unconfirmed_rest_goes_offline_nothing_twice(emu, proxy):
    """Azure confirms an utterance only at its phrase: cut inside the second one, the
    first stays with Azure and the whole second (and third) go to the offline engine."""
    events = utterances([1500, 3000, 1500], gap_ms=600)
    forwarded = forwarded_pcm(events)
    by_utt = by_utterance(events)
    fr = fallback_run(emu, proxy, after=0.8, retry_first=0.2, retry_max=0.5).start()
    fr.run.feed(events, realtime=2.0)
    assert emu.wait_for(
        lambda: (
            bool(emu.sessions)
            and len(emu.sessions[0].turns) == 2
            and len(emu.sessions[0].turns[1].audio) >= 32_000
        ),
        10,
    )
    proxy.refuse(1e6)
    proxy.cut()
    assert wait_until(lambda: fr.fallback.active, 5)
    fr.run.wait_fed()
    assert wait_until(lambda: len(fr.recognizer.utterances) == 2, 15)
    fr.stop()

    offline = fr.recognizer.utterances
    confirmed = fr.run.link.buffer.confirmed_samples * 2
    assert confirmed + sum(len(u) for u in offline) == len(forwarded)  # every byte once
    assert forwarded[:confirmed] + b"".join(offline) == forwarded
    assert forwarded[:confirmed] == by_utt[1]
    assert offline == [by_utt[2], by_utt[3]]
    assert captioned(fr.run.sink) == words(by_utt[1])
    assert fr.run.sink.losses == []


def test_refused_key_falls_back_too(emu, proxy):
    events = utterances([1200, 1200], gap_ms=500)
    fr = fallback_run(
        emu, proxy, after=0.5, key="wrong-key", retry_first=0.2, retry_max=0.5
    ).start()
    fr.run.feed(events, realtime=2.0)
    assert wait_until(lambda: fr.run.state() == "rejected", 5)
    assert wait_until(lambda: len(fr.recognizer.utterances) == 2, 10)
    fr.stop()
    assert b"".join(fr.recognizer.utterances) == forwarded_pcm(events)
    assert fr.run.sink.finals == []
    assert emu.connections == 1 and emu.sessions == []  # refused once, never hammered


# -- 5. translation through a cut --------------------------------------------------------------


def test_translation_into_two_languages_through_a_cut(emu, proxy):
    events = utterances([3000, 900, 700], gap_ms=400)
    forwarded = forwarded_pcm(events)
    codec = azure_codec(through(proxy), mode="translation", targets=TARGETS)
    run = azure_run(emu, through(proxy), codec=codec)
    sink = use_line_sink(run)
    run.start()
    run.feed(events, realtime=4.0)
    assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].audio_bytes >= 32_000, 5)
    proxy.cut()
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    assert len(emu.sessions) >= 2 and emu.sessions[0].lost
    assert all(s.mode == "translation" and s.query["to"] == list(TARGETS) for s in emu.sessions)
    assert_whole_and_once(run, emu, forwarded)
    assert len(sink.lines) == 3  # one final line per utterance, the cut one once
    for line in sink.lines:
        assert translated_line(line, TARGETS), line
    for lang in TARGETS:  # and every word's translation, in order, once
        got = " ".join(sink.translated[lang]).split()
        assert got == [f"{lang}_{w.removeprefix('w')}" for w in words(forwarded)]
