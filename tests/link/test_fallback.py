"""``fallback = local``: the Soniox emulator behind a fault proxy is taken down and brought
back; the speech of the outage goes to an offline engine and the link returns to the cloud
at the next utterance boundary. Nothing is lost and nothing is captioned twice: every byte
the gate forwarded is either confirmed final by the service or decoded by the offline
engine, never both.

The offline engine here records what it is fed (``RecordingRecognizer`` in harness.py): these
tests are about where the speech goes. Real pocketsphinx behind the fallback is tested through the
whole daemon in tests/daemon/test_fallback_daemon.py.
"""

from __future__ import annotations

import pytest

from edgecap.captions.board import CaptionBoard, Numbering
from edgecap.link.fallback import Fallback
from edgecap.link.uplink import UplinkBuffer
from edgecap.runtime.speech import SpeechAudio, SpeechEnd, SpeechStart
from edgecap.runtime.speech_queue import SpeechQueue
from tests.emulators.soniox import SonioxEmulator, expected_words
from tests.link.harness import (
    FallbackRun,
    coverage_gaps,
    forwarded_pcm,
    utterances,
    wait_until,
)


def cloud_finalized(emu: SonioxEmulator) -> list[bytes]:
    """Per session, the audio the service made final (up to its last final_audio_proc_ms)."""
    out = []
    for s in emu.sessions:
        ms = max((m.get("final_audio_proc_ms", 0) for m in s.sent), default=0)
        out.append(bytes(s.audio[: ms * 32]))
    return out


@pytest.mark.slow
def test_outage_speech_goes_offline_and_the_cloud_takes_over_again(emu, proxy):
    events = utterances([1500, 1200, 1400, 1300, 1100], gap_ms=700)
    by_utt: dict[int, bytes] = {}
    for e in events:
        if isinstance(e, SpeechAudio):
            by_utt[e.utterance] = by_utt.get(e.utterance, b"") + e.frame.pcm
    fr = FallbackRun(emu, proxy, after=1.0, retry_first=0.2, retry_max=0.5).start()
    first = events[: _end_index(events, 1) + 1]
    # 1. the cloud captions the first utterance
    fr.run.feed(first)
    assert wait_until(lambda: fr.run.link.buffer.empty and len(emu.sessions) == 1, 10)
    # 2. the service goes away (connections cut and refused); speech goes on
    proxy.refuse(1e6)
    proxy.cut()
    outage = [e for e in events if _utt(e) in (2, 3)]
    fr.run.feed(outage, realtime=1.0)
    fr.run.wait_fed()
    assert wait_until(lambda: fr.fallback.active, 5), fr.run.state()
    assert wait_until(lambda: len(fr.recognizer.utterances) == 2, 10)
    assert fr.run.status.snapshot().state_of("fallback") == "offline"
    # the link's own state moves between retrying and connecting: wait for the first
    assert wait_until(
        lambda: (
            "Offline captions (speech service unreachable)" in fr.run.status.snapshot().summary()
        ),
        5,
    ), fr.run.status.snapshot().summary()
    # 3. the service is back: the next utterance goes to it
    proxy.refuse(0)
    assert wait_until(lambda: not fr.fallback.active, 10)
    fr.run.feed([e for e in events if _utt(e) in (4, 5)], realtime=2.0)
    fr.run.wait_fed()
    assert wait_until(lambda: fr.run.link.buffer.empty and fr.run.link.connected, 10)
    fr.stop()

    # the offline engine got utterances 2 and 3 whole, nothing else
    assert fr.recognizer.utterances == [by_utt[2], by_utt[3]]
    # the cloud made final exactly the others, captioned once each
    cloud = b"".join(by_utt[n] for n in (1, 4, 5))
    assert fr.run.sink.finals == expected_words(cloud)
    received = b"".join(bytes(s.audio) for s in emu.sessions)
    assert received == cloud
    assert fr.run.sink.losses == []
    assert fr.fallback.switches == 1 and fr.fallback.returns == 1
    assert fr.run.status.snapshot().state_of("fallback") == "standby"


