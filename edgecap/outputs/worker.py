"""Runs one output on its own thread: events from its queue, reopen with backoff on loss.

The status part ``output:<name>`` says ``ok``, ``unavailable`` (with the reason, while
retrying) or ``failed``. An output that raises anything other than OutputUnavailable has a
bug: it is logged with its traceback once, closed, and retried like a lost device, so one
broken output never takes the daemon or the other outputs down. While an output is
``busy`` (its device has not taken what it was given: see base.py) it gets no new events,
only idle() calls, so the queue coalesces for it.
"""

from __future__ import annotations

import logging
import time

from edgecap.outputs.base import Output, OutputUnavailable
from edgecap.outputs.event_queue import EventQueue
from edgecap.runtime.backoff import Backoff
from edgecap.runtime.logsetup import fields
from edgecap.runtime.status import StatusBoard
from edgecap.runtime.worker import Worker

log = logging.getLogger(__name__)


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
        self.status = status
        self.queue = EventQueue(max_finals)
        self.backoff = Backoff(first=retry_first, cap=retry_max, healthy_after=10.0)
        self.drain_timeout = drain_timeout
        self.part = f"output:{output.name}"
        self.handled = 0
        self.failures = 0
        self._open = False
        self._retry_at = 0.0

    def publish(self, event) -> None:  # type: ignore[no-untyped-def]
        """Called from any thread; never blocks."""
        self.queue.put(event)

    def run(self) -> None:
        try:
            while not self.stopping:
                now = time.monotonic()
                if not self._open:
                    if now < self._retry_at:
                        # Keep only what matters while the device is away: finals stay
                        # queued (bounded), provisional and status keep coalescing.
                        self.wait(min(0.25, self._retry_at - now))
                        self.beat()
                        continue
                    self._try_open()
                    continue
                if self._busy():  # the device has not taken the last event's output yet
                    self.beat()
                    self._guarded(None)
                    continue
                event = self.queue.get(timeout=self.output.idle_interval)
                self.beat()
                self._guarded(event)
            self._drain()
        finally:
            self._close()

    def _drain(self) -> None:
        """At stop: hand over what is queued (finals last said) within drain_timeout."""
        deadline = time.monotonic() + self.drain_timeout
        while self._open and time.monotonic() < deadline:
            if self._busy():
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
            if event is None:
                self.output.idle(time.monotonic())
            else:
                self.output.handle(event)
                self.handled += 1
                self.output.idle(time.monotonic())
        except OutputUnavailable as exc:
            self._lost(str(exc))
        except Exception as exc:
            log.exception("output %s failed", self.output.name)
            self._lost(f"{type(exc).__name__}: {exc}")

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
