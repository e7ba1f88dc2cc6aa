"""Fixtures for the audio tests: real ALSA devices without a sound card, and the speech corpus.

ALSA's ``file`` PCM plugin captures from a file: with a ``null`` slave, every read returns the
next bytes of ``infile``, bit-exact. PyAudio lists such a PCM under its config name (PortAudio
walks the config's pcm definitions; the ``hint`` is for other tools), with 128 input channels
and a default rate of 44100 Hz. What the plugin does (measured on alsa-lib 1.2.8 / PortAudio
19.6):

- ``get_read_available()`` always reports the slave's whole buffer (two periods, i.e. twice
  ``frames_per_buffer``): it says nothing about the input file. A read waits in the kernel
  for the file's data.
- A regular ``infile`` is read as fast as asked. At its end the plugin does not fail: it keeps
  returning whatever was last in its buffer (stale samples), forever.
- A FIFO ``infile`` paces capture to its writer. The FIFO must have a writer when ALSA opens
  it (PortAudio opens every device while listing them), otherwise the open blocks for ever:
  the tests hold it open O_RDWR. If the writer pauses, a read blocks inside the kernel until
  data comes; if every writer closes, the plugin returns stale samples at full speed.
- The plugin fills each capture read with ONE read() of its infile: from a FIFO that holds
  less than the read asks for, the rest of the block is stale samples. AlsaSource reads a
  block (a PortAudio period) at a time, so a FIFO writer must write whole blocks (3200 bytes
  every 100 ms at 20 ms frames), as a device with that period delivers them.
- Read errors on ``infile`` are ignored by the plugin, but write errors on its output
  ``file`` are not: a FIFO whose reader has gone makes the next capture read fail with
  PortAudio's "Unanticipated host error" (-9999), exactly what an unplugged USB microphone
  gives. That is how the tests pull a device out mid-stream.
- A missing ``infile`` leaves the device listed with 0 input channels.
- Any rate and channel count is accepted (the ``multi`` plugin, which could force 2
  channels, delivers only zeros from file slaves).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from edgecap.audio.wav import read_wav

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
QUILTER = "en_librispeech_quilter.16k.wav"
MIC = "edgecap_test_mic"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"speech corpus not found at {CORPUS} (it lives in shared/, beside the repo)")
    return CORPUS


@pytest.fixture(scope="session")
def quilter(corpus_dir: Path) -> np.ndarray:
    """5.9 s of real speech, 16 kHz mono int16, read with our own WAV parser."""
    path = corpus_dir / QUILTER
    if not path.is_file():
        pytest.skip(f"{path} not found in the corpus")
    info, samples = read_wav(path)
    assert (info.rate, info.channels) == (16000, 1)
    return samples[:, 0].copy()


def file_pcm(
    name: str,
    infile: str | Path,
    *,
    outfile: str | Path = "/dev/null",
    description: str | None = None,
) -> str:
    """asoundrc text for a capture device reading raw s16le from ``infile``."""
    return (
        f"pcm.{name} {{\n"
        f"    type file\n"
        f'    slave.pcm "null"\n'
        f'    file "{outfile}"\n'
        f'    infile "{infile}"\n'
        f'    format "raw"\n'
        f'    hint {{ show on description "{description or name}" }}\n'
        f"}}\n"
    )


@dataclass
class AlsaTestbed:
    """A private ALSA configuration (XDG_CONFIG_HOME/alsa/asoundrc) plus helpers."""

    root: Path
    config_home: Path
    _fds: list[int] = field(default_factory=list)
    _threads: list[tuple[threading.Thread, threading.Event]] = field(default_factory=list)

    @property
    def asoundrc(self) -> Path:
        return self.config_home / "alsa" / "asoundrc"

    def write(self, *pcms: str) -> None:
        self.asoundrc.parent.mkdir(parents=True, exist_ok=True)
        self.asoundrc.write_text("".join(pcms))

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.asoundrc.unlink()

    def raw_file(self, name: str, samples: np.ndarray) -> Path:
        path = self.root / name
        np.asarray(samples).astype("<i2").tofile(path)
        return path

    def fifo(self, name: str) -> tuple[Path, int]:
        """A FIFO held open read-write by the test, so ALSA's open never blocks on it."""
        path = self.root / name
        os.mkfifo(path)
        fd = os.open(path, os.O_RDWR)
        self._fds.append(fd)
        return path, fd

    def output_fifo(self, name: str) -> tuple[Path, threading.Event]:
        """A FIFO for the plugin's output ``file``, drained by a thread.

        Setting the returned event closes the read end: the plugin's next write gets EPIPE.
        """
        path = self.root / name
        os.mkfifo(path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a reader exists before ALSA opens
        gone = threading.Event()

        def drain() -> None:
            try:
                while not gone.is_set():
                    ready, _, _ = select.select([fd], [], [], 0.01)
                    if ready:
                        with contextlib.suppress(BlockingIOError):
                            os.read(fd, 1 << 16)
            finally:
                os.close(fd)

        t = threading.Thread(target=drain, name=f"drain-{name}", daemon=True)
        t.start()
        self._threads.append((t, gone))
        return path, gone

    def paced_writer(
        self, fd: int, pcm: bytes, *, chunk: int = 3200, interval: float = 0.1
    ) -> threading.Event:
        """Write ``pcm`` into ``fd`` ``chunk`` bytes every ``interval`` s on an absolute
        schedule. Returns an event that stops the writer early."""
        stop = threading.Event()

        def run() -> None:
            t0 = time.monotonic()
            for i, off in enumerate(range(0, len(pcm), chunk)):
                if stop.is_set():
                    return
                os.write(fd, pcm[off : off + chunk])
                delay = t0 + (i + 1) * interval - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return

        t = threading.Thread(target=run, name="paced-writer", daemon=True)
        t.start()
        self._threads.append((t, stop))
        return stop

    def cleanup(self) -> None:
        for t, ev in self._threads:
            ev.set()
            t.join(timeout=2)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AlsaTestbed]:
    """ALSA reads $XDG_CONFIG_HOME/alsa/asoundrc afresh for every new PyAudio instance."""
    config_home = tmp_path / "xdg"
    config_home.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    bed = AlsaTestbed(root=tmp_path, config_home=config_home)
    yield bed
    bed.cleanup()
