"""``fallback = local``: the offline engine takes the speech while the cloud is gone.

The LinkWorker decides and routes; this object keeps the rules in one place:

- The *down clock* starts when the link starts retrying or is refused. A successful connect
  only pauses it: the clock is cleared when the service has answered (a result arrived), so a
  service that accepts connections and then dies at once still counts as down.
- Once the link has been down for ``after`` seconds, :meth:`enter` gets the speech the link
  was holding for the service (everything it had not confirmed, in capture order) and from
  then on :meth:`offer` takes every new gate event: all of it goes to the offline engine's
  own bounded queue, nothing is dropped for want of a connection.
- Meanwhile the link keeps trying. When it is connected again, speech returns to the cloud
  at the next utterance boundary: the utterance the offline engine is decoding stays with it
  to its end, so no utterance is split between the two, and none is captioned twice (what
  the link handed over was unconfirmed by the service, and is no longer in its buffer).

Captions of the offline engine are marked as such by the board it writes to (``offline``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from edgecap.runtime.frames import SAMPLE_RATE
from edgecap.runtime.logsetup import fields
from edgecap.runtime.speech import GateEvent, SpeechAudio, SpeechEnd, SpeechStart
from edgecap.runtime.speech_queue import SpeechQueue
from edgecap.runtime.status import StatusBoard

log = logging.getLogger(__name__)


class Fallback:
    def __init__(
        self, queue: SpeechQueue, after: float, status: StatusBoard, *, service: str
    ) -> None:
        self.queue = queue
        self.after = after
        self.status = status
        self.service = service
        self.active = False
        self._down_since: float | None = None
        self._paused: float | None = None  # the down clock while a new session proves itself
        self._open: int | None = None  # the utterance routed here that has not ended
        self._last_sample = 0
        self.switches = 0  # times speech went to the offline engine
        self.returns = 0  # times it came back to the cloud

    # --- the down clock -------------------------------------------------------------------
    def link_down(self, now: float) -> None:
        if self._down_since is None:
            self._down_since = self._paused if self._paused is not None else now
        self._paused = None

    def link_connected(self) -> None:
        if self._down_since is not None:
            self._paused, self._down_since = self._down_since, None

    def link_answered(self) -> None:
        self._down_since = self._paused = None

    def due(self, now: float) -> bool:
        return (
            not self.active
            and self._down_since is not None
            and now - self._down_since >= self.after
        )

    def down_for(self, now: float) -> float:
        return 0.0 if self._down_since is None else now - self._down_since

    # --- routing --------------------------------------------------------------------------
    def enter(self, held: Iterable[GateEvent], now: float) -> None:
        """Switch to the offline engine, with the speech the link held (oldest first)."""
        self.active = True
        self.switches += 1
        samples = 0
        for event in held:
            self._put(event)
            if isinstance(event, SpeechAudio):
                samples += event.frame.samples
        log.warning(
            "%s unreachable for %.0f s: captions now come from the offline engine "
            "(%.1f s of held speech handed to it)",
            self.service,
            self.down_for(now),
            samples / SAMPLE_RATE,
            **fields(state="offline", service=self.service),
        )
        self.status.set("fallback", "offline", f"{self.service} down")
        self.status.put("fallback_switches", self.switches)

    def offer(self, event: GateEvent, connected: bool) -> bool:
        """Route a new gate event: True if the offline engine took it."""
        if not self.active:
            return False
        if self.maybe_return(connected):
            return False
        self._put(event)
        return True

    def maybe_return(self, connected: bool) -> bool:
        """Back to the cloud if it is connected and no utterance is half-way here."""
        if not self.active or not connected or self._open is not None:
            return False
        self.active = False
        self.returns += 1
        log.info(
            "%s is back: speech goes to it again",
            self.service,
            **fields(state="connected", service=self.service),
        )
        self.status.set("fallback", "standby")
        self.status.put("fallback_returns", self.returns)
        return True

    def take_at_stop(self, held: Iterable[GateEvent]) -> None:
        """Stopping with speech the service did not caption (not sent, or sent and not
        confirmed): the offline engine gets it, in capture order, rather than nobody. Not a
        switch: the link is ending."""
        samples = 0
        for event in held:
            self._put(event)
            if isinstance(event, SpeechAudio):
                samples += event.frame.samples
        log.info(
            "%.1f s of speech %s had not captioned at stop go to the offline engine",
            samples / SAMPLE_RATE,
            self.service,
        )

    def close(self) -> None:
        """No more speech: the offline engine finishes what it has and stops."""
        if self._open is not None:
            # never leave an utterance open: the engine would wait for its end forever
            self.queue.put(SpeechEnd(self._open, self._last_sample, "stop", 0.0))
            self._open = None
        self.queue.close()

    def _put(self, event: GateEvent) -> None:
        if isinstance(event, SpeechStart):
            self._open = event.utterance
        elif isinstance(event, SpeechEnd):
            self._open = None
        else:
            self._last_sample = event.frame.start + event.frame.samples
        self.queue.put(event)
