"""An output on its own thread: events in order, reopen with backoff, failures contained;
asleep while there is nothing to do, awake for its events, its deadlines and stop."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import tty
from dataclasses import replace
from pathlib import Path

import pytest

from edgecap.captions.events import CaptionLine, SynthesizedAudio
from edgecap.outputs.base import DEFAULT_TAKES, OutputUnavailable, takes_of
from edgecap.outputs.fanout import FanOut
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard, StatusSnapshot


def line(seq, text, final=True):
    return CaptionLine(
        seq=seq,
        text=text,
        speaker=None,
        language=None,
        start=None,
        end=None,
        final=final,
        translation_final=final,
    )


class Recorder:
    """An output that writes into a list; it can be 'unplugged' and made slow."""

    name = "rec"
    idle_interval = 0.02

    def __init__(self) -> None:
        self.plugged = True
        self.slow = 0.0
        self.got: list = []
        self.opens = 0
        self.closes = 0
        self.idles = 0
        self.lock = threading.Lock()

    def open(self) -> None:
        if not self.plugged:
            raise OutputUnavailable("unplugged")
        self.opens += 1

    def handle(self, event) -> None:
        if not self.plugged:
            raise OutputUnavailable("unplugged")
        time.sleep(self.slow)
        with self.lock:
            self.got.append(event)

    def idle(self, now: float) -> None:
        self.idles += 1

    def close(self) -> None:
        self.closes += 1


def wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_events_arrive_in_order_and_stop_drains_finals():
    out, status = Recorder(), StatusBoard()
    w = OutputWorker(out, status)
    w.start()
    assert wait(lambda: status.snapshot().state_of("output:rec") == "ok")
    for i in range(20):
        w.publish(line(i, str(i)))
    w.request_stop()
    assert w.join(3)
    assert [e.seq for e in out.got] == list(range(20))
    assert out.closes == 1 and out.idles > 0


def test_unplugged_device_is_reopened_with_backoff_and_shown_in_status():
    out, status = Recorder(), StatusBoard()
    out.plugged = False
    w = OutputWorker(out, status, retry_first=0.05, retry_max=0.1)
    w.start()
    assert wait(lambda: status.snapshot().state_of("output:rec") == "unavailable")
    assert status.snapshot().parts["output:rec"].detail == "unplugged"
    w.publish(line(1, "kept while unplugged"))
    out.plugged = True
    assert wait(lambda: [e.seq for e in out.got] == [1])
    out.plugged = False
    w.publish(line(2, "lost device"))
    assert wait(lambda: w.failures == 1)
    out.plugged = True
    w.publish(line(3, "after replug"))
    assert wait(lambda: any(e.seq == 3 for e in out.got))
    w.request_stop()
    assert w.join(3)
    assert out.opens >= 2


def test_a_slow_output_coalesces_provisional_text_and_never_blocks_publish():
    out, status = Recorder(), StatusBoard()
    out.slow = 0.05
    w = OutputWorker(out, status)
    w.start()
    t0 = time.monotonic()
    for i in range(200):
        w.publish(line(1, "word " * i, final=False))
    w.publish(line(1, "the end", final=True))
    published_in = time.monotonic() - t0
    assert published_in < 0.5
    assert wait(lambda: out.got and out.got[-1].final)
    w.request_stop()
    assert w.join(3)
    assert len(out.got) < 20  # most provisional updates were superseded
    assert out.got[-1].text == "the end"


def test_a_buggy_output_is_contained_and_retried():
    class Buggy(Recorder):
        def handle(self, event):
            if event.seq == 1:
                raise RuntimeError("bug")
            super().handle(event)

    out, status = Buggy(), StatusBoard()
    w = OutputWorker(out, status, retry_first=0.05)
    w.start()
    w.publish(line(1, "boom"))
    w.publish(line(2, "fine"))
    assert wait(lambda: [e.seq for e in out.got] == [2])
    w.request_stop()
    assert w.join(3)
    assert w.error is None and w.failures == 1


def test_a_busy_output_gets_no_events_until_its_device_took_the_last_ones():
    """While the output says ``busy`` (its device has not taken the last output) the
    worker only calls idle(); the events wait in the queue, provisional ones coalesce."""

    class Busy(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.busy = False
            self.handled_while_busy = 0

        def handle(self, event) -> None:
            self.handled_while_busy += self.busy
            super().handle(event)
            self.busy = event.text == "stall"  # its device takes nothing more for now

    out, status = Busy(), StatusBoard()
    w = OutputWorker(out, status)
    w.start()
    try:
        w.publish(line(0, "stall"))
        assert wait(lambda: out.busy)
        idles = out.idles
        for i in range(50):
            w.publish(line(1, "word " * i, final=False))
        w.publish(line(2, "kept", final=True))
        assert wait(lambda: out.idles > idles + 5)  # idle() is called meanwhile
        assert [e.seq for e in out.got] == [0] and len(w.queue) == 2
        out.busy = False
        assert wait(lambda: len(out.got) == 3)
        assert [(e.seq, e.final) for e in out.got[1:]] == [(2, True), (1, False)]
        assert out.got[2].text == "word " * 49 and out.handled_while_busy == 0
    finally:
        w.request_stop()
        assert w.join(3)


# --- sleeping until there is something to do (issue 14) -------------------------------------


class Quiet(Recorder):
    """An output with no timed work: only an event gives it any."""

    def __init__(self, takes=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        if takes is not None:
            self.takes = frozenset(takes)

    def wake_in(self, now: float) -> float | None:
        return None


def opened(*workers: OutputWorker) -> None:
    """Start the workers and wait until each has opened its output and gone to sleep."""
    for w in workers:
        w.start()
    deadline = time.monotonic() + 5
    while not all(w.status.snapshot().state_of(w.part) == "ok" for w in workers):
        assert time.monotonic() < deadline, "an output did not open"
        time.sleep(0.01)
    while not all(w.idle and not len(w.queue) for w in workers):
        assert time.monotonic() < deadline, "an output did not settle"
        time.sleep(0.01)


def stop_quickly(*workers: OutputWorker, within: float = 0.05) -> list[float]:
    """Stop each worker; the time each took to end."""
    took = []
    for w in workers:
        t0 = time.monotonic()
        w.request_stop()
        assert w.join(3), f"{w.name} did not stop"
        took.append(time.monotonic() - t0)
    assert max(took) < within, dict(zip([w.name for w in workers], took, strict=True))
    return took


def real_outputs(tmp_path: Path, stack: contextlib.ExitStack) -> list:
    """Every output that can run for real here (the speaker has its own tests on the ALSA
    file plugin): socket, HDMI on a framebuffer file, console and serial on ptys, transcript
    and voice files in tmp_path, stdout into a pipe."""
    from edgecap.config.schema import ConsoleConfig, SerialConfig, SocketConfig, TranscriptConfig
    from edgecap.outputs.console import ConsoleOutput
    from edgecap.outputs.hdmi import HdmiOutput
    from edgecap.outputs.serial.output import SerialOutput
    from edgecap.outputs.socket_server import SocketOutput
    from edgecap.outputs.stdout import StdoutOutput
    from edgecap.outputs.transcript import TranscriptOutput
    from edgecap.outputs.voice_files import VoiceFilesOutput
    from tests.outputs.test_framebuffer import fake_fb

    def pty() -> Path:
        master, slave = os.openpty()
        tty.setraw(master)
        stack.callback(os.close, master)
        stack.callback(os.close, slave)
        return Path(os.ttyname(slave))

    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w")
    stack.callback(os.close, read_fd)
    stack.callback(stream.close)
    encoder = SerialOutput(replace(SerialConfig(), device=pty(), profile="encoder"))
    encoder.name = "encoder"
    return [
        SocketOutput(SocketConfig(path=tmp_path / "run" / "c.sock"), service="x", languages=[]),
        HdmiOutput(fake_fb(tmp_path / "fb", 320, 240, 16), tmp_path / "fb" / "sys"),
        ConsoleOutput(replace(ConsoleConfig(), tty=pty())),
        SerialOutput(replace(SerialConfig(), device=pty(), profile="lines")),
        encoder,
        TranscriptOutput(replace(TranscriptConfig(), directory=tmp_path / "transcripts")),
        StdoutOutput(stream, "text", tty=False),
        VoiceFilesOutput(tmp_path / "voice"),
    ]


@pytest.mark.slow
def test_with_nothing_to_do_no_output_thread_wakes_up_and_each_stops_at_once(tmp_path):
    """2 s of nothing: not one wake-up of any output thread — the socket with a client
    connected, the screen, the console, the serial display and encoder, the files — and a
    stop still ends each of them within 50 ms."""
    status = StatusBoard()
    with contextlib.ExitStack() as stack:
        outputs = [Quiet(), *real_outputs(tmp_path, stack)]
        workers = [OutputWorker(o, status) for o in outputs]
        fanout = FanOut(workers)
        status.subscribe(fanout.publish)  # as in the daemon: every status change to them
        try:
            opened(*workers)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stack.callback(client.close)
            client.connect(str(tmp_path / "run" / "c.sock"))
            client.settimeout(1)
            assert b'"hello"' in client.recv(65536)  # served at once: its poll woke for it
            opened()  # and back to sleep
            while not all(w.idle for w in workers):
                time.sleep(0.01)
            before = [w.wakeups for w in workers]
            idles = outputs[0].idles
            time.sleep(2.0)
            woken = {w.name: w.wakeups - b for w, b in zip(workers, before, strict=True)}
            assert woken == dict.fromkeys(woken, 0)
            assert outputs[0].idles == idles
        finally:
            stop_quickly(*workers)


def test_stop_of_a_quiet_worker_returns_within_50_ms(tmp_path):
    """Whatever it sleeps on: the queue (no deadline, or an old-style idle_interval of a
    minute), the output's device (the socket's poll), or the retry of a device that is
    away — request_stop wakes it at once."""
    from edgecap.config.schema import SocketConfig
    from edgecap.outputs.socket_server import SocketOutput

    status = StatusBoard()
    legacy = Recorder()
    legacy.idle_interval = 60.0
    away = Quiet()
    away.plugged = False
    sock = SocketOutput(SocketConfig(path=tmp_path / "s.sock"), service="x", languages=[])
    quiet = [OutputWorker(o, status) for o in (Quiet(), legacy, sock)]
    waiting = OutputWorker(away, status, retry_first=60.0, retry_max=60.0)
    waiting.backoff.jitter = False  # the retry is a minute away
    opened(*quiet)
    waiting.start()
    deadline = time.monotonic() + 5
    while status.snapshot().state_of(waiting.part) != "unavailable":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)
    stop_quickly(*quiet, waiting)


def test_a_screen_dims_and_blanks_on_time_then_sleeps_until_the_next_caption(tmp_path):
    """The HDMI output's own deadlines, on the real clock: no event comes, yet it dims
    and blanks when due (each drawn within a frame or so), then sleeps."""
    from edgecap.outputs.hdmi import HdmiOutput
    from tests.outputs.test_framebuffer import fake_fb

    class Timed(HdmiOutput):
        def _render(self, phase: str, status: str) -> None:
            super()._render(phase, status)
            self.drawn.append((phase, time.monotonic()))

    out = Timed(fake_fb(tmp_path, 320, 240, 16), tmp_path / "sys", dim_after=0.3, blank_after=0.6)
    out.drawn = []
    w = OutputWorker(out, StatusBoard())
    opened(w)
    try:
        w.publish(line(1, "hello"))
        assert wait(lambda: [p for p, _ in out.drawn[-3:]] == ["on", "dim", "blank"], 3)
        spoken = out._last_caption  # when the caption was handled (time.monotonic)
        (_, dimmed), (_, blanked) = out.drawn[-2:]
        assert 0.3 <= dimmed - spoken < 0.3 + 0.1
        assert 0.6 <= blanked - spoken < 0.6 + 0.1
        time.sleep(0.05)
        asleep = w.wakeups
        time.sleep(0.3)
        assert w.wakeups == asleep and w.idle  # blanked: nothing left to do by itself
        w.publish(line(2, "awake"))
        assert wait(lambda: out.drawn[-1][0] == "on")
    finally:
        stop_quickly(w)


def test_a_line_waiting_for_its_translation_is_written_when_its_wait_ends(tmp_path, monkeypatch):
    """The transcript's deadline: nothing else happens, and the line is written once
    TRANSLATION_WAIT has passed — not later, not by a poll."""
    from edgecap.config.schema import TranscriptConfig
    from edgecap.outputs import transcript

    monkeypatch.setattr(transcript, "TRANSLATION_WAIT", 0.3)
    out = transcript.TranscriptOutput(
        replace(TranscriptConfig(), directory=tmp_path, formats=("jsonl",))
    )
    w = OutputWorker(out, StatusBoard())
    opened(w)
    try:
        pending = CaptionLine(1, "hola", None, "es", 1.0, 2.0, True, False, {"en": "hel"})
        t0 = time.monotonic()
        w.publish(pending)
        assert wait(lambda: out.written == 1, 3)
        took = time.monotonic() - t0
        assert 0.3 <= took < 0.3 + 0.15
        assert w.wakeups <= 3  # the event, the deadline (and perhaps an early return)
    finally:
        stop_quickly(w)


def test_a_burst_of_status_snapshots_reaches_an_output_as_the_newest_one():
    """While the output is busy with a caption, 100 status changes come: it is then given
    the newest snapshot only, once."""

    class Held(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.gate = threading.Event()

        def handle(self, event) -> None:  # type: ignore[no-untyped-def]
            self.gate.wait(5)
            super().handle(event)

    out, status = Held(), StatusBoard()
    w = OutputWorker(out, status)
    fanout = FanOut([w])
    opened(w)
    status.subscribe(fanout.publish)
    try:
        fanout.publish(line(1, "hello"))
        assert wait(lambda: not len(w.queue))  # taken: the output is in handle()
        for i in range(100):
            status.set("link", "retrying", f"attempt {i}")
        assert len(w.queue) == 1 and w.queue.coalesced == 99
        out.gate.set()
        assert wait(lambda: len(out.got) == 2)
        time.sleep(0.05)
        snaps = [e for e in out.got if isinstance(e, StatusSnapshot)]
        assert len(out.got) == 2 and len(snaps) == 1
        assert snaps[0].parts["link"].detail == "attempt 99"
    finally:
        status.subscribe(lambda snap: None)
        stop_quickly(w)


def test_the_fanout_wakes_an_output_only_for_what_it_takes():
    """Status changes never wake an output that shows no status (a serial display, the
    transcript), provisional text never wakes one that writes finals only, captions never
    wake a speaker — and the real outputs declare so."""
    from edgecap.config.schema import SerialConfig, TranscriptConfig
    from edgecap.outputs.serial.output import SerialOutput
    from edgecap.outputs.socket_server import SocketOutput
    from edgecap.outputs.transcript import TranscriptOutput
    from edgecap.outputs.voice_files import VoiceFilesOutput

    status = StatusBoard()
    shows_all, finals_only, audio_only = Quiet(), Quiet({"final", "loss"}), Quiet({"audio"})
    workers = [OutputWorker(o, status) for o in (shows_all, finals_only, audio_only)]
    fanout = FanOut(workers)
    opened(*workers)
    status.subscribe(fanout.publish)
    try:
        asleep = [w.wakeups for w in workers]
        for i in range(20):
            status.set("audio", "speech" if i % 2 else "listening")
            fanout.publish(line(1, "word " * i, final=False))
        time.sleep(0.1)
        assert [w.wakeups - a for w, a in zip(workers, asleep, strict=True)][1:] == [0, 0]
        assert not finals_only.got and not audio_only.got
        fanout.publish(line(1, "the end"))
        fanout.publish(SynthesizedAudio("de", "audio/x-wav", b"RIFF", False, 1))
        assert wait(lambda: len(finals_only.got) == 1 and len(audio_only.got) == 1)
        assert any(isinstance(e, StatusSnapshot) for e in shows_all.got)
        assert isinstance(audio_only.got[0], SynthesizedAudio)
    finally:
        status.subscribe(lambda snap: None)
        stop_quickly(*workers)

    encoder = SerialOutput(replace(SerialConfig(), profile="encoder"))
    lcd = SerialOutput(replace(SerialConfig(), profile="serlcd"))
    assert takes_of(encoder) == {"final"} and takes_of(lcd) == {"final", "provisional"}
    assert takes_of(TranscriptOutput(TranscriptConfig())) == {"final", "loss"}
    assert takes_of(VoiceFilesOutput("/nonexistent")) == {"audio"}
    assert "audio" not in takes_of(SocketOutput.__new__(SocketOutput))
    assert takes_of(Recorder()) == DEFAULT_TAKES  # declares nothing: as before


def test_an_output_without_wake_in_still_gets_idle_every_idle_interval():
    """Compatibility: an output written before wake_in keeps its idle_interval cadence."""
    out, status = Recorder(), StatusBoard()  # idle_interval 0.02
    w = OutputWorker(out, status)
    opened(w)
    try:
        idles = out.idles
        time.sleep(0.3)
        assert 5 <= out.idles - idles <= 20
    finally:
        stop_quickly(w)
