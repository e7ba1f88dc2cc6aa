from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgecap.audio.raw import RawSource
from edgecap.audio.source import NOT_READY, SourceConfigError
from edgecap.runtime.frames import Frame
from tests.audio.blocks import assert_blocks, frame_count
from tests.audio.conftest import MIC, AlsaTestbed, file_pcm
from tests.audio.signals import dominant_frequency, sine

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(5)
# Child process: frames from stdin ("-") until end of input, SHA-256 of their PCM on stdout.
HASH_FRAMES = """
import hashlib, sys
from edgecap.audio.raw import RawSource
src = RawSource("-", 20)
src.open()
out = b""
while (f := src.read(0.5)) is not None:
    out += getattr(f, "pcm", b"")  # NOT_READY has no pcm
sys.stdout.write(hashlib.sha256(out).hexdigest())
"""
SPEECHLIKE = (RNG.standard_normal(16000) * 5000).astype("<i2")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def read_all(src: RawSource, timeout: float = 1.0) -> list[Frame]:
    """Every block to the end of input (checked: whole frames, contiguous)."""
    blocks: list[Frame] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        b = src.read(timeout)
        if b is None:
            assert_blocks(blocks, src.frame_samples, src.block_frames, full=False)
            return blocks
        if isinstance(b, Frame):
            blocks.append(b)
    raise AssertionError("source never ended")


def test_pipe_with_partial_writes_is_exact(pipe: tuple[int, int]) -> None:
    r, w = pipe
    data = SPEECHLIKE[:5000].tobytes() + b"\x07"  # ends mid-sample
    src = RawSource(os.fdopen(r, "rb", buffering=0, closefd=False), 20)
    src.open()

    def writer() -> None:
        # Awkward sizes: split samples and frames everywhere.
        pos = 0
        for size in [1, 3, 639, 2, 641, 1000, 7] * 100:
            if pos >= len(data):
                break
            os.write(w, data[pos : pos + size])
            pos += size
            time.sleep(0.0005)
        os.close(w)

    t = threading.Thread(target=writer)
    t.start()
    blocks = read_all(src, timeout=1.5)
    t.join()
    out = np.frombuffer(b"".join(b.pcm for b in blocks), "<i2")
    assert blocks[0].start == 0
    assert frame_count(blocks) == 16  # 5000 samples + the padded half sample → 5001 → 16
    assert len(blocks) == 4  # whole blocks of 5 frames as they fill up, then the rest
    assert np.array_equal(out[:5000], SPEECHLIKE[:5000])
    assert out[5000] == 7  # the odd trailing byte is kept as the low byte, zero-padded
    assert not out[5001:].any()


def test_empty_pipe_returns_not_ready_promptly(pipe: tuple[int, int]) -> None:
    r, w = pipe
    src = RawSource(os.fdopen(r, "rb", buffering=0, closefd=False), 20)
    src.open()
    t = time.monotonic()
    assert src.read(0.05) is NOT_READY
    elapsed = time.monotonic() - t
    assert 0.04 <= elapsed < 0.2
    # Half a frame arrives: still not ready, and the half is kept.
    os.write(w, SPEECHLIKE[:160].tobytes())
    assert src.read(0.05) is NOT_READY
    # A frame and a half: not a block, so the timeout gives the whole frame there is.
    os.write(w, SPEECHLIKE[160:480].tobytes())
    f = src.read(0.05)
    assert isinstance(f, Frame)
    assert f.pcm == SPEECHLIKE[:320].tobytes()
    # A block comes as soon as it is whole, long before the timeout.
    os.write(w, SPEECHLIKE[480:1920].tobytes())
    t = time.monotonic()
    f = src.read(5.0)
    assert time.monotonic() - t < 0.5
    assert isinstance(f, Frame) and (f.start, f.samples) == (320, 1600)
    assert f.pcm == SPEECHLIKE[320:1920].tobytes()
    os.close(w)
    assert src.read(0.05) is None


def test_interrupt_wakes_a_read_waiting_on_a_silent_pipe(pipe: tuple[int, int]) -> None:
    r, _w = pipe
    src = RawSource(os.fdopen(r, "rb", buffering=0, closefd=False), 20)
    src.open()
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(src.read(30.0)))
    reader.start()
    time.sleep(0.1)
    t = time.monotonic()
    src.interrupt()
    reader.join(2)
    assert not reader.is_alive() and time.monotonic() - t < 0.5  # not the 30 s read
    assert got == [NOT_READY]
    t = time.monotonic()
    assert src.read(30.0) is NOT_READY  # stopping: no more waiting
    assert time.monotonic() - t < 0.5  # not the 30 s timeout
    src.close()
    src.interrupt()  # after close: harmless (no descriptor left to write to)


