"""The supervisor's own duties, in-process: failures surface as exit codes, a worker that
will not stop is named within the deadline. The sources here are test doubles on purpose:
what is under test is the supervisor, not a device."""

from __future__ import annotations

import threading
import time

from edgecap.audio.source import NOT_READY, SourceConfigError, SourceUnavailable
from edgecap.config.loader import load
from edgecap.daemon.supervisor import EX_SOFTWARE, Daemon
from edgecap.runtime.frames import Frame


class ScriptedSource:
    name = "scripted"

    def __init__(self, reads, opens=()):
        self.reads = list(reads)
        self.opens = list(opens)
        self.open_calls = 0
        self.closed = 0

    def open(self):
        self.open_calls += 1
        if self.opens:
            exc = self.opens.pop(0)
            if exc is not None:
                raise exc

    def read(self, timeout):
        if not self.reads:
            time.sleep(min(timeout, 0.01))
            return NOT_READY
        item = self.reads.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self.closed += 1


def config(tmp_path, *sets):
    sock = f"socket.path={tmp_path / 'captions.sock'}"
    return load(overrides=["stdout.enabled=no", sock, *sets], etc_dir=tmp_path, env={})


def silence(i: int) -> Frame:
    return Frame(bytes(640), i * 320, time.monotonic())


def test_a_crashing_source_ends_the_daemon_with_70(tmp_path):
    src = ScriptedSource([silence(0), RuntimeError("driver bug")])
    daemon = Daemon(config(tmp_path), source=src)
    assert daemon.run() == EX_SOFTWARE
    assert isinstance(daemon.capture.error, RuntimeError)
    assert src.closed == 1


def test_an_unusable_source_ends_the_daemon_with_78(tmp_path):
    src = ScriptedSource([], opens=[SourceConfigError("not a WAV file")])
    daemon = Daemon(config(tmp_path), source=src)
    assert daemon.run() == 78


def test_a_missing_device_is_retried_with_backoff_and_shown(tmp_path):
    missing = SourceUnavailable("no capture device matches 'USB'")
    src = ScriptedSource([], opens=[missing, missing, missing, None])
    daemon = Daemon(config(tmp_path, "audio.retry_max=1s"), source=src)
    states = []
    daemon.status.subscribe(lambda snap: states.append(snap.state_of("audio")))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    deadline = time.monotonic() + 10
    while src.open_calls < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    daemon.request_stop("test")
    runner.join(5)
    assert daemon.exit_code == 0
    assert src.open_calls == 4
    # other parts (the socket output) report too: the audio's first state after "starting"
    assert next(x for x in states if x != "starting") == "device_missing"
    assert "listening" in states
    assert daemon.status.snapshot().counters["audio_open_attempts"] == 4


def test_a_worker_that_will_not_stop_is_named_within_the_deadline(tmp_path):
    release = threading.Event()

    class Stuck(ScriptedSource):
        def read(self, timeout):
            release.wait(30)  # ignores its timeout, as a wedged driver would
            return NOT_READY

    daemon = Daemon(config(tmp_path), source=Stuck([]), stop_timeout=0.5)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    time.sleep(0.2)
    asked = time.monotonic()
    daemon.request_stop("test")
    runner.join(5)
    try:
        assert not runner.is_alive()
        assert time.monotonic() - asked < 2.0
        assert daemon.exit_code == EX_SOFTWARE
        assert "capture" in daemon.hung
    finally:
        release.set()
        daemon.capture.join(5)
        daemon.consumer.join(5)
