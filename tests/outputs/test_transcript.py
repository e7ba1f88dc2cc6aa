"""Transcript files, real files: exact JSON Lines, valid WebVTT and SRT at every moment,
daily sets, rotation, pruning, and an unwritable directory."""

from __future__ import annotations

import datetime as dt
import json
import os
import re

import pytest

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.transcript import TRANSLATION_WAIT, TranscriptOutput

T0 = dt.datetime(2026, 11, 22, 23, 59, 0).timestamp()


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def line(seq, text, start, end, translation="", speaker=None, final=True, tfinal=True):
    return CaptionLine(
        seq,
        text,
        translation,
        speaker,
        "hi" if "न" in text else "en",
        "en" if translation else None,
        start,
        end,
        final,
        final and tfinal,
    )


VTT_CUE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")
SRT_CUE = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")


def seconds(g):
    h, m, s, ms = map(int, g)
    return h * 3600 + m * 60 + s + ms / 1000


def check_cues(text: str, vtt: bool) -> list[tuple[float, float, list[str]]]:
    """A small validator: header, numbering (SRT), timing syntax, end > start, monotonic."""
    blocks = text.split("\n\n")
    assert blocks[-1] == "", "the file must end with a complete cue"
    blocks = blocks[:-1]
    if vtt:
        assert blocks[0] == "WEBVTT"
        blocks = blocks[1:]
    cues = []
    last = -1.0
    for n, block in enumerate(blocks, start=1):
        rows = block.split("\n")
        if not vtt:
            assert rows[0] == str(n)
            rows = rows[1:]
        m = (VTT_CUE if vtt else SRT_CUE).match(rows[0])
        assert m, rows[0]
        start, end = seconds(m.groups()[:4]), seconds(m.groups()[4:])
        assert end > start >= last
        last = end
        assert rows[1:] and all(rows[1:])
        cues.append((start, end, rows[1:]))
    return cues


def test_captions_gaps_and_valid_files_at_every_moment(tmp_path):
    clock = Clock(T0 - 3600)
    out = TranscriptOutput(tmp_path / "t", clock=clock, started_at=T0 - 3600)
    out.open()
    out.handle(line(1, "provisional", 1.0, 2.0, final=False))  # ignored
    out.handle(line(1, "Hello <everyone> & welcome", 1.0, 2.5, speaker="1"))
    out.handle(line(2, "नमस्ते सभी", 3.0, 4.0, translation="Hello all", speaker="2"))
    out.handle(AudioLoss(2.0, 5.0, 7.0, "service unreachable"))
    # no close(): the files must already be complete, as after a kill
    day = dt.datetime.fromtimestamp(clock()).strftime("%Y-%m-%d")
    records = [json.loads(x) for x in (tmp_path / "t" / f"{day}.jsonl").read_text().splitlines()]
    assert records[0] | {"wall": None} == {
        "seq": 1,
        "start": 1.0,
        "end": 2.5,
        "wall": None,
        "speaker": "1",
        "language": "en",
        "text": "Hello <everyone> & welcome",
        "translation": None,
        "translation_language": None,
    }
    assert records[0]["wall"].startswith(
        dt.datetime.fromtimestamp(T0 - 3599).strftime("%Y-%m-%dT%H:%M:%S")
    )
    assert records[1]["text"] == "नमस्ते सभी" and records[1]["translation"] == "Hello all"
    assert records[2] == {
        "type": "gap",
        "seconds": 2.0,
        "start": 5.0,
        "end": 7.0,
        "reason": "service unreachable",
    }
    vtt = check_cues((tmp_path / "t" / f"{day}.vtt").read_text(), vtt=True)
    assert vtt[0] == (0.0, 1.5, ["<v Speaker 1>Hello &lt;everyone&gt; &amp; welcome"])
    assert vtt[1] == (2.0, 3.0, ["<v Speaker 2>नमस्ते सभी", "<v Speaker 2>Hello all"])
    srt = check_cues((tmp_path / "t" / f"{day}.srt").read_text(), vtt=False)
    assert srt[1] == (2.0, 3.0, ["नमस्ते सभी", "Hello all"])
    assert oct(os.stat(tmp_path / "t" / f"{day}.jsonl").st_mode & 0o777) == "0o640"
    out.close()


def test_a_translation_that_never_finalizes_is_written_after_a_wait(tmp_path):
    clock = Clock(T0 - 3600)
    out = TranscriptOutput(tmp_path, clock=clock, formats=("jsonl",))
    out.open()
    out.handle(line(1, "waits", 0.0, 1.0, translation="esp", tfinal=False))
    assert not list(tmp_path.glob("*.jsonl"))
    clock.t += TRANSLATION_WAIT + 1
    out.idle(0)
    (f,) = tmp_path.glob("*.jsonl")
    assert json.loads(f.read_text())["translation"] == "esp"
    out.handle(line(1, "waits", 0.0, 1.0, translation="espera", tfinal=True))  # late: once only
    assert len(f.read_text().splitlines()) == 1
    out.close()


def test_a_new_set_each_day(tmp_path):
    clock = Clock(T0)  # 23:59
    out = TranscriptOutput(tmp_path, clock=clock, formats=("jsonl", "vtt"))
    out.open()
    out.handle(line(1, "before midnight", 0.0, 1.0))
    clock.t += 120  # 00:01 the next day
    out.idle(0)
    out.handle(line(2, "after midnight", 120.0, 121.0))
    out.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["2026-11-22.jsonl", "2026-11-22.vtt", "2026-11-23.jsonl", "2026-11-23.vtt"]
    assert check_cues((tmp_path / "2026-11-23.vtt").read_text(), vtt=True)[0][0] == 0.0


def test_rotation_and_pruning(tmp_path):
    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
        (tmp_path / f"{day}.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("not ours")
    clock = Clock(T0 - 3600)
    out = TranscriptOutput(tmp_path, clock=clock, formats=("jsonl",), max_size=1000, keep=2)
    out.open()
    for i in range(1, 30):
        out.handle(line(i, f"caption {i} " + "x" * 80, i, i + 0.5))
    out.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "notes.txt" in names
    assert "2026-11-01.jsonl" not in names and "2026-11-02.jsonl" not in names
    parts = sorted(p for p in tmp_path.glob("2026-11-22*.jsonl"))
    assert len(parts) >= 3
    assert all(p.stat().st_size < 1000 + 200 for p in parts)
    seqs = [
        json.loads(x)["seq"]
        for p in sorted(parts, key=lambda p: (len(p.name), p.name))
        for x in p.read_text().splitlines()
    ]
    assert seqs == list(range(1, 30))


def test_unwritable_directory_is_reported(tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / "file-not-dir"
        target.write_text("")
        out = TranscriptOutput(target / "sub")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = TranscriptOutput(locked / "sub")
    with pytest.raises(OutputUnavailable, match="cannot write transcripts"):
        out.open()
