"""The daemon's plain path never loads numpy (issue 14: peak RSS ≤ 40 MiB without HDMI).

``import numpy`` alone costs about 15 MB of RSS. A microphone opened at 16 kHz mono s16le
(ALSA's file plugin, most USB microphones) hands over bytes that already are the samples,
so capture, gate, link (Soniox) and the socket output need no numpy at all; audio that must
be decoded, mixed or resampled does, and loads it then. Each check runs in a fresh
interpreter (this one has numpy loaded by the fixtures), with real ALSA devices from the
file plugin (tests/audio/conftest.py) and, end to end, the real daemon against the Soniox
emulator.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.audio.conftest import file_pcm
from tests.conftest import REPO, corpus_clip, read_pcm16
from tests.daemon.test_daemon import edgecap
from tests.emulators.soniox import SonioxEmulator

MIC = "edgecap_test_mic"
BLOCK_BYTES = 3200  # 100 ms of 16 kHz s16le mono: one PortAudio period of the daemon


def run_python(code: str, *, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter in the repository; its stdout."""
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    full_env.update(env or {})
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=full_env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def alsa_env(tmp_path: Path, infile: Path) -> dict[str, str]:
    """A private ALSA configuration with one capture device reading ``infile``."""
    xdg = tmp_path / "xdg"
    (xdg / "alsa").mkdir(parents=True, exist_ok=True)
    (xdg / "alsa" / "asoundrc").write_text(file_pcm(MIC, infile))
    return {"XDG_CONFIG_HOME": str(xdg)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tone(rate: int, seconds: float, freq: float = 440.0, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * math.pi * freq * t)).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """int16 samples shaped (frames, channels) as a plain PCM WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


# What a fresh interpreter reports after reading a source: "<numpy loaded before open> <numpy
# loaded at the end> <blocks> <samples> <rms> <sha of the pcm>"
READ_SOURCE = """
import hashlib, math, sys, array
from edgecap.audio.{module} import {cls}
source = {cls}({args})
before = "numpy" in sys.modules
source.open()
blocks, pcm = 0, bytearray()
try:
    while blocks < {max_blocks}:
        block = source.read(2.0)
        if block is None:
            break
        if hasattr(block, "pcm"):
            blocks += 1
            pcm += block.pcm
finally:
    source.close()
samples = array.array("h", bytes(pcm))
rms = math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))
digest = hashlib.sha256(pcm).hexdigest()
print(before, "numpy" in sys.modules, blocks, len(samples), round(rms), digest)
"""


def read_source(
    module: str, cls: str, args: str, *, max_blocks: int = 10**6, env: dict[str, str] | None = None
) -> tuple[bool, bool, int, int, int, str]:
    out = run_python(
        READ_SOURCE.format(module=module, cls=cls, args=args, max_blocks=max_blocks), env=env
    )
    before, after, blocks, samples, rms, digest = out.split()
    return before == "True", after == "True", int(blocks), int(samples), int(rms), digest


def test_the_daemon_built_for_the_plain_path_has_not_loaded_numpy(tmp_path: Path):
    """Every module the plain path imports, and the Daemon wired from such a config."""
    code = f"""
import sys
from pathlib import Path
from edgecap.config.loader import load
from edgecap.daemon.supervisor import Daemon
import edgecap.audio.alsa, edgecap.audio.wav, edgecap.audio.raw, edgecap.runtime.resample
import edgecap.gate.speech_gate, edgecap.link.worker, edgecap.services.soniox
import edgecap.outputs.socket_server
loaded = load(overrides=["daemon.service=soniox", "stdout.enabled=no", "audio.source=alsa",
                         "socket.path={tmp_path / "s.sock"}", "audio.device={MIC}"],
              etc_dir=Path({str(tmp_path)!r}), env={{"SONIOX_API_KEY": "k"}})
