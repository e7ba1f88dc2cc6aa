"""The capture worker: source → speech gate → speech queue, on one thread.

It owns the source's whole life: open, read, and — when the device is missing, busy or
vanishes — close, report, wait (capped exponential backoff, interrupted at once by a stop
request), reopen. It never crash-loops on a missing microphone and never spams the log: a
state change is logged once, repeats only through the rate-limited logger. On stop or end of
input it ends the open utterance, so nothing already captured is lost in flight.

Audio moves in blocks (about 100 ms, ``runtime.frames``): per block one ``read()``, one
``gate.feed_block()`` and one queue put per event the gate returns — about one per block
while someone speaks, none in silence. A put may send the block on to the service from
this thread (the link's producer turn, link/worker.py), never waiting on the network.
The thread sleeps in ``read()`` until the block is there, as a thread waiting for input
(``Worker.waiting``): no wake-ups in between, and a stop interrupts the source at once
(``AudioSource.interrupt``) rather than waiting for a timeout.
"""

from __future__ import annotations

import logging
import time

from edgecap.audio.source import (
    NOT_READY,
    AudioSource,
    SourceConfigError,
    SourceLost,
    SourceUnavailable,
    _NotReady,
)
from edgecap.gate.speech_gate import SpeechGate
from edgecap.runtime.backoff import Backoff
from edgecap.runtime.frames import SAMPLE_RATE, Block
from edgecap.runtime.logsetup import fields
from edgecap.runtime.speech import EndReason, GateEvent, SpeechEnd, SpeechStart
from edgecap.runtime.speech_queue import SpeechQueue
from edgecap.runtime.status import StatusBoard
from edgecap.runtime.worker import Worker

log = logging.getLogger(__name__)

# How long one read() may wait for its block. A stop does not wait for it (the source is
# interrupted), so this only bounds how long a source may keep the thread: a read still
# going READ_TIMEOUT + READ_GRACE after it began, and longer than the watchdog's own
# patience, is a wedged driver and the watchdog is withheld (see ``stale``). That patience
# is at least 2 s, which a hang must not outlast; a silent pipe costs a wake-up per timeout.
READ_TIMEOUT = 1.5
READ_GRACE = 0.5


class CaptureWorker(Worker):
    expected_errors = (SourceConfigError,)  # reported by the supervisor, no traceback

    def __init__(
        self,
        source: AudioSource,
        gate: SpeechGate,
        queue: SpeechQueue,
        status: StatusBoard,
        *,
        retry_first: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        super().__init__("capture")
        self.source = source
        self.gate = gate
        self.queue = queue
        self.status = status
        # A file read faster than real time waits for the consumer instead of dropping,
        # and the consumer knows it may hold back (a link paced by its service).
        live = getattr(source, "realtime", True)
        self._wait_for_room = None if live else self._room_wanted
        queue.producer_waits = not live
        self.backoff = Backoff(first=retry_first, cap=retry_max, healthy_after=10.0)
        self.frames_read = 0
        self.blocks_read = 0
        self._read_since: float | None = None  # when the read() under way began

    def request_stop(self) -> None:
        super().request_stop()
        self._interrupt_source()

    def hand_over(self) -> None:
        super().hand_over()
        self._interrupt_source()

    def stale(self, now: float, after: float) -> bool:
        """A read may wait for its whole timeout (idle by design); one that outlives it is
        a hang, as is no progress for ``after`` outside a read."""
        since = self._read_since
        if since is not None:
            return now - since > max(after, READ_TIMEOUT + READ_GRACE)
        return super().stale(now, after)

    def _interrupt_source(self) -> None:
        interrupt = getattr(self.source, "interrupt", None)
        if interrupt is not None:  # part of the AudioSource contract; test doubles may lack it
            try:
                interrupt()
            except Exception:  # a stop must go on whatever the source does
                log.warning("interrupting %s failed", self.source.name, exc_info=True)

    def run(self) -> None:
        opened = False
        reason: EndReason = "stop"
        try:
            while not self.stopping:
                if not opened:
                    opened = self._open()
                    continue
                try:
                    item = self._read()
                except SourceLost as exc:
                    self._push(self.gate.flush("source_lost"))
                    self._close()
                    opened = False
                    self._unavailable("device_missing", f"lost: {exc}")
                    continue
                self.beat()
                if item is NOT_READY:
                    continue
                if item is None:
                    reason = "end_of_input"
                    self._push(self.gate.flush(reason))
                    self.status.set("audio", "ended", self.source.name)
                    log.info("end of input from %s", self.source.name)
                    break
                assert isinstance(item, Block)
                self._block(item)
        finally:
            # Also on an exception: end the utterance so the consumer sees it closed.
            self._push(self.gate.flush(reason))
            self.queue.close()
            if opened:
                self._close()

    def _read(self) -> Block | _NotReady | None:
        """One read, as a wait for input: the watchdog counts the thread healthy meanwhile
        (up to the read's own deadline, see ``stale``)."""
        self._read_since = time.monotonic()
        try:
            with self.waiting():
                return self.source.read(READ_TIMEOUT)
        finally:
            self._read_since = None

    def _block(self, block: Block) -> None:
        self.blocks_read += 1
        self.frames_read += block.samples // self.gate.frame_samples
        self.backoff.reset_if_healthy()
        self._push(self.gate.feed_block(block))

    def _push(self, events: list[GateEvent]) -> None:
        for event in events:
            self.queue.put(event, self._wait_for_room)
            if isinstance(event, SpeechStart):
                self.status.set("audio", "speech")
            elif isinstance(event, SpeechEnd):
                self.status.set("audio", "listening")
        dropped = self.queue.dropped_samples
        if dropped:
            self.status.put("audio_dropped_s", dropped / SAMPLE_RATE)

    def _room_wanted(self) -> bool:
        self.beat()  # waiting for the consumer is progress, not a hang
        return not self.stopping

    def _open(self) -> bool:
        self.status.add("audio_open_attempts")
        try:
            self.source.open()
        except SourceUnavailable as exc:
            self._unavailable(exc.state, str(exc))
            return False
        except SourceConfigError:
            self.status.set("audio", "failed", self.source.name)
            raise
        self.backoff.succeeded()
        self.status.set("audio", "listening", self.source.name)
        log.info("capturing from %s", self.source.name)
        return True

    def _unavailable(self, state: str, detail: str) -> None:
        if self.status.set("audio", state, detail):
            log.warning(
                "audio %s: %s", state.replace("_", " "), detail, **fields(state=state, part="audio")
            )
        delay = self.backoff.next_delay()
        log.debug("reopening %s in %.1f s", self.source.name, delay)
        deadline = time.monotonic() + delay
        # Waiting for a device is progress too: keep beating (the watchdog reads it).
        while not self.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
            self.beat()
            if time.monotonic() >= deadline:
                break

    def _close(self) -> None:
        try:
            self.source.close()
        except Exception:  # closing a vanished device may fail; it is gone either way
            log.debug("closing %s failed", self.source.name, exc_info=True)
