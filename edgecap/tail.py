"""`edgecap tail`: print the captions of the running daemon, from its socket.

Text mode prints final lines as ``[MM:SS.ss] text`` with the translation below; on a
terminal the line being spoken is shown in place. ``--json`` passes the socket's lines
through unchanged. When the daemon is not running or restarts, tail says so once and
connects again every ``retry_interval`` until it is back.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import TextIO


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--.--"
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes):02d}:{sec:05.2f}"


class _Printer:
    def __init__(self, out: TextIO, json_mode: bool, tty: bool) -> None:
        self.out = out
        self.json_mode = json_mode
        self.tty = tty
        self.in_place = False
        self.printed_translation: set[int] = set()
        self.printed_final: set[int] = set()

    def line(self, raw: str) -> None:
        if self.json_mode:
            self._write(raw + "\n")
            return
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "caption":
            self._caption(msg)
        elif kind == "gap":
            self._write(f"⚠ {msg.get('seconds', 0):.1f} s of speech lost ({msg.get('reason')})\n")
        elif kind == "error":
            self._write(f"! {msg.get('error')}: {msg.get('message', '')}\n")

    def _caption(self, msg: dict) -> None:
        seq = msg.get("seq")
        text = str(msg.get("text") or "")
        translations = [t for t in msg.get("translations") or [] if isinstance(t, dict)]
        if not msg.get("final"):
            if self.tty and text:
                self._write("\r\x1b[2K" + text[-200:], newline=False)
            return
        if seq not in self.printed_final:
            self.printed_final.add(seq)
            if text:
                who = f"S{msg['speaker']}: " if msg.get("speaker") else ""
                self._write(f"[{_clock(msg.get('start'))}] {who}{text}\n")
        for t in translations:
            if t.get("final") and seq not in self.printed_translation and t.get("text"):
                self.printed_translation.add(seq)
                self._write(f"           → {t['text']}\n")

    def _write(self, text: str, newline: bool = True) -> None:
        prefix = "\r\x1b[2K" if self.in_place and newline else ""
        self.out.write(prefix + text)
        self.out.flush()
        self.in_place = not newline


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
    """Print captions until ``stop`` is set (or forever); returns the exit status."""
    stop = stop or threading.Event()
    printer = _Printer(out, json_mode, out.isatty() if tty is None else tty)
    said_missing = False
    while not stop.is_set():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            if not said_missing:
                err.write(f"edgecap is not running ({path}: {exc.strerror}); waiting for it…\n")
                err.flush()
                said_missing = True
            stop.wait(retry_interval)
            continue
        if said_missing:
            err.write("connected\n")
            err.flush()
        said_missing = False
        sock.settimeout(0.25)
        buffer = b""
        with sock:
            while not stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    err.write("the daemon went away; waiting for it…\n")
                    err.flush()
                    said_missing = True
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    printer.line(raw.decode("utf-8", "replace"))
    return 0
