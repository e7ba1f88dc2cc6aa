"""The unit of audio inside edgecap: frames of 16 kHz mono s16le, moved in blocks.

A frame is ``frame_samples`` samples (10, 20 or 30 ms: what webrtcvad judges). Audio moves
through the pipeline in *blocks* of whole consecutive frames, about ``BLOCK_MS`` long: a
source's ``read()`` returns one, the gate takes one in one call, and the speech it forwards
goes on as one ``SpeechAudio`` per block. Every step of the way costs Python work per item
(an object, a call, a queue operation, a thread hand-off), so items of 100 ms cost a fifth
of what 20 ms frames did; 100 ms is also what the services take per message.

A block is a ``Frame`` whose pcm holds one or more whole frames (``Block`` is the same
class): one type, so that whatever takes audio takes any whole number of samples alike.
``start`` is the index of the first sample counted from the moment the source was first
opened, so timestamps are sample-accurate and survive reopening a device (the index keeps
counting; a gap in capture shows as a jump recorded in ``Frame.gap_before``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

SAMPLE_RATE = 16_000
SAMPLE_WIDTH = 2  # bytes, s16le
CHANNELS = 1
FRAME_MS_CHOICES = (10, 20, 30)  # what webrtcvad accepts
BLOCK_MS = 100  # what a source delivers per read(): whole frames, about this long


def frame_samples(frame_ms: int) -> int:
    """Samples in one frame of ``frame_ms`` milliseconds at 16 kHz."""
    if frame_ms not in FRAME_MS_CHOICES:
        raise ValueError(f"frame length must be one of {FRAME_MS_CHOICES} ms, not {frame_ms}")
    return SAMPLE_RATE * frame_ms // 1000


def block_frames(frame_ms: int, block_ms: int = BLOCK_MS) -> int:
    """Whole frames in one block: 5 of 20 ms, 10 of 10 ms, 3 of 30 ms (90 ms); at least 1."""
    frame_samples(frame_ms)  # validates frame_ms
    return max(1, block_ms // frame_ms)


@dataclass(frozen=True, slots=True)
class Frame:
    """Audio: one frame, or a block of whole consecutive frames (see the module docstring).

    pcm: s16le mono at 16 kHz; a whole number of frames (``frame_samples * 2`` bytes each).
    start: index of the first sample since the source was first opened.
    captured_at: ``time.monotonic()`` when the last sample was read.
    gap_before: samples of capture lost immediately before the first sample (device gone,
        overrun); 0 in the normal case.
    """

    pcm: bytes
    start: int
    captured_at: float
    gap_before: int = 0

    @property
    def samples(self) -> int:
        return len(self.pcm) // SAMPLE_WIDTH

    @property
    def end(self) -> int:
        """Index one past the last sample of this frame."""
        return self.start + self.samples

    def is_digital_silence(self) -> bool:
        """True when every sample is exactly zero (a muted or dead source, never a real room)."""
        return not any(self.pcm)


# What a source's read() returns and the gate's feed_block() takes: a Frame of one or more
# whole frames.
Block: TypeAlias = Frame


def seconds(samples: int) -> float:
    return samples / SAMPLE_RATE
