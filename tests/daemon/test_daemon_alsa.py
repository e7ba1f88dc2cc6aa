"""The daemon with a real ALSA microphone (ALSA's file plugin): missing at start, then
plugged in. The daemon must wait for it without crash-looping or flooding the log, and
capture speech as soon as it appears."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.audio.conftest import file_pcm
from tests.conftest import REPO, corpus_clip, read_pcm16

MIC = "edgecap_test_mic"


def read_events(proc: subprocess.Popen, until: str, timeout: float) -> list[dict]:
    """JSON lines from the daemon's stdout until one satisfies ``until`` (a status state or
    an event type)."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        ev = json.loads(line)
        got.append(ev)
        state = ev.get("parts", {}).get("audio", {}).get("state")
        if until in (ev["type"], state):
            return got
    raise AssertionError(f"no {until!r} within {timeout} s; got {got}")


@pytest.mark.slow
def test_microphone_missing_at_start_then_plugged_in(tmp_path: Path):
    xdg = tmp_path / "xdg"
    (xdg / "alsa").mkdir(parents=True)
    asoundrc = xdg / "alsa" / "asoundrc"
    asoundrc.write_text("# no microphone yet\n")
    speech = tmp_path / "speech.raw"
    # Half a second of near-silence, then real speech (the plugin repeats its last buffer
    # once the file ends, which is fine here).
    speech.write_bytes(
        b"\x01\x00" * 8000 + read_pcm16(corpus_clip("en_librispeech_quilter.16k.wav"))
    )

    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["XDG_CONFIG_HOME"] = str(xdg)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgecap",
            "run",
            "--source",
            "alsa",
            "--device",
            MIC,
            "--json",
            "--set",
            "audio.retry_max=1s",
            "--set",
            f"socket.path={tmp_path / 'captions.sock'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        missing = read_events(proc, "device_missing", timeout=20)
        assert MIC in missing[-1]["parts"]["audio"]["detail"]
        time.sleep(3)  # several reopen attempts (retry_max = 1 s) while the mic is missing
        assert proc.poll() is None, "the daemon must wait for the microphone, not exit"
        asoundrc.write_text(file_pcm(MIC, speech))  # plug it in
        read_events(proc, "listening", timeout=20)
        read_events(proc, "speech_start", timeout=20)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    # The repeated failures were logged once, not once per attempt.
    assert err.count("audio device missing") == 1, err
    assert f"capturing from alsa:{MIC}" in err
