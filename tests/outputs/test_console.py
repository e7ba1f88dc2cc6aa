"""The console output on a real pseudo-terminal, read back through a small screen model."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import struct
import termios
import time
import tty
from dataclasses import replace

import pytest

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.schema import ConsoleConfig
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.console import MIN_REDRAW, NOTICE_SECONDS, SIZE_CHECK, ConsoleOutput
from edgecap.outputs.rollup import cell_width
from edgecap.runtime.status import StatusBoard

ESCAPE = re.compile(r"\x1b\[([?\d;]*)([A-Za-z\]])")


class Screen:
    """A terminal grid that understands exactly what the console output may emit: cursor
    position (CUP), erase line (EL 2), erase screen (ED 2), SGR, cursor show/hide and the
    Linux console's blank-off. Anything else, or text past the right edge, fails the test."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.cells: list[list[str | None]] = [[""] * width for _ in range(height)]
        self.sgr = [[""] * width for _ in range(height)]
        self.row = self.col = 0
        self.attrs = ""
        self.cursor_visible = True
        self.erased_rows: list[int] = []  # 1-based rows, each time one is erased

    def feed(self, text: str) -> None:
        pos = 0
        for m in ESCAPE.finditer(text):
            self._text(text[pos : m.start()])
            pos = m.end()
            args, cmd = m.groups()
            if cmd == "H":
                row, col = (int(a) for a in args.split(";"))
                self.row, self.col = row - 1, col - 1
            elif cmd == "K" and args == "2":
                self.cells[self.row] = [""] * self.width
                self.sgr[self.row] = [""] * self.width
                self.erased_rows.append(self.row + 1)
            elif cmd == "J" and args == "2":
                self.cells = [[""] * self.width for _ in range(self.height)]
                self.sgr = [[""] * self.width for _ in range(self.height)]
            elif cmd == "m":
                self.attrs = "" if args in ("", "0") else args
            elif cmd in "lh" and args == "?25":
                self.cursor_visible = cmd == "h"
            elif cmd == "]" and args == "9;0":
                pass
            else:
                raise AssertionError(f"unexpected escape sequence {m.group()!r}")
        self._text(text[pos:])

    def _text(self, s: str) -> None:
        for ch in s:
            assert ch.isprintable(), f"control character {ch!r} on screen"
            w = cell_width(ch)
            assert self.col + w <= self.width, f"text past the right edge on row {self.row + 1}"
            self.cells[self.row][self.col] = ch
            self.sgr[self.row][self.col] = self.attrs
            if w == 2:
                self.cells[self.row][self.col + 1] = None  # the right half of a wide character
            self.col += w

    def text(self, row: int) -> str:
        """Row ``row`` (1-based) as text, trailing blanks removed."""
        return "".join(c or " " for c in self.cells[row - 1] if c is not None).rstrip()

    def style(self, row: int) -> str:
        return self.sgr[row - 1][0]


def line(seq, text, final=True, translation="", **translations):
    """A caption line; ``translation`` is its Spanish one, ``translations`` others."""
    return CaptionLine(
        seq=seq,
        text=text,
        speaker=None,
        language="en",
        start=None,
        end=None,
        final=final,
        translation_final=final,
        translations=({"es": translation} if translation else {}) | translations,
    )


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        self.t += 2 * MIN_REDRAW  # every handle() may redraw at once
        return self.t


