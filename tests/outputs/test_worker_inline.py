"""Inline delivery (issue 14): an output whose handle() never blocks gets an event on the
publisher's thread while its own thread sleeps — no wake-up — and the worker's thread is
woken only for what it must do itself: poll for a client's backlog, an earlier deadline,
an output that failed. Real sockets and real clients, as in the daemon."""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from pathlib import Path

import pytest

from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.socket_server import SocketOutput
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard, StatusSnapshot
from tests.outputs.test_socket_server import Client, cap, config, has
from tests.outputs.test_web import Viewer, serve  # noqa: F401 (serve: a fixture)


def settle(worker: OutputWorker, timeout: float = 3.0) -> None:
    """Until the worker's output is open and its thread asleep waiting for events."""
    deadline = time.monotonic() + timeout
    while not (worker._asleep and not len(worker.queue)):
        assert time.monotonic() < deadline, "the worker did not settle"
        time.sleep(0.005)


def stop(worker: OutputWorker) -> None:
    worker.request_stop()
    assert worker.join(3), f"{worker.name} did not stop"


# --- the socket output ------------------------------------------------------------------
def test_updates_reach_a_reading_client_in_order_with_no_thread_woken(tmp_path: Path) -> None:
    """Each update is read by the client before the next (so no backlog ever needs the
    thread): all arrive, in order, and the output's thread never wakes."""
    out = SocketOutput(config(tmp_path / "s.sock"), service="x", languages=[])
    worker = OutputWorker(out, StatusBoard())
    assert worker.inline  # the socket output asks for it
    worker.start()
    try:
        settle(worker)
        client = Client(out.path)
        while out.clients < 1:
            time.sleep(0.005)
        settle(worker)  # back asleep after greeting it
        before = worker.wakeups
        sent = []
        for i in range(200):
            seq, words = divmod(i, 10)
            line = cap(seq + 1, " ".join(["word"] * (words + 1)), final=words == 9)
            sent.append((line.seq, line.text))
            worker.publish(line)
            assert client.pump(has(i + 1, "caption"))
        assert [(m["seq"], m["text"]) for m in client.of("caption")] == sent
        assert worker.wakeups == before  # not one wake-up of the output's thread
        assert worker.inlined == worker.handled == 200
        client.close()
    finally:
        stop(worker)


def test_without_inline_every_update_wakes_the_thread(tmp_path: Path) -> None:
    """The comparison the inline path is measured against: the same updates, queued."""
    out = SocketOutput(config(tmp_path / "s.sock"), service="x", languages=[])
    worker = OutputWorker(out, StatusBoard())
    worker.inline = False
    worker.start()
    try:
        settle(worker)
        client = Client(out.path)
        while out.clients < 1:
            time.sleep(0.005)
        settle(worker)
        before = worker.wakeups
        for i in range(1, 21):
            worker.publish(cap(i, f"line {i}"))
            assert client.pump(has(i, "caption"))
            settle(worker)  # asleep again before the next comes
        assert [m["seq"] for m in client.of("caption")] == list(range(1, 21))
        assert worker.wakeups - before == 20 and worker.inlined == 0
        client.close()
    finally:
        stop(worker)


