from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecap.audio.wav import WavSource
from edgecap.runtime.resample import StreamResampler
from tests.audio.signals import dominant_frequency, rms_db, sine, write_wav

RATES = [8000, 11025, 22050, 44100, 48000]


def run(r: StreamResampler, x: np.ndarray, block_sizes: list[int] | None = None) -> np.ndarray:
    parts = []
    if block_sizes is None:
        parts.append(r.process(x))
    else:
        pos = 0
        for size in block_sizes:
            parts.append(r.process(x[pos : pos + size]))
            pos += size
        parts.append(r.process(x[pos:]))
    parts.append(r.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize("rate", RATES)
def test_1khz_sine_stays_1khz_with_low_error(rate: int) -> None:
    x = sine(1000, rate, 1.0, amplitude=10000)
    y = run(StreamResampler(rate, 16000), x)
    assert len(y) == math.ceil(len(x) * 16000 / rate)
    ideal = sine(1000, 16000, len(y) / 16000, amplitude=10000)[: len(y)]
    core = slice(200, -200)  # away from the zero-padded stream edges
    assert dominant_frequency(y[core], 16000) == pytest.approx(1000, abs=0.5)
    err = y[core].astype(np.float64) - ideal[core]
    # Within a few LSB of the ideal 16 kHz sine: -60 dB relative to the signal.
    assert rms_db(err, 10000) < -60


@pytest.mark.parametrize(
    ("rate", "tone"), [(48000, 10000), (44100, 10000), (48000, 15000), (22050, 9000)]
)
def test_tone_above_output_nyquist_is_removed(rate: int, tone: int) -> None:
    # Without a low-pass, 10 kHz would alias to 6 kHz at 16 kHz.
    y = run(StreamResampler(rate, 16000), sine(tone, rate, 1.0, amplitude=16000))
    assert rms_db(y[200:-200], 16000) < -40


def test_passband_is_flat_for_speech() -> None:
    for tone in (100, 3000, 6000):
        y = run(StreamResampler(44100, 16000), sine(tone, 44100, 0.5, amplitude=10000))
        assert abs(rms_db(y[500:-500], 10000)) < 0.1, tone


def test_16k_passthrough_is_bit_exact() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-32768, 32768, 5000).astype(np.int16)
    r = StreamResampler(16000, 16000)
    assert r.passthrough and r.delay == 0
    y = np.concatenate([r.process(x[:1234]), r.process(x[1234:]), r.flush()])
    assert np.array_equal(y, x)


def test_upsampling_8k_doubles_length_and_keeps_tone() -> None:
    x = sine(440, 8000, 0.5)
    y = run(StreamResampler(8000, 16000), x)
    assert len(y) == 2 * len(x)
    assert dominant_frequency(y[100:-100], 16000) == pytest.approx(440, abs=0.5)


def test_full_scale_input_clips_instead_of_wrapping() -> None:
    # A full-scale square wave overshoots after low-pass filtering (Gibbs): must clip.
    x = np.tile(np.r_[np.full(50, 32767), np.full(50, -32768)], 40).astype(np.int16)
    y = run(StreamResampler(48000, 16000), x)
    assert y.max() == 32767 and y.min() == -32768
    # No wrap-around: near a positive plateau nothing is strongly negative.
    assert not np.any((y[:-1] > 30000) & (y[1:] < -30000))


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000, 44101])
def test_output_length_is_exact_while_streaming(rate: int) -> None:
    """After N inputs exactly ceil((N - delay) * out / in) outputs: constant latency, no drift."""
    r = StreamResampler(rate, 16000)
    rng = np.random.default_rng(rate)
    total_in = total_out = 0
    for _ in range(300):
        n = int(rng.integers(0, 700))
        total_out += len(r.process(np.zeros(n, np.int16)))
        total_in += n
        assert total_out == max(0, math.ceil((total_in - r.delay) * 16000 / rate))
    total_out += len(r.flush())
    assert total_out == math.ceil(total_in * 16000 / rate)


@pytest.mark.parametrize("rate", [44100, 48000, 8000, 44101])
def test_input_needed_is_exact(rate: int) -> None:
    """Feeding exactly input_needed(n) more samples yields n more outputs; one less does not."""
    rng = np.random.default_rng(3)
    a, b = StreamResampler(rate, 16000), StreamResampler(rate, 16000)
    for _ in range(20):
        want = int(rng.integers(1, 700))
        need = a.input_needed(want)
        assert need >= 1
        got_b = len(b.process(np.zeros(need - 1, np.int16)))
        got_a = len(a.process(np.zeros(need, np.int16)))
        assert want <= got_a < want + math.ceil(16000 / rate)
        assert got_b < want
        b.process(np.zeros(1, np.int16))  # keep b in step with a
        assert a.input_needed(0) == 0


@settings(max_examples=25, deadline=None)
@given(
    rate=st.sampled_from([44100, 48000, 22050, 8000, 11025, 44101]),
    cuts=st.lists(st.integers(min_value=0, max_value=900), min_size=1, max_size=30),
)
def test_chunking_does_not_change_a_sample(rate: int, cuts: list[int]) -> None:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(int(rate * 0.3)) * 6000).astype(np.int16)
    whole = run(StreamResampler(rate, 16000), x)
    pieces = run(StreamResampler(rate, 16000), x, cuts)
    assert np.array_equal(whole, pieces)


def test_reset_and_reuse_give_the_same_output() -> None:
    x = sine(700, 48000, 0.2)
    r = StreamResampler(48000, 16000)
    first = run(r, x)
    second = run(r, x)  # flush() reset the state
    assert np.array_equal(first, second)


def test_large_block_in_one_call() -> None:
    x = sine(1000, 48000, 5.0)
    y = run(StreamResampler(48000, 16000), x)
    assert len(y) == 80000


def test_rejects_bad_rates_and_shapes() -> None:
    with pytest.raises(ValueError):
        StreamResampler(0, 16000)
    with pytest.raises(ValueError):
        StreamResampler(44100, 16000).process(np.zeros((10, 2), np.int16))


def _peak_while_reading(path: Path) -> tuple[int, int]:
    """(frames read, tracemalloc peak in bytes) for a whole WAV file through WavSource."""
    src = WavSource(path, 20, realtime=False)
    frames = 0
    tracemalloc.start()
    try:
        src.open()
        while (block := src.read(1.0)) is not None:
            frames += block.samples // 320  # type: ignore[union-attr]
        src.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return frames, peak


@pytest.mark.parametrize("rate", [192_000, 191_999, 191_984])
def test_memory_does_not_grow_with_the_file_at_192_khz(tmp_path: Path, rate: int) -> None:
    """192 kHz is the largest rate a file may have: the filter is longest there (620 taps).
    191999 Hz has no common factor with 16 kHz (interpolated phases), 191984 Hz has 1000
    exact phases; 192000 Hz is plain decimation by 12. Before the work was done in bounded
    steps, building the filter alone took 60 MB at the odd rates."""
    rng = np.random.default_rng(rate)
    peaks = []
    for seconds in (2, 12):
        path = write_wav(
            tmp_path / f"{seconds}.wav", (rng.standard_normal(rate * seconds) * 3000), rate
        )
        frames, peak = _peak_while_reading(path)
        assert frames == seconds * 50
        peaks.append(peak)
    short, long = peaks
    assert long < 16_000_000, f"{long / 1e6:.1f} MB"  # the unit's MemoryMax is 300M in all
    assert abs(long - short) < 1_000_000, f"{short / 1e6:.1f} → {long / 1e6:.1f} MB"
