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


_EXIT_STATUS = [0]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS[0] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """No thread may outlive the suite (checked after pytest printed its summary). A test
    that fails half-way can leave a worker (a link, an emulator) running; a non-daemon
    thread then keeps the process alive for ever and CI waits for its time limit. Wait a
    moment for stragglers, then name them with their stacks and end with a failure."""
    import os
    import sys
    import threading
    import time
    import traceback

    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        left = [
            t
            for t in threading.enumerate()
            if t is not threading.main_thread() and not t.daemon and t.is_alive()
        ]
        if not left:
            return
        left[0].join(max(0.0, deadline - time.monotonic()))
    frames = sys._current_frames()
    report = [f"\n{len(left)} thread(s) still running after the tests ended:"]
    for t in left:
        report.append(f"--- {t.name}")
        frame = frames.get(t.ident or -1)
        if frame is not None:
            report.append("".join(traceback.format_stack(frame)[-6:]))
    sys.stderr.write("\n".join(report) + "\n")
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[0] or 1)
