"""Microphone capture through PortAudio (PyAudio) on ALSA.

Design notes (the why):

- A new ``PyAudio()`` per ``open()``, terminated on ``close()``: ALSA and PortAudio build the
  device list when PortAudio is initialised, so a USB microphone plugged in after start is
  only found by a fresh instance (and only if no other instance is alive in the process).
- The device spec is resolved against the list before opening, because PortAudio does not
  range-check device indexes (an out-of-range one segfaults).
- Audio moves in blocks of about 100 ms (``runtime.frames``): the stream is opened with a
  period (``frames_per_buffer``) of one block at the device rate, and ``read()`` makes one
  device read per block. It never blocks in PortAudio for long: it asks
  ``get_read_available()``, and while the block is not there sleeps about as long as the
  missing samples take (one sleep, which ``interrupt()`` ends, so a stop ends it
  at once), then reads no more than is available. On real ALSA hardware the read then
  returns at once. (The ALSA ``file`` plugin used in tests reports its slave's buffer as
  always full, so there a read waits for its input file; see tests/audio/conftest.py.)
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
  The time a lost device was away is: the first block after a reopen starts that much later
  (whole frames), with ``gap_before`` saying how much, so sample indexes stay capture time.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

import pyaudio

from edgecap.audio.alsa_quiet import new_pyaudio, terminate_quietly
from edgecap.audio.devices import DeviceInfo, list_capture_devices, resolve_device
from edgecap.audio.pcm import S16LE, PendingAudio, decode_samples, to_mono
from edgecap.audio.source import (
    NOT_READY,
    SourceConfigError,
    SourceLost,
    SourceUnavailable,
    Waker,
    _NotReady,
)
from edgecap.runtime.escape import escape_controls
from edgecap.runtime.frames import BLOCK_MS, SAMPLE_RATE, Block, block_frames, frame_samples
from edgecap.runtime.resample import StreamResampler

log = logging.getLogger(__name__)

# PortAudio error codes (portaudio.h, PaErrorCode).
PA_DEVICE_UNAVAILABLE = -9985
PA_INVALID_SAMPLE_RATE = -9997
PA_INVALID_CHANNEL_COUNT = -9998
PA_SAMPLE_FORMAT_NOT_SUPPORTED = -9994
_FORMAT_ERRORS = {PA_INVALID_SAMPLE_RATE, PA_INVALID_CHANNEL_COUNT, PA_SAMPLE_FORMAT_NOT_SUPPORTED}

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

    ``needed`` device frames complete the next output block. Reading starts once they are
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
    """Blocks of frames from a capture device.

    device: spec resolved by :func:`edgecap.audio.devices.resolve_device` ("" = default).
    rate: device rate to open; None tries 16 kHz, then the device's default rate, then 48 and
        44.1 kHz. Anything but 16 kHz is resampled.
    channel: None mixes all channels to mono; an int picks that channel (from 0).
    stall_timeout: seconds without a single sample before the device counts as lost.
    block_ms: what one ``read()`` delivers (whole frames; see ``runtime.frames``). It is also
        the PortAudio period; the device buffer is about two periods, so the reader may be
        about one block late (a GC pause, a busy Pi) before samples are dropped.
    """

    def __init__(
        self,
        device: str,
        frame_ms: int,
        rate: int | None = None,
        channel: int | None = None,
        stall_timeout: float = 2.0,
        *,
        block_ms: int = BLOCK_MS,
    ) -> None:
        if channel is not None and channel < 0:
            raise SourceConfigError(f"channel must be ≥ 0, not {channel}")
        if rate is not None and rate <= 0:
            raise SourceConfigError(f"sample rate must be positive, not {rate}")
        if stall_timeout <= 0:
            raise SourceConfigError("stall_timeout must be positive")
        self.device_spec = device
        self.frame_samples = frame_samples(frame_ms)
        self.block_frames = block_frames(frame_ms, block_ms)
        self.block_seconds = self.block_frames * frame_ms / 1000
        self.rate = rate
        self.channel = channel
        self.stall_timeout = stall_timeout
        self.name = f"alsa:{escape_controls(device.strip()) or 'default'}"
        self.device: DeviceInfo | None = None
        self.stream_rate = 0
        self.stream_channels = 0
        self._pa: pyaudio.PyAudio | None = None
        self._stream: pyaudio.PyAudio.Stream | None = None
        self._period = 0
        self._direct = False  # the device gives 16 kHz mono s16le: no conversion at all
        self._resampler: StreamResampler | None = None
        # keeps counting across reopen: Frame.start is per source
        self._pending = PendingAudio(self.frame_samples, self.block_frames)
        self._last_data = 0.0
        self._lost_at: float | None = None  # when the previous stream last delivered
        self._waker = Waker()

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
            period = max(1, round(rate * self.block_seconds))
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
        self._direct = rate == SAMPLE_RATE and channels == 1 and sys.byteorder == "little"
        self._resampler = StreamResampler(rate, SAMPLE_RATE)
        self._last_data = time.monotonic()
        self._skip_lost_time()
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

    def read(self, timeout: float) -> Block | _NotReady | None:
        """The next block: as soon as it is whole, or — once a whole period came in this
        call — with the whole frames there are. (Resampled, a period falls a little short
        of a block or past it: the filter's look-ahead. Waiting for the rest would mean
        polling until the next period, on hardware that delivers whole periods.)"""
        stream, resampler = self._stream, self._resampler
        if stream is None or resampler is None:
            raise RuntimeError(f"{self.name}: read() before open()")
        pending = self._pending
        want, fs = pending.block_samples, self.frame_samples
        deadline = time.monotonic() + max(timeout, 0.0)
        waker = self._waker
        got = 0  # device frames read in this call
        while pending.size < want and not waker.interrupted:
            if got >= self._period and pending.size >= fs:
                break
            needed = max(1, resampler.input_needed(want - pending.size))
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
                got += step.frames
                self._convert(data, resampler)
            elif step.action == "wait":
                waker.wait(step.seconds)
            elif step.action == "not_ready":
                break  # what whole frames there are, if any
            else:
                raise SourceLost(
                    f"no audio from {self.device.name if self.device else self.name} "
                    f"for {self.stall_timeout:.1f} s"
                )
        block = pending.take()
        return NOT_READY if block is None else block

    def interrupt(self) -> None:
        """A waiting ``read()`` returns at once, and later ones do not wait (stopping)."""
        self._waker.interrupt()

    def _convert(self, data: bytes, resampler: StreamResampler) -> None:
        frame_bytes = S16LE.width * self.stream_channels
        usable = len(data) - len(data) % frame_bytes
        if self._direct:  # already what the pipeline takes (paInt16 is native-endian)
            self._pending.add_pcm(data if usable == len(data) else data[:usable])
            return
        samples = decode_samples(memoryview(data)[:usable], S16LE, self.stream_channels)
        self._pending.add(resampler.process(to_mono(samples, self.channel)))

    def _skip_lost_time(self) -> None:
        """After a reopen: what was not delivered of the old stream, and the time the device
        was away, are a gap before the next block (whole frames, so starts stay aligned)."""
        pending, lost_at = self._pending, self._lost_at
        if lost_at is None:
            return
        away = pending.size + max(0, round((time.monotonic() - lost_at) * SAMPLE_RATE))
        pending.clear()
        fs = self.frame_samples
        pending.skip(-(-away // fs) * fs)

    # -- close --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop and close the stream and terminate PortAudio; never raises."""
        stream, pa = self._stream, self._pa
        self._stream, self._pa = None, None
        self._resampler = None
        if stream is not None:
            self._lost_at = self._last_data
            for step in (stream.stop_stream, stream.close):
                try:
                    step()
                except Exception as e:  # a dead stream fails to stop; fine
                    log.debug("%s: %s failed: %r", self.name, step.__name__, e)
        terminate_quietly(pa)
        self._waker.close()
