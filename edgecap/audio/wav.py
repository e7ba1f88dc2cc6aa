"""WAV file source, with its own RIFF/WAVE parser.

Python 3.11's ``wave`` module only reads integer PCM with a plain ``fmt`` chunk: it rejects
WAVE_FORMAT_EXTENSIBLE (what most recorders and DAWs write for 24-bit or multichannel audio)
and IEEE float. This parser accepts:

- integer PCM 8 (unsigned), 16, 24 and 32 bit; IEEE float 32 and 64 bit; both also inside
  WAVE_FORMAT_EXTENSIBLE; NaN and infinite float samples are replaced (silence, full scale)
  and counted in the log;
- 1 to 8 channels (mixed to mono, or one channel picked) and 8 to 192 kHz (resampled);
- odd-sized chunks (RIFF pads them to even length), LIST/fact/bext/JUNK chunks (skipped);
- a data chunk size of 0 or 0xFFFFFFFF, as written by tools that stream to a pipe and cannot
  seek back to patch the header (read to end of file), and RF64/BW64 with a ds64 chunk;
- a data chunk that claims more bytes than the file holds (a recorder that crashed): read to
  end of file.

Everything that cannot work raises ``SourceConfigError`` with a message that says what is
wrong with which file, and so does a header with values no recording has (0 or 65535
channels, 1 Hz or 4 GHz, 7-bit samples, a block size that does not match): a corrupt or
hostile header must end in a clear error, never in a huge allocation or a day-long "file".
File names are shown with their control characters escaped (``runtime.escape``): a name is
chosen by whoever made the file, and may hold terminal escape sequences.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from edgecap.audio.pcm import (
    MAX_CHANNELS,
    MAX_RATE,
    MIN_RATE,
    S16LE,
    SUPPORTED_FORMATS,
    NonFinite,
    PendingAudio,
    SampleFormat,
    decode_samples,
    to_mono,
)
from edgecap.audio.source import NOT_READY, SourceConfigError, SourceLost, Waker, _NotReady
from edgecap.runtime.escape import escape_controls
from edgecap.runtime.frames import BLOCK_MS, SAMPLE_RATE, Block, block_frames, frame_samples
from edgecap.runtime.resample import StreamResampler

if TYPE_CHECKING:
    import numpy as np  # imported where samples are decoded (pcm): a 16 kHz mono file needs none

log = logging.getLogger(__name__)

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The 12 bytes after the format code in a KSDATAFORMAT_SUBTYPE_* GUID (little-endian layout).
_GUID_TAIL = bytes.fromhex("000010008000 00aa00389b71".replace(" ", ""))
_STREAMING_SIZES = (0, 0xFFFFFFFF)
MAX_HEADER_CHUNK = 1 << 16

# Format codes people actually meet, so that the error names the encoding.
KNOWN_ENCODINGS = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG audio",
    0x0055: "MP3",
    0x0161: "Windows Media Audio",
    0x1610: "AAC",
    0xF1AC: "FLAC",
}

_CONVERT_HINT = "convert it with e.g. `sox in.wav -e signed-integer -b 16 out.wav`"


@dataclass(frozen=True, slots=True)
class WavInfo:
    """What the header says. ``data_size`` is None when the data runs to end of file.
    ``path`` is the file's name as shown to people (control characters escaped)."""

    path: str
    sample_format: SampleFormat
    channels: int
    rate: int
    data_offset: int
    data_size: int | None

    @property
    def frame_bytes(self) -> int:
        return self.sample_format.width * self.channels

    @property
    def frames(self) -> int | None:
        return None if self.data_size is None else self.data_size // self.frame_bytes

    def describe(self) -> str:
        return f"{self.sample_format}, {self.channels} ch, {self.rate} Hz"


def _truncated(path: str, what: str) -> SourceConfigError:
    return SourceConfigError(f"truncated WAV header in {path}: {what}")


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    return data if data is not None else b""


