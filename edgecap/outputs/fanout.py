"""Hands every caption and status event to the output workers that take it, without ever
waiting.

Each worker has its own bounded, coalescing queue (event_queue.py), so the caption source
(the link's thread) spends a few microseconds per output and event, whatever the outputs do.
The exception is an ``inline`` output (the caption socket, the web page: base.py) whose
thread is asleep with nothing queued: its handle() — encode once, one non-blocking send per
client — runs right here, which costs less than waking its thread would.
An output is only given the kinds of event it declares in ``takes`` (base.py): synthesized
speech only reaches the outputs that play or save it, status changes only those that show
them, provisional text only those that show it — so no output thread wakes up for an event
it would throw away.
"""

from __future__ import annotations

from edgecap.outputs.base import OutputEvent, kind_of
from edgecap.outputs.worker import OutputWorker


class FanOut:
    def __init__(self, workers: list[OutputWorker]) -> None:
        self.workers = workers

    def publish(self, event: OutputEvent) -> None:
        kind = kind_of(event)
        for worker in self.workers:
            if kind in worker.takes:
                worker.publish(event)

    def __len__(self) -> int:
        return len(self.workers)
