"""Sarvam end to end (issue 13, items 1, 2, 3, 5): the real LinkWorker and SarvamCodec
against the strict Sarvam emulator over TLS, directly or through the TCP fault proxy — the
same bar as the Soniox and Azure fault tests.

The emulator's recognition is a pure function of the audio (20 ms units from a session's
first byte), and every utterance here is whole 20 ms frames, so the words of the audio the
gate forwarded are known whatever segments it was cut into: the captions must be exactly
those words, once each, in order, written as the mode writes them. The emulator also holds
the link to its pace (``max_speed``): audio faster than the codec's replay speed allows is
a violation, and every test ends with none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from edgecap.captions.board import CaptionBoard
from edgecap.captions.events import CaptionEvent, CaptionLine
from edgecap.config.schema import SarvamConfig
from edgecap.link.worker import DROPPED_UNREACHABLE, PACE_BURST
from edgecap.runtime.frames import Frame
from edgecap.runtime.speech import GateEvent, SpeechAudio, SpeechEnd, SpeechStart
from edgecap.services.codec import Retry
from edgecap.services.sarvam import SarvamCodec
from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.sarvam import (
    LEGACY_PATH,
    V3_PATH,
    SarvamEmulator,
    SessionPlan,
    english_word,
    native_word,
    words_of,
)
from tests.emulators.soniox import noise_pcm, silence_pcm
from tests.link.harness import (
    FRAME,
    FRAME_BYTES,
    FallbackRun,
    LinkRun,
    coverage_gaps,
    forwarded_pcm,
    utterances,
    wait_until,
)

log = logging.getLogger(__name__)

SPEED = 4.0  # the codec's replay speed in most tests …
MAX_SPEED = 4.5  # … and what the emulator lets through (a burst of 1.5 s besides)


class TimedSarvamEmulator(SarvamEmulator):
    """The strict emulator, also recording when each upgrade request came (monotonic,
    refused ones included): retry timing is read from the service's side."""

    def __init__(self, tmp_dir: str | Path, **options: Any) -> None:
        self._upgrades: list[float] = []  # set before the server starts: handlers read it
        self._upgrades_lock = threading.Lock()
        options.setdefault("api_key", "test-key")
        options.setdefault("max_speed", MAX_SPEED)
        super().__init__(tmp_dir, **options)

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        with self._upgrades_lock:
            self._upgrades.append(time.monotonic())
        return super()._process_request(conn, request)

    @property
    def upgrades(self) -> list[float]:
        with self._upgrades_lock:
            return list(self._upgrades)


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[TimedSarvamEmulator]:
    with TimedSarvamEmulator(tmp_path) as emulator:
        yield emulator


@pytest.fixture
def proxy(emu: TimedSarvamEmulator) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", emu.port)) as px:
        yield px


def url_at(port: int, path: str = V3_PATH) -> str:
    return f"wss://127.0.0.1:{port}{path}"


def sarvam_codec(
    port: int,
    *,
    path: str = V3_PATH,
    replay_speed: float = SPEED,
    flush_after: float = 5.0,
    **changes: Any,
) -> SarvamCodec:
    """A SarvamCodec for the emulator (or the proxy) at ``port``; ``changes`` to [sarvam]."""
    cfg = replace(SarvamConfig(url=url_at(port, path), language="hi-IN"), **changes)
    return SarvamCodec(cfg, replay_speed=replay_speed, flush_after=flush_after)


def sarvam_run(
    emu: SarvamEmulator, port: int | None = None, *, codec: SarvamCodec | None = None, **kw: Any
) -> LinkRun:
    """A LinkRun speaking Sarvam to ``port`` (the emulator's by default), not started."""
    return LinkRun(emu, codec=codec or sarvam_codec(port or emu.port), **kw)


# -- what the records say ----------------------------------------------------------------


def captioned(run: LinkRun) -> list[str]:
    """The spoken words the link delivered, in order (a segment is one token)."""
    with run.sink.lock:
        return " ".join(run.sink.finals).split()


def hindi(pcm: bytes) -> list[str]:
    return [native_word(w, "hi-IN") for w in words_of(pcm)]


def received(emu: SarvamEmulator) -> list[bytes]:
    with emu._cond:
        return [bytes(s.audio) for s in emu.sessions]


def transcribed(emu: SarvamEmulator) -> list[bytes]:
    """The audio of every transcript the service sent, in order."""
    with emu._cond:
        return [seg.audio for s in emu.sessions for seg in s.segments]


