"""`edgecap tail`: print the captions of the running daemon, from its socket.

Text mode prints each final line once as ``[MM:SS.ss] text`` with each of its final
translations below it (``→ [de] …``, in the order the daemon lists them); a line that is a
translation only (empty text) is printed as its first translation, the others below. On a
terminal the line being spoken is shown in place (rewritten with ``\\r`` + erase-line, cut
to the terminal's width so it never wraps), in a pipe only final lines are written. Daemons
of protocol version 1 and 2 are read alike: the shape of a caption did not change.

The socket is not trusted: whoever can listen on the path tail is given could send anything,
and what tail prints lands on a person's terminal. So no text from the socket reaches
``out`` or ``err`` raw: caption and translation text lose terminal escapes and control
characters (as the daemon's own ``clean_text`` does), language tags and speaker labels keep
letters, digits, ``.``, ``-`` and ``_``, and notices (gap reasons, error messages) show their
control characters as visible escapes (``\\x1b``). Values of the wrong type are ignored.
``--json`` passes every JSON line through *re-encoded* (docs/socket-protocol.md): the same
object, in ASCII (``"¿Qué?"`` is written ``"\\u00bfQu\\u00e9?"``), so no control byte,
C1 control or bidi override can pass; a line that is not a JSON object is dropped.

Without ``follow`` tail prints what the daemon sends until the daemon says ``bye`` (it is
stopping: exit 0). When no daemon is running, tail says so and exits at once with
``EX_UNAVAILABLE`` (69); so it does when the daemon goes away without ``bye`` or closes the
connection with an error notice (too many clients, too slow a reader).

With ``follow`` (``-f``), when the daemon is not running or goes away, tail says so once on
``err`` and connects again every ``retry_interval`` until it is back. A reconnecting client
is sent the last final lines again; those already printed are not printed twice (they are
recognised by sequence number *and* text, because a restarted daemon numbers its lines from
1 again).

Either way, a socket tail may not open (EACCES/EPERM: the user is not in the socket's group)
ends tail at once with ``EX_NOPERM`` (77) and says how to join the group: waiting cannot help.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from edgecap.captions.sanitize import clean_label, clean_text
from edgecap.runtime.escape import escape_controls

EX_UNAVAILABLE = 69  # sysexits.h: no daemon to read from (and not following)
EX_NOPERM = 77  # sysexits.h: the socket may not be opened by this user

_ERASE = "\r\x1b[2K"
_INDENT = " " * len("[00:00.00] ")
_REMEMBER = 1000  # printed lines remembered, to skip them when history is sent again
_MAX_LINE = 4 * 1024 * 1024  # a protocol line longer than this is not ours: dropped
_MAX_NOTICE = 300  # characters of a notice from the daemon shown to people
_POLL = 0.25  # seconds between looks at ``stop`` while waiting for data
_ABSENT = (errno.ENOENT, errno.ECONNREFUSED)  # no socket file, or nobody listens on it
_DENIED = (errno.EACCES, errno.EPERM)


def _clock(seconds: Any) -> str:
    if not _is_number(seconds) or not 0 <= seconds < 1e9:
        return "--:--.--"
    minutes, sec = divmod(float(seconds), 60)
    return f"{int(minutes):02d}:{sec:05.2f}"


def _is_number(value: Any) -> bool:
    """A finite JSON number (``1e999`` parses as infinity; a bool is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _caption_text(value: Any) -> str:
    """Caption or translation text as the daemon would have cleaned it (escapes and
    controls removed), without a lone surrogate that no terminal encoding can write."""
    text = clean_text(value if isinstance(value, str) else str(value))
    return text if text.isprintable() else text.encode("utf-8", "ignore").decode("utf-8")


def _label(value: Any) -> str | None:
    """A language tag or speaker label: letters, digits, ``.``, ``-``, ``_`` only."""
    if not value:
        return None
    return clean_label(clean_text(value if isinstance(value, str) else str(value)))


def _notice(value: Any) -> str:
    """A text for people from the daemon (a gap's reason, an error message): escaped, short."""
    text = escape_controls(value if isinstance(value, str) else str(value))[:_MAX_NOTICE]
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates


def _local(path: Path | str) -> str:
    """A path or system message of our own, escaped all the same (``--socket`` is typed)."""
    return _notice(str(path))


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
    """A caption's translations as (language, text, final), cleaned, in the daemon's order;
    entries that are not what the protocol says are skipped."""
    entries = msg.get("translations")
    out = []
    for t in entries if isinstance(entries, list) else []:
        if isinstance(t, dict) and t.get("text"):
            text = _caption_text(t["text"])
            if text:
                out.append((_label(t.get("language")), text, bool(t.get("final"))))
    return out


def _tagged(language: str | None, text: str) -> str:
    return f"[{language}] {text}" if language else text


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _parse(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested beyond any protocol line
        return None


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
        parsed = _parse(raw)
        msg = parsed if isinstance(parsed, dict) else None
        if self.json_mode:
            self._json(msg)
        elif msg is not None and msg.get("type") == "caption":
            self._caption(msg)
        elif msg is not None and msg.get("type") == "gap":
            seconds = msg.get("seconds")
            amount = f"{seconds:.1f} s" if _is_number(seconds) and seconds < 1e12 else "some"
            reason = _notice(msg.get("reason") or "unknown")
            self._write(f"⚠ {amount} of speech lost ({reason})\n")
        return msg

    def _json(self, msg: dict[str, Any] | None) -> None:
        """The line again, in ASCII: it parses alike, and holds nothing a terminal acts on."""
        if msg is None:
            return  # not a JSON object: not a protocol line, not shown
        try:
            text = json.dumps(msg, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
        except (ValueError, RecursionError):  # NaN/Infinity, which JSON does not have
            return
        self._write(text + "\n")

    def _caption(self, msg: dict[str, Any]) -> None:
        seq = msg.get("seq")
        seq = seq if isinstance(seq, int | str) else None  # a key of ``printed``: hashable
        text = _caption_text(msg.get("text") or "")
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
            speaker = _label(msg.get("speaker"))
            who = f"S{speaker}: " if speaker else ""
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
    """Messages for people on ``err``: each situation is told once, not at every retry.
    Every text given here is already made safe (escaped) by the caller."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.told: str | None = None  # the situation last told ("absent", "refused")

    def problem(self, situation: str, text: str) -> None:
        if situation != self.told:
            self.told = situation
            self.now(text)

    def connected(self, path: Path) -> None:
        if self.told is not None:
            self.told = None
            self.now(f"connected to {_local(path)}")

    def now(self, text: str) -> None:
        self.err.write(f"edgecap tail: {text}\n")
        self.err.flush()


def run_tail(
    path: Path,
    *,
    json_mode: bool,
    out: TextIO,
    err: TextIO,
    follow: bool = False,
    stop: threading.Event | None = None,
    retry_interval: float = 1.0,
    tty: bool | None = None,
) -> int:
    """Print captions from the socket at ``path``; returns the exit status: 0 when the
    daemon said ``bye`` (not following), when ``stop`` was set or on Ctrl-C;
    ``EX_UNAVAILABLE`` when not following and there is no daemon (any more); ``EX_NOPERM``
    when the socket may not be opened. ``tty`` overrides whether ``out`` is treated as a
    terminal."""
    stop = stop or threading.Event()
    printer = _Printer(out, json_mode=json_mode, tty=_isatty(out) if tty is None else tty)
    say = _Say(err)
    try:
        status = _connect_and_read(path, printer, say, stop, follow, retry_interval)
    except KeyboardInterrupt:
        status = 0
    printer.finish()
    return status


def _connect_and_read(
    path: Path,
    printer: _Printer,
    say: _Say,
    stop: threading.Event,
    follow: bool,
    retry_interval: float,
) -> int:
    where = _local(path)
    while not stop.is_set():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            why = _local(exc.strerror or str(exc))
            if exc.errno in _DENIED:
                say.now(
                    f"permission denied: {where} (join the group edgecap: "
                    "sudo usermod -aG edgecap $USER, then log in again)"
                )
                return EX_NOPERM
            what = "edgecap is not running" if exc.errno in _ABSENT else "cannot connect"
            if not follow:
                say.now(f"{what} ({where}: {why})")
                return EX_UNAVAILABLE
            say.problem("absent", f"{what} ({where}: {why}); waiting for it…")
        else:
            with sock:
                ending = _read(sock, printer, stop, follow, lambda: say.connected(path))
            printer.finish()
            if ending is None:
                return 0  # stopped
            situation, notice = ending
            if not follow:
                if situation == "bye":
                    say.now("edgecap stopped")
                    return 0
                say.now(_gone(situation, notice))
                return EX_UNAVAILABLE
            if situation == "bye":
                say.problem("absent", "edgecap went away (it is stopping); waiting for it…")
            elif situation == "refused":
                say.problem("refused", f"{_gone(situation, notice)}; trying again…")
            else:
                say.problem("absent", "edgecap went away; waiting for it to come back…")
        stop.wait(retry_interval)
    return 0


def _gone(situation: str, notice: str | None) -> str:
    if situation == "refused":
        return f"the daemon closed the connection: {notice}"
    return "edgecap went away"


def _read(
    sock: socket.socket,
    printer: _Printer,
    stop: threading.Event,
    follow: bool,
    on_hello: Callable[[], None],
) -> tuple[str, str | None] | None:
    """Read one connection until it ends (not following: until ``bye``). Returns how it
    ended — ``bye``, ``refused`` (an error notice, escaped) or ``gone`` — or None when
    ``stop`` was set."""
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
                return ("refused", notice)
            return ("bye", None) if said_bye else ("gone", None)
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
                if not follow:
                    return ("bye", None)  # the daemon is stopping: we are done
                said_bye = True
            elif kind == "error" and msg is not None:
                notice = _notice(msg.get("message") or msg.get("error"))
    return None
