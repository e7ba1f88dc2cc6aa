"""The caption socket with real Unix sockets and real clients, driven by a real OutputWorker."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import threading
import time

import pytest

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.daemon.status import StatusBoard
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.caption_socket import SocketOutput
from edgecap.outputs.worker import OutputWorker
from edgecap.tail import run_tail


def line(seq, text, final=True, translation="", tfinal=None, speaker=None):
    return CaptionLine(
        seq,
        text,
        translation,
        speaker,
        "en",
        "es" if translation else None,
        seq * 1.0,
        seq * 1.0 + 0.5,
        final,
        final if tfinal is None else tfinal,
    )


class Client:
    def __init__(self, path, read=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(0.1)
        self.buf = b""
        self.msgs: list[dict] = []

    def pump(self, until, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until(self.msgs):
                return True
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            self.buf += data
            *lines, self.buf = self.buf.split(b"\n")
            self.msgs += [json.loads(x) for x in lines]
        return until(self.msgs)

    def close(self):
        self.sock.close()


@pytest.fixture
def served(tmp_path):
    status = StatusBoard()
    out = SocketOutput(
        tmp_path / "run" / "captions.sock",
        history=3,
        client_buffer=64 * 1024,
        service="soniox",
        languages=["en", "es"],
    )
    worker = OutputWorker(out, status)
    worker.start()
    deadline = time.monotonic() + 5
    while status.snapshot().state_of("output:socket") != "ok" and time.monotonic() < deadline:
        time.sleep(0.01)
    yield out, worker, status
    worker.request_stop()
    assert worker.join(3)


def kinds(msgs):
    return [m["type"] for m in msgs]


def test_hello_history_then_live(served):
    out, worker, status = served
    for i in range(1, 6):
        worker.publish(line(i, f"line {i}"))
    worker.publish(line(6, "speaking", final=False))
    status.set("audio", "listening")
    worker.publish(status.snapshot())
    time.sleep(0.2)
    c = Client(out.path)
    assert c.pump(lambda m: len(m) >= 6)
    hello = c.msgs[0]
    assert hello == {
        "type": "hello",
        "v": 1,
        "server": hello["server"],
        "service": "soniox",
        "languages": ["en", "es"],
    }
    assert [m["seq"] for m in c.msgs[1:4]] == [3, 4, 5]  # the last `history` finals
    assert c.msgs[4]["final"] is False and c.msgs[4]["text"] == "speaking"
    assert c.msgs[5]["type"] == "status" and c.msgs[5]["summary"] == "Listening…"
    worker.publish(line(6, "speaking now", translation="hablando", tfinal=True))
    worker.publish(AudioLoss(2.5, 10.0, 12.5, "service unreachable"))
    assert c.pump(lambda m: len(m) >= 8)
    cap = c.msgs[6]
    assert cap["id"] == "c6" and cap["final"] and cap["text"] == "speaking now"
    assert cap["translations"] == [{"language": "es", "text": "hablando", "final": True}]
    assert c.msgs[7] == {
        "type": "gap",
        "seconds": 2.5,
        "start": 10.0,
        "end": 12.5,
        "reason": "service unreachable",
    }
    c.close()


def test_a_client_that_never_reads_is_cut_and_nobody_else_notices(served):
    out, worker, _ = served
    slow = Client(out.path)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    fast = Client(out.path)
    got: list[dict] = []
    done = threading.Event()

    def read_fast():
        fast.pump(lambda m: sum(x.get("type") == "caption" for x in m) >= 400, timeout=20)
        got.extend(fast.msgs)
        done.set()

    reader = threading.Thread(target=read_fast)
    reader.start()
    for i in range(1, 401):
        worker.publish(line(i, f"caption number {i} " + "x" * 200))
    assert done.wait(20)
    reader.join(5)
    seqs = [m["seq"] for m in got if m["type"] == "caption"]
    assert seqs == list(range(1, 401))
    assert out.clients_dropped_slow == 1
    # the slow client finds the notice at the end of what it was sent, then EOF
    slow.sock.settimeout(2)
    data = b""
    while chunk := slow.sock.recv(65536):
        data += chunk
    tail = [json.loads(x) for x in data.split(b"\n") if x][-1]
    assert tail["type"] == "error" and tail["error"] == "slow_client"
    fast.close()


def test_client_input_is_ignored_and_half_close_is_fine(served):
    out, worker, _ = served
    c = Client(out.path)
    c.sock.sendall(os.urandom(300_000))
    c.sock.shutdown(socket.SHUT_WR)
    worker.publish(line(1, "still served"))
    assert c.pump(lambda m: any(x.get("text") == "still served" for x in m))
    c.close()


def test_many_clients_and_the_limit(tmp_path):
    out = SocketOutput(tmp_path / "s.sock", max_clients=3)
    out.open()
    try:
        clients = [Client(out.path) for _ in range(4)]
        out.idle(0)
        out.handle(line(1, "to all"))
        for c in clients[:3]:
            assert c.pump(lambda m: any(x.get("text") == "to all" for x in m))
        assert clients[3].pump(lambda m: m and m[0].get("error") == "too_many_clients")
        assert out.clients_refused == 1
    finally:
        out.close()


def test_mode_stale_file_live_server_and_bye(tmp_path):
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on: left by a crash
    out = SocketOutput(path, mode=0o640)
    out.open()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        second = SocketOutput(path)
        with pytest.raises(OutputUnavailable, match="another program already serves"):
            second.open()
        c = Client(path)
        out.idle(0)
    finally:
        out.close()
    assert c.pump(lambda m: m and m[-1]["type"] == "bye")
    assert not path.exists()


def test_unknown_group_is_a_clear_error(tmp_path):
    out = SocketOutput(tmp_path / "s.sock", group="no-such-group-edgecap")
    with pytest.raises(OutputUnavailable, match="no such group"):
        out.open()
    assert not (tmp_path / "s.sock").exists()


def test_tail_prints_captions_and_survives_a_daemon_restart(tmp_path):
    path = tmp_path / "s.sock"
    out = SocketOutput(path)
    out.open()
    stdout, stderr = io.StringIO(), io.StringIO()
    stop = threading.Event()
    t = threading.Thread(
        target=run_tail,
        args=(path,),
        kwargs=dict(json_mode=False, out=stdout, err=stderr, stop=stop, retry_interval=0.1),
    )
    t.start()
    try:
        time.sleep(0.3)
        out.idle(0)
        out.handle(line(1, "before the restart", translation="antes", speaker="1"))
        deadline = time.monotonic() + 3
        while "antes" not in stdout.getvalue() and time.monotonic() < deadline:
            out.idle(0)
            time.sleep(0.02)
        out.close()  # the daemon restarts
        time.sleep(0.3)
        out = SocketOutput(path)
        out.open()
        deadline = time.monotonic() + 3
        while "connected" not in stderr.getvalue() and time.monotonic() < deadline:
            out.idle(0)
            time.sleep(0.02)
        out.handle(line(2, "after the restart"))
        deadline = time.monotonic() + 3
        while "after the restart" not in stdout.getvalue() and time.monotonic() < deadline:
            out.idle(0)
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(3)
        out.close()
    text = stdout.getvalue()
    assert "[00:01.00] S1: before the restart\n           → antes\n" in text
    assert "[00:02.00] after the restart\n" in text
    assert "went away" in stderr.getvalue()
