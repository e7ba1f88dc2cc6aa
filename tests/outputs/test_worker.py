"""An output on its own thread: events in order, reopen with backoff, failures contained."""

from __future__ import annotations

import threading
import time

from edgecap.captions.events import CaptionLine
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard


def line(seq, text, final=True):
    return CaptionLine(
        seq=seq,
        text=text,
        speaker=None,
        language=None,
        start=None,
        end=None,
        final=final,
        translation_final=final,
    )


class Recorder:
    """An output that writes into a list; it can be 'unplugged' and made slow."""

    name = "rec"
    idle_interval = 0.02

    def __init__(self) -> None:
        self.plugged = True
        self.slow = 0.0
        self.got: list = []
        self.opens = 0
        self.closes = 0
        self.idles = 0
        self.lock = threading.Lock()

    def open(self) -> None:
        if not self.plugged:
            raise OutputUnavailable("unplugged")
        self.opens += 1

    def handle(self, event) -> None:
        if not self.plugged:
            raise OutputUnavailable("unplugged")
        time.sleep(self.slow)
        with self.lock:
            self.got.append(event)

    def idle(self, now: float) -> None:
        self.idles += 1

    def close(self) -> None:
        self.closes += 1


def wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_events_arrive_in_order_and_stop_drains_finals():
    out, status = Recorder(), StatusBoard()
    w = OutputWorker(out, status)
    w.start()
    assert wait(lambda: status.snapshot().state_of("output:rec") == "ok")
    for i in range(20):
        w.publish(line(i, str(i)))
    w.request_stop()
    assert w.join(3)
    assert [e.seq for e in out.got] == list(range(20))
    assert out.closes == 1 and out.idles > 0


def test_unplugged_device_is_reopened_with_backoff_and_shown_in_status():
    out, status = Recorder(), StatusBoard()
    out.plugged = False
    w = OutputWorker(out, status, retry_first=0.05, retry_max=0.1)
    w.start()
    assert wait(lambda: status.snapshot().state_of("output:rec") == "unavailable")
    assert status.snapshot().parts["output:rec"].detail == "unplugged"
    w.publish(line(1, "kept while unplugged"))
    out.plugged = True
    assert wait(lambda: [e.seq for e in out.got] == [1])
    out.plugged = False
    w.publish(line(2, "lost device"))
    assert wait(lambda: w.failures == 1)
    out.plugged = True
    w.publish(line(3, "after replug"))
    assert wait(lambda: any(e.seq == 3 for e in out.got))
    w.request_stop()
    assert w.join(3)
    assert out.opens >= 2


def test_a_slow_output_coalesces_provisional_text_and_never_blocks_publish():
    out, status = Recorder(), StatusBoard()
    out.slow = 0.05
    w = OutputWorker(out, status)
    w.start()
    t0 = time.monotonic()
    for i in range(200):
        w.publish(line(1, "word " * i, final=False))
    w.publish(line(1, "the end", final=True))
    published_in = time.monotonic() - t0
    assert published_in < 0.5
    assert wait(lambda: out.got and out.got[-1].final)
    w.request_stop()
    assert w.join(3)
    assert len(out.got) < 20  # most provisional updates were superseded
    assert out.got[-1].text == "the end"


def test_a_buggy_output_is_contained_and_retried():
    class Buggy(Recorder):
        def handle(self, event):
            if event.seq == 1:
                raise RuntimeError("bug")
            super().handle(event)

    out, status = Buggy(), StatusBoard()
    w = OutputWorker(out, status, retry_first=0.05)
    w.start()
    w.publish(line(1, "boom"))
    w.publish(line(2, "fine"))
    assert wait(lambda: [e.seq for e in out.got] == [2])
    w.request_stop()
    assert w.join(3)
    assert w.error is None and w.failures == 1


def test_a_busy_output_gets_no_events_until_its_device_took_the_last_ones():
    """While the output says ``busy`` (its device has not taken the last output) the
    worker only calls idle(); the events wait in the queue, provisional ones coalesce."""

    class Busy(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.busy = False
            self.handled_while_busy = 0

        def handle(self, event) -> None:
            self.handled_while_busy += self.busy
            super().handle(event)
            self.busy = event.text == "stall"  # its device takes nothing more for now

    out, status = Busy(), StatusBoard()
    w = OutputWorker(out, status)
    w.start()
    try:
        w.publish(line(0, "stall"))
        assert wait(lambda: out.busy)
        idles = out.idles
        for i in range(50):
            w.publish(line(1, "word " * i, final=False))
        w.publish(line(2, "kept", final=True))
        assert wait(lambda: out.idles > idles + 5)  # idle() is called meanwhile
        assert [e.seq for e in out.got] == [0] and len(w.queue) == 2
        out.busy = False
        assert wait(lambda: len(out.got) == 3)
        assert [(e.seq, e.final) for e in out.got[1:]] == [(2, True), (1, False)]
        assert out.got[2].text == "word " * 49 and out.handled_while_busy == 0
    finally:
        w.request_stop()
        assert w.join(3)
