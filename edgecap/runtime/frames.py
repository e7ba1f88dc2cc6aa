"""The unit of audio inside edgecap: a fixed-length frame of 16 kHz mono s16le.

Every source yields frames of exactly ``frame_samples`` samples. ``start`` is the index of the
first sample counted from the moment the source was first opened, so timestamps are
sample-accurate and survive reopening a device (the index keeps counting; a gap in capture
shows as a jump recorded in ``Frame.gap_before``).
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 16_000
SAMPLE_WIDTH = 2  # bytes, s16le
CHANNELS = 1
FRAME_MS_CHOICES = (10, 20, 30)  # what webrtcvad accepts


def frame_samples(frame_ms: int) -> int:
    """Samples in one frame of ``frame_ms`` milliseconds at 16 kHz."""
    if frame_ms not in FRAME_MS_CHOICES:
        raise ValueError(f"frame length must be one of {FRAME_MS_CHOICES} ms, not {frame_ms}")
    return SAMPLE_RATE * frame_ms // 1000


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of audio.

    pcm: exactly ``frame_samples * 2`` bytes of s16le mono at 16 kHz.
    start: index of the first sample since the source was first opened.
    captured_at: ``time.monotonic()`` when the frame's last sample was read.
    gap_before: samples of capture lost immediately before this frame (device gone,
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


def seconds(samples: int) -> float:
    return samples / SAMPLE_RATE