def test_a_backlog_left_inline_wakes_the_thread_which_flushes_it_when_the_client_reads(
    tmp_path: Path,
) -> None:
    """The inline send leaves bytes the kernel would not take: the sleeping poll does not
    watch POLLOUT for that client, so the thread is woken to poll again, and it is what
    sends the rest once the client reads — with no further caption to push it."""
    out = SocketOutput(
        config(tmp_path / "s.sock", client_buffer=8 * 1024 * 1024), service="x", languages=[]
    )
    worker = OutputWorker(out, StatusBoard(), max_finals=5000)
    worker.start()
    try:
        settle(worker)
        lazy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lazy.connect(str(out.path))  # reads nothing until told
        while out.clients < 1:
            time.sleep(0.005)
        settle(worker)
        before = worker.wakeups
        n = 0
        while not any(c.out for c in out._clients.values()):
            n += 1
            worker.publish(cap(n, f"line {n} " + "x" * 4000))
            assert n < 2000, "the kernel took everything"
        # woken to watch POLLOUT, and asleep again, in a poll that watches the client for room
        deadline = time.monotonic() + 2
        while worker.wakeups == before:
            assert time.monotonic() < deadline, "the thread was not woken for the backlog"
            time.sleep(0.005)
        settle(worker)
        client = next(iter(out._clients.values()))
        assert client.mask & select.POLLOUT
        assert worker.inlined == n  # the caption itself was still delivered inline
        lazy.settimeout(3)
        data = b""
        while data.count(b"\n") < n + 1:  # hello + n captions: the thread sent the rest
            chunk = lazy.recv(65536)
            assert chunk, "the server hung up"
            data += chunk
        lines = data.split(b"\n")
        assert b'"hello"' in lines[0]
        assert [int(x.split(b'"seq":')[1].split(b",")[0]) for x in lines[1 : n + 1]] == list(
            range(1, n + 1)
        )
        deadline = time.monotonic() + 2
        while any(c.out for c in out._clients.values()):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        lazy.close()
    finally:
        stop(worker)


def test_stop_while_another_thread_publishes_is_quick_and_never_blocks_it(
    tmp_path: Path,
) -> None:
    out = SocketOutput(config(tmp_path / "s.sock"), service="x", languages=[])
    worker = OutputWorker(out, StatusBoard(), max_finals=100_000)
    worker.start()
    settle(worker)
    client = Client(out.path)
    client.sock.settimeout(0.02)
    while out.clients < 1:
        time.sleep(0.005)
    published = [0]
    slowest = [0.0]
    errors: list[BaseException] = []
    halt = threading.Event()

    def publisher() -> None:
        try:
            i = 0
            while not halt.is_set():
                i += 1
                t0 = time.monotonic()
                worker.publish(cap(i, f"line {i}"))
                slowest[0] = max(slowest[0], time.monotonic() - t0)
                published[0] = i
                if i % 5 == 0:
                    time.sleep(0.001)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        reading = threading.Thread(target=lambda: client.pump(lambda m: False, timeout=1.5))
        reading.start()
        time.sleep(0.2)
        assert worker.inlined > 0
        t0 = time.monotonic()
        worker.request_stop()
        assert worker.join(2), "the worker did not stop"
        took = time.monotonic() - t0
        time.sleep(0.05)  # still publishing after the stop: queued, never blocked
        halt.set()
        thread.join(2)
        reading.join(3)
        assert not errors
        assert took < 1.0  # bounded by drain_timeout (1 s), in practice far less
        assert slowest[0] < 0.1
        seqs = [m["seq"] for m in client.of("caption")]
        assert seqs == list(range(1, len(seqs) + 1))  # in order, none lost on the way
        assert any(m["type"] == "bye" for m in client.msgs) or client.eof
    finally:
        halt.set()
        thread.join(2)
        client.close()
        if worker.alive:
            stop(worker)


# --- the order of events ------------------------------------------------------------------
class Gate:
    """An inline output with a device of its own (``wait_io``: an eventfd, readable when
    the device has room again): the test can make it busy, or hold its thread just after
    it woke, before its turn."""

    name = "gate"
    inline = True

    def __init__(self) -> None:
        self.got: list = []
        self.threads: list[str] = []
        self.hold = threading.Event()
        self.hold.set()
        self.woke = threading.Event()
        self.busy = False
        self.boom: Exception | None = None
        self.opens = 0
        self.fd = os.eventfd(0)

    def open(self) -> None:
        self.opens += 1

    def handle(self, event) -> None:  # type: ignore[no-untyped-def]
        if self.boom is not None and event.text == "boom":
            raise self.boom
        if event.text == "fill":
            self.busy = True  # its device took only part of it
        self.got.append(event.text)
        self.threads.append(threading.current_thread().name)

    def idle(self, now: float) -> None:
        pass

    def wake_in(self, now: float) -> float | None:
        return None

    def wait_io(self, timeout: float | None, wake_fd: int) -> None:
        poller = select.poll()
        poller.register(wake_fd, select.POLLIN)
        poller.register(self.fd, select.POLLIN)
        for fd, _ in poller.poll(None if timeout is None else int(timeout * 1000) + 1):
            if fd == self.fd:
                os.eventfd_read(self.fd)
        self.woke.set()
        self.hold.wait(5)  # woken, not yet back in its turn

    def close(self) -> None:
        pass


