"""The stdout output: text for people (in place on a terminal, whole lines in a pipe) and
JSON lines; translations with their language tags; behind a real OutputWorker on a real
pipe whose reader stops reading (nothing blocks, the finals arrive in order) or goes away."""

import contextlib
import io
import json
import os
import re
import select
import shutil
import time
from dataclasses import replace

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.schema import StdoutConfig
from edgecap.outputs.base import OutputEvent
from edgecap.outputs.stdout import StdoutOutput
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.speech import Activity
from edgecap.runtime.status import StatusBoard

ERASE = "\r\x1b[2K"


def opened(out: StdoutOutput) -> StdoutOutput:
    out.open()
    return out


def test_text_on_a_pipe_is_whole_lines_only():
    buf = io.StringIO()
    out = opened(StdoutOutput(buf, tty=False))
    out.handle(Activity(1, 0.32))
    out.handle(Activity(1, 0.32, 3.41, "silence"))
    out.close()
    assert buf.getvalue() == "[00:00.32 → 00:03.41] speech #1, 3.09 s (silence)\n"


def test_on_a_terminal_the_current_utterance_is_replaced_in_place():
    buf = io.StringIO()
    out = opened(StdoutOutput(buf, tty=True))
    out.handle(Activity(2, 61.0))
    out.handle(Activity(2, 61.0, 62.5, "max_length"))
    text = buf.getvalue()
    assert text.startswith("\r\x1b[2K● speech #2 from 01:01.00 …")
    assert text.endswith("\r\x1b[2K[01:01.00 → 01:02.50] speech #2, 1.50 s (max length)\n")


def test_json_lines_and_status():
    buf = io.StringIO()
    out = opened(StdoutOutput(buf, fmt="json"))
    board = StatusBoard()
    board.subscribe(out.handle)
    board.set("audio", "device_missing", "no capture device matches 'USB'")
    out.handle(Activity(3, 1.0))
    out.handle(Activity(3, 1.0, 2.0, "stop"))
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert lines[0]["type"] == "status"
    assert lines[0]["summary"] == "No microphone: no capture device matches 'USB'"
    assert lines[1] == {"type": "speech_start", "utterance": 3, "start": 1.0}
    assert lines[2] == {
        "type": "speech_end",
        "utterance": 3,
        "start": 1.0,
        "end": 2.0,
        "reason": "stop",
    }


def test_json_a_speech_start_coalesced_away_is_written_before_its_end():
    buf = io.StringIO()
    out = opened(StdoutOutput(buf, fmt="json"))
    out.handle(Activity(4, 1.0, 2.5, "silence"))  # the queue kept only the end
    out.handle(Activity(5, 3.0))
    out.handle(Activity(5, 3.0, 4.0, "silence"))
    kinds = [(r["type"], r["utterance"]) for r in map(json.loads, buf.getvalue().splitlines())]
    assert kinds == [
        ("speech_start", 4),
        ("speech_end", 4),
        ("speech_start", 5),
        ("speech_end", 5),
    ]


# --- captions ------------------------------------------------------------------------------


def caption(
    seq: int,
    text: str,
    final: bool = False,
    translation: str = "",
    translation_final: bool = False,
    **kw,
) -> CaptionLine:
    """A caption line; ``translation`` is its Spanish one (``translations=`` for others)."""
    fields: dict = {"speaker": None, "language": None, "start": None, "end": None}
    fields |= {"translations": {"es": translation} if translation else {}} | kw
    return CaptionLine(
        seq=seq, text=text, final=final, translation_final=translation_final, **fields
    )


S1 = {"speaker": "1", "language": "en", "start": 1.2, "end": 2.5}
S2 = {"speaker": "2", "start": 3.0, "end": 4.0}
SCRIPT: list[OutputEvent] = [
    caption(1, "hel", **S1),
    caption(1, "hello wor", **S1),
    caption(1, "hello world.", True, "hola", **S1),
    caption(2, "how", **S2),
    caption(1, "hello world.", True, "hola mundo.", True, **S1),
    caption(2, "how are you?", True, "¿cómo estás?", True, **S2),
    AudioLoss(12.4, 10.0, 22.4, "network down"),
]


def play(out: StdoutOutput, events: list[OutputEvent]) -> None:
    out.open()
    for event in events:
        out.handle(event)
    out.close()


def test_captions_on_a_terminal_show_the_open_line_in_place():
    buf = io.StringIO()
    play(StdoutOutput(buf, tty=True), SCRIPT)
    assert buf.getvalue() == (
        "\r\x1b[2K[00:01.20] S1: (en) hel"
        "\r\x1b[2K[00:01.20] S1: (en) hello wor"
        "\r\x1b[2K[00:01.20] S1: (en) hello world.\n"
        "\r\x1b[2K[00:03.00] S2: how"
        # the translation goes right below its line; the open line is drawn again below
        "\r\x1b[2K           → (es) hola mundo.\n"
        "\r\x1b[2K[00:03.00] S2: how"
        "\r\x1b[2K[00:03.00] S2: how are you?\n"
        "           → (es) ¿cómo estás?\n"
        "⚠ 12.4 s of speech lost (network down) 00:10.00–00:22.40\n"
    )