def violations(emu: SarvamEmulator, first: int = 0) -> list[str]:
    """What the client did wrong, in the sessions from ``first`` on."""
    with emu._cond:
        return [v for s in emu.sessions[first:] for v in s.violations]


def delivered(run: LinkRun, emu: SarvamEmulator, forwarded: bytes) -> bool:
    """Every forwarded word was captioned and the link holds nothing unconfirmed."""
    return len(captioned(run)) >= len(words_of(forwarded)) and run.link.buffer.empty


def assert_whole_and_once(
    run: LinkRun, emu: SarvamEmulator, forwarded: bytes, *, checked_from: int = 0
) -> None:
    """Nothing lost or doubled: every byte reached the service, the captions are the words
    of the forwarded audio once each and in order, the strict peer saw nothing wrong (in
    the sessions from ``checked_from`` on), and no loss was reported."""
    assert coverage_gaps(forwarded, received(emu)) == [], "speech never reached the service"
    expected = hindi(forwarded)
    assert len(expected) >= 8  # the comparison below means something
    assert captioned(run) == expected, "captions missing, doubled or out of order"
    assert violations(emu, checked_from) == []
    assert run.sink.losses == []


def record_delays(run: LinkRun) -> list[float]:
    delays: list[float] = []
    draw = run.link.backoff.next_delay

    def recorded() -> float:
        delays.append(draw())
        return delays[-1]

    run.link.backoff.next_delay = recorded  # type: ignore[method-assign]
    return delays


