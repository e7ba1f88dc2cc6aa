"""Transcripts on disk: JSON Lines, WebVTT and SRT, one set of files per day or per run.

A caption is written once it is done (its text and its translation are final), or, if a
translation never finalizes, ``TRANSLATION_WAIT`` seconds after the text did. Files are
only ever appended to and flushed after every caption, so each one is a valid file at every
moment: a power cut loses at most the caption being written. A set is named by its start
(``2026-11-22`` per day, ``2026-11-22T09-14-03`` per run); a file past ``max_size`` is
continued in ``…-2.jsonl`` and so on; sets beyond ``keep`` are deleted, oldest first (only
files whose names this output writes). Cue times in VTT/SRT are capture time relative to
the set's first caption, so a set plays against the recording of that day or run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.daemon.status import StatusSnapshot
from edgecap.outputs.base import OutputEvent, OutputUnavailable

log = logging.getLogger(__name__)

TRANSLATION_WAIT = 10.0  # seconds a final line waits for its translation to finalize
MIN_CUE = 1.0  # a cue without an end lasts at least this long
NAME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}(?:T\d{2}-\d{2}-\d{2})?)(?:-(\d+))?\.(jsonl|vtt|srt)$")


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class TranscriptOutput:
    name = "transcript"
    idle_interval = 1.0

    def __init__(
        self,
        directory: Path,
        *,
        formats: tuple[str, ...] = ("jsonl", "vtt", "srt"),
        split: str = "day",
        max_size: int = 50 * 1024**2,
        keep: int = 90,
        clock: Callable[[], float] = time.time,
        started_at: float | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.formats = formats
        self.split = split
        self.max_size = max_size
        self.keep = keep
        self.clock = clock
        self.started_at = clock() if started_at is None else started_at
        self._files: dict[str, TextIO] = {}
        self._set = ""  # the current set's name
        self._part = 1
        self._origin: float | None = None  # capture time of the set's first caption
        self._cue = 0  # SRT cue number in the current file
        self._last_end = 0.0  # cues never overlap or go back
        self._waiting: OrderedDict[int, tuple[CaptionLine, float]] = OrderedDict()
        self._done: OrderedDict[int, None] = OrderedDict()  # seqs written (the newest 1000)
        self.written = 0

    # --- Output -----------------------------------------------------------------------
    def open(self) -> None:
        try:
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            probe = self.directory / ".edgecap-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise OutputUnavailable(
                f"cannot write transcripts in {self.directory}: {exc.strerror or exc}"
            ) from None

    def handle(self, event: OutputEvent) -> None:
        if isinstance(event, CaptionLine):
            if not event.final:
                return
            if event.seq in self._done:
                return  # written already (its translation came too late)
            if event.done:
                self._waiting.pop(event.seq, None)
                if event.text or event.translation:
                    self._write_caption(event)
            else:
                first = self._waiting.get(event.seq, (event, self.clock()))[1]
                self._waiting[event.seq] = (event, first)
        elif isinstance(event, AudioLoss):
            self._write_gap(event)
        elif isinstance(event, StatusSnapshot):
            return
        self.idle(time.monotonic())

    def idle(self, now: float) -> None:
        wall = self.clock()
        while self._waiting:
            seq, (line, since) = next(iter(self._waiting.items()))
            if wall - since < TRANSLATION_WAIT:
                break
            del self._waiting[seq]
            self._write_caption(line)
        if self._files and self._set != self._set_name(wall):
            self._close_files()  # a new day

    def close(self) -> None:
        for line, _ in list(self._waiting.values()):
            try:
                self._write_caption(line)
            except OutputUnavailable:
                break
        self._waiting.clear()
        self._close_files()

    # --- files ------------------------------------------------------------------------
    def _set_name(self, wall: float) -> str:
        if self.split == "day":
            return dt.datetime.fromtimestamp(wall).strftime("%Y-%m-%d")
        return dt.datetime.fromtimestamp(self.started_at).strftime("%Y-%m-%dT%H-%M-%S")

    def _path(self, fmt: str) -> Path:
        suffix = f"-{self._part}" if self._part > 1 else ""
        return self.directory / f"{self._set}{suffix}.{fmt}"

    def _ensure_files(self, wall: float) -> None:
        name = self._set_name(wall)
        if self._files and name == self._set:
            if all(f.tell() < self.max_size for f in self._files.values()):
                return
            self._close_files()
            self._part += 1
        elif name != self._set:
            self._close_files()
            self._set, self._part, self._origin, self._last_end = name, 1, None, 0.0
            while any(self._path(f).exists() for f in self.formats):
                self._part += 1  # a restart the same day: continue in a new part
        self._open_files()
        self._prune()

    def _open_files(self) -> None:
        try:
            for fmt in self.formats:
                path = self._path(fmt)
                f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
                os.chmod(path, 0o640)
                if fmt == "vtt" and f.tell() == 0:
                    f.write("WEBVTT\n\n")
                self._files[fmt] = f
        except OSError as exc:
            self._close_files()
            raise OutputUnavailable(f"cannot write transcripts: {exc.strerror or exc}") from None
        self._cue = 0

    def _close_files(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except OSError:
                log.warning("closing a transcript file failed", exc_info=True)
        self._files.clear()

    def _prune(self) -> None:
        sets: dict[str, list[Path]] = {}
        for path in self.directory.iterdir():
            match = NAME_RE.match(path.name)
            if match:
                sets.setdefault(match.group(1), []).append(path)
        for name in sorted(sets)[: max(0, len(sets) - self.keep)]:
            for path in sets[name]:
                try:
                    path.unlink()
                except OSError:
                    log.warning("could not delete old transcript %s", path)

    def _append(self, fmt: str, text: str) -> None:
        f = self._files.get(fmt)
        if f is None:
            return
        try:
            f.write(text)
            f.flush()
        except OSError as exc:
            self._close_files()
            raise OutputUnavailable(f"cannot write transcripts: {exc.strerror or exc}") from None

    # --- records ----------------------------------------------------------------------
    def _times(self, line: CaptionLine) -> tuple[float, float]:
        start = line.start if line.start is not None else self.clock() - self.started_at
        if self._origin is None:
            self._origin = start
        rel = max(start - self._origin, self._last_end)
        end = line.end - self._origin if line.end is not None else rel + MIN_CUE
        end = max(end, rel + 0.1)
        self._last_end = end
        return rel, end

    def _write_caption(self, line: CaptionLine) -> None:
        wall = self.clock()
        self._ensure_files(wall)
        when = self.started_at + line.start if line.start is not None else wall
        record = {
            "seq": line.seq,
            "start": line.start,
            "end": line.end,
            "wall": dt.datetime.fromtimestamp(when).astimezone().isoformat(timespec="milliseconds"),
            "speaker": line.speaker,
            "language": line.language,
            "text": line.text,
            "translation": line.translation or None,
            "translation_language": line.translation_language,
        }
        start, end = self._times(line)
        self._append("jsonl", json.dumps(record, ensure_ascii=False) + "\n")
        body = [line.text] if line.text else []
        if line.translation:
            body.append(line.translation)
        voice = f"<v Speaker {line.speaker}>" if line.speaker else ""
        vtt = "\n".join(voice + _vtt_escape(b) for b in body)
        self._append("vtt", f"{_stamp(start, '.')} --> {_stamp(end, '.')}\n{vtt}\n\n")
        self._cue += 1
        srt = "\n".join(body)
        self._append("srt", f"{self._cue}\n{_stamp(start, ',')} --> {_stamp(end, ',')}\n{srt}\n\n")
        self.written += 1
        self._done[line.seq] = None
        while len(self._done) > 1000:
            self._done.popitem(last=False)

    def _write_gap(self, loss: AudioLoss) -> None:
        self._ensure_files(self.clock())
        record = {
            "type": "gap",
            "seconds": round(loss.seconds, 3),
            "start": loss.start,
            "end": loss.end,
            "reason": loss.reason,
        }
        self._append("jsonl", json.dumps(record) + "\n")
