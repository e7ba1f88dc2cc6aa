"""Small PCM helpers shared by the sources: sample decoding, channel pick/mix, int16 output.

Everything works on numpy arrays shaped ``(frames, channels)`` so that one vectorised call
handles a whole block. The pipeline inside every source is::

    bytes --decode_samples--> int16 (frames, channels) --to_mono--> int16 (frames,)
          --StreamResampler--> int16 at 16 kHz --PendingAudio--> a block of whole frames

Integer conversions round to nearest instead of truncating: truncation would add a constant
-0.5 LSB bias, a DC offset that some speech engines' energy-based endpointers notice.

A source whose input is already 16 kHz mono s16le skips all of that (``PendingAudio.add_pcm``),
so numpy is imported inside the functions that use it and never at module level: the daemon's
usual path (a microphone opened at 16 kHz mono) then never loads it, which saves about 15 MB
of RSS (issue 14). tests/daemon/test_plain_path_imports.py keeps it that way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from edgecap.runtime.frames import SAMPLE_WIDTH, Block

# shared with the speaker output, so they live with the resampler on the bottom floor
from edgecap.runtime.resample import INT16_MAX, INT16_MIN, float_to_int16

if TYPE_CHECKING:
    import numpy as np

# What a file or stream may claim and still be read. Outside these a header is corrupt or
# hostile, not audio: 1 Hz would stretch a small file into a day of "speech", 4 GHz would make
# the resampler's filter larger than the box's memory, 65535 channels would make one read
# block hundreds of megabytes.
MIN_RATE = 8000
MAX_RATE = 192_000
MAX_CHANNELS = 8


@dataclass(frozen=True, slots=True)
class SampleFormat:
    """How one sample is stored: ``kind`` "int" (8 bit unsigned, else signed) or "float",
    ``bits`` the container size (8/16/24/32 for int, 32/64 for float), little-endian."""

    kind: Literal["int", "float"]
    bits: int

    @property
    def width(self) -> int:
        """Bytes per sample."""
        return self.bits // 8

    def __str__(self) -> str:
        if self.kind == "float":
            return f"{self.bits}-bit float"
        return "8-bit unsigned" if self.bits == 8 else f"{self.bits}-bit signed"


S16LE = SampleFormat("int", 16)
SUPPORTED_FORMATS = frozenset(
    {SampleFormat("int", b) for b in (8, 16, 24, 32)} | {SampleFormat("float", b) for b in (32, 64)}
)


@dataclass(slots=True)
class NonFinite:
    """Running count of the NaN and infinite float samples :func:`decode_samples` replaced."""

    nan: int = 0
    inf: int = 0

    @property
    def total(self) -> int:
        return self.nan + self.inf


def decode_samples(
    data: bytes | bytearray | memoryview,
    fmt: SampleFormat,
    channels: int,
    nonfinite: NonFinite | None = None,
) -> np.ndarray:
    """Little-endian interleaved samples → int16 array of shape ``(frames, channels)``.

    ``data`` must hold a whole number of frames. Wider integers are rounded to 16 bits; floats
    (full scale ±1.0) are scaled by 32768 and clipped: NaN becomes 0 (silence), +inf and -inf
    full scale. How many were replaced is added to ``nonfinite`` so the caller can say so.
    """
    import numpy as np

    if fmt not in SUPPORTED_FORMATS:
        raise ValueError(f"unsupported sample format {fmt}")
    if channels < 1:
        raise ValueError("channels must be ≥ 1")
    frame_bytes = fmt.width * channels
    if len(data) % frame_bytes:
        raise ValueError(f"{len(data)} bytes is not a whole number of {frame_bytes}-byte frames")
    raw = np.frombuffer(data, dtype=np.uint8)
    if fmt.kind == "float":
        f = np.frombuffer(data, dtype="<f4" if fmt.bits == 32 else "<f8").astype(np.float64)
        bad = f.size - int(np.count_nonzero(np.isfinite(f)))
        if bad and nonfinite is not None:
            nans = int(np.count_nonzero(np.isnan(f)))
            nonfinite.nan += nans
            nonfinite.inf += bad - nans
        f = np.nan_to_num(f, nan=0.0, posinf=1.0, neginf=-1.0)
        out = float_to_int16(f * 32768.0)
    elif fmt.bits == 8:
        out = ((raw.astype(np.int16) - 128) << 8).astype(np.int16)
    elif fmt.bits == 16:
        out = np.frombuffer(data, dtype="<i2").astype(np.int16, copy=True)
    elif fmt.bits == 24:
        b = raw.reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v & 0x800000, v - 0x1000000, v)
        out = _round_shift_to_int16(v.astype(np.int64), 8)
    else:  # 32-bit int
        v = np.frombuffer(data, dtype="<i4").astype(np.int64)
        out = _round_shift_to_int16(v, 16)
    return out.reshape(-1, channels)


def _round_shift_to_int16(v: np.ndarray, shift: int) -> np.ndarray:
    import numpy as np

    v = (v + (1 << (shift - 1))) >> shift  # round half up
    np.clip(v, INT16_MIN, INT16_MAX, out=v)
    return v.astype(np.int16)


def to_mono(samples: np.ndarray, channel: int | None = None) -> np.ndarray:
    """``(frames, channels)`` int16 → ``(frames,)`` int16.

    ``channel=None`` averages all channels (rounded to nearest); an int picks that channel.
    A 1-D array is taken as mono already.
    """
    import numpy as np

    if samples.ndim == 1:
        if channel not in (None, 0):
            raise ValueError(f"channel {channel} requested from a mono signal")
        return samples.astype(np.int16, copy=False)
    channels = samples.shape[1]
    if channel is not None:
        if not 0 <= channel < channels:
            raise ValueError(f"channel {channel} out of range for {channels} channel(s)")
        return np.ascontiguousarray(samples[:, channel], dtype=np.int16)
    if channels == 1:
        return np.ascontiguousarray(samples[:, 0], dtype=np.int16)
    total = samples.sum(axis=1, dtype=np.int64)
    # floor((total + n/2) / n): round half up, correct for negative sums too.
    mono = np.floor_divide(total + channels // 2, channels)
    return mono.astype(np.int16)


def int16_to_bytes(samples: np.ndarray) -> bytes:
    """int16 samples → s16le bytes (explicit byte order, so big-endian hosts are right too)."""
    return samples.astype("<i2", copy=False).tobytes()


class PendingAudio:
    """16 kHz samples converted and not yet delivered, cut into blocks of whole frames.

    Pieces are kept as s16le bytes as they come and joined only when a block is cut: a read
    of exactly one block becomes the block's pcm as it is. A source whose input already is
    16 kHz mono s16le (the usual microphone, file or pipe) adds its bytes with
    :meth:`add_pcm` and pays no numpy work at all: every such call costs about a
    microsecond in a tight loop but tens of them in a thread that wakes ten times a second
    to do it (cold caches), which is most of what capture costs.
    ``start`` is the index of the next sample to deliver; it keeps counting for the life of
    the source (across reopening) and may be moved on past a gap with :meth:`skip`.
    """

    def __init__(self, frame_samples: int, block_frames: int) -> None:
        self.frame_samples = frame_samples
        self.block_frames = block_frames
        self.block_samples = frame_samples * block_frames
        self.start = 0
        self.size = 0  # samples held
        self._parts: list[bytes] = []
        self._gap = 0

    @property
    def whole_frames(self) -> int:
        return self.size // self.frame_samples

    def add(self, samples: np.ndarray) -> None:
        """int16 samples (1-D)."""
        if samples.size:
            self.add_pcm(int16_to_bytes(samples))

    def add_pcm(self, pcm: bytes) -> None:
        """s16le samples (a whole number of them)."""
        if pcm:
            self._parts.append(pcm)
            self.size += len(pcm) // SAMPLE_WIDTH

    def clear(self) -> None:
        """Forget what is held (a device reopened: its old samples are not continued)."""
        self._parts.clear()
        self.size = 0

    def skip(self, samples: int) -> None:
        """Capture lost ``samples`` here: the next block starts that much later and says so
        in ``gap_before``."""
        if samples > 0:
            self.start += samples
            self._gap += samples

    def next_frames(self, pad: bool = False) -> int:
        """How many frames :meth:`take` would deliver now."""
        fs = self.frame_samples
        held = -(-self.size // fs) if pad else self.size // fs
        return min(held, self.block_frames)

    def take(self, pad: bool = False, limit: int | None = None) -> Block | None:
        """The next block: up to ``block_frames`` whole frames (at most ``limit``), None if
        not one is held.

        ``pad``: the input has ended; a last partial frame is completed with zeros."""
        frames = self.next_frames(pad)
        if limit is not None:
            frames = min(frames, limit)
        if frames <= 0:
            return None
        n = frames * self.frame_samples
        nbytes = n * SAMPLE_WIDTH
        parts = self._parts
        joined = parts[0] if len(parts) == 1 else b"".join(parts)
        if len(joined) > nbytes:
            pcm, rest = joined[:nbytes], joined[nbytes:]
            self._parts = [rest]
            self.size = len(rest) // SAMPLE_WIDTH
        else:
            pcm = joined if len(joined) == nbytes else joined + bytes(nbytes - len(joined))
            self._parts = []
            self.size = 0
        block = Block(pcm, self.start, time.monotonic(), self._gap)
        self.start += n
        self._gap = 0
        return block