def utterance(n: int, pieces: list[bytes], start: int = 16_000) -> list[GateEvent]:
    """One gate utterance whose audio is ``pieces`` back to back (whole frames)."""
    pcm = b"".join(pieces)
    events: list[GateEvent] = [SpeechStart(n, start, start, 0.0)]
    sample = start
    for k in range(len(pcm) // FRAME_BYTES):
        events.append(
            SpeechAudio(n, Frame(pcm[k * FRAME_BYTES : (k + 1) * FRAME_BYTES], sample, 0.0))
        )
        sample += FRAME
    events.append(SpeechEnd(n, sample, "silence", 0.0))
    return events


# -- 1. captions, translations, the flush ------------------------------------------------------


def test_captions_arrive_in_devanagari_one_flush_per_utterance(emu):
    events = utterances([1500, 1200], gap_ms=600)
    forwarded = forwarded_pcm(events)
    run = sarvam_run(emu).start()
    run.feed(events)
    assert wait_until(run.settled, 10)
    run.stop()
    (session,) = emu.sessions
    assert session.query["language-code"] == "hi-IN" and session.query["mode"] == "transcribe"
    assert session.flushes() == 2
    assert [seg.by for seg in session.segments] == ["flush", "flush"]
    assert [seg.audio for seg in session.segments] == [
        forwarded[: 1500 * 32],
        forwarded[1500 * 32 :],
    ]
    assert_whole_and_once(run, emu, forwarded)
    assert all("\u0900" <= c <= "\u097f" for w in captioned(run) for c in w)
    assert run.link.failures == 0


def test_the_flush_brings_the_last_words_at_once(emu):
    """Speech to its very end, no trailing silence: the service's VAD would wait for
    silence that never comes; the flush ends the segment as the utterance ends."""
    events = utterances([1200])
    forwarded = forwarded_pcm(events)
    run = sarvam_run(emu).start()
    run.feed(events, realtime=1.0)
    run.wait_fed()
    fed = time.monotonic()
    assert wait_until(lambda: captioned(run) == hindi(forwarded), 5)
    took = time.monotonic() - fed
    run.stop()
    (session,) = emu.sessions
    kinds = [kind for _, kind in session.messages]
    assert kinds[-1] == "flush" and set(kinds[:-1]) == {"audio"}  # right after the last audio
    assert [seg.by for seg in session.segments] == ["flush"]
    assert took < 0.5
    log.info("figure: last words captioned after the utterance ended (s) = %.3f", took)


def test_translate_mode_fills_the_lines_translations_in_english(emu):
    """mode = translate: the lines carry no transcript, their English translation, and
    the language it was translated from (the detected one)."""
    lines: dict[int, CaptionLine] = {}

    def publish(event: CaptionEvent) -> None:
        if isinstance(event, CaptionLine):
            lines[event.seq] = event

    codec = sarvam_codec(emu.port, mode="translate", language="unknown")
    run = sarvam_run(emu, codec=codec)
    board = CaptionBoard(publish, targets=("en",), translation_only=True)
    run.link.sink = board  # the real caption model, as the daemon wires it
    events = utterances([1500, 1100], gap_ms=500, seed=20)
    run.start()
    run.feed(events)
    assert wait_until(lambda: run.link.buffer.empty and len(lines) == 2, 10)
    run.stop()
    assert emu.sessions[0].query["mode"] == "translate"
    spoken = [words_of(pcm) for pcm in _by_utterance(events)]
    for line, words in zip(sorted(lines.values(), key=lambda x: x.seq), spoken, strict=True):
        assert line.text == "" and line.final
        assert line.translations == {"en": " ".join(english_word(w) for w in words)}
        segment = next(s for s in emu.sessions[0].segments if s.words == tuple(words))
        assert line.language == segment.language  # the language it was translated from
    assert violations(emu) == [] and run.link.failures == 0


def test_the_legacy_endpoint_with_its_prompt(emu):
    codec = sarvam_codec(
        emu.port,
        path=LEGACY_PATH,
        model="saaras:v2.5",
        mode="translate",
        language="unknown",
        prompt="council meeting",
    )
    events = utterances([1400], seed=21)
    run = sarvam_run(emu, codec=codec).start()
    run.feed(events)
    assert wait_until(run.settled, 10)
    run.stop()
    (session,) = emu.sessions
    assert session.endpoint == "legacy" and session.prompts == ["council meeting"]
    words = words_of(forwarded_pcm(events))
    assert run.sink.translated["en"] == [" ".join(english_word(w) for w in words)]
    assert run.sink.finals == [] and violations(emu) == []


def test_a_long_utterance_is_flushed_before_the_link_would_call_it_dead(emu):
    """Twice dead_after of talk without a pause the gate ends, live: the service says
    nothing between START_SPEECH and the end of a segment, so the codec flushes on the way
    (flush_after, half of dead_after) — no connection is taken for dead, every word
    arrives once."""
    events = utterances([1600], seed=22)
    forwarded = forwarded_pcm(events)
    run = sarvam_run(emu, codec=sarvam_codec(emu.port, flush_after=0.4), dead_after=0.8)
    run.start()
    run.feed(events, realtime=1.0)
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    (session,) = emu.sessions
    assert run.link.dead_detected == 0 and run.link.failures == 0
    assert session.flushes() >= 3  # inside the utterance, and its end
    assert_whole_and_once(run, emu, forwarded)


@pytest.mark.slow
def test_without_the_flush_inside_it_a_long_utterance_looks_dead(emu):
    """Why the codec flushes inside a long utterance: without it the quiet service is
    taken for dead in the middle of it (the replay still saves every word)."""
    events = utterances([2500], seed=22)
    forwarded = forwarded_pcm(events)
    run = sarvam_run(emu, codec=sarvam_codec(emu.port, flush_after=1e9), dead_after=1.0)
    run.start()
    run.feed(events, realtime=1.0)
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    assert run.link.dead_detected >= 1 and run.link.buffer.replayed_samples > 0
    assert_whole_and_once(run, emu, forwarded)


# -- 2. idle: keepalive, the service's close, ours --------------------------------------------


def test_warm_silence_keepalives_keep_the_connection_past_the_idle_limit(tmp_path):
    # the limit longer than the codec's finish_grace (no keepalive while a session ends)
    with TimedSarvamEmulator(tmp_path, idle_timeout=0.6) as emu:
        codec = sarvam_codec(emu.port)
        codec.keepalive_interval = 0.2  # the config's floor is 1 s; the limit here 0.6 s
        run = sarvam_run(emu, codec=codec, connect="warm").start()
        assert emu.wait_for(lambda: bool(emu.sessions), 5)
        time.sleep(1.3)  # more than twice the idle limit
        events = utterances([1200], seed=23)
        run.feed(events)
        assert wait_until(run.settled, 5)
        run.stop()
        assert emu.wait_for(lambda: emu.sessions[0].done, 2)
        (session,) = emu.sessions
        assert session.limit is None and session.client_close_code == 1000
        assert session.audio_ms >= 1200 + 5 * 100  # the utterance and the silences
        assert len(session.segments) == 1  # silence ends no segment and asks for nothing
        assert captioned(run) == hindi(forwarded_pcm(events))
        assert violations(emu) == [] and run.link.failures == 0


def test_warm_without_keepalive_the_services_idle_close_is_answered_at_once(tmp_path):
    with TimedSarvamEmulator(tmp_path, idle_timeout=0.5) as emu:
        codec = sarvam_codec(emu.port)
        codec.keepalive_interval = None
        run = sarvam_run(emu, codec=codec, connect="warm")
        delays = record_delays(run)
        run.start()
        assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].done, 5)
        t0 = time.monotonic()
        assert emu.wait_for(lambda: len(emu.sessions) >= 2, 5)
        recover = time.monotonic() - t0
        assert delays == []  # Retry.ONCE: at once, no backoff drawn
        assert run.link._last_error.retry is Retry.ONCE  # type: ignore[union-attr]
        run.stop()
        first = emu.sessions[0]
        assert (first.limit, first.close_code) == ("idle", 1000)
        assert recover < 0.5


