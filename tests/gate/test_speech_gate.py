"""The speech gate's state machine, frame by frame.

Most tests script the detector (``is_speech``) so that every boundary is exact; the last ones
use the real webrtcvad on synthetic sound. Scripted settings: 20 ms frames, pre-roll 100 ms
(P = 5 frames), min speech 80 ms (K = 4 voiced frames within W = 6), hang-over 100 ms (H = 5).
"""

from __future__ import annotations

import itertools
import math

import pytest

from edgecap.gate.speech_gate import GateSettings, SpeechGate
from edgecap.runtime.frames import Frame
from edgecap.runtime.speech import SpeechAudio, SpeechEnd, SpeechStart
from tests.gate.helpers import (
    Script,
    buzz,
    drive,
    forwarded,
    frames,
    noise,
    scripted_frames,
    utterances,
)

S = GateSettings(preroll_ms=100, min_speech_ms=80, hangover_ms=100, max_utterance_s=0)
S_MAX = GateSettings(preroll_ms=100, min_speech_ms=80, hangover_ms=100, max_utterance_s=0.1)


def scripted(settings: GateSettings = S) -> tuple[SpeechGate, Script]:
    script = Script()
    return SpeechGate(settings, is_speech=script.is_speech), script


def run(plan: str, settings: GateSettings = S, flush: str | None = "end_of_input"):
    gate, _ = scripted(settings)
    fs = scripted_frames(plan)
    fed = drive(gate, fs, flush)  # type: ignore[arg-type]
    return gate, fs, fed


# Settings --------------------------------------------------------------------------------


def test_defaults() -> None:
    s = GateSettings()
    assert (s.enabled, s.aggressiveness, s.frame_ms) == (True, 2, 20)
    assert (s.preroll_ms, s.hangover_ms, s.min_speech_ms, s.max_utterance_s) == (
        300,
        600,
        150,
        60.0,
    )
    g = SpeechGate(s)
    assert (g.preroll_frames, g.open_voiced_frames, g.open_window_frames) == (15, 8, 11)
    assert g.hangover_frames == 30
    assert g.state == "listening"


@pytest.mark.parametrize(
    ("frame_ms", "expected"),
    [(10, (30, 15, 20, 60)), (20, (15, 8, 11, 30)), (30, (10, 5, 7, 20))],
)
def test_durations_round_up_to_whole_frames(frame_ms: int, expected: tuple) -> None:
    g = SpeechGate(GateSettings(frame_ms=frame_ms))
    got = (g.preroll_frames, g.open_voiced_frames, g.open_window_frames, g.hangover_frames)
    assert got == expected
    assert g.frame_samples == 16 * frame_ms


