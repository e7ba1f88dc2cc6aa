"""Spoken translation saved on disk: one WAV file per utterance in ``[speaker] save_dir``.

A separate output with its own worker (not a side job of the speaker), so a slow disk never
holds the loudspeaker up, and a missing loudspeaker never stops the files.

Names sort by time and say which caption line and language they speak:
``20261207-143501-000123-de.wav`` (local time the utterance began, the line's number, 0
when it is not known, and the language). Two in the same second for the same line get
``_2``, ``_3`` … The file holds a canonical 44-byte PCM WAV header and the PCM exactly as
the service sent it (its own header's extra chunks, if any, are not kept).

No half files: an utterance is written to ``.<name>.part`` as it comes, and only when it
is complete are the sizes in its header filled in, the data synced and the file renamed to
its name. An utterance cut by the next one (its end never came) is complete as far as it
goes and is saved; one that a stop or a disk error interrupted is deleted, and the rest of
it, if more comes after a reopen, is dropped. Leftover ``.part`` files (a power cut) are
deleted at open.

The directory is created 0o750. At most ``max_files`` files are kept: after each new one
the oldest go (only files whose names have the pattern above). A full disk, a permission
problem or any other error is logged, counted (status counter ``voice_files_errors``) and
reported as OutputUnavailable, so the worker retries with backoff and the status shows it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edgecap.captions.events import SynthesizedAudio
from edgecap.config.schema import SpeakerConfig
from edgecap.outputs.base import AUDIO, OutputEvent, OutputUnavailable
from edgecap.outputs.utterance import (
    Assembler,
    Begin,
    Finish,
    Pcm,
    PcmFormat,
    Refused,
    wav_header,
)
from edgecap.runtime.escape import escape_controls
from edgecap.runtime.status import StatusBoard

log = logging.getLogger(__name__)

NAME = re.compile(r"\d{8}-\d{6}-\d+-[A-Za-z0-9-]+(?:_\d+)?\.wav")
PART = re.compile(r"\.(" + NAME.pattern + r")\.part")
FILE_MODE = 0o640
MIN_FREE = 1024 * 1024  # bytes free below which the disk counts as full at open()
DIR_MODE = 0o750
_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "not a directory",
    errno.ENOENT: "no such directory",
}


def file_name(started: float, seq: int | None, language: str) -> str:
    """``YYYYmmdd-HHMMSS-<seq, 6 digits>-<language>.wav`` (local time)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    lang = re.sub(r"[^A-Za-z0-9-]", "", language)[:24].strip("-") or "xx"
    return f"{stamp}-{seq or 0:06d}-{lang}.wav"


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _File:
    """The utterance being written."""

    def __init__(self, fd: int, temp: Path, name: str, header: bytes) -> None:
        self.fd = fd
        self.temp = temp
        self.name = name
        self.header = header  # as written, sizes 0
        self.data_bytes = 0


