from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecap.audio.pcm import NonFinite, SampleFormat, decode_samples, float_to_int16, to_mono


def test_decode_each_integer_width() -> None:
    assert decode_samples(bytes([0, 128, 255]), SampleFormat("int", 8), 1)[:, 0].tolist() == [
        -32768,
        0,
        32512,
    ]
    s16 = np.array([-32768, -1, 0, 1, 32767], "<i2")
    assert decode_samples(s16.tobytes(), SampleFormat("int", 16), 1)[:, 0].tolist() == s16.tolist()
    # 24-bit: 0x7FFFFF → 32767 (rounded, clipped), 0x800000 → -32768, 0x000180 → 2 (1.5 rounds up)
    s24 = bytes.fromhex("ffff7f000080800100000000")
    assert decode_samples(s24, SampleFormat("int", 24), 1)[:, 0].tolist() == [32767, -32768, 2, 0]
    s32 = np.array([2**31 - 1, -(2**31), 3 << 16, -(3 << 16)], "<i4")
    got = decode_samples(s32.tobytes(), SampleFormat("int", 32), 1)[:, 0].tolist()
    assert got == [32767, -32768, 3, -3]


def test_decode_float_scales_clips_and_drops_nan() -> None:
    f = np.array([0.0, 0.5, -1.0, 1.0, 2.0, np.nan, -0.25], "<f4")
    got = decode_samples(f.tobytes(), SampleFormat("float", 32), 1)[:, 0].tolist()
    assert got == [0, 16384, -32768, 32767, 32767, 0, -8192]
    d = np.array([0.25, -0.5], "<f8")
    assert decode_samples(d.tobytes(), SampleFormat("float", 64), 1)[:, 0].tolist() == [
        8192,
        -16384,
    ]


def test_decode_interleaved_channels() -> None:
    x = np.array([[1, -1], [2, -2], [3, -3]], "<i2")
    out = decode_samples(x.tobytes(), SampleFormat("int", 16), 2)
    assert out.shape == (3, 2) and np.array_equal(out, x)


def test_decode_rejects_partial_frames_and_unknown_formats() -> None:
    with pytest.raises(ValueError):
        decode_samples(b"\0\0\0", SampleFormat("int", 16), 1)
    with pytest.raises(ValueError):
        decode_samples(b"\0" * 12, SampleFormat("int", 12), 1)


def test_to_mono_mix_pick_and_validation() -> None:
    x = np.array([[100, 300], [-1, -2], [32767, 32767], [-32768, -32768]], np.int16)
    assert to_mono(x).tolist() == [200, -1, 32767, -32768]  # -1.5 rounds half up to -1
    assert to_mono(x, 1).tolist() == [300, -2, 32767, -32768]
    assert to_mono(x[:, :1]).tolist() == [100, -1, 32767, -32768]
    assert to_mono(np.array([5, 6], np.int16)).tolist() == [5, 6]
    with pytest.raises(ValueError):
        to_mono(x, 2)


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(
        np.int16,
        st.tuples(st.integers(1, 50), st.integers(1, 6)),
        elements=st.integers(-32768, 32767),
    )
)
def test_mix_is_the_rounded_mean(x: np.ndarray) -> None:
    expected = np.floor(x.astype(np.float64).mean(axis=1) + 0.5)
    assert np.array_equal(to_mono(x).astype(np.float64), expected)


def test_float_to_int16_rounds_to_nearest() -> None:
    assert float_to_int16(np.array([0.4, 0.6, -0.6, 1e9, -1e9])).tolist() == [
        0,
        1,
        -1,
        32767,
        -32768,
    ]


def test_decode_counts_the_nan_and_inf_it_replaces() -> None:
    f = np.array([np.nan, np.inf, -np.inf, 0.5, np.nan, np.nan], "<f8")
    tally = NonFinite()
    got = decode_samples(f.tobytes(), SampleFormat("float", 64), 2, tally)
    assert got.tolist() == [[0, 32767], [-32768, 16384], [0, 0]]
    assert (tally.nan, tally.inf, tally.total) == (3, 2, 5)
    decode_samples(np.array([np.inf], "<f4").tobytes(), SampleFormat("float", 32), 1, tally)
    assert (tally.nan, tally.inf) == (3, 3)  # a running count over blocks


def test_float_to_int16_turns_nan_into_silence_without_an_invalid_cast() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns "invalid value encountered in cast"
        got = float_to_int16(np.array([np.nan, 1.0, np.nan, -np.inf, np.inf]))
    assert got.tolist() == [0, 1, 0, -32768, 32767]