def test_a_queued_event_is_never_overtaken_by_an_inline_one() -> None:
    """The thread was woken for a queued event and has not taken it yet: the next event
    joins the queue behind it instead of being handled before it."""
    gate = Gate()
    worker = OutputWorker(gate, StatusBoard())
    worker.start()
    try:
        settle(worker)
        worker.publish(cap(1, "one"))
        assert gate.got == ["one"] and worker.inlined == 1
        gate.hold.clear()
        gate.woke.clear()
        worker.inline = False
        worker.publish(cap(2, "two"))  # queued: it wakes the thread, which is held
        assert gate.woke.wait(2)
        worker.inline = True
        worker.publish(cap(3, "three"))  # asleep, lock free, but "two" waits: queued
        worker.publish(cap(4, "four"))
        assert gate.got == ["one"] and len(worker.queue) == 3 and worker.inlined == 1
        gate.hold.set()
        deadline = time.monotonic() + 2
        while len(gate.got) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert gate.got == ["one", "two", "three", "four"]
        assert gate.threads[1:] == [worker._thread.name] * 3
        settle(worker)
        worker.publish(cap(5, "five"))  # queue empty, thread asleep: inline again
        assert gate.got[-1] == "five" and worker.inlined == 2
    finally:
        gate.hold.set()
        stop(worker)
        os.close(gate.fd)


def test_a_busy_output_or_a_thread_mid_turn_gets_events_through_the_queue_in_order() -> None:
    gate = Gate()
    worker = OutputWorker(gate, StatusBoard())
    worker.start()
    try:
        settle(worker)
        gate.busy = True  # its device has not taken the last output yet
        for i in range(1, 4):
            worker.publish(cap(i, f"q{i}"))
        assert gate.got == [] and worker.inlined == 0
        gate.busy = False
        os.eventfd_write(gate.fd, 1)  # the device has room: the thread takes them in order
        deadline = time.monotonic() + 2
        while len(gate.got) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert gate.got == ["q1", "q2", "q3"]
        settle(worker)
        # mid-turn: the thread holds its lock; a publish from here cannot take it
        with worker._turn:
            worker.publish(cap(4, "q4"))
        deadline = time.monotonic() + 2
        while len(gate.got) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert gate.got == ["q1", "q2", "q3", "q4"] and worker.inlined == 0
        assert set(gate.threads) == {worker._thread.name}
    finally:
        stop(worker)
        os.close(gate.fd)


def test_an_inline_event_that_leaves_the_output_busy_hands_the_next_ones_to_its_thread() -> None:
    gate = Gate()
    worker = OutputWorker(gate, StatusBoard())
    worker.start()
    try:
        settle(worker)
        gate.hold.clear()
        gate.woke.clear()
        worker.publish(cap(1, "fill"))  # inline; the output is busy afterwards
        assert gate.got == ["fill"] and worker.inlined == 1
        assert gate.woke.wait(2)  # its thread was woken (and is held before its turn)
        for i in range(2, 5):
            worker.publish(cap(i, f"q{i}"))  # queued, behind nothing, while it is busy
        gate.hold.set()
        time.sleep(0.05)
        assert gate.got == ["fill"] and len(worker.queue) == 3  # none given while busy
        deadline = time.monotonic() + 2
        gate.busy = False
        os.eventfd_write(gate.fd, 1)  # the device has room
        while len(gate.got) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert gate.got == ["fill", "q2", "q3", "q4"] and worker.inlined == 1
    finally:
        stop(worker)
        os.close(gate.fd)


