"""Serial displays and caption encoders: the exact bytes on a real pty and a real TCP port;
unplug and replug through a real OutputWorker."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import tty
from dataclasses import replace
from pathlib import Path

import pytest

from edgecap.captions.events import CaptionLine
from edgecap.config.schema import SerialConfig
from edgecap.daemon.status import StatusBoard
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.serial_out import SerialOutput, to_cea608
from edgecap.outputs.worker import OutputWorker


def line(seq, text, final=True, translation="", tfinal=None):
    return CaptionLine(
        seq,
        text,
        translation,
        None,
        None,
        None,
        None,
        None,
        final,
        final if tfinal is None else tfinal,
    )


class Pty:
    def __init__(self, link: Path) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(self.slave))

    def read(self, wait: float = 0.1) -> bytes:
        time.sleep(wait)
        os.set_blocking(self.master, False)
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.master, 65536):
                data += chunk
        return data

    def unplug(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def dev(tmp_path):
    link = tmp_path / "ttyUSB0"
    p = Pty(link)
    yield link, p
    p.unplug()


def cfg(device, **kw) -> SerialConfig:
    return replace(SerialConfig(), enabled=True, device=device, **kw)


def test_lines_profile_finals_crlf_and_provisional_rewritten_with_cr(dev):
    link, p = dev
    out = SerialOutput(cfg(link, provisional=True))
    out.open()
    out.handle(line(1, "hello wor", final=False))
    out.handle(line(1, "hello", final=False))
    out.handle(line(1, "hello world"))
    out.handle(line(1, "hello world"))  # the same final again: sent once
    out.close()
    assert p.read() == b"\rhello wor\rhello    \rhello world\r\n"


def test_lines_profile_sends_translations_when_final(dev):
    link, p = dev
    out = SerialOutput(cfg(link, show="translation"))
    out.open()
    out.handle(line(1, "hola", translation="hel", tfinal=False))
    out.handle(line(1, "hola", translation="hello", tfinal=True))
    out.close()
    assert p.read() == b"hello\r\n"


def test_serlcd_rows_rewritten_only_when_changed(dev):
    link, p = dev
    out = SerialOutput(cfg(link, profile="serlcd", rows=2, cols=16))
    out.open()
    assert p.read() == b"\x7c\x2d"
    out.handle(line(1, "first caption"))
    assert p.read() == b"\xfe\x80" + b" " * 16 + b"\xfe\xc0" + b"first caption   "
    out.handle(line(2, "next one", final=False))
    assert p.read() == b"\xfe\x80first caption   \xfe\xc0next one        "
    out.handle(line(2, "next one!", final=True))
    assert p.read() == b"\xfe\xc0next one!       "  # the top row did not change
    out.close()
    assert p.read() == b"\x7c\x2d"


def test_matrix_orbital_positions_are_one_based(dev):
    link, p = dev
    out = SerialOutput(cfg(link, profile="matrix-orbital", rows=2, cols=8))
    out.open()
    out.handle(line(1, "a b c d e f g h"))
    out.close()
    assert p.read() == (
        b"\xfe\x58" + b"\xfe\x47\x01\x01a b c d \xfe\x47\x01\x02e f g h " + b"\xfe\x58"
    )


def test_cea608_mapping():
    data, dropped = to_cea608("Señor García's café * 50% {x} ~ “ok” — naïve नमस्ते")
    assert data == b'Se\x7eor Garc\x5ea\'s caf\x5c  50% (x) - "ok" - naive '
    assert dropped == 6  # the Devanagari characters, not the spaces
    assert to_cea608("ñ", uppercase=True)[0] == b"\x7d"


def test_encoder_setup_pacing_finals_only_and_release(dev):
    link, p = dev
    out = SerialOutput(cfg(link, profile="encoder", chars_per_second=200, idle_release=1.0))
    out.open()
    assert p.read() == b"\x03"
    out.handle(line(1, "provisional text", final=False))
    text = "x" * 99
    t0 = time.monotonic()
    out.handle(line(1, text))
    got = b""
    expected = b"\x03\x012 cc1 3 b15 word\r" + text.encode() + b"\r"
    while len(got) < len(expected) and time.monotonic() - t0 < 5:
        out.idle(time.monotonic())
        got += p.read(0.01)
    took = time.monotonic() - t0
    assert got == expected
    assert took >= 0.4  # 100 characters at 200 a second
    time.sleep(1.1)
    out.idle(time.monotonic())
    assert p.read() == b"\x03"  # released: upstream captions pass again
    out.close()


def test_tcp_transport_and_encoder_closing_the_connection(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    out = SerialOutput(replace(SerialConfig(), transport="tcp", host="127.0.0.1", port=port))
    out.open()
    conn, _ = server.accept()
    out.handle(line(1, "over telnet"))
    conn.settimeout(2)
    assert conn.recv(100) == b"over telnet\r\n"
    conn.close()
    server.close()
    with pytest.raises(OutputUnavailable):
        for i in range(2, 50):
            out.handle(line(i, "into the void"))
            time.sleep(0.01)
    with pytest.raises(OutputUnavailable, match="cannot reach"):
        SerialOutput(replace(SerialConfig(), transport="tcp", host="127.0.0.1", port=port)).open()


def test_unplug_and_replug_through_the_worker(tmp_path):
    link = tmp_path / "ttyUSB0"
    first = Pty(link)
    status = StatusBoard()
    worker = OutputWorker(SerialOutput(cfg(link)), status, retry_first=0.05, retry_max=0.2)
    worker.start()
    try:
        worker.publish(line(1, "before"))
        assert first.read(0.3) == b"before\r\n"
        first.unplug()
        link.unlink()
        worker.publish(line(2, "while unplugged"))
        deadline = time.monotonic() + 5
        while status.snapshot().state_of("output:serial") != "unavailable":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = Pty(link)  # plugged in again
        worker.publish(line(3, "after"))
        got = b""
        deadline = time.monotonic() + 5
        while b"after" not in got and time.monotonic() < deadline:
            got += second.read(0.05)
        assert got.endswith(b"after\r\n")
        second.unplug()
    finally:
        worker.request_stop()
        assert worker.join(3)
        threading.enumerate()