@pytest.mark.parametrize(
    "kwargs",
    [
        {"aggressiveness": 4},
        {"aggressiveness": -1},
        {"aggressiveness": True},
        {"frame_ms": 25},
        {"preroll_ms": -1},
        {"hangover_ms": 0.5},
        {"min_speech_ms": -20},
        {"max_utterance_s": -1.0},
        {"max_utterance_s": math.nan},
        {"max_utterance_s": math.inf},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="invalid gate settings"):
        GateSettings(**kwargs)


@pytest.mark.parametrize("samples", [0, 160, 319, 321, 480])
def test_a_frame_of_the_wrong_length_is_a_programming_error(samples: int) -> None:
    gate = SpeechGate(GateSettings())
    with pytest.raises(ValueError, match="640"):
        gate.feed(Frame(b"\x01\x00" * samples, 0, 0.0))
    assert gate.frames_in == 0


# Opening ---------------------------------------------------------------------------------


def test_opens_on_the_kth_voiced_frame_with_preroll_from_the_onset() -> None:
    gate, fs, fed = run("nnnnnnnnnn VVVV VV", flush=None)
    # nothing before the 4th voiced frame (index 13), then start + the buffer at once
    assert {f.at_frame for f in fed if isinstance(f.event, SpeechStart)} == {13}
    start = fed[0].event
    assert isinstance(start, SpeechStart)
    assert start.onset == fs[10].start  # first voiced frame
    assert start.sample == fs[5].start  # onset - 5 frames of pre-roll
    at_13 = [f.event.frame for f in fed if f.at_frame == 13 and isinstance(f.event, SpeechAudio)]
    assert at_13 == fs[5:14]
    # later frames are forwarded as they come
    assert [f.at_frame for f in fed if isinstance(f.event, SpeechAudio)][-2:] == [14, 15]
    assert gate.state == "speech"


def test_preroll_is_bounded_by_what_was_captured() -> None:
    _, fs, fed = run("nn VVVV")
    (u,) = utterances(fed)
    assert u.start.sample == fs[0].start
    assert u.start.onset == fs[2].start


def test_a_burst_shorter_than_min_speech_never_opens() -> None:
    gate, _, fed = run("nnnnn" + "VVV nnnnnn" * 20)
    assert fed == []
    assert gate.utterances == 0 and gate.frames_forwarded == 0
    assert gate.frames_voiced == 60


def test_voiced_frames_spread_thinner_than_the_window_never_open() -> None:
    _, _, fed = run("Vnn" * 40)
    assert fed == []


def test_detector_dropouts_inside_the_window_are_tolerated() -> None:
    _, fs, fed = run("nnnnnnn VVnVV nn")
    (u,) = utterances(fed)
    assert u.started_at_frame == 11  # 4 voiced within 5 frames
    assert u.start.onset == fs[7].start


def test_onset_is_the_oldest_voiced_frame_in_the_window() -> None:
    # a stray voiced frame 3 frames before the run is inside the 6-frame window
    _, fs, fed = run("nnnnnnnnnn V nn VVV nn")
    (u,) = utterances(fed)
    assert u.start.onset == fs[10].start
    assert u.start.sample == fs[5].start


def test_preroll_skips_leading_digital_silence() -> None:
    _, fs, fed = run("nn 000 nnn VVVV")
    (u,) = utterances(fed)
    assert u.start.onset == fs[8].start
    assert u.start.sample == fs[5].start  # the pre-roll would start at 3, which is silence
    assert not any(f.is_digital_silence() for f in u.frames)


def test_digital_silence_inside_the_preroll_is_forwarded_to_keep_it_contiguous() -> None:
    _, fs, fed = run("nnnnn 0 n VVVV")
    (u,) = utterances(fed)
    assert u.start.sample == fs[2].start
    assert u.frames == fs[2:]  # contiguous, the silent frame included


def test_next_preroll_never_reaches_into_the_previous_utterance() -> None:
    _, fs, fed = run("VVVVVV nnnnn nn VVVV")
    first, second = utterances(fed)
    assert first.end.reason == "silence"
    assert first.end.sample == fs[10].end
    assert second.start.onset == fs[13].start
    assert second.start.sample == fs[11].start == first.end.sample
    assert len(forwarded(fed)) == len({f.start for f in forwarded(fed)})


# Hang-over -------------------------------------------------------------------------------


def test_a_pause_shorter_than_the_hangover_does_not_split() -> None:
    gate, fs, fed = run("VVVVVV nnnn VVV nnnn V nnnnn nnn", flush=None)
    (u,) = utterances(fed)
    assert u.end.reason == "silence"
    # the 5th contiguous non-speech frame (index 22) ends it; every frame until then is sent
    assert u.ended_at_frame == 22
    assert u.frames == fs[0:23]
    assert gate.state == "listening"


def test_hangover_frames_are_forwarded_as_they_come() -> None:
    _, fs, fed = run("VVVVVV nnnnn")
    for item in fed:
        if isinstance(item.event, SpeechAudio) and item.event.frame.start >= fs[6].start:
            assert item.event.frame is fs[item.at_frame]


def test_digital_silence_in_the_hangover_is_held_then_released_in_order() -> None:
    gate, fs, fed = run("VVVVVV 000 n VV")
    (u,) = utterances(fed)
    assert u.frames == fs  # the silent frames were sent, in order, when frame 9 came
    assert [f.at_frame for f in fed if isinstance(f.event, SpeechAudio)][6:10] == [9] * 4
    assert gate.frames_forwarded == len(fs)


def test_digital_silence_is_dropped_when_the_utterance_closes() -> None:
    _, fs, fed = run("VVVVVV n 0000 nnn")
    (u,) = utterances(fed)
    assert u.end.reason == "silence"
    assert u.ended_at_frame == 10  # 1 + 4 non-speech frames
    assert u.end.sample == fs[6].end  # the last frame that was not digital silence
    assert not any(f.is_digital_silence() for f in u.frames)


def test_flush_drops_held_digital_silence() -> None:
    gate, fs, fed = run("VVVV 00", flush="stop")
    (u,) = utterances(fed)
    assert u.end.reason == "stop"
    assert u.end.sample == fs[3].end
    assert gate.state == "listening"


# Long utterances -------------------------------------------------------------------------


def test_max_utterance_splits_without_losing_or_repeating_a_sample() -> None:
    _, fs, fed = run("V" * 23, S_MAX)
    us = utterances(fed)
    assert [len(u.frames) for u in us] == [5, 5, 5, 5, 3]
    assert [u.end.reason for u in us] == ["max_length"] * 4 + ["end_of_input"]
    assert [f for u in us for f in u.frames] == fs
    for before, after in itertools.pairwise(us):
        assert after.start.sample == before.end.sample
        assert after.start.onset == after.start.sample
        assert after.started_at_frame == before.ended_at_frame + 1  # on the next frame


def test_max_utterance_shorter_than_a_frame_gives_one_frame_each() -> None:
    settings = GateSettings(
        preroll_ms=100, min_speech_ms=80, hangover_ms=100, max_utterance_s=0.001
    )
    _, fs, fed = run("nn VVVVVV", settings)
    us = utterances(fed)
    assert [u.frames for u in us] == [[f] for f in fs]


def test_after_a_split_leading_digital_silence_is_skipped() -> None:
    _, fs, fed = run("VVVVV 00 VVV", S_MAX)
    first, second = utterances(fed)
    assert first.end.reason == "max_length" and first.end.sample == fs[4].end
    assert second.start.sample == second.start.onset == fs[7].start


def test_a_split_never_ends_a_piece_on_digital_silence() -> None:
    # 4 frames sent at the opening, then 2 silent frames held: releasing them would reach
    # the 5-frame limit inside the silence, so the split comes before it
    _, fs, fed = run("VVVV 00 VVV", S_MAX)
    first, second = utterances(fed)
    assert first.end.reason == "max_length" and first.frames == fs[0:4]
    assert second.frames == fs[6:]
    assert second.started_at_frame == 6


def test_after_a_split_the_hangover_may_end_it_before_anything_is_sent() -> None:
    gate, _, fed = run("VVVVV 00000 nn", S_MAX, flush=None)
    (u,) = utterances(fed)
    assert u.end.reason == "max_length"
    assert gate.state == "listening"


# Gaps, flush -----------------------------------------------------------------------------


def gap_frame(after: Frame, voiced: bool, gap: int, declared: bool = True) -> Frame:
    plan = scripted_frames("V" if voiced else "n", start=after.end + gap)
    f = plan[0]
    return Frame(f.pcm, f.start, f.captured_at, gap if declared else 0)


@pytest.mark.parametrize("declared", [True, False])
def test_a_gap_ends_the_utterance_as_source_lost(declared: bool) -> None:
    gate, _ = scripted()
    fs = scripted_frames("VVVVVV")
    events = [e for f in fs for e in gate.feed(f)]
    g = gap_frame(fs[-1], voiced=True, gap=16000, declared=declared)
    at_gap = gate.feed(g)
    assert at_gap == [SpeechEnd(1, fs[-1].end, "source_lost", at_gap[0].at)]
    assert gate.state == "listening"
    after = scripted_frames("VVV", start=g.end)
    more = [e for f in after for e in gate.feed(f)]
    start = more[0]
    assert isinstance(start, SpeechStart)
    assert start.sample == start.onset == g.start  # nothing from before the gap
    assert [e.frame for e in more[1:]] == [g, *after]
    assert len(events) == 7


def test_a_gap_while_listening_empties_the_preroll() -> None:
    gate, _ = scripted()
    fs = scripted_frames("nnnnnnn")
    assert [e for f in fs for e in gate.feed(f)] == []
    g = gap_frame(fs[-1], voiced=False, gap=320)
    after = scripted_frames("VVVV", start=g.end)
    events = [e for f in [g, *after] for e in gate.feed(f)]
    assert isinstance(events[0], SpeechStart)
    assert events[0].sample == g.start


def test_a_frame_that_goes_back_in_time_is_a_discontinuity() -> None:
    gate, _ = scripted()
    fs = scripted_frames("VVVVV")
    for f in fs:
        gate.feed(f)
    again = scripted_frames("V", start=0)[0]
    assert [type(e) for e in gate.feed(again)] == [SpeechEnd]


def test_flush_ends_the_utterance_once_and_forgets_the_buffer() -> None:
    gate, _ = scripted()
    fs = scripted_frames("nnnn VVVV")
    for f in fs:
        gate.feed(f)
    (end,) = gate.flush("source_lost")
    assert end == SpeechEnd(1, fs[-1].end, "source_lost", end.at)
    assert gate.flush("stop") == []
    # the next frames continue the count but the pre-roll starts after the flush
    more = scripted_frames("nn VVVV", start=fs[-1].end)
    events = [e for f in more for e in gate.feed(f)]
    assert isinstance(events[0], SpeechStart)
    assert events[0].utterance == 2
    assert events[0].sample == more[0].start


def test_flush_while_listening_emits_nothing() -> None:
    gate, _ = scripted()
    for f in scripted_frames("nnVVV"):
        gate.feed(f)
    assert gate.flush("end_of_input") == []


# Off mode --------------------------------------------------------------------------------


def test_off_mode_forwards_every_frame_as_one_utterance() -> None:
    gate, script = scripted(GateSettings(enabled=False, max_utterance_s=0))
    fs = scripted_frames("000 nnn VVV 000 nnnnn 0")
    fed = drive(gate, fs, "stop")
    (u,) = utterances(fed)
    assert u.frames == fs
    assert u.start.sample == u.start.onset == 0
    assert u.end.reason == "stop"
    assert script.calls == 0 and gate.frames_voiced == 0
    assert gate.frames_forwarded == gate.frames_in == len(fs)


def test_off_mode_still_splits_at_max_utterance_and_at_gaps() -> None:
    gate, _ = scripted(GateSettings(enabled=False, max_utterance_s=0.1))
    fs = scripted_frames("n" * 12)
    g = gap_frame(fs[-1], voiced=False, gap=100)
    rest = scripted_frames("nn", start=g.end)
    fed = drive(gate, [*fs, g, *rest], "end_of_input")
    us = utterances(fed)
    assert [len(u.frames) for u in us] == [5, 5, 2, 3]
    assert [u.end.reason for u in us] == ["max_length", "max_length", "source_lost", "end_of_input"]
    assert [f for u in us for f in u.frames] == [*fs, g, *rest]


# Counters, clock -------------------------------------------------------------------------


def test_counters_and_state() -> None:
    gate, script = scripted()
    fs = scripted_frames("nnn 00 VVVV nn")
    states = []
    for f in fs:
        gate.feed(f)
        states.append(gate.state)
    assert states == ["listening"] * 8 + ["speech"] * 3
    assert gate.frames_in == 11
    assert gate.frames_voiced == 4
    assert script.calls == 9  # never called for digital silence
    assert gate.frames_forwarded == 11  # pre-roll from frame 0: silent 3-4 are inside it
    assert gate.utterances == 1


def test_events_are_stamped_by_the_clock_when_decided() -> None:
    ticks = iter([10.0, 11.0])
    script = Script()
    gate = SpeechGate(S, clock=lambda: next(ticks), is_speech=script.is_speech)
    fed = drive(gate, scripted_frames("VVVV"), "stop")
    assert [f.event.at for f in fed if not isinstance(f.event, SpeechAudio)] == [10.0, 11.0]


# The real webrtcvad on synthetic sound ---------------------------------------------------

QUIET = 30.0  # white noise RMS, about -60 dBFS: a quiet room


@pytest.mark.parametrize("frame_ms", [10, 20])
@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_40ms_bursts_do_not_open_the_real_gate(frame_ms: int, aggressiveness: int) -> None:
    # webrtcvad itself keeps saying "speech" 60-140 ms after a burst (its own hang-over),
    # so a 40 ms burst shows up as up to 140 ms of voiced frames: still under 150 ms.
    burst_buzz = buzz(640)
    click = noise(40, 12000.0, seed=7) + bytes(600 * 2)
    pcm = noise(16000, QUIET, seed=1)
    for i in range(6):
        pcm += (burst_buzz if i % 2 else click) + noise(16000, QUIET, seed=10 + i)
    gate = SpeechGate(GateSettings(aggressiveness=aggressiveness, frame_ms=frame_ms))
    fed = drive(gate, frames(pcm, frame_ms))
    assert fed == []
    assert gate.frames_voiced > 0  # the detector did hear the bursts


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_sustained_voice_opens_the_real_gate_once(aggressiveness: int) -> None:
    pcm = noise(16000, QUIET, seed=1) + buzz(8000) + noise(32000, QUIET, seed=2)
    gate = SpeechGate(GateSettings(aggressiveness=aggressiveness))
    fed = drive(gate, frames(pcm))
    (u,) = utterances(fed)
    assert u.end.reason == "silence"
    assert 16000 - 300 * 16 <= u.start.sample <= 16000 <= u.start.onset < 16000 + 320


def test_quiet_room_and_digital_silence_never_open_the_real_gate() -> None:
    pcm = noise(5 * 16000, QUIET, seed=3) + bytes(5 * 32000) + noise(5 * 16000, QUIET, seed=4)
    gate = SpeechGate(GateSettings())
    assert drive(gate, frames(pcm)) == []


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_after_a_mute_the_detector_starts_afresh(aggressiveness: int) -> None:
    # Without a fresh webrtcvad, modes 0-1 carry what they learnt from the voice across the
    # second of zeros and call the quiet room after it speech (an utterance at 4.0 s).
    pcm = noise(16000, QUIET, seed=1) + buzz(32000) + bytes(32000) + noise(32000, QUIET, seed=2)
    gate = SpeechGate(GateSettings(aggressiveness=aggressiveness))
    fed = drive(gate, frames(pcm), flush=None)
    (u,) = utterances(fed)
    assert u.end.sample == 3 * 16000
    assert gate.detector_resets == 1


def test_a_short_dropout_to_zeros_inside_speech_is_not_a_mute() -> None:
    pcm = buzz(16000) + bytes(3200) + buzz(16000) + noise(32000, QUIET, seed=2)
    gate = SpeechGate(GateSettings())
    fed = drive(gate, frames(pcm))
    (u,) = utterances(fed)
    assert u.first == 0 and u.last > 2 * 16000  # the 100 ms of zeros are inside, forwarded
    assert sum(f.is_digital_silence() for f in u.frames) == 5
    assert gate.detector_resets == 1  # only the final flush
