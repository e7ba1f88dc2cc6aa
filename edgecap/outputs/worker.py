"""Runs one output on its own thread: events from its queue, reopen with backoff on loss.

The status part ``output:<name>`` says ``ok``, ``unavailable`` (with the reason, while
retrying) or ``failed``. An output that raises anything other than OutputUnavailable has a
bug: it is logged with its traceback once, closed, and retried like a lost device, so one
broken output never takes the daemon or the other outputs down. While an output is
``busy`` (its device has not taken what it was given: see base.py) it gets no new events,
only idle() calls, so the queue coalesces for it.

The thread sleeps whenever there is nothing to do, with no timeout of its own: until an
event, the output's next deadline (``wake_in``), its device (``wait_io``), the time to try a
lost device again, or stop. Each such sleep is inside ``waiting()``, so the watchdog counts
the worker as healthy however long it lasts; ``request_stop`` wakes it at once.

Inline delivery (issue 14). Handing an event to a sleeping thread costs a wake-up: on a
quiet machine more CPU than an output such as the caption socket spends on the event. An
output that says ``inline = True`` (its handle() never blocks and is cheap: base.py) is
therefore given an event on the publisher's own thread when nothing stands in the way: it
is open and not busy, its queue is empty (nothing older may be overtaken), its thread is
asleep waiting for events, no stop was asked, and the worker's lock is free. The worker is
a monitor: its thread holds ``_turn`` for every turn (everything but its sleeps), and the
publisher only ever *tries* it, so a publisher never waits for an output and the output's
state is only ever touched by one thread at a time. After an inline event the thread is
woken only if it must do something: the output's deadline came nearer than the one it
sleeps until, the output became busy, or it wants its thread (``wants_thread``: what it
waits on changed, e.g. a client's backlog now needs POLLOUT). An exception in the inline
handle() never reaches the publisher: it is kept, and the woken thread treats it as it
treats its own (logged with its traceback, the output closed and reopened with backoff).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from edgecap.outputs.base import Output, OutputUnavailable, takes_of
from edgecap.outputs.event_queue import EventQueue
from edgecap.runtime.backoff import Backoff
from edgecap.runtime.logsetup import fields
from edgecap.runtime.status import StatusBoard
from edgecap.runtime.worker import Worker

log = logging.getLogger(__name__)

# A busy output with neither wait_io nor a deadline (against the contract) is retried this
# often rather than never.
BUSY_RETRY = 0.1
# After an inline event, the thread is woken for a deadline only when it came nearer than
# this (seconds): the same deadline, computed again, differs by microseconds.
EARLIER = 0.001


class OutputWorker(Worker):
    def __init__(
        self,
        output: Output,
        status: StatusBoard,
        *,
        max_finals: int = 1000,
        retry_first: float = 0.5,
        retry_max: float = 30.0,
        drain_timeout: float = 1.0,
    ) -> None:
        super().__init__(f"output-{output.name}")
        self.output = output
        self.takes = takes_of(output)  # what the fan-out hands this worker
        self.status = status
        self.queue = EventQueue(max_finals)
        self.backoff = Backoff(first=retry_first, cap=retry_max, healthy_after=10.0)
        self.drain_timeout = drain_timeout
        self.part = f"output:{output.name}"
        self.handled = 0
        self.failures = 0
        self.wakeups = 0  # sleeps ended, each a wake-up of the thread (for tests, benches)
        self._open = False
        self._retry_at = 0.0
        self._wake_at: float | None = None  # monotonic time the output's idle() is due
        self._wait_io = getattr(output, "wait_io", None)
        # Events on the publisher's thread when the output allows it (see the module doc);
        # a plain attribute, so a bench or a test can turn it off.
        self.inline = bool(getattr(output, "inline", False))
        self.inlined = 0  # of ``handled``, those handled on the publisher's thread
        self._turn = threading.Lock()  # held by the thread for every turn (not its sleeps)
        self._asleep = False  # the thread sleeps waiting for events (set under _turn)
        self._sleep_until: float | None = None  # the deadline that sleep ends at by itself
        self._inline_error: Exception | None = None  # raised inline, not yet dealt with

    def publish(self, event) -> None:  # type: ignore[no-untyped-def]
        """Called from any thread; never blocks. Handled here and now when the output is
        inline and its thread asleep with nothing queued; else queued for the thread."""
        if self.inline and self._asleep and self._turn.acquire(blocking=False):
            try:
                if self._may_inline():
                    self._deliver(event)
                    return
            finally:
                self._turn.release()
        self.queue.put(event)

    def _may_inline(self) -> bool:
        """Under ``_turn``: nothing stands between this event and the output."""
        return (
            self._asleep
            and self._open
            and self._inline_error is None
            and not self.stopping
            and not self._busy()
            and not len(self.queue)
        )

    def _deliver(self, event) -> None:  # type: ignore[no-untyped-def]
        """Under ``_turn``, on the publisher's thread: what the thread does with an event.
        idle() is left to the thread when the output sleeps in wait_io: its idle() polls
        the same poll object that sleeping thread is in (CPython refuses a second poll()
        on one object), and whatever it would find makes that poll return anyway."""
        try:
            self.output.handle(event)
            self.handled += 1
            self.inlined += 1
            if self._wait_io is None:
                self.output.idle(time.monotonic())
            self._schedule()
        except Exception as exc:  # never to the publisher: the thread deals with it
            self._inline_error = exc
            self.queue.wake()
            return
        if self._needs_thread():
            self.queue.wake()

    def _needs_thread(self) -> bool:
        """After an inline event: must the sleeping thread wake (see the module doc)?"""
        if self._busy() or getattr(self.output, "wants_thread", False):
            return True
        due, until = self._wake_at, self._sleep_until
        return due is not None and (until is None or due < until - EARLIER)

    def request_stop(self) -> None:
        super().request_stop()
        self.queue.wake()

    def hand_over(self) -> None:
        super().hand_over()
        self.queue.wake()

    def run(self) -> None:
        self._turn.acquire()  # released only while asleep (_unlocked)
        try:
            while not self.stopping:
                if self._inline_failed():
                    continue
                if not self._open:
                    delay = self._retry_at - time.monotonic()
                    if delay > 0:
                        # Keep only what matters while the device is away: finals stay
                        # queued (bounded), provisional and status keep coalescing.
                        with self._unlocked(events=False):
                            self.wait(delay)
                        continue
                    self._try_open()
                    continue
                if self._busy():  # the device has not taken the last event's output yet
                    self._sleep(self._delay(), events=False)
                    if not self.stopping:
                        self.beat()
                        self._guarded(None)
                    continue
                event = self.queue.get(timeout=0)
                if event is None:
                    delay = self._delay()
                    if delay is None or delay > 0:
                        self._sleep(delay, events=True)
                        if self.stopping:
                            break
                        if self._inline_failed() or self._busy():
                            continue  # busy: an inline handle() filled its device
                        event = self.queue.get(timeout=0)
                self.beat()
                self._guarded(event)  # None: the output's deadline came, or its device woke it
            self._drain()
        finally:
            try:
                self._close()
                self.queue.close()
            finally:
                self._turn.release()

    @contextlib.contextmanager
    def _unlocked(self, *, events: bool) -> Iterator[None]:
        """The thread's sleep: ``_turn`` is free meanwhile (for inline events, if
        ``events``: the thread sleeps waiting for them, until ``_wake_at`` at the latest)."""
        self._asleep = events
        self._sleep_until = self._wake_at
        self._turn.release()
        try:
            with self.waiting():
                yield
        finally:
            self._turn.acquire()
            self._asleep = False

    def _delay(self) -> float | None:
        """Seconds until the output's idle() is due; None: only an event (or its device)."""
        if self._wake_at is None:
            return None
        return max(0.0, self._wake_at - time.monotonic())

    def _sleep(self, timeout: float | None, *, events: bool) -> None:
        """Block until an event (if ``events``), the output's device, ``timeout`` or stop."""
        if not events and timeout is None and self._wait_io is None:
            timeout = BUSY_RETRY  # busy, and nothing to tell when the device has room
        with self._unlocked(events=events):
            if self._wait_io is None:
                self.queue.wait(timeout, events=events)
            elif self.queue.arm(events=events):
                try:
                    self._wait_io(timeout, self.queue.wake_fd)
                finally:
                    self.queue.disarm()
        self.wakeups += 1

    def _drain(self) -> None:
        """At stop: hand over what is queued (finals last said) within drain_timeout."""
        deadline = time.monotonic() + self.drain_timeout
        self._inline_failed()  # an output that failed inline is closed, not drained
        while self._open and time.monotonic() < deadline:
            if self._busy():
                delay = self._delay()
                left = deadline - time.monotonic()
                self._sleep(left if delay is None else min(delay, left), events=False)
                self._guarded(None)
                continue
            event = self.queue.get(timeout=0)
            if event is None:
                break
            self._guarded(event)

    def _busy(self) -> bool:
        return bool(getattr(self.output, "busy", False))

    def _guarded(self, event) -> None:  # type: ignore[no-untyped-def]
        try:
            if event is not None:
                self.output.handle(event)
                self.handled += 1
            self.output.idle(time.monotonic())
            self._schedule()
        except Exception as exc:
            self._failed(exc)

    def _inline_failed(self) -> bool:
        """Deal with what an inline handle()/idle() raised, if anything (True then)."""
        exc, self._inline_error = self._inline_error, None
        if exc is None:
            return False
        self._failed(exc)
        return True

    def _failed(self, exc: Exception) -> None:
        """The output raised: a lost device is retried; anything else is a bug, logged with
        its traceback, and then retried the same way."""
        if isinstance(exc, OutputUnavailable):
            self._lost(str(exc))
            return
        log.error("output %s failed", self.output.name, exc_info=exc)
        self._lost(f"{type(exc).__name__}: {exc}")

    def _schedule(self) -> None:
        """Ask the output when its idle() is next due."""
        now = time.monotonic()
        wake_in = getattr(self.output, "wake_in", None)
        # an output written before wake_in: idle() every idle_interval, as then
        delay = wake_in(now) if wake_in is not None else getattr(self.output, "idle_interval", None)
        self._wake_at = None if delay is None else now + max(0.0, delay)

    def _try_open(self) -> None:
        try:
            self.output.open()
        except OutputUnavailable as exc:
            self._schedule_retry(str(exc))
            return
        except Exception as exc:
            log.exception("output %s could not be opened", self.output.name)
            self._schedule_retry(f"{type(exc).__name__}: {exc}")
            return
        self._open = True
        try:
            self._schedule()  # its first deadline (a screen: the first frame, at once)
        except Exception as exc:
            log.exception("output %s failed", self.output.name)
            self._lost(f"{type(exc).__name__}: {exc}")
            return
        self.backoff.succeeded()
        log.info("output %s ready", self.output.name)
        self.status.set(self.part, "ok")

    def _lost(self, why: str) -> None:
        self.failures += 1
        self._close()
        self._schedule_retry(why)

    def _schedule_retry(self, why: str) -> None:
        delay = self.backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        if self.status.set(self.part, "unavailable", why):
            log.warning(
                "output %s unavailable: %s; retrying",
                self.output.name,
                why,
                **fields(state="unavailable", output=self.output.name),
            )

    def _close(self) -> None:
        if self._open:
            self._open = False
            try:
                self.output.close()
            except Exception:
                log.exception("closing output %s failed", self.output.name)
