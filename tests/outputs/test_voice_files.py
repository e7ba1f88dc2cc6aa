"""Spoken translations saved as WAV files, real files: names, byte-exact contents, no half
files under a final name, cut and interrupted utterances, rotation, and a disk that is full
(a real tmpfs) or not a directory, under the real OutputWorker."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import stat
import subprocess
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgecap.captions.events import CaptionLine, SynthesizedAudio
from edgecap.config.schema import SpeakerConfig
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.voice_files import VoiceFilesOutput, file_name
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard
from tests.outputs.test_utterance import wav_file

T0 = dt.datetime(2026, 12, 7, 14, 35, 1).timestamp()  # local time


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def noise(seconds: float, seed: int = 0, rate: int = 16000) -> bytes:
    n = round(seconds * rate)
    return np.random.default_rng(seed).integers(-9000, 9000, n).astype("<i2").tobytes()


def utterance(wav: bytes, seq: int | None, lang: str = "de", *, size: int = 3200, end=True):
    events = [
        SynthesizedAudio(lang, "audio/x-wav", wav[i : i + size], False, seq)
        for i in range(0, len(wav), size)
    ]
    if end:
        events.append(SynthesizedAudio(lang, "audio/x-wav", b"", True, seq))
    return events


def play(out: VoiceFilesOutput, events) -> None:
    for e in events:
        out.handle(e)


def listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def out(tmp_path: Path, clock: Clock) -> Iterator[VoiceFilesOutput]:
    o = VoiceFilesOutput(tmp_path / "voice", max_files=100, status=StatusBoard(), clock=clock)
    o.open()
    yield o
    o.close()


def test_one_file_per_utterance_named_by_time_line_and_language(
    out: VoiceFilesOutput, clock: Clock
) -> None:
    first, second = wav_file(noise(1.0, 1)), wav_file(noise(0.5, 2, 24000), rate=24000)
    play(out, utterance(first, 123))
    clock.t += 2.5
    play(out, utterance(second, 124, "zh-Hans"))
    assert listing(out.directory) == [
        "20261207-143501-000123-de.wav",
        "20261207-143503-000124-zh-Hans.wav",
    ]
    # byte-exact: the service's WAV (a canonical header with real sizes) as it was sent
    assert (out.directory / "20261207-143501-000123-de.wav").read_bytes() == first
    assert (out.directory / "20261207-143503-000124-zh-Hans.wav").read_bytes() == second
    with wave.open(str(out.directory / "20261207-143503-000124-zh-Hans.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (24000, 1, 12000)
    assert out.saved == 2


def test_names_are_safe_and_sort_by_time() -> None:
    assert file_name(T0, None, "de") == "20261207-143501-000000-de.wav"
    assert file_name(T0, 7, "../../etc/x\n") == "20261207-143501-000007-etcx.wav"
    assert file_name(T0, 1234567, "") == "20261207-143501-1234567-xx.wav"
    names = [file_name(T0 + s, 999 - s, "de") for s in (0, 1, 61, 3600)]
    assert sorted(names) == names


def test_the_directory_is_made_0750_and_files_0640(tmp_path: Path, clock: Clock) -> None:
    old = os.umask(0o022)
    try:
        o = VoiceFilesOutput(tmp_path / "a" / "voice", clock=clock)
        o.open()
        play(o, utterance(wav_file(noise(0.1)), 1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "voice").st_mode) == 0o750
    (saved,) = list((tmp_path / "a" / "voice").iterdir())
    assert stat.S_IMODE(saved.stat().st_mode) == 0o640


def test_an_utterance_has_no_final_name_until_it_is_complete(out: VoiceFilesOutput) -> None:
    pcm = noise(1.0, 3)
    events = utterance(wav_file(pcm), 5)
    play(out, events[:-1])
    (part,) = listing(out.directory)
    assert part == ".20261207-143501-000005-de.wav.part"
    # while it is written its header says 0 bytes: never taken for a complete file
    assert (out.directory / part).read_bytes()[40:44] == b"\0\0\0\0"
    play(out, events[-1:])
    assert listing(out.directory) == ["20261207-143501-000005-de.wav"]


def test_a_cut_utterance_is_saved_as_far_as_it_went(out: VoiceFilesOutput, clock: Clock) -> None:
    """The next line's speech began without an end for this one: complete as far as it
    goes, with sizes that say so; no .part file is left."""
    cut = utterance(wav_file(noise(1.0, 4)), 8, end=False)[:4]  # header + 12756 bytes of PCM
    play(out, cut)
    clock.t += 1
    whole = wav_file(noise(0.3, 5))
    play(out, utterance(whole, 9))
    assert listing(out.directory) == [
        "20261207-143501-000008-de.wav",
        "20261207-143502-000009-de.wav",
    ]
    with wave.open(str(out.directory / "20261207-143501-000008-de.wav")) as w:
        assert w.getnframes() == (4 * 3200 - 44) // 2
        assert w.readframes(w.getnframes()) == b"".join(e.data for e in cut)[44:]
    assert (out.directory / "20261207-143502-000009-de.wav").read_bytes() == whole


def test_a_stop_mid_utterance_leaves_nothing_and_the_rest_is_dropped(
    out: VoiceFilesOutput, clock: Clock
) -> None:
    events = utterance(wav_file(noise(1.0, 6)), 10)
    play(out, events[:3])
    out.close()  # a stop, or the worker closing after a failure
    assert listing(out.directory) == []
    out.open()
    play(out, events[3:])  # the rest of the interrupted utterance
    assert listing(out.directory) == []
    whole = wav_file(noise(0.2, 7))
    play(out, utterance(whole, 11))
    assert [p.read_bytes() for p in out.directory.iterdir()] == [whole]


def test_same_second_same_line_gets_a_number(out: VoiceFilesOutput) -> None:
    for seed in range(3):
        play(out, utterance(wav_file(noise(0.1, seed)), 4))
    assert listing(out.directory) == [
        "20261207-143501-000004-de.wav",
        "20261207-143501-000004-de_2.wav",
        "20261207-143501-000004-de_3.wav",
    ]


def test_keeps_max_files_oldest_removed_others_untouched(tmp_path: Path, clock: Clock) -> None:
    d = tmp_path / "voice"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    (d / "20200101-000000-000001-de.wav").write_bytes(b"old")
    (d / "20200101-000001-000002-de.wav").write_bytes(b"old")
    (d / ".20200101-000002-000003-de.wav.part").write_bytes(b"half")  # a power cut
    o = VoiceFilesOutput(d, max_files=3, clock=clock)
    o.open()
    assert listing(d) == [
        "20200101-000000-000001-de.wav",
        "20200101-000001-000002-de.wav",
        "notes.txt",
    ]
    for i in range(4):
        clock.t += 1
        play(o, utterance(wav_file(noise(0.05, i)), 20 + i))
    assert listing(d) == [
        "20261207-143503-000021-de.wav",
        "20261207-143504-000022-de.wav",
        "20261207-143505-000023-de.wav",
        "notes.txt",
    ]
    o.close()
    smaller = VoiceFilesOutput(d, max_files=1, clock=clock)
    smaller.open()  # a lower max_files applies at once
    assert listing(d) == ["20261207-143505-000023-de.wav", "notes.txt"]


def test_formats_that_cannot_be_saved_are_refused_and_counted(out: VoiceFilesOutput) -> None:
    status = out.status
    assert status is not None
    mp3 = [SynthesizedAudio("de", "audio/mpeg", b"\xff\xfb" + bytes(900), False, 1)]
    play(out, [*mp3, SynthesizedAudio("de", "audio/mpeg", b"", True, 1)])
    play(out, utterance(wav_file(noise(0.1)), 2))
    assert listing(out.directory) == ["20261207-143501-000002-de.wav"]
    assert out.refused == 1 and status.snapshot().counters["voice_files_refused"] == 1


def test_captions_are_ignored(out: VoiceFilesOutput) -> None:
    out.handle(CaptionLine(1, "hello", None, "en", 0.0, 1.0, True, True))
    out.idle(time.monotonic())
    assert listing(out.directory) == []


def test_a_directory_that_cannot_be_made_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    status = StatusBoard()
    o = VoiceFilesOutput(tmp_path / "file" / "voice", status=status)
    with pytest.raises(OutputUnavailable, match="not a directory"):
        o.open()
    assert o.errors == 1 and status.snapshot().counters["voice_files_errors"] == 1


def test_from_config(tmp_path: Path) -> None:
    cfg = SpeakerConfig(save_dir=tmp_path / "v", max_files=7)
    o = VoiceFilesOutput.from_config(cfg, None)
    assert (o.directory, o.max_files) == (tmp_path / "v", 7)
    with pytest.raises(ValueError, match="save_dir"):
        VoiceFilesOutput.from_config(SpeakerConfig(), None)


# --- a real full disk ---------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (needs root and the right to mount: skipped otherwise)."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def wait_for(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_a_full_disk_is_unavailable_then_recovers(tiny_disk: Path) -> None:
    filler = tiny_disk / "filler"
    free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
    filler.write_bytes(bytes(free - 1100 * 1024))  # 1.1 MB left: open() is fine
    status = StatusBoard()
    states: list[tuple[str, str]] = []
    status.subscribe(
        lambda snap: states.append(
            (snap.parts["output:voice_files"].state, snap.parts["output:voice_files"].detail)
        )
    )
    o = VoiceFilesOutput(tiny_disk / "voice", status=status)
    worker = OutputWorker(o, status, retry_first=0.05, retry_max=0.1)
    worker.start()
    try:
        assert wait_for(lambda: states[-1:] == [("ok", "")])
        for e in utterance(wav_file(noise(40.0)), 1, size=32000):  # 1.28 MB: does not fit
            worker.publish(e)
        assert wait_for(lambda: len(states) >= 3)  # unavailable, then ok again (retried)
        state, detail = states[1]
        assert state == "unavailable" and detail.endswith("voice: disk full")
        assert status.snapshot().counters["voice_files_errors"] == 1
        assert listing(tiny_disk / "voice") == []  # the half file is gone
        assert states[2] == ("ok", "")  # the space it took is free again: open() is fine
        filler.unlink()
        whole = wav_file(noise(1.0, 9))
        for e in utterance(whole, 2):
            worker.publish(e)
        # (the utterance is written as a hidden .part file first: wait for its final name)
        assert wait_for(lambda: any(n.endswith(".wav") for n in listing(tiny_disk / "voice")))
        (saved,) = (tiny_disk / "voice").iterdir()
        assert saved.name.endswith("-000002-de.wav") and saved.read_bytes() == whole
    finally:
        worker.request_stop()
        assert worker.join(3)


def test_a_write_error_raises_unavailable_with_the_reason(tiny_disk: Path) -> None:
    o = VoiceFilesOutput(tiny_disk / "voice")
    o.open()
    filler = tiny_disk / "filler"
    st = os.statvfs(tiny_disk)
    filler.write_bytes(bytes(st.f_bavail * st.f_frsize - 8192))
    with pytest.raises(OutputUnavailable, match="disk full") as info:
        play(o, utterance(wav_file(noise(1.0)), 3))
    assert isinstance(info.value.__context__, OSError)
    assert info.value.__context__.errno == errno.ENOSPC
    assert listing(tiny_disk / "voice") == [] and o.errors == 1
