"""Helpers for the speech gate tests: drive a gate, check its event stream, build frames."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgecap.gate.speech_gate import SpeechGate
from edgecap.runtime.frames import SAMPLE_RATE, Frame
from edgecap.runtime.speech import EndReason, GateEvent, SpeechAudio, SpeechEnd, SpeechStart

END_REASONS = {"silence", "max_length", "end_of_input", "stop", "source_lost"}


@dataclass
class Fed:
    """One event and the index of the frame whose feed() returned it (len(frames) = flush)."""

    at_frame: int
    event: GateEvent


@dataclass
class Utterance:
    start: SpeechStart
    end: SpeechEnd
    frames: list[Frame] = field(default_factory=list)
    started_at_frame: int = 0  # index of the fed frame that produced the SpeechStart
    ended_at_frame: int = 0

    @property
    def first(self) -> int:
        return self.frames[0].start

    @property
    def last(self) -> int:
        return self.frames[-1].end


def drive(
    gate: SpeechGate, frames: Iterable[Frame], flush: EndReason | None = "end_of_input"
) -> list[Fed]:
    out: list[Fed] = []
    i = -1
    for i, frame in enumerate(frames):
        out.extend(Fed(i, e) for e in gate.feed(frame))
    if flush is not None:
        out.extend(Fed(i + 1, e) for e in gate.flush(flush))
    return out


def utterances(fed: Sequence[Fed], first_id: int = 1) -> list[Utterance]:
    """Check that the stream is well-formed and return its utterances.

    Well-formed: Start, one or more Audio, End, repeated; ids 1, 2, 3 ...; the frames of an
    utterance are contiguous, begin at Start.sample and end at End.sample; the onset lies
    inside the utterance (or, after a max_length split inside the pre-roll, later);
    utterances do not overlap.
    """
    result: list[Utterance] = []
    current: Utterance | None = None
    pending: SpeechStart | None = None
    started_at = 0
    for item in fed:
        e = item.event
        if isinstance(e, SpeechStart):
            assert pending is None and current is None, f"start inside an utterance: {e}"
            expected = result[-1].start.utterance + 1 if result else first_id
            assert e.utterance == expected, f"utterance id {e.utterance}, expected {expected}"
            if result:
                assert e.sample >= result[-1].end.sample, "utterances overlap"
            pending, started_at = e, item.at_frame
        elif isinstance(e, SpeechAudio):
            assert pending is not None, f"audio outside an utterance: {e.frame.start}"
            assert e.utterance == pending.utterance
            if current is None:
                assert e.frame.start == pending.sample, "first frame does not start at sample"
                current = Utterance(pending, None, [], started_at)  # type: ignore[arg-type]
            else:
                prev = current.frames[-1]
                assert e.frame.start == prev.end, f"gap/overlap at {prev.end} → {e.frame.start}"
            current.frames.append(e.frame)
        elif isinstance(e, SpeechEnd):
            assert pending is not None, "end without start"
            assert current is not None, "utterance without audio"
            assert e.utterance == pending.utterance
            assert e.reason in END_REASONS
            assert e.sample == current.last, "end sample is not the end of the last frame"
            assert pending.sample <= pending.onset, "onset before the first sample"
            # (a max_length split inside the pre-roll may leave the onset in a later piece)
            assert pending.onset < e.sample or e.reason == "max_length", "onset after the end"
            assert e.at >= pending.at
            current.end = e
            current.ended_at_frame = item.at_frame
            result.append(current)
            current, pending = None, None
        else:  # pragma: no cover
            raise AssertionError(f"unknown event {e!r}")
    assert pending is None, "stream ends inside an utterance"
    return result


def forwarded(fed: Sequence[Fed]) -> list[Frame]:
    return [f.event.frame for f in fed if isinstance(f.event, SpeechAudio)]


def frames(pcm: bytes, frame_ms: int = 20, start: int = 0) -> list[Frame]:
    n = SAMPLE_RATE * frame_ms // 1000 * 2
    return [Frame(pcm[i : i + n], start + i // 2, 0.0) for i in range(0, len(pcm) - n + 1, n)]


def noise(n_samples: int, rms: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = np.clip(np.round(rng.normal(0.0, rms, n_samples)), -32768, 32767)
    return x.astype("<i2").tobytes()


def buzz(n_samples: int, amplitude: float = 8000.0, f0: float = 150.0) -> bytes:
    """A harmonic tone with a falling spectrum: webrtcvad calls it speech in every mode."""
    t = np.arange(n_samples) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 25))
    x = x / np.abs(x).max() * amplitude
    return np.round(x).astype("<i2").tobytes()


class Script:
    """A scripted detector for exact state-machine tests: answers from the marker that
    scripted_frames() puts in each frame, and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def is_speech(self, pcm: bytes, sample_rate: int) -> bool:
        assert sample_rate == SAMPLE_RATE
        self.calls += 1
        return pcm[4] == 1


def scripted_frames(plan: str, frame_samples: int = 320, start: int = 0) -> list[Frame]:
    """Frames described by a string: "V" voiced, "n" non-speech sound, "0" digital silence
    (spaces are ignored). Non-silent frames carry their index and a voiced marker for
    Script; the frames are contiguous from ``start``."""
    out = []
    for i, c in enumerate(plan.replace(" ", "")):
        if c == "0":
            pcm = bytes(frame_samples * 2)
        else:
            assert c in "Vn", c
            tag = i.to_bytes(4, "little") + (b"\x01" if c == "V" else b"\x02")
            pcm = tag + bytes(frame_samples * 2 - len(tag))
        out.append(Frame(pcm, start + i * frame_samples, float(i)))
    return out
