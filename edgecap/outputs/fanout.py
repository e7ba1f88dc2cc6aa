"""Hands every caption and status event to every output worker, without ever waiting.

Each worker has its own bounded, coalescing queue (event_queue.py), so the caption source
(the link's thread) spends a few microseconds per output and event, whatever the outputs do.
Synthesized speech goes only to the outputs that declare ``takes_audio``.
"""

from __future__ import annotations

from edgecap.captions.events import SynthesizedAudio
from edgecap.outputs.base import OutputEvent
from edgecap.outputs.worker import OutputWorker


class FanOut:
    def __init__(self, workers: list[OutputWorker]) -> None:
        self.workers = workers

    def publish(self, event: OutputEvent) -> None:
        audio = isinstance(event, SynthesizedAudio)
        for worker in self.workers:
            if audio and not getattr(worker.output, "takes_audio", False):
                continue
            worker.publish(event)

    def __len__(self) -> int:
        return len(self.workers)
