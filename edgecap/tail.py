"""`edgecap tail`: print the captions of the running daemon, from its socket.

Text mode prints each final line once as ``[MM:SS.ss] text`` with each of its final
translations below it (``→ [de] …``, in the order the daemon lists them); a line that is a
translation only (empty text) is printed as its first translation, the others below. On a
terminal the line being spoken is shown in place (rewritten with ``\\r`` + erase-line, cut
to the terminal's width so it never wraps), in a pipe only final lines are written. Daemons
of protocol version 1 and 2 are read alike: the shape of a caption did not change.
``--json`` passes the socket's lines through unchanged (docs/socket-protocol.md).

When the daemon is not running or goes away, tail says so once on ``err`` and connects
again every ``retry_interval`` until it is back. A reconnecting client is sent the last
final lines again; those already printed are not printed twice (they are recognised by
sequence number *and* text, because a restarted daemon numbers its lines from 1 again).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

_ERASE = "\r\x1b[2K"
_INDENT = " " * len("[00:00.00] ")
_REMEMBER = 1000  # printed lines remembered, to skip them when history is sent again
_MAX_LINE = 4 * 1024 * 1024  # a protocol line longer than this is not ours: dropped
_POLL = 0.25  # seconds between looks at ``stop`` while waiting for data


def _clock(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return "--:--.--"
    minutes, sec = divmod(float(seconds), 60)
    return f"{int(minutes):02d}:{sec:05.2f}"


def _cells(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _fit_tail(text: str, width: int) -> str:
    """The end of ``text`` that fits in ``width`` terminal cells (the newest words)."""
    used = 0
    for i in range(len(text) - 1, -1, -1):
        used += _cells(text[i])
        if used > width:
            return "…" + text[i + 2 :] if width > 1 else text[i + 1 :]
    return text


def _translations(msg: dict[str, Any]) -> list[tuple[str | None, str, bool]]:
    """A caption's translations as (language, text, final), in the daemon's order; entries
    that are not what the protocol says are skipped."""
    out = []
    for t in msg.get("translations") or []:
        if isinstance(t, dict) and t.get("text"):
            language = t.get("language")
            out.append((str(language) if language else None, str(t["text"]), bool(t.get("final"))))
    return out


def _tagged(language: str | None, text: str) -> str:
    return f"[{language}] {text}" if language else text


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class _Printer:
    """Turns protocol lines into what the user sees on ``out``."""

    def __init__(self, out: TextIO, *, json_mode: bool, tty: bool) -> None:
        self.out = out
        self.json_mode = json_mode
        self.tty = tty
        self.in_place = False  # a provisional line is on screen, without a newline
        self.printed: OrderedDict[tuple[Any, str], None] = OrderedDict()

    def line(self, raw: str) -> dict[str, Any] | None:
        """Show one protocol line; returns the parsed message (None if it is not one)."""
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        msg = parsed if isinstance(parsed, dict) else None
        if self.json_mode:
            self._write(raw + "\n")
        elif msg is not None and msg.get("type") == "caption":
            self._caption(msg)
        elif msg is not None and msg.get("type") == "gap":
            seconds = msg.get("seconds")
            amount = f"{seconds:.1f} s" if isinstance(seconds, int | float) else "some"
            self._write(f"⚠ {amount} of speech lost ({msg.get('reason') or 'unknown'})\n")
        return msg

    def _caption(self, msg: dict[str, Any]) -> None:
        seq = msg.get("seq")
        text = str(msg.get("text") or "")
        translations = _translations(msg)
        if not msg.get("final"):
            shown = text or (_tagged(*translations[0][:2]) if translations else "")
            if self.tty and shown:
                self._write(_ERASE + _fit_tail(shown, self._width() - 1), newline=False)
            return
        if not text and not translations:  # a withdrawn line: take it off the screen
            if self.in_place:
                self._write(_ERASE, newline=False)
                self.in_place = False
            return
        finals = [(language, t) for language, t, final in translations if final]
        header = text
        if not text:  # translation only: its first translation stands for the line
            if not finals:
                return
            header = _tagged(*finals.pop(0))
        if self._first_time((seq, header)):
            who = f"S{msg['speaker']}: " if msg.get("speaker") else ""
            self._write(f"[{_clock(msg.get('start'))}] {who}{header}\n")
        for language, t in finals:
            if self._first_time((seq, _tagged(language, t))):
                self._write(f"{_INDENT}→ {_tagged(language, t)}\n")

    def _first_time(self, key: tuple[Any, str]) -> bool:
        if key in self.printed:
            return False
        self.printed[key] = None
        while len(self.printed) > _REMEMBER:
            self.printed.popitem(last=False)
        return True

    def _width(self) -> int:
        try:
            return max(10, os.get_terminal_size(self.out.fileno()).columns)
        except (AttributeError, ValueError, OSError):
            return 80

    def _write(self, text: str, *, newline: bool = True) -> None:
        if self.in_place and newline:
            text = _ERASE + text
        self.out.write(text)
        self.out.flush()
        self.in_place = not newline

    def finish(self) -> None:
        """Leave the terminal clean: no half-drawn provisional line."""
        if self.in_place:
            self._write(_ERASE, newline=False)
            self.in_place = False


class _Say:
    """Messages for people on ``err``: each situation is told once, not at every retry."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.told: str | None = None  # the situation last told ("absent", "refused")

    def problem(self, situation: str, text: str) -> None:
        if situation != self.told:
            self.told = situation
            self._write(text)

    def connected(self, path: Path) -> None:
        if self.told is not None:
            self.told = None
            self._write(f"connected to {path}")

    def _write(self, text: str) -> None:
        self.err.write(f"edgecap tail: {text}\n")
        self.err.flush()


