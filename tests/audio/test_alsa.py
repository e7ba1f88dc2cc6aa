"""AlsaSource against real ALSA devices made with the ``file`` plugin (see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edgecap.audio.alsa import (
    AlsaSource,
    ReadStep,
    open_error,
    pa_error_code,
    plan_read,
)
from edgecap.audio.devices import list_capture_devices
from edgecap.audio.source import NOT_READY, SourceConfigError, SourceLost, SourceUnavailable
from edgecap.runtime.frames import Frame
from edgecap.runtime.resample import StreamResampler
from tests.audio.blocks import assert_blocks, frame_count, pcm
from tests.audio.conftest import MIC, AlsaTestbed, file_pcm
from tests.audio.signals import dominant_frequency, rms_db, sine

REPO = Path(__file__).resolve().parents[2]


def frames_from(src: AlsaSource, n: int, timeout: float = 1.0) -> list[Frame]:
    """Blocks until they hold at least ``n`` frames."""
    blocks: list[Frame] = []
    deadline = time.monotonic() + 10
    while frame_count(blocks, src.frame_samples) < n:
        assert time.monotonic() < deadline, "capture too slow"
        b = src.read(timeout)
        if isinstance(b, Frame):
            blocks.append(b)
    return blocks


class CountingStream:
    """Wraps a PyAudio stream to count the device reads."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream
        self.reads = 0

    def read(self, frames: int, exception_on_overflow: bool = True) -> bytes:
        self.reads += 1
        return self.stream.read(frames, exception_on_overflow=exception_on_overflow)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.stream, name)


@pytest.fixture
def speech_mic(alsa: AlsaTestbed, quilter: np.ndarray) -> np.ndarray:
    alsa.write(file_pcm(MIC, alsa.raw_file("speech.raw", quilter), description="edgecap test mic"))
    return quilter


def test_speech_capture_by_name_is_bit_exact(speech_mic: np.ndarray) -> None:
    src = AlsaSource(MIC, 20)
    assert src.name == f"alsa:{MIC}"
    src.open()
    try:
        assert (src.stream_rate, src.stream_channels) == (16000, 1)
        assert src._period == 1600  # the PortAudio period is one block
        counting = src._stream = CountingStream(src._stream)  # type: ignore[assignment]
        whole = len(speech_mic) // 320
        blocks = frames_from(src, whole)
    finally:
        src.close()
    # blocks of 5 frames (100 ms), one device read each
    assert [b.start for b in blocks] == [i * 1600 for i in range(len(blocks))]
    assert all(len(b.pcm) == 3200 and b.gap_before == 0 for b in blocks)
    assert counting.reads == len(blocks)
    assert np.array_equal(pcm(blocks)[: whole * 320], speech_mic[: whole * 320])
    assert src.device is not None and src.device.name == MIC


def test_device_by_substring_and_by_index(alsa: AlsaTestbed, quilter: np.ndarray) -> None:
    speech = alsa.raw_file("speech.raw", quilter)
    alsa.write(file_pcm("edgecap_other_mic", "/dev/zero"), file_pcm(MIC, speech))
    src = AlsaSource("TEST_mic", 20)  # case-insensitive substring
    src.open()
    try:
        assert src.name == f"alsa:{MIC}"
        assert np.array_equal(pcm(frames_from(src, 5)), quilter[:1600])  # one block
    finally:
        src.close()

    index = next(d.index for d in list_capture_devices() if d.name == MIC)
    src = AlsaSource(str(index), 20)
    src.open()
    try:
        assert np.array_equal(pcm(frames_from(src, 5)), quilter[:1600])
    finally:
        src.close()

    with pytest.raises(SourceConfigError, match=r"ambiguous.*edgecap_other_mic.*edgecap_test_mic"):
        AlsaSource("edgecap", 20).open()


def test_unknown_name_is_unavailable_and_lists_devices(speech_mic: np.ndarray) -> None:
    src = AlsaSource("Blue Yeti", 20)
    with pytest.raises(SourceUnavailable) as e:
        src.open()
    assert e.value.state == "device_missing"
    assert "no capture device matches 'Blue Yeti'; available:" in str(e.value)
    assert MIC in str(e.value)
    src.close()  # harmless after a failed open


