"""The console output on a real pseudo-terminal, read back through a small screen model."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import termios
import time
import tty

import pytest

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.daemon.status import StatusBoard
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.console import ConsoleOutput

CSI = re.compile(r"\x1b\[([?\d;]*)([A-Za-z])")


class Screen:
    """Interprets what the console output emits: CUP, EL 2, ED 2, SGR, cursor show/hide."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.rows = [""] * height
        self.styles = [""] * height
        self.row = 0
        self.sgr = ""
        self.cursor_visible = True
        self.row_writes: list[int] = []

    def feed(self, text: str) -> None:
        pos = 0
        for m in CSI.finditer(text):
            self._text(text[pos : m.start()])
            pos = m.end()
            args, cmd = m.groups()
            if cmd == "H":
                self.row = int(args.split(";")[0]) - 1
            elif cmd == "K":
                self.rows[self.row] = ""
                self.row_writes.append(self.row + 1)
            elif cmd == "J":
                self.rows = [""] * self.height
            elif cmd == "m":
                self.sgr = "" if args in ("", "0") else args
            elif cmd in ("l", "h") and args == "?25":
                self.cursor_visible = cmd == "h"
        self._text(text[pos:])

    def _text(self, s: str) -> None:
        if s:
            self.rows[self.row] += s
            self.styles[self.row] = self.sgr


def line(seq, text, final=True, translation=""):
    return CaptionLine(seq, text, translation, None, None, None, None, None, final, final)


@pytest.fixture
def pty_console():
    master, slave = os.openpty()
    tty.setraw(master)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 10, 40, 0, 0))
    path = os.ttyname(slave)
    screen = Screen(40, 10)
    out = ConsoleOutput(path, lines=3)

    def read() -> None:
        time.sleep(0.05)
        data = b""
        while True:
            try:
                os.set_blocking(master, False)
                chunk = os.read(master, 65536)
            except BlockingIOError:
                break
            data += chunk
        screen.feed(data.decode("utf-8"))

    yield out, screen, read, master, slave
    out.close()
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def settle(out):
    time.sleep(0.12)
    out.idle(time.monotonic())


def test_rollup_at_the_bottom_and_only_changed_rows_rewritten(pty_console):
    out, screen, read, *_ = pty_console
    out.open()
    out.handle(line(1, "first line"))
    settle(out)
    out.handle(line(2, "second line", translation="segunda línea"))
    settle(out)
    out.handle(line(3, "speak", final=False))
    settle(out)
    read()
    assert not screen.cursor_visible
    assert screen.rows[7:10] == ["second line", "segunda línea", "speak"]
    assert screen.styles[9] == "2" and screen.styles[7] == "1" and screen.styles[8] == "33"
    screen.row_writes.clear()
    out.handle(line(3, "speaking now", final=False))
    settle(out)
    read()
    assert screen.rows[9] == "speaking now"
    assert screen.row_writes == [10], "rows that did not change were rewritten"


def test_status_line_when_in_trouble_and_loss_notice(pty_console):
    out, screen, read, *_ = pty_console
    out.open()
    board = StatusBoard()
    board.set("audio", "device_missing", "no capture device matches 'USB'")
    out.handle(board.snapshot())
    settle(out)
    read()
    assert screen.rows[6].startswith("No microphone")
    assert screen.styles[6] == "7"
    board.set("audio", "listening")
    out.handle(board.snapshot())
    settle(out)
    read()
    assert screen.rows[6] == ""
    out.handle(AudioLoss(12.4, 1.0, 13.4, "service unreachable"))
    settle(out)
    read()
    assert screen.rows[6] == "⚠ 12.4 s of speech lost (service unreachable)"[:40]  # 40 columns


def test_terminal_gone_and_missing(pty_console, tmp_path):
    out, _screen, _read, master, _slave = pty_console
    with pytest.raises(OutputUnavailable, match="cannot open"):
        ConsoleOutput(tmp_path / "no-tty").open()
    out.open()
    os.close(master)
    with pytest.raises(OutputUnavailable):
        for i in range(50):
            out.handle(line(i, f"line {i}"))
            settle(out)
