"""The AudioSource contract shared by the alsa, wav and raw sources.

A source is driven by one thread (the capture worker). The worker calls ``open()``, then
``read()`` repeatedly, and ``close()`` when it stops or when the source failed. Failures are
reported as exceptions so that the worker's single reopen/backoff policy handles every kind
of source alike:

- ``SourceUnavailable``: the device cannot be opened now (missing, busy); retry later.
- ``SourceLost``: an open device stopped delivering (unplugged, stalled); close and reopen.
- ``SourceConfigError``: retrying cannot help (bad device spec, unreadable WAV); fatal.

``read()`` returns the next block of audio (``edgecap.runtime.frames``): whole consecutive
frames, ``block_frames`` of them (about 100 ms) as soon as they are there; fewer only at the
end of input, after ``interrupt()``, or when ``timeout`` ran out with some frames but not a
whole block. It returns ``None`` at end of input (wav/raw only; a microphone never ends) and
``NOT_READY`` when not one frame came within about ``timeout`` seconds. A block follows the
previous one without a gap unless its ``gap_before`` says otherwise (or its start jumps).

The reader may block in ``read()`` for the whole ``timeout``: ``interrupt()``, called from any
other thread, makes a waiting ``read()`` return at once and every later one return without
waiting (the reader is stopping), so a stop never waits for input. Per block a source does
one device or file read where it can and one wait at most, never a poll per frame.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from typing import Final, Protocol

from edgecap.runtime.frames import Block


class SourceError(Exception):
    """Base of the errors a source raises."""


class SourceUnavailable(SourceError):
    """The device cannot be opened right now (missing or busy); the worker retries."""

    def __init__(self, message: str, *, state: str = "device_missing") -> None:
        super().__init__(message)
        self.state = state  # "device_missing" or "device_busy": shown in status


class SourceLost(SourceError):
    """An open device stopped delivering audio; the worker closes it and reopens."""


class SourceConfigError(SourceError):
    """Retrying cannot help: the configuration or the input itself is wrong."""


class _NotReady:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_READY"


NOT_READY: Final = _NotReady()


class AudioSource(Protocol):
    """See the module docstring."""

    # Human description for status and logs, e.g. "alsa:USB Audio (hw:1,0)". Names from outside
    # (file names, device names) go through runtime.escape: no control character may reach
    # a terminal through a status line or a log.
    name: str

    def open(self) -> None: ...

    def read(self, timeout: float) -> Block | _NotReady | None: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


class Waker:
    """How a source's reader sleeps until its next block, and how ``interrupt()`` wakes it.

    ``wait()`` is one ``select()`` on a pipe of its own; ``interrupt()`` (any thread) writes
    to that pipe. It costs what ``time.sleep`` costs per wake-up, where an Event or a
    Condition takes half as much again (measured on the test machines: about 90 µs per
    wake-up against 145 µs; ten wake-ups a second add up). A source that selects on a
    descriptor of its own adds :meth:`fileno` to its set. An interrupt is for good (the
    reader is stopping): every later wait returns at once. The pipe is made at the first
    wait and closed by :meth:`close` (the source's close); after that an interrupt only
    leaves its mark for the next wait.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._lock = threading.Lock()  # interrupt() never writes to a descriptor closed meanwhile
        self._r: int | None = None
        self._w: int | None = None

    def fileno(self) -> int:
        """The descriptor to select on; readable once interrupted."""
        with self._lock:
            if self._r is None:
                self._r, self._w = os.pipe()
                os.set_blocking(self._w, False)  # interrupt() never waits
                if self.interrupted:
                    os.write(self._w, b"!")
            return self._r

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) if interrupted."""
        if not self.interrupted and seconds > 0:
            select.select([self.fileno()], [], [], seconds)
        return self.interrupted

    def interrupt(self) -> None:
        self.interrupted = True
        with self._lock:
            if self._w is not None:
                with contextlib.suppress(BlockingIOError):  # full of wake-ups already
                    os.write(self._w, b"!")

    def close(self) -> None:
        with self._lock:
            for fd in (self._r, self._w):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._r = self._w = None