Daemon(loaded)
print(sorted(m for m in sys.modules if m.split(".")[0] == "numpy"))
"""
    assert run_python(code).strip() == "[]"


def test_the_hdmi_screen_draws_captions_and_its_qr_code_without_numpy(tmp_path: Path):
    """The HDMI output packs pixels with Pillow alone (issue 14: ≤ 60 MiB with 1080p HDMI;
    numpy would be 12 of them): a daemon wired with the screen, and the screen opened and
    drawing a caption beside the join QR code, in a fresh interpreter."""
    sysfs = tmp_path / "sys" / "fb0"
    sysfs.mkdir(parents=True)
    for name, value in (
        ("virtual_size", "1920,1080"),
        ("bits_per_pixel", "16"),
        ("stride", "3840"),
    ):
        (sysfs / name).write_text(value + "\n")
    fb = tmp_path / "fb0"
    fb.write_bytes(b"\xff" * 3840 * 1080)
    code = f"""
import sys
from pathlib import Path
from edgecap.captions.events import CaptionLine
from edgecap.config.loader import load
from edgecap.daemon.supervisor import Daemon
from edgecap.outputs.hdmi import HdmiOutput
loaded = load(overrides=["daemon.service=soniox", "stdout.enabled=no", "audio.source=alsa",
                         "socket.path={tmp_path / "s.sock"}", "audio.device={MIC}",
                         "hdmi.enabled=yes", "hdmi.device={fb}", "hdmi.sysfs={tmp_path / "sys"}"],
              etc_dir=Path({str(tmp_path)!r}), env={{"SONIOX_API_KEY": "k"}})
Daemon(loaded)
out = HdmiOutput(Path({str(fb)!r}), Path({str(tmp_path / "sys")!r}),
                 join_url="http://192.168.1.20:8080/")
out.open()
out.handle(CaptionLine(1, "Good evening and welcome", None, "en", None, None, True, True))
out.idle(10**9)
data = Path({str(fb)!r}).read_bytes()
print(sorted(m for m in sys.modules if m.split(".")[0] == "numpy"), out.strips_drawn,
      len(set(data)) > 2, data.count(b"\\xff") < len(data))
