from __future__ import annotations

import logging
import os
import struct
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from edgecap.audio.source import NOT_READY, SourceConfigError
from edgecap.audio.wav import WavSource, read_wav
from edgecap.runtime.frames import Frame
from tests.audio.blocks import assert_blocks, frame_count
from tests.audio.signals import (
    chunk,
    dominant_frequency,
    raw_wav_bytes,
    sine,
    wav_bytes,
    write_wav,
)

RNG = np.random.default_rng(42)
REF = (RNG.standard_normal((1600, 2)) * 8000).clip(-32768, 32767).astype(np.int16)


def drain(src: WavSource, limit: int = 100_000) -> list[Frame]:
    """Every block to the end of input (each checked: whole frames, contiguous)."""
    blocks: list[Frame] = []
    for _ in range(limit):
        b = src.read(1.0)
        if b is None:
            assert_blocks(blocks, src.frame_samples, src.block_frames)
            return blocks
        assert isinstance(b, Frame)
        blocks.append(b)
    raise AssertionError("source never ended")


def pcm_of(frames: list[Frame]) -> np.ndarray:
    return np.frombuffer(b"".join(f.pcm for f in frames), "<i2")


def encode(samples: np.ndarray, kind: str, bits: int) -> bytes:
    """int16 reference → the given WAV sample encoding (exactly representable)."""
    s = samples.astype(np.int64)
    if kind == "float":
        return (s / 32768.0).astype("<f4" if bits == 32 else "<f8").tobytes()
    if bits == 8:
        return ((s >> 8) + 128).astype(np.uint8).tobytes()
    if bits == 16:
        return s.astype("<i2").tobytes()
    if bits == 24:
        v = (s << 8) & 0xFFFFFF
        return np.stack([v & 0xFF, (v >> 8) & 0xFF, v >> 16], axis=-1).astype(np.uint8).tobytes()
    return (s << 16).astype("<i4").tobytes()


@pytest.mark.parametrize(
    ("kind", "bits", "extensible"),
    [
        ("int", 8, False),
        ("int", 16, False),
        ("int", 24, False),
        ("int", 32, False),
        ("float", 32, False),
        ("float", 64, False),
        ("int", 16, True),
        ("int", 24, True),
        ("int", 32, True),
        ("float", 32, True),
    ],
)
def test_decodes_every_encoding(tmp_path: Path, kind: str, bits: int, extensible: bool) -> None:
    ref = REF if bits != 8 else (REF >> 8) << 8  # 8-bit holds only the top byte
    path = tmp_path / "x.wav"
    path.write_bytes(
        wav_bytes(
            encode(ref, kind, bits),
            tag=3 if kind == "float" else 1,
            channels=2,
            rate=16000,
            bits=bits,
            extensible=extensible,
        )
    )
    info, samples = read_wav(path)
    assert (info.channels, info.rate, info.sample_format.bits) == (2, 16000, bits)
    assert np.array_equal(samples, ref)
    # Through the source: mono mix by default, or one channel.
    left = pcm_of(drain(_fast(path, channel=0)))[: len(ref)]
    assert np.array_equal(left, ref[:, 0])
    mixed = pcm_of(drain(_fast(path)))[: len(ref)]
    expect = np.floor_divide(ref.astype(np.int32).sum(axis=1) + 1, 2)
    assert np.array_equal(mixed, expect)


