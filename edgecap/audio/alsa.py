"""Microphone capture through PortAudio (PyAudio) on ALSA.

Design notes (the why):

- A new ``PyAudio()`` per ``open()``, terminated on ``close()``: ALSA and PortAudio build the
  device list when PortAudio is initialised, so a USB microphone plugged in after start is
  only found by a fresh instance (and only if no other instance is alive in the process).
- The device spec is resolved against the list before opening, because PortAudio does not
  range-check device indexes (an out-of-range one segfaults).
- Blocking-mode stream, but ``read()`` never blocks for long: it polls
  ``get_read_available()`` and sleeps about as long as the missing samples take to arrive,
  then reads no more than is available. On real ALSA hardware the read then returns at once.
  (The ALSA ``file`` plugin used in tests reports its slave's buffer as always full, so there
  a read waits for its input file; see tests/audio/conftest.py.)
- A device that stays silent (no samples at all, which a real microphone never does) for
  ``stall_timeout`` seconds is reported as lost, and so is any PortAudio error while reading
  (an unplugged USB device gives "Unanticipated host error").
- The device is opened at 16 kHz when it can be; otherwise at its own rate and resampled with
  a band-limited filter. With ``channel=None`` mono is requested when the device offers it
  (ALSA's plug layer mixes), else all channels are opened and averaged here. ``channel=N``
  opens at least 2 channels and picks N here, so that a plug device (``default``, ``plughw``)
  hands over its real channel N rather than its own mono mix.
- ``stream.read`` is called with ``exception_on_overflow=False``: after an overrun PyAudio
  would otherwise raise and discard the block. Samples lost in an overrun are therefore not
  counted in ``Frame.gap_before`` (PortAudio's blocking API does not say how many were lost).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyaudio

from edgecap.audio.alsa_quiet import new_pyaudio, terminate_quietly
from edgecap.audio.devices import DeviceInfo, list_capture_devices, resolve_device
from edgecap.audio.pcm import S16LE, decode_samples, int16_to_bytes, to_mono
from edgecap.audio.source import (
    NOT_READY,
    SourceConfigError,
    SourceLost,
    SourceUnavailable,
    _NotReady,
)
from edgecap.runtime.escape import escape_controls
from edgecap.runtime.frames import SAMPLE_RATE, Frame, frame_samples
from edgecap.runtime.resample import StreamResampler

log = logging.getLogger(__name__)

# PortAudio error codes (portaudio.h, PaErrorCode).
PA_DEVICE_UNAVAILABLE = -9985
PA_INVALID_SAMPLE_RATE = -9997
PA_INVALID_CHANNEL_COUNT = -9998
PA_SAMPLE_FORMAT_NOT_SUPPORTED = -9994
_FORMAT_ERRORS = {PA_INVALID_SAMPLE_RATE, PA_INVALID_CHANNEL_COUNT, PA_SAMPLE_FORMAT_NOT_SUPPORTED}

DEFAULT_PERIOD_MS = 64
# Do not poll more often than this while waiting for samples (no busy-wait).
MIN_SLEEP = 0.002


def pa_error_code(e: BaseException) -> int | None:
    """The PaErrorCode in a PyAudio exception. OSError carries (code, text); the ValueError
    from ``is_format_supported`` carries (text, code)."""
    for arg in e.args:
        if isinstance(arg, int) and not isinstance(arg, bool):
            return arg
    return None


def pa_error_text(e: BaseException) -> str:
    for arg in e.args:
        if isinstance(arg, str):
            return arg
    return repr(e)


def open_error(e: BaseException, device: str) -> SourceUnavailable:
    """Map a PortAudio open failure to the error the capture worker acts on."""
    code = pa_error_code(e)
    if code == PA_DEVICE_UNAVAILABLE:
        return SourceUnavailable(
            f"capture device {device!r} is busy (used by another program?)", state="device_busy"
        )
    return SourceUnavailable(
        f"cannot open capture device {device!r}: {pa_error_text(e)} ({code})",
        state="device_missing",
    )


@dataclass(frozen=True, slots=True)
class ReadStep:
    """What ``AlsaSource.read`` does next; see :func:`plan_read`.

    action: "read" ``frames`` now; "wait" ``seconds``; "not_ready" (timeout used up);
    "lost" (nothing for ``stall_timeout``).
    """

    action: str
    frames: int = 0
    seconds: float = 0.0


def plan_read(
    *,
    available: int,
    needed: int,
    period: int,
    rate: int,
    now: float,
    deadline: float,
    last_data: float,
    stall_timeout: float,
) -> ReadStep:
    """Decide the next step of a polling read (pure logic, kept apart to be testable).

    ``needed`` device frames complete the next output frame. Reading starts once they are
    available (or a whole ``period`` is, so that a ``needed`` larger than the device buffer
    cannot deadlock), reads at most what is available, and otherwise sleeps about as long
    as the missing frames take at ``rate``, never past the caller's deadline or the stall
    limit.
    """
    target = max(1, min(needed, period))
    if available >= target:
        return ReadStep("read", frames=max(1, min(needed, available)))
    silent_for = now - last_data
    if silent_for >= stall_timeout:
        return ReadStep("lost")
    remaining = deadline - now
    if remaining <= 0:
        return ReadStep("not_ready")
    missing = target - max(available, 0)
    sleep = max(missing / rate, MIN_SLEEP)
    return ReadStep("wait", seconds=min(sleep, remaining, stall_timeout - silent_for))


class AlsaSource:
    """Frames from a capture device.

    device: spec resolved by :func:`edgecap.audio.devices.resolve_device` ("" = default).
    rate: device rate to open; None tries 16 kHz, then the device's default rate, then 48 and
        44.1 kHz. Anything but 16 kHz is resampled.
    channel: None mixes all channels to mono; an int picks that channel (from 0).
    stall_timeout: seconds without a single sample before the device counts as lost.
    period_ms: PortAudio buffer granularity; the device buffer is about twice this, which is
        how long the reader may be late (a GC pause, a busy Pi) before samples are dropped.
    """

    def __init__(
        self,
        device: str,
        frame_ms: int,
        rate: int | None = None,
        channel: int | None = None,
        stall_timeout: float = 2.0,
        *,
        period_ms: int = DEFAULT_PERIOD_MS,
    ) -> None:
        if channel is not None and channel < 0:
            raise SourceConfigError(f"channel must be ≥ 0, not {channel}")
        if rate is not None and rate <= 0:
            raise SourceConfigError(f"sample rate must be positive, not {rate}")
        if stall_timeout <= 0:
            raise SourceConfigError("stall_timeout must be positive")
        self.device_spec = device
        self.frame_samples = frame_samples(frame_ms)
        self.rate = rate
        self.channel = channel
        self.stall_timeout = stall_timeout
        self.period_ms = period_ms
        self.name = f"alsa:{escape_controls(device.strip()) or 'default'}"
        self.device: DeviceInfo | None = None
        self.stream_rate = 0
        self.stream_channels = 0
        self._pa: pyaudio.PyAudio | None = None
        self._stream: pyaudio.PyAudio.Stream | None = None
        self._period = 0
        self._resampler: StreamResampler | None = None
        self._pending = np.zeros(0, dtype=np.int16)
        self._last_data = 0.0
        self._next_start = 0  # keeps counting across reopen: Frame.start is per source

    # -- open ---------------------------------------------------------------------------

    def open(self) -> None:
        self.close()
        try:
            pa = new_pyaudio()
        except OSError as e:
            raise SourceUnavailable(f"PortAudio failed to start: {pa_error_text(e)}") from e
        try:
            devices = list_capture_devices(pa)
            dev = resolve_device(self.device_spec, devices)
            if self.channel is not None and self.channel >= dev.max_input_channels:
                raise SourceConfigError(
                    f"channel {self.channel} requested but {dev.name!r} has "
                    f"{dev.max_input_channels} input channel(s) (channels count from 0)"
                )
            rate, channels = self._negotiate(pa, dev)
            period = max(1, rate * self.period_ms // 1000)
            try:
                stream = pa.open(
                    format=pyaudio.paInt16,
                    channels=channels,
                    rate=rate,
                    input=True,
                    input_device_index=dev.index,
                    frames_per_buffer=period,
                    start=True,
                )
            except (OSError, ValueError) as e:
                raise open_error(e, dev.name) from e
        except BaseException:
            terminate_quietly(pa)
            raise
        self._pa, self._stream = pa, stream
        self.device = dev
        self.name = f"alsa:{escape_controls(dev.name)}"  # a USB descriptor: anyone's text
        self.stream_rate, self.stream_channels, self._period = rate, channels, period
        self._resampler = StreamResampler(rate, SAMPLE_RATE)
        self._pending = np.zeros(0, dtype=np.int16)
        self._last_data = time.monotonic()
        log.info(
            "opened %s at %d Hz, %d channel(s)%s",
            self.name,
            rate,
            channels,
            "" if rate == SAMPLE_RATE else f", resampled to {SAMPLE_RATE} Hz",
        )

    def _negotiate(self, pa: pyaudio.PyAudio, dev: DeviceInfo) -> tuple[int, int]:
        """First (rate, channels) the device accepts for 16-bit capture."""
        if self.rate is not None:
            rates = [self.rate]
        else:
            rates = list(
                dict.fromkeys(r for r in (SAMPLE_RATE, dev.default_rate, 48000, 44100) if r > 0)
            )
        most = dev.max_input_channels
        if self.channel is None:
            # Mono when the device offers it (ALSA's plug layer mixes), else mix ourselves.
            lowest, preferred = 1, (1, 2, most)
        else:
            # At least 2 channels, so that a plug device delivers its real channel N rather
            # than ALSA's own mono mix of all of them.
            lowest = self.channel + 1
            preferred = (max(lowest, min(2, most)), lowest, most)
        counts = [c for c in dict.fromkeys(preferred) if lowest <= c <= most]
        errors: list[tuple[int, int, BaseException]] = []
        for rate in rates:
            for channels in counts:
                try:
                    pa.is_format_supported(
                        rate,
                        input_device=dev.index,
                        input_channels=channels,
                        input_format=pyaudio.paInt16,
                    )
                    return rate, channels
                except (ValueError, OSError) as e:  # unsupported raises ValueError
                    errors.append((rate, channels, e))
        codes = {pa_error_code(e) for _, _, e in errors}
        if PA_DEVICE_UNAVAILABLE in codes:
            raise SourceUnavailable(
                f"capture device {dev.name!r} is busy (used by another program?)",
                state="device_busy",
            )
        tried = ", ".join(f"{r} Hz/{c} ch: {pa_error_text(e)}" for r, c, e in errors)
        if codes and codes <= _FORMAT_ERRORS:
            raise SourceConfigError(f"capture device {dev.name!r} supports none of: {tried}")
        raise SourceUnavailable(f"capture device {dev.name!r} cannot be used now: {tried}")

    # -- read ---------------------------------------------------------------------------

    def read(self, timeout: float) -> Frame | _NotReady | None:
        stream, resampler = self._stream, self._resampler
        if stream is None or resampler is None:
            raise RuntimeError(f"{self.name}: read() before open()")
        deadline = time.monotonic() + max(timeout, 0.0)
        while len(self._pending) < self.frame_samples:
            needed = max(1, resampler.input_needed(self.frame_samples - len(self._pending)))
            try:
                available = stream.get_read_available()
            except OSError as e:
                raise SourceLost(f"{self.name}: {pa_error_text(e)}") from e
            step = plan_read(
                available=available,
                needed=needed,
                period=self._period,
                rate=self.stream_rate,
                now=time.monotonic(),
                deadline=deadline,
                last_data=self._last_data,
                stall_timeout=self.stall_timeout,
            )
            if step.action == "read":
                try:
                    data = stream.read(step.frames, exception_on_overflow=False)
                except OSError as e:
                    raise SourceLost(f"{self.name}: {pa_error_text(e)}") from e
                self._last_data = time.monotonic()
                self._convert(data, resampler)
            elif step.action == "wait":
                time.sleep(step.seconds)
            elif step.action == "not_ready":
                return NOT_READY
            else:
                raise SourceLost(
                    f"no audio from {self.device.name if self.device else self.name} "
                    f"for {self.stall_timeout:.1f} s"
                )
        chunk = self._pending[: self.frame_samples]
        self._pending = self._pending[self.frame_samples :]
        frame = Frame(int16_to_bytes(chunk), self._next_start, time.monotonic())
        self._next_start += self.frame_samples
        return frame

    def _convert(self, data: bytes, resampler: StreamResampler) -> None:
        frame_bytes = S16LE.width * self.stream_channels
        usable = len(data) - len(data) % frame_bytes
        samples = decode_samples(memoryview(data)[:usable], S16LE, self.stream_channels)
        out = resampler.process(to_mono(samples, self.channel))
        if out.size:
            self._pending = np.concatenate((self._pending, out)) if self._pending.size else out

    # -- close --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop and close the stream and terminate PortAudio; never raises."""
        stream, pa = self._stream, self._pa
        self._stream, self._pa = None, None
        self._resampler = None
        if stream is not None:
            for step in (stream.stop_stream, stream.close):
                try:
                    step()
                except Exception as e:  # a dead stream fails to stop; fine
                    log.debug("%s: %s failed: %r", self.name, step.__name__, e)
        terminate_quietly(pa)
