"""The queue in front of one output: finals in order, provisional text coalesced.

Provisional caption updates are superseded by the next one, so only the newest per line is
kept (latest wins). Final lines, translations of final lines and audio-loss notices are
never coalesced or dropped — unless the output is so stuck that ``max_finals`` of them are
waiting; then the oldest go first and are counted (the worker shows it in the status).
Synthesized speech (only outputs that play or save it get any) is queued with the finals,
in order; a chunk dropped that way is also logged (at the first and every 2ⁿth), since
the output then meets an utterance with a piece missing.
Speech activity (the offline engine's speech start / end, shown by stdout) is coalesced
like provisional captions: per utterance the latest wins (its end supersedes its start),
and of a stuck output's backlog only the newest ``max_activity`` utterances are kept.
Status snapshots are coalesced too: an output only needs the latest. ``put`` never blocks:
the caption source must never wait for an output.

Waiting: the worker sleeps in ``wait`` (a condition variable: no timer, no polling) until an
event is there, ``wake`` was called (a stop) or its output's deadline. An output that must
also watch file descriptors of its own (sockets, a serial port) sleeps in one poll() on
those and on ``wake_fd``, an eventfd that becomes readable on the same conditions while the
worker is ``arm``-ed. Either way a burst of events costs one wake-up: whatever comes while
the worker is busy is taken in the same turn.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict, deque

from edgecap.captions.events import CaptionLine, SynthesizedAudio
from edgecap.outputs.base import OutputEvent
from edgecap.runtime.speech import Activity
from edgecap.runtime.status import StatusSnapshot

log = logging.getLogger(__name__)


class EventQueue:
    def __init__(self, max_finals: int = 1000, max_activity: int = 64) -> None:
        self.max_finals = max_finals
        self.max_activity = max_activity
        self._finals: deque[OutputEvent] = deque()
        self._provisional: OrderedDict[int, CaptionLine] = OrderedDict()
        self._activity: OrderedDict[int, Activity] = OrderedDict()  # by utterance
        self._status: StatusSnapshot | None = None
        self._cond = threading.Condition()
        self.coalesced = 0
        self.dropped_finals = 0
        self.dropped_audio = 0  # of those, chunks of synthesized speech
        self.dropped_activity = 0  # utterances whose activity a stuck output never got
        self._woken = False  # wake() was called and no wait has returned since
        self._fd: int | None = None  # the eventfd behind wake_fd, made on first use
        self._fd_set = False  # the eventfd has been written and not read since
        self._armed: bool | None = None  # None, or whether an event signals the eventfd

    def put(self, event: OutputEvent) -> None:
        with self._cond:
            if isinstance(event, StatusSnapshot):
                if self._status is not None:
                    self.coalesced += 1
                self._status = event
            elif isinstance(event, CaptionLine) and not event.final:
                if event.seq in self._provisional:
                    self.coalesced += 1
                    del self._provisional[event.seq]
                self._provisional[event.seq] = event
            elif isinstance(event, Activity):
                if self._activity.pop(event.utterance, None) is not None:
                    self.coalesced += 1
                self._activity[event.utterance] = event
                while len(self._activity) > self.max_activity:
                    self._activity.popitem(last=False)
                    self.dropped_activity += 1
            else:
                stale = isinstance(event, CaptionLine) and self._provisional.pop(event.seq, None)
                if stale is not None and stale is not False:
                    self.coalesced += 1
                self._finals.append(event)
                while len(self._finals) > self.max_finals:
                    dropped = self._finals.popleft()
                    self.dropped_finals += 1
                    if isinstance(dropped, SynthesizedAudio):
                        self._audio_dropped()
            self._cond.notify()
            if self._armed:
                self._signal()

    def _audio_dropped(self) -> None:
        self.dropped_audio += 1
        if self.dropped_audio & (self.dropped_audio - 1) == 0:  # 1, 2, 4, 8 …
            log.warning(
                "an output's queue is full: %d chunk(s) of spoken translation dropped so far",
                self.dropped_audio,
            )

    def get(self, timeout: float) -> OutputEvent | None:
        """The next event, or None after ``timeout``. Finals (in order) first, then the
        newest provisional lines, then speech activity (by utterance), then the latest
        status."""
        with self._cond:
            if not self._pending():
                self._cond.wait(timeout)
            if self._finals:
                return self._finals.popleft()
            if self._provisional:
                _, line = self._provisional.popitem(last=False)
                return line
            if self._activity:
                _, activity = self._activity.popitem(last=False)
                return activity
            if self._status is not None:
                status, self._status = self._status, None
                return status
            return None

    def wait(self, timeout: float | None, *, events: bool = True) -> None:
        """Block until an event is queued (if ``events``; a busy output waits for its
        device, not for events), ``wake`` is called, or ``timeout`` seconds passed (None:
        no limit)."""
        with self._cond:
            if timeout is None:
                while not self._woken and not (events and self._pending()):
                    self._cond.wait()
            else:
                deadline = time.monotonic() + timeout
                while not self._woken and not (events and self._pending()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            self._woken = False

    def wake(self) -> None:
        """Wake the consumer now, with or without an event (called at stop)."""
        with self._cond:
            self._woken = True
            self._cond.notify()
            if self._armed is not None:
                self._signal()

    @property
    def wake_fd(self) -> int:
        """A file descriptor for poll(): readable while ``arm``-ed once an event is queued
        (if armed for events) or ``wake`` was called. Closed by ``close``."""
        with self._cond:
            if self._fd is None:
                self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            return self._fd

    def arm(self, *, events: bool = True) -> bool:
        """Before a poll() on ``wake_fd``: False when there is no need to wait (an event is
        queued, or a wake is pending: it is taken). Call ``disarm`` after the poll."""
        with self._cond:
            if self._woken or (events and self._pending()):
                self._woken = False
                return False
            self._armed = events
            return True

    def disarm(self) -> None:
        """After the poll: ``wake_fd`` is quiet again until the next ``arm``."""
        with self._cond:
            self._armed = None
            self._woken = False
            if self._fd_set and self._fd is not None:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._fd)
            self._fd_set = False

    def close(self) -> None:
        """Close ``wake_fd`` (at the end of the worker's thread); the queue stays usable."""
        with self._cond:
            fd, self._fd = self._fd, None
            self._fd_set = False
        if fd is not None:
            os.close(fd)

    def _signal(self) -> None:
        """Make ``wake_fd`` readable (under the lock, so never after ``close``)."""
        if self._fd is not None and not self._fd_set:
            os.eventfd_write(self._fd, 1)
            self._fd_set = True

    def _pending(self) -> bool:
        return bool(self._finals or self._provisional or self._activity or self._status is not None)

    def __len__(self) -> int:
        with self._cond:
            queued = len(self._finals) + len(self._provisional) + len(self._activity)
            return queued + (self._status is not None)
