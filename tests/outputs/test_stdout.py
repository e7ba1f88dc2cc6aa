import io
import json

from edgecap.daemon.status import StatusBoard
from edgecap.outputs.stdout import Activity, StdoutOutput


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
