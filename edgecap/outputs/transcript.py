"""Transcripts on disk: JSON Lines, WebVTT and SRT, one set of files per day or per run.

What is written: every caption line once it is done (its text and its translations final);
a line whose translations never finalize is written ``TRANSLATION_WAIT`` seconds after its
text did (or at close). Lines are written in the order their text became final, so a done
line waits behind an older one still waiting for its translations. Audio losses are
``{"type": "gap"}`` records in the JSONL and ``NOTE`` blocks in the VTT.

Translations: ``[transcript] translations`` chooses the languages written and their order
(empty: every language the line has, in the board's order: the service's targets first).
A JSONL record carries them as ``"translations": {"de": "…", "fr": "…"}`` ("" is the key of
a translation whose language the service did not name), and, for readers of the records
before several translations existed, ``translation``/``translation_language``: the first of
them (deprecated; to be removed). A VTT/SRT cue shows the line, then each translation on a
row of its own, tagged with its language (``[de] …``). A translation-only line (no text) is
its translations alone; a line with neither text nor a chosen translation is not written.

Files (``split = day``: ``2026-11-22.jsonl``; ``split = session``:
``2026-11-22T09-14-03.jsonl``, the run's start): a file that would grow past ``max_size``
is continued in ``2026-11-22-2.jsonl`` and so on (all formats move on together, so a part
holds the same captions in each format). Sets beyond ``keep`` are deleted, oldest first,
and only files whose names match that pattern. A run that finds its set's files (a restart
the same day) appends to the last part.

Crash safety: files are only appended to, one ``write`` per record, and every record is
``fdatasync``-ed, so each file is valid at every moment and a kill or a power cut loses
only what was not written yet: the caption being written and any still waiting for their
translation (at most ``TRANSLATION_WAIT`` seconds' worth). A record cut short (a kill
mid-write, a full disk) is cut off when the file is next opened: a JSONL file ends at its
last newline, a VTT/SRT file at its last complete cue. A caption whose write failed stays
queued and is written again, once per format, after the worker reopens the output.

Times: ``start``/``end`` are capture seconds. The wall-clock time of a caption is the
run's start (``started_at``) plus its capture time, so a caption written late (replayed
after an outage, queued while the disk was away) still gets the time it was spoken. Two
corrections: when the wall clock is stepped (a Pi without a clock battery gets its time
from the network after edgecap started) the start moves with it, and a caption that would
lie in the future (an output made mid-run without ``started_at``) re-anchors the start on
the wall clock. Cue times in a daily set are seconds since local midnight (a cue at
09:14:03 was spoken at 09:14:03); in a per-run set they are capture seconds since the run
started. Cues never overlap and never go back in time.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.schema import TranscriptConfig
from edgecap.outputs.base import FINAL, LOSS, OutputEvent, OutputUnavailable

log = logging.getLogger(__name__)

TRANSLATION_WAIT = 10.0  # seconds a final line waits for its translation to finalize
CLOCK_STEP = 1.0  # the wall clock moving this much against the monotonic one is a step
CLOCK_BEHIND = 60.0  # a caption this far in the future by the wall clock: re-anchor
MIN_FREE = 1024 * 1024  # bytes free below which the disk counts as full at open()
TAIL = 64 * 1024  # bytes read from the end of an existing file to find its last record
CUE_MIN = 0.5  # seconds a cue lasts at least
CUE_ESTIMATE = (1.5, 7.0)  # bounds of the display time guessed for a cue without an end
READING_RATE = 15.0  # characters per second, for that guess
WRITTEN_MEMORY = 4096  # seqs remembered as written (late updates of them are ignored)

VTT_HEADER = b"WEBVTT\n\n"
NAME = re.compile(
    r"(?P<set>\d{4}-\d{2}-\d{2}(?:T\d{2}-\d{2}-\d{2})?)(?:-(?P<part>\d+))?\.(?P<fmt>jsonl|vtt|srt)"
)
_CUE_END = re.compile(rb"--> *(\d+):(\d{2}):(\d{2})[.,](\d{3})")
_SRT_NUMBER = re.compile(rb"(?:^|\n)(\d+)\n\d+:\d{2}:\d{2},\d{3} -->")
_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
}


def _stamp(seconds: float, sep: str) -> str:
    """``HH:MM:SS.mmm`` (VTT, sep ``.``) or ``HH:MM:SS,mmm`` (SRT)."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _one_line(text: str) -> str:
    """Text for a cue line: any line break or run of spaces becomes one space (a blank
    line inside a cue would end it), and ``-->`` cannot be taken for a timing line."""
    return " ".join(text.split()).replace("-->", "->")


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _who(speaker: str) -> str:
    return f"Speaker {speaker}" if speaker.isdigit() else speaker


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds")


