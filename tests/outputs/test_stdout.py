import contextlib
import io
import json
import os
import re
import shutil
import threading

from edgecap.captions.events import AudioLoss, CaptionEvent, CaptionLine
from edgecap.outputs.stdout import StdoutOutput
from edgecap.runtime.speech import Activity
from edgecap.runtime.status import StatusBoard


def test_text_on_a_pipe_is_whole_lines_only():
    buf = io.StringIO()
    out = StdoutOutput(buf, tty=False)
    out.activity(Activity(1, 0.32))
    out.activity(Activity(1, 0.32, 3.41, "silence"))
    out.close()
    assert buf.getvalue() == "[00:00.32 → 00:03.41] speech #1, 3.09 s (silence)\n"


def test_on_a_terminal_the_current_utterance_is_replaced_in_place():
    buf = io.StringIO()
    out = StdoutOutput(buf, tty=True)
    out.activity(Activity(2, 61.0))
    out.activity(Activity(2, 61.0, 62.5, "max_length"))
    text = buf.getvalue()
    assert text.startswith("\r\x1b[2K● speech #2 from 01:01.00 …")
    assert text.endswith("\r\x1b[2K[01:01.00 → 01:02.50] speech #2, 1.50 s (max length)\n")


def test_json_lines_and_status():
    buf = io.StringIO()
    out = StdoutOutput(buf, fmt="json")
    board = StatusBoard()
    board.subscribe(out.status)
    board.set("audio", "device_missing", "no capture device matches 'USB'")
    out.activity(Activity(3, 1.0))
    out.activity(Activity(3, 1.0, 2.0, "stop"))
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


# --- captions ------------------------------------------------------------------------------


def caption(
    seq: int,
    text: str,
    final: bool = False,
    translation: str = "",
    translation_final: bool = False,
    **kw,
) -> CaptionLine:
    fields: dict = {"speaker": None, "language": None, "translation_language": None}
    fields |= {"start": None, "end": None} | kw
    return CaptionLine(
        seq, text, translation, final=final, translation_final=translation_final, **fields
    )


S1 = {"speaker": "1", "language": "en", "start": 1.2, "end": 2.5, "translation_language": "es"}
S2 = {"speaker": "2", "start": 3.0, "end": 4.0}
SCRIPT: list[CaptionEvent] = [
    caption(1, "hel", **S1),
    caption(1, "hello wor", **S1),
    caption(1, "hello world.", True, "hola", **S1),
    caption(2, "how", **S2),
    caption(1, "hello world.", True, "hola mundo.", True, **S1),
    caption(2, "how are you?", True, "¿cómo estás?", True, **S2),
    AudioLoss(12.4, 10.0, 22.4, "network down"),
]


def play(out: StdoutOutput, events: list[CaptionEvent]) -> None:
    for event in events:
        out.caption(event)
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
        "\r\x1b[2K           → hola mundo.\n"
        "\r\x1b[2K[00:03.00] S2: how"
        "\r\x1b[2K[00:03.00] S2: how are you?\n"
        "           → ¿cómo estás?\n"
        "⚠ 12.4 s of speech lost (network down) 00:10.00–00:22.40\n"
    )


def test_captions_in_a_pipe_are_final_whole_lines_only():
    buf = io.StringIO()
    play(StdoutOutput(buf, tty=False), SCRIPT)
    assert buf.getvalue() == (
        "[00:01.20] S1: (en) hello world.\n"
        "           → hola mundo.\n"
        "[00:03.00] S2: how are you?\n"
        "           → ¿cómo estás?\n"
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
            "translation": "",
            "translation_final": False,
            "speaker": "1",
            "language": "en",
            "translation_language": "es",
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
        assert records[5]["translation"] == "¿cómo estás?"
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
        "[00:01.00] → primero\n"
        "[00:02.00] → segundo\n"
        "[--:--.--] third\n"
        "           → tercero\n"
    )