def test_on_demand_closes_a_quiet_connection_itself(emu):
    run = sarvam_run(emu, idle_close=0.4).start()
    first, second = utterances([800], seed=24), utterances([700], seed=25)
    run.feed(first)
    assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].done, 5)
    assert wait_until(lambda: run.state() == "idle", 2)
    s1 = emu.sessions[0]
    assert s1.client_close_code == 1000 and s1.close_code is None and s1.limit is None
    run.feed(second)
    assert wait_until(lambda: len(emu.sessions) == 2 and run.settled(), 5)
    run.stop()
    assert captioned(run) == hindi(forwarded_pcm(first)) + hindi(forwarded_pcm(second))
    assert run.link.failures == 0 and violations(emu) == []


def test_a_graceful_stop_without_finished_is_a_clean_end(emu):
    """Sarvam never says it is done: the stop waits for the flush's answer and a short
    quiet, then closes with 1000 — no failure, no replay, no loss, well before
    finish_timeout."""
    events = utterances([1500], seed=26)
    run = sarvam_run(emu, finish_timeout=5.0).start()
    run.feed(events)
    assert wait_until(lambda: len(emu.sessions) == 1 and emu.sessions[0].flushes() == 1, 5)
    started = time.monotonic()
    run.stop(timeout=5.0)
    took = time.monotonic() - started
    assert emu.wait_for(lambda: emu.sessions[0].done, 2)
    (session,) = emu.sessions
    assert session.client_close_code == 1000 and not session.lost
    assert run.link.failures == 0 and run.link.buffer.replayed_samples == 0
    assert run.sink.losses == [] and run.state() == "stopped"
    assert captioned(run) == hindi(forwarded_pcm(events))
    assert took < 2.0  # the grace, not the 5 s finish_timeout
    log.info("figure: graceful stop took (s) = %.3f", took)


def test_the_session_is_renewed_at_a_pause(emu):
    events = utterances([800, 800, 800, 800], gap_ms=600, seed=27)
    forwarded = forwarded_pcm(events)
    codec = sarvam_codec(emu.port)
    codec.session_max = 0.6
    run = sarvam_run(emu, codec=codec).start()
    run.feed(events, realtime=4.0)
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded) and len(emu.sessions) >= 2, 8)
    run.stop()
    assert emu.wait_for(lambda: all(s.done for s in emu.sessions), 2)
    for s in emu.sessions:
        assert s.client_close_code == 1000 and s.close_code is None  # ended by us, gracefully
    assert run.link.failures == 0 and run.link.buffer.replayed_samples == 0
    assert_whole_and_once(run, emu, forwarded)


def test_a_cut_while_a_renewal_waits_for_its_flush_answer_replays_the_turn(emu, proxy):
    """The link renews the session at a pause and waits for the last flush's answer; the
    connection is cut before it comes. A close is the end a graceful finish waits for only
    once every turn end was answered: this one was not, so the turn's audio was never
    confirmed — it is replayed on the next session, not taken as heard."""
    events = utterances([1500], seed=35)
    forwarded = forwarded_pcm(events)
    emu.plan(SessionPlan(silent_after_ms=0))  # the first session hears all, answers nothing
    codec = sarvam_codec(proxy.port)
    codec.session_max = 0.3
    run = sarvam_run(emu, codec=codec, finish_timeout=5.0).start()
    run.feed(events, realtime=SPEED)
    assert wait_until(lambda: run.state() == "finishing", 5)
    flushed = lambda: any("flush" in str(text) for _, _, text in emu.sessions[0].frames)  # noqa: E731
    assert emu.wait_for(flushed, 2)  # (a silent session records frames, not messages)
    proxy.cut()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    first, second, *_ = emu.sessions
    assert first.segments == [] and len(second.audio) >= len(forwarded)
    assert run.link.failures == 1 and run.link.buffer.replayed_samples > 0
    assert_whole_and_once(run, emu, forwarded, checked_from=1)


