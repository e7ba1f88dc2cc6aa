"""The AudioSource contract shared by the alsa, wav and raw sources.

A source is driven by one thread (the capture worker). The worker calls ``open()``, then
``read()`` repeatedly, and ``close()`` when it stops or when the source failed. Failures are
reported as exceptions so that the worker's single reopen/backoff policy handles every kind
of source alike:

- ``SourceUnavailable``: the device cannot be opened now (missing, busy); retry later.
- ``SourceLost``: an open device stopped delivering (unplugged, stalled); close and reopen.
- ``SourceConfigError``: retrying cannot help (bad device spec, unreadable WAV); fatal.

``read()`` returns the next Frame, or ``None`` at end of input (wav/raw only; a microphone
never ends). It must return within about ``timeout`` seconds so that the worker can notice a
stop request; when no frame is ready in time it returns ``NOT_READY``.
"""

from __future__ import annotations

from typing import Final, Protocol

from edgecap.runtime.frames import Frame


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

    def read(self, timeout: float) -> Frame | _NotReady | None: ...

    def close(self) -> None: ...