def test_a_withdrawn_line_is_cleared_and_not_printed():
    buf = io.StringIO()
    play(StdoutOutput(buf, tty=True), [caption(1, "maybe"), caption(1, ""), caption(1, "", True)])
    assert buf.getvalue() == "\r\x1b[2K[--:--.--] maybe\r\x1b[2K\r\x1b[2K"


def test_the_open_line_keeps_its_newest_words_within_the_terminal_width(monkeypatch):
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a: os.terminal_size((24, 10)))
    buf = io.StringIO()
    out = StdoutOutput(buf, tty=True)
    out.caption(caption(1, "one two three four five", start=0.0))
    assert buf.getvalue() == "\r\x1b[2K[00:00.00] …e four five"  # 23 columns
    out.caption(caption(1, "今天天气很好我们去公园", start=0.0))
    shown = buf.getvalue().rsplit("\r\x1b[2K", 1)[1]
    assert shown == "[00:00.00] …我们去公园"  # CJK characters take two columns


def test_status_lines_and_activity_leave_the_open_caption_line_in_place():
    buf = io.StringIO()
    out = StdoutOutput(buf, tty=True)
    out.caption(caption(1, "still talking"))
    board = StatusBoard()
    board.subscribe(out.status)
    board.set("audio", "listening")
    assert buf.getvalue() == (
        "\r\x1b[2K[--:--.--] still talking\r\x1b[2K· Listening…\n\r\x1b[2K[--:--.--] still talking"
    )


def test_activity_can_be_hidden_in_text_mode_but_not_in_json():
    buf = io.StringIO()
    out = StdoutOutput(buf, tty=True, show_activity=False)
    out.activity(Activity(1, 0.5))
    out.activity(Activity(1, 0.5, 1.5, "silence"))
    out.close()
    assert buf.getvalue() == ""
    buf = io.StringIO()
    out = StdoutOutput(buf, fmt="json", show_activity=False)
    out.activity(Activity(1, 0.5))
    assert json.loads(buf.getvalue()) == {"type": "speech_start", "utterance": 1, "start": 0.5}


def test_a_broken_pipe_never_raises_into_the_caller():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away (`edgecap run | head` after ten lines)
    stream = os.fdopen(write_end, "w")
    try:
        out = StdoutOutput(stream, tty=False)
        out.caption(caption(1, "hello", True, "", True))
        out.caption(AudioLoss(1.0, None, None, "test"))
        out.activity(Activity(1, 0.0, 1.0, "stop"))
        out.close()
        assert out.write_errors == 1  # the first failure stops all writing
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def test_a_closed_stream_never_raises_into_the_caller():
    buf = io.StringIO()
    out = StdoutOutput(buf, fmt="json", tty=False)
    buf.close()
    out.caption(caption(1, "hello"))
    out.close()
    assert out.write_errors == 1


def test_lines_from_several_threads_are_never_mixed():
    buf = io.StringIO()
    out = StdoutOutput(buf, tty=True)
    board = StatusBoard()
    board.subscribe(out.status)

    def captions(first: int) -> None:
        for seq in range(first, first + 200):
            out.caption(caption(seq, f"provisional {seq}"))
            out.caption(caption(seq, f"line {seq}", True, f"translation {seq}", True))

    def statuses() -> None:
        for i in range(200):
            board.set("audio", "speech" if i % 2 else "listening")

    threads = [threading.Thread(target=captions, args=(n * 1000,)) for n in range(3)]
    threads.append(threading.Thread(target=statuses))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()
    rows = [row.rsplit("\r\x1b[2K", 1)[-1] for row in buf.getvalue().split("\n")]
    finals = [r for r in rows if r.startswith("[--:--.--] line")]
    assert len(finals) == 600
    assert all(re.fullmatch(r"\[--:--\.--\] line (\d+)", r) for r in finals)
    translations = [r for r in rows if "→" in r]
    assert all(re.fullmatch(r"(\[--:--\.--\] | {11})→ translation \d+", r) for r in translations)
    assert len(translations) == 600
