"""The daemon end to end: a real `edgecap run` process, real pipes, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, corpus_clip, read_pcm16

SUMMARY = re.compile(
    r"gate forwarded \d+ frames in (\d+) blocks and (\d+) utterances; "
    r"consumer received (\d+) blocks in (\d+) utterances; (\d+) blocks dropped"
)


# the sockets' directories, under one removed when the test process ends
_SOCKET_DIRS = tempfile.TemporaryDirectory(prefix="edgecap-test-")


def edgecap(*args: str, **kw) -> subprocess.Popen:
    """`edgecap ARGS` as a process; `run` gets a socket of its own (tests run in parallel
    and must not meet at /run/edgecap/captions.sock)."""
    if args and args[0] == "run" and not kw.pop("own_socket", False):
        sock = Path(tempfile.mkdtemp(dir=_SOCKET_DIRS.name)) / "captions.sock"
        args = ("run", "--set", f"socket.path={sock}", *args[1:])
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(kw.pop("env", {}))
    return subprocess.Popen(
        [sys.executable, "-m", "edgecap", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
        **kw,
    )


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def assert_well_formed(evs: list[dict]) -> list[dict]:
    """Every speech_start is followed by its speech_end; returns the ends."""
    speech = [e for e in evs if e["type"] in ("speech_start", "speech_end")]
    assert len(speech) % 2 == 0, speech
    ends = []
    for start, end in zip(speech[::2], speech[1::2], strict=True):
        assert start["type"] == "speech_start" and end["type"] == "speech_end"
        assert start["utterance"] == end["utterance"]
        assert end["end"] > end["start"] == start["start"]
        ends.append(end)
    return ends


@pytest.mark.slow
def test_a_wav_file_runs_to_the_end_and_exits_0():
    clip = corpus_clip("en_jfk_inaugural_1961.16k.wav")
    proc = edgecap("run", "--file", str(clip), "--fast", "--json", "--set", "gate.hangover=300ms")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    evs = events(out)
    ends = assert_well_formed(evs)
    assert len(ends) >= 2  # JFK pauses between phrases are longer than 300 ms
    assert ends[-1]["end"] <= 11.0 + 1e-6
    states = [e["parts"]["audio"]["state"] for e in evs if e["type"] == "status"]
    assert states[-1] == "ended"
    forwarded, utt, received, utt2, dropped = map(int, SUMMARY.search(err).groups())
    assert (forwarded, utt, dropped) == (received, utt2, 0)


def test_sigterm_mid_utterance_stops_within_2_s_and_loses_nothing_in_flight():
    speech = read_pcm16(corpus_clip("en_librivox_shakespeare_sonnet001.16k.wav"))
    proc = edgecap(
        "run",
        "--source",
        "raw",
        "--json",
        "--set",
        "gate.max_utterance=0",
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stop_feeding = threading.Event()

    def feed() -> None:
        # Faster than real time but continuous, and never ending: only the signal stops it.
        try:
            for i in range(0, len(speech), 6400):
                if stop_feeding.is_set():
                    return
                proc.stdin.buffer.write(speech[i : i + 6400])
                proc.stdin.buffer.flush()
                time.sleep(0.02)
        except (BrokenPipeError, ValueError):
            pass

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        first = proc.stdout.readline()
        while first and json.loads(first)["type"] != "speech_start":
            first = proc.stdout.readline()
        assert json.loads(first)["type"] == "speech_start"
        time.sleep(0.5)  # well inside the utterance
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # Not communicate(): it closes stdin, and the daemon would see end of input.
        proc.wait(timeout=10)
        stopped_in = time.monotonic() - signalled
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        stop_feeding.set()
        feeder.join(5)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert stopped_in < 2.5, f"took {stopped_in:.2f} s to stop"
    evs = events(first + out)
    ends = assert_well_formed(evs)
    assert ends[-1]["reason"] == "stop"
    assert "stopping (SIGTERM)" in err
    forwarded, utt, received, utt2, dropped = map(int, SUMMARY.search(err).groups())
    assert forwarded > 0 and (forwarded, utt, dropped) == (received, utt2, 0)


def test_a_file_that_is_not_a_wav_is_a_config_error(tmp_path: Path):
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not audio\n")
    proc = edgecap("run", "--file", str(bogus), "--fast")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 78
    assert "audio source cannot be used" in err
    assert "Traceback" not in err