# -- 3. cuts and dead connections --------------------------------------------------------------


@pytest.mark.parametrize("fault", ["proxy_cut", "service_reset"])
def test_a_cut_mid_utterance_loses_and_doubles_nothing(emu, proxy, fault):
    events = utterances([3000, 1000], seed=28)
    forwarded = forwarded_pcm(events)
    if fault == "service_reset":
        emu.plan(SessionPlan(drop_after_ms=800))
    run = sarvam_run(emu, proxy.port).start()
    run.feed(events, realtime=SPEED)
    assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].audio_ms >= 800, 5)
    if fault == "proxy_cut":
        proxy.cut()
    assert emu.wait_for(lambda: len(emu.sessions) >= 2, 5)
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    first = emu.sessions[0]
    assert first.lost or first.fault == "drop"
    assert first.segments == []  # cut before anything was answered: all of it again
    assert run.link.buffer.replayed_samples > 0 and run.link.failures >= 1
    assert_whole_and_once(run, emu, forwarded)


def test_a_segment_the_service_ended_is_not_captioned_again_after_a_cut(emu, proxy):
    """The service's VAD ends a segment inside an utterance (a second of silence in it);
    a cut then: the codec had confirmed up to the segment's end less the VAD's silence,
    so the new session starts there — the segment's words are not said twice."""
    first_words, second_words = noise_pcm(800, seed=29), noise_pcm(1400, seed=30)
    events = utterance(1, [first_words, silence_pcm(1200), second_words])
    forwarded = forwarded_pcm(events)
    run = sarvam_run(emu, proxy.port).start()
    run.feed(events, realtime=2.5)
    assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].segments, 5)
    assert wait_until(lambda: run.link.buffer.confirmed_samples > 0, 2)
    proxy.cut()
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    first, second, *_ = emu.sessions
    assert [seg.by for seg in first.segments] == ["vad"]
    assert first.segments[0].words == tuple(words_of(first_words))
    # the new session starts inside the silence: after the segment's words, not before
    again = forwarded.find(bytes(second.audio))
    assert len(first_words) <= again <= len(first_words) + len(silence_pcm(1200))
    assert run.link.buffer.replayed_samples > 0
    assert_whole_and_once(run, emu, forwarded)


def test_a_stalled_connection_is_noticed_and_replaced(emu, proxy):
    events = utterances([3000], seed=31)
    forwarded = forwarded_pcm(events)
    run = sarvam_run(emu, proxy.port, dead_after=1.0).start()
    run.feed(events, realtime=SPEED)
    assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].audio_ms >= 500, 5)
    proxy.stall()
    t0 = time.monotonic()
    assert wait_until(lambda: run.link.dead_detected == 1, 5)
    assert time.monotonic() - t0 <= 1.5
    proxy.resume()
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    # What the network held back reaches the abandoned session at once when it resumes:
    # faster than real time, which the strict peer may call out there; not elsewhere.
    assert set(violations(emu)) <= {f"audio sent faster than {MAX_SPEED:g}x real time"}
    assert_whole_and_once(run, emu, forwarded, checked_from=1)


def test_a_service_that_hangs_but_answers_pings_is_replaced(emu):
    emu.plan(SessionPlan(silent_after_ms=400))
    events = utterances([2000], seed=32)
    forwarded = forwarded_pcm(events)
    run = sarvam_run(emu, dead_after=1.0).start()
    run.feed(events, realtime=SPEED)
    assert wait_until(lambda: run.link.dead_detected == 1, 5)
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    assert "no answer" in run.link._last_error.message  # type: ignore[union-attr]
    assert_whole_and_once(run, emu, forwarded)