def test_out_of_range_index_is_rejected_without_crashing(speech_mic: np.ndarray) -> None:
    """PortAudio segfaults on an out-of-range device index; run in a child so that a
    regression shows as a failed test rather than a dead test run."""
    code = textwrap.dedent(
        """
        from edgecap.audio.alsa import AlsaSource
        from edgecap.audio.source import SourceUnavailable
        for spec in ("57", "-1", "4294967296"):
            try:
                AlsaSource(spec, 20).open()
            except SourceUnavailable as e:
                print("unavailable:", e)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=os.environ,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("unavailable: no capture device matches") == 3


def test_fifo_capture_runs_at_real_time_and_is_exact(
    alsa: AlsaTestbed, quilter: np.ndarray
) -> None:
    fifo, fd = alsa.fifo("mic.fifo")
    alsa.write(file_pcm(MIC, fifo))
    second = quilter[:16000]
    src = AlsaSource(MIC, 20)
    src.open()
    try:
        t0 = time.monotonic()
        alsa.paced_writer(fd, second.tobytes())  # a block every 100 ms (see conftest.py)
        blocks = frames_from(src, 50, timeout=1.5)
        elapsed = time.monotonic() - t0
    finally:
        src.close()
    assert np.array_equal(pcm(blocks), second)
    assert_blocks(blocks, 320, 5)
    assert len(blocks) == 10
    assert 0.85 <= elapsed < 2.0, elapsed
    # Blocks came spread over the second, each once its last frame was written, not in one
    # burst at the end.
    assert 0.4 <= blocks[4].captured_at - t0 < 0.95


def test_device_missing_at_start_then_plugged_in(alsa: AlsaTestbed, quilter: np.ndarray) -> None:
    src = AlsaSource(MIC, 20)
    with pytest.raises(SourceUnavailable, match="no capture device matches") as e:
        src.open()
    assert e.value.state == "device_missing"

    # The PCM is configured but its "hardware" is absent: listed without inputs.
    infile = alsa.root / "speech.raw"
    alsa.write(file_pcm(MIC, infile))
    with pytest.raises(SourceUnavailable):
        src.open()

    # Plugged in: the same source object opens on its next attempt.
    quilter.tofile(infile)
    src.open()
    try:
        assert np.array_equal(pcm(frames_from(src, 3))[:960], quilter[:960])
    finally:
        src.close()


def test_device_lost_mid_stream_raises_and_reopens(alsa: AlsaTestbed, quilter: np.ndarray) -> None:
    speech = alsa.raw_file("speech.raw", quilter)
    out, pull_plug = alsa.output_fifo("out.fifo")
    alsa.write(file_pcm(MIC, speech, outfile=out))
    src = AlsaSource(MIC, 20, stall_timeout=0.5)
    src.open()
    blocks = frames_from(src, 10)
    assert np.array_equal(pcm(blocks), quilter[:3200])

    pull_plug.set()  # the plugin's next write fails: PortAudio reports a host error
    t = time.monotonic()
    with pytest.raises(SourceLost, match="Unanticipated host error"):
        for _ in range(1000):
            b = src.read(0.1)
            if isinstance(b, Frame):
                blocks.append(b)
    assert time.monotonic() - t < 1.0
    src.close()
    src.close()  # closing a dead stream twice never raises
    end, lost_at = blocks[-1].end, time.monotonic()

    # The device comes back: reopen, and Frame.start keeps counting past the time away.
    alsa.write(file_pcm(MIC, speech))
    src.open()
    reopened = time.monotonic()
    try:
        again = frames_from(src, 6)
    finally:
        src.close()
    gap = again[0].gap_before
    assert again[0].start == end + gap and gap % 320 == 0
    assert (lost_at - t) * 16000 < gap <= (reopened - t) * 16000 + 320
    assert_blocks(again, 320, 5)
    assert again[1].gap_before == 0
    assert np.array_equal(pcm(again)[:1920], quilter[:1920])  # a fresh stream of the "device"


@pytest.mark.parametrize("rate", [48000, 44100])
def test_device_at_other_rate_is_resampled(alsa: AlsaTestbed, rate: int) -> None:
    # 1 kHz speech-band tone plus a 10 kHz tone that would alias to 6 kHz without filtering.
    signal = sine(1000, rate, 1.2, amplitude=8000) + sine(10000, rate, 1.2, amplitude=8000)
    alsa.write(file_pcm(MIC, alsa.raw_file("tone.raw", signal)))
    src = AlsaSource(MIC, 20, rate=rate)
    src.open()
    try:
        assert src.stream_rate == rate
        assert src._period == rate // 10  # one block at the device's rate
        blocks = frames_from(src, 50)
        out = pcm(blocks)[:16000]
    finally:
        src.close()
    assert_blocks(blocks, 320, 5)
    assert dominant_frequency(out[400:], 16000) == pytest.approx(1000, abs=1)
    assert rms_db(out[400:], 8000) == pytest.approx(0, abs=0.3)  # only the 1 kHz tone is left
    spectrum = np.abs(np.fft.rfft(out[400:] * np.hanning(len(out) - 400)))
    hz = np.fft.rfftfreq(len(out) - 400, 1 / 16000)
    alias = spectrum[(hz > 5800) & (hz < 6200)].max()
    assert 20 * np.log10(alias / spectrum.max()) < -60


def test_channel_pick_on_a_two_channel_device(alsa: AlsaTestbed, quilter: np.ndarray) -> None:
    left = quilter[:8000]
    right = sine(2000, 16000, 0.5)
    alsa.write(file_pcm(MIC, alsa.raw_file("stereo.raw", np.stack([left, right], axis=1))))
    for channel, expected in ((0, left), (1, right)):
        src = AlsaSource(MIC, 20, channel=channel)
        src.open()
        try:
            assert src.stream_channels == 2
            assert np.array_equal(pcm(frames_from(src, 25)), expected)  # five blocks
        finally:
            src.close()
    src = AlsaSource(MIC, 20, channel=128)  # the file plugin offers 128 channels
    with pytest.raises(
        SourceConfigError, match="channel 128 requested but 'edgecap_test_mic' has 128"
    ):
        src.open()


def test_sample_index_counts_on_across_reopen_past_the_time_away(speech_mic: np.ndarray) -> None:
    src = AlsaSource(MIC, 30)  # blocks of 3 frames of 30 ms: 90 ms
    src.open()
    first = frames_from(src, 3)
    last_read = time.monotonic()
    src.close()
    time.sleep(0.2)
    src.open()
    opened = time.monotonic()
    second = frames_from(src, 2)
    src.close()
    assert [(b.start, b.samples, b.gap_before) for b in first] == [(0, 1440, 0)]
    (block,) = second
    gap = block.gap_before
    assert block.start == 1440 + gap and gap % 480 == 0  # whole frames
    assert 0.2 * 16000 <= gap <= (opened - last_read) * 16000 + 480
    assert np.array_equal(pcm(second), speech_mic[:1440])


# -- waiting, interrupting and stalls, against a device PortAudio cannot fake ---------------
#
# The ALSA file plugin always reports a full buffer, so it never makes read() wait: a fake
# stream stands in for a device whose samples arrive with time (16 kHz, from ``t0``).


class TimedStream:
    """``rate`` Hz; ``period``: samples become available a whole period at a time (as on
    hardware that reports its position at period interrupts), else as time goes."""

    def __init__(self, *, stalled: bool = False, rate: int = 16000, period: int = 1) -> None:
        self.t0 = time.monotonic()
        self.taken = 0
        self.stalled = stalled
        self.rate = rate
        self.period = period
        self.polls = 0
        self.reads = 0

    def get_read_available(self) -> int:
        self.polls += 1
        if self.stalled:
            return 0
        arrived = int((time.monotonic() - self.t0) * self.rate)
        return arrived - arrived % self.period - self.taken

    def read(self, frames: int, exception_on_overflow: bool = True) -> bytes:
        assert frames <= self.get_read_available(), "a read that would block"
        self.reads += 1
        self.taken += frames
        return bytes(2 * frames)

    def stop_stream(self) -> None: ...

    def close(self) -> None: ...


@pytest.fixture
def timed_source() -> Iterator[Callable[..., AlsaSource]]:
    made: list[AlsaSource] = []

    def make(stream: TimedStream, stall_timeout: float = 2.0) -> AlsaSource:
        src = AlsaSource(MIC, 20, stall_timeout=stall_timeout)
        src._stream = stream  # type: ignore[assignment]
        src._resampler = StreamResampler(stream.rate, 16000)
        src.stream_rate, src.stream_channels = stream.rate, 1
        src._period = stream.rate // 10
        src._direct = stream.rate == 16000
        src._last_data = time.monotonic()
        made.append(src)
        return src

    yield make
    for src in made:
        src.close()


def test_a_block_is_waited_for_in_one_sleep_and_read_at_once(timed_source) -> None:  # type: ignore[no-untyped-def]
    stream = TimedStream()
    src = timed_source(stream)
    blocks = [src.read(1.5) for _ in range(3)]
    elapsed = time.monotonic() - stream.t0
    assert_blocks(blocks, 320, 5)  # type: ignore[arg-type]
    assert 0.3 <= elapsed < 0.45, elapsed
    assert stream.reads == 3
    assert stream.polls <= 3 * 3  # a poll, one sleep for the missing samples, a poll, a read


def test_resampled_periods_give_a_block_per_period_without_polling(timed_source) -> None:  # type: ignore[no-untyped-def]
    """At 48 kHz a period (4800) resamples to a block minus the filter's look-ahead: the
    read takes what whole frames that gives rather than polling until the next period."""
    stream = TimedStream(rate=48000, period=4800)
    src = timed_source(stream)
    blocks = [src.read(1.5) for _ in range(5)]
    elapsed = time.monotonic() - stream.t0
    assert_blocks(blocks, 320, 5, full=False)  # type: ignore[arg-type]
    assert [b.samples for b in blocks][1:] == [1600] * 4  # type: ignore[union-attr]
    assert 0.5 <= elapsed < 0.65, elapsed
    assert stream.reads == 5
    assert stream.polls <= 5 * 4


def test_interrupt_ends_a_waiting_read_at_once_and_later_ones_do_not_wait(timed_source) -> None:  # type: ignore[no-untyped-def]
    src = timed_source(TimedStream(stalled=True), stall_timeout=30)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(src.read(10.0)))
    reader.start()
    time.sleep(0.1)
    t = time.monotonic()
    src.interrupt()
    reader.join(2)
    assert not reader.is_alive() and time.monotonic() - t < 0.5  # not the 30 s stall
    assert got == [NOT_READY]
    t = time.monotonic()
    assert src.read(10.0) is NOT_READY
    assert time.monotonic() - t < 0.5  # not the 10 s timeout


def test_a_stall_is_reported_after_stall_timeout_without_polling(timed_source) -> None:  # type: ignore[no-untyped-def]
    stream = TimedStream(stalled=True)
    src = timed_source(stream, stall_timeout=0.3)
    t = time.monotonic()
    with pytest.raises(SourceLost, match=r"no audio from .* for 0\.3 s"):
        src.read(10.0)
    assert 0.3 <= time.monotonic() - t < 0.4
    assert stream.polls < 10  # sleeps of about a block, not a poll every few ms


def test_read_before_open_and_bad_arguments() -> None:
    with pytest.raises(RuntimeError):
        AlsaSource(MIC, 20).read(0.1)
    with pytest.raises(SourceConfigError):
        AlsaSource(MIC, 20, channel=-1)
    with pytest.raises(ValueError):
        AlsaSource(MIC, 25)


# -- pure logic: error mapping and the polling plan -------------------------------------------


def test_open_errors_map_to_states() -> None:
    busy = open_error(OSError(-9985, "Device unavailable"), "USB mic")
    assert busy.state == "device_busy" and "busy" in str(busy)
    other = open_error(OSError(-9993, "Illegal combination of I/O devices"), "USB mic")
    assert other.state == "device_missing" and "Illegal combination" in str(other)
    assert pa_error_code(ValueError("Invalid sample rate", -9997)) == -9997


def plan(**kw: float) -> ReadStep:
    args: dict[str, float] = dict(
        available=0,
        needed=320,
        period=1024,
        rate=16000,
        now=10.0,
        deadline=10.1,
        last_data=10.0,
        stall_timeout=2.0,
    )
    args.update(kw)
    return plan_read(**args)  # type: ignore[arg-type]


def test_plan_reads_what_is_needed_when_available() -> None:
    assert plan(available=2048) == ReadStep("read", frames=320)
    assert plan(available=320) == ReadStep("read", frames=320)
    # needed beyond one period: start once a period is there, read what there is.
    assert plan(needed=5000, available=1500) == ReadStep("read", frames=1500)


def test_plan_sleeps_for_the_missing_samples_only() -> None:
    step = plan(available=160)
    assert step.action == "wait" and step.seconds == pytest.approx(0.01)
    assert plan(available=319).seconds == pytest.approx(0.002)  # floor: no busy-wait
    assert plan(deadline=10.004).seconds == pytest.approx(0.004)  # never past the deadline
    assert plan(deadline=10.0) == ReadStep("not_ready")


def test_plan_reports_a_stall() -> None:
    assert plan(last_data=7.9) == ReadStep("lost")
    near = plan(last_data=8.05, deadline=11.0)  # stall limit at 10.05 comes first
    assert near.action == "wait" and near.seconds == pytest.approx(0.02)
