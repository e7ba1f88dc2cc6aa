"""Property test: random sound, random valid settings, the real webrtcvad.

Each example strings together chunks of white noise (quiet to loud), digital silence, a
harmonic buzz and snippets of real speech from the corpus (a buzz stands in when the corpus
is missing), some of them after a capture gap. The same frames go through two gates: the
production one, and one whose webrtcvad is wrapped to record every decision, so that the
opening and hang-over rules can be checked against what the detector actually said.
"""

from __future__ import annotations

from collections.abc import Callable

import webrtcvad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.corpus import clip, corpus_available
from edgecap.gate.speech_gate import GateSettings, SpeechGate
from edgecap.runtime.frames import Frame
from edgecap.runtime.speech import SpeechStart
from tests.gate.conftest import CORPUS
from tests.gate.helpers import Fed, buzz, noise, utterances


def _speech() -> list[bytes]:
    if not corpus_available(CORPUS):
        return [buzz(16000 * 4)]
    names = [
        "en_librispeech_quilter",
        "hi_read_story_1099_028",
        "zh_wenetspeech_meeting_T0000000001",
    ]
    return [clip(n, CORPUS).pcm() for n in names]


SPEECH = _speech()
NOISE = {rms: noise(16000 * 2, rms, seed=int(rms)) for rms in (10.0, 100.0, 3000.0)}
BUZZ = buzz(16000 * 2)

gate_settings = st.builds(
    GateSettings,
    enabled=st.sampled_from([True, True, True, True, False]),
    aggressiveness=st.integers(0, 3),
    frame_ms=st.sampled_from([10, 20, 30]),
    preroll_ms=st.integers(0, 600),
    hangover_ms=st.integers(0, 1000),
    min_speech_ms=st.integers(0, 400),
    max_utterance_s=st.one_of(st.just(0.0), st.floats(0.005, 3.0)),
)
chunk = st.tuples(
    st.sampled_from(["speech", "speech", "quiet", "noise", "loud", "zeros", "buzz"]),
    st.integers(1, 80),  # frames
    st.integers(0, 10**6),  # where in the source
    st.sampled_from([0, 0, 0, 0, 160, 7, -1]),  # gap before: none, declared, undeclared (-1)
)


def build(chunks: list[tuple[str, int, int, int]], frame_ms: int) -> list[Frame]:
    n = 16 * frame_ms
    size = 2 * n
    out: list[Frame] = []
    pos = 0
    for kind, count, where, gap in chunks:
        if kind == "zeros":
            pcm = bytes(size * count)
        else:
            src = {
                "quiet": NOISE[10.0],
                "noise": NOISE[100.0],
                "loud": NOISE[3000.0],
                "buzz": BUZZ,
            }.get(kind) or SPEECH[where % len(SPEECH)]
            frames_in_src = len(src) // size
            count = min(count, frames_in_src)
            first = where % (frames_in_src - count + 1)
            pcm = src[first * size : (first + count) * size]
        for i in range(count):
            declared = gap if (i == 0 and gap > 0) else 0
            if i == 0 and gap:
                pos += abs(gap) * 3
            out.append(Frame(pcm[i * size : (i + 1) * size], pos, 0.0, declared))
            pos += n
    return out


class Recorder:
    def __init__(self, mode: int) -> None:
        self.vad = webrtcvad.Vad(mode)
        self.calls: list[bool] = []

    def is_speech(self, pcm: bytes, rate: int) -> bool:
        r = self.vad.is_speech(pcm, rate)
        self.calls.append(r)
        return r


def drive_recording(
    gate: SpeechGate, frames: list[Frame], on_frame: Callable[[int, str, str], None]
) -> list[Fed]:
    fed: list[Fed] = []
    for i, f in enumerate(frames):
        before = gate.state
        fed.extend(Fed(i, e) for e in gate.feed(f))
        on_frame(i, before, gate.state)
    fed.extend(Fed(len(frames), e) for e in gate.flush("end_of_input"))
    return fed