@pytest.mark.parametrize(("code", "retry"), [(1011, Retry.BACKOFF), (1013, Retry.SLOW)])
def test_a_close_code_is_retried_and_recovers(emu, code, retry):
    emu.plan(SessionPlan(close_after_ms=600, close_code=code, close_reason="planned"))
    events = utterances([2000, 800], gap_ms=400, seed=33)
    forwarded = forwarded_pcm(events)
    codec = sarvam_codec(emu.port)
    codec.slow_retry_min = 0.3
    run = sarvam_run(emu, codec=codec).start()
    run.feed(events, realtime=SPEED)
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    assert emu.sessions[0].fault == "close"
    error = run.link._last_error
    assert error is not None and (error.code, error.retry) == (code, retry)
    assert run.link.failures == 1
    assert_whole_and_once(run, emu, forwarded)


@pytest.mark.slow
def test_refused_for_a_while_then_everything_arrives_on_one_session(emu, proxy):
    events = utterances([1500, 1500], gap_ms=800, seed=43)
    forwarded = forwarded_pcm(events)
    run = sarvam_run(emu, proxy.port, retry_first=0.2, retry_max=0.8)
    delays = record_delays(run)
    proxy.refuse(2.5)
    run.start()
    run.feed(events, realtime=1.0)
    assert wait_until(lambda: run.state() == "retrying", 3)
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    refused = proxy.refused_at
    assert len(refused) >= 2
    for i, delay in enumerate(delays[: len(refused)]):  # full jitter under a doubling ceiling
        assert 0.0 <= delay <= min(0.8, 0.2 * 2**i) + 1e-9, (i, delay)
    assert len(emu.sessions) == 1  # one session carried the replay and the live speech
    assert_whole_and_once(run, emu, forwarded)


@pytest.mark.slow
def test_a_slow_link_still_delivers_everything(emu, proxy):
    """150 ms each way and a line 1.5x the base64 audio's rate (32 kB/s of PCM is about
    44 kB/s as Sarvam messages)."""
    proxy.delay(0.15)
    proxy.throttle(66_000)
    events = utterances([1500, 1500], seed=44)
    forwarded = forwarded_pcm(events)
    run = sarvam_run(emu, proxy.port, dead_after=3.0).start()
    run.feed(events, realtime=1.0)
    run.wait_fed()
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    assert len(emu.sessions) == 1 and run.link.failures == 0
    assert_whole_and_once(run, emu, forwarded)


# -- 4. refusals: the key, the quota, the rate limit --------------------------------------------


def test_a_refused_key_is_fatal_after_one_attempt(tmp_path):
    with TimedSarvamEmulator(tmp_path, api_key="right-key") as emu:
        run = sarvam_run(emu, key="wrong-key", retry_first=0.05, retry_max=0.2).start()
        run.feed(utterances([600], seed=34))
        assert wait_until(lambda: run.state() == "rejected", 5)
        time.sleep(1.0)  # a retry loop at these settings would try many times more
        assert emu.connections == 1 and emu.sessions == [] and len(emu.upgrades) == 1
        assert run.link.attempts == 1 and run.link.failures == 1
        assert "forbidden 403" in run.detail() and "check the key" in run.detail()
        run.stop()
        assert "wrong-key" not in run.detail()


def test_quota_exhausted_is_fatal_until_a_reload(emu):
    emu.plan(SessionPlan(error="insufficient_quota_error"))
    events = utterances([800], seed=35)
    run = sarvam_run(emu, retry_first=0.05, retry_max=0.2).start()
    run.feed(events)
    assert wait_until(lambda: run.state() == "rejected", 5)
    time.sleep(1.0)
    assert len(emu.upgrades) == 1  # never hammered
    assert "insufficient_quota_error" in run.detail() and "add credits" in run.detail()
    run.link.request_reload()  # credits were added: the owner reloads
    assert wait_until(lambda: run.settled(), 5)
    run.stop()
    assert len(emu.sessions) == 2
    assert captioned(run) == hindi(forwarded_pcm(events))


@pytest.mark.parametrize("where", ["upgrade", "in_band"])
def test_a_rate_limit_waits_slow_retry_min(emu, where):
    if where == "upgrade":
        emu.plan(SessionPlan(refuse=429))
    else:
        emu.plan(SessionPlan(error="rate_limit_exceeded_error"))
    codec = sarvam_codec(emu.port)
    codec.slow_retry_min = 0.8
    events = utterances([1500], seed=36)
    forwarded = forwarded_pcm(events)
    run = sarvam_run(emu, codec=codec, retry_first=0.05, retry_max=0.1).start()
    run.feed(events)
    assert wait_until(lambda: run.state() == "retrying", 3)
    assert wait_until(lambda: delivered(run, emu, forwarded), 10)
    run.stop()
    first, second = emu.upgrades[:2]
    assert second - first >= 0.8 - 0.02  # not the 0.1 s the backoff alone allows
    assert len(emu.upgrades) == 2
    assert_whole_and_once(run, emu, forwarded)