def read_wav_header(f: BinaryIO, path: str) -> WavInfo:
    """Parse the header of an open WAV file and leave ``f`` at the first data byte.

    ``path`` is only used in messages (its control characters escaped here). Raises
    ``SourceConfigError`` for anything that is not a readable WAV.
    """
    path = escape_controls(path)
    head = _read_exact(f, 12)
    if len(head) == 0:
        raise SourceConfigError(f"{path} is empty, not a WAV file")
    riff_id = head[:4]
    if riff_id == b"RIFX":
        raise SourceConfigError(f"{path} is a big-endian (RIFX) WAV file, which is not supported")
    if riff_id not in (b"RIFF", b"RF64", b"BW64"):
        raise SourceConfigError(f"{path} is not a WAV file (no RIFF header)")
    if len(head) < 12:
        raise _truncated(path, "file ends inside the RIFF header")
    if head[8:12] != b"WAVE":
        kind = head[8:12].decode("latin-1", "replace")
        raise SourceConfigError(f"{path} is a RIFF file of type {kind!r}, not a WAV file")

    fmt: tuple[SampleFormat, int, int] | None = None
    ds64_data_size: int | None = None
    while True:
        header = _read_exact(f, 8)
        if len(header) < 8:
            if fmt is None:
                raise _truncated(path, "no fmt chunk before end of file")
            raise _truncated(path, "no data chunk before end of file")
        chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk_id in (b"fmt ", b"ds64") and size > MAX_HEADER_CHUNK:
            # Real ones are tens of bytes; this is a corrupt header, not something to load.
            raise SourceConfigError(
                f"{path}: implausible {chunk_id.decode()!r} chunk of {size} bytes"
            )
        if chunk_id == b"fmt ":
            body = _read_exact(f, size)
            if len(body) < size:
                raise _truncated(path, "file ends inside the fmt chunk")
            fmt = _parse_fmt(body, path)
            if size & 1:
                f.read(1)
        elif chunk_id == b"ds64":
            if size < 16:
                raise SourceConfigError(f"{path}: ds64 chunk is {size} bytes, needs at least 16")
            body = _read_exact(f, size)
            if len(body) < size:
                raise _truncated(path, "file ends inside the ds64 chunk")
            ds64_data_size = struct.unpack("<Q", body[8:16])[0]
            if size & 1:
                f.read(1)
        elif chunk_id == b"data":
            if fmt is None:
                raise SourceConfigError(f"{path}: data chunk comes before the fmt chunk")
            sample_format, channels, rate = fmt
            data_size: int | None = size
            if riff_id != b"RIFF" and size == 0xFFFFFFFF and ds64_data_size is not None:
                data_size = ds64_data_size
            elif size in _STREAMING_SIZES:
                data_size = None  # a streaming writer never patched the size: read to EOF
            return WavInfo(path, sample_format, channels, rate, f.tell(), data_size)
        else:
            # LIST, fact, cue, bext, JUNK, PAD, ...: skip, including the pad byte of odd sizes.
            skip = size + (size & 1)
            try:
                f.seek(skip, os.SEEK_CUR)
            except (OSError, ValueError):
                _read_exact(f, skip)


