"""The speech gate fed in blocks (``feed_block``): the same utterances as frame by frame,
with one SpeechAudio per block and utterance.

The property test feeds the same random sound (see test_gate_property.py) to two gates: one
frame by frame with ``feed()``, one cut into random blocks with ``feed_block()``. They must
agree on everything but how the forwarded audio is packed: the utterances, their ids,
samples, starts, onsets, ends and reasons, the forwarded samples themselves, the block in
which each start and end was decided, and the counters. The scripted tests pin down the
packing at the edges (pre-roll, hang-over, held digital silence, max length, gaps).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecap.gate.speech_gate import GateSettings, SpeechGate
from edgecap.runtime.frames import Frame
from edgecap.runtime.speech import GateEvent, SpeechAudio, SpeechEnd, SpeechStart
from tests.gate.helpers import Fed, Script, scripted_frames, utterances
from tests.gate.test_gate_property import build, chunk, gate_settings

S = GateSettings(preroll_ms=100, min_speech_ms=80, hangover_ms=100, max_utterance_s=0)


def join(frames: Sequence[Frame]) -> Frame:
    """Consecutive frames as one block, stamped like the last one (as a source does)."""
    return Frame(
        b"".join(f.pcm for f in frames),
        frames[0].start,
        frames[-1].captured_at,
        frames[0].gap_before,
    )


def cut(frames: list[Frame], sizes: list[int]) -> list[tuple[int, Frame]]:
    """(index of the first frame, block): blocks of the given sizes (cycled), never across
    a discontinuity — a block is contiguous, only its first frame may follow a gap."""
    out: list[tuple[int, Frame]] = []
    i = k = 0
    while i < len(frames):
        j = i + 1
        while (
            j < len(frames)
            and j - i < sizes[k % len(sizes)]
            and frames[j].gap_before == 0
            and frames[j].start == frames[j - 1].end
        ):
            j += 1
        out.append((i, join(frames[i:j])))
        i, k = j, k + 1
    return out


def drive_blocks(gate: SpeechGate, blocks: list[tuple[int, Frame]]) -> list[list[GateEvent]]:
    """The events of each feed_block() call, then those of the final flush."""
    calls = [gate.feed_block(b) for _, b in blocks]
    calls.append(gate.flush("end_of_input"))
    return calls


def summary(fed: list[Fed]) -> list[tuple]:
    return [
        (
            u.start.utterance,
            u.start.sample,
            u.start.onset,
            u.end.sample,
            u.end.reason,
            b"".join(f.pcm for f in u.frames),
        )
        for u in utterances(fed)
    ]


def counters(gate: SpeechGate) -> tuple[int, ...]:
    return (
        gate.frames_in,
        gate.frames_voiced,
        gate.frames_forwarded,
        gate.utterances,
        gate.detector_resets,
    )


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    s=gate_settings,
    chunks=st.lists(chunk, min_size=1, max_size=10),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=6),
)
def test_blocks_give_the_same_utterances_as_frames(
    s: GateSettings, chunks: list, sizes: list[int]
) -> None:
    frames = build(chunks, s.frame_ms)
    if not frames:
        return
    by_frame = SpeechGate(s)
    fed_frames = [Fed(i, e) for i, f in enumerate(frames) for e in by_frame.feed(f)]
    fed_frames += [Fed(len(frames), e) for e in by_frame.flush("end_of_input")]

    blocks = cut(frames, sizes)
    by_block = SpeechGate(s)
    calls = drive_blocks(by_block, blocks)
    fed_blocks = [Fed(k, e) for k, events in enumerate(calls) for e in events]

    assert summary(fed_blocks) == summary(fed_frames)
    assert counters(by_block) == counters(by_frame)
    assert by_block.blocks_in == len(blocks)
    assert by_block.audio_out == sum(isinstance(x.event, SpeechAudio) for x in fed_blocks)

    # Starts and ends are decided in the block that holds the frame that decided them.
    block_of = [
        k for k, (first, b) in enumerate(blocks) for _ in range(b.samples // (16 * s.frame_ms))
    ]
    block_of.append(len(blocks))  # the flush
    markers = [
        (type(x.event).__name__, block_of[x.at_frame])
        for x in fed_frames
        if not isinstance(x.event, SpeechAudio)
    ]
    assert markers == [
        (type(x.event).__name__, x.at_frame)
        for x in fed_blocks
        if not isinstance(x.event, SpeechAudio)
    ]
    # One SpeechAudio per block and utterance, never two in a row.
    for events in calls:
        audio = [e.utterance for e in events if isinstance(e, SpeechAudio)]
        assert len(audio) == len(set(audio))
        for a, b in itertools.pairwise(events):
            assert not (isinstance(a, SpeechAudio) and isinstance(b, SpeechAudio))


# Scripted: the packing at the edges ------------------------------------------------------


def scripted_gate(settings: GateSettings = S) -> SpeechGate:
    return SpeechGate(settings, is_speech=Script().is_speech, clock=lambda: 0.0)


def kinds(events: list[GateEvent]) -> list[str]:
    return [type(e).__name__.removeprefix("Speech") for e in events]


def test_the_opening_block_carries_the_preroll_and_the_rest_of_the_block_in_one() -> None:
    fs = scripted_frames("nnnnn nnVVV VVnnn")  # K = 4 voiced of W = 6: opens on frame 10
    gate = scripted_gate()
    assert gate.feed_block(join(fs[0:5])) == []
    events = gate.feed_block(join(fs[5:10]))
    assert events == []  # three voiced frames: not yet
    events = gate.feed_block(join(fs[10:15]))
    assert kinds(events) == ["Start", "Audio"]
    start, audio = events
    assert isinstance(start, SpeechStart) and isinstance(audio, SpeechAudio)
    assert (start.sample, start.onset) == (fs[2].start, fs[7].start)  # P = 5 before onset
    # pre-roll from the earlier blocks, the onset, and the rest of this block: one piece
    assert audio.frame.start == fs[2].start and audio.frame.pcm == join(fs[2:15]).pcm
    assert audio.frame.captured_at == fs[14].captured_at


def test_speech_goes_out_as_one_audio_event_per_block_and_silence_as_none() -> None:
    fs = scripted_frames("VVVVV VVVVV nVnVn nnnnn nnnnn")  # H = 5 unvoiced frames end it
    gate = scripted_gate()
    calls = [gate.feed_block(join(fs[i : i + 5])) for i in range(0, 25, 5)]
    assert [kinds(c) for c in calls] == [
        ["Start", "Audio"],
        ["Audio"],
        ["Audio"],
        ["Audio", "End"],  # the hang-over runs out on the 4th frame of this block
        [],
    ]
    end = calls[3][1]
    assert isinstance(end, SpeechEnd) and end.reason == "silence"
    assert end.sample == fs[18].end
    assert calls[3][0].frame.pcm == join(fs[15:19]).pcm  # type: ignore[union-attr]


def test_held_digital_silence_is_released_joined_with_the_block_that_follows() -> None:
    fs = scripted_frames("VVVVV VV000 0VVVV")  # 4 zeros: shorter than the hang-over
    gate = scripted_gate()
    calls = [gate.feed_block(join(fs[i : i + 5])) for i in range(0, 15, 5)]
    assert [kinds(c) for c in calls] == [["Start", "Audio"], ["Audio"], ["Audio"]]
    held = calls[1][0].frame  # type: ignore[union-attr]
    assert held.end == fs[6].end  # the zeros at the end of the block are held back...
    released = calls[2][0].frame  # type: ignore[union-attr]
    assert released.start == fs[7].start and released.pcm == join(fs[7:15]).pcm  # ...then sent


def test_a_max_length_split_inside_a_block_gives_two_pieces_and_loses_nothing() -> None:
    s = GateSettings(preroll_ms=0, min_speech_ms=20, hangover_ms=100, max_utterance_s=0.07)
    fs = scripted_frames("VVVVV VVVVV")
    gate = scripted_gate(s)
    events = gate.feed_block(join(fs[0:5])) + gate.feed_block(join(fs[5:10]))
    events += gate.flush("end_of_input")
    assert kinds(events) == [
        *("Start", "Audio", "End", "Start", "Audio"),  # the 1st block: 4 frames reach 70 ms
        *("Audio", "End", "Start", "Audio"),  # the 2nd block
        "End",  # the flush
    ]
    fed = utterances([Fed(0, e) for e in events])
    assert [(u.first, u.last, u.end.reason) for u in fed] == [
        (0, 1280, "max_length"),  # 4 frames reach 70 ms
        (1280, 2560, "max_length"),
        (2560, 3200, "end_of_input"),
    ]
    assert b"".join(f.pcm for u in fed for f in u.frames) == join(fs).pcm


def test_a_gap_before_a_block_ends_the_utterance_before_it() -> None:
    fs = scripted_frames("VVVVV VVVVV")
    gap = Frame(join(fs[5:10]).pcm, fs[5].start + 160, 0.0, 160)
    gate = scripted_gate()
    first = gate.feed_block(join(fs[0:5]))
    second = gate.feed_block(gap)
    assert kinds(first) == ["Start", "Audio"]
    assert kinds(second) == ["End", "Start", "Audio"]  # the gap, then the next one opens
    assert second[0].reason == "source_lost" and second[0].sample == fs[4].end  # type: ignore[union-attr]
    assert second[1].sample == gap.start  # type: ignore[union-attr]


def test_off_mode_forwards_each_block_as_it_is() -> None:
    fs = scripted_frames("n0Vn0 VVVVV")
    gate = SpeechGate(GateSettings(enabled=False, max_utterance_s=0))
    blocks = [join(fs[0:5]), join(fs[5:10])]
    calls = [gate.feed_block(b) for b in blocks]
    assert kinds(calls[0]) == ["Start", "Audio"] and kinds(calls[1]) == ["Audio"]
    assert [c[-1].frame.pcm for c in calls] == [b.pcm for b in blocks]  # type: ignore[union-attr]


def test_feed_of_a_block_forwards_each_frame_on_its_own() -> None:
    fs = scripted_frames("VVVVV VVVVV")
    one, many = scripted_gate(), scripted_gate()
    per_frame = [e for f in fs for e in one.feed(f)]
    per_block = many.feed(join(fs[0:5])) + many.feed(join(fs[5:10]))

    def shape(events: list[GateEvent]) -> list[tuple]:
        return [
            (type(e).__name__, e.frame.start, e.frame.pcm) if isinstance(e, SpeechAudio) else e
            for e in events
        ]

    assert shape(per_block) == shape(per_frame)
    assert sum(isinstance(e, SpeechAudio) for e in per_block) == 10


@pytest.mark.parametrize("samples", [0, 160, 481, 1000])
def test_a_block_of_part_frames_is_a_programming_error(samples: int) -> None:
    gate = SpeechGate(GateSettings())
    with pytest.raises(ValueError, match="whole frames of 640 bytes"):
        gate.feed_block(Frame(b"\x01\x00" * samples, 0, 0.0))
    assert gate.frames_in == 0
