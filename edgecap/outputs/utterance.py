"""Spoken translation as it arrives → utterances of PCM, for the speaker and the voice files.

What comes: ``SynthesizedAudio`` chunks, in order. The chunks of one utterance put together
are a WAV file: a RIFF header (in the first chunk) and PCM. The last chunk of an utterance
has ``end`` True (and is often empty). An utterance can also be cut: the next one's chunks
start (a new header for another line or language) without an end for the old one, which then
counts as ended. Azure's SDK hands each message's payload over as it is, and a service may
just as well send a whole WAV file per message; both shapes are taken: a header at the start
of a chunk, after the data its predecessor declared, continues the same utterance.

The header is parsed, never assumed: any rate from 8 to 192 kHz, 8, 16, 24 or 32-bit
integer PCM, 1 or 2 channels (``WAVE_FORMAT_EXTENSIBLE`` too). Headerless ``raw-…-pcm``
formats (Azure's names, e.g. ``raw-24khz-16bit-mono-pcm``) take their format from the name.
Anything else (MP3, Opus, µ-law, float …, which the codec never asks for) is refused: the
whole utterance is dropped and reported once (``Refused``), so the caller can log and count.

``Assembler.feed`` turns each chunk into a few ``Piece``s: ``Begin`` (a new utterance, its
format), ``Pcm`` (whole sample frames of that format, exactly the bytes received),
``Finish`` and ``Refused``. One assembler serves one output, called from its thread.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

from edgecap.captions.events import SynthesizedAudio

MIN_RATE = 8000
MAX_RATE = 192_000
BITS = (8, 16, 24, 32)
MAX_CHANNELS = 2
MAX_HEADER = 64 * 1024  # bytes of a header kept while waiting for its data chunk
HEADER_BYTES = 44  # a canonical PCM WAV header

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_GUID_TAIL = bytes.fromhex("00001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_*, after the tag
_ENCODINGS = {
    0x0002: "MS ADPCM",
    0x0003: "IEEE float",
    0x0006: "A-law",
    0x0007: "µ-law",
    0x0011: "IMA ADPCM",
    0x0055: "MP3",
}
# Sizes a streaming writer leaves in a header (it did not know the length): read to the end.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
WAV_TYPES = ("audio/x-wav", "audio/wav", "audio/wave", "audio/vnd.wave", "audio/x-pn-wav")
_RAW = re.compile(r"raw-(\d+)(k?)hz-(\d+)bit-(mono|stereo)-pcm")


@dataclass(frozen=True, slots=True)
class PcmFormat:
    rate: int
    channels: int
    bits: int

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8

    def seconds(self, nbytes: int) -> float:
        return nbytes / (self.frame_bytes * self.rate)

    def __str__(self) -> str:
        layout = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels} channels")
        return f"{self.rate} Hz {self.bits}-bit {layout}"


@dataclass(frozen=True, slots=True)
class Begin:
    """A new utterance starts; ``Pcm`` pieces of format ``fmt`` follow."""

    language: str
    seq: int | None
    fmt: PcmFormat


@dataclass(frozen=True, slots=True)
class Pcm:
    data: bytes  # whole frames of the current utterance's format, as received


@dataclass(frozen=True, slots=True)
class Finish:
    """The utterance is complete: its end came (``cut`` False) or the next one began."""

    cut: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """An utterance that cannot be played or saved (its format); its chunks are dropped."""

    language: str
    seq: int | None
    reason: str
    nbytes: int  # bytes of it received so far (more may follow, dropped quietly)


Piece = Begin | Pcm | Finish | Refused


class FormatError(ValueError):
    """Audio that is not PCM edgecap can take; the message says what it is."""


def _is_riff(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def parse_header(data: bytes) -> tuple[PcmFormat, int, int | None] | None:
    """(format, offset of the first PCM byte, declared data bytes or None) of the WAV header
    at the start of ``data``; None if more bytes are needed. FormatError if it is not a
    WAV file of PCM edgecap takes."""
    if len(data) < 12:
        return None
    if not _is_riff(data):
        raise FormatError("audio without a WAV header (its start was lost, or not WAV)")
    pos = 12
    fmt: PcmFormat | None = None
    while True:
        if len(data) < pos + 8:
            return None
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body_at = pos + 8
        if chunk_id == b"data":
            if fmt is None:
                raise FormatError("a WAV header whose data comes before its format")
            return fmt, body_at, None if size in _UNKNOWN_SIZES else size
        if chunk_id == b"fmt ":
            if len(data) < body_at + size:
                return None
            fmt = _parse_fmt(data[body_at : body_at + size])
        pos = body_at + size + (size & 1)  # LIST, fact, JUNK …: skipped


def _parse_fmt(body: bytes) -> PcmFormat:
    if len(body) < 16:
        raise FormatError(f"a WAV format chunk of {len(body)} bytes")
    tag, channels, rate, _byte_rate, align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40 or body[28:40] != _GUID_TAIL:
            raise FormatError("WAV audio in an extensible encoding that is not PCM")
        tag = struct.unpack_from("<H", body, 24)[0]
    if tag != WAVE_FORMAT_PCM:
        name = _ENCODINGS.get(tag, f"encoding 0x{tag:04X}")
        raise FormatError(f"WAV audio in {name}, not integer PCM")
    return _checked(rate, channels, bits, align)


def _checked(rate: int, channels: int, bits: int, align: int | None = None) -> PcmFormat:
    if bits not in BITS:
        raise FormatError(f"{bits}-bit samples (8, 16, 24 or 32 are taken)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise FormatError(f"{channels} channels (1 or 2 are taken)")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise FormatError(f"a rate of {rate} Hz ({MIN_RATE} to {MAX_RATE} are taken)")
    fmt = PcmFormat(rate, channels, bits)
    if align is not None and align != fmt.frame_bytes:
        raise FormatError(f"a WAV header with block align {align} for {fmt}")
    return fmt


def kind_of(format_name: str) -> PcmFormat | str | None:
    """What a chunk's ``format`` says: None for WAV (the header tells the rest), the
    PcmFormat of a headerless raw PCM format, or why it is refused (a str)."""
    name = format_name.split(";", 1)[0].strip().lower()
    if not name or name in WAV_TYPES or name.startswith("riff-"):
        return None
    raw = _RAW.fullmatch(name)
    if raw is not None:
        rate = int(raw.group(1)) * (1000 if raw.group(2) else 1)
        try:
            return _checked(rate, 2 if raw.group(4) == "stereo" else 1, int(raw.group(3)))
        except FormatError as exc:
            return str(exc)
    return f"format {format_name[:60]!r} is not PCM (only WAV or raw PCM can be played)"


def wav_header(fmt: PcmFormat, data_bytes: int) -> bytes:
    """A canonical 44-byte PCM WAV header for ``data_bytes`` of PCM."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack(
            "<IHHIIHH",
            16,
            WAVE_FORMAT_PCM,
            fmt.channels,
            fmt.rate,
            fmt.rate * fmt.frame_bytes,
            fmt.frame_bytes,
            fmt.bits,
        )
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def to_mono16(data: bytes, fmt: PcmFormat) -> np.ndarray:
    """Whole frames of ``fmt`` → mono int16 (channels averaged; wider samples keep their
    top 16 bits, 8-bit ones are unsigned)."""
    n = len(data) // fmt.frame_bytes
    raw = np.frombuffer(data, dtype=np.uint8, count=n * fmt.frame_bytes)
    if fmt.bits == 8:
        x = (raw.astype(np.int32) - 128) << 8
    elif fmt.bits == 16:
        x = raw.view("<i2").astype(np.int32)
    elif fmt.bits == 24:
        b = raw.reshape(-1, 3).astype(np.int32)
        x = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8  # sign in bit 31
        x = x >> 16
    else:
        x = raw.view("<i4") >> 16
    if fmt.channels > 1:
        x = x.reshape(n, fmt.channels).sum(axis=1) // fmt.channels
    return x.astype(np.int16)