def test_extensible_24_valid_bits_in_32_bit_container(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(
        wav_bytes(
            encode(REF, "int", 32),
            tag=1,
            channels=2,
            rate=16000,
            bits=32,
            extensible=True,
            valid_bits=24,
        )
    )
    assert np.array_equal(read_wav(path)[1], REF)


def _fast(path: Path, **kw: object) -> WavSource:
    src = WavSource(path, 20, realtime=False, **kw)  # type: ignore[arg-type]
    src.open()
    return src


def test_speech_file_is_bit_exact_with_exact_frame_starts(
    quilter: np.ndarray, corpus_dir: Path
) -> None:
    src = _fast(corpus_dir / "en_librispeech_quilter.16k.wav")
    assert src.name == f"wav:{corpus_dir / 'en_librispeech_quilter.16k.wav'}"
    blocks = drain(src)
    src.close()
    # blocks of 5 frames of 20 ms, the last one shorter
    assert [b.start for b in blocks] == [i * 1600 for i in range(len(blocks))]
    assert all(len(b.pcm) == 3200 for b in blocks[:-1])
    got = pcm_of(blocks)
    assert frame_count(blocks) == -(-len(quilter) // 320)
    assert len(blocks) == -(-len(quilter) // 1600)
    assert np.array_equal(got[: len(quilter)], quilter)
    assert not got[len(quilter) :].any()  # the last partial frame is zero-padded


@pytest.mark.parametrize(("frame_ms", "block_frames"), [(10, 10), (20, 5), (30, 3)])
def test_blocks_are_about_100_ms_of_whole_frames(
    tmp_path: Path, frame_ms: int, block_frames: int
) -> None:
    mono = sine(440, 16000, 0.55)  # 8800 samples: the last block is short
    src = WavSource(write_wav(tmp_path / "x.wav", mono, 16000), frame_ms, realtime=False)
    src.open()
    blocks = drain(src)
    assert src.block_frames == block_frames
    n = 16 * frame_ms * block_frames
    assert [b.samples for b in blocks[:-1]] == [n] * (len(blocks) - 1)
    assert np.array_equal(pcm_of(blocks)[:8800], mono)


def test_44k1_stereo_is_resampled_to_16k(tmp_path: Path) -> None:
    left = sine(1000, 44100, 1.0)
    right = sine(3000, 44100, 1.0)
    path = write_wav(tmp_path / "s.wav", np.stack([left, right], axis=1), 44100)
    frames = drain(_fast(path, channel=1))
    out = pcm_of(frames)
    assert len(out) == 16000  # exactly 1 s = 50 frames of 320
    assert dominant_frequency(out[400:-400], 16000) == pytest.approx(3000, abs=1)
    out0 = pcm_of(drain(_fast(path, channel=0)))
    assert dominant_frequency(out0[400:-400], 16000) == pytest.approx(1000, abs=1)


def test_odd_chunks_list_and_fact_are_skipped(tmp_path: Path) -> None:
    mono = REF[:, 0]
    extra = (
        chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00edgc\x00")
        + chunk(b"odd!", b"abc")
        + chunk(b"fact", b"\x40\x06\x00\x00")
    )
    path = tmp_path / "x.wav"
    path.write_bytes(
        wav_bytes(mono.tobytes(), tag=1, channels=1, rate=16000, bits=16, extra_chunks=extra)
    )
    assert np.array_equal(read_wav(path)[1][:, 0], mono)


def test_8bit_odd_length_data_is_padded_and_read(tmp_path: Path) -> None:
    payload = bytes([128, 255, 0])  # 3 bytes: odd data chunk, RIFF pad byte follows
    path = tmp_path / "x.wav"
    path.write_bytes(
        wav_bytes(payload, tag=1, channels=1, rate=16000, bits=8) + chunk(b"LIST", b"xx")
    )
    assert read_wav(path)[1][:, 0].tolist() == [0, 32512, -32768]


@pytest.mark.parametrize("size_field", [0, 0xFFFFFFFF])
def test_streamed_writer_sizes_read_to_eof(tmp_path: Path, size_field: int) -> None:
    mono = REF[:, 0]
    path = tmp_path / "x.wav"
    path.write_bytes(
        wav_bytes(
            mono.tobytes(),
            tag=1,
            channels=1,
            rate=16000,
            bits=16,
            data_size=size_field,
            riff_size=size_field,
        )
    )
    info, samples = read_wav(path)
    assert info.data_size is None
    assert np.array_equal(samples[:, 0], mono)
    assert np.array_equal(pcm_of(drain(_fast(path)))[: len(mono)], mono)


def test_data_size_past_end_of_file_reads_what_is_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mono = REF[:, 0]
    path = tmp_path / "x.wav"
    path.write_bytes(
        wav_bytes(mono.tobytes(), tag=1, channels=1, rate=16000, bits=16, data_size=10**6)
    )
    out = pcm_of(drain(_fast(path)))
    assert np.array_equal(out[: len(mono)], mono) and len(out) == 1600
    assert "reading to end of file" in caplog.text


def test_rf64_uses_the_ds64_size(tmp_path: Path) -> None:
    mono = REF[:, 0]
    riff = wav_bytes(mono.tobytes(), tag=1, channels=1, rate=16000, bits=16, data_size=0xFFFFFFFF)
    ds64 = chunk(b"ds64", struct.pack("<QQQI", 0, len(mono) * 2 - 100, 0, 0))
    rf64 = b"RF64" + b"\xff\xff\xff\xff" + b"WAVE" + ds64 + riff[12:] + chunk(b"LIST", b"trailer!")
    path = tmp_path / "x.wav"
    path.write_bytes(rf64)
    assert np.array_equal(read_wav(path)[1][:, 0], mono[:-50])


def test_loop_restarts_and_keeps_counting(tmp_path: Path) -> None:
    mono = sine(500, 16000, 0.05)  # 800 samples = 2.5 frames
    path = write_wav(tmp_path / "x.wav", mono, 16000)
    src = WavSource(path, 20, realtime=False, loop=True)
    src.open()
    blocks = [src.read(1.0) for _ in range(3)]
    assert all(isinstance(b, Frame) for b in blocks)
    assert [b.start for b in blocks] == [0, 1600, 3200]  # type: ignore[union-attr]
    out = pcm_of(blocks)  # type: ignore[arg-type]
    assert np.array_equal(out[:4800], np.tile(mono, 6))  # seamless: no padding at the seam


def test_realtime_pacing_follows_an_absolute_schedule(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "x.wav", sine(300, 16000, 0.5), 16000)
    src = WavSource(path, 20, realtime=True)
    src.open()
    t0 = time.monotonic()
    first = src.read(0.0)
    assert first is NOT_READY  # frame 0 is due 20 ms after open: not earlier
    got = []
    while (b := src.read(1.5)) is not None:
        assert isinstance(b, Frame)
        got.append(b)
    elapsed = time.monotonic() - t0
    # 5 blocks of 5 frames, each delivered once its last frame is due (one sleep per block)
    assert [b.samples for b in got] == [1600] * 5
    for k, b in enumerate(got):
        assert b.captured_at - src._t0 >= (k + 1) * 0.1
    assert got[0].captured_at - src._t0 < 0.15  # not a frame late
    assert elapsed >= 0.5, elapsed
    assert elapsed < 2.0, elapsed


def test_realtime_read_with_a_short_timeout_gives_the_frames_due(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "x.wav", sine(300, 16000, 0.5), 16000)
    src = WavSource(path, 20, realtime=True)
    src.open()
    got = []
    while (b := src.read(0.05)) is not None:
        if isinstance(b, Frame):
            got.append(b)
    assert_blocks(got, 320, 5, full=False)
    assert frame_count(got) == 25
    assert any(b.samples < 1600 for b in got)  # what was due when the timeout came


def test_interrupt_ends_a_realtime_wait_and_later_reads_do_not_wait(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "x.wav", sine(300, 16000, 2.0), 16000)
    src = WavSource(path, 20, realtime=True)
    src.open()
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(src.read(10.0)))
    reader.start()  # the first block is due 100 ms after open: the reader waits
    time.sleep(0.07)
    t = time.monotonic()
    src.interrupt()
    reader.join(2)
    assert time.monotonic() - t < 0.05
    (block,) = got
    # what was due when the wait ended: the first frames (all five only on a slow machine)
    assert isinstance(block, Frame) and block.start == 0 and block.gap_before == 0
    assert block.samples in (640, 960, 1280, 1600)
    t = time.monotonic()
    later = src.read(10.0)
    assert time.monotonic() - t < 0.01
    assert later is NOT_READY or (isinstance(later, Frame) and later.start == block.end)


def test_realtime_read_respects_timeout(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "x.wav", sine(300, 16000, 0.5), 16000)
    src = WavSource(path, 30, realtime=True)
    src.open()
    t = time.monotonic()
    assert src.read(0.005) is NOT_READY
    assert time.monotonic() - t < 0.025


def test_fast_mode_is_fast(quilter: np.ndarray, corpus_dir: Path) -> None:
    src = _fast(corpus_dir / "en_librispeech_quilter.wav")
    t = time.monotonic()
    drain(src)
    assert time.monotonic() - t < 1.0  # 5.9 s of audio


# -- errors --------------------------------------------------------------------------------


def _error(path: Path, **kw: object) -> str:
    src = WavSource(path, 20, realtime=False, **kw)  # type: ignore[arg-type]
    with pytest.raises(SourceConfigError) as e:
        src.open()
    return str(e.value)


def test_error_missing_file(tmp_path: Path) -> None:
    assert _error(tmp_path / "nope.wav") == f"WAV file not found: {tmp_path / 'nope.wav'}"


def test_error_directory(tmp_path: Path) -> None:
    assert "is a directory" in _error(tmp_path)


def test_error_not_a_wav(tmp_path: Path) -> None:
    p = tmp_path / "x.wav"
    p.write_bytes(b"ID3\x03\x00" + bytes(100))
    assert "not a WAV file (no RIFF header)" in _error(p)
    p.write_bytes(b"RIFF\x10\x00\x00\x00AVI LIST")
    assert "type 'AVI '" in _error(p)
    p.write_bytes(b"")
    assert "is empty" in _error(p)
    p.write_bytes(b"RIFX\x00\x00\x00\x24WAVE")
    assert "big-endian (RIFX)" in _error(p)
    p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt \xff\xff\xff\x7f")
    assert "implausible 'fmt ' chunk" in _error(p)


@pytest.mark.parametrize(
    ("tag", "name"), [(6, "A-law"), (7, "mu-law"), (0x11, "IMA ADPCM"), (0x55, "MP3")]
)
def test_error_names_the_unsupported_encoding(tmp_path: Path, tag: int, name: str) -> None:
    p = tmp_path / "x.wav"
    p.write_bytes(wav_bytes(b"\0" * 100, tag=tag, channels=1, rate=8000, bits=8))
    msg = _error(p)
    assert f"unsupported WAV encoding in {p}: {name} (format 0x{tag:04X})" in msg
    assert "sox" in msg


def test_error_unsupported_extensible_subformat_and_widths(tmp_path: Path) -> None:
    p = tmp_path / "x.wav"
    p.write_bytes(wav_bytes(b"\0" * 100, tag=7, channels=1, rate=8000, bits=8, extensible=True))
    assert "mu-law" in _error(p)
    p.write_bytes(wav_bytes(b"\0" * 96, tag=3, channels=1, rate=8000, bits=16))
    assert "16-bit float" in _error(p)


@pytest.mark.parametrize("cut", [6, 20, 30, 40])
def test_error_truncated_header(tmp_path: Path, cut: int) -> None:
    whole = wav_bytes(REF[:, 0].tobytes(), tag=1, channels=1, rate=16000, bits=16)
    p = tmp_path / "x.wav"
    p.write_bytes(whole[:cut])  # inside RIFF header / fmt chunk / before data chunk
    assert "truncated WAV header" in _error(p)


def test_error_channel_out_of_range(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "x.wav", REF, 16000)
    assert "channel 2 requested but" in _error(p, channel=2)


def test_error_loop_over_empty_file(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "x.wav", np.zeros(0, np.int16), 16000)
    src = WavSource(p, 20, realtime=False, loop=True)
    src.open()
    with pytest.raises(SourceConfigError, match="no audio to loop"):
        src.read(0.1)


def test_empty_data_ends_at_once(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "x.wav", np.zeros(0, np.int16), 16000, data_size=0, riff_size=36)
    assert drain(_fast(p)) == []


# -- absurd headers: refused with the file and the value named, never allocated --------------


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"rate": 0xFFFFFFFF}, "says 4294967295 Hz"),  # was: a 106 GiB filter table
        ({"rate": 4_000_037}, "says 4000037 Hz"),  # was: 1.45 GB resident
        ({"rate": 1}, "says 1 Hz"),  # was: a small file played for a day
        ({"rate": 0}, "says 0 Hz"),
        ({"rate": 7999}, "says 7999 Hz"),
        ({"rate": 192_001}, "says 192001 Hz"),
        ({"channels": 0, "block_align": 2}, "says 0 channels"),
        ({"channels": 65535, "bits": 8, "payload": bytes(65535 * 4)}, "says 65535 channels"),
        ({"channels": 9}, "says 9 channels"),
        ({"bits": 0, "block_align": 2}, "says 0 bits per sample"),
        ({"bits": 7, "block_align": 1}, "says 7 bits per sample"),
        ({"bits": 12, "block_align": 2}, "says 12 bits per sample"),
        ({"bits": 72, "block_align": 9}, "says 72 bits per sample"),
        ({"bits": 64}, "64-bit integer samples"),
        ({"channels": 2, "block_align": 3}, "block align 3 bytes, but 2 channel(s)"),
        ({"block_align": 8}, "block align 8 bytes, but 1 channel(s) of 16-bit samples take 2"),
    ],
)
def test_absurd_header_values_are_refused_naming_file_and_value(
    tmp_path: Path, fields: dict, says: str
) -> None:
    p = tmp_path / "bad.wav"
    p.write_bytes(raw_wav_bytes(**fields))
    msg = _error(p)
    assert str(p) in msg and says in msg
    with pytest.raises(SourceConfigError, match=r"bad\.wav"):
        read_wav(p)


