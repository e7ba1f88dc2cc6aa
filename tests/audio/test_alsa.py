"""AlsaSource against real ALSA devices made with the ``file`` plugin (see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
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
from edgecap.audio.source import SourceConfigError, SourceLost, SourceUnavailable
from edgecap.runtime.frames import Frame
from tests.audio.conftest import MIC, AlsaTestbed, file_pcm
from tests.audio.signals import dominant_frequency, rms_db, sine

REPO = Path(__file__).resolve().parents[2]


def frames_from(src: AlsaSource, n: int, timeout: float = 1.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + 10
    while len(frames) < n:
        assert time.monotonic() < deadline, "capture too slow"
        f = src.read(timeout)
        if isinstance(f, Frame):
            frames.append(f)
    return frames


def pcm(frames: list[Frame]) -> np.ndarray:
    return np.frombuffer(b"".join(f.pcm for f in frames), "<i2")


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
        whole = len(speech_mic) // 320
        frames = frames_from(src, whole)
    finally:
        src.close()
    assert [f.start for f in frames] == [i * 320 for i in range(whole)]
    assert all(len(f.pcm) == 640 for f in frames)
    assert np.array_equal(pcm(frames), speech_mic[: whole * 320])
    assert src.device is not None and src.device.name == MIC


def test_device_by_substring_and_by_index(alsa: AlsaTestbed, quilter: np.ndarray) -> None:
    speech = alsa.raw_file("speech.raw", quilter)
    alsa.write(file_pcm("edgecap_other_mic", "/dev/zero"), file_pcm(MIC, speech))
    src = AlsaSource("TEST_mic", 20)  # case-insensitive substring
    src.open()
    try:
        assert src.name == f"alsa:{MIC}"
        assert np.array_equal(pcm(frames_from(src, 5)), quilter[:1600])
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
        alsa.paced_writer(fd, second.tobytes(), chunk=640, interval=0.02)
        frames = frames_from(src, 50, timeout=0.1)
        elapsed = time.monotonic() - t0
    finally:
        src.close()
    assert np.array_equal(pcm(frames), second)
    assert 0.85 <= elapsed < 2.0, elapsed
    # Frames came spread over the second, not in one burst at the end.
    assert frames[24].captured_at - t0 < 0.95


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
        assert np.array_equal(pcm(frames_from(src, 3)), quilter[:960])
    finally:
        src.close()


def test_device_lost_mid_stream_raises_and_reopens(alsa: AlsaTestbed, quilter: np.ndarray) -> None:
    speech = alsa.raw_file("speech.raw", quilter)
    out, pull_plug = alsa.output_fifo("out.fifo")
    alsa.write(file_pcm(MIC, speech, outfile=out))
    src = AlsaSource(MIC, 20, stall_timeout=0.5)
    src.open()
    frames = frames_from(src, 10)
    assert np.array_equal(pcm(frames), quilter[:3200])

    pull_plug.set()  # the plugin's next write fails: PortAudio reports a host error
    t = time.monotonic()
    with pytest.raises(SourceLost, match="Unanticipated host error"):
        for _ in range(1000):
            src.read(0.1)
    assert time.monotonic() - t < 1.0
    src.close()
    src.close()  # closing a dead stream twice never raises

    # The device comes back: reopen, and Frame.start keeps counting.
    alsa.write(file_pcm(MIC, speech))
    src.open()
    try:
        again = frames_from(src, 2)
        assert again[0].start >= 3200
        assert again[1].start == again[0].start + 320
        assert np.array_equal(pcm(again), quilter[:640])  # a fresh stream of the "device"
    finally:
        src.close()


@pytest.mark.parametrize("rate", [48000, 44100])
def test_device_at_other_rate_is_resampled(alsa: AlsaTestbed, rate: int) -> None:
    # 1 kHz speech-band tone plus a 10 kHz tone that would alias to 6 kHz without filtering.
    signal = sine(1000, rate, 1.2, amplitude=8000) + sine(10000, rate, 1.2, amplitude=8000)
    alsa.write(file_pcm(MIC, alsa.raw_file("tone.raw", signal)))
    src = AlsaSource(MIC, 20, rate=rate)
    src.open()
    try:
        assert src.stream_rate == rate
        out = pcm(frames_from(src, 50))
    finally:
        src.close()
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
            assert np.array_equal(pcm(frames_from(src, 25)), expected)
        finally:
            src.close()
    src = AlsaSource(MIC, 20, channel=128)  # the file plugin offers 128 channels
    with pytest.raises(
        SourceConfigError, match="channel 128 requested but 'edgecap_test_mic' has 128"
    ):
        src.open()


def test_frame_counter_continues_across_reopen(speech_mic: np.ndarray) -> None:
    src = AlsaSource(MIC, 30)
    src.open()
    first = frames_from(src, 3)
    src.close()
    src.open()
    second = frames_from(src, 2)
    src.close()
    assert [f.start for f in first + second] == [0, 480, 960, 1440, 1920]
    assert np.array_equal(pcm(second), speech_mic[:960])


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
