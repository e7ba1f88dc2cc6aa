"""Shared test helpers: where the shared corpus is, and reading its 16 kHz clips."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def corpus_clip(name: str) -> Path:
    """A clip of ../shared/corpus, read in place (never copied into the repo)."""
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"shared corpus clip {name} not found at {CORPUS}")
    return path


def read_pcm16(path: Path) -> bytes:
    """The s16le samples of a 16 kHz mono WAV (the corpus's *.16k.wav files)."""
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())
