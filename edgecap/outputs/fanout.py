"""Hands every caption and status event to every output worker, without ever waiting.

Each worker has its own bounded, coalescing queue (event_queue.py), so the caption source
(the link's thread) spends a few microseconds per output and event, whatever the outputs do.
"""

from __future__ import annotations

from edgecap.outputs.base import OutputEvent
from edgecap.outputs.worker import OutputWorker


class FanOut:
    def __init__(self, workers: list[OutputWorker]) -> None:
        self.workers = workers
        self.published = 0

    def publish(self, event: OutputEvent) -> None:
        self.published += 1
        for worker in self.workers:
            worker.publish(event)

    def __len__(self) -> int:
        return len(self.workers)
