"""Streaming band-limited sample-rate conversion (int16 → int16).

Why not something simpler: a microphone at 44.1 or 48 kHz has content up to 20 kHz. Dropping
or linearly interpolating samples folds everything above 8 kHz back into the speech band
(a 10 kHz whistle becomes a 6 kHz one), which hurts both the speech gate and recognition.

How: a Kaiser-windowed sinc low-pass, evaluated as a polyphase filter bank. With the ratio
reduced to ``L/M = out_rate/in_rate``, output sample ``k`` sits exactly at input position
``k*M/L`` (integer part ``n0``, phase ``(k*M) mod L``), and is the dot product of the input
around ``n0`` with the filter row for that phase. Positions come from integer arithmetic on the
absolute output index, so there is no accumulated rounding: after ``N`` input samples exactly
``ceil((N - delay) * L / M)`` outputs have been produced, and after :meth:`flush` exactly
``ceil(N * L / M)``. Because every output depends only on absolute positions, the result does not
depend on how the input was split into blocks.

The filter is centred (zero phase): output ``k`` corresponds to input time ``k*M/L`` with no
shift, at the cost of ``delay`` input samples of look-ahead (1.6 ms at 44.1 or 48 kHz).

It lives on the bottom floor because two stages use it: capture (a device or file at any
rate → 16 kHz) and the speaker output (spoken translation → the rate the device takes).

numpy is imported where it is used, never at module level: a source that is already at
16 kHz builds a pass-through resampler and never feeds it, and importing numpy costs the
daemon about 15 MB of RSS it otherwise does without (issue 14). A pass-through resampler's
constructor, ``reset`` and ``input_needed`` touch no numpy; ``process`` and ``flush`` do.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

INT16_MIN = -32768
INT16_MAX = 32767

# Filter design: ZERO_CROSSINGS sinc lobes each side of the centre (at the lower of the two
# rates), Kaiser beta 8, cut-off at 93 % of the lower Nyquist frequency. Measured for 44.1 and
# 48 kHz → 16 kHz: -0.5 dB at 7 kHz, -7.6 dB at 7.5 kHz, ≤ -79 dB from 8.3 kHz up (so at most a
# sliver of 8.0-8.3 kHz folds back, into 7.7-8 kHz, far above the speech formants).
ZERO_CROSSINGS = 24
KAISER_BETA = 8.0
ROLLOFF = 0.93
# Rates with an unusual ratio (L > MAX_PHASES, e.g. 44101 Hz) use MAX_PHASES tabulated phases
# with linear interpolation between neighbours instead of one row per exact phase.
MAX_PHASES = 1024
# Elements (float64) of each (outputs × taps) matrix one vectorised step builds: 1 MB. The
# outputs per step shrink as the filter grows (192 kHz → 16 kHz needs 620 taps, 48 kHz 156),
# so a step's temporaries stay the same size whatever the rate ratio; input is dropped as soon
# as no output needs it, so nothing grows with the length of the stream either. What does grow
# with the ratio is the filter table, (phases + 1) × taps: at most 6 MB for rates up to
# 192 kHz (10 MB at 384 kHz), one reason the file sources refuse higher rates (pcm.MAX_RATE).
GATHER_BUDGET = 1 << 17
MIN_PIECE = 16
DESIGN_BLOCK = 1 << 14  # table elements designed per step (see _design_table)


class StreamResampler:
    """Converts a stream of int16 samples from ``in_rate`` to ``out_rate``.

    Feed blocks with :meth:`process`; call :meth:`flush` at the end of the stream to get the
    last ``delay`` samples' worth of output. Equal rates are a pure pass-through.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} → {out_rate}")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        g = math.gcd(self.in_rate, self.out_rate)
        self._up = self.out_rate // g  # L
        self._down = self.in_rate // g  # M
        self.passthrough = self._up == self._down
        if self.passthrough:
            self.delay = 0
            return
        import numpy as np

        # Cut-off relative to the input Nyquist frequency.
        cutoff = ROLLOFF * min(1.0, self.out_rate / self.in_rate)
        half_width = ZERO_CROSSINGS / cutoff  # in input samples
        self.delay = math.ceil(half_width)  # H: look-ahead in input samples
        self._taps = 2 * self.delay  # K: inputs n0-H+1 .. n0+H
        self._phases = min(self._up, MAX_PHASES)
        self._table = _design_table(self._phases, self.delay, cutoff, half_width)
        self.piece = max(MIN_PIECE, GATHER_BUDGET // self._taps)  # outputs per step
        self._rows_by_k: np.ndarray | None = None
        if self._phases == self._up and self._up > 1:
            # Row for output k is table[(k*M) mod L]; lay that sequence out (wrapping round)
            # so that any `piece` consecutive outputs are one contiguous slice. It holds every
            # row, so it replaces the table.
            k = np.arange(self._up + self.piece, dtype=np.int64)
            self._rows_by_k = self._table[(k * self._down) % self._up]
            self._table = self._rows_by_k[:0]
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next sample is sample 0 of a new stream."""
        if self.passthrough:
            return
        import numpy as np

        # Input before sample 0 counts as silence: the buffer starts with H zeros at index -H.
        self._buf = np.zeros(self.delay, dtype=np.float64)
        self._base = -self.delay  # absolute index of _buf[0]
        self._n_in = 0  # input samples received
        self._k = 0  # next output index

    def input_needed(self, n_out: int) -> int:
        """Input samples still to feed before :meth:`process` can return ``n_out`` more outputs
        (0 if they can be produced already)."""
        if n_out <= 0:
            return 0
        if self.passthrough:
            return n_out
        last = self._k + n_out - 1
        n0 = (last * self._down) // self._up
        return max(0, n0 + self.delay + 1 - self._n_in)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Feed int16 samples (1-D); return every output sample that is now complete."""
        import numpy as np

        x = np.asarray(samples)
        if x.ndim != 1:
            raise ValueError("StreamResampler takes mono (1-D) samples")
        if self.passthrough:
            return x.astype(np.int16, copy=False)
        if x.size:
            self._buf = np.concatenate((self._buf, x.astype(np.float64)))
            self._n_in += x.size
        # Output k is complete once input index floor(k*M/L) + H has arrived:
        # k*M < (n_in - H) * L  ⇔  k < ceil((n_in - H) * L / M).
        k_end = _ceil_div((self._n_in - self.delay) * self._up, self._down)
        return self._produce(k_end)

    def flush(self) -> np.ndarray:
        """End of stream: return the remaining output (input is taken as silence after the
        end) and :meth:`reset`. Total output over the stream is exactly ``ceil(N*L/M)``.
        A pass-through resampler holds nothing back: a source that skips the call when
        :attr:`passthrough` loses nothing."""
        import numpy as np

        if self.passthrough:
            return np.zeros(0, dtype=np.int16)
        k_end = _ceil_div(self._n_in * self._up, self._down)
        self._buf = np.concatenate((self._buf, np.zeros(self.delay, dtype=np.float64)))
        out = self._produce(k_end)
        self.reset()
        return out

    def _produce(self, k_end: int) -> np.ndarray:
        import numpy as np

        if k_end <= self._k:
            return np.zeros(0, dtype=np.int16)
        # Bounded pieces keep the (outputs × taps) gather matrix small for huge blocks.
        parts = []
        while self._k < k_end:
            parts.append(self._produce_piece(min(k_end, self._k + self.piece)))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _produce_piece(self, k_end: int) -> np.ndarray:
        import numpy as np
        from numpy.lib.stride_tricks import sliding_window_view

        k0 = self._k
        n = k_end - k0
        first_n0 = (k0 * self._down) // self._up
        offset = first_n0 - self.delay + 1 - self._base  # _buf index of output k0's first tap
        if self._up == 1:
            # Integer decimation: one filter row, windows are a strided view (no copies).
            view = sliding_window_view(self._buf, self._taps)
            windows = view[offset : offset + (n - 1) * self._down + 1 : self._down]
            y = np.einsum("ij,j->i", windows, self._table[0])
        else:
            k = np.arange(k0, k_end, dtype=np.int64)
            n0 = (k * self._down) // self._up
            idx = (n0 - first_n0 + offset)[:, None] + np.arange(self._taps, dtype=np.int64)
            windows = self._buf[idx]
            if self._rows_by_k is not None:
                # Phase depends only on k mod L: a slice of the pre-tiled table, no gather.
                r = k0 % self._up
                rows = self._rows_by_k[r : r + n]
            else:
                phase = (k * self._down) % self._up
                scaled = phase * self._phases
                i0 = scaled // self._up
                w = ((scaled % self._up) / self._up)[:, None]
                rows = self._table[i0] * (1.0 - w) + self._table[i0 + 1] * w
            y = np.einsum("ij,ij->i", windows, rows)
        self._k = k_end
        # Drop input no longer needed by the next output.
        keep_from = (self._k * self._down) // self._up - self.delay + 1
        drop = keep_from - self._base
        if drop > 0:
            self._buf = self._buf[drop:]
            self._base += drop
        return float_to_int16(y)


def float_to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples on the int16 scale (±32768) → int16, rounded to nearest and clipped.

    NaN becomes 0 (silence) explicitly: casting NaN to an integer is undefined in C, so what
    numpy's cast gives (and whether it warns) depends on the CPU and the numpy version.
    """
    import numpy as np

    y = np.rint(x)
    np.clip(y, INT16_MIN, INT16_MAX, out=y)
    np.nan_to_num(y, copy=False, nan=0.0)
    return y.astype(np.int16)


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b) if a > 0 else 0


def _design_table(phases: int, h: int, cutoff: float, half_width: float) -> np.ndarray:
    """Row ``p`` (input fraction ``p/phases``) holds the taps for inputs n0-H+1 .. n0+H.

    There are ``phases + 1`` rows: the extra last row (fraction 1.0) lets the interpolating
    path read ``row[i0 + 1]`` without a special case. Each row is normalised to unit DC gain,
    which removes the small per-phase gain ripple of a truncated sinc. Computed a block of
    rows at a time: ``np.i0`` makes a dozen temporaries the size of its input, which for the
    whole table at once came to 60 MB at 192 kHz (and 100 GB for a header claiming 4 GHz).
    """
    import numpy as np

    table = np.empty((phases + 1, 2 * h), dtype=np.float64)
    j = np.arange(2 * h, dtype=np.float64)[None, :]
    block = max(1, DESIGN_BLOCK // (2 * h))
    for first in range(0, phases + 1, block):
        frac = np.arange(first, min(first + block, phases + 1), dtype=np.float64)[:, None]
        t = frac / phases + (h - 1) - j  # distance (input samples) from output to each tap
        window = np.zeros_like(t)
        inside = np.abs(t) < half_width
        window[inside] = np.i0(KAISER_BETA * np.sqrt(1.0 - (t[inside] / half_width) ** 2))
        window /= np.i0(KAISER_BETA)
        rows = cutoff * np.sinc(cutoff * t) * window
        rows /= rows.sum(axis=1, keepdims=True)
        table[first : first + len(rows)] = rows
    return table
