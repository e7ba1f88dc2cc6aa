import threading
import time
from pathlib import Path

import pytest

from edgecap.runtime.worker import Worker, os_thread_name


class Looper(Worker):
    def __init__(self):
        super().__init__("looper")
        self.rounds = 0

    def run(self):
        while not self.wait(0.01):
            self.rounds += 1
            self.beat()


class Crasher(Worker):
    def run(self):
        raise RuntimeError("boom")


def test_stop_is_prompt_and_the_owner_hears_the_exit():
    exits = []
    w = Looper()
    before = w.heartbeat
    w.start(on_exit=exits.append)
    time.sleep(0.1)
    w.request_stop()
    assert w.join(1.0)
    assert exits == [w]
    assert w.error is None and w.rounds > 0 and w.heartbeat > before
    assert not w.alive


def test_a_crash_is_kept_and_reported_not_swallowed(caplog):
    exits = []
    w = Crasher("crasher")
    w.start(on_exit=exits.append)
    assert w.join(1.0)
    assert isinstance(w.error, RuntimeError) and exits == [w]
    assert "worker crasher failed: boom" in caplog.text


def test_join_reports_a_thread_that_does_not_stop():
    release = threading.Event()

    class Stuck(Worker):
        def run(self):
            release.wait(5)

    w = Stuck("stuck")
    w.start()
    w.request_stop()
    assert not w.join(0.05)
    release.set()
    assert w.join(1.0)


def test_threads_are_not_daemon_threads():
    w = Looper()
    assert w._thread.daemon is False


@pytest.mark.skipif(not Path("/proc/thread-self/comm").exists(), reason="needs Linux /proc")
def test_a_started_worker_thread_carries_its_name_to_the_os():
    seen: dict[str, str] = {}

    class Namer(Worker):
        def run(self):
            seen["comm"] = Path("/proc/thread-self/comm").read_text().strip()

    cases = {
        "link": "ec-link",
        "output-socket": "ec-out-socket",
        "link-reader-12": "ec-link-rd-12",
        "output-transcript": "ec-out-transcri",  # 15 bytes at most
    }
    for name, expected in cases.items():
        w = Namer(name)
        w.start()
        assert w.join(1.0)
        assert w.error is None
        assert seen.pop("comm") == expected == os_thread_name(name)
    # named from inside the thread: the owner's thread keeps its own name
    assert Path("/proc/thread-self/comm").read_text().strip() not in cases.values()


def test_a_worker_waiting_for_input_is_not_stale_however_long_it_sleeps():
    """The watchdog's view: a worker inside ``waiting()`` is idle by design; outside it,
    no beat for ``after`` seconds is a hang."""
    import threading
    import time

    from edgecap.runtime.worker import Worker

    entered, release = threading.Event(), threading.Event()

    class Sleeper(Worker):
        def run(self) -> None:
            with self.waiting():
                entered.set()
                release.wait(5)
            release.clear()
            time.sleep(0.05)  # busy, without beating

    w = Sleeper("sleeper")
    w.heartbeat = 0.0  # as if the last beat was long ago
    w.start()
    assert entered.wait(2)
    assert w.idle and not w.stale(time.monotonic() + 3600, 1.0)
    release.set()
    w.join(2)
    assert not w.idle
    assert w.heartbeat > 0.0  # leaving the wait counts as progress
    assert w.stale(w.heartbeat + 2.0, 1.0)  # and then it must beat again
