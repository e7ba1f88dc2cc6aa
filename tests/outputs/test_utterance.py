"""Spoken-translation chunks → utterances: WAV headers parsed (never assumed), chunk
boundaries anywhere, cut utterances, one WAV per message, refused formats, and the
decoding of 8/16/24/32-bit mono and stereo PCM to mono int16."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

from edgecap.captions.events import SynthesizedAudio
from edgecap.outputs.utterance import (
    Assembler,
    Begin,
    Finish,
    Pcm,
    PcmFormat,
    Refused,
    kind_of,
    to_mono16,
    wav_header,
)
from tests.audio.signals import chunk, wav_bytes

F16 = PcmFormat(16000, 1, 16)


def wav_file(pcm: bytes, rate: int = 16000, channels: int = 1, width: int = 2) -> bytes:
    """A WAV file as Python's wave module writes it (sizes filled in)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def chunks(data: bytes, size: int, seq: int | None = 1, lang: str = "de", fmt: str = "audio/x-wav"):
    return [
        SynthesizedAudio(lang, fmt, data[i : i + size], False, seq)
        for i in range(0, len(data), size)
    ]


def end(seq: int | None = 1, lang: str = "de", fmt: str = "audio/x-wav") -> SynthesizedAudio:
    return SynthesizedAudio(lang, fmt, b"", True, seq)


def feed_all(events) -> list:
    a = Assembler()
    out = []
    for e in events:
        out += a.feed(e)
    return out


def pcm_of(pieces) -> bytes:
    return b"".join(p.data for p in pieces if isinstance(p, Pcm))


def kinds(pieces) -> list[str]:
    return [type(p).__name__ for p in pieces if not isinstance(p, Pcm)]


def noise(n: int, seed: int = 1) -> bytes:
    return np.random.default_rng(seed).integers(-20000, 20000, n).astype("<i2").tobytes()


@pytest.mark.parametrize("size", [3200, 1, 7, 43, 44, 45, 1001])
def test_a_wav_in_chunks_of_any_size_gives_its_pcm_exactly(size: int) -> None:
    pcm = noise(4000)
    pieces = feed_all([*chunks(wav_file(pcm), size), end()])
    assert kinds(pieces) == ["Begin", "Finish"]
    assert pieces[0] == Begin("de", 1, F16)
    assert pieces[-1] == Finish(cut=False)
    assert pcm_of(pieces) == pcm
    assert all(len(p.data) % 2 == 0 for p in pieces if isinstance(p, Pcm))


def test_the_end_may_carry_the_last_bytes() -> None:
    wav = wav_file(noise(100))
    a = Assembler()
    first = a.feed(SynthesizedAudio("de", "audio/x-wav", wav[:100], False, 1))
    last = a.feed(SynthesizedAudio("de", "audio/x-wav", wav[100:], True, 1))
    assert pcm_of(first + last) == noise(100)
    assert last[-1] == Finish(cut=False) and not a.receiving


def test_header_with_extra_chunks_and_streaming_sizes() -> None:
    pcm = noise(500)
    wav = wav_bytes(
        pcm, tag=1, channels=1, rate=22050, bits=16, extra_chunks=chunk(b"LIST", b"INFOabc")
    )
    wav = wav[:4] + b"\0\0\0\0" + wav[8:]  # RIFF size 0
    streaming = wav.replace(b"data" + struct.pack("<I", len(pcm)), b"data" + b"\xff" * 4)
    for data in (wav, streaming):
        pieces = feed_all([*chunks(data, 333), end()])
        assert pieces[0] == Begin("de", 1, PcmFormat(22050, 1, 16))
        assert pcm_of(pieces) == pcm


def test_bytes_after_the_declared_data_are_not_played() -> None:
    pcm = noise(300)
    wav = wav_file(pcm) + chunk(b"LIST", b"INFOISFTxyz!")
    assert pcm_of(feed_all([*chunks(wav, 100), end()])) == pcm


def test_one_whole_wav_per_message_is_one_utterance() -> None:
    parts = [noise(1600, seed) for seed in range(4)]
    pieces = feed_all(
        [*[SynthesizedAudio("de", "audio/x-wav", wav_file(p), False, 3) for p in parts], end(3)]
    )
    assert kinds(pieces) == ["Begin", "Finish"]
    assert pcm_of(pieces) == b"".join(parts)


