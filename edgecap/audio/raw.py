"""Raw PCM from a stream: stdin, a pipe, a FIFO or a file.

Made for ``arecord -f S16_LE -r 16000 -c 1 -t raw | edgecap run --source raw``: s16le, 16 kHz,
mono by default (other rates and channel counts are converted like any source).

``read(timeout)`` returns a block of whole frames (``runtime.frames``) as soon as one is
whole, and must return within about ``timeout`` even when the pipe is silent, so the
descriptor is watched with ``select()`` and read with ``os.read()``, which returns whatever
has arrived; partial reads accumulate until a block is whole. ``select()`` also watches a
pipe of the source's own, written by ``interrupt()``: a stop wakes a silent wait at once.
The descriptor's blocking mode is never changed: stdin is usually shared with the parent
shell, and setting O_NONBLOCK on it would leak into other processes reading the same pipe or
terminal.

A path that does not exist, cannot be opened, or is a directory is a ``SourceConfigError``
(exit 78): retrying cannot make a directory readable. A FIFO is opened without waiting for
its writer (see ``open()``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import stat
import sys
import time
from typing import BinaryIO

from edgecap.audio.pcm import (
    MAX_CHANNELS,
    MAX_RATE,
    MIN_RATE,
    S16LE,
    PendingAudio,
    decode_samples,
    to_mono,
)
from edgecap.audio.source import NOT_READY, SourceConfigError, SourceLost, Waker, _NotReady
from edgecap.runtime.escape import escape_controls
from edgecap.runtime.frames import BLOCK_MS, SAMPLE_RATE, Block, block_frames, frame_samples
from edgecap.runtime.resample import StreamResampler

log = logging.getLogger(__name__)

READ_SIZE = 65536


class RawSource:
    """Blocks of frames from raw s16le PCM.

    stream: an open binary stream (not closed by this source: the caller owns it), ``"-"``
        for stdin, or a path (opened on ``open()`` and closed on ``close()``).
    rate/channels: what the stream carries; converted to 16 kHz mono (``channel`` picks one
        channel instead of mixing).
    block_ms: what one ``read()`` delivers (whole frames; see ``runtime.frames``).
    At end of input the last partial frame is zero-padded, then ``read()`` returns None.
    """

    def __init__(
        self,
        stream: BinaryIO | str | os.PathLike[str],
        frame_ms: int,
        *,
        rate: int = SAMPLE_RATE,
        channels: int = 1,
        channel: int | None = None,
        block_ms: int = BLOCK_MS,
    ) -> None:
        if not 1 <= channels <= MAX_CHANNELS:
            raise SourceConfigError(
                f"raw input: channels must be 1 to {MAX_CHANNELS}, not {channels}"
            )
        if not MIN_RATE <= rate <= MAX_RATE:
            raise SourceConfigError(
                f"raw input: rate must be {MIN_RATE} to {MAX_RATE} Hz, not {rate}"
            )
        if channel is not None and not 0 <= channel < channels:
            raise SourceConfigError(
                f"raw input: channel {channel} out of range for {channels} channel(s)"
            )
        self._spec = stream
        self.frame_samples = frame_samples(frame_ms)
        self.block_frames = block_frames(frame_ms, block_ms)
        self.rate = rate
        self.channels = channels
        self.channel = channel
        self._frame_bytes = S16LE.width * channels
        self._direct = rate == SAMPLE_RATE and channels == 1
        if isinstance(stream, str | os.PathLike):
            shown = "stdin" if str(stream) == "-" else os.fspath(stream)
        else:
            shown = str(getattr(stream, "name", type(stream).__name__))
        self.name = f"raw:{escape_controls(shown)}"
        self._fd: int | None = None  # descriptor watched with select(), if any
        self._stream: BinaryIO | None = None  # fallback for objects without a descriptor
        self._owns_fd = False
        self._inbuf = bytearray()
        self._pending = PendingAudio(self.frame_samples, self.block_frames)
        self._resampler = StreamResampler(rate, SAMPLE_RATE)
        self._eof = False
        self._waker = Waker()  # its descriptor is selected on beside the input's

    def open(self) -> None:
        self.close()
        spec = self._spec
        if isinstance(spec, str | os.PathLike):
            if str(spec) == "-":
                self._fd = sys.stdin.fileno()
            else:
                self._fd = _open_path(spec)
                self._owns_fd = True
        else:
            try:
                self._fd = spec.fileno()
            except (AttributeError, OSError, io.UnsupportedOperation):
                self._stream = spec  # e.g. BytesIO: in memory, reads never block
        self._inbuf = bytearray()
        self._pending.clear()
        self._resampler.reset()
        self._eof = False

    def read(self, timeout: float) -> Block | _NotReady | None:
        if self._fd is None and self._stream is None:
            raise RuntimeError(f"{self.name}: read() before open()")
        pending = self._pending
        deadline = time.monotonic() + max(timeout, 0.0)
        while pending.size < pending.block_samples and not self._eof:
            if not self._read_some(deadline):
                break  # the timeout or a stop came first: what whole frames there are
        if self._eof and pending.size == 0:
            return None
        block = pending.take(pad=self._eof)
        return NOT_READY if block is None else block

    def interrupt(self) -> None:
        """A waiting ``read()`` returns at once, and later ones do not wait (stopping)."""
        self._waker.interrupt()

    def _read_some(self, deadline: float) -> bool:
        """Read what has arrived; False if nothing came before ``deadline`` or a stop."""
        if self._stream is not None:
            data = self._stream.read(READ_SIZE)
        else:
            assert self._fd is not None
            if self._waker.interrupted:
                return False
            remaining = max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([self._fd, self._waker.fileno()], [], [], remaining)
            except InterruptedError:
                ready = []
            if self._fd not in ready:
                return False
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                return time.monotonic() < deadline
            except OSError as e:
                raise SourceLost(f"read error on {self.name}: {e.strerror or e}") from e
        if data:
            self._inbuf += data
            self._convert()
        else:
            self._finish()
        return True

    def _convert(self) -> None:
        usable = len(self._inbuf) - len(self._inbuf) % self._frame_bytes
        if not usable:
            return
        if self._direct:  # 16 kHz mono s16le: the bytes are the samples
            self._pending.add_pcm(bytes(self._inbuf[:usable]))
            del self._inbuf[:usable]
            return
        samples = decode_samples(bytes(self._inbuf[:usable]), S16LE, self.channels)
        del self._inbuf[:usable]
        self._pending.add(self._resampler.process(to_mono(samples, self.channel)))

    def _finish(self) -> None:
        if self._inbuf:
            # A trailing incomplete sample frame: pad it with zeros rather than drop it.
            self._inbuf += bytes(self._frame_bytes - len(self._inbuf) % self._frame_bytes)
            self._convert()
        if not self._resampler.passthrough:  # (a pass-through holds nothing back)
            self._pending.add(self._resampler.flush())
        self._eof = True
        log.info("%s: end of input", self.name)

    def close(self) -> None:
        if self._fd is not None and self._owns_fd:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._waker.close()
        self._fd = None
        self._stream = None
        self._owns_fd = False


def _open_path(path: str | os.PathLike[str]) -> int:
    """Open a raw input path for reading; every failure is a ``SourceConfigError``."""
    shown = escape_controls(os.fspath(path))
    try:
        # O_NONBLOCK so that opening a FIFO with no writer does not hang; reads still go
        # through select(), and EAGAIN is handled.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SourceConfigError(f"raw input not found: {shown}") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the name
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise SourceConfigError(f"cannot open raw input {shown}: {reason}") from None
    # Linux opens a directory read-only without complaint and fails only at read() (EISDIR),
    # which would look like a lost device and be retried for ever.
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise SourceConfigError(
            f"raw input {shown} is a directory: name a file or a FIFO, or - for standard input"
        )
    return fd
