"""Bad audio input through the real daemon: `edgecap run --file X --fast` as a process.

A corrupt or hostile WAV header, a float file full of NaN, a directory given as raw input and a
file name with terminal escapes: each must end in a clear, escaped message and the documented
exit status (78 = EX_CONFIG, which systemd does not restart), never in a traceback (70), a huge
allocation or a retry loop.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from edgecap.audio.wav import read_wav
from tests.audio.signals import raw_wav_bytes, wav_bytes, write_wav
from tests.conftest import REPO, corpus_clip

EX_CONFIG = 78
SUMMARY = re.compile(r"gate forwarded (\d+) frames in (?:\d+ blocks and )?(\d+) utterances")


def run_file(path: Path, *extra: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """`edgecap run --file PATH --fast` with the offline engine and no socket."""
    return run(
        "--file", str(path), "--fast", "--set", "daemon.service=local", *extra, timeout=timeout
    )


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgecap", "run", "--set", "socket.enabled=no", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )


def decoded(json_lines: str) -> str:
    """Every string in JSON lines, decoded: what a client of the JSON would display."""
    out: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(k)
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for line in json_lines.splitlines():
        walk(json.loads(line))
    return "\n".join(out)


# name → (header fields, what the error must say); every other case is in test_wav.py
ABSURD = {
    "rate_4294967295": ({"rate": 0xFFFFFFFF}, "4294967295 Hz"),  # was: exit 70, 106 GiB
    "rate_4000037": ({"rate": 4_000_037}, "4000037 Hz"),  # was: 1.45 GB resident
    "rate_1": ({"rate": 1, "payload": bytes(187_000)}, "1 Hz"),  # was: 26 h of "audio"
    "channels_65535": (
        {"channels": 65535, "bits": 8, "payload": bytes(65535 * 8)},  # was: 256 MB per read
        "65535 channels",
    ),
    "bits_7": ({"bits": 7, "block_align": 1}, "7 bits"),  # was: played
    "block_align": ({"channels": 2, "block_align": 3}, "block align 3"),
}


@pytest.mark.slow  # eight daemon runs: 3-8 s on two cores
def test_absurd_headers_exit_78_naming_the_file_and_the_value(tmp_path: Path) -> None:
    files = {}
    for name, (fields, _) in ABSURD.items():
        files[name] = tmp_path / f"{name}.wav"
        files[name].write_bytes(raw_wav_bytes(**fields))
    whole = raw_wav_bytes()
    files["truncated"] = tmp_path / "truncated.wav"
    files["truncated"].write_bytes(whole[:30])  # ends inside the fmt chunk
    with ThreadPoolExecutor(4) as pool:  # ~0.8 s each, mostly start-up
        results = dict(zip(files, pool.map(run_file, files.values()), strict=True))
    for name, res in results.items():
        says = ABSURD[name][1] if name in ABSURD else "truncated WAV header"
        assert res.returncode == EX_CONFIG, (name, res.returncode, res.stderr[-2000:])
        assert "Traceback" not in res.stderr, (name, res.stderr[-2000:])
        lines = [x for x in res.stderr.splitlines() if "audio source cannot be used" in x]
        assert len(lines) == 1 and str(files[name]) in lines[0] and says in lines[0], (
            name,
            res.stderr[-2000:],
        )


def test_a_data_size_past_the_end_of_the_file_is_read_to_the_end(tmp_path: Path) -> None:
    """A recorder that crashed before it could patch the size: what is there is played."""
    path = tmp_path / "crashed.wav"
    path.write_bytes(raw_wav_bytes(payload=bytes(16000), data_size=0xFFFFFFF0))
    res = run_file(path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "claims 4294967280 bytes but the file holds 16000: reading to end of file" in (
        res.stderr
    )
    assert "25 frames captured (0.5 s)" in res.stderr


@pytest.mark.slow  # two daemon runs with the offline engine: 3-8 s
def test_nan_and_inf_samples_are_replaced_said_once_and_never_reach_the_gate_as_garbage(
    tmp_path: Path,
) -> None:
    """Real speech as 32-bit float with NaN through its pauses and single NaN/inf samples in
    the words: the daemon must treat it exactly like the same file with NaN → 0.0 and
    ±inf → ±1.0 written in (same utterances, same frame counts), and warn once."""
    _, speech = read_wav(corpus_clip("en_librispeech_quilter.16k.wav"))
    f = speech[:, 0].astype(np.float32) / 32768
    damaged = f.copy()
    quiet = np.flatnonzero(np.abs(f) < 0.002)
    damaged[quiet[::3]] = np.nan  # a third of the quiet samples
    loud = np.flatnonzero(np.abs(f) > 0.05)
    damaged[loud[::997]] = np.inf
    damaged[loud[500::997]] = -np.inf
    damaged[loud[250::997]] = np.nan
    n_nan, n_inf = int(np.isnan(damaged).sum()), int(np.isinf(damaged).sum())
    assert n_nan > 1000 and n_inf > 20
    clamped = np.nan_to_num(damaged, nan=0.0, posinf=1.0, neginf=-1.0)
    paths = []
    for name, samples in (("damaged", damaged), ("clamped", clamped)):
        paths.append(tmp_path / f"{name}.wav")
        paths[-1].write_bytes(
            wav_bytes(samples.astype("<f4").tobytes(), tag=3, channels=1, rate=16000, bits=32)
        )
    with ThreadPoolExecutor(2) as pool:
        bad, ref = pool.map(lambda p: run_file(p, "--json"), paths)
    assert bad.returncode == 0 and ref.returncode == 0, bad.stderr[-2000:] + ref.stderr[-2000:]
    speech_events = [
        [e for e in map(json.loads, r.stdout.splitlines()) if e["type"].startswith("speech_")]
        for r in (bad, ref)
    ]
    assert speech_events[0] == speech_events[1] and speech_events[0]
    assert SUMMARY.search(bad.stderr).groups() == SUMMARY.search(ref.stderr).groups()
    warnings = [x for x in bad.stderr.splitlines() if "WARNING" in x and "NaN" in x]
    assert len(warnings) == 1, bad.stderr[-3000:]
    assert str(paths[0]) in warnings[0] and "silence" in warnings[0]
    assert f"{n_nan} NaN and {n_inf} infinite float sample(s) replaced in all" in bad.stderr
    assert "NaN" not in ref.stderr


def test_raw_input_that_is_a_directory_exits_78_at_once(tmp_path: Path) -> None:
    """It used to be taken for a lost device and retried for ever."""
    res = run("--source", "raw", "--set", f"audio.raw_input={tmp_path}", timeout=20)
    assert res.returncode == EX_CONFIG, res.stderr[-2000:]
    assert "audio.raw_input: is a directory" in res.stderr
    assert "Traceback" not in res.stderr


def test_raw_input_that_does_not_exist_stays_a_config_error(tmp_path: Path) -> None:
    res = run("--source", "raw", "--set", f"audio.raw_input={tmp_path / 'nope'}", timeout=20)
    assert res.returncode == EX_CONFIG, res.stderr[-2000:]
    assert f"raw input not found: {tmp_path / 'nope'}" in res.stderr


@pytest.mark.parametrize("content", ["good", "bad"])
def test_a_file_name_with_a_bidi_override_reaches_no_output_raw(
    tmp_path: Path, content: str
) -> None:
    """U+202E (right-to-left override) is a format character the config accepts in a path (it
    is not a control character), but on a terminal it reverses the rest of the line."""
    path = tmp_path / "minutes\u202ev4w.exe.wav"
    if content == "good":
        write_wav(path, np.zeros(1600, np.int16), 16000)
    else:
        path.write_bytes(raw_wav_bytes(rate=1))
    res = run_file(path, "--json")
    assert res.returncode == (0 if content == "good" else EX_CONFIG), res.stderr[-2000:]
    shown = f"{tmp_path}/minutes\\u202ev4w.exe.wav"
    for stream in (res.stderr, decoded(res.stdout)):
        assert "\u202e" not in stream
    assert shown in res.stderr
    if content == "good":
        details = [
            e["parts"]["audio"]["detail"]
            for e in map(json.loads, res.stdout.splitlines())
            if e["type"] == "status"
        ]
        assert f"wav:{shown}" in details
    else:
        assert f"audio source cannot be used: {shown}: the header says 1 Hz" in res.stderr


def test_a_file_name_with_terminal_escapes_reaches_no_output_raw(tmp_path: Path) -> None:
    path = tmp_path / "a\x1b[31mred\x1b]0;title\x07.wav"
    write_wav(path, np.zeros(1600, np.int16), 16000)
    res = run_file(path, "--json")
    assert res.returncode in (0, EX_CONFIG), res.stderr[-2000:]  # the config may refuse it
    for stream in (res.stderr, decoded(res.stdout)):
        assert "\x1b" not in stream and "\x07" not in stream