class Term:
    """A pty with its size set, and the screen model fed from the master side."""

    def __init__(self, cols: int = 40, rows: int = 10) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.resize(cols, rows)

    def resize(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.screen = getattr(self, "screen", None) or Screen(cols, rows)
        if (self.screen.width, self.screen.height) != (cols, rows):
            self.screen = Screen(cols, rows)

    def read(self) -> Screen:
        data = b""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 0.02:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                time.sleep(0.002)
                continue
            data += chunk
            quiet_since = time.monotonic()
        self.screen.feed(data.decode("utf-8"))
        return self.screen

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def term():
    t = Term()
    yield t
    t.close()


def console(path, **kw) -> tuple[ConsoleOutput, Clock]:
    clock = Clock()
    cfg = replace(ConsoleConfig(), enabled=True, tty=path, **kw)
    return ConsoleOutput(cfg, clock=clock), clock


def test_rollup_at_the_bottom_and_only_changed_rows_rewritten(term):
    out, _ = console(term.path, lines=3)
    out.open()
    out.handle(line(1, "first line"))
    out.handle(line(2, "second line", translation="segunda línea"))
    out.handle(line(3, "speak", final=False))
    screen = term.read()
    assert not screen.cursor_visible
    assert [screen.text(r) for r in (8, 9, 10)] == ["second line", "segunda línea", "speak"]
    assert [screen.style(r) for r in (8, 9, 10)] == ["1", "33", "2"]  # bold, yellow, dim
    assert all(screen.text(r) == "" for r in range(1, 8))
    screen.erased_rows.clear()
    out.handle(line(3, "speaking now", final=False))
    term.read()
    assert screen.text(10) == "speaking now"
    assert screen.erased_rows == [10], "rows that did not change were rewritten"
    screen.erased_rows.clear()
    out.handle(line(3, "speaking now", final=False))  # the same again: nothing written
    assert term.read().erased_rows == []
    out.close()
    assert term.read().cursor_visible


def test_two_translations_stack_under_their_line_in_order_and_colour(term):
    out, _ = console(term.path, lines=5)
    out.open()
    out.handle(line(1, "earlier"))
    out.handle(line(2, "good morning", translation="buenos días", de="guten Morgen"))
    out.handle(line(3, "and", final=False))
    screen = term.read()
    rows = [(screen.text(r), screen.style(r)) for r in range(6, 11)]
    assert rows == [
        ("earlier", "1"),
        ("good morning", "1"),
        ("buenos días", "33"),  # the first translation yellow
        ("guten Morgen", "36"),  # the second cyan
        ("and", "2"),
    ]
    out.close()


def test_the_chosen_languages_only_in_their_order(term):
    out, _ = console(term.path, lines=4, translations=("hi", "de"))
    out.open()
    # (Hindi without combining marks: the screen model has none)
    out.handle(line(1, "thank you", translation="gracias", de="danke", hi="आभार"))
    screen = term.read()
    assert [screen.text(r) for r in (8, 9, 10)] == ["thank you", "आभार", "danke"]
    assert [screen.style(r) for r in (8, 9, 10)] == ["1", "33", "36"]
    assert not any("gracias" in screen.text(r) for r in range(1, 11))  # not chosen
    out.close()
    # show = translation: the chosen translations only
    out, _ = console(term.path, lines=4, show="translation", translations=("de", "es"))
    out.open()
    out.handle(line(2, "see you", translation="hasta luego", de="bis bald", hi="फिर मिलेंगे"))
    screen = term.read()
    assert [screen.text(r) for r in range(7, 11)] == ["", "", "bis bald", "hasta luego"]
    out.close()


def test_long_and_wide_text_wraps_by_terminal_cells(term):
    term.resize(10, 6)
    out, _ = console(term.path, lines=3, show="original")
    out.open()
    out.handle(line(1, "你好世界你好世界", translation="hello"))  # 16 cells
    screen = term.read()
    assert screen.text(5) == "你好世界你"  # ten cells: five wide characters
    assert screen.cells[4][9] is None
    assert screen.text(6) == "好世界"
    assert "hello" not in screen.text(4)  # show = original
    out.close()


def test_status_line_when_in_trouble_and_loss_notice(term):
    out, clock = console(term.path, lines=3)
    out.open()
    out.handle(line(1, "hello"))
    board = StatusBoard()
    out.handle(board.snapshot())  # nothing reported yet: starting is no trouble
    assert term.read().text(7) == ""
    board.set("audio", "device_missing", "no capture device matches 'USB'")
    out.handle(board.snapshot())
    screen = term.read()
    assert screen.text(7) == "No microphone: no capture device matches 'USB'"[:40]
    assert screen.style(7) == "1;37;41"
    assert screen.text(10) == "hello"
    board.set("audio", "listening")
    board.add("uplink_lost_s", 3.0)  # an old loss alone is no trouble
    out.handle(board.snapshot())
    assert term.read().text(7) == ""
    board.set("link", "retrying", "connection refused")
    out.handle(board.snapshot())
    assert term.read().text(7).startswith("Listening… · Speech service unreachable")
    board.set("link", "connected")
    out.handle(board.snapshot())
    out.handle(AudioLoss(12.4, 1.0, 13.4, "service unreachable"))
    assert term.read().text(7) == "⚠ 12.4 s of speech lost (service unreachable)"[:40]
    out.idle(clock.t + NOTICE_SECONDS)
    assert term.read().text(7) == ""
    assert screen.text(10) == "hello"
    out.close()


def test_a_resized_terminal_is_redrawn_at_its_new_bottom(term):
    out, clock = console(term.path, lines=2)
    out.open()
    out.handle(line(1, "one"))
    out.handle(line(2, "two"))
    assert [term.read().text(r) for r in (9, 10)] == ["one", "two"]
    term.resize(50, 14)
    out.idle(clock.t + SIZE_CHECK)
    screen = term.read()
    assert [screen.text(r) for r in (13, 14)] == ["one", "two"]
    assert all(screen.text(r) == "" for r in range(1, 13))
    out.close()


def test_a_stopped_terminal_never_blocks_and_catches_up(term):
    out, clock = console(term.path, lines=2)
    out.open()
    termios.tcflow(term.slave, termios.TCOOFF)  # Ctrl-S / Scroll Lock on a real console
    t0 = time.monotonic()
    for i in range(1, 2000):
        out.handle(line(i, f"caption number {i} " + "x" * 20, final=False))
        out.handle(line(i, f"caption number {i}"))
    assert time.monotonic() - t0 < 5
    assert term.read().text(10) == ""  # nothing got through meanwhile
    termios.tcflow(term.slave, termios.TCOON)
    for _ in range(20):
        out.idle(clock())
        term.read()
    screen = term.read()
    assert [screen.text(r) for r in (9, 10)] == ["caption number 1998", "caption number 1999"]
    out.close()


def test_without_a_terminal_size_80x24_is_used():
    written = io.BytesIO()

    class Stream(io.BytesIO):
        def write(self, b):  # type: ignore[override]
            return written.write(b)

    cfg = replace(ConsoleConfig(), enabled=True, tty="/nowhere", lines=2)
    out = ConsoleOutput(cfg, stream_opener=lambda path: Stream(), clock=Clock())
    out.open()
    out.handle(line(1, "a caption"))
    out.close()
    screen = Screen(80, 24)
    screen.feed(written.getvalue().decode())
    assert screen.text(24) == "a caption"
    assert screen.cursor_visible


def test_terminal_missing_or_gone(term, tmp_path):
    missing, _ = console(tmp_path / "no-tty")
    with pytest.raises(OutputUnavailable, match=r"cannot open .*no-tty"):
        missing.open()
    out, _ = console(term.path)
    out.open()
    term.close()  # the terminal hung up
    with pytest.raises(OutputUnavailable, match="cannot write"):
        for i in range(1, 50):
            out.handle(line(i, f"line {i}"))
    out.close()


def test_behind_its_worker_a_stopped_terminal_is_waited_for_not_polled(term):
    """The worker sleeps until the stopped terminal takes output again (poll for room),
    and the screen catches up then, with no event to prompt it."""
    from edgecap.outputs.worker import OutputWorker

    cfg = replace(ConsoleConfig(), enabled=True, tty=term.path, lines=2)
    worker = OutputWorker(ConsoleOutput(cfg), StatusBoard())
    out = worker.output
    worker.start()
    try:
        deadline = time.monotonic() + 3
        while not worker.idle:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        termios.tcflow(term.slave, termios.TCOOFF)
        i = 0
        while not out._backlog:  # the terminal buffer fills: the rest waits in the output
            i += 1
            worker.publish(line(i, f"caption number {i} " + "x" * 30))
            time.sleep(0.001 if i % 50 else 0.02)
            assert time.monotonic() < deadline + 5
        time.sleep(0.1)
        asleep = worker.wakeups
        time.sleep(0.3)
        assert worker.wakeups - asleep <= 1 and worker.idle  # no polling meanwhile
        termios.tcflow(term.slave, termios.TCOON)
        deadline = time.monotonic() + 3
        want = f"caption number {i}"  # the last line, its x's wrapped onto the next row
        while term.read().text(9) != want:
            assert time.monotonic() < deadline, term.screen.text(9)
    finally:
        worker.request_stop()
        assert worker.join(3)