def _parse_fmt(body: bytes, path: str) -> tuple[SampleFormat, int, int]:
    if len(body) < 16:
        raise _truncated(path, f"fmt chunk is {len(body)} bytes, needs at least 16")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise _truncated(path, "WAVE_FORMAT_EXTENSIBLE fmt chunk shorter than 40 bytes")
        # wValidBitsPerSample may be less than the container (24 valid in 32): samples are
        # left-justified, so decoding the whole container is right either way.
        valid_bits = struct.unpack("<H", body[18:20])[0]
        if valid_bits > bits:
            raise SourceConfigError(
                f"{path}: inconsistent fmt chunk: {valid_bits} valid bits in a {bits}-bit sample"
            )
        sub = body[24:40]
        if sub[4:] != _GUID_TAIL:
            raise SourceConfigError(
                f"unsupported WAV encoding in {path}: extensible sub-format {sub.hex()}; "
                + _CONVERT_HINT
            )
        tag = struct.unpack("<I", sub[:4])[0]
    if tag not in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT):
        name = KNOWN_ENCODINGS.get(tag, "unknown encoding")
        raise SourceConfigError(
            f"unsupported WAV encoding in {path}: {name} (format 0x{tag:04X}); "
            "only integer PCM and IEEE float are read; " + _CONVERT_HINT
        )
    kind = "float" if tag == WAVE_FORMAT_IEEE_FLOAT else "int"
    if not 1 <= channels <= MAX_CHANNELS:
        raise SourceConfigError(
            f"{path}: the header says {channels} channels; edgecap reads files of 1 to "
            f"{MAX_CHANNELS} channels (a damaged header, or convert it with e.g. "
            "`sox in.wav -c 1 out.wav`)"
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise SourceConfigError(
            f"{path}: the header says {rate} Hz; edgecap reads files of {MIN_RATE} to "
            f"{MAX_RATE} Hz (a damaged header, or convert it with e.g. "
            "`sox in.wav -r 16000 out.wav`)"
        )
    if bits == 0 or bits % 8 or bits > 64:
        # A 12-bit or 20-bit recording is stored in a 16 or 24-bit container, and then the
        # header names the container (WAVE_FORMAT_EXTENSIBLE carries the valid bits apart).
        raise SourceConfigError(
            f"{path}: the header says {bits} bits per sample, which is not a sample size "
            "(8, 16, 24, 32 or 64)"
        )
    # Microsoft's rule for both formats: nBlockAlign = nChannels × wBitsPerSample / 8. A file
    # that breaks it cannot be decoded with confidence (which of the two is wrong?).
    if block_align != channels * bits // 8:
        raise SourceConfigError(
            f"{path}: inconsistent fmt chunk: block align {block_align} bytes, but "
            f"{channels} channel(s) of {bits}-bit samples take {channels * bits // 8}"
        )
    sample_format = SampleFormat(kind, bits)
    if sample_format not in SUPPORTED_FORMATS:
        raise SourceConfigError(
            f"unsupported WAV encoding in {path}: {bits}-bit "
            f"{'float' if kind == 'float' else 'integer'} samples; " + _CONVERT_HINT
        )
    return sample_format, channels, rate


def _open_checked(path: Path) -> BinaryIO:
    shown = escape_controls(os.fspath(path))
    try:
        # Only a regular file: opening a FIFO would block until a writer comes, and a device
        # (/dev/zero) never ends.
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise SourceConfigError(f"{shown} is a directory, not a WAV file")
        if not stat.S_ISREG(mode):
            raise SourceConfigError(f"{shown} is not a regular file, so not a WAV file")
        return open(path, "rb")  # the caller owns and closes it
    except FileNotFoundError:
        raise SourceConfigError(f"WAV file not found: {shown}") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the name
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise SourceConfigError(f"cannot read WAV file {shown}: {reason}") from None


def _data_available(f: BinaryIO, info: WavInfo) -> int | None:
    """Bytes from the first data byte to the end of the file (None if it cannot be told)."""
    try:
        return max(0, os.fstat(f.fileno()).st_size - info.data_offset)
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None


def read_wav(path: str | os.PathLike[str]) -> tuple[WavInfo, np.ndarray]:
    """Read a whole WAV file: (header, int16 samples shaped ``(frames, channels)``) at the
    file's own rate. Raises ``SourceConfigError`` like :class:`WavSource`."""
    p = Path(path)
    with _open_checked(p) as f:
        info = read_wav_header(f, str(p))
        size = info.data_size
        available = _data_available(f, info)
        if size is not None and available is not None:
            size = min(size, available)  # read(n) would first allocate the n the header claims
        data = f.read() if size is None else f.read(size)
    usable = len(data) - len(data) % info.frame_bytes
    return info, decode_samples(memoryview(data)[:usable], info.sample_format, info.channels)


class WavSource:
    """Blocks of frames from a WAV file: mono 16 kHz whatever the file's format.

    realtime: deliver frame ``n`` no earlier than ``open time + (n+1) * frame length`` (an
        absolute schedule, so pacing never drifts, like a microphone): a block when its last
        frame is due, after one sleep; otherwise as fast as ``read()`` is called.
    loop: start again at the end of the file instead of ending; ``Frame.start`` keeps counting.
    channel: None mixes all channels; an int picks that channel (0 = first/left).
    block_ms: what one ``read()`` delivers (whole frames; see ``runtime.frames``); the last
        block may be shorter, its last frame completed with zeros.
    """

    READ_CHUNK = 4096  # input frames decoded per step at most

    def __init__(
        self,
        path: str | os.PathLike[str],
        frame_ms: int,
        realtime: bool,
        loop: bool = False,
        channel: int | None = None,
        *,
        block_ms: int = BLOCK_MS,
    ) -> None:
        self.path = Path(path)
        self.frame_ms = frame_ms
        self.frame_samples = frame_samples(frame_ms)
        self.block_frames = block_frames(frame_ms, block_ms)
        self.realtime = realtime
        self.loop = loop
        self.channel = channel
        self._shown = escape_controls(os.fspath(self.path))  # the name as messages show it
        self.name = f"wav:{self._shown}"
        self._f: BinaryIO | None = None
        self._info: WavInfo | None = None
        self._resampler: StreamResampler | None = None
        self._direct = False  # the file holds 16 kHz mono s16le: its bytes are the samples
        # Frame.start keeps counting across reopen
        self._pending = PendingAudio(self.frame_samples, self.block_frames)
        self._remaining: int | None = None  # data bytes left in this pass (None: to EOF)
        self._pass_frames = 0  # input frames read in the current pass
        self._eof = False
        self._emitted = 0  # frames emitted since open (for the realtime schedule)
        self._waker = Waker()
        self._t0 = 0.0
        self._frames_in = 0  # input frames decoded since open
        self._nonfinite = NonFinite()  # NaN/inf float samples replaced since open
        self._nonfinite_logged = 0  # how many of them the log has been told about

    @property
    def info(self) -> WavInfo | None:
        return self._info

    def open(self) -> None:
        self.close()
        f = _open_checked(self.path)
        try:
            info = read_wav_header(f, self._shown)
            if self.channel is not None and not 0 <= self.channel < info.channels:
                raise SourceConfigError(
                    f"channel {self.channel} requested but {self._shown} has "
                    f"{info.channels} channel(s) (channels count from 0)"
                )
        except BaseException:
            f.close()
            raise
        self._f = f
        self._info = info
        self._direct = (info.sample_format, info.channels, info.rate) == (S16LE, 1, SAMPLE_RATE)
        self._resampler = StreamResampler(info.rate, SAMPLE_RATE)
        self._pending.clear()
        self._remaining = self._clamped_size(info, warn=True)
        self._pass_frames = 0
        self._eof = False
        self._emitted = 0
        self._t0 = time.monotonic()
        self._frames_in = 0
        self._nonfinite = NonFinite()
        self._nonfinite_logged = 0
        log.info("opened %s (%s)", self.name, info.describe())

    def _clamped_size(self, info: WavInfo, *, warn: bool = False) -> int | None:
        if info.data_size is None or self._f is None:
            return info.data_size
        available = _data_available(self._f, info)
        if available is None or info.data_size <= available:
            return info.data_size
        if warn:
            log.warning(
                "%s: data chunk claims %d bytes but the file holds %d: reading to end of file",
                self._shown,
                info.data_size,
                available,
            )
        return available

    def read(self, timeout: float) -> Block | _NotReady | None:
        if self._f is None or self._info is None:
            raise RuntimeError(f"{self.name}: read() before open()")
        pending = self._pending
        while pending.size < pending.block_samples and not self._eof:
            self._fill()
        if pending.size == 0:
            return None
        limit = None
        if self.realtime:
            frame_s = self.frame_ms / 1000
            due = self._t0 + (self._emitted + pending.next_frames(self._eof)) * frame_s
            now = time.monotonic()
            if now < due:
                self._waker.wait(min(due - now, max(timeout, 0.0)))
                now = time.monotonic()
                if now < due:  # the timeout or a stop came first: the frames due by now
                    limit = int((now - self._t0) / frame_s) - self._emitted
                    if limit < 1:
                        return NOT_READY
        block = pending.take(pad=self._eof, limit=limit)
        assert block is not None  # samples are held
        self._emitted += block.samples // self.frame_samples
        return block

    def interrupt(self) -> None:
        """A waiting ``read()`` returns at once, and later ones do not wait (stopping)."""
        self._waker.interrupt()

    def _fill(self) -> None:
        """Decode one chunk of input into ``_pending`` (handles EOF and looping)."""
        assert self._f is not None and self._info is not None and self._resampler is not None
        info = self._info
        need_out = self._pending.block_samples - self._pending.size
        n_frames = min(max(self._resampler.input_needed(need_out), 1), self.READ_CHUNK)
        n_bytes = n_frames * info.frame_bytes
        if self._remaining is not None:
            n_bytes = min(n_bytes, self._remaining)
        try:
            data = self._f.read(n_bytes) if n_bytes else b""
        except OSError as e:
            raise SourceLost(f"read error on {self._shown}: {e.strerror or e}") from e
        usable = len(data) - len(data) % info.frame_bytes
        if self._remaining is not None:
            self._remaining -= len(data)
        if usable and self._direct:  # 16 kHz mono s16le: the bytes are the samples
            self._pass_frames += usable // 2
            self._frames_in += usable // 2
            self._pending.add_pcm(data if usable == len(data) else data[:usable])
        elif usable:
            samples = decode_samples(
                memoryview(data)[:usable], info.sample_format, info.channels, self._nonfinite
            )
            self._pass_frames += len(samples)
            self._frames_in += len(samples)
            if self._nonfinite.total and not self._nonfinite_logged:
                self._warn_nonfinite()
            mono = to_mono(samples, self.channel)
            self._append(self._resampler.process(mono))
        if len(data) != usable:
            log.debug("%s: dropped a partial sample frame at the end of the data", self._shown)
        if len(data) < n_bytes or self._remaining == 0:
            self._end_of_pass()

    def _end_of_pass(self) -> None:
        assert self._f is not None and self._info is not None and self._resampler is not None
        if self.loop:
            if self._pass_frames == 0:
                raise SourceConfigError(f"{self._shown} holds no audio to loop over")
            self._f.seek(self._info.data_offset)
            self._remaining = self._clamped_size(self._info)
            self._pass_frames = 0
            return  # the resampler carries on across the seam: no gap, no click of silence
        if not self._resampler.passthrough:  # (a pass-through holds nothing back)
            self._append(self._resampler.flush())
        self._eof = True
        self._total_nonfinite()

    def _warn_nonfinite(self) -> None:
        """Said once, when the first ones are met: where, how many, and what was done."""
        assert self._info is not None
        bad = self._nonfinite
        log.warning(
            "%s: %d NaN and %d infinite float sample(s) in its first %.2f s: NaN is played as "
            "silence, infinity as full scale (a damaged file, or samples not normalised)",
            self._shown,
            bad.nan,
            bad.inf,
            self._frames_in / self._info.rate,
        )
        self._nonfinite_logged = bad.total

    def _total_nonfinite(self) -> None:
        """At the end, the whole count, if more were met after the warning."""
        bad = self._nonfinite
        if bad.total > self._nonfinite_logged:
            log.info(
                "%s: %d NaN and %d infinite float sample(s) replaced in all",
                self._shown,
                bad.nan,
                bad.inf,
            )
            self._nonfinite_logged = bad.total

    def _append(self, samples: np.ndarray) -> None:
        self._pending.add(samples)

    def close(self) -> None:
        if self._f is not None:
            self._total_nonfinite()  # a looping or stopped file never reached its end
            with contextlib.suppress(OSError):
                self._f.close()
            self._f = None
        self._waker.close()
