"""The supervisor sleeps until there is something to do (issue 14: on the machines we measure
on, every wake-up of a thread costs more CPU than the work it does).

Real parts throughout: a real `edgecap run` process whose main thread's context switches
are read from /proc, real signals, a real sd_notify datagram socket, a real raw-PCM pipe as
the audio source, a real /metrics scrape and a real caption-socket client."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgecap.audio.raw import RawSource
from edgecap.daemon.notify import Notifier
from edgecap.daemon.supervisor import Daemon
from tests.daemon.test_daemon import edgecap
from tests.daemon.test_notify import NotifySocket, wait
from tests.daemon.test_supervisor import config
from tests.outputs.test_web import metrics

FRAME = bytes(640)  # 20 ms of 16 kHz s16le


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify")
    yield ns
    ns.close()


def voluntary_switches(pid: int, tid: int) -> int:
    """How often a thread has gone to sleep (each sleep ends in one wake-up)."""
    status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    match = re.search(r"^voluntary_ctxt_switches:\s+(\d+)$", status, re.M)
    assert match, status
    return int(match.group(1))


def arrival(
    ns: NotifySocket, field: str, after: float, timeout: float = 3.0, *, whole: bool = False
) -> float:
    """When a datagram holding ``field`` (the start of a line; ``whole``: all of it) arrived
    after ``after``."""

    def found() -> list[float]:
        return [
            t
            for t, m in list(ns.messages)
            if t >= after
            and any(f == field or (not whole and f.startswith(field)) for f in m.split("\n"))
        ]

    assert wait(lambda: bool(found()), timeout), (field, ns.messages)
    return found()[0]


@contextmanager
def running(daemon: Daemon, pipe_w: int) -> Iterator[threading.Thread]:
    """The daemon's run() on a thread of its own (the supervisor's), stopped at the end."""
    runner = threading.Thread(target=daemon.run, name="supervisor")
    runner.start()
    try:
        yield runner
    finally:
        daemon.request_stop("test")
        runner.join(10)
        os.close(pipe_w)
        assert not runner.is_alive()


def raw_pipe() -> tuple[RawSource, int, object]:
    """A raw-PCM source on a real pipe: silent until the test writes to ``w``."""
    r, w = os.pipe()
    stream = os.fdopen(r, "rb", buffering=0)
    return RawSource(stream, 20), w, stream


# --- a real daemon process ----------------------------------------------------------------
@pytest.mark.slow
def test_an_idle_daemon_sleeps_and_still_acts_on_signals_at_once(notify):
    """Its main thread (the supervisor) went to sleep 5 times in 3 s before (every 0.5 s);
    with the watchdog due every 15 s it now sleeps through — and SIGHUP and SIGTERM still
    act at once."""
    proc = edgecap(
        "run",
        "--source",
        "raw",
        "--set",
        "stdout.enabled=no",
        env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "30000000"},
        stdin=subprocess.PIPE,
    )
    try:
        arrival(notify, "READY=1", 0.0, 10.0)
        time.sleep(0.3)  # start-up's last status changes
        before = voluntary_switches(proc.pid, proc.pid)
        time.sleep(3.0)
        woke = voluntary_switches(proc.pid, proc.pid) - before
        assert woke <= 1, f"the supervisor woke {woke} times in 3 s with nothing to do"

        sent = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        assert arrival(notify, "RELOADING=1", sent) - sent < 0.5
        arrival(notify, "READY=1", sent)
        time.sleep(0.5)  # asleep again
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert arrival(notify, "STOPPING=1", sent) - sent < 0.5
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0


# --- in-process, on a real pipe and a real notify socket ----------------------------------
def test_counters_never_wake_the_supervisor_and_a_status_change_reaches_systemd_in_time(
    tmp_path, notify
):
    source, w, stream = raw_pipe()
    n = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "60000000"})
    daemon = Daemon(config(tmp_path), source=source, notifier=n)
    with running(daemon, w):
        arrival(notify, "READY=1", 0.0, 10.0)
        arrival(notify, "WATCHDOG=1", 0.0)  # the first one goes with READY
        time.sleep(0.2)
        woken = daemon.wakeups
        for i in range(300):  # what the parts do with every block
            daemon.status.put("speech_gated_s", i * 0.02)
            daemon.status.put("uplink_lost_s", 0.0)
            daemon.status.add("speaker_skipped_s", 0.02)
        daemon.status.set("output:test", "ok")  # a change systemd's line does not show
        daemon.status.set("output:test", "unavailable", "unplugged")
        time.sleep(0.6)  # more than the old loop's half second
        assert daemon.wakeups == woken, "woken by counters or by a change STATUS= omits"

        changed = time.monotonic()
        daemon.status.set("link", "retrying", "connection refused")
        at = arrival(notify, "STATUS=Listening… · Speech service unreachable", changed)
        assert at - changed < 1.0
        time.sleep(0.2)
        assert 1 <= daemon.wakeups - woken <= 2
    assert daemon.exit_code == 0
    stream.close()


def test_a_notice_leaves_systemds_line_when_it_expires_with_nothing_else_to_wake_us(
    tmp_path, notify, monkeypatch
):
    """The summary shows a service's notice for NOTICE_SHOWN (30 s; 0.4 s here): its end
    is announced by no one, so the supervisor wakes for it by itself."""
    monkeypatch.setattr("edgecap.runtime.status.NOTICE_SHOWN", 0.4)
    monkeypatch.setattr("edgecap.daemon.supervisor.NOTICE_SHOWN", 0.4)
    source, w, stream = raw_pipe()
    n = Notifier({"NOTIFY_SOCKET": str(notify.path)})
    daemon = Daemon(config(tmp_path), source=source, notifier=n)
    with running(daemon, w):
        arrival(notify, "READY=1", 0.0, 10.0)
        time.sleep(0.1)
        shown = time.monotonic()
        daemon.status.set("notice", "translation_failed", "translation to de failed")
        assert arrival(notify, "STATUS=Listening… · translation to de failed", shown) - shown < 1
        gone = arrival(notify, "STATUS=Listening…", shown, whole=True)
        assert 0.35 < gone - shown < 1.0
        assert [m for t, m in notify.messages if t >= shown][-1] == "STATUS=Listening…"
    stream.close()


def test_the_watchdog_goes_every_interval_and_wakes_the_supervisor_alone(tmp_path, notify):
    source, w, stream = raw_pipe()
    n = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "600000"})  # 0.3 s
    daemon = Daemon(config(tmp_path), source=source, notifier=n)
    with running(daemon, w):
        start = arrival(notify, "READY=1", 0.0, 10.0)
        time.sleep(0.2)
        woken, t0 = daemon.wakeups, time.monotonic()
        time.sleep(1.2)
        woke = daemon.wakeups - woken
        t1 = time.monotonic()
    stream.close()
    beats = [t for t, m in notify.messages if m == "WATCHDOG=1" and t >= start]
    in_window = [t for t in beats if t0 <= t < t1]
    assert 3 <= len(in_window) <= 5
    assert woke <= len(in_window) + 1, "the supervisor woke for more than the watchdog"
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert min(gaps) > 0.25 and max(gaps) < 0.45, gaps


def test_without_systemd_the_supervisor_never_wakes_and_metrics_are_current(tmp_path):
    """No NOTIFY_SOCKET: nothing needs the supervisor until a stop or an exit, while speech
    flows and /metrics is scraped. The pipeline's gauges are read at the scrape: a socket
    client just connected and the speech just gated show at once."""
    source, w, stream = raw_pipe()
    cfg = config(tmp_path, "gate.enabled=no", "web.enabled=yes", "web.listen=127.0.0.1:0")
    daemon = Daemon(cfg, source=source, notifier=Notifier({}))
    with running(daemon, w):
        web = daemon.web_output
        assert web is not None and daemon.socket_output is not None
        assert wait(lambda: web.address is not None)
        assert web.address is not None
        os.write(w, FRAME * 50)  # 1 s of audio, every frame passed on (the gate is off)
        assert wait(lambda: daemon.gate.frames_forwarded == 50)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(str(tmp_path / "captions.sock"))
            assert wait(lambda: daemon.socket_output.clients == 1)
            m = metrics(web.address[1])
        finally:
            client.close()
        assert m["edgecap_speech_seconds_total"][(("kind", "detected"),)] == 1.0
        assert m["edgecap_socket_clients"][()] == 1
        assert daemon.wakeups == 0
    stream.close()


def test_the_end_of_input_ends_the_run_at_once(tmp_path):
    """The consumer's exit wakes the supervisor: no timer stands between the last caption
    and the exit."""
    source, w, stream = raw_pipe()
    daemon = Daemon(config(tmp_path, "gate.enabled=no"), source=source, notifier=Notifier({}))
    runner = threading.Thread(target=daemon.run, name="supervisor")
    runner.start()
    try:
        os.write(w, FRAME * 25)
        assert wait(lambda: daemon.gate.frames_forwarded == 25)
        ended = time.monotonic()
        os.close(w)  # end of input
        runner.join(5)
        took = time.monotonic() - ended
    finally:
        daemon.request_stop("test")
        runner.join(10)
        stream.close()
    assert daemon.exit_code == 0
    assert took < 1.0
    assert daemon.wakeups <= 3  # the capture's exit, the consumer's, an output's at most


def test_a_listener_shows_in_systemds_line_at_once(tmp_path, notify):
    """The socket output tells the supervisor when a client comes or goes: STATUS= counts
    listeners within a second, not at the next timed look (15 s away)."""
    source, w, stream = raw_pipe()
    n = Notifier({"NOTIFY_SOCKET": str(notify.path)})
    daemon = Daemon(config(tmp_path), source=source, notifier=n)
    with running(daemon, w):
        arrival(notify, "READY=1", 0.0, 10.0)
        came = time.monotonic()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(str(tmp_path / "captions.sock"))
            assert arrival(notify, "STATUS=Listening… · 1 listener", came, whole=True) - came < 1
        finally:
            client.close()
        gone = time.monotonic()
        assert arrival(notify, "STATUS=Listening…", gone, whole=True) - gone < 1
    stream.close()