@dataclass
class _Open:
    """The utterance being received."""

    language: str
    seq: int | None
    fmt: PcmFormat | None = None  # None while its header is incomplete
    header: bytes = b""  # header bytes kept until the data chunk is found
    left: int | None = None  # declared data bytes still to come (None: to the end)
    carry: bytes = b""  # a partial frame, completed by the next chunk
    refused: bool = False  # dropped until its end
    wav: bool = True  # False: raw PCM, no header

    @property
    def key(self) -> tuple[str, int | None]:
        return self.language, self.seq


class Assembler:
    def __init__(self) -> None:
        self._open: _Open | None = None

    @property
    def receiving(self) -> bool:
        """An utterance has begun and its end has not come yet."""
        return self._open is not None

    def feed(self, audio: SynthesizedAudio) -> list[Piece]:
        out: list[Piece] = []
        data = bytes(audio.data)
        current = self._open
        if current is not None and data and self._starts_another(current, audio, data):
            out += self._finish(cut=True)
            current = None
        if current is None and data:
            current = self._start(audio, out)
        if current is not None and data:
            self._take(current, data, out)
        if audio.end:
            out += self._finish(cut=False)
        return out

    def abandon(self) -> None:
        """Drop the rest of the utterance being received (until its end or the next one)."""
        if self._open is not None:
            self._open.refused = True

    # -- boundaries -------------------------------------------------------------------

    def _starts_another(self, current: _Open, audio: SynthesizedAudio, data: bytes) -> bool:
        """Does this chunk begin a new utterance (so the current one was cut)?"""
        if (audio.language, audio.seq) != current.key:
            # Another line or language: a new utterance if it starts like one. A WAV chunk
            # without a header is the rest of the current one, whatever its tag says.
            return _is_riff(data) or not current.wav or current.refused
        if not current.wav or not _is_riff(data):
            return False
        # A header for the same line: the next WAV of this utterance once the current one's
        # declared data is all there; otherwise the current one was cut short.
        return not (current.fmt is not None and current.left == 0)

    def _start(self, audio: SynthesizedAudio, out: list[Piece]) -> _Open:
        current = _Open(audio.language, audio.seq)
        self._open = current
        kind = kind_of(audio.format)
        if isinstance(kind, str):
            self._refuse(current, kind, len(audio.data), out)
        elif isinstance(kind, PcmFormat):
            current.wav, current.fmt = False, kind
            out.append(Begin(current.language, current.seq, kind))
        return current

    def _finish(self, *, cut: bool) -> list[Piece]:
        current, self._open = self._open, None
        if current is None or current.refused:
            return []
        if current.fmt is None:
            reason = "the utterance ended inside its WAV header"
            return [Refused(current.language, current.seq, reason, len(current.header))]
        return [Finish(cut)]

    def _refuse(self, current: _Open, reason: str, nbytes: int, out: list[Piece]) -> None:
        if current.fmt is not None and current.wav:
            out.append(Finish(cut=True))  # what came before the bad part stands
        current.refused = True
        out.append(Refused(current.language, current.seq, reason, nbytes))

    # -- bytes ------------------------------------------------------------------------

    def _take(self, current: _Open, data: bytes, out: list[Piece]) -> None:
        while data and not current.refused:
            if current.fmt is None:
                data = self._header(current, data, out)
            elif current.wav and current.left == 0:
                # The declared data is all there: what follows is the next WAV of this
                # utterance, or chunks that are no audio (LIST …), which are dropped.
                if not (current.header + data).startswith(b"RIFF"[: len(current.header + data)]):
                    current.header = b""
                    return
                data = self._header(current, data, out)
            else:
                n = len(data) if current.left is None else min(len(data), current.left)
                self._pcm(current, data[:n], out)
                if current.left is not None:
                    current.left -= n
                data = data[n:]

    def _header(self, current: _Open, data: bytes, out: list[Piece]) -> bytes:
        """Consume header bytes; returns what follows the header (PCM), or b"" when the
        header is not complete yet (its bytes are kept) or was refused."""
        buffered = current.header + data
        try:
            parsed = parse_header(buffered)
        except FormatError as exc:
            current.header = b""
            self._refuse(current, str(exc), len(buffered), out)
            return b""
        if parsed is None:
            current.header = buffered
            if len(buffered) > MAX_HEADER:
                current.header = b""
                self._refuse(current, "a WAV header without a data chunk", len(buffered), out)
            return b""
        fmt, offset, size = parsed
        previous = current.fmt
        current.header, current.left, current.carry = b"", size, b""
        if previous != fmt:
            if previous is not None:  # the next WAV of this utterance, in another format
                out.append(Finish(cut=True))
            current.fmt = fmt
            out.append(Begin(current.language, current.seq, fmt))
        return buffered[offset:]

    def _pcm(self, current: _Open, data: bytes, out: list[Piece]) -> None:
        assert current.fmt is not None
        if current.carry:
            data = current.carry + data
        whole = len(data) - len(data) % current.fmt.frame_bytes
        current.carry = data[whole:]
        if whole:
            out.append(Pcm(data[:whole]))
