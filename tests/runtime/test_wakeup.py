"""Wakeup: the flag the link and the supervisor sleep on, with a socket beside it."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from edgecap.runtime.wakeup import Wakeup


def test_a_set_before_the_wait_is_kept_and_taken_by_clear() -> None:
    w = Wakeup()
    w.set()  # not open yet: the flag is kept for the first wait
    try:
        for _ in range(3):
            w.set()
        t = time.monotonic()
        assert w.wait(5.0) is True  # at once
        assert time.monotonic() - t < 0.5
        w.clear()
        t = time.monotonic()
        assert w.wait(0.2) is False  # the three sets were one, and clear took it
        assert time.monotonic() - t >= 0.19
        threading.Timer(0.1, w.set).start()
        t = time.monotonic()
        assert w.wait(None) is True  # no limit: only the set ends it
        assert 0.09 <= time.monotonic() - t < 2.0
    finally:
        w.close()
    w.set()  # closed: a late set (a signal, a worker's exit) is harmless
    t = time.monotonic()
    w.wait(None)  # and a wait after the end does not hang
    assert time.monotonic() - t < 0.5


def test_a_readable_socket_ends_the_wait_without_the_flag() -> None:
    w = Wakeup()
    a, b = socket.socketpair()
    try:
        threading.Timer(0.1, lambda: b.send(b"x")).start()
        t = time.monotonic()
        assert w.wait(5.0, a.fileno()) is False
        assert 0.09 <= time.monotonic() - t < 2.0
    finally:
        w.close()
        a.close()
        b.close()


def test_a_set_that_races_with_clear_is_never_lost() -> None:
    """The sleeper's loop (clear, look, wait) against a setter that sets after each piece
    of work: every piece of work is seen, and no wait sleeps past a set."""
    w = Wakeup()
    done = 0
    made = 0
    lock = threading.Lock()

    def producer() -> None:
        nonlocal made
        for _ in range(2000):
            with lock:
                made += 1
            w.set()

    t = threading.Thread(target=producer)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while done < 2000:
            w.clear()
            with lock:
                done = made
            if done < 2000:
                assert w.wait(5.0) or made > done, "a wait slept past a set"
            assert time.monotonic() < deadline
    finally:
        t.join(5)
        w.close()
    assert done == 2000


def test_a_signal_handler_may_set_it_on_the_thread_that_is_setting_it() -> None:
    """The supervisor's handlers run on the main thread, which may be inside set()."""
    w = Wakeup()
    w.open()
    fired = []

    def handler(signum: int, frame: object) -> None:
        w.clear()
        w.set()  # re-entered: must not deadlock on the flag's lock
        fired.append(signum)

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        with w._lock:  # as if interrupted inside set()
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.01)  # the handler runs here, holding the lock already
        assert fired == [signal.SIGUSR1]
        assert w.wait(1.0) is True
    finally:
        signal.signal(signal.SIGUSR1, old)
        w.close()