# -- 5. pace, buffer, TLS -----------------------------------------------------------------


def test_replay_is_paced_within_what_the_service_takes(tmp_path):
    """3 s of speech held while the service was unreachable go at 1.5x real time: the
    emulator refuses audio faster than 1.6x beyond its burst, and refuses none of it."""
    with (
        TimedSarvamEmulator(tmp_path, max_speed=1.6, burst=1.5) as emu,
        FaultProxy(("127.0.0.1", emu.port)) as proxy,
    ):
        run = sarvam_run(emu, proxy.port, codec=sarvam_codec(proxy.port, replay_speed=1.5))
        proxy.refuse(30.0)
        run.start()
        events = utterances([3000], seed=37)
        run.feed(events)
        time.sleep(0.3)
        proxy.refuse(0)
        assert wait_until(lambda: run.settled(), 10)
        run.stop()
        session = emu.sessions[0]
        audio = [t for t, kind in session.messages if kind == "audio"]
        assert audio[-1] - audio[0] >= (3.0 - PACE_BURST) / 1.5 - 0.1
        assert violations(emu) == []
        assert captioned(run) == hindi(forwarded_pcm(events))


def test_over_the_buffer_the_oldest_speech_is_dropped_and_reported_exactly(emu, proxy):
    events = utterances([3000], seed=38)
    run = sarvam_run(emu, proxy.port, buffer=1.0, retry_first=0.2, retry_max=0.5)
    proxy.refuse(30.0)
    run.start()
    run.feed(events)
    assert wait_until(lambda: run.link.buffer.dropped.samples == 32_000, 3)
    assert run.sink.losses == []  # reported once the outage is over, as one stretch
    proxy.refuse(0)
    assert wait_until(lambda: emu.sessions and emu.sessions[0].flushes() == 1, 5)
    run.stop()
    ((seconds, start, end, reason),) = run.sink.losses
    assert seconds == pytest.approx(2.0) and reason == DROPPED_UNREACHABLE
    assert start == pytest.approx(1.0) and end == pytest.approx(3.0)
    assert b"".join(received(emu)) == forwarded_pcm(events)[-32_000:]  # the newest second
    assert captioned(run) == hindi(forwarded_pcm(events)[-32_000:])


def test_an_untrusted_certificate_is_never_accepted(tmp_path, emu):
    with SarvamEmulator(tmp_path / "other") as other:
        run = sarvam_run(emu, ca_file=other.ca_file).start()  # trusts the wrong CA
        run.feed(utterances([400]))
        assert wait_until(lambda: run.link.failures >= 1, 5)
        assert "tls_untrusted" in run.detail()
        assert emu.connections == 0
        run.stop()


# -- 6. notices and the open point on empty flushes ------------------------------------------


def _silent_utterance() -> list[GateEvent]:
    """What the gate took for speech and the service hears as silence."""
    return utterance(1, [silence_pcm(1000)])


def test_speech_that_gives_no_words_is_a_status_notice(emu):
    run = sarvam_run(emu).start()
    run.feed(_silent_utterance())
    assert wait_until(lambda: run.link.notices == 1, 5)
    snap = run.status.snapshot()
    assert snap.state_of("notice") == "no_match"
    assert "nothing was recognised" in snap.fresh_notice()
    run.stop()
    assert run.sink.finals == [] and run.link.failures == 0


@pytest.mark.xfail(
    strict=True,
    reason="open point (PROTOCOLS.md §6): if Sarvam leaves a flush with nothing to "
    "transcribe unanswered, the link waits for the turn end's answer until finish_timeout "
    "and counts a failure; the codec contract has no turn end that may go unanswered",
)
def test_a_flush_the_service_leaves_unanswered_still_ends_cleanly(tmp_path):
    with TimedSarvamEmulator(tmp_path, empty_flush="silent") as emu:
        run = sarvam_run(emu, finish_timeout=1.0).start()
        run.feed(_silent_utterance())
        assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].flushes() == 1, 5)
        run.stop()
        assert run.link.failures == 0


# -- 7. the offline engine while Sarvam is gone --------------------------------------------