@pytest.mark.slow
def test_cut_mid_utterance_the_unconfirmed_rest_goes_offline_nothing_twice(emu, proxy):
    events = utterances([4000, 1500, 1500], gap_ms=600)
    forwarded = forwarded_pcm(events)
    fr = FallbackRun(emu, proxy, after=0.8, retry_first=0.2, retry_max=0.5).start()
    fr.run.feed(events, realtime=1.0)
    assert wait_until(lambda: emu.sessions and emu.sessions[0].audio_ms >= 2000, 10)
    proxy.refuse(1e6)
    proxy.cut()
    assert wait_until(lambda: fr.fallback.active, 5)
    fr.run.wait_fed()
    assert wait_until(lambda: len(fr.recognizer.utterances) == 3, 15)  # rest of 1, then 2, 3
    fr.stop()

    offline = fr.recognizer.utterances
    confirmed = fr.run.link.buffer.confirmed_samples * 2
    # every byte once: confirmed by the service, or decoded offline
    assert confirmed + sum(len(u) for u in offline) == len(forwarded)
    assert coverage_gaps(forwarded, [forwarded[:confirmed], *offline]) == []
    assert forwarded[:confirmed] + b"".join(offline) == forwarded
    assert 0 < confirmed < len(forwarded_pcm(events[: _end_index(events, 1) + 1]))
    assert fr.run.sink.finals == expected_words(forwarded[:confirmed])
    assert fr.run.sink.losses == []


def test_refused_key_falls_back_too(emu, proxy):
    """A fatal refusal (wrong key) is an outage as well: after `after`, speech is captioned
    offline instead of waiting for a reload."""
    events = utterances([1200, 1200], gap_ms=500)
    fr = FallbackRun(emu, proxy, after=0.5, key="wrong-key", retry_first=0.2, retry_max=0.5).start()
    fr.run.feed(events, realtime=2.0)
    assert wait_until(lambda: fr.run.state() == "rejected", 5)
    assert wait_until(lambda: len(fr.recognizer.utterances) == 2, 10)
    fr.stop()
    assert b"".join(fr.recognizer.utterances) == forwarded_pcm(events)
    assert fr.run.sink.finals == []


def test_a_service_that_connects_but_never_answers_is_still_down():
    """The down clock is paused by a connect and cleared only by an answer."""
    status_queue = SpeechQueue(16_000)
    from edgecap.runtime.status import StatusBoard

    fb = Fallback(status_queue, 5.0, StatusBoard(), service="soniox")
    fb.link_down(100.0)
    fb.link_connected()
    assert not fb.due(104.0)
    fb.link_down(104.0)  # the session died without a word: still down since 100
    assert fb.due(105.0)
    fb.link_connected()
    fb.link_answered()
    fb.link_down(200.0)
    assert not fb.due(204.9) and fb.due(205.0)


def test_take_all_gives_well_formed_utterances():
    buf = UplinkBuffer(10 * 16_000)
    events = utterances([200, 200], gap_ms=100)
    for e in events:
        buf.push(e)
    # the service confirmed the first 100 ms (start marker and 5 frames) in a session
    while buf.pending:
        buf.mark_sent()
    buf.confirm_audio(1600)
    buf.new_session()
    out = buf.take_all()
    assert buf.empty and buf.held_samples == 0
    assert isinstance(out[0], SpeechStart) and out[0].utterance == 1
    assert out[0].sample == out[1].frame.start  # a start of its own where the rest begins
    kinds = [type(e).__name__ for e in out]
    assert kinds.count("SpeechStart") == 2 and kinds.count("SpeechEnd") == 2
    assert sum(e.frame.samples for e in out if isinstance(e, SpeechAudio)) == 6400 - 1600


def test_offline_lines_are_marked_and_numbered_with_the_cloud_lines():
    from edgecap.captions.tokens import Token, TokenUpdate

    got = []
    numbering = Numbering(5)
    cloud = CaptionBoard(got.append, numbering=numbering)
    offline = CaptionBoard(got.append, numbering=numbering, offline=True)
    cloud.update(TokenUpdate(final=(Token(" cloud", True),), endpoint=True))
    offline.update(TokenUpdate(final=(Token(" local", True),), endpoint=True))
    cloud.update(TokenUpdate(final=(Token(" again", True),), endpoint=True))
    finals = [(e.seq, e.text, e.offline) for e in got if e.final]
    assert finals == [(5, "cloud", False), (6, "local", True), (7, "again", False)]


def _utt(e) -> int:
    return e.utterance


def _end_index(events, n: int) -> int:
    return next(i for i, e in enumerate(events) if isinstance(e, SpeechEnd) and e.utterance == n)