def test_captions_in_a_pipe_are_final_whole_lines_only():
    buf = io.StringIO()
    play(StdoutOutput(buf, tty=False), SCRIPT)
    assert buf.getvalue() == (
        "[00:01.20] S1: (en) hello world.\n"
        "           → (es) hola mundo.\n"
        "[00:03.00] S2: how are you?\n"
        "           → (es) ¿cómo estás?\n"
        "⚠ 12.4 s of speech lost (network down) 00:10.00–00:22.40\n"
    )


def test_captions_as_json_lines_include_provisional_ones():
    for tty in (True, False):
        buf = io.StringIO()
        play(StdoutOutput(buf, fmt="json", tty=tty), SCRIPT)
        records = [json.loads(line) for line in buf.getvalue().splitlines()]
        assert len(records) == len(SCRIPT)
        assert records[0] == {
            "type": "caption",
            "seq": 1,
            "final": False,
            "text": "hel",
            "translations": {},
            "translation_final": False,
            "speaker": "1",
            "language": "en",
            "start": 1.2,
            "end": 2.5,
            "offline": False,
        }
        assert [(r["seq"], r["final"], r["translation_final"]) for r in records[:6]] == [
            (1, False, False),
            (1, False, False),
            (1, True, False),
            (2, False, False),
            (1, True, True),
            (2, True, True),
        ]
        assert records[5]["translations"] == {"es": "¿cómo estás?"}
        assert records[6] == {
            "type": "audio_loss",
            "seconds": 12.4,
            "start": 10.0,
            "end": 22.4,
            "reason": "network down",
        }


def test_a_late_translation_is_stamped_with_its_lines_time():
    buf = io.StringIO()
    play(
        StdoutOutput(buf, tty=False),
        [
            caption(1, "first", True, start=1.0),
            caption(2, "second", True, start=2.0),
            caption(1, "first", True, "primero", True, start=1.0),
            caption(2, "second", True, "segundo", True, start=2.0),
            caption(3, "third", True, "tercero", True),
        ],
    )
    assert buf.getvalue() == (
        "[00:01.00] first\n"
        "[00:02.00] second\n"
        "[00:01.00] → (es) primero\n"
        "[00:02.00] → (es) segundo\n"
        "[--:--.--] third\n"
        "           → (es) tercero\n"
    )


def test_a_withdrawn_line_is_cleared_and_not_printed():
    buf = io.StringIO()
    play(StdoutOutput(buf, tty=True), [caption(1, "maybe"), caption(1, ""), caption(1, "", True)])
    assert buf.getvalue() == "\r\x1b[2K[--:--.--] maybe\r\x1b[2K\r\x1b[2K"


def test_the_open_line_keeps_its_newest_words_within_the_terminal_width(monkeypatch):
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a: os.terminal_size((24, 10)))
    buf = io.StringIO()
    out = opened(StdoutOutput(buf, tty=True))
    out.handle(caption(1, "one two three four five", start=0.0))
    assert buf.getvalue() == "\r\x1b[2K[00:00.00] …e four five"  # 23 columns
    out.handle(caption(1, "今天天气很好我们去公园", start=0.0))
    shown = buf.getvalue().rsplit("\r\x1b[2K", 1)[1]
    assert shown == "[00:00.00] …我们去公园"  # CJK characters take two columns


def test_status_lines_and_activity_leave_the_open_caption_line_in_place():
    buf = io.StringIO()
    out = opened(StdoutOutput(buf, tty=True))
    out.handle(caption(1, "still talking"))
    board = StatusBoard()
    board.subscribe(out.handle)
    board.set("audio", "listening")
    assert buf.getvalue() == (
        "\r\x1b[2K[--:--.--] still talking\r\x1b[2K· Listening…\n\r\x1b[2K[--:--.--] still talking"
    )


def test_activity_can_be_hidden_in_text_mode_but_not_in_json():
    buf = io.StringIO()
    out = opened(StdoutOutput(buf, tty=True, show_activity=False))
    out.handle(Activity(1, 0.5))
    out.handle(Activity(1, 0.5, 1.5, "silence"))
    out.close()
    assert buf.getvalue() == ""
    buf = io.StringIO()
    out = opened(StdoutOutput(buf, fmt="json", show_activity=False))
    out.handle(Activity(1, 0.5))
    assert json.loads(buf.getvalue()) == {"type": "speech_start", "utterance": 1, "start": 0.5}


