"""The stdout output: what ``edgecap run`` shows in a terminal, or JSON lines for scripts.

Captions: on a terminal the open (provisional) line is shown in place and replaced as it
changes; a final line is printed as a whole line, its translations below it, each on a row
of its own with its language tag (``→ (de) …``), once they are final. In a pipe only whole
final lines (and final translations) are written. JSON mode writes every event, provisional
ones included, one object per line; a caption's ``translations`` is an object language →
text. ``translations`` (``[stdout] translations``) chooses the languages shown, in that
order; empty: all of a line's.

The speech gate's activity (speech started / ended) is shown the same way; with a speech
service in use the daemon turns it off in text mode (``show_activity=False``) so it does not
clutter the captions.

Like every output it runs behind an OutputWorker and its coalescing queue, so a reader that
stops reading (a paused pager, a terminal stopped with Ctrl-S) never holds up the link or
the capture. Writing never blocks either: on a real file descriptor the output writes at
most ``CHUNK`` bytes at a time, and only when poll says the pipe or terminal can take
them. While the reader is stalled the output is ``busy``: the worker leaves events queued,
where provisional lines coalesce and finals wait in order (when a stall makes the queue
coalesce a speech start away, the JSON speech_start is written just before its speech_end,
so the pairs stay whole), and sleeps in ``wait_io`` until the reader takes more (or stop).

Nothing it prints acts on the terminal: local text (status details such as the audio
source's name — a WAV file may be called ``a\\x1b[2Jb.wav`` —, loss and speech-end reasons)
shows its control characters as visible escapes (``runtime/escape.py``); caption text,
already cleaned by the board, is cleaned again here (``clean_text``: a fast path when there
is nothing to clean) so that no other way in can reach the terminal raw. JSON status and
loss records are written in ASCII (``\\u`` escapes), so a C1 control or a bidi override in a
name cannot pass either; caption records keep their (clean) text as it is.

Writing never raises into the caller: when the stream breaks (EPIPE after ``| head``, a
closed stream) the output stops writing and counts it in ``write_errors``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import shutil
import time
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.captions.sanitize import clean_text
from edgecap.outputs.base import ACTIVITY, DEFAULT_TAKES, FINAL, LOSS, OutputEvent
from edgecap.outputs.rollup import choose_translations
from edgecap.runtime.escape import escape_controls
from edgecap.runtime.speech import Activity
from edgecap.runtime.status import StatusSnapshot

if TYPE_CHECKING:
    from edgecap.config.schema import StdoutConfig

CLEAR = "\r\x1b[2K"  # back to the start of the line and erase it
INDENT = " " * len("[00:00.00] ")
# Written at once when poll says there is room: a pipe with any room takes up to PIPE_BUF
# (4096) bytes without blocking; a terminal says it has room while it has any, and a
# caption row is shorter than this.
CHUNK = 512
CLOSE_WAIT = 0.2  # at close, how long the stream may take to accept what is left


def _clock(seconds: float) -> str:
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes):02d}:{sec:05.2f}"


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _columns(text: str) -> int:
    """Terminal columns ``text`` takes: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _last_columns(text: str, width: int) -> str:
    """The longest end of ``text`` that fits in ``width`` columns."""
    used = 0
    for i in range(len(text) - 1, -1, -1):
        used += _columns(text[i])
        if used > width:
            return text[i + 1 :]
    return text


def _clean(text: str) -> str:
    """Caption text, cleaned again (the board did it): never cut, fast when clean."""
    return clean_text(text, len(text))


def _stamp(line: CaptionLine) -> str:
    return f"[{_clock(line.start)}] " if line.start is not None else "[--:--.--] "


def _head(line: CaptionLine) -> str:
    """``[01:02.50] S1: (en) `` — time, speaker and language of a caption line."""
    head = _stamp(line)
    speaker, language = _clean(line.speaker or ""), _clean(line.language or "")
    if speaker:
        head += f"S{speaker}: " if speaker.isdigit() else f"{speaker}: "
    if language:
        head += f"({language}) "
    return head


def _fit(head: str, text: str, width: int) -> str:
    """One terminal row: when too long, the end of the text is kept (the newest words)."""
    room = max(width - 1, 1)  # never the last column: some terminals wrap there
    if _columns(head + text) <= room:
        return head + text
    if _columns(head) + 2 > room:
        return _last_columns(head + text, room)
    return head + "…" + _last_columns(text, room - _columns(head) - 1)


def _loss_text(loss: AudioLoss) -> str:
    text = f"⚠ {loss.seconds:.1f} s of speech lost ({escape_controls(loss.reason)})"
    if loss.start is not None and loss.end is not None:
        text += f" {_clock(loss.start)}–{_clock(loss.end)}"
    return text


