"""The loudspeaker output on a real ALSA device: PortAudio plays into ALSA's ``file``
plugin (TESTBED.md, "Real ALSA playback without a sound card"), and the tests read back
what was played. Bit-exact at the speech's own rate, resampled when the device runs at
another, volume and clipping, skipping speech that is too late (an injected clock), a
device that is missing, fails mid-stream or blocks, and the captions going on meanwhile."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgecap.audio.alsa_quiet import new_pyaudio, terminate_quietly
from edgecap.captions.events import CaptionLine, SynthesizedAudio
from edgecap.config.schema import SpeakerConfig
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.event_queue import EventQueue
from edgecap.outputs.fanout import FanOut
from edgecap.outputs.speaker import (
    SpeakerOutput,
    list_playback_devices,
    resolve_playback_device,
)
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.resample import StreamResampler
from edgecap.runtime.status import StatusBoard
from tests.audio.conftest import AlsaTestbed
from tests.audio.signals import dominant_frequency, sine
from tests.outputs.test_utterance import wav_file
from tests.outputs.test_worker import Recorder

SPEAKER = "edgecap_test_speaker"


def speaker_pcm(name: str, outfile: Path | str, *, truncate: bool = False) -> str:
    """asoundrc text for a playback device that writes what it plays to ``outfile``.
    ``truncate false``: the plugin opens its file each time the device is opened (PortAudio
    opens every device to list it) and would empty it every time; this way each opening
    gets a file of its own (``outfile``, ``outfile.0001`` …: see read_played). A FIFO
    needs ``truncate true``, or the plugin writes next to it."""
    return (
        f"pcm.{name} {{\n"
        f"    type file\n"
        f'    slave.pcm "null"\n'
        f'    file "{outfile}"\n'
        f"    truncate {'true' if truncate else 'false'}\n"
        f'    format "raw"\n'
        f'    hint {{ show on description "{name}" }}\n'
        f"}}\n"
    )


@pytest.fixture
def alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AlsaTestbed]:
    """ALSA reads $XDG_CONFIG_HOME/alsa/asoundrc afresh for every new PyAudio instance."""
    config_home = tmp_path / "xdg"
    config_home.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    bed = AlsaTestbed(root=tmp_path, config_home=config_home)
    yield bed
    bed.cleanup()


@pytest.fixture
def played(alsa: AlsaTestbed) -> Path:
    """The test speaker is there; what it plays goes to the returned file."""
    path = alsa.root / "played.raw"
    alsa.write(speaker_pcm(SPEAKER, path))
    return path


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class PortAudioCount:
    """new_pyaudio / terminate_quietly, counting the instances made and released."""

    def __init__(self) -> None:
        self.made = 0
        self.released = 0

    def new(self):  # type: ignore[no-untyped-def]
        self.made += 1
        return new_pyaudio()

    def release(self, pa) -> None:  # type: ignore[no-untyped-def]
        if pa is not None:
            self.released += 1
        terminate_quietly(pa)


def make(device: str = SPEAKER, **kw) -> SpeakerOutput:  # type: ignore[no-untyped-def]
    kw.setdefault("new_pyaudio", new_pyaudio)
    kw.setdefault("release_pyaudio", terminate_quietly)
    return SpeakerOutput(device, **kw)


def utterance(wav: bytes, seq: int, lang: str = "de", *, size: int = 3200, end: bool = True):
    events = [
        SynthesizedAudio(lang, "audio/x-wav", wav[i : i + size], False, seq)
        for i in range(0, len(wav), size)
    ]
    if end:
        events.append(SynthesizedAudio(lang, "audio/x-wav", b"", True, seq))
    return events


def noise(seconds: float, seed: int = 0, rate: int = 16000, level: int = 12000) -> np.ndarray:
    n = round(seconds * rate)
    return np.random.default_rng(seed).integers(-level, level, n).astype(np.int16)


def drive(out: SpeakerOutput, events) -> None:  # type: ignore[no-untyped-def]
    """What the worker does: each event, then idle(); then idle() while there is speech."""
    for e in events:
        out.handle(e)
        out.idle(time.monotonic())
    for _ in range(10_000):
        if not out.has_speech:
            break
        out.idle(time.monotonic())


def read_played(path: Path) -> np.ndarray:
    """Everything played on the device, in order: ``path``, ``path.0001``, ``path.0002`` …"""
    more = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    files = [path, *sorted(more, key=lambda p: int(p.suffix[1:]))]
    parts = [np.fromfile(p, dtype="<i2") for p in files if p.exists()]
    return np.concatenate(parts) if parts else np.zeros(0, np.int16)


def wait_for(pred, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def line(seq: int, text: str) -> CaptionLine:
    return CaptionLine(seq, text, None, "en", None, None, True, True)


# --- playing --------------------------------------------------------------------------------


def test_two_utterances_play_bit_exact_under_a_worker(played: Path) -> None:
    a, b = noise(1.2, 1), noise(0.7, 2)
    status = StatusBoard()
    out = make(status=status)
    worker = OutputWorker(out, status)
    worker.start()
    try:
        assert wait_for(lambda: status.snapshot().state_of("output:speaker") == "ok")
        for e in [*utterance(wav_file(a.tobytes()), 1), *utterance(wav_file(b.tobytes()), 2)]:
            worker.publish(e)
        assert wait_for(lambda: out.played_s >= 1.9)
    finally:
        worker.request_stop()
        assert worker.join(3)
    # (the device's last buffer reaches the file when the stream stops)
    assert np.array_equal(read_played(played), np.concatenate([a, b]))
    assert (out.stream_rate, out.stream_channels) == (16000, 1)
    assert out.skipped_s == 0 and out.refused == 0


def test_a_device_at_another_rate_gets_the_speech_resampled(played: Path) -> None:
    tone = sine(1000, 16000, 1.0, amplitude=10000)
    out = make(device_rate=48000)
    out.open()
    drive(out, utterance(wav_file(tone.tobytes()), 1, size=1234))
    out.close()
    got = read_played(played)
    r = StreamResampler(16000, 48000)
    expected = np.concatenate([r.process(tone), r.flush()])
    assert got.size == 48000 and np.array_equal(got, expected)
    assert dominant_frequency(got[1000:-1000], 48000) == pytest.approx(1000, abs=0.5)


def test_speech_at_another_rate_than_the_open_stream_is_converted(played: Path) -> None:
    """The stream opens at the first utterance's rate (16 kHz); a 24 kHz stereo one that
    follows is mixed to mono and resampled into it."""
    first = noise(0.5, 3)
    left = sine(440, 24000, 0.6, amplitude=8000)
    stereo = np.stack([left, left // 2], axis=1)
    out = make()
    out.open()
    drive(out, utterance(wav_file(first.tobytes()), 1))
    drive(out, utterance(wav_file(stereo.tobytes(), rate=24000, channels=2), 2, size=999))
    out.close()
    got = read_played(played)
    mono = ((left.astype(np.int32) + left // 2) // 2).astype(np.int16)
    r = StreamResampler(24000, 16000)
    assert np.array_equal(got[: first.size], first)
    assert np.array_equal(got[first.size :], np.concatenate([r.process(mono), r.flush()]))
    assert got.size == first.size + 9600


@pytest.mark.parametrize("volume", [0.5, 2.5])
def test_volume_scales_and_clips(played: Path, volume: float) -> None:
    x = noise(0.5, 4, level=20000)
    out = make(volume=volume)
    out.open()
    drive(out, utterance(wav_file(x.tobytes()), 1))
    out.close()
    expected = np.clip(np.rint(x.astype(np.float64) * volume), -32768, 32767).astype(np.int16)
    assert np.array_equal(read_played(played), expected)
    if volume > 1:
        assert (read_played(played) == 32767).sum() > 100  # really clipped, not wrapped
        assert not np.any((x > 0) & (read_played(played) < 0))


def test_formats_that_cannot_be_played_are_refused_and_counted(
    played: Path, caplog: pytest.LogCaptureFixture
) -> None:
    status = StatusBoard()
    out = make(status=status)
    out.open()
    mp3 = [
        SynthesizedAudio("de", "audio/mpeg", b"\xff\xfb" + bytes(3000), False, 1),
        SynthesizedAudio("de", "audio/mpeg", b"", True, 1),
    ]
    with caplog.at_level(logging.WARNING):
        drive(out, mp3 * 2)
    x = noise(0.2)
    drive(out, utterance(wav_file(x.tobytes()), 2))
    out.close()
    assert np.array_equal(read_played(played), x)
    assert out.refused == 2 and status.snapshot().counters["speaker_refused"] == 2
    warned = [r for r in caplog.records if "cannot play" in r.getMessage()]
    assert len(warned) == 1 and "audio/mpeg" in warned[0].getMessage()  # once per reason


def test_nothing_holds_the_device_without_speech(played: Path) -> None:
    """Captions do not open the device; after idle_close seconds without speech the stream
    is closed and PortAudio released."""
    pa = PortAudioCount()
    clock = Clock()
    out = make(new_pyaudio=pa.new, release_pyaudio=pa.release, clock=clock, idle_close=5.0)
    out.open()
    assert (pa.made, pa.released) == (1, 1)  # open() only looked the device up
    out.handle(line(1, "hello"))
    out.idle(0)
    assert pa.made == 1 and out.wake_in(0) is None  # nothing to do until speech comes
    drive(out, utterance(wav_file(noise(0.3).tobytes()), 1))
    assert (pa.made, pa.released) == (2, 1)
    clock.t += 4.0
    assert out.wake_in(0) == pytest.approx(1.0)  # the release is due in 1 s
    out.idle(0)
    assert pa.released == 1
    clock.t += 1.0
    assert out.wake_in(0) == 0
    out.idle(0)
    assert pa.released == 2 and out.wake_in(0) is None
    drive(out, utterance(wav_file(noise(0.1).tobytes()), 2))  # opened again for more speech
    out.close()
    assert pa.made == pa.released == 3
    assert read_played(played).size == 4800 + 1600


# --- skipping -------------------------------------------------------------------------------


def test_speech_later_than_max_delay_is_skipped_oldest_first(played: Path) -> None:
    clock = Clock()
    status = StatusBoard()
    out = make(clock=clock, max_delay=20.0, status=status)
    out.open()
    a, b, c = noise(1.0, 5), noise(0.5, 6), noise(0.25, 7)
    for e in utterance(wav_file(a.tobytes()), 1):  # came at t, while the speaker was busy
        out.handle(e)
    clock.t += 10
    for e in utterance(wav_file(b.tobytes()), 2):
        out.handle(e)
    clock.t += 15  # a is 25 s late, b 15 s
    drive(out, utterance(wav_file(c.tobytes()), 3))
    out.close()
    assert np.array_equal(read_played(played), np.concatenate([b, c]))
    assert out.skipped_utterances == 1
    assert out.skipped_s == pytest.approx(1.0)
    assert status.snapshot().counters["speaker_skipped_s"] == pytest.approx(1.0)


def test_the_rest_of_an_utterance_that_stalled_too_long_is_skipped(played: Path) -> None:
    clock = Clock()
    out = make(clock=clock, max_delay=5.0)
    out.open()
    x = noise(2.0, 8)
    for e in utterance(wav_file(x.tobytes()), 1):  # all of it came at once
        out.handle(e)
    for _ in range(4):
        out.idle(0)  # 4 × 100 ms played
    clock.t += 30  # the device stalled
    drive(out, utterance(wav_file(noise(0.1, 9).tobytes()), 2))
    out.close()
    got = read_played(played)
    assert np.array_equal(got[:6400], x[:6400]) and got.size == 6400 + 1600
    assert out.skipped_s == pytest.approx(1.6)


def test_a_long_utterance_sent_at_once_is_played_whole(played: Path) -> None:
    """Longer than max_delay, all of it queued at once, played in real time: due over its
    length, so never late."""
    clock = Clock()
    out = make(clock=clock, max_delay=5.0)
    out.open()
    x = noise(12.0, 12)
    for e in utterance(wav_file(x.tobytes()), 1, size=32000):
        out.handle(e)
    while out.has_speech:
        before = out.played_s
        out.idle(0)
        clock.t += out.played_s - before  # the device plays in real time
    out.close()
    assert np.array_equal(read_played(played), x) and out.skipped_s == 0


def test_a_service_slower_than_real_time_is_not_skipped(played: Path) -> None:
    """Each piece is timed from its own arrival: speech that trickles in is played as it
    comes, however long the utterance takes in all."""
    clock = Clock()
    out = make(clock=clock, max_delay=5.0)
    out.open()
    x = noise(2.0, 10)
    for e in utterance(wav_file(x.tobytes()), 1):
        clock.t += 1.0  # 100 ms of speech a second: 20 s for 2 s
        drive(out, [e])
    out.close()
    assert np.array_equal(read_played(played), x) and out.skipped_s == 0


def test_speech_queued_while_the_device_was_missing_is_not_played_late(
    alsa: AlsaTestbed,
) -> None:
    """Events wait in the worker's queue while the device is away; when it comes back
    they count as having come when it went away, and are skipped if that is too long ago."""
    clock = Clock()
    status = StatusBoard()
    out = make(clock=clock, max_delay=20.0, status=status)
    worker = OutputWorker(out, status, retry_first=0.05, retry_max=0.1)
    worker.start()
    try:
        assert wait_for(lambda: status.snapshot().state_of("output:speaker") == "unavailable")
        old = noise(1.0, 10)
        for e in utterance(wav_file(old.tobytes()), 1):
            worker.publish(e)
        clock.t += 60
        path = alsa.root / "played.raw"
        alsa.write(speaker_pcm(SPEAKER, path))  # plugged in
        assert wait_for(lambda: status.snapshot().state_of("output:speaker") == "ok")
        assert wait_for(lambda: out.skipped_utterances == 1)
        new = noise(0.5, 11)
        for e in utterance(wav_file(new.tobytes()), 2):
            worker.publish(e)
        assert wait_for(lambda: out.played_s >= 0.5)
    finally:
        worker.request_stop()
        assert worker.join(3)
    assert np.array_equal(read_played(path), new)
    assert status.snapshot().counters["speaker_skipped_s"] == pytest.approx(1.0)


def test_the_backlog_is_bounded_and_skips_are_not_logged_one_by_one(
    played: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    out = make(clock=clock, max_delay=1.0)
    out.open()
    with caplog.at_level(logging.WARNING):
        for seq in range(1, 45):  # 44 s of speech, none of it played yet
            for e in utterance(wav_file(noise(1.0, seq).tobytes()), seq, size=32000):
                out.handle(e)
        assert out.skipped_utterances == 13  # max_delay + 30 s kept
        assert out.skipped_s == pytest.approx(13.0)
        clock.t += 10
        drive(out, [])  # all of it is late now
    out.close()
    assert out.skipped_utterances == 44 and read_played(played).size == 0
    warned = [r.getMessage() for r in caplog.records if "skipped spoken" in r.getMessage()]
    assert len(warned) == 2  # one per 10 s
    assert "(de, line 1): more than 31 s of speech queued" in warned[0]
    assert "(de, line 14): 10.0 s late" in warned[1]
    assert "12 more since the last report; 14.0 s skipped in all" in warned[1]


# --- the device -----------------------------------------------------------------------------


def test_devices_by_name_part_or_index(played: Path, alsa: AlsaTestbed) -> None:
    alsa.write(speaker_pcm(SPEAKER, played), speaker_pcm("edgecap_test_speaker2", played))
    pa = new_pyaudio()
    try:
        devices = list_playback_devices(pa)
    finally:
        terminate_quietly(pa)
    names = [d.name for d in devices]
    assert SPEAKER in names and "edgecap_test_speaker2" in names
    assert resolve_playback_device(SPEAKER, devices).name == SPEAKER  # exact beats part
    assert resolve_playback_device("SPEAKER2", devices).name == "edgecap_test_speaker2"
    index = str(names.index("edgecap_test_speaker2"))
    assert resolve_playback_device(index, devices).name == "edgecap_test_speaker2"
    with pytest.raises(OutputUnavailable, match="ambiguous"):
        resolve_playback_device("test_spea", devices)
    with pytest.raises(OutputUnavailable, match="no playback device matches 'USB'"):
        resolve_playback_device("USB", devices)
    with pytest.raises(OutputUnavailable, match="no playback device matches '99'"):
        resolve_playback_device("99", devices)


def test_a_missing_device_is_unavailable_and_captions_go_on(alsa: AlsaTestbed) -> None:
    alsa.write("")
    status = StatusBoard()
    speaker = OutputWorker(make("USB speaker", status=status), status, retry_first=0.05)
    recorder = Recorder()
    captions = OutputWorker(recorder, status)
    fanout = FanOut([speaker, captions])
    for w in fanout.workers:
        w.start()
    try:
        assert wait_for(lambda: status.snapshot().state_of("output:speaker") == "unavailable")
        detail = status.snapshot().parts["output:speaker"].detail
        assert detail.startswith("no playback device matches 'USB speaker'; available:")
        for i in range(20):
            fanout.publish(line(i, f"line {i}"))
            for e in utterance(wav_file(noise(0.1, i).tobytes()), i):
                fanout.publish(e)
        assert wait_for(lambda: len(recorder.got) == 20)
        assert all(isinstance(e, CaptionLine) for e in recorder.got)  # no audio for it
    finally:
        for w in fanout.workers:
            w.request_stop()
        assert all(w.join(3) for w in fanout.workers)


def test_a_failure_mid_stream_is_unavailable_then_plays_on(alsa: AlsaTestbed) -> None:
    """The device's output breaks while playing (as an unplugged USB speaker does): the
    worker closes it, retries, and the speech goes on once it is back."""
    fifo, gone = alsa.output_fifo("speaker.fifo")
    alsa.write(speaker_pcm(SPEAKER, fifo, truncate=True))
    status = StatusBoard()
    states: list[str] = []
    status.subscribe(lambda snap: states.append(snap.parts["output:speaker"].state))
    worker = OutputWorker(make(status=status), status, retry_first=0.05, retry_max=0.1)
    worker.start()
    path = alsa.root / "played.raw"
    try:
        for e in utterance(wav_file(noise(0.5, 1).tobytes()), 1):
            worker.publish(e)
        out = worker.output
        assert isinstance(out, SpeakerOutput)
        assert wait_for(lambda: out.played_s >= 0.5)
        alsa.write(speaker_pcm(SPEAKER, path))  # where it will play after the reopen
        gone.set()  # the reader goes: the next write fails
        drain = alsa._threads[-1][0]
        assert wait_for(lambda: not drain.is_alive())
        after = noise(1.0, 2)
        for e in utterance(wav_file(after.tobytes()), 2):
            worker.publish(e)
        assert wait_for(lambda: states.count("ok") >= 2)
        assert "unavailable" in states and worker.failures == 1
        last = noise(0.3, 3)
        before = out.played_s
        for e in utterance(wav_file(last.tobytes()), 3):
            worker.publish(e)
        assert wait_for(lambda: out.played_s >= before + 0.3)
    finally:
        worker.request_stop()
        assert worker.join(3)
    got = read_played(path)
    # what the failed write held is lost; the rest of utterance 2 and all of 3 are played
    assert np.array_equal(got[-last.size :], last)
    tail = got[: -last.size]
    assert 0 < tail.size < after.size and np.array_equal(tail, after[after.size - tail.size :])


def test_a_speaker_whose_writes_block_never_holds_up_the_captions(alsa: AlsaTestbed) -> None:
    """The device takes nothing (its output FIFO is full and nobody reads it): the
    speaker's thread is stuck in a write, and the caption output still gets every line at
    once, and publishing never waits."""
    fifo, fd = alsa.fifo("stuck.fifo")  # held open read-write: a reader that never reads
    alsa.write(speaker_pcm(SPEAKER, fifo, truncate=True))
    status = StatusBoard()
    speaker = OutputWorker(make(status=status), status)
    recorder = Recorder()
    captions = OutputWorker(recorder, status)
    fanout = FanOut([speaker, captions])
    for w in fanout.workers:
        w.start()
    stop_draining = threading.Event()
    drainer = threading.Thread(target=lambda: None)
    try:
        assert wait_for(lambda: status.snapshot().state_of("output:speaker") == "ok")
        for e in utterance(wav_file(noise(5.0).tobytes()), 1):  # 160 kB: the FIFO holds 64
            fanout.publish(e)
        out = speaker.output
        assert isinstance(out, SpeakerOutput)
        assert wait_for(lambda: out.played_s >= 1.5)
        time.sleep(0.2)
        stuck_at = out.played_s
        assert stuck_at < 5.0  # blocked in a write
        slowest = 0.0
        sent = time.monotonic()
        for i in range(50):
            t = time.monotonic()
            fanout.publish(line(i, f"line {i}"))
            for e in utterance(wav_file(noise(0.1, i).tobytes()), 100 + i):
                fanout.publish(e)
            slowest = max(slowest, time.monotonic() - t)
        assert wait_for(lambda: len(recorder.got) == 50, timeout=1.0)
        assert time.monotonic() - sent < 1.0
        assert slowest < 0.05
        assert [e.seq for e in recorder.got] == list(range(50))
        assert out.played_s == stuck_at  # still stuck all along
    finally:

        def drain() -> None:
            while not stop_draining.is_set():
                ready, _, _ = select.select([fd], [], [], 0.01)
                if ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(fd, 1 << 16)

        os.set_blocking(fd, False)
        drainer = threading.Thread(target=drain, name="drain-stuck", daemon=True)
        drainer.start()
        for w in fanout.workers:
            w.request_stop()
        joined = all(w.join(3) for w in fanout.workers)
        stop_draining.set()
        drainer.join(2)
    assert joined


def test_from_config() -> None:
    cfg = SpeakerConfig(enabled=True, device="USB", volume=0.8, max_delay=12.0)
    status = StatusBoard()
    out = SpeakerOutput.from_config(
        cfg, status, new_pyaudio=new_pyaudio, release_pyaudio=terminate_quietly
    )
    assert (out.device_spec, out.volume, out.max_delay, out.status) == ("USB", 0.8, 12.0, status)
    assert out.takes == {"audio"} and out.name == "speaker"


def test_the_queue_in_front_of_the_speaker_keeps_audio_in_order_and_tells_of_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Audio chunks are never coalesced; only a queue stuck beyond max_finals drops (the
    oldest first), and a dropped chunk of speech is logged (1st, 2nd, 4th …) and counted."""
    q = EventQueue(max_finals=4)
    chunks = utterance(wav_file(noise(0.3).tobytes()), 1, size=1000)  # 11 events
    with caplog.at_level(logging.WARNING):
        for e in chunks:
            q.put(e)
    got = [q.get(0) for _ in range(4)]
    assert got == chunks[-4:] and q.get(0) is None
    assert q.dropped_finals == q.dropped_audio == 7
    warned = [r.getMessage() for r in caplog.records if "spoken translation" in r.getMessage()]
    assert [w.split(": ")[1].split()[0] for w in warned] == ["1", "2", "4"]
