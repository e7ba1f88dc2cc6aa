import threading
import time

from edgecap.runtime.worker import Worker


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