def test_extensible_with_more_valid_bits_than_its_container_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.wav"
    p.write_bytes(
        wav_bytes(
            b"\0" * 64, tag=1, channels=1, rate=16000, bits=16, extensible=True, valid_bits=24
        )
    )
    assert "24 valid bits in a 16-bit sample" in _error(p)


@pytest.mark.parametrize(("rate", "channels", "bits"), [(8000, 1, 8), (192_000, 8, 24)])
def test_the_edges_of_the_sane_range_are_read(
    tmp_path: Path, rate: int, channels: int, bits: int
) -> None:
    ref = (RNG.standard_normal((rate // 10, channels)) * 4000).astype(np.int16)  # 0.1 s
    p = tmp_path / "edge.wav"
    p.write_bytes(
        wav_bytes(encode(ref, "int", bits), tag=1, channels=channels, rate=rate, bits=bits)
    )
    out = pcm_of(drain(_fast(p)))
    assert len(out) == 1600  # exactly 0.1 s at 16 kHz
    assert np.abs(out).max() > 1000


def test_a_data_size_past_the_end_does_not_allocate_what_it_claims(tmp_path: Path) -> None:
    p = tmp_path / "x.wav"
    p.write_bytes(raw_wav_bytes(payload=REF[:, 0].tobytes(), data_size=0xFFFFFFF0))
    tracemalloc.start()
    try:
        _, samples = read_wav(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(samples[:, 0], REF[:, 0])
    assert peak < 1_000_000, peak  # read(4 GB) would allocate the 4 GB first


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "f.wav"
    os.mkfifo(fifo)
    errors: list[str] = []
    opener = threading.Thread(target=lambda: errors.append(_error(fifo)), daemon=True)
    opener.start()
    opener.join(2.0)
    if opener.is_alive():  # blocked in open(): give it a writer so the thread can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        opener.join(2.0)
        pytest.fail("opening a FIFO as a WAV file waited for a writer")
    assert len(errors) == 1 and "is not a regular file" in errors[0]


# -- NaN and infinite float samples ---------------------------------------------------------


def test_nan_and_inf_become_silence_and_full_scale_and_are_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pattern = np.array([0.5, np.nan, np.inf, -np.inf, -0.5], "<f4")
    reps = 3200  # 16000 samples = 1 s: many reads, so many blocks with bad samples
    p = tmp_path / "float.wav"
    p.write_bytes(
        wav_bytes(np.tile(pattern, reps).tobytes(), tag=3, channels=1, rate=16000, bits=32)
    )
    caplog.set_level(logging.INFO, logger="edgecap.audio.wav")
    src = _fast(p)
    out = pcm_of(drain(src))
    src.close()
    assert np.array_equal(out, np.tile([16384, 0, 32767, -32768, -16384], reps))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    first = warnings[0].getMessage()
    assert str(p) in first and "NaN" in first and "silence" in first and "full scale" in first
    totals = [r.getMessage() for r in caplog.records if "replaced in all" in r.getMessage()]
    assert totals == [f"{p}: {reps} NaN and {2 * reps} infinite float sample(s) replaced in all"]


def test_a_clean_float_file_says_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "float.wav"
    p.write_bytes(wav_bytes(encode(REF, "float", 32), tag=3, channels=2, rate=16000, bits=32))
    caplog.set_level(logging.INFO, logger="edgecap.audio.wav")
    src = _fast(p)
    drain(src)
    src.close()
    assert not [r for r in caplog.records if "NaN" in r.getMessage()]