MANY = {"es": "buenos días", "de": "guten Morgen", "hi": "सुप्रभात"}  # in target order


def test_text_each_translation_on_its_own_row_with_its_language_tag():
    buf = io.StringIO()
    line = caption(1, "good morning", True, start=1.0, language="en", translations=MANY)
    play(StdoutOutput(buf, tty=False), [replace(line, translation_final=True)])
    assert buf.getvalue() == (
        "[00:01.00] (en) good morning\n"
        "           → (es) buenos días\n"
        "           → (de) guten Morgen\n"
        "           → (hi) सुप्रभात\n"
    )
    # the languages chosen, in the order chosen; the others never appear
    buf = io.StringIO()
    out = StdoutOutput(buf, tty=True, translations=("hi", "de"))
    play(out, [line, replace(line, translation_final=True)])
    assert buf.getvalue().splitlines() == [
        "[00:01.00] (en) good morning",
        "           → (hi) सुप्रभात",
        "           → (de) guten Morgen",
    ]
    # late, after another line: the first row is stamped with its line's time
    buf = io.StringIO()
    later = caption(2, "next", True, True, start=2.0)
    play(out := StdoutOutput(buf, tty=False), [line, later, replace(line, translation_final=True)])
    assert buf.getvalue().splitlines()[2:] == [
        "[00:01.00] → (es) buenos días",
        "           → (de) guten Morgen",
        "           → (hi) सुप्रभात",
    ]


def test_json_carries_the_chosen_translations_as_an_object():
    line = caption(7, "good morning", True, translation_final=True, translations=MANY)
    buf = io.StringIO()
    play(StdoutOutput.from_config(replace(StdoutConfig(), format="json"), buf), [line])
    record = json.loads(buf.getvalue())
    assert list(record["translations"].items()) == list(MANY.items())  # in target order
    assert "translation" not in record and "translation_language" not in record
    buf = io.StringIO()
    cfg = replace(StdoutConfig(), format="json", translations=("de", "fr"))
    play(StdoutOutput.from_config(cfg, buf), [line])
    assert json.loads(buf.getvalue())["translations"] == {"de": "guten Morgen"}


def test_a_broken_pipe_never_raises_into_the_caller():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away (`edgecap run | head` after ten lines)
    stream = os.fdopen(write_end, "w")
    try:
        out = opened(StdoutOutput(stream, tty=False))
        out.handle(caption(1, "hello", True, "", True))
        out.handle(AudioLoss(1.0, None, None, "test"))
        out.handle(Activity(1, 0.0, 1.0, "stop"))
        out.close()
        assert out.write_errors == 1  # the first failure stops all writing
        assert not out.busy
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def test_a_closed_stream_never_raises_into_the_caller():
    buf = io.StringIO()
    out = opened(StdoutOutput(buf, fmt="json", tty=False))
    buf.close()
    out.handle(caption(1, "hello"))
    out.close()
    assert out.write_errors == 1


# --- behind its worker, on a real pipe -----------------------------------------------------

PAD = "x" * 70  # about 100 bytes a line: a 64 KiB pipe is full after some 650 of them


