"""The stdout output: what ``edgecap run`` shows in a terminal, or JSON lines for scripts.

Until a speech service is connected, what there is to show is the speech gate's activity:
when speech started and ended. On a terminal the current utterance is shown in place and
replaced by its summary line when it ends; in a pipe only whole lines are written.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from typing import TextIO

from edgecap.daemon.status import StatusSnapshot


@dataclass(frozen=True)
class Activity:
    """The gate's view of one utterance: ``end`` is None while it goes on."""

    utterance: int
    start: float  # seconds since the source opened (sample-accurate)
    end: float | None = None
    reason: str = ""


def _clock(seconds: float) -> str:
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes):02d}:{sec:05.2f}"


class StdoutOutput:
    def __init__(self, stream: TextIO, fmt: str = "text", tty: bool | None = None) -> None:
        self.stream = stream
        self.fmt = fmt
        self.tty = stream.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._in_place = False
        self._last_status = ""

    def activity(self, act: Activity) -> None:
        if self.fmt == "json":
            kind = "speech_start" if act.end is None else "speech_end"
            record = {"type": kind, "utterance": act.utterance, "start": round(act.start, 3)}
            if act.end is not None:
                record |= {"end": round(act.end, 3), "reason": act.reason}
            self._line(json.dumps(record, ensure_ascii=False))
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
        if summary == self._last_status:
            return
        self._last_status = summary
        if self.fmt == "json":
            parts = {name: {"state": p.state, "detail": p.detail} for name, p in snap.parts.items()}
            self._line(json.dumps({"type": "status", "summary": summary, "parts": parts}))
        elif self.tty:
            self._line(f"· {summary}")

    def close(self) -> None:
        with self._lock:
            if self._in_place:
                self.stream.write("\n")
                self._in_place = False
            with contextlib.suppress(OSError, ValueError):
                self.stream.flush()

    def _write_in_place(self, text: str) -> None:
        with self._lock:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._in_place = True

    def _line(self, text: str) -> None:
        with self._lock:
            prefix = "\r\x1b[2K" if self._in_place else ""
            self._in_place = False
            self.stream.write(prefix + text + "\n")
            self.stream.flush()