class StdoutOutput:
    """The ``stdout`` output (see the module docstring). ``tty`` (default: the stream's
    isatty()) chooses in-place provisional lines; ``translations`` the languages shown."""

    name = "stdout"

    def __init__(
        self,
        stream: TextIO,
        fmt: str = "text",
        tty: bool | None = None,
        *,
        show_activity: bool = True,
        translations: Sequence[str] = (),
    ) -> None:
        self.stream = stream
        self.fmt = fmt
        self.tty = stream.isatty() if tty is None else tty
        self.show_activity = show_activity
        self.languages = tuple(translations)
        # Text in a pipe is whole final lines: provisional text and status are not given.
        self.takes = (
            DEFAULT_TAKES if fmt == "json" or self.tty else frozenset({FINAL, LOSS, ACTIVITY})
        )
        self.write_errors = 0  # writes that failed; after the first one nothing is written
        self._broken = False
        self._fd: int | None = None  # written directly (poll + os.write) when there is one
        self._poll: select.poll | None = None
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._pending = bytearray()  # written, not yet taken by the stream
        self._last_status = ""
        # The terminal row being shown in place (tty text mode) and whether it is a caption
        # line (redrawn below any line printed meanwhile) or an activity line (replaced).
        self._live = ""
        self._live_seq: int | None = None
        self._in_place = False
        # final lines printed whose translations are not final yet, and the seq of the
        # caption line printed last (a translation right below its line needs no time stamp)
        self._awaiting: set[int] = set()
        self._last_seq: int | None = None
        self._started: int | None = None  # the utterance whose JSON speech_start went out

    @classmethod
    def from_config(
        cls, cfg: StdoutConfig, stream: TextIO, *, show_activity: bool = True
    ) -> StdoutOutput:
        return cls(stream, cfg.format, show_activity=show_activity, translations=cfg.translations)

    # --- Output -----------------------------------------------------------------------------

    def open(self) -> None:
        """Write straight to the stream's file descriptor from now on (what Python buffered
        goes first); a stream without one (a StringIO) is written as it is."""
        try:
            fd = self.stream.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation is both
            return
        self._flush_stream()
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLOUT)

    def handle(self, event: OutputEvent) -> None:
        if isinstance(event, StatusSnapshot):
            self._status(event)
        elif isinstance(event, Activity):
            self._activity(event)
        elif isinstance(event, AudioLoss | CaptionLine):
            self._caption(event)
        self._flush(0.0)

    def idle(self, now: float) -> None:
        if self._pending:
            self._flush(0.0)

    def wake_in(self, now: float) -> float | None:
        return None  # no timed work; a stalled reader wakes us through wait_io

    def wait_io(self, timeout: float | None, wake_fd: int) -> None:
        """Sleep until ``wake_fd`` is readable or ``timeout`` passed; while output waits
        for the reader, also until the stream can take more."""
        poller = select.poll()
        poller.register(wake_fd, select.POLLIN)
        if self._pending and self._fd is not None and not self._broken:
            poller.register(self._fd, select.POLLOUT)
        poller.poll(None if timeout is None else math.ceil(timeout * 1000))

    @property
    def busy(self) -> bool:
        """The stream has not taken everything yet (its reader is slow or stopped)."""
        return bool(self._pending) and not self._broken

    def close(self) -> None:
        self._write("\n" if self._in_place and self._live else "")
        self._in_place = False
        self._live, self._live_seq = "", None
        self._flush(CLOSE_WAIT)
        self._pending.clear()  # a reader that takes nothing more gets nothing more
        if self._fd is not None:
            self._fd = self._poll = None
        else:
            self._flush_stream()

    # --- speech gate activity and status ----------------------------------------------------

    def _activity(self, act: Activity) -> None:
        if self.fmt == "json":
            if act.end is not None and self._started != act.utterance:
                self._activity(Activity(act.utterance, act.start))  # coalesced away: write it
            kind = "speech_start" if act.end is None else "speech_end"
            record = {"type": kind, "utterance": act.utterance, "start": round(act.start, 3)}
            if act.end is not None:
                record |= {"end": round(act.end, 3), "reason": act.reason}
            else:
                self._started = act.utterance
            self._line(json.dumps(record, ensure_ascii=False))
        elif not self.show_activity:
            return
        elif act.end is None:
            if self.tty:
                self._write_in_place(f"● speech #{act.utterance} from {_clock(act.start)} …")
        else:
            self._line(
                f"[{_clock(act.start)} → {_clock(act.end)}] speech #{act.utterance}, "
                f"{act.end - act.start:.2f} s ({escape_controls(act.reason.replace('_', ' '))})"
            )

    def _status(self, snap: StatusSnapshot) -> None:
        summary = snap.summary()
        if summary == self._last_status:
            return
        self._last_status = summary
        if self.fmt == "json":
            parts = {name: {"state": p.state, "detail": p.detail} for name, p in snap.parts.items()}
            # ASCII (the default): details name files and devices, which may hold anything
            self._line(json.dumps({"type": "status", "summary": summary, "parts": parts}))
        elif self.tty:
            self._line(f"· {escape_controls(summary)}")

    # --- captions ---------------------------------------------------------------------------

    def _caption(self, event: AudioLoss | CaptionLine) -> None:
        if isinstance(event, AudioLoss):
            if self.fmt == "json":
                record = {
                    "type": "audio_loss",
                    "seconds": round(event.seconds, 3),
                    "start": _round(event.start),
                    "end": _round(event.end),
                    "reason": event.reason,
                }
                self._line(json.dumps(record))  # ASCII: the reason is local text
            else:
                self._line(_loss_text(event))
            return
        if self.fmt == "json":
            self._line(json.dumps(self._record(event), ensure_ascii=False))
        elif not event.final:
            if self.tty:
                self._show_provisional(event)
        else:
            self._print_final(event)

    def _record(self, line: CaptionLine) -> dict[str, object]:
        return {
            "type": "caption",
            "seq": line.seq,
            "final": line.final,
            "text": _clean(line.text),
            "translations": {
                lang: _clean(text)
                for lang, text in choose_translations(line.translations, self.languages)
            },
            "translation_final": line.translation_final,
            "speaker": line.speaker and _clean(line.speaker),
            "language": line.language and _clean(line.language),
            "start": _round(line.start),
            "end": _round(line.end),
            "offline": line.offline,
        }

    def _show_provisional(self, line: CaptionLine) -> None:
        width = shutil.get_terminal_size().columns
        text = _fit(_head(line), _clean(line.text), width) if line.text else ""
        self._live, self._live_seq, self._in_place = text, line.seq, True
        self._write(CLEAR + text)

    def _print_final(self, line: CaptionLine) -> None:
        rows: list[str] = []
        if line.seq not in self._awaiting:  # the first final event of this line
            if self._live_seq == line.seq:
                self._live, self._live_seq = "", None
            if line.text:
                rows.append(_head(line) + _clean(line.text))
                self._last_seq = line.seq
            if not line.translation_final:
                self._awaiting.add(line.seq)
        if line.translation_final:
            self._awaiting.discard(line.seq)
            # right below its line they need no time; after other lines the first does
            stamp = INDENT if self._last_seq == line.seq else _stamp(line)
            for lang, text in choose_translations(line.translations, self.languages):
                tag = f"({_clean(lang)}) " if lang else ""
                rows.append(f"{stamp}→ {tag}{_clean(text)}")
                stamp = INDENT
                self._last_seq = None
        if rows:
            self._rows(rows, caption_seq=line.seq)
        elif self._in_place and not self._live:
            self._write(CLEAR)  # a withdrawn line: nothing left to show in place
            self._in_place = False

    # --- writing ----------------------------------------------------------------------------

    def _write_in_place(self, text: str) -> None:
        """An activity line in place: replaced by the next line, not redrawn below it."""
        self._live, self._live_seq, self._in_place = text, None, True
        self._write(CLEAR + text)

    def _line(self, text: str) -> None:
        self._rows([text])

    def _rows(self, rows: list[str], caption_seq: int | None = None) -> None:
        """Whole lines, then the in-place caption line again."""
        prefix = CLEAR if self._in_place else ""
        if caption_seq is None:
            self._last_seq = None
        if self._live_seq is None:  # an activity line in place is replaced, not redrawn
            self._live = ""
        redraw = CLEAR + self._live if self._live else ""
        self._in_place = bool(redraw)
        self._write(prefix + "\n".join(rows) + "\n" + redraw)

    def _write(self, text: str) -> None:
        if self._broken or not text:
            return
        if self._fd is None:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                self._failed()
            return
        self._pending += text.encode(self._encoding, "replace")

    def _flush(self, wait: float) -> None:
        """Hand the stream what is pending, waiting up to ``wait`` seconds for room."""
        if self._fd is None or self._poll is None:
            return
        deadline = time.monotonic() + wait
        while self._pending and not self._broken:
            timeout = max(0.0, deadline - time.monotonic())
            if not self._poll.poll(timeout * 1000):
                return  # no room now: the reader is slow or stopped
            try:
                n = os.write(self._fd, self._pending[:CHUNK])
            except BlockingIOError:  # a stream that is non-blocking itself: try later
                return
            except OSError:  # EPIPE: the reader is gone (`| head`), or the fd was closed
                self._failed()
                return
            del self._pending[:n]

    def _flush_stream(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def _failed(self) -> None:
        self._broken = True
        self.write_errors += 1
        self._pending.clear()
