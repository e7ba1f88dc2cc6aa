"""Reading the shared test corpus (``../shared/corpus`` beside the repository) for tests and
benchmarks, and measuring where each clip's speech is.

The corpus is never copied into the repository: it is read in place. Its ``*.16k.wav`` files
are plain RIFF, 16 kHz mono s16le, so Python's ``wave`` module reads them.

Ground truth for speech clips is measured from the signal's energy, independently of
webrtcvad (the detector under test): the clip is cut into 20 ms frames, the frame level in
dB is compared with the clip's own background level (10th percentile of frame levels) and
speech level (95th percentile), and a frame counts as speech when its level is at least 40 %
of the way from background to speech level. The speech onset is the start of the first such
frame and the speech end the end of the last one. The clips' transcripts confirm speech in
between; the pauses inside a clip are not needed by the measures that use this.
"""

from __future__ import annotations

import json
import os
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecap.runtime.frames import SAMPLE_RATE, SAMPLE_WIDTH, Frame

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = Path(os.environ.get("EDGECAP_CORPUS", REPO_ROOT.parent / "shared" / "corpus"))

GT_FRAME = 320  # 20 ms: the resolution of the energy ground truth
GT_FRACTION = 0.4  # speech: level >= background + 40 % of (speech level - background)

CATEGORIES = {
    "speech": "speech",
    "non-speech (music)": "music",
    "non-speech (hum)": "hum",
    "non-speech (noise)": "kitchen",
}


@dataclass(frozen=True)
class Clip:
    base: str  # e.g. "en_jfk_inaugural_1961"
    category: str  # "speech", "music", "hum" or "kitchen"
    lang: str  # "en", "hi", ... or "-"
    path: Path  # the 16 kHz mono s16 WAV

    def pcm(self) -> bytes:
        return read_wav_16k(self.path)


def corpus_available(directory: Path = CORPUS_DIR) -> bool:
    return (directory / "manifest.json").is_file()


def clips(directory: Path = CORPUS_DIR) -> list[Clip]:
    """Every clip of the corpus, in manifest order."""
    entries = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    return [
        Clip(e["base"], CATEGORIES.get(e["cat"], e["cat"]), e["lang"], directory / e["file_16k"])
        for e in entries
    ]


def clip(base: str, directory: Path = CORPUS_DIR) -> Clip:
    for c in clips(directory):
        if c.base == base:
            return c
    raise KeyError(base)


def read_wav_16k(path: Path) -> bytes:
    """The samples of a 16 kHz mono s16 WAV, as s16le bytes."""
    with wave.open(str(path), "rb") as w:
        params = (w.getframerate(), w.getnchannels(), w.getsampwidth())
        if params != (SAMPLE_RATE, 1, SAMPLE_WIDTH):
            raise ValueError(f"{path}: not 16 kHz mono s16 but {params}")
        return w.readframes(w.getnframes())


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2")


def frames_of(
    pcm: bytes, frame_ms: int = 20, start: int = 0, captured_at: float = 0.0
) -> Iterator[Frame]:
    """Cut s16le audio into frames as a source would (a final partial frame is dropped)."""
    n = SAMPLE_RATE * frame_ms // 1000
    size = n * SAMPLE_WIDTH
    for i in range(len(pcm) // size):
        yield Frame(pcm[i * size : (i + 1) * size], start + i * n, captured_at)


def frame_levels_db(pcm: bytes, frame: int = GT_FRAME) -> np.ndarray:
    x = samples(pcm)
    n = len(x) // frame
    blocks = x[: n * frame].reshape(n, frame).astype(np.float64)
    return 10.0 * np.log10((blocks**2).mean(axis=1) + 1.0)


def speech_mask(pcm: bytes) -> np.ndarray:
    """Per 20 ms frame: True where the energy ground truth says speech (see module doc)."""
    db = frame_levels_db(pcm)
    floor, top = np.percentile(db, 10), np.percentile(db, 95)
    return db >= floor + GT_FRACTION * (top - floor)


def speech_bounds(pcm: bytes) -> tuple[int, int]:
    """(onset, end) of a speech clip in samples, from the energy ground truth."""
    idx = np.flatnonzero(speech_mask(pcm))
    if not len(idx):
        raise ValueError("no speech found")
    return int(idx[0]) * GT_FRAME, (int(idx[-1]) + 1) * GT_FRAME


def quiet_noise(n_samples: int, rms: float = 30.0, seed: int = 0) -> bytes:
    """Low-level white noise (about -60 dBFS): a quiet room that webrtcvad calls non-speech."""
    rng = np.random.default_rng(seed)
    x = np.clip(np.round(rng.normal(0.0, rms, n_samples)), -32768, 32767)
    return x.astype("<i2").tobytes()


def digital_silence(n_samples: int) -> bytes:
    return bytes(n_samples * SAMPLE_WIDTH)