class VoiceFilesOutput:
    name = "voice_files"
    takes = frozenset({AUDIO})  # nothing else: it sleeps until speech comes

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_files: int = 1000,
        status: StatusBoard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` is the wall clock the names are made from."""
        self.directory = Path(directory)
        self.max_files = max_files
        self.status = status
        self.clock = clock
        self._assembler = Assembler()
        self._file: _File | None = None
        self._fmt: PcmFormat | None = None  # the format of the file being written
        self._kept: deque[str] = deque()  # our files in the directory, oldest first
        self._said: set[str] = set()  # refusal reasons already logged at warning level
        # counters (plain attributes, for tests and the summary)
        self.saved = 0
        self.errors = 0
        self.refused = 0

    @classmethod
    def from_config(cls, cfg: SpeakerConfig, status: StatusBoard | None) -> VoiceFilesOutput:
        if cfg.save_dir is None:
            raise ValueError("[speaker] save_dir is not set")
        return cls(cfg.save_dir, max_files=cfg.max_files, status=status)

    # --- Output -------------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "permission denied")
            st = os.statvfs(self.directory)
            if st.f_bavail * st.f_frsize < MIN_FREE:
                raise OSError(errno.ENOSPC, "no space left on device")
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            raise self._failed(exc, "cannot use") from None
        for name in names:
            if PART.fullmatch(name):  # a power cut or a kill mid-utterance
                with contextlib.suppress(OSError):
                    os.unlink(self.directory / name)
                    log.info("voice files: removed the unfinished %s", escape_controls(name))
        self._kept = deque(n for n in names if NAME.fullmatch(n))
        self._rotate()

    def handle(self, event: OutputEvent) -> None:
        if not isinstance(event, SynthesizedAudio):
            return
        for piece in self._assembler.feed(event):
            try:
                if isinstance(piece, Begin):
                    self._begin(piece)
                elif isinstance(piece, Pcm):
                    if self._file is not None:
                        _write_all(self._file.fd, piece.data)
                        self._file.data_bytes += len(piece.data)
                elif isinstance(piece, Finish):
                    self._finish()
                else:
                    self._refuse(piece)
            except OSError as exc:
                self._discard()
                self._assembler.abandon()  # the rest of this utterance cannot make a file
                raise self._failed(exc, "cannot write") from None

    def idle(self, now: float) -> None:
        pass

    def wake_in(self, now: float) -> float | None:
        return None  # no timed work

    def close(self) -> None:
        """An utterance still being written is incomplete: deleted, and the rest of it
        dropped."""
        if self._file is not None:
            self._assembler.abandon()
        self._discard()

    # --- files --------------------------------------------------------------------------

    def _begin(self, piece: Begin) -> None:
        self._discard()  # (a Finish always comes first; this is a safety net)
        name = file_name(self.clock(), piece.seq, piece.language)
        temp = self.directory / f".{name}.part"
        header = wav_header(piece.fmt, 0)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        self._file = _File(fd, temp, name, header)
        self._fmt = piece.fmt
        _write_all(fd, header)

    def _finish(self) -> None:
        f, fmt = self._file, self._fmt
        if f is None or fmt is None:
            return
        os.pwrite(f.fd, wav_header(fmt, f.data_bytes), 0)
        os.fdatasync(f.fd)
        os.close(f.fd)
        f.fd = -1
        final = self._free_name(f.name)
        os.rename(f.temp, self.directory / final)
        self._file = None
        self._sync_directory()
        self.saved += 1
        self._kept.append(final)
        log.debug("voice files: saved %s (%.1f s)", final, fmt.seconds(f.data_bytes))
        self._rotate()

    def _free_name(self, name: str) -> str:
        stem = name[: -len(".wav")]
        candidate, n = name, 1
        while (self.directory / candidate).exists():
            n += 1
            candidate = f"{stem}_{n}.wav"
        return candidate

    def _sync_directory(self) -> None:
        """Makes the rename itself durable (the data was synced before it)."""
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        while len(self._kept) > self.max_files:
            oldest = self._kept.popleft()
            try:
                os.unlink(self.directory / oldest)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning(
                    "voice files: cannot remove %s: %s",
                    escape_controls(oldest),
                    exc.strerror or exc,
                )

    def _discard(self) -> None:
        """Close and delete the file being written, if any; never raises."""
        f, self._file = self._file, None
        if f is None:
            return
        if f.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(f.fd)
        with contextlib.suppress(OSError):
            os.unlink(f.temp)

    # --- problems -----------------------------------------------------------------------

    def _failed(self, exc: OSError, what: str) -> OutputUnavailable:
        self.errors += 1
        if self.status is not None:
            self.status.add("voice_files_errors")
        reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
        message = f"{what} {escape_controls(str(self.directory))}: {reason}"
        log.debug("voice files: %s (%r)", message, exc)
        return OutputUnavailable(message)

    def _refuse(self, piece: Refused) -> None:
        self.refused += 1
        if self.status is not None:
            self.status.add("voice_files_refused")
        level = logging.DEBUG if piece.reason in self._said else logging.WARNING
        self._said.add(piece.reason)
        log.log(
            level,
            "voice files: cannot save the spoken translation (%s%s): %s; dropped",
            escape_controls(piece.language) or "?",
            f", line {piece.seq}" if piece.seq is not None else "",
            piece.reason,
        )