def run_tail(
    path: Path,
    *,
    json_mode: bool,
    out: TextIO,
    err: TextIO,
    stop: threading.Event | None = None,
    retry_interval: float = 1.0,
    tty: bool | None = None,
) -> int:
    """Print captions from the socket at ``path`` until ``stop`` is set or Ctrl-C; returns
    the exit status (0). ``tty`` overrides whether ``out`` is treated as a terminal."""
    stop = stop or threading.Event()
    printer = _Printer(out, json_mode=json_mode, tty=_isatty(out) if tty is None else tty)
    say = _Say(err)
    try:
        while not stop.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2.0)
            try:
                sock.connect(str(path))
            except OSError as exc:
                sock.close()
                why = exc.strerror or str(exc)
                say.problem("absent", f"edgecap is not running ({path}: {why}); waiting for it…")
            else:
                with sock:
                    ending = _follow(sock, printer, stop, lambda: say.connected(path))
                printer.finish()
                if ending is not None:
                    say.problem(*ending)
            stop.wait(retry_interval)
    except KeyboardInterrupt:
        pass
    printer.finish()
    return 0


def _follow(
    sock: socket.socket,
    printer: _Printer,
    stop: threading.Event,
    on_hello: Callable[[], None],
) -> tuple[str, str] | None:
    """Read one connection until it ends. Returns the situation and what to tell the user,
    or None when ``stop`` was set."""
    sock.settimeout(_POLL)
    buffer = b""
    said_bye = False
    notice: str | None = None
    while not stop.is_set():
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            data = b""
        if not data:
            if notice is not None:
                return ("refused", f"the daemon closed the connection: {notice}; trying again…")
            if said_bye:
                return ("absent", "edgecap went away (it is stopping); waiting for it…")
            return ("absent", "edgecap went away; waiting for it to come back…")
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        if len(buffer) > _MAX_LINE:
            buffer = b""
        for raw in lines:
            msg = printer.line(raw.decode("utf-8", "replace"))
            kind = msg.get("type") if msg is not None else None
            if kind == "hello":
                on_hello()
            elif kind == "bye":
                said_bye = True
            elif kind == "error" and msg is not None:
                notice = str(msg.get("message") or msg.get("error"))
    return None
