"""Captions on a text console (``/dev/tty1`` on a Pi without a desktop) or any terminal.

The last ``lines`` rows of captions sit at the bottom of the screen, with a status line
above them while something needs attention. Rows are addressed with ANSI cursor positioning
(``ESC[<row>;1H``, erase the row, write it) and only a row whose text or style changed is
rewritten, so a provisional caption that changes ten times a second never makes the screen
flicker. Finals are bold, provisional text dim. A line's translations follow it, each on
row(s) of its own: the languages listed in ``translations`` in that order, or all of the
line's in target order; the first yellow, the next cyan (then yellow again), so the
languages can be told apart.

The terminal is written without blocking: a console stopped with Scroll Lock or Ctrl-S (or
a terminal nobody reads) would otherwise hang this output's thread. What cannot be written
now is kept and written first next time; nothing new is drawn until it went out (the worker
sleeps in ``wait_io`` until the terminal takes output again).

Between events the output sleeps until its next deadline (``wake_in``): a held-back redraw,
the end of a loss notice, or a look at the terminal's size (it sends us no SIGWINCH: it is
not our controlling terminal), every ``SIZE_CHECK`` while captions come and every
``SIZE_CHECK_QUIET`` while nothing does.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import select
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.captions.sanitize import clean_text
from edgecap.config.schema import ConsoleConfig
from edgecap.outputs.base import TEXT, OutputEvent, OutputUnavailable
from edgecap.outputs.rollup import CaptionLines, cell_width, layout
from edgecap.runtime.status import LINK_PROBLEMS, StatusSnapshot

StreamOpener = Callable[[Path], BinaryIO]

SGR = {
    "final": "\x1b[1m",  # bold
    "provisional": "\x1b[2m",  # dim
    "translation": "\x1b[33m",  # yellow: the first translation under a line
    "translation2": "\x1b[36m",  # cyan: the second one (the third is yellow again …)
    "status": "\x1b[1;37;41m",  # bold white on red: something is wrong
}
RESET = "\x1b[0m"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
CLEAR_SCREEN = "\x1b[2J"
LINUX_BLANK_OFF = "\x1b[9;0]"  # Linux VT: never blank the screen (like `setterm -blank 0`)
KDGETMODE = 0x4B3B  # ioctl that only a Linux virtual terminal answers

NORMAL_AUDIO = ("starting", "listening", "speech")
NOTICE_SECONDS = 10.0  # how long "… s of speech lost" stays up
MIN_REDRAW = 0.05  # at most 20 redraws a second
SIZE_CHECK = 1.0  # a resized terminal is noticed within this long while captions come
# and within this long while nothing happens (each look wakes the thread, which on a Pi
# Zero costs a millisecond or two of CPU: a resize is rare, the next caption redraws anyway)
SIZE_CHECK_QUIET = 60.0
BACKLOG_RETRY = 0.1  # a stopped stream without a descriptor to poll is tried this often
FALLBACK_SIZE = (80, 24)


def open_tty(path: Path) -> BinaryIO:
    """Open a terminal for writing only, never as our controlling terminal, non-blocking."""
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    return open(fd, "wb", buffering=0)  # the output owns it until close()


def _fit(text: str, width: int) -> str:
    while cell_width(text) > width:
        text = text[:-1]
    return text


def _is_linux_vt(fd: int | None) -> bool:
    if fd is None:
        return False
    try:
        fcntl.ioctl(fd, KDGETMODE, b"\0\0\0\0")
    except OSError:
        return False
    return True


class ConsoleOutput:
    name = "console"
    takes = TEXT

    def __init__(
        self,
        cfg: ConsoleConfig,
        *,
        stream_opener: StreamOpener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``stream_opener(path)`` returns a writable binary stream for ``cfg.tty``
        (default: the terminal opened O_WRONLY | O_NOCTTY | O_NONBLOCK); its size is read
        from the stream's file descriptor, or 80×24 if it has none. ``clock`` gives the
        ``now`` of handle() (time.monotonic)."""
        self.tty = Path(cfg.tty)
        self.lines = cfg.lines
        self.show = cfg.show
        self.languages = cfg.translations
        self.clock = clock
        self._opener = stream_opener or open_tty
        self._stream: BinaryIO | None = None
        self._fd: int | None = None
        self._captions = CaptionLines(keep=max(10, self.lines * 2))
        self._status = ""
        self._notice = ""
        self._notice_until = 0.0
        self._shown: dict[int, tuple[str, str]] = {}  # row (1-based) → (style, text) on screen
        self._size = (0, 0)
        self._size_at = 0.0
        self._backlog = b""  # bytes the terminal did not take yet
        self._dirty = True
        self._last_draw = -MIN_REDRAW

    # --- Output -----------------------------------------------------------------------
    def open(self) -> None:
        try:
            self._stream = self._opener(self.tty)
        except OSError as exc:
            raise OutputUnavailable(f"cannot open {self.tty}: {exc.strerror or exc}") from None
        try:
            self._fd = self._stream.fileno()
        except (OSError, ValueError):
            self._fd = None
        self._shown.clear()
        self._backlog = b""
        self._size = self._terminal_size()
        self._size_at = self.clock()
        setup = HIDE_CURSOR + RESET + CLEAR_SCREEN
        if _is_linux_vt(self._fd):
            setup = LINUX_BLANK_OFF + setup
        try:
            self._send(setup)
        except OutputUnavailable:
            self.close()
            raise
        self._dirty = True

    def handle(self, event: OutputEvent) -> None:
        now = self.clock()
        if isinstance(event, CaptionLine):
            self._dirty |= self._captions.apply(event)
        elif isinstance(event, AudioLoss):
            self._notice = f"⚠ {event.seconds:.1f} s of speech lost ({event.reason})"
            self._notice_until = now + NOTICE_SECONDS
            self._dirty = True
        elif isinstance(event, StatusSnapshot):
            status = event.summary() if self._in_trouble(event) else ""
            if status != self._status:
                self._status = status
                self._dirty = True
        self.idle(now)

    def idle(self, now: float) -> None:
        if self._stream is None:
            return
        if self._notice and now >= self._notice_until:
            self._notice = ""
            self._dirty = True
        if now - self._size_at >= SIZE_CHECK:
            self._size_at = now
            if self._terminal_size() != self._size:
                self._dirty = True
        if self._backlog:
            self._send("")
            if self._backlog:
                return  # the terminal is stopped: draw nothing new until it takes more
        if self._dirty and now - self._last_draw >= MIN_REDRAW:
            self._draw(now)

    def wake_in(self, now: float) -> float | None:
        if self._stream is None:
            return None
        if self._backlog:  # the terminal is stopped: wait_io wakes us when it takes more
            return None if self._fd is not None else BACKLOG_RETRY
        due = [self._size_at + max(SIZE_CHECK, SIZE_CHECK_QUIET)]  # as idle() looks
        if self._dirty:
            due.append(self._last_draw + MIN_REDRAW)
        if self._notice:
            due.append(self._notice_until)
        return max(0.0, min(due) - now)

    def wait_io(self, timeout: float | None, wake_fd: int) -> None:
        """Sleep until ``wake_fd`` is readable or ``timeout`` passed; while output waits
        for a stopped terminal, also until the terminal takes output again."""
        poller = select.poll()
        poller.register(wake_fd, select.POLLIN)
        if self._backlog and self._fd is not None:
            poller.register(self._fd, select.POLLOUT)
        poller.poll(None if timeout is None else math.ceil(timeout * 1000))

    def close(self) -> None:
        if self._stream is None:
            return
        with contextlib.suppress(OutputUnavailable):
            self._send(RESET + SHOW_CURSOR)
        with contextlib.suppress(OSError):
            self._stream.close()
        self._stream = self._fd = None

    # --- what is shown ----------------------------------------------------------------
    @staticmethod
    def _in_trouble(snap: StatusSnapshot) -> bool:
        """A status line only when something is wrong now (counters of old losses alone
        are no reason: a loss shows as a notice for a while when it happens)."""
        audio = snap.state_of("audio")  # None: not reported yet, i.e. starting
        return (
            audio not in (None, *NORMAL_AUDIO)
            or snap.state_of("link") in LINK_PROBLEMS
            or bool(snap.fresh_notice())
        )

    def _terminal_size(self) -> tuple[int, int]:
        if self._fd is not None:
            try:
                size = os.get_terminal_size(self._fd)
            except OSError:
                pass
            else:
                if size.columns > 0 and size.lines > 0:
                    return size.columns, size.lines
        return FALLBACK_SIZE

    def screen_rows(self, width: int, height: int) -> dict[int, tuple[str, str]]:
        """Row number (1-based) → (style, text) for every row this output owns."""
        n = max(1, min(self.lines, height - 1))
        first = height - n + 1
        want = {first + i: ("", "") for i in range(n)}
        rows = layout(self._captions.lines(), n, width, self.show, languages=self.languages)
        for i, row in enumerate(rows, start=first + n - len(rows)):
            style = "translation2" if row.style == "translation" and row.order % 2 else row.style
            want[i] = (style, clean_text(row.text))
        if first > 1:
            top = clean_text(self._notice or self._status)
            want[first - 1] = ("status", _fit(top, width)) if top else ("", "")
        return want

    def _draw(self, now: float) -> None:
        size = self._terminal_size()
        out = []
        if size != self._size:
            self._size = size
            self._shown.clear()
            out.append(RESET + CLEAR_SCREEN)
        for row, (style, text) in sorted(self.screen_rows(*size).items()):
            if self._shown.get(row, ("", "")) == (style, text):
                continue  # unchanged (a row never written is blank: the screen was cleared)
            out.append(f"\x1b[{row};1H\x1b[2K")
            if text:
                out.append(f"{SGR[style]}{text}{RESET}")
            self._shown[row] = (style, text)
        if out:
            self._send("".join(out))
        self._dirty = False
        self._last_draw = now

    def _send(self, text: str) -> None:
        """Write what the terminal takes without waiting; keep the rest for later."""
        if self._stream is None:
            return
        data = self._backlog + text.encode("utf-8")
        try:
            while data:
                n = self._stream.write(data)
                if n is None:  # would block (a non-blocking stream)
                    break
                data = data[n:]
        except BlockingIOError as exc:
            data = data[exc.characters_written :]
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise OutputUnavailable(f"cannot write to {self.tty}: {why}") from None
        self._backlog = data
