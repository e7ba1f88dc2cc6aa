"""The speech consumer of this version: reports the gate's utterances to the outputs.

It sits where the speech service link (or the offline engine) will sit: it drains the speech
queue on its own thread until the capture side closes it, so every utterance captured before
a stop is accounted for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edgecap.audio.frames import seconds
from edgecap.daemon.speech_queue import SpeechQueue
from edgecap.daemon.worker import Worker
from edgecap.gate.events import SpeechAudio, SpeechEnd, SpeechStart
from edgecap.outputs.stdout import Activity

log = logging.getLogger(__name__)


class ActivityWorker(Worker):
    def __init__(self, queue: SpeechQueue, publish: Callable[[Activity], None]) -> None:
        super().__init__("speech")
        self.queue = queue
        self.publish = publish
        self.utterances = 0
        self.frames = 0
        self.samples = 0
        self._open: SpeechStart | None = None

    def run(self) -> None:
        # Drain until the capture side closed the queue: a stop request alone does not end
        # this loop, or speech captured just before the stop would be lost in flight.
        while not self.handing_over.is_set():
            try:
                event = self.queue.get(timeout=0.5)
            except TimeoutError:
                self.beat()
                continue
            self.beat()
            if event is None:
                return
            if isinstance(event, SpeechStart):
                self._open = event
                self.publish(Activity(event.utterance, seconds(event.sample)))
            elif isinstance(event, SpeechAudio):
                self.frames += 1
                self.samples += event.frame.samples
            elif isinstance(event, SpeechEnd):
                self.utterances += 1
                start = self._open.sample if self._open else event.sample
                self._open = None
                self.publish(
                    Activity(event.utterance, seconds(start), seconds(event.sample), event.reason)
                )
