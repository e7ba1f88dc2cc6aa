"""The bounded hand-off from the capture thread to the speech consumer.

The capture thread of a live source must never block (a blocked capture thread is audio
lost at the device, unnoticed), so ``put`` never waits. The queue is bounded by the audio it
holds; past the bound the *oldest audio frame* is dropped — utterance start/end markers are
kept, so every utterance stays well-formed — and the loss is counted exactly, in samples.

A source that is not live (a file read as fast as it can be) is different: dropping would
lose speech for nothing, so its capture waits for room instead, and says so once with
``producer_waits``. A consumer that cannot keep up with such a producer (a link paced by
its service) may then simply take no more for a while — backpressure through this queue —
instead of dropping what it took.

A consumer that sleeps on more than this queue (the link also waits for its connection and
its timers) does not block in ``get``: it registers a *waker* (``set_waker``), called after
every ``put`` and at ``close``, and takes with ``get(0)`` when woken. A *room waker*
(``set_room_waker``) is called whenever audio leaves the queue: a producer-side party held
back by this queue's bound (the link feeding the offline engine's queue from a file) learns
that there is room again. Wakers are called on the caller's thread, outside the queue's
lock, and must be quick (set an event).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable

from edgecap.runtime.speech import GateEvent, SpeechAudio

MAX_MARKERS = 10_000  # start/end markers are tiny, but even they are bounded


class SpeechQueue:
    def __init__(self, max_samples: int) -> None:
        if max_samples <= 0:
            raise ValueError("max_samples must be positive")
        self.max_samples = max_samples
        self._items: deque[GateEvent] = deque()
        self._held_samples = 0
        self._markers = 0
        self._cond = threading.Condition()
        self._closed = False
        self.dropped_samples = 0
        self.dropped_frames = 0
        # The producer waits for room (a source that is not live): a consumer may hold back
        # rather than drop. Set once by the producer before the consumer starts.
        self.producer_waits = False
        self._waker: Callable[[], None] | None = None
        self._room_waker: Callable[[], None] | None = None

    def put(self, event: GateEvent, wait_for_room: Callable[[], bool] | None = None) -> None:
        """Append without ever blocking; drop the oldest audio when over the bound.

        ``wait_for_room``: for a source that is not live (a file read as fast as it can be),
        where dropping would lose speech for nothing: wait while the queue is full, for as
        long as ``wait_for_room()`` says so (it is asked every 100 ms; False: stopping)."""
        with self._cond:
            if wait_for_room is not None and isinstance(event, SpeechAudio):
                while (
                    self._held_samples + event.frame.samples > self.max_samples
                    and not self._closed
                    and wait_for_room()
                ):
                    self._cond.wait(0.1)
            if self._closed:
                raise RuntimeError("put() on a closed SpeechQueue")
            self._items.append(event)
            self._admitted((event,))
        self._wake()

    def requeue(self, events: list[GateEvent]) -> None:
        """Put ``events`` back in front, in order: what a consumer took and leaves to the
        one that replaces it (a link handed over at a reload). Never blocks; past the bound
        the oldest audio goes, counted, as in ``put``."""
        if not events:
            return
        with self._cond:
            self._items.extendleft(reversed(events))
            self._admitted(events)
        self._wake()

    def _admitted(self, events: Iterable[GateEvent]) -> None:
        """Under the lock: ``events`` were added; count them, keep the bound (the oldest
        audio goes first, counted), and tell a consumer waiting in ``get``."""
        for event in events:
            if isinstance(event, SpeechAudio):
                self._held_samples += event.frame.samples
            else:
                self._markers += 1
        while self._held_samples > self.max_samples:
            self._drop_oldest_audio()
        while self._markers > MAX_MARKERS:
            self._drop_oldest_marker()
        self._cond.notify()

    def close(self) -> None:
        """No more events will come; ``get`` returns None once the queue is drained."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._wake()

    def get(self, timeout: float) -> GateEvent | None:
        """The next event; None when closed and drained. Raises TimeoutError if none came
        within ``timeout`` (0: none is there now — no wait at all)."""
        with self._cond:
            if not self._items and not self._closed and timeout > 0:
                self._cond.wait(timeout)
            if not self._items:
                if self._closed:
                    return None
                raise TimeoutError
            event = self._items.popleft()
            if not isinstance(event, SpeechAudio):
                self._markers -= 1
                return event
            self._held_samples -= event.frame.samples
            self._cond.notify_all()  # a producer may be waiting for room
        room_waker = self._room_waker
        if room_waker is not None:
            room_waker()
        return event

    # --- wakers -----------------------------------------------------------------------
    def set_waker(self, wake: Callable[[], None] | None) -> None:
        """Call ``wake`` after every put and at close (one consumer; None: nobody)."""
        self._waker = wake

    def unset_waker(self, wake: Callable[[], None]) -> None:
        """Remove ``wake`` if it is still the waker (a consumer that ends must not remove
        the one of the consumer that replaced it)."""
        if self._waker == wake:
            self._waker = None

    def set_room_waker(self, wake: Callable[[], None] | None) -> None:
        """Call ``wake`` whenever audio is taken from the queue (None: nobody)."""
        self._room_waker = wake

    def _wake(self) -> None:
        wake = self._waker
        if wake is not None:
            wake()

    @property
    def pending(self) -> bool:
        """Something for the consumer: an event, or the close it has not seen yet (it sees
        it as ``get`` returning None)."""
        with self._cond:
            return bool(self._items) or self._closed

    @property
    def held_samples(self) -> int:
        with self._cond:
            return self._held_samples

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def _drop_oldest_audio(self) -> None:
        for index, item in enumerate(self._items):
            if isinstance(item, SpeechAudio):
                del self._items[index]
                self._held_samples -= item.frame.samples
                self.dropped_samples += item.frame.samples
                self.dropped_frames += 1
                return

    def _drop_oldest_marker(self) -> None:
        for index, item in enumerate(self._items):
            if not isinstance(item, SpeechAudio):
                del self._items[index]
                self._markers -= 1
                return
