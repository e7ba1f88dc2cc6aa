"""sd_notify for real: a datagram socket bound by the test plays systemd's part and reads
exactly what the daemon sends (READY, STATUS, WATCHDOG, RELOADING, STOPPING)."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgecap.audio.source import NOT_READY
from edgecap.daemon.notify import Notifier
from edgecap.daemon.supervisor import Daemon
from edgecap.runtime.frames import Frame
from tests.daemon.test_daemon import edgecap
from tests.daemon.test_supervisor import config


class NotifySocket:
    """What systemd listens on: messages with the time they arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket")
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def fields(self) -> list[str]:
        return [f for _, m in self.messages for f in m.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    ns = NotifySocket(tmp_path / "notify")
    yield ns
    ns.close()


def wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_notifier_sends_each_message_exactly(notify):
    n = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "3000000"})
    assert n.enabled and n.watchdog_interval == 1.5
    n.ready("Listening…")
    n.status("Listening…")  # unchanged: not sent again
    n.status("Hearing speech")
    n.watchdog()
    n.reloading()
    n.stopping()
    assert wait(lambda: len(notify.messages) == 5)
    msgs = [m for _, m in notify.messages]
    assert msgs[0] == "READY=1\nSTATUS=Listening…"
    assert msgs[1] == "STATUS=Hearing speech"
    assert msgs[2] == "WATCHDOG=1"
    assert msgs[3].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert msgs[4] == "STOPPING=1\nSTATUS=Stopping…"


def test_systemd_python_path(notify, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    n = Notifier()
    n.ready("via libsystemd")
    assert wait(lambda: notify.messages)
    assert notify.messages[0][1] == "READY=1\nSTATUS=via libsystemd"


def test_no_systemd_no_messages_and_a_vanished_socket_is_survived(tmp_path, caplog):
    assert not Notifier({}).enabled
    assert Notifier({}).send("READY=1") is False
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.WARNING):
        n.ready("x")
        n.watchdog()
    assert sum("cannot notify systemd" in r.message for r in caplog.records) == 1


def test_watchdog_for_another_pid_is_not_ours(notify):
    n = Notifier(
        {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    )
    assert n.watchdog_interval is None


class HangingSource:
    """A capture driver that hangs inside read() once told to — the one thing that cannot be
    made real here; the notify socket it is tested against is."""

    name = "hanging"

    def __init__(self) -> None:
        self.opened_at: float | None = None
        self.hang = threading.Event()
        self.release = threading.Event()
        self.i = 0

    def open(self) -> None:
        time.sleep(0.3)  # a slow device: READY must wait for it
        self.opened_at = time.monotonic()

    def read(self, timeout: float):
        if self.hang.is_set():
            self.release.wait(30)
            return NOT_READY
        time.sleep(0.02)
        self.i += 1
        return Frame(bytes(640), self.i * 320, time.monotonic())

    def close(self) -> None:
        self.release.set()


@pytest.mark.slow
def test_ready_after_capture_opens_and_watchdog_stops_when_capture_hangs(tmp_path, notify):
    source = HangingSource()
    n = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"})
    daemon = Daemon(config(tmp_path), source=source, notifier=n)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        assert wait(lambda: sum(f == "WATCHDOG=1" for f in notify.fields()) >= 3, 6)
        ready_at = next(t for t, m in notify.messages if m.startswith("READY=1"))
        assert source.opened_at is not None and ready_at >= source.opened_at
        assert "STATUS=Listening…" in notify.messages[0][1]
        source.hang.set()
        time.sleep(2.6)  # a worker counts as stuck after max(interval, 2 s) without progress
        before = sum(f == "WATCHDOG=1" for f in notify.fields())
        time.sleep(2.5)
        after = sum(f == "WATCHDOG=1" for f in notify.fields())
        assert after == before, "the watchdog was fed while capture hung"
        assert daemon.watchdog_withheld >= 1
    finally:
        daemon.request_stop("test")
        source.release.set()
        runner.join(10)
    assert "STOPPING=1" in notify.fields()


def test_the_daemon_process_reloads_and_stops_with_notifications(notify):
    proc = edgecap(
        "run",
        "--source",
        "raw",
        "--set",
        "stdout.enabled=no",
        env={"NOTIFY_SOCKET": str(notify.path)},
        stdin=subprocess.PIPE,
    )
    try:
        assert wait(lambda: any(m.startswith("READY=1") for _, m in notify.messages), 10)
        proc.send_signal(signal.SIGHUP)
        assert wait(lambda: sum(m.startswith("READY=1") for _, m in notify.messages) == 2, 5)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    kinds = [m.split("\n")[0].split("=")[0] for _, m in notify.messages]
    r = kinds.index("RELOADING")
    assert kinds[0] == "READY" and kinds[r + 1] == "READY" and kinds[-1] == "STOPPING"