def test_a_wav_in_another_format_mid_utterance_starts_a_new_part() -> None:
    a16, a24 = noise(800, 1), noise(1200, 2)
    events = [
        SynthesizedAudio("de", "audio/x-wav", wav_file(a16), False, 3),
        SynthesizedAudio("de", "audio/x-wav", wav_file(a24, rate=24000), False, 3),
        end(3),
    ]
    pieces = feed_all(events)
    assert [p for p in pieces if not isinstance(p, Pcm)] == [
        Begin("de", 3, F16),
        Finish(cut=True),
        Begin("de", 3, PcmFormat(24000, 1, 16)),
        Finish(cut=False),
    ]
    assert pcm_of(pieces) == a16 + a24


def test_a_new_line_without_an_end_for_the_old_one_cuts_it() -> None:
    first, second = noise(4000, 1), noise(2000, 2)
    events = [
        *chunks(wav_file(first), 3200, seq=1)[:2],
        *chunks(wav_file(second), 3200, seq=2),
        end(2),
    ]
    pieces = feed_all(events)
    assert [p for p in pieces if not isinstance(p, Pcm)] == [
        Begin("de", 1, F16),
        Finish(cut=True),
        Begin("de", 2, F16),
        Finish(cut=False),
    ]
    cut = pieces.index(Finish(cut=True))
    assert pcm_of(pieces[:cut]) == wav_file(first)[44:6400]
    assert pcm_of(pieces[cut:]) == second


def test_a_header_before_the_declared_data_is_all_there_cuts_too() -> None:
    first, second = noise(4000, 1), noise(2000, 2)
    events = [*chunks(wav_file(first), 3200)[:1], *chunks(wav_file(second), 3200), end()]
    pieces = feed_all(events)
    assert [p for p in pieces if not isinstance(p, Pcm)] == [
        Begin("de", 1, F16),
        Finish(cut=True),
        Begin("de", 1, F16),
        Finish(cut=False),
    ]
    assert pcm_of(pieces) == wav_file(first)[44:3200] + second


def test_a_retagged_chunk_without_header_continues_the_utterance() -> None:
    pcm = noise(3000)
    c = chunks(wav_file(pcm), 1000)
    c[3] = SynthesizedAudio("de", "audio/x-wav", c[3].data, False, 9)  # the board moved on
    pieces = feed_all([*c, end(9)])
    assert kinds(pieces) == ["Begin", "Finish"] and pcm_of(pieces) == pcm


@pytest.mark.parametrize(
    ("fmt", "why"),
    [
        ("audio/mpeg", "is not PCM"),
        ("audio/ogg; codecs=opus", "is not PCM"),
        ("audio-16khz-32kbitrate-mono-mp3", "is not PCM"),
        ("raw-8khz-8bit-mono-mulaw", "is not PCM"),
    ],
)
def test_other_formats_are_refused_once_per_utterance(fmt: str, why: str) -> None:
    events = [
        *chunks(b"ID3" + bytes(5000), 1000, fmt=fmt),
        end(fmt=fmt),
        *chunks(wav_file(noise(10)), 3200, seq=2),
        end(2),
    ]
    pieces = feed_all(events)
    refused = [p for p in pieces if isinstance(p, Refused)]
    assert len(refused) == 1 and why in refused[0].reason and refused[0].seq == 1
    assert kinds(pieces) == ["Refused", "Begin", "Finish"]
    assert pcm_of(pieces) == noise(10)


def float_wav(n: int) -> bytes:
    return wav_bytes(np.zeros(n, "<f4").tobytes(), tag=3, channels=1, rate=16000, bits=32)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (float_wav(100), "IEEE float"),
        (wav_bytes(bytes(100), tag=0x55, channels=1, rate=16000, bits=16), "MP3"),
        (wav_bytes(bytes(120), tag=1, channels=3, rate=16000, bits=16), "3 channels"),
        (wav_bytes(bytes(100), tag=1, channels=1, rate=4000, bits=16), "4000 Hz"),
        (wav_bytes(bytes(120), tag=1, channels=1, rate=16000, bits=12), "12-bit"),
        (b"\x12\x34" * 800, "without a WAV header"),
        (b"RIFF\0\0\0\0WAVEdata\0\0\0\0" + bytes(64), "data comes before its format"),
    ],
)
def test_bad_wav_headers_are_refused(data: bytes, why: str) -> None:
    pieces = feed_all([*chunks(data, 512), end()])
    assert kinds(pieces) == ["Refused"]
    assert why in pieces[0].reason