"""
    numpy_loaded, drawn, inked, cleared = run_python(code).rsplit(None, 3)
    assert numpy_loaded == "[]" and int(drawn) >= 1 and inked == cleared == "True"


def test_a_16k_mono_microphone_wav_and_pipe_are_read_without_numpy(tmp_path: Path):
    speech = read_pcm16(corpus_clip("en_librispeech_quilter.16k.wav"))
    raw = tmp_path / "speech.raw"
    raw.write_bytes(speech)
    # ALSA (file plugin, a regular file: read as fast as asked): ten blocks, bit-exact
    before, after, blocks, samples, _, digest = read_source(
        "alsa", "AlsaSource", f"{MIC!r}, 20", max_blocks=10, env=alsa_env(tmp_path, raw)
    )
    assert (before, after) == (False, False)
    assert (blocks, samples) == (10, 16000)
    assert digest == _sha(speech[: 16000 * 2])
    # a 16 kHz mono s16 WAV, to its end (the last block padded to a whole frame)
    wav = corpus_clip("en_librispeech_quilter.16k.wav")
    before, after, blocks, samples, _, digest = read_source(
        "wav", "WavSource", f"{str(wav)!r}, 20, realtime=False"
    )
    assert (before, after) == (False, False)
    padded = speech + bytes(-len(speech) % 640)
    assert samples * 2 == len(padded) and digest == _sha(padded)
    # raw s16le on a file, to its end
    before, after, _, samples, _, digest = read_source("raw", "RawSource", f"{str(raw)!r}, 20")
    assert (before, after) == (False, False)
    assert digest == _sha(padded)


def test_a_48k_stereo_microphone_loads_numpy_and_is_resampled(tmp_path: Path):
    """The reverse: a device opened at 48 kHz stereo (channel 1 asked for) needs numpy, and
    gets it the moment it is opened."""
    right = tone(48000, 1.5)
    stereo = np.stack([np.zeros_like(right), right], axis=1)  # left silent, right the tone
    raw = tmp_path / "stereo48k.raw"
    raw.write_bytes(stereo.astype("<i2").tobytes())
    before, after, blocks, samples, rms, _ = read_source(
        "alsa",
        "AlsaSource",
        f"{MIC!r}, 20, rate=48000, channel=1",
        max_blocks=10,
        env=alsa_env(tmp_path, raw),
    )
    assert (before, after) == (False, True)
    assert blocks == 10 and 15000 <= samples <= 16000  # resampled: 100 ms a period, ± look-ahead
    assert abs(rms - 8000 / math.sqrt(2)) < 200, rms  # the right channel's tone, not the mix


def test_a_44k_stereo_wav_loads_numpy_and_is_resampled(tmp_path: Path):
    left = tone(44100, 1.0, amplitude=4000)
    wav = write_wav(tmp_path / "stereo44k.wav", np.stack([left, left], axis=1), 44100)
    before, after, _, samples, rms, _ = read_source(
        "wav", "WavSource", f"{str(wav)!r}, 20, realtime=False"
    )
    assert (before, after) == (False, True)
    assert samples == 16000  # one second at 16 kHz, whole frames
    assert abs(rms - 4000 / math.sqrt(2)) < 150, rms


class PacedFifo:
    """Writes ``pcm`` into a FIFO one 100 ms block every 100 ms, as a microphone delivers it.

    The FIFO is held open read-write here, so ALSA's open never blocks on it. A block is
    written only when the FIFO has room for it (3200 bytes ≤ PIPE_BUF: the write never
    blocks), so the writer stops within one wait whatever the reader does.
    """

    def __init__(self, path: Path, pcm: bytes) -> None:
        os.mkfifo(path)
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        self._pcm = pcm
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-fifo", daemon=True)

    def __enter__(self) -> PacedFifo:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self._fd)

    def _run(self) -> None:
        t0 = time.monotonic()
        for i, off in enumerate(range(0, len(self._pcm), BLOCK_BYTES)):
            if self._stop.wait(max(0.0, t0 + i * 0.1 - time.monotonic())):
                return
            _, writable, _ = select.select([], [self._fd], [], 0.5)
            if writable:
                os.write(self._fd, self._pcm[off : off + BLOCK_BYTES])


@contextlib.contextmanager
def socket_client(path: Path, timeout: float) -> Iterator[socket.socket]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no socket at {path} within {timeout} s"
        time.sleep(0.05)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        yield s


def first_final_caption(client: socket.socket, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no final caption within {timeout} s"
        client.settimeout(remaining)
        data = client.recv(65536)
        assert data, "the daemon closed the socket before a final caption"
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            m = json.loads(line)
            if m["type"] == "caption" and m["final"] and m["text"]:
                return m


@pytest.mark.slow
def test_edgecap_run_on_a_16k_mono_microphone_never_maps_numpy(tmp_path: Path):
    """The real daemon: ALSA capture (file plugin on a FIFO paced in real time), the gate,
    the link to the Soniox emulator over TLS, captions to a socket client. Once a caption
    has made the whole round trip, no numpy library is mapped into the process."""
    speech = read_pcm16(corpus_clip("en_librispeech_quilter.16k.wav"))
    sock = tmp_path / "captions.sock"
    with (
        SonioxEmulator(tmp_path / "emu", api_key="the-key", lag_ms=100) as emu,
        PacedFifo(tmp_path / "mic.fifo", speech) as fifo,
    ):
        ini = tmp_path / "edgecap.ini"
        ini.write_text(
            "[daemon]\nservice = soniox\n"
            f"[audio]\nsource = alsa\ndevice = {MIC}\n"
            f"[soniox]\nurl = {emu.url}\napi_key = env:SONIOX_API_KEY\n"
            f"[link]\nca_file = {emu.ca_file}\n"
            f"[socket]\npath = {sock}\n"
            "[stdout]\nenabled = no\n"
        )
        env = {"SONIOX_API_KEY": "the-key", **alsa_env(tmp_path, fifo.path)}
        proc = edgecap("run", "-c", str(ini), own_socket=True, env=env)
        try:
            with socket_client(sock, timeout=20) as client:
                caption = first_final_caption(client, timeout=20)
                maps = Path(f"/proc/{proc.pid}/maps").read_text()
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert f"opened alsa:{MIC} at 16000 Hz, 1 channel(s)" in err
    assert caption["text"] and emu.sessions and emu.sessions[0].audio
    assert "libportaudio" in maps and "_ssl" in maps  # the maps are the daemon's, read whole
    numpy_maps = sorted({line.split()[-1] for line in maps.splitlines() if "numpy" in line})
    assert not numpy_maps, numpy_maps
