"""The stdout output: what ``edgecap run`` shows in a terminal, or JSON lines for scripts.

Captions: on a terminal the open (provisional) line is shown in place and replaced as it
changes; a final line is printed as a whole line, its translation below it once final. In a
pipe only whole final lines (and final translations) are written. JSON mode writes every
event, provisional ones included, one object per line.

The speech gate's activity (speech started / ended) is shown the same way; with a speech
service in use the daemon turns it off in text mode (``show_activity=False``) so it does not
clutter the captions.

Writing never raises into the caller: when the stream breaks (EPIPE after ``| head``, a
closed stream) the output stops writing and counts it in ``write_errors``.
"""

from __future__ import annotations

import json
import shutil
import threading
import unicodedata
from typing import TextIO

from edgecap.captions.events import AudioLoss, CaptionEvent, CaptionLine
from edgecap.runtime.speech import Activity
from edgecap.runtime.status import StatusSnapshot

CLEAR = "\r\x1b[2K"  # back to the start of the line and erase it
INDENT = " " * len("[00:00.00] ")


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


def _stamp(line: CaptionLine) -> str:
    return f"[{_clock(line.start)}] " if line.start is not None else "[--:--.--] "


def _head(line: CaptionLine) -> str:
    """``[01:02.50] S1: (en) `` — time, speaker and language of a caption line."""
    head = _stamp(line)
    if line.speaker:
        head += f"S{line.speaker}: " if line.speaker.isdigit() else f"{line.speaker}: "
    if line.language:
        head += f"({line.language}) "
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
    text = f"⚠ {loss.seconds:.1f} s of speech lost ({loss.reason})"
    if loss.start is not None and loss.end is not None:
        text += f" {_clock(loss.start)}–{_clock(loss.end)}"
    return text


def _caption_record(line: CaptionLine) -> dict[str, object]:
    return {
        "type": "caption",
        "seq": line.seq,
        "final": line.final,
        "text": line.text,
        "translation": line.translation,
        "translation_final": line.translation_final,
        "speaker": line.speaker,
        "language": line.language,
        "translation_language": line.translation_language,
        "start": _round(line.start),
        "end": _round(line.end),
        "offline": line.offline,
    }


class StdoutOutput:
    """Thread-safe: captions, activity and status may come from different threads."""

    def __init__(
        self,
        stream: TextIO,
        fmt: str = "text",
        tty: bool | None = None,
        *,
        show_activity: bool = True,
    ) -> None:
        self.stream = stream
        self.fmt = fmt
        self.tty = stream.isatty() if tty is None else tty
        self.show_activity = show_activity
        self.write_errors = 0  # writes that failed; after the first one nothing is written
        self._lock = threading.Lock()
        self._broken = False
        self._last_status = ""
        # The terminal row being shown in place (tty text mode) and whether it is a caption
        # line (redrawn below any line printed meanwhile) or an activity line (replaced).
        self._live = ""
        self._live_seq: int | None = None
        self._in_place = False
        # final lines printed whose translation is not final yet, and the seq of the caption
        # line printed last (a translation right below its line needs no time stamp)
        self._awaiting: set[int] = set()
        self._last_seq: int | None = None

    # --- speech gate activity and status --------------------------------------------------

    def activity(self, act: Activity) -> None:
        if self.fmt == "json":
            kind = "speech_start" if act.end is None else "speech_end"
            record = {"type": kind, "utterance": act.utterance, "start": round(act.start, 3)}
            if act.end is not None:
                record |= {"end": round(act.end, 3), "reason": act.reason}
            self._line(json.dumps(record, ensure_ascii=False))
        elif not self.show_activity:
            return
        elif act.end is None:
            if self.tty:
                self._write_in_place(f"● speech #{act.utterance} from {_clock(act.start)} …")
        else:
            self._line(
                f"[{_clock(act.start)} → {_clock(act.end)}] speech #{act.utterance}, "
                f"{act.end - act.start:.2f} s ({act.reason.replace('_', ' ')})"
            )

    def status(self, snap: StatusSnapshot) -> None:
        summary = snap.summary()
        with self._lock:
            if summary == self._last_status:
                return
            self._last_status = summary
        if self.fmt == "json":
            parts = {name: {"state": p.state, "detail": p.detail} for name, p in snap.parts.items()}
            self._line(json.dumps({"type": "status", "summary": summary, "parts": parts}))
        elif self.tty:
            self._line(f"· {summary}")

    # --- captions -------------------------------------------------------------------------

    def caption(self, event: CaptionEvent) -> None:
        if isinstance(event, AudioLoss):
            if self.fmt == "json":
                record = {
                    "type": "audio_loss",
                    "seconds": round(event.seconds, 3),
                    "start": _round(event.start),
                    "end": _round(event.end),
                    "reason": event.reason,
                }
                self._line(json.dumps(record, ensure_ascii=False))
            else:
                self._line(_loss_text(event))
            return
        if self.fmt == "json":
            self._line(json.dumps(_caption_record(event), ensure_ascii=False))
        elif not event.final:
            if self.tty:
                self._show_provisional(event)
        else:
            self._print_final(event)

    def _show_provisional(self, line: CaptionLine) -> None:
        width = shutil.get_terminal_size().columns
        text = _fit(_head(line), line.text, width) if line.text else ""
        with self._lock:
            self._live, self._live_seq, self._in_place = text, line.seq, True
            self._write(CLEAR + text)

    def _print_final(self, line: CaptionLine) -> None:
        with self._lock:
            rows: list[str] = []
            if line.seq not in self._awaiting:  # the first final event of this line
                if self._live_seq == line.seq:
                    self._live, self._live_seq = "", None
                if line.text:
                    rows.append(_head(line) + line.text)
                    self._last_seq = line.seq
                if not line.translation_final:
                    self._awaiting.add(line.seq)
            if line.translation_final:
                self._awaiting.discard(line.seq)
                if line.translation:
                    # right below its line it needs no time; after other lines it does
                    stamp = INDENT if self._last_seq == line.seq else _stamp(line)
                    rows.append(f"{stamp}→ {line.translation}")
                    self._last_seq = None
            if rows:
                self._rows(rows, caption_seq=line.seq)
            elif self._in_place and not self._live:
                self._write(CLEAR)  # a withdrawn line: nothing left to show in place
                self._in_place = False

    # --- writing --------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._write("\n" if self._in_place and self._live else "")  # flushes too
            self._in_place = False
            self._live, self._live_seq = "", None

    def _write_in_place(self, text: str) -> None:
        """An activity line in place: replaced by the next line, not redrawn below it."""
        with self._lock:
            self._live, self._live_seq, self._in_place = text, None, True
            self._write(CLEAR + text)

    def _line(self, text: str) -> None:
        with self._lock:
            self._rows([text])

    def _rows(self, rows: list[str], caption_seq: int | None = None) -> None:
        """Whole lines, then the in-place caption line again (called with the lock held)."""
        prefix = CLEAR if self._in_place else ""
        if caption_seq is None:
            self._last_seq = None
        if self._live_seq is None:  # an activity line in place is replaced, not redrawn
            self._live = ""
        redraw = CLEAR + self._live if self._live else ""
        self._in_place = bool(redraw)
        self._write(prefix + "\n".join(rows) + "\n" + redraw)

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self._broken = True
            self.write_errors += 1