def check_invariants(
    gate: SpeechGate, frames: list[Frame], fed: list[Fed], s: GateSettings
) -> None:
    us = utterances(fed)  # well-formed, contiguous, ids 1, 2, 3 ...
    sent = [id(f) for u in us for f in u.frames]
    assert len(sent) == len(set(sent)), "a frame was forwarded twice"
    fed_ids = {id(f) for f in frames}
    assert set(sent) <= fed_ids, "forwarded something that was not fed"
    by_start = {f.start: f for f in frames}
    for u in us:
        # every frame between the first and last forwarded one is forwarded, in this utterance
        inside = [by_start[x] for x in range(u.first, u.last, gate.frame_samples)]
        assert [id(f) for f in inside] == [id(f) for f in u.frames]
        if s.enabled:
            assert not u.frames[0].is_digital_silence()
            assert not u.frames[-1].is_digital_silence()
        if s.max_utterance_s:
            assert u.last - u.first < s.max_utterance_s * 16000 + gate.frame_samples
    if not s.enabled:
        assert sent == [id(f) for f in frames], "off mode must forward every frame"
    assert gate.frames_in == len(frames)
    assert gate.frames_forwarded == len(sent)
    assert gate.utterances == len(us)
    assert gate.state == "listening"  # after the final flush


def check_rules(
    gate: SpeechGate,
    frames: list[Frame],
    fed: list[Fed],
    voiced: list[bool],
    states: list[tuple[str, str]],
) -> None:
    """The opening and hang-over rules, against the recorded detector decisions."""
    k, w, h, p = (
        gate.open_voiced_frames,
        gate.open_window_frames,
        gate.hangover_frames,
        gate.preroll_frames,
    )
    gap = [
        i > 0 and (f.gap_before > 0 or f.start != frames[i - 1].end) for i, f in enumerate(frames)
    ]
    starts: dict[int, SpeechStart] = {}  # the first start decided at each frame
    for x in fed:
        if isinstance(x.event, SpeechStart):
            starts.setdefault(x.at_frame, x.event)
    seg = 0  # first frame of the current listening stretch (ring buffer contents)
    run = 0  # contiguous unvoiced frames in speech
    for i in range(len(frames)):
        before, after = states[i]
        if gap[i]:  # the gate ends any utterance and empties its buffer: listening
            seg = i
        if gap[i] or before == "listening":
            lo = max(seg, i - w + 1)
            should_open = voiced[i] and sum(voiced[lo : i + 1]) >= k
            assert (after == "speech") == should_open, (
                f"frame {i}: open={after}, rule={should_open}"
            )
            if should_open:
                onset = next(j for j in range(lo, i + 1) if voiced[j])
                first = max(seg, onset - p)
                while frames[first].is_digital_silence():
                    first += 1
                assert starts[i].onset == frames[onset].start
                assert starts[i].sample == frames[first].start
                run = 0
            else:
                assert i not in starts
        else:
            run = 0 if voiced[i] else run + 1
            assert (after == "listening") == (run >= h), f"frame {i}: hang-over rule"
            if after == "listening":
                seg = i + 1


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(s=gate_settings, chunks=st.lists(chunk, min_size=1, max_size=10))
def test_any_sound_any_settings(s: GateSettings, chunks: list) -> None:
    frames = build(chunks, s.frame_ms)
    if not frames:
        return
    # the production gate
    gate = SpeechGate(s)
    fed = drive_recording(gate, frames, lambda *_: None)
    check_invariants(gate, frames, fed, s)
    for f in frames:  # the gate's own digital-silence test agrees with Frame's
        assert (f.pcm == bytes(len(f.pcm))) == f.is_digital_silence()

    # the same frames with the detector's decisions recorded
    rec = Recorder(s.aggressiveness)
    gate2 = SpeechGate(s, is_speech=rec.is_speech)
    states: list[tuple[str, str]] = []
    fed2 = drive_recording(gate2, frames, lambda i, b, a: states.append((b, a)))
    check_invariants(gate2, frames, fed2, s)
    if not s.enabled:
        assert rec.calls == []
        return
    calls = iter(rec.calls)
    voiced = [False if f.is_digital_silence() else next(calls) for f in frames]
    assert next(calls, None) is None, "one detector call per frame that is not silence"
    check_rules(gate2, frames, fed2, voiced, states)
