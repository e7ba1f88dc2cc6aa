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
"""

from __future__ import annotations

import logging
import time

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

    def publish(self, event) -> None:  # type: ignore[no-untyped-def]
        """Called from any thread; never blocks."""
        self.queue.put(event)

    def request_stop(self) -> None:
        super().request_stop()
        self.queue.wake()

    def hand_over(self) -> None:
        super().hand_over()
        self.queue.wake()

    def run(self) -> None:
        try:
            while not self.stopping:
                if not self._open:
                    delay = self._retry_at - time.monotonic()
                    if delay > 0:
                        # Keep only what matters while the device is away: finals stay
                        # queued (bounded), provisional and status keep coalescing.
                        with self.waiting():
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
                        event = self.queue.get(timeout=0)
                self.beat()
                self._guarded(event)  # None: the output's deadline came, or its device woke it
            self._drain()
        finally:
            self._close()
            self.queue.close()

    def _delay(self) -> float | None:
        """Seconds until the output's idle() is due; None: only an event (or its device)."""
        if self._wake_at is None:
            return None
        return max(0.0, self._wake_at - time.monotonic())

    def _sleep(self, timeout: float | None, *, events: bool) -> None:
        """Block until an event (if ``events``), the output's device, ``timeout`` or stop."""
        if not events and timeout is None and self._wait_io is None:
            timeout = BUSY_RETRY  # busy, and nothing to tell when the device has room
        with self.waiting():
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
        except OutputUnavailable as exc:
            self._lost(str(exc))
        except Exception as exc:
            log.exception("output %s failed", self.output.name)
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