def _json(record: dict[str, Any]) -> bytes:
    # "replace": a lone surrogate from a service must not make a caption unwritable
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "replace")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass
class _Part:
    """The open files of one part of one set."""

    set_name: str
    part: int
    fds: dict[str, int]
    sizes: dict[str, int]
    srt_cues: int = 0  # cues in this part's SRT file
    last_end: float = 0.0  # end of the last cue found in this part's files when opened


@dataclass
class _Entry:
    """A record waiting to be written (or half written: ``done`` holds its formats)."""

    event: CaptionLine | AudioLoss
    since: float  # monotonic clock when it became final
    done: set[str] = field(default_factory=set)
    wall: float | None = None
    cue: tuple[str, float, float] | None = None  # set name, start, end: fixed once chosen


class TranscriptOutput:
    """The ``transcript`` output (see the module docstring). It is given final lines and
    losses only, and wakes between them only when a line waiting for its translation is due
    (``TRANSLATION_WAIT``): the day a record goes into, and the part it starts, are chosen
    when it is written."""

    name = "transcript"
    takes = frozenset({FINAL, LOSS})

    def __init__(
        self,
        cfg: TranscriptConfig,
        *,
        clock: Callable[[], float] = time.time,
        started_at: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` is the wall clock; ``started_at`` the wall-clock time capture time 0
        stands for (when the audio source opened; default: now); ``monotonic`` times the
        translation wait and tells a step of the wall clock from time passing."""
        self.cfg = cfg
        self.directory = Path(cfg.directory)
        self.formats = tuple(f for f in ("jsonl", "vtt", "srt") if f in cfg.formats)
        self.clock = clock
        self.monotonic = monotonic
        self.started_at = clock() if started_at is None else started_at
        self._anchor = self.started_at  # wall clock of capture time 0
        self._offset = clock() - monotonic()  # changes only when the wall clock is stepped
        self._session = dt.datetime.fromtimestamp(self.started_at).strftime("%Y-%m-%dT%H-%M-%S")
        self._files: _Part | None = None
        self._set_name: str | None = None  # the set written last
        self._last_end = 0.0  # end of the last cue of that set
        self._queue: deque[_Entry] = deque()
        self._by_seq: dict[int, _Entry] = {}
        self._written: OrderedDict[int, None] = OrderedDict()
        self.written = 0  # records written
        self.late = 0  # final translations that came after their line was written

    # --- Output -----------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "permission denied")
            st = os.statvfs(self.directory)
            if st.f_bavail * st.f_frsize < MIN_FREE:
                raise OSError(errno.ENOSPC, "no space left on device")
        except OSError as exc:
            raise OutputUnavailable(self._why(exc)) from None

    def handle(self, event: OutputEvent) -> None:
        if isinstance(event, CaptionLine):
            if not event.final:
                return
            if event.seq in self._written:
                if event.done:
                    self.late += 1
                    log.debug("transcript: translation of line %d came too late", event.seq)
                return
            self._check_clock(event)
            entry = self._by_seq.get(event.seq)
            if entry is None:
                entry = _Entry(event, since=self.monotonic())
                self._queue.append(entry)
                self._by_seq[event.seq] = entry
            elif not entry.done:
                entry.event = event
        elif isinstance(event, AudioLoss):
            self._check_clock(None)
            self._queue.append(_Entry(event, since=self.monotonic()))
        else:
            return
        self._flush(force=False)

    def idle(self, now: float) -> None:
        self._check_clock(None)
        self._flush(force=False)

    def wake_in(self, now: float) -> float | None:
        """When the oldest line waiting for its translation is written without it (lines
        are written in order: the others wait behind it); None when nothing waits."""
        if not self._queue:
            return None
        return max(0.0, self._queue[0].since + TRANSLATION_WAIT - self.monotonic())

    def close(self) -> None:
        """Writes what still waits for its translation, then closes the files."""
        try:
            self._flush(force=True)
        except OutputUnavailable as exc:
            log.debug("transcript: %d records not written at close: %s", len(self._queue), exc)
        self._close_files()

    # --- what is written when -----------------------------------------------------------

    def _ready(self, entry: _Entry, now: float) -> bool:
        event = entry.event
        if isinstance(event, AudioLoss) or event.done:
            return True
        return now - entry.since >= TRANSLATION_WAIT

    def _flush(self, *, force: bool) -> None:
        now = self.monotonic()
        while self._queue and (force or self._ready(self._queue[0], now)):
            entry = self._queue[0]
            self._write(entry)
            self._queue.popleft()
            if isinstance(entry.event, CaptionLine):
                seq = entry.event.seq
                del self._by_seq[seq]
                self._written[seq] = None
                if len(self._written) > WRITTEN_MEMORY:
                    self._written.popitem(last=False)

    def _check_clock(self, line: CaptionLine | None) -> None:
        """Keep the wall-clock time of capture time 0 right (see the module's docstring).

        A caption written long after it was spoken is normal (a replay after an outage), so
        only a step of the wall clock or a caption from the future moves the anchor."""
        now = self.clock()
        offset = now - self.monotonic()
        step = offset - self._offset
        if abs(step) >= CLOCK_STEP:
            self._offset = offset
            self._anchor += step
            log.info("transcript: the wall clock was set %+.1f s; caption times follow", step)
        at = None if line is None else line.end if line.end is not None else line.start
        if at is not None and now - (self._anchor + at) < -CLOCK_BEHIND:
            log.info(
                "transcript: capture time %.1f s lies %.0f s in the future; caption times "
                "follow the wall clock from now on",
                at,
                self._anchor + at - now,
            )
            self._anchor = now - at

    # --- records ------------------------------------------------------------------------

    def _wall(self, capture: float | None) -> float:
        return self.clock() if capture is None else self._anchor + capture

    def _set_for(self, wall: float) -> str:
        if self.cfg.split == "session":
            return self._session
        name = dt.datetime.fromtimestamp(wall).strftime("%Y-%m-%d")
        # a line spoken before midnight but written after it goes to the new day: files
        # are appended to in order, never reopened for an older day
        if self._set_name is not None and name < self._set_name:
            return self._set_name
        return name

    def _translations(self, line: CaptionLine) -> dict[str, str]:
        """The line's translations this output writes, in the order it writes them."""
        have = {lang: text for lang, text in line.translations.items() if text.strip()}
        chosen = self.cfg.translations
        return {lang: have[lang] for lang in chosen if lang in have} if chosen else have

    def _cue_times(self, line: CaptionLine, set_name: str) -> tuple[float, float]:
        """Start and end of the cue, in seconds since the set began, after the last cue."""
        longest = max(len(t) for t in (line.text, *self._translations(line).values()))
        guess = min(CUE_ESTIMATE[1], max(CUE_ESTIMATE[0], longest / READING_RATE))
        start, end = line.start, line.end
        if start is None and end is None:
            end = self.clock() - self._anchor
        if start is None:
            assert end is not None
            start = end - guess
        if end is None:
            end = start + guess
        shift = 0.0
        if self.cfg.split == "day":
            midnight = dt.datetime.strptime(set_name, "%Y-%m-%d").timestamp()
            shift = self._anchor - midnight
        start = max(start + shift, self._last_end, 0.0)
        end = max(end + shift, start + CUE_MIN)
        self._last_end = end
        return start, end

    def _payloads(self, entry: _Entry, files: _Part) -> dict[str, bytes]:
        event = entry.event
        assert entry.wall is not None
        wall = _iso(entry.wall)
        if isinstance(event, AudioLoss):
            reason = _one_line(event.reason)
            return {
                "jsonl": _json(
                    {
                        "type": "gap",
                        "seconds": _round(event.seconds),
                        "start": _round(event.start),
                        "end": _round(event.end),
                        "wall": wall,
                        "reason": event.reason,
                    }
                ),
                "vtt": f"NOTE audio lost: {event.seconds:.1f} s ({reason})\n\n".encode(
                    "utf-8", "replace"
                ),
            }
        translations = self._translations(event)
        first = next(iter(translations.items()), None)
        out = {
            "jsonl": _json(
                {
                    "seq": event.seq,
                    "start": _round(event.start),
                    "end": _round(event.end),
                    "wall": wall,
                    "speaker": event.speaker,
                    "language": event.language,
                    "text": event.text,
                    "translations": translations,
                    # deprecated (the records before several translations): the first one
                    "translation": first[1] if first else None,
                    "translation_language": (first[0] or None) if first else None,
                }
            )
        }
        rows = [_one_line(event.text)] + [
            f"[{lang}] {_one_line(text)}" if lang else _one_line(text)
            for lang, text in translations.items()
        ]
        rows = [r for r in rows if r]
        if not rows:
            return out
        if entry.cue is None or entry.cue[0] != files.set_name:
            entry.cue = (files.set_name, *self._cue_times(event, files.set_name))
        _, start, end = entry.cue
        voice = f"<v {_vtt_escape(_who(event.speaker))}>" if event.speaker else ""
        vtt = "\n".join(_vtt_escape(r) for r in rows)
        out["vtt"] = f"{_stamp(start, '.')} --> {_stamp(end, '.')}\n{voice}{vtt}\n\n".encode(
            "utf-8", "replace"
        )
        srt = "\n".join(rows)
        if event.speaker:
            srt = f"{_who(event.speaker)}: {srt}"
        out["srt"] = (
            f"{files.srt_cues + 1}\n{_stamp(start, ',')} --> {_stamp(end, ',')}\n{srt}\n\n"
        ).encode("utf-8", "replace")
        return out

    def _write(self, entry: _Entry) -> None:
        event = entry.event
        if isinstance(event, CaptionLine) and not (event.text or self._translations(event)):
            return  # a withdrawn line, or a translation-only line in no language written
        try:
            if entry.wall is None:
                entry.wall = self._wall(event.start if event.start is not None else event.end)
            files = self._files_for(self._set_for(entry.wall))
            todo = self._todo(entry, files)
            if any(
                files.sizes[f] > self._empty_size(f)
                and files.sizes[f] + len(data) > self.cfg.max_size
                for f, data in todo.items()
            ):
                files = self._rotate(files)
                todo = self._todo(entry, files)
            for fmt, data in todo.items():
                _write_all(files.fds[fmt], data)
                files.sizes[fmt] += len(data)
                entry.done.add(fmt)
                if fmt == "srt":
                    files.srt_cues += 1
                os.fdatasync(files.fds[fmt])
        except OSError as exc:
            self._close_files()
            raise OutputUnavailable(self._why(exc)) from None
        self.written += 1

    def _todo(self, entry: _Entry, files: _Part) -> dict[str, bytes]:
        payloads = self._payloads(entry, files)
        return {f: payloads[f] for f in self.formats if f in payloads and f not in entry.done}

    def _empty_size(self, fmt: str) -> int:
        return len(VTT_HEADER) if fmt == "vtt" else 0

    # --- files --------------------------------------------------------------------------

    def _why(self, exc: OSError) -> str:
        reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
        return f"cannot write transcripts in {self.directory}: {reason}"

    def _path(self, set_name: str, part: int, fmt: str) -> Path:
        suffix = f"-{part}" if part > 1 else ""
        return self.directory / f"{set_name}{suffix}.{fmt}"

    def _files_for(self, set_name: str) -> _Part:
        files = self._files
        if files is not None and files.set_name == set_name:
            if all(os.fstat(fd).st_nlink for fd in files.fds.values()):
                return files
            log.warning("transcript files of %s were deleted; writing them anew", set_name)
        self._close_files()
        parts = self._sets_on_disk().get(set_name, {1: []})
        files = self._open_part(set_name, max(parts))
        if set_name != self._set_name:
            self._set_name = set_name
            self._last_end = files.last_end
            self._prune(set_name)
        else:
            self._last_end = max(self._last_end, files.last_end)
        self._files = files
        return files

    def _rotate(self, files: _Part) -> _Part:
        log.info("transcript: %s reached max_size; continuing in a new part", files.set_name)
        self._close_files()
        self._files = self._open_part(files.set_name, files.part + 1)
        return self._files

    def _open_part(self, set_name: str, part: int) -> _Part:
        """The files of ``part`` or, when another process holds them or they are not
        ours to continue, of the next part that can be used."""
        for n in range(part, part + 1000):
            files = self._try_part(set_name, n)
            if files is not None:
                if n > part:
                    log.info("transcript: writing part %d of %s", n, set_name)
                return files
        raise OSError(errno.EEXIST, f"no usable file name for {set_name}")

    def _try_part(self, set_name: str, part: int) -> _Part | None:
        files = _Part(set_name, part, {}, {})
        try:
            for fmt in self.formats:
                path = self._path(set_name, part, fmt)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
                files.fds[fmt] = fd
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.warning("transcript: %s is written by another process", path)
                    self._close(files)
                    return None
                if not self._repair(files, fmt, path):
                    self._close(files)
                    return None
        except BaseException:
            self._close(files)
            raise
        return files

    def _repair(self, files: _Part, fmt: str, path: Path) -> bool:
        """Cut an incomplete last record off the file and read where it ends (the last
        cue's end time, the SRT cue count). False: this is no file to append to (it is
        left as it is)."""
        fd = files.fds[fmt]
        size = os.fstat(fd).st_size
        first = max(0, size - TAIL)
        tail = os.pread(fd, size - first, first)
        if fmt == "vtt" and size:
            head = tail[: len(VTT_HEADER)] if first == 0 else os.pread(fd, len(VTT_HEADER), 0)
            if not (head.startswith(b"WEBVTT") or VTT_HEADER.startswith(head)):
                log.warning("transcript: %s is not a WebVTT file; not appending", path)
                return False
        sep = b"\n" if fmt == "jsonl" else b"\n\n"
        cut = tail.rfind(sep)
        if cut < 0 and first > 0:
            log.warning("transcript: %s does not end in a complete record; not appending", path)
            return False
        keep = first + cut + len(sep) if cut >= 0 else 0
        kept = tail[: keep - first] if keep else b""
        if fmt == "srt" and keep:
            numbers = _SRT_NUMBER.findall(kept)
            if not numbers:
                log.warning("transcript: no SRT cue found at the end of %s; not appending", path)
                return False
            files.srt_cues = int(numbers[-1])
        if fmt in ("vtt", "srt"):
            ends = _CUE_END.findall(kept)
            if ends:
                h, m, s, ms = (int(x) for x in ends[-1])
                files.last_end = max(files.last_end, h * 3600 + m * 60 + s + ms / 1000)
        if keep < size:
            log.warning(
                "transcript: cut %d bytes of an unfinished record off %s", size - keep, path
            )
            os.ftruncate(fd, keep)
        if fmt == "vtt" and keep == 0:
            _write_all(fd, VTT_HEADER)
            keep = len(VTT_HEADER)
        files.sizes[fmt] = keep
        return True

    def _close(self, files: _Part) -> None:
        for fd in files.fds.values():
            try:
                os.close(fd)
            except OSError:
                log.warning("transcript: closing a file failed", exc_info=True)
        files.fds.clear()

    def _close_files(self) -> None:
        if self._files is not None:
            self._close(self._files)
            self._files = None

    def _sets_on_disk(self) -> dict[str, dict[int, list[Path]]]:
        """Our files in the directory (by name only): set name → part → paths."""
        sets: dict[str, dict[int, list[Path]]] = {}
        with os.scandir(self.directory) as entries:
            for item in entries:
                match = NAME.fullmatch(item.name)
                if match and item.is_file(follow_symlinks=False):
                    parts = sets.setdefault(match["set"], {})
                    parts.setdefault(int(match["part"] or 1), []).append(Path(item.path))
        return sets

    def _prune(self, current: str) -> None:
        """Delete the oldest sets beyond ``keep``; never the current one or a newer one."""
        try:
            sets = self._sets_on_disk()
        except OSError as exc:
            log.warning("transcript: cannot list %s: %s", self.directory, exc)
            return
        excess = len(sets) - self.cfg.keep
        for name in sorted(s for s in sets if s < current)[: max(0, excess)]:
            for paths in sets[name].values():
                for path in paths:
                    try:
                        path.unlink()
                    except OSError as exc:
                        log.warning("transcript: cannot delete %s: %s", path, exc)
            log.info("transcript: deleted the old set %s (keep = %d)", name, self.cfg.keep)
