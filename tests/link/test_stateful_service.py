"""The Link against the fake stateful service (tests/emulators/stateful.py) over real TLS,
through the fault proxy: the proof that the codec contract v2 carries what Azure Speech and
Sarvam need — a turn per utterance with a fresh id, a reply the protocol requires after each
turn's end, two translations, spoken audio, and sessions that never say "finished"."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecap.captions.events import SynthesizedAudio
from edgecap.runtime.speech import GateEvent, SpeechAudio, SpeechEnd
from edgecap.services.codec import Parsed
from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.soniox import expected_words
from tests.emulators.stateful import SYNTH_FORMAT, StatefulEmulator, translation_of
from tests.link.harness import (
    FallbackRun,
    LinkRun,
    coverage_gaps,
    forwarded_pcm,
    proxied,
    utterances,
    wait_until,
)
from tests.link.stateful_codec import StatefulCodec

TARGETS = ("de", "fr")


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[StatefulEmulator]:
    with StatefulEmulator(tmp_path, api_key="test-key", lag_ms=300) as emulator:
        yield emulator


@pytest.fixture
def proxy(emu: StatefulEmulator) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", emu.port)) as px:
        yield px


def stateful_run(
    emu: StatefulEmulator, proxy: FaultProxy, codec: StatefulCodec | None = None, **settings
) -> LinkRun:
    codec = codec or StatefulCodec(proxied(emu, proxy), targets=TARGETS)
    return LinkRun(emu, codec=codec, **settings)


def all_turns_answered(emu: StatefulEmulator, turns: int) -> bool:
    ended = [t for s in emu.sessions for t in s.turns if t.telemetry is not None]
    return len(ended) >= turns


def assert_strict_peer_content(emu: StatefulEmulator) -> None:
    for s in emu.sessions:
        assert s.violations == [], s.violations


def by_utterance(events: list[GateEvent]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for e in events:
        if isinstance(e, SpeechAudio):
            out[e.utterance] = out.get(e.utterance, b"") + e.frame.pcm
    return out


def test_captions_arrive_with_both_translations_and_every_turn_is_acknowledged(emu, proxy):
    events = utterances([1500, 900, 1200])
    run = stateful_run(emu, proxy).start()
    run.feed(events)
    assert wait_until(lambda: all_turns_answered(emu, 3), 10)
    run.stop()
    forwarded = forwarded_pcm(events)
    words = expected_words(forwarded)
    assert len(words) >= 10  # the check below means something
    assert run.sink.finals == words
    for lang in TARGETS:  # every final word's translation, per language, in order
        assert "".join(run.sink.translated[lang]) == "".join(translation_of(w, lang) for w in words)
    assert run.sink.provisional_languages == set(TARGETS)  # partial translations too
    (s,) = emu.sessions
    assert bytes(s.audio) == forwarded
    # a turn per utterance, each with its own audio, each turn.end answered with telemetry
    per_utt = by_utterance(events)
    assert [bytes(t.audio) for t in s.turns] == [per_utt[n] for n in (1, 2, 3)]
    assert s.turn_ends() == s.acknowledged() == 3
    assert len({t.id for t in s.turns}) == 3
    assert_strict_peer_content(emu)
    assert run.link.failures == 0 and run.link.bad_messages == 0
    assert "link_unknown_events" not in run.status.snapshot().counters


def test_the_server_really_insists_on_the_reply(emu, proxy):
    """A codec that forgets the telemetry reply is thrown out by the server (the check
    the other tests rely on can fail)."""

    class Forgetful(StatefulCodec):
        def parse(self, message: str | bytes) -> Parsed:
            parsed = super().parse(message)
            return Parsed(events=parsed.events)  # the replies are dropped

    emu.telemetry_timeout = 0.5
    codec = Forgetful(proxied(emu, proxy), targets=TARGETS)
    run = stateful_run(emu, proxy, codec, retry_first=5.0, retry_max=5.0)
    run.start()
    run.feed(utterances([600]))
    assert wait_until(lambda: emu.sessions and emu.sessions[0].violations, 5)
    assert "no telemetry" in emu.sessions[0].violations[0]
    assert wait_until(lambda: run.link.failures == 1, 3)
    assert run.state() == "rejected"  # a protocol error is ours to fix: no retry loop
    run.stop()


def test_synthesized_audio_reaches_the_sink_in_order_with_its_end(emu, proxy):
    events = utterances([1200, 800])
    run = stateful_run(emu, proxy).start()
    run.feed(events)
    assert wait_until(lambda: all_turns_answered(emu, 2), 10)
    run.stop()
    (s,) = emu.sessions
    sent = [SynthesizedAudio(lang, SYNTH_FORMAT, data, end) for _, lang, data, end in s.synthesized]
    assert run.sink.audio == sent
    assert [a.end for a in run.sink.audio] == [False, False, False, True] * 2
    assert all(a.data for a in run.sink.audio if not a.end)
    assert_strict_peer_content(emu)


def test_an_idle_close_and_a_stop_are_successes(emu, proxy):
    """No "finished" ever comes: a graceful end is over when every turn was answered and
    the service went quiet — no failure, no loss, no replay, the fallback never called."""
    fr = FallbackRun(
        emu, proxy, after=0.3, idle_close=1.0, codec=StatefulCodec(proxied(emu, proxy))
    )
    fr.start()
    first = utterances([800])
    fr.run.feed(first)
    assert wait_until(lambda: emu.sessions and emu.sessions[0].done, 6), "no idle close"
    assert wait_until(lambda: fr.run.state() == "idle", 2)
    s1 = emu.sessions[0]
    assert s1.client_close_code == 1000  # we said goodbye: a clean close
    time.sleep(0.6)  # past the fallback's `after`: it would have taken over by now
    second = utterances([700], seed=7)
    fr.run.feed(second)
    assert wait_until(lambda: len(emu.sessions) == 2 and all_turns_answered(emu, 2), 6)
    t0 = time.monotonic()
    fr.stop()
    stop_took = time.monotonic() - t0
    s2 = emu.sessions[1]
    assert emu.wait_for(lambda: s2.done, 3)
    assert s2.client_close_code == 1000
    assert stop_took < fr.run.settings.finish_timeout  # not a timeout: a quiet service
    link = fr.run.link
    assert link.failures == 0
    assert "link_failures" not in fr.run.status.snapshot().counters
    assert fr.run.sink.losses == []
    assert link.buffer.replayed_samples == 0 and link.buffer.empty
    assert fr.fallback.switches == 0 and fr.recognizer.utterances == []
    assert fr.run.sink.finals == expected_words(forwarded_pcm(first)) + expected_words(
        forwarded_pcm(second)
    )
    assert_strict_peer_content(emu)


def test_a_cut_mid_utterance_is_replayed_in_new_turns_nothing_lost_or_doubled(emu, proxy):
    events = utterances([3000, 1000])
    run = stateful_run(emu, proxy).start()
    run.feed(events, realtime=2.0)
    assert wait_until(lambda: emu.sessions and emu.sessions[0].audio_ms >= 800, 5)
    proxy.cut()
    run.wait_fed()
    assert wait_until(lambda: len(emu.sessions) >= 2 and all_turns_answered(emu, 2), 10)
    run.stop()
    forwarded = forwarded_pcm(events)
    received = [bytes(s.audio) for s in emu.sessions]
    assert coverage_gaps(forwarded, received) == [], "speech never reached the service"
    assert run.sink.finals == expected_words(forwarded), "captions missing or doubled"
    # the service got again no more than what the link says it replayed
    again = sum(len(r) for r in received) - len(forwarded)
    assert 0 <= again <= run.link.buffer.replayed_samples * 2
    assert run.link.buffer.replayed_samples > 0
    # the utterance went on in a turn of its own, with a new id, on the new session
    first, *later = emu.sessions
    assert first.lost and not first.turns[-1].ended
    ids = [t.id for s in emu.sessions for t in s.turns]
    assert len(ids) == len(set(ids))
    assert later[0].turns[0].audio and later[0].turns[0].ended
    assert run.link.failures >= 1
    for s in later:
        assert s.violations == []


def test_a_refused_key_is_fatal(tmp_path):
    with StatefulEmulator(tmp_path, api_key="right") as emu:
        codec = StatefulCodec(emu.url)
        run = LinkRun(emu, codec=codec, key="wrong", retry_first=0.05, retry_max=0.2).start()
        run.feed(utterances([600]))
        assert wait_until(lambda: run.state() == "rejected", 5)
        time.sleep(1.5)  # a retry loop at these settings would try many times more
        assert emu.connections == 1 and emu.sessions == []
        assert "unauthenticated 401" in run.detail()
        run.stop()


@pytest.mark.slow
def test_the_offline_engine_takes_over_during_an_outage(emu, proxy):
    events = utterances([1200, 1000, 1100, 900], gap_ms=700)
    per_utt = by_utterance(events)
    codec = StatefulCodec(proxied(emu, proxy), targets=TARGETS)
    fr = FallbackRun(emu, proxy, after=1.0, retry_first=0.2, retry_max=0.5, codec=codec)
    fr.start()
    fr.run.feed([e for e in events if e.utterance == 1])  # type: ignore[union-attr]
    assert wait_until(lambda: fr.run.link.buffer.empty and all_turns_answered(emu, 1), 10)
    proxy.refuse(1e6)
    proxy.cut()
    fr.run.feed([e for e in events if e.utterance in (2, 3)], realtime=1.0)  # type: ignore[union-attr]
    fr.run.wait_fed()
    assert wait_until(lambda: fr.fallback.active, 5), fr.run.state()
    assert wait_until(lambda: len(fr.recognizer.utterances) == 2, 10)
    proxy.refuse(0)
    assert wait_until(lambda: not fr.fallback.active, 10)
    fr.run.feed([e for e in events if e.utterance == 4])  # type: ignore[union-attr]
    assert wait_until(lambda: all_turns_answered(emu, 2), 10)
    fr.stop()
    assert fr.recognizer.utterances == [per_utt[2], per_utt[3]]
    cloud = per_utt[1] + per_utt[4]
    assert b"".join(bytes(s.audio) for s in emu.sessions) == cloud
    assert fr.run.sink.finals == expected_words(per_utt[1]) + expected_words(per_utt[4])
    assert fr.run.sink.losses == []
    assert fr.fallback.switches == 1 and fr.fallback.returns == 1
    assert_strict_peer_content(emu)


def test_speech_end_without_its_turn_sends_nothing(emu, proxy):
    """An utterance end whose audio an earlier session confirmed needs no turn on this one:
    the link drops the marker instead of ending a turn it never began."""
    run = stateful_run(emu, proxy).start()
    (end,) = [e for e in utterances([200]) if isinstance(e, SpeechEnd)]
    run.feed([end])
    time.sleep(0.5)
    assert run.link.buffer.empty
    assert emu.connections <= 1
    run.stop()
    assert_strict_peer_content(emu)
    assert all(s.turns == [] for s in emu.sessions)
