"""Test signals and measurements shared by the audio tests."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

KSDATAFORMAT_TAIL = bytes.fromhex("00001000800000aa00389b71")


def sine(freq: float, rate: int, seconds: float, amplitude: float = 12000.0) -> np.ndarray:
    """int16 sine starting at phase 0."""
    t = np.arange(round(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """Peak of a Hann-windowed spectrum, refined by parabolic interpolation."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(x))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    shift = 0.5 * (a - c) / (a - 2 * b + c)
    return float((k + shift) * rate / len(samples))


def rms_db(samples: np.ndarray, amplitude: float) -> float:
    """RMS level of ``samples`` relative to a full sine of ``amplitude``, in dB."""
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return float(20 * np.log10(max(rms, 1e-9) / (amplitude / np.sqrt(2))))


def wav_bytes(
    payload: bytes,
    *,
    tag: int,
    channels: int,
    rate: int,
    bits: int,
    extensible: bool = False,
    valid_bits: int | None = None,
    extra_chunks: bytes = b"",
    data_size: int | None = None,
    riff_size: int | None = None,
) -> bytes:
    """A WAV file built by hand, so tests control every header field."""
    block_align = channels * bits // 8
    if extensible:
        sub = struct.pack("<I", tag) + KSDATAFORMAT_TAIL
        fmt = (
            struct.pack(
                "<HHIIHHHHI",
                0xFFFE,
                channels,
                rate,
                rate * block_align,
                block_align,
                bits,
                22,
                valid_bits or bits,
                (1 << channels) - 1,
            )
            + sub
        )
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, bits)
    body = b"WAVE" + chunk(b"fmt ", fmt) + extra_chunks
    size = len(payload) if data_size is None else data_size
    body += b"data" + struct.pack("<I", size) + payload + (b"\0" if len(payload) & 1 else b"")
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def chunk(chunk_id: bytes, body: bytes) -> bytes:
    """A RIFF chunk, padded to even length."""
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b"")


def write_wav(path: Path, samples: np.ndarray, rate: int, **kw: object) -> Path:
    """int16 (frames, channels) or (frames,) → 16-bit PCM WAV."""
    s = np.asarray(samples, dtype="<i2")
    channels = 1 if s.ndim == 1 else s.shape[1]
    path.write_bytes(
        wav_bytes(s.tobytes(), tag=1, channels=channels, rate=rate, bits=16, **kw)  # type: ignore[arg-type]
    )
    return path


def raw_wav_bytes(
    *,
    tag: int = 1,
    channels: int = 1,
    rate: int = 16000,
    bits: int = 16,
    block_align: int | None = None,
    byte_rate: int | None = None,
    payload: bytes = b"\0" * 3200,
    data_size: int | None = None,
) -> bytes:
    """A plain-fmt WAV whose every header field is given as is, however absurd: nothing is
    derived or checked, so tests can write exactly the header a broken or hostile tool would."""
    align = channels * bits // 8 if block_align is None else block_align
    rate_bytes = (rate * align) & 0xFFFFFFFF if byte_rate is None else byte_rate
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate_bytes, align, bits)
    size = len(payload) if data_size is None else data_size
    body = b"WAVE" + chunk(b"fmt ", fmt) + b"data" + struct.pack("<I", size) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body