# --- failures -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("boom", "shown", "traceback"),
    [
        (RuntimeError("a bug"), "RuntimeError: a bug", True),
        (OutputUnavailable("unplugged"), "unplugged", False),
    ],
)
def test_an_exception_in_inline_handle_never_reaches_the_publisher(
    boom: Exception, shown: str, traceback: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's thread deals with it as with its own: a bug logged once with its
    traceback; either way the output closed, shown unavailable, reopened, served again."""
    gate = Gate()
    gate.boom = boom
    board = StatusBoard()
    states: list[tuple[str, str]] = []

    def record(snap: StatusSnapshot) -> None:
        part = snap.parts["output:gate"]
        states.append((part.state, part.detail))

    board.subscribe(record)
    worker = OutputWorker(gate, board, retry_first=0.05)
    worker.start()
    try:
        settle(worker)
        with caplog.at_level(logging.WARNING, logger="edgecap.outputs.worker"):
            worker.publish(cap(1, "boom"))  # raises nothing here
            deadline = time.monotonic() + 2
            while gate.opens < 2 or not worker._asleep:  # reopened after the backoff
                assert time.monotonic() < deadline
                time.sleep(0.005)
        assert states == [("ok", ""), ("unavailable", shown), ("ok", "")]
        assert worker.failures == 1
        failed = [r for r in caplog.records if "failed" in r.getMessage()]
        if traceback:
            assert len(failed) == 1 and failed[0].exc_info is not None
            assert failed[0].exc_info[1] is boom
            assert failed[0].threadName == worker._thread.name  # not the publisher's
        else:
            assert failed == []
        worker.publish(cap(2, "after"))
        assert gate.got == ["after"] and worker.failures == 1
    finally:
        stop(worker)
        os.close(gate.fd)


# --- deadlines ------------------------------------------------------------------------------
class Timed(Gate):
    """No device to wait on (no wait_io): idle() runs inline too. An event asks for an
    idle() 50 ms later — a deadline the sleeping thread does not know yet."""

    wait_io = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.due: float | None = None
        self.idles: list[tuple[float, str]] = []

    def handle(self, event) -> None:  # type: ignore[no-untyped-def]
        super().handle(event)
        self.due = time.monotonic() + 0.05

    def idle(self, now: float) -> None:
        self.idles.append((now, threading.current_thread().name))
        if self.due is not None and now >= self.due:
            self.due = None

    def wake_in(self, now: float) -> float | None:
        return None if self.due is None else max(0.0, self.due - now)


def test_a_nearer_deadline_after_an_inline_event_wakes_the_thread_for_it() -> None:
    timed = Timed()
    worker = OutputWorker(timed, StatusBoard())
    worker.start()
    try:
        settle(worker)
        before = worker.wakeups
        t0 = time.monotonic()
        worker.publish(cap(1, "soon"))
        main = threading.current_thread().name
        assert timed.got == ["soon"] and timed.idles[-1][1] == main  # idle() inline too
        deadline = t0 + 2
        while timed.due is not None:
            assert time.monotonic() < deadline, "the deadline was missed"
            time.sleep(0.005)
        when, thread = timed.idles[-1]
        assert thread == worker._thread.name and 0.045 <= when - t0 < 0.5
        settle(worker)
        assert worker.wakeups - before in (1, 2)  # woken for the new deadline, then asleep
    finally:
        stop(worker)
        os.close(timed.fd)


# --- the web output ---------------------------------------------------------------------------
def test_the_web_page_stream_gets_inline_updates_with_no_thread_woken(serve) -> None:  # noqa: F811
    s = serve()
    assert s.worker.inline
    settle(s.worker)
    v = Viewer(s.port)
    try:
        assert v.pump(lambda v: any(e == "live" for e, _ in v.events))
        s.settle(lambda: s.out.viewers == 1)
        settle(s.worker)
        before = s.worker.wakeups
        inlined = s.worker.inlined
        for i in range(1, 51):
            s.publish(cap(i, f"line {i}"))
        assert v.pump(lambda v: len(v.of("caption")) >= 50)
        assert [c["seq"] for c in v.of("caption")] == list(range(1, 51))
        assert s.worker.inlined - inlined == 50
        assert s.worker.wakeups == before
    finally:
        v.close()