def test_extensible_pcm_and_float() -> None:
    pcm = noise(100)
    ok = wav_bytes(pcm, tag=1, channels=1, rate=16000, bits=16, extensible=True)
    pieces = feed_all([*chunks(ok, 1000), end()])
    assert pieces[0] == Begin("de", 1, F16) and pcm_of(pieces) == pcm
    bad = wav_bytes(bytes(400), tag=3, channels=1, rate=16000, bits=32, extensible=True)
    assert "IEEE float" in feed_all([*chunks(bad, 1000), end()])[0].reason


def test_an_end_inside_the_header_is_refused() -> None:
    pieces = feed_all([SynthesizedAudio("de", "audio/x-wav", wav_file(b"")[:20], False, 1), end()])
    assert kinds(pieces) == ["Refused"] and "inside its WAV header" in pieces[0].reason


def test_a_header_that_never_reaches_data_is_refused_when_too_long() -> None:
    junk = b"RIFF\0\0\0\0WAVE" + chunk(b"JUNK", bytes(70_000))
    pieces = feed_all([*chunks(junk, 8000), end()])
    assert kinds(pieces) == ["Refused"] and "without a data chunk" in pieces[0].reason


def test_abandon_drops_the_rest_until_the_next_utterance() -> None:
    a = Assembler()
    wav = wav_file(noise(3000))
    got = a.feed(chunks(wav, 2000)[0])
    a.abandon()
    for c in chunks(wav, 2000)[1:]:
        got += a.feed(c)
    got += a.feed(end())
    assert kinds(got) == ["Begin"]  # no Finish: the caller dropped the utterance
    later = [*a.feed(chunks(wav, 6044)[0]), *a.feed(end())]
    assert kinds(later) == ["Begin", "Finish"] and pcm_of(later) == noise(3000)


def test_raw_pcm_formats_take_their_format_from_the_name() -> None:
    assert kind_of("raw-24khz-16bit-mono-pcm") == PcmFormat(24000, 1, 16)
    assert kind_of("raw-22050hz-16bit-mono-pcm") == PcmFormat(22050, 1, 16)
    assert kind_of("riff-16khz-16bit-mono-pcm") is None
    assert kind_of("audio/x-wav") is None and kind_of("") is None
    pcm = noise(999)
    pieces = feed_all(
        [*chunks(pcm, 301, fmt="raw-48khz-16bit-mono-pcm"), end(fmt="raw-48khz-16bit-mono-pcm")]
    )
    assert pieces[0] == Begin("de", 1, PcmFormat(48000, 1, 16)) and pcm_of(pieces) == pcm


def test_wav_header_matches_what_wave_writes() -> None:
    pcm = noise(123)
    assert wav_header(F16, len(pcm)) + pcm == wav_file(pcm)
    assert wav_header(PcmFormat(44100, 2, 24), 600) + bytes(600) == wav_file(
        bytes(600), rate=44100, channels=2, width=3
    )


def test_decoding_every_sample_size_to_mono_int16() -> None:
    x = np.array([0, 1, -1, 12345, -12345, 32767, -32768], dtype=np.int32)
    assert np.array_equal(to_mono16(x.astype("<i2").tobytes(), F16), x)
    u8 = ((x >> 8) + 128).astype(np.uint8).tobytes()
    assert np.array_equal(to_mono16(u8, PcmFormat(8000, 1, 8)), (x >> 8) << 8)
    wide = x.astype(np.int64) << 8  # 24-bit: the same values, 8 more bits below
    b24 = b"".join(int(v + 0x55).to_bytes(3, "little", signed=True) for v in wide)
    assert np.array_equal(to_mono16(b24, PcmFormat(8000, 1, 24)), x)
    b32 = (x.astype(np.int64) << 16 | 0x1234).astype("<i4").tobytes()
    assert np.array_equal(to_mono16(b32, PcmFormat(8000, 1, 32)), x)
    stereo = np.stack([x, np.zeros_like(x) + 100], axis=1).astype("<i2").tobytes()
    assert np.array_equal(to_mono16(stereo, PcmFormat(8000, 2, 16)), (x + 100) // 2)