def test_stdin_dash_from_a_subprocess_pipe(tmp_path: Path) -> None:
    """The documented use: `arecord ... -t raw | edgecap run --source raw` (stdin = "-")."""
    raw = tmp_path / "in.raw"
    SPEECHLIKE[:3200].tofile(raw)
    with raw.open("rb") as stdin:
        res = subprocess.run(
            [sys.executable, "-c", HASH_FRAMES],
            stdin=stdin,
            capture_output=True,
            timeout=30,
            check=True,
            cwd=REPO,
        )
    assert res.stdout.decode() == hashlib.sha256(SPEECHLIKE[:3200].tobytes()).hexdigest()


@pytest.mark.skipif(shutil.which("arecord") is None, reason="arecord (alsa-utils) not installed")
def test_arecord_pipe_from_a_real_alsa_device(alsa: AlsaTestbed, quilter: np.ndarray) -> None:
    """The whole documented pipeline: arecord on an ALSA device | RawSource("-")."""
    alsa.write(file_pcm(MIC, alsa.raw_file("speech.raw", quilter)))
    command = ["arecord", "-q", "-D", MIC, "-f", "S16_LE", "-r", "16000", "-c", "1"]
    command += ["-t", "raw", "-s", "16000"]  # 16000 samples, then exit
    arecord = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert arecord.stdout is not None
    try:
        res = subprocess.run(
            [sys.executable, "-c", HASH_FRAMES],
            stdin=arecord.stdout,
            capture_output=True,
            timeout=30,
            check=True,
            cwd=REPO,
        )
    finally:
        arecord.stdout.close()
        arecord.wait(timeout=10)
    assert arecord.returncode == 0, arecord.stderr.read() if arecord.stderr else ""
    assert res.stdout.decode() == hashlib.sha256(quilter[:16000].tobytes()).hexdigest()


def test_path_and_48k_stereo_conversion(tmp_path: Path) -> None:
    stereo = np.stack([sine(440, 48000, 0.5), sine(2000, 48000, 0.5)], axis=1).astype("<i2")
    raw = tmp_path / "st.raw"
    stereo.tofile(raw)
    src = RawSource(raw, 20, rate=48000, channels=2, channel=1)
    src.open()
    out = np.frombuffer(b"".join(f.pcm for f in read_all(src)), "<i2")
    src.close()
    assert len(out) == 8000
    assert dominant_frequency(out[300:-300], 16000) == pytest.approx(2000, abs=2)


def test_in_memory_stream_without_fileno() -> None:
    src = RawSource(io.BytesIO(SPEECHLIKE[:700].tobytes()), 10)
    src.open()
    blocks = read_all(src)
    # 10 ms frames: a block of 10 frames (1600 samples) holds it all, the last frame padded
    assert [(b.start, b.samples) for b in blocks] == [(0, 800)]
    out = np.frombuffer(b"".join(b.pcm for b in blocks), "<i2")
    assert np.array_equal(out[:700], SPEECHLIKE[:700]) and not out[700:].any()


def test_fifo_path_with_no_writer_does_not_block_open(tmp_path: Path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    src = RawSource(fifo, 20)
    t = time.monotonic()
    src.open()
    assert src.read(0.05) is NOT_READY  # no writer yet: not end of input
    assert time.monotonic() - t < 0.5
    src.close()


def test_errors() -> None:
    with pytest.raises(SourceConfigError, match="not found"):
        RawSource("/nonexistent/input.raw", 20).open()
    with pytest.raises(SourceConfigError, match="channel 2 out of range"):
        RawSource("-", 20, channels=2, channel=2)


def test_a_directory_is_a_config_error_not_a_device_to_wait_for(tmp_path: Path) -> None:
    """Linux opens a directory read-only; only read() fails (EISDIR), which used to look like
    a lost device, retried for ever."""
    fds = set(os.listdir("/proc/self/fd"))
    src = RawSource(tmp_path, 20)
    with pytest.raises(SourceConfigError, match="is a directory") as e:
        src.open()
    assert str(tmp_path) in str(e.value)
    assert set(os.listdir("/proc/self/fd")) == fds  # the directory was not left open


def test_absurd_rates_and_channel_counts_are_refused() -> None:
    for rate in (0, 1, 7999, 192_001, 4_000_037):
        with pytest.raises(SourceConfigError, match=f"not {rate}"):
            RawSource("-", 20, rate=rate)
    for channels in (0, 9, 65535):
        with pytest.raises(SourceConfigError, match=f"not {channels}"):
            RawSource("-", 20, channels=channels)
    assert RawSource("-", 20, rate=192_000, channels=8).name == "raw:stdin"