class Stalled:
    """A real pipe to a StdoutOutput behind a real OutputWorker; its reader reads nothing
    until ``resume``."""

    def __init__(self) -> None:
        self.read_fd, write_fd = os.pipe()
        self.stream = os.fdopen(write_fd, "w", encoding="utf-8")
        self.out = StdoutOutput(self.stream, tty=False)
        self.worker = OutputWorker(self.out, StatusBoard(), drain_timeout=0.5)
        self.worker.start()
        self.got = b""

    def wait_busy(self) -> None:
        deadline = time.monotonic() + 5
        while not self.out.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.out.busy, "the pipe never filled up"

    def resume(self, until: bytes, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while until not in self.got and time.monotonic() < deadline:
            self.got += os.read(self.read_fd, 65536)
        return self.got.decode().splitlines()

    def close(self) -> None:
        self.worker.request_stop()
        self.worker.join(5)
        for close in (self.stream.close, lambda: os.close(self.read_fd)):
            with contextlib.suppress(OSError):
                close()


def test_a_reader_that_stops_reading_holds_up_nothing_and_gets_the_finals_in_order():
    pipe = Stalled()
    try:
        t0 = time.monotonic()
        for seq in range(1, 1001):
            pipe.worker.publish(caption(seq, "typing", start=float(seq)))
            pipe.worker.publish(caption(seq, f"line {seq:04d} {PAD}", True, "", True))
        assert time.monotonic() - t0 < 1.0  # 2000 events while nobody reads
        pipe.wait_busy()
        assert len(pipe.worker.queue) > 100  # finals wait in the queue, not in the output
        asleep = pipe.worker.wakeups
        time.sleep(0.5)
        # asleep until the reader takes more (not polling), and healthy for the watchdog
        assert pipe.worker.wakeups - asleep <= 1
        assert pipe.worker.alive and not pipe.worker.stale(time.monotonic(), 0.4)
        rows = pipe.resume(until=b"line 1000")
        assert [r.split()[2] for r in rows] == [f"{seq:04d}" for seq in range(1, 1001)]
        assert pipe.out.write_errors == 0
    finally:
        pipe.close()


def test_stopping_while_the_reader_is_stalled_takes_bounded_time():
    pipe = Stalled()
    try:
        for seq in range(1, 1001):
            pipe.worker.publish(caption(seq, f"line {seq:04d} {PAD}", True, "", True))
        pipe.wait_busy()
        t0 = time.monotonic()
        pipe.worker.request_stop()
        assert pipe.worker.join(3), "the stdout worker hung on a stalled pipe"
        assert time.monotonic() - t0 < 1.0  # drain 0.5 s (waiting for room) + close 0.2 s
    finally:
        pipe.close()


def test_a_reader_that_goes_away_while_stalled_ends_the_writing():
    pipe = Stalled()
    try:
        for seq in range(1, 1001):
            pipe.worker.publish(caption(seq, f"line {seq:04d} {PAD}", True, "", True))
        pipe.wait_busy()
        os.close(pipe.read_fd)  # EPIPE from now on
        deadline = time.monotonic() + 5
        while pipe.out.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pipe.out.write_errors == 1 and not pipe.out.busy
        assert pipe.worker.alive and pipe.worker.failures == 0  # nothing raised
        deadline = time.monotonic() + 5
        while len(pipe.worker.queue) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(pipe.worker.queue) == 0  # the rest is handled (and written nowhere)
    finally:
        pipe.close()


# --- local text never acts on the terminal (issue 11, item 4) ------------------------------

# What a terminal acts on: C0 controls but the line feed, DEL, C1 controls (\x9b is CSI),
# bidi overrides and isolates, the Unicode line and paragraph separators.
RAW_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
WAV = "wav:/tmp/a\x1b[2Jb\x9b31m\u202e.wav"  # a file name anyone could have chosen


def read_until(fd: int, marker: bytes, timeout: float = 5.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            got += os.read(fd, 65536)
    return got


def test_local_text_on_a_real_terminal_is_escaped_and_captions_cleaned():
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8")
    try:
        out = opened(StdoutOutput(stream))  # a real terminal: its status line is shown
        assert out.tty
        board = StatusBoard()
        board.subscribe(out.handle)
        board.set("audio", "ended", WAV)
        out.handle(AudioLoss(1.5, 0.0, 1.5, "file \x1b]0;title\x07gone\r\nforged"))
        out.handle(Activity(1, 0.0, 1.0, "stop\x1b[31m"))
        # the board cleans caption text: a line that did not come through it is cleaned too
        line = caption(1, "hi \x1b[2Jthere\u202e", True, "hola\x1b[5m\x07", True, start=1.0)
        out.handle(replace(line, speaker="1\x1b[31m", language="en\x1b]0;x\x07"))
        out.close()
        shown = read_until(master, b"hola\r\n").decode().replace("\r\n", "\n")
    finally:
        stream.close()
        os.close(master)
    assert shown == (
        "· End of input: wav:/tmp/a\\x1b[2Jb\\x9b31m\\u202e.wav\n"
        "⚠ 1.5 s of speech lost (file \\x1b]0;title\\x07gone\\x0d\\x0aforged) "
        "00:00.00–00:01.50\n"
        "[00:00.00 → 00:01.00] speech #1, 1.00 s (stop\\x1b[31m)\n"
        "[00:01.00] S1: (en) hi there\n"
        "           → (es) hola\n"
    )
    assert RAW_CONTROL.findall(shown.replace(ERASE, "")) == []


def test_json_status_and_loss_records_are_ascii_on_a_real_pipe():
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w", encoding="utf-8")
    try:
        out = opened(StdoutOutput(stream, fmt="json", tty=False))
        board = StatusBoard()
        board.subscribe(out.handle)
        board.set("audio", "ended", WAV)
        out.handle(AudioLoss(1.5, 0.0, 1.5, f"cannot read {WAV}"))
        out.close()
        got = read_until(read_fd, b'"audio_loss"').decode()
    finally:
        stream.close()
        os.close(read_fd)
    assert got.isascii() and RAW_CONTROL.findall(got) == []
    status, loss = map(json.loads, got.splitlines())
    assert status["parts"]["audio"]["detail"] == WAV  # escaped for JSON, not changed
    assert loss["reason"] == f"cannot read {WAV}"
