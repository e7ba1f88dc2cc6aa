"""Spoken translation on a loudspeaker: synthesized speech played on an ALSA output device.

The output runs under its own OutputWorker like every other one, so a slow or missing
speaker never holds up the captions. How it works (the why):

- ``handle`` only takes the audio in (parsed by utterance.Assembler, decoded to mono int16,
  stamped with its arrival time); ``idle`` plays. The worker calls ``idle`` right after each
  event and, while there is audio to play, again as soon as the device has room
  (``wake_in`` is then the time until it has), so events keep being taken in while speech
  plays and the skip policy sees how old the queued speech really is. With nothing to play
  it sleeps until the device is to be released, then until the next speech: it is given
  nothing else (``takes``: synthesized speech only).
- Each write is at most ``BLOCK`` (100 ms) of audio and no more than the device says it can
  take, so a write returns at once on a working device and within 100 ms on one that takes
  audio at its own pace: the worker stays responsive to stop.
- Skipping: each piece of speech is due when it could have been played at the earliest:
  when it came, or when the piece before it in its utterance was due plus its length,
  whichever is later (a whole utterance sent at once is due over its length; one that
  trickles in slower than real time is due as it comes). Speech whose turn comes more than
  ``max_delay`` after it was due (the device is slower than real time, stalled, or was
  away) is skipped: the whole utterance, or the rest of the one playing, oldest first;
  logged, and counted in the status counter ``speaker_skipped_s``. The oldest speech goes
  too when more than ``max_delay`` + ``SPARE`` seconds are queued (a memory bound).
- While the worker was unable to use the device (missing, failed), events waited in its
  queue, not here: the speech handled after a reopen, until the queue is first found empty,
  is taken to have arrived when the device went away (the earliest it can have), so a
  speaker that comes back does not play minutes-old speech.
- The device: by exact name, name ignoring case, part of the name, or PortAudio index (as
  for capture), checked at ``open`` (a missing one is ``OutputUnavailable``: the worker
  retries with backoff and the status says why). The stream is opened when there is speech
  to play, at the speech's own rate if the device takes it (else 48, 44.1 or 16 kHz, or the
  device's own), 16-bit, mono or the fewest channels the device takes (the mono speech is
  copied to each); other rates go through the streaming resampler. It is closed again after
  ``idle_close`` seconds without speech, so the ALSA device is not held for ever (and so
  PortAudio can be re-initialised: see below). A PortAudio error while playing is
  ``OutputUnavailable`` too.
- PortAudio is process-wide: ``Pa_Initialize``/``Pa_Terminate`` must not run on two
  threads at once (PyAudio releases the GIL around them), and the device list is read only
  when no other instance is alive (so while the microphone is open, a speaker plugged in
  later is not seen). The capture stage owns the quiet way of making and ending instances
  (edgecap/audio/alsa_quiet.py), which outputs may not import: the daemon hands it in
  (``new_pyaudio``, ``release_pyaudio``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
import pyaudio

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
    to_mono16,
)
from edgecap.runtime.escape import escape_controls
from edgecap.runtime.resample import StreamResampler, float_to_int16
from edgecap.runtime.status import StatusBoard

log = logging.getLogger(__name__)

PREFERRED_RATES = (48000, 44100, 16000)  # after the speech's own rate
BLOCK = 0.1  # seconds of audio per write at most
PERIOD = 0.05  # PortAudio's buffer granularity (the device buffer is a few of these)
IDLE_CLOSE = 5.0  # seconds without speech before the device is released
SPARE = 30.0  # seconds queued beyond max_delay before the oldest is dropped (memory bound)
SKIP_LOG_EVERY = 10.0  # seconds: at most one warning about skipped speech this often

# PortAudio error codes (portaudio.h, PaErrorCode).
PA_DEVICE_UNAVAILABLE = -9985

NewPyAudio = Callable[[], pyaudio.PyAudio]
ReleasePyAudio = Callable[[pyaudio.PyAudio | None], None]


def _pa_text(exc: BaseException) -> str:
    """The message of a PyAudio error (OSError: (code, text); ValueError: (text, code))."""
    texts = [a for a in exc.args if isinstance(a, str)]
    codes = [a for a in exc.args if isinstance(a, int) and not isinstance(a, bool)]
    text = texts[0] if texts else repr(exc)
    return f"{text} ({codes[0]})" if codes else text


def _pa_code(exc: BaseException) -> int | None:
    return next((a for a in exc.args if isinstance(a, int) and not isinstance(a, bool)), None)


@dataclass(frozen=True, slots=True)
class PlaybackDevice:
    index: int
    name: str
    max_output_channels: int
    default_rate: int
    is_default: bool

    def __str__(self) -> str:
        return f"[{self.index}] {escape_controls(self.name)!r}"


def list_playback_devices(pa: pyaudio.PyAudio) -> list[PlaybackDevice]:
    """Output-capable devices as this PortAudio instance lists them."""
    try:
        default_index = int(pa.get_default_output_device_info()["index"])
    except (OSError, KeyError, ValueError):
        default_index = -1  # "No Default Output Device Available"
    devices = []
    for i in range(pa.get_device_count()):
        try:
            info = pa.get_device_info_by_index(i)
        except (OSError, ValueError):
            continue
        channels = int(info.get("maxOutputChannels", 0))
        if channels > 0:
            devices.append(
                PlaybackDevice(
                    index=i,
                    name=str(info.get("name", f"device {i}")),
                    max_output_channels=channels,
                    default_rate=round(float(info.get("defaultSampleRate", 0))),
                    is_default=i == default_index,
                )
            )
    return devices


def resolve_playback_device(spec: str, devices: Sequence[PlaybackDevice]) -> PlaybackDevice:
    """The device ``spec`` names: "" or "default", an index, an exact name, the name
    ignoring case, or a part of one name. OutputUnavailable when none (or several) match."""
    wanted = spec.strip()
    shown = escape_controls(wanted)
    available = ", ".join(str(d) for d in devices) or "none"
    if wanted == "" or wanted.lower() == "default":
        chosen = [d for d in devices if d.is_default] or [d for d in devices if d.name == "default"]
        if chosen:
            return chosen[0]
        raise OutputUnavailable(f"no default playback device; available: {available}")
    if wanted.lstrip("-").isdigit():
        chosen = [d for d in devices if d.index == int(wanted)]
    else:
        chosen = []
        for candidates in (
            [d for d in devices if d.name == wanted],
            [d for d in devices if d.name.casefold() == wanted.casefold()],
            [d for d in devices if wanted.casefold() in d.name.casefold()],
        ):
            if candidates:
                chosen = candidates
                break
    if len(chosen) > 1:
        names = ", ".join(str(d) for d in chosen)
        raise OutputUnavailable(f"playback device {shown!r} is ambiguous: it matches {names}")
    if not chosen:
        raise OutputUnavailable(f"no playback device matches {shown!r}; available: {available}")
    return chosen[0]


@dataclass
class _Utterance:
    """Speech waiting to be played: mono int16 at its own rate."""

    language: str
    seq: int | None
    fmt: PcmFormat  # as it comes
    # (clock() when its first sample is due, samples) of each piece not played yet
    chunks: deque[tuple[float, np.ndarray]] = field(default_factory=deque)
    due_end: float = 0.0  # when the end of the last piece is due
    queued: int = 0  # samples in chunks
    played: int = 0  # samples taken from it so far
    ended: bool = False  # all of it has come
    skipped: bool = False  # dropped: what still comes of it is counted and thrown away

    @property
    def rate(self) -> int:
        return self.fmt.rate

    def describe(self) -> str:
        line = f", line {self.seq}" if self.seq is not None else ""
        return f"({escape_controls(self.language) or '?'}{line})"


class SpeakerOutput:
    name = "speaker"
    takes = frozenset({AUDIO})  # captions and status are for the other outputs

    def __init__(
        self,
        device: str = "default",
        *,
        new_pyaudio: NewPyAudio,
        release_pyaudio: ReleasePyAudio,
        volume: float = 1.0,
        max_delay: float = 20.0,
        status: StatusBoard | None = None,
        clock: Callable[[], float] = time.monotonic,
        device_rate: int | None = None,
        idle_close: float = IDLE_CLOSE,
    ) -> None:
        """``clock`` times arrivals, skipping and the idle close; ``device_rate`` forces
        the rate the device is opened at (None: negotiated as described above)."""
        self.device_spec = device
        self.new_pyaudio = new_pyaudio
        self.release_pyaudio = release_pyaudio
        self.volume = volume
        self.max_delay = max_delay
        self.status = status
        self.clock = clock
        self.device_rate = device_rate
        self.idle_close = idle_close
        self.device: PlaybackDevice | None = None
        self.stream_rate = 0
        self.stream_channels = 0
        self._pa: pyaudio.PyAudio | None = None
        self._stream: pyaudio.Stream | None = None
        self._assembler = Assembler()
        self._queue: deque[_Utterance] = deque()
        self._receiving: _Utterance | None = None
        self._resampler: StreamResampler | None = None
        self._ready = np.zeros(0, dtype=np.int16)  # at the device's rate, volume applied
        self._wait = 0.0  # while there is speech: seconds until the device has room
        self._last_sound = 0.0  # clock() of the last write
        self._away_since: float | None = None  # the device could not be used since then
        self._backlog_since: float | None = None  # events handled now may date from then
        self._handled = False  # handle() ran since the last idle()
        self._said: set[str] = set()  # refusal reasons already logged at warning level
        self._skip_logged_at: float | None = None  # clock() of the last warning about a skip
        self._skips_unlogged = 0  # skips since then, told with the next warning
        # counters (plain attributes, for tests and the summary)
        self.played_s = 0.0
        self.skipped_s = 0.0
        self.skipped_utterances = 0
        self.refused = 0

    @classmethod
    def from_config(
        cls,
        cfg: SpeakerConfig,
        status: StatusBoard | None,
        *,
        new_pyaudio: NewPyAudio,
        release_pyaudio: ReleasePyAudio,
    ) -> SpeakerOutput:
        return cls(
            cfg.device,
            new_pyaudio=new_pyaudio,
            release_pyaudio=release_pyaudio,
            volume=cfg.volume,
            max_delay=cfg.max_delay,
            status=status,
        )

    # --- Output -------------------------------------------------------------------------

    def wake_in(self, now: float) -> float | None:
        if self._backlog_since is not None:
            return 0.0  # the next idle() without an event before it ends the backlog
        if self.has_speech:
            return self._wait
        if self._stream is not None:  # the device is released after idle_close
            return max(0.0, self._last_sound + self.idle_close - self.clock())
        return None

    def open(self) -> None:
        """Check that the device is there; the stream itself opens when speech comes, or
        now if speech is waiting (a reopen after a failure: so that a device that cannot
        play stays unavailable instead of flapping between ready and failed)."""
        try:
            if self.has_speech:
                self._open_stream(self._queue[0].rate if self._queue else 0)
            else:
                pa = self._new_pa()
                try:
                    devices = list_playback_devices(pa)
                    self.device = resolve_playback_device(self.device_spec, devices)
                finally:
                    self.release_pyaudio(pa)
        except OutputUnavailable:
            if self._away_since is None:
                self._away_since = self.clock()
            raise
        self._backlog_since, self._away_since = self._away_since, None

    def handle(self, event: OutputEvent) -> None:
        self._handled = True
        if not isinstance(event, SynthesizedAudio):
            return
        arrived = self.clock() if self._backlog_since is None else self._backlog_since
        for piece in self._assembler.feed(event):
            if isinstance(piece, Begin):
                u = _Utterance(piece.language, piece.seq, piece.fmt)
                self._receiving = u
                self._queue.append(u)
            elif isinstance(piece, Pcm):
                self._take(piece, arrived)
            elif isinstance(piece, Finish):
                if self._receiving is not None:
                    self._receiving.ended = True
                self._receiving = None
            else:
                self._refuse(piece)
        self._bound_queue()

    def idle(self, now: float) -> None:
        if not self._handled:
            self._backlog_since = None  # the queue was empty: what comes next is new
        self._handled = False
        if self.has_speech:
            self._play()
        elif self._stream is not None and self.clock() - self._last_sound >= self.idle_close:
            log.debug("speaker: %.1f s without speech: releasing the device", self.idle_close)
            self._close_stream(drain=True)

    def close(self) -> None:
        """Releases the device; queued speech stays (for a reopen) and is skipped if it is
        too old by then."""
        if self._away_since is None:
            self._away_since = self.clock()
        self._close_stream(drain=True)

    # --- taking speech in ---------------------------------------------------------------

    def _take(self, piece: Pcm, arrived: float) -> None:
        u = self._receiving
        if u is None:
            return
        samples = to_mono16(piece.data, u.fmt)
        if u.skipped:
            self._count_skip(samples.size / u.rate)
            return
        due = max(arrived, u.due_end)
        u.due_end = due + samples.size / u.rate
        u.chunks.append((due, samples))
        u.queued += samples.size

    def _refuse(self, piece: Refused) -> None:
        self.refused += 1
        if self.status is not None:
            self.status.add("speaker_refused")
        level = logging.DEBUG if piece.reason in self._said else logging.WARNING
        self._said.add(piece.reason)
        log.log(
            level,
            "speaker: cannot play the spoken translation (%s%s): %s; dropped",
            escape_controls(piece.language) or "?",
            f", line {piece.seq}" if piece.seq is not None else "",
            piece.reason,
        )

    def _bound_queue(self) -> None:
        """Memory bound: more than max_delay + SPARE seconds queued drops the oldest."""
        limit = self.max_delay + SPARE
        while self._queue and self._queued_seconds() > limit:
            self._skip(self._queue[0], f"more than {limit:.0f} s of speech queued")

    def _queued_seconds(self) -> float:
        return sum(u.queued / u.rate for u in self._queue)

    # --- playing ------------------------------------------------------------------------

    @property
    def has_speech(self) -> bool:
        """Speech is waiting to be played (and can be: not only awaited)."""
        if self._ready.size:
            return True
        return bool(self._queue) and bool(self._queue[0].chunks or self._queue[0].ended)

    def _play(self) -> None:
        stream = self._stream or self._open_stream(self._queue[0].rate if self._queue else 0)
        try:
            room = stream.get_write_available()
        except OSError as exc:
            self._lost(exc)
        block = max(1, round(self.stream_rate * BLOCK))
        want = min(room, block)
        if want <= 0:
            self._wait = PERIOD
            return
        self._fill(want)
        n = min(want, self._ready.size)
        if n == 0:
            self._wait = 0.0  # (wake_in reads it only while there is speech)
            return
        frames, self._ready = self._ready[:n], self._ready[n:]
        if self.stream_channels > 1:
            frames = np.repeat(frames, self.stream_channels)
        try:
            stream.write(frames.astype("<i2").tobytes(), n, exception_on_underflow=False)
        except OSError as exc:
            self._lost(exc)
        self._last_sound = self.clock()
        self.played_s += n / self.stream_rate
        self._wait = 0.0 if room > n else PERIOD

    def _fill(self, want: int) -> None:
        """Convert queued speech into ``_ready`` until it holds ``want`` frames (or the
        queue is empty or waiting for more of its first utterance)."""
        parts = [self._ready] if self._ready.size else []
        have = self._ready.size
        while have < want and self._queue:
            u = self._queue[0]
            late = self.clock() - u.chunks[0][0] if u.chunks else 0.0
            if late > self.max_delay:
                self._skip(u, f"{late:.1f} s late")
                continue
            resampler = self._resampler_for(u.rate)
            if not u.chunks:
                if not u.ended:
                    break  # the rest of it has not come yet
                out = resampler.flush()
                self._queue.popleft()
            else:
                need = max(1, resampler.input_needed(want - have))
                out = resampler.process(self._take_samples(u, need))
            if out.size:
                if self.volume != 1.0:
                    out = float_to_int16(out.astype(np.float64) * self.volume)
                parts.append(out)
                have += out.size
        if len(parts) > 1:
            self._ready = np.concatenate(parts)
        elif parts:
            self._ready = parts[0]

    def _take_samples(self, u: _Utterance, need: int) -> np.ndarray:
        taken: list[np.ndarray] = []
        got = 0
        while u.chunks and got < need:
            due, chunk = u.chunks[0]
            if chunk.size <= need - got:
                taken.append(chunk)
                u.chunks.popleft()
            else:
                taken.append(chunk[: need - got])
                u.chunks[0] = (due + (need - got) / u.rate, chunk[need - got :])
            got += taken[-1].size
        u.queued -= got
        u.played += got
        return np.concatenate(taken) if len(taken) > 1 else taken[0]

    def _resampler_for(self, rate: int) -> StreamResampler:
        r = self._resampler
        if r is None or r.in_rate != rate or r.out_rate != self.stream_rate:
            r = self._resampler = StreamResampler(rate, self.stream_rate)
        return r

    def _skip(self, u: _Utterance, why: str) -> None:
        if u is self._queue[0] and u.played and self._resampler is not None:
            self._resampler.reset()  # it was playing: its filter state is not the next one's
        self._queue.remove(u)
        u.skipped = True
        u.chunks.clear()
        seconds = u.queued / u.rate
        u.queued = 0
        self.skipped_utterances += 1
        self._count_skip(seconds)
        now = self.clock()
        if self._skip_logged_at is not None and now - self._skip_logged_at < SKIP_LOG_EVERY:
            self._skips_unlogged += 1
            log.debug("speaker: skipped spoken translation %s: %s", u.describe(), why)
            return
        more, self._skips_unlogged, self._skip_logged_at = self._skips_unlogged, 0, now
        log.warning(
            "speaker: skipped spoken translation %s: %s (max_delay %.0f s)%s; %.1f s "
            "skipped in all",
            u.describe(),
            why,
            self.max_delay,
            f"; {more} more since the last report" if more else "",
            self.skipped_s,
        )

    def _count_skip(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.skipped_s += seconds
        if self.status is not None:
            self.status.add("speaker_skipped_s", seconds)

    # --- the device ---------------------------------------------------------------------

    def _new_pa(self) -> pyaudio.PyAudio:
        try:
            return self.new_pyaudio()
        except OSError as exc:
            raise OutputUnavailable(f"PortAudio failed to start: {_pa_text(exc)}") from None

    def _open_stream(self, speech_rate: int) -> pyaudio.Stream:
        pa = self._new_pa()
        try:
            dev = resolve_playback_device(self.device_spec, list_playback_devices(pa))
            rate, channels = self._negotiate(pa, dev, speech_rate)
            period = max(1, round(rate * PERIOD))
            try:
                stream = pa.open(
                    format=pyaudio.paInt16,
                    channels=channels,
                    rate=rate,
                    output=True,
                    output_device_index=dev.index,
                    frames_per_buffer=period,
                    start=True,
                )
            except (OSError, ValueError) as exc:
                raise OutputUnavailable(self._open_error(dev, exc)) from None
        except BaseException:
            self.release_pyaudio(pa)
            raise
        self._pa, self._stream, self.device = pa, stream, dev
        self.stream_rate, self.stream_channels = rate, channels
        self._resampler = None
        self._ready = np.zeros(0, dtype=np.int16)
        self._last_sound = self.clock()
        log.info(
            "speaker: playing on %s at %d Hz, %d channel(s)%s",
            dev,
            rate,
            channels,
            "" if rate == speech_rate else f" (speech at {speech_rate} Hz resampled)",
        )
        return stream

    def _negotiate(
        self, pa: pyaudio.PyAudio, dev: PlaybackDevice, speech_rate: int
    ) -> tuple[int, int]:
        """First (rate, channels) the device takes for 16-bit output."""
        if self.device_rate is not None:
            rates = [self.device_rate]
        else:
            wanted = (speech_rate, *PREFERRED_RATES, dev.default_rate)
            rates = [r for r in dict.fromkeys(wanted) if r > 0]
        most = dev.max_output_channels
        counts = [c for c in dict.fromkeys((1, 2, most)) if c <= most]
        tried = []
        for rate in rates:
            for channels in counts:
                try:
                    pa.is_format_supported(
                        rate,
                        output_device=dev.index,
                        output_channels=channels,
                        output_format=pyaudio.paInt16,
                    )
                    return rate, channels
                except (ValueError, OSError) as exc:
                    if _pa_code(exc) == PA_DEVICE_UNAVAILABLE:
                        raise OutputUnavailable(
                            f"playback device {dev} is busy (used by another program?)"
                        ) from None
                    tried.append(f"{rate} Hz/{channels} ch: {_pa_text(exc)}")
        raise OutputUnavailable(f"playback device {dev} takes none of: {', '.join(tried)}")

    @staticmethod
    def _open_error(dev: PlaybackDevice, exc: BaseException) -> str:
        if _pa_code(exc) == PA_DEVICE_UNAVAILABLE:
            return f"playback device {dev} is busy (used by another program?)"
        return f"cannot open playback device {dev}: {_pa_text(exc)}"

    def _lost(self, exc: OSError) -> NoReturn:
        dev = self.device if self.device is not None else escape_controls(self.device_spec)
        self._close_stream(drain=False)
        raise OutputUnavailable(f"playback device {dev} failed: {_pa_text(exc)}") from None

    def _close_stream(self, *, drain: bool) -> None:
        """Stop (playing out what the device holds, if ``drain``), close, release PortAudio;
        never raises."""
        stream, pa = self._stream, self._pa
        self._stream, self._pa = None, None
        self._ready = np.zeros(0, dtype=np.int16)
        if self._resampler is not None:
            self._resampler.reset()
        if stream is not None:
            steps = (stream.stop_stream, stream.close) if drain else (stream.close,)
            for step in steps:
                try:
                    step()
                except Exception as exc:  # a dead stream fails to stop; fine
                    log.debug("speaker: %s failed: %r", step.__name__, exc)
        if pa is not None:
            self.release_pyaudio(pa)
