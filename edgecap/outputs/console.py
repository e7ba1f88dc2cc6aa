"""Captions on a text console (``/dev/tty1`` on a Pi without a desktop) or any terminal.

The last ``lines`` rows of captions sit at the bottom of the screen, with a status line
above them when something needs attention. Rows are addressed with ANSI cursor positioning
and only a row whose text or style changed is rewritten, so a provisional caption that
changes ten times a second never makes the screen flicker. The size is read from the
terminal at every redraw (a resize redraws everything).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.daemon.status import StatusSnapshot
from edgecap.outputs.base import OutputEvent, OutputUnavailable
from edgecap.outputs.rollup import CaptionLines, cell_width, layout

SGR = {
    "final": "\x1b[1m",  # bold
    "provisional": "\x1b[2m",  # dim
    "translation": "\x1b[33m",  # yellow
    "status": "\x1b[7m",  # reverse video
}
NORMAL_AUDIO = ("listening", "speech", "starting")
NOTICE_SECONDS = 10.0
MIN_REDRAW = 0.1  # at most 10 redraws a second


def _fit(text: str, width: int) -> str:
    while cell_width(text) > width:
        text = text[:-1]
    return text


class ConsoleOutput:
    name = "console"
    idle_interval = 0.1

    def __init__(self, tty: Path, *, lines: int = 3, show: str = "both") -> None:
        self.tty = Path(tty)
        self.lines = lines
        self.show = show
        self._fd: int | None = None
        self._captions = CaptionLines(keep=max(10, lines * 2))
        self._status = ""
        self._notice = ""
        self._notice_until = 0.0
        self._shown: dict[int, tuple[str, str]] = {}  # row → (style, text) on screen
        self._size = (0, 0)
        self._dirty = True
        self._last_draw = 0.0
        self.redraws = 0
        self.rows_written = 0

    # --- Output -----------------------------------------------------------------------
    def open(self) -> None:
        try:
            self._fd = os.open(self.tty, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            raise OutputUnavailable(f"cannot open {self.tty}: {exc.strerror}") from None
        self._shown.clear()
        self._size = (0, 0)
        self._write("\x1b[?25l\x1b[0m\x1b[2J")  # hide the cursor, clear
        self._dirty = True

    def handle(self, event: OutputEvent) -> None:
        if isinstance(event, CaptionLine):
            self._dirty |= self._captions.apply(event)
        elif isinstance(event, AudioLoss):
            self._notice = f"⚠ {event.seconds:.1f} s of speech lost ({event.reason})"
            self._notice_until = time.monotonic() + NOTICE_SECONDS
            self._dirty = True
        elif isinstance(event, StatusSnapshot):
            audio = event.state_of("audio")
            summary = event.summary()
            trouble = audio not in NORMAL_AUDIO or summary.count("·") > 0
            status = summary if trouble else ""
            if status != self._status:
                self._status = status
                self._dirty = True
        self.idle(time.monotonic())

    def idle(self, now: float) -> None:
        if self._notice and now > self._notice_until:
            self._notice = ""
            self._dirty = True
        if self._fd is None or not self._dirty or now - self._last_draw < MIN_REDRAW:
            return
        self._draw(now)

    def close(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OutputUnavailable):
            self._write("\x1b[0m\x1b[?25h")
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    # --- drawing ----------------------------------------------------------------------
    def _draw(self, now: float) -> None:
        try:
            size = os.get_terminal_size(self._fd)  # type: ignore[arg-type]
            width, height = size.columns, size.lines
        except OSError:
            width, height = 80, 24
        if (width, height) != self._size:
            self._size = (width, height)
            self._shown.clear()
            self._write("\x1b[2J")
        rows = layout(self._captions.lines(), self.lines, width, self.show)
        want: dict[int, tuple[str, str]] = {}
        first = height - self.lines + 1
        for i in range(self.lines):
            want[first + i] = ("final", "")
        offset = self.lines - len(rows)
        for i, row in enumerate(rows):
            want[first + offset + i] = (row.style, row.text)
        top = self._notice or self._status
        want[first - 1] = ("status", _fit(top, width)) if top else ("final", "")
        out = []
        for row, (style, text) in sorted(want.items()):
            if row < 1 or self._shown.get(row) == (style, text):
                continue
            out.append(f"\x1b[{row};1H\x1b[2K")
            if text:
                out.append(f"{SGR[style]}{text}\x1b[0m")
            self._shown[row] = (style, text)
            self.rows_written += 1
        if out:
            self._write("".join(out))
        self._dirty = False
        self._last_draw = now
        self.redraws += 1

    def _write(self, text: str) -> None:
        if self._fd is None:
            return
        data = text.encode("utf-8")
        try:
            while data:
                n = os.write(self._fd, data)
                data = data[n:]
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ENXIO, errno.EBADF, errno.ENODEV):
                raise OutputUnavailable(f"{self.tty} went away: {exc.strerror}") from None
            raise OutputUnavailable(f"cannot write to {self.tty}: {exc.strerror}") from None