def _by_utterance(events: list[GateEvent]) -> list[bytes]:
    out: dict[int, bytes] = {}
    for e in events:
        if isinstance(e, SpeechAudio):
            out[e.utterance] = out.get(e.utterance, b"") + e.frame.pcm
    return [out[k] for k in sorted(out)]


def _utt(e: GateEvent) -> int:
    return e.utterance


def fallback_run(emu: SarvamEmulator, proxy: FaultProxy, after: float, **kw: Any) -> FallbackRun:
    return FallbackRun(emu, proxy, after=after, codec=sarvam_codec(proxy.port), **kw)


@pytest.mark.slow
def test_outage_speech_goes_offline_and_sarvam_takes_over_again(emu, proxy):
    events = utterances([1500, 1200, 1400, 1300, 1100], gap_ms=700, seed=40)
    by_utt = dict(enumerate(_by_utterance(events), start=1))
    fr = fallback_run(emu, proxy, after=1.0, retry_first=0.2, retry_max=0.5).start()
    fr.run.feed([e for e in events if _utt(e) == 1])
    assert wait_until(lambda: fr.run.link.buffer.empty and len(emu.sessions) == 1, 10)
    proxy.refuse(1e6)
    proxy.cut()
    fr.run.feed([e for e in events if _utt(e) in (2, 3)], realtime=1.0)
    assert wait_until(lambda: fr.fallback.active, 5), fr.run.state()
    fr.run.wait_fed()
    assert wait_until(lambda: len(fr.recognizer.utterances) == 2, 10)
    assert fr.run.status.snapshot().state_of("fallback") == "offline"
    proxy.refuse(0)
    assert wait_until(lambda: not fr.fallback.active, 10)
    fr.run.feed([e for e in events if _utt(e) in (4, 5)], realtime=2.0)
    fr.run.wait_fed()
    assert wait_until(lambda: fr.run.link.buffer.empty and fr.run.link.connected, 10)
    fr.stop()
    assert fr.recognizer.utterances == [by_utt[2], by_utt[3]]
    cloud = by_utt[1] + by_utt[4] + by_utt[5]
    assert captioned(fr.run) == hindi(cloud)
    assert b"".join(received(emu)) == cloud  # the outage's speech never went to Sarvam
    assert fr.run.sink.losses == [] and violations(emu) == []
    assert fr.fallback.switches == 1 and fr.fallback.returns == 1


def test_cut_mid_utterance_the_unconfirmed_rest_goes_offline_nothing_twice(emu, proxy):
    """Sarvam confirms an utterance at its flush's answer: cut inside the second one, the
    first stays with Sarvam and the whole second (and third) go to the offline engine."""
    events = utterances([1000, 2000, 800], gap_ms=500, seed=41)
    forwarded = forwarded_pcm(events)
    by_utt = _by_utterance(events)
    fr = fallback_run(emu, proxy, after=0.5, retry_first=0.2, retry_max=0.5).start()
    fr.run.feed(events, realtime=3.0)
    assert emu.wait_for(
        lambda: (
            bool(emu.sessions)
            and emu.sessions[0].flushes() == 1
            and emu.sessions[0].audio_ms >= 1000 + 600
        ),
        10,
    )
    proxy.refuse(1e6)
    proxy.cut()
    assert wait_until(lambda: fr.fallback.active, 5)
    fr.run.wait_fed()
    assert wait_until(lambda: len(fr.recognizer.utterances) == 2, 10)
    fr.stop()
    offline = fr.recognizer.utterances
    confirmed = fr.run.link.buffer.confirmed_samples * 2
    assert forwarded[:confirmed] + b"".join(offline) == forwarded  # every byte once
    assert forwarded[:confirmed] == by_utt[0] and offline == by_utt[1:]
    assert captioned(fr.run) == hindi(by_utt[0])
    assert fr.run.sink.losses == []


def test_a_refused_key_falls_back_too(emu, proxy):
    events = utterances([1200, 1200], gap_ms=500, seed=42)
    fr = fallback_run(emu, proxy, after=0.5, key="wrong-key", retry_first=0.2, retry_max=0.5)
    fr.start()
    fr.run.feed(events, realtime=2.0)
    assert wait_until(lambda: fr.run.state() == "rejected", 5)
    assert wait_until(lambda: len(fr.recognizer.utterances) == 2, 10)
    fr.stop()
    assert b"".join(fr.recognizer.utterances) == forwarded_pcm(events)
    assert fr.run.sink.finals == []
    assert emu.connections == 1 and emu.sessions == []  # refused once, never hammered
