"""Transcript files, real files in tmp_path: exact JSON Lines, WebVTT and SRT that are valid
at every moment (read without close(), as after a kill), daily and per-run sets, rotation,
pruning, recovery from cut-off records, and a directory that cannot be written."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
from pathlib import Path

import pytest

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.loader import load
from edgecap.config.schema import TranscriptConfig
from edgecap.outputs import transcript as transcript_module
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.transcript import TRANSLATION_WAIT, TranscriptOutput

S = dt.datetime(2026, 11, 22, 9, 14, 3).timestamp()  # a run's start (local time)
NIGHT = dt.datetime(2026, 11, 22, 23, 59, 0).timestamp()


class Clock:
    """The wall clock (call it) and a monotonic clock that moves with it, except when the
    wall clock is stepped."""

    def __init__(self, t: float) -> None:
        self.t = t
        self.stepped = 0.0

    def __call__(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t - self.stepped - S + 1000.0

    def step(self, seconds: float) -> None:
        self.t += seconds
        self.stepped += seconds


def cap(
    seq: int,
    text: str,
    start: float | None,
    end: float | None,
    *,
    translation: str = "",
    translations: dict[str, str] | None = None,
    speaker: str | None = None,
    language: str | None = "en",
    final: bool = True,
    tfinal: bool = True,
) -> CaptionLine:
    """``translation``: an English one (the common case); ``translations``: any."""
    return CaptionLine(
        seq=seq,
        text=text,
        translations=translations or ({"en": translation} if translation else {}),
        speaker=speaker,
        language=language,
        start=start,
        end=end,
        final=final,
        translation_final=final and tfinal,
    )


def output(directory: Path, clock: Clock, started_at: float, **cfg) -> TranscriptOutput:
    out = TranscriptOutput(
        TranscriptConfig(directory=directory, **cfg),
        clock=clock,
        started_at=started_at,
        monotonic=clock.monotonic,
    )
    out.open()
    return out


def iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds")


def records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "a JSONL file must end with a complete record"
    return [json.loads(row) for row in text.splitlines()]


# --- tiny validators ------------------------------------------------------------------------

VTT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})"
SRT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d),(\d{3})"
VTT_TIMING = re.compile(f"^{VTT_TIME} --> {VTT_TIME}$")
SRT_TIMING = re.compile(f"^{SRT_TIME} --> {SRT_TIME}$")
VOICE = re.compile(r"^<v [^<>&\n]+>")
ENTITY = re.compile(r"&(amp|lt|gt);")

Cue = tuple[float, float, list[str]]


def _seconds(groups: tuple[str, ...]) -> float:
    h, m, s, ms = (int(g) for g in groups)
    return h * 3600 + m * 60 + s + ms / 1000


def _blocks(text: str) -> list[list[str]]:
    assert text.endswith("\n\n"), "the file must end with a complete block"
    return [block.split("\n") for block in text[:-2].split("\n\n")]


def _timed(rows: list[str], timing: re.Pattern[str], last_end: float) -> Cue:
    m = timing.match(rows[0])
    assert m, f"bad timing line {rows[0]!r}"
    start, end = _seconds(m.groups()[:4]), _seconds(m.groups()[4:])
    assert end > start, rows[0]
    assert start >= last_end, f"{rows[0]} overlaps or goes back"
    payload = rows[1:]
    assert payload and all(p.strip() for p in payload), f"empty cue text at {rows[0]}"
    assert not any("-->" in p for p in payload)
    return start, end, payload


def vtt_cues(path: Path) -> tuple[list[Cue], list[str]]:
    """Cues and NOTE texts of a WebVTT file, checked: header, blocks, timings, escaping."""
    blocks = _blocks(path.read_text(encoding="utf-8"))
    assert blocks[0] == ["WEBVTT"]
    cues: list[Cue] = []
    notes: list[str] = []
    last_end = 0.0
    for rows in blocks[1:]:
        if rows[0].startswith("NOTE"):
            notes.append("\n".join(rows))
            continue
        start, end, payload = _timed(rows, VTT_TIMING, last_end)
        for p in payload:
            bare = ENTITY.sub("", VOICE.sub("", p))
            assert not set("<>&") & set(bare), f"unescaped text {p!r}"
        cues.append((start, end, payload))
        last_end = end
    return cues, notes


def srt_cues(path: Path) -> list[Cue]:
    """Cues of an SRT file, checked: numbered from 1 without gaps, timings, text."""
    cues: list[Cue] = []
    last_end = 0.0
    for n, rows in enumerate(_blocks(path.read_text(encoding="utf-8")), start=1):
        assert rows[0] == str(n), f"cue {n} is numbered {rows[0]!r}"
        cues.append(_timed(rows[1:], SRT_TIMING, last_end))
        last_end = cues[-1][1]
    return cues


# --- tests ----------------------------------------------------------------------------------


def test_a_scripted_session_gives_exact_records_and_valid_files_without_close(tmp_path):
    directory = tmp_path / "var" / "transcripts"  # missing: created
    clock = Clock(S + 0.2)
    out = output(directory, clock, S, split="session")
    assert (directory.stat().st_mode & 0o777) == 0o750 & ~_umask()
    base = directory / "2026-11-22T09-14-03"

    out.handle(cap(1, "Good", 0.5, 0.9, speaker="1", final=False))  # provisional: ignored
    clock.t = S + 1.0
    out.idle(0.0)
    assert not list(directory.iterdir()), "nothing is final yet"
    clock.t = S + 2.5
    out.handle(cap(1, "Good morning & <welcome>", 0.5, 2.0, speaker="1"))
    clock.t = S + 3.0
    out.handle(cap(2, "नमस्ते", 2.4, 3.0, speaker="2", language="hi", final=False))
    clock.t = S + 4.0
    hindi = dict(speaker="2", language="hi", translation="Hello")
    out.handle(cap(2, "नमस्ते सभी को", 2.4, 3.6, **hindi, tfinal=False))
    clock.t = S + 5.2
    out.handle(cap(3, "Thank you.", 4.0, 4.8, speaker="1"))  # waits behind line 2
    # a kill now: line 1 is there, whole; lines 2 and 3 were not finished
    assert [r["seq"] for r in records(base.with_suffix(".jsonl"))] == [1]
    assert len(vtt_cues(base.with_suffix(".vtt"))[0]) == 1
    assert len(srt_cues(base.with_suffix(".srt"))) == 1

    clock.t = S + 5.5
    out.handle(cap(2, "नमस्ते सभी को", 2.4, 3.6, **{**hindi, "translation": "Hello everyone"}))
    clock.t = S + 7.0
    out.handle(AudioLoss(1.5, 5.0, 6.5, "network down"))
    clock.t = S + 7.5
    out.handle(cap(4, "no times", None, None))
    out.handle(cap(5, "", 8.0, 8.2, final=True))  # a withdrawn line: nothing
    out.idle(0.0)

    # no close(): read as a kill would leave it
    assert records(base.with_suffix(".jsonl")) == [
        {
            "seq": 1,
            "start": 0.5,
            "end": 2.0,
            "wall": iso(S + 0.5),
            "speaker": "1",
            "language": "en",
            "text": "Good morning & <welcome>",
            "translations": {},
            "translation": None,
            "translation_language": None,
        },
        {
            "seq": 2,
            "start": 2.4,
            "end": 3.6,
            "wall": iso(S + 2.4),
            "speaker": "2",
            "language": "hi",
            "text": "नमस्ते सभी को",
            "translations": {"en": "Hello everyone"},
            "translation": "Hello everyone",
            "translation_language": "en",
        },
        {
            "seq": 3,
            "start": 4.0,
            "end": 4.8,
            "wall": iso(S + 4.0),
            "speaker": "1",
            "language": "en",
            "text": "Thank you.",
            "translations": {},
            "translation": None,
            "translation_language": None,
        },
        {
            "type": "gap",
            "seconds": 1.5,
            "start": 5.0,
            "end": 6.5,
            "wall": iso(S + 5.0),
            "reason": "network down",
        },
        {
            "seq": 4,
            "start": None,
            "end": None,
            "wall": iso(S + 7.5),  # unknown: the time it was written
            "speaker": None,
            "language": "en",
            "text": "no times",
            "translations": {},
            "translation": None,
            "translation_language": None,
        },
    ]
    cues, notes = vtt_cues(base.with_suffix(".vtt"))
    assert cues == [
        (0.5, 2.0, ["<v Speaker 1>Good morning &amp; &lt;welcome&gt;"]),
        (2.4, 3.6, ["<v Speaker 2>नमस्ते सभी को", "[en] Hello everyone"]),
        (4.0, 4.8, ["<v Speaker 1>Thank you."]),
        (6.0, 7.5, ["no times"]),  # ends when written, lasts an estimate
    ]
    assert notes == ["NOTE audio lost: 1.5 s (network down)"]
    assert srt_cues(base.with_suffix(".srt")) == [
        (0.5, 2.0, ["Speaker 1: Good morning & <welcome>"]),
        (2.4, 3.6, ["Speaker 2: नमस्ते सभी को", "[en] Hello everyone"]),
        (4.0, 4.8, ["Speaker 1: Thank you."]),
        (6.0, 7.5, ["no times"]),
    ]
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    out.close()
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert sorted(before) == [f"{base.name}.{f}" for f in ("jsonl", "srt", "vtt")]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_translation_that_never_finalizes_is_written_after_a_bounded_wait(tmp_path):
    clock = Clock(S + 3)
    out = output(tmp_path, clock, S, split="session", formats=("jsonl",))
    (path,) = [tmp_path / "2026-11-22T09-14-03.jsonl"]
    out.handle(cap(1, "Buenos días", 0.5, 2.0, translation="Good", tfinal=False))
    out.handle(cap(2, "a todos", 2.5, 3.0))  # done, but keeps the order: waits behind 1
    clock.t += TRANSLATION_WAIT - 0.5
    out.idle(0.0)
    assert not path.exists()
    clock.t += 1.0
    out.idle(0.0)
    assert [(r["seq"], r["translation"]) for r in records(path)] == [(1, "Good"), (2, None)]
    # the final translation comes too late: the line is never written twice
    out.handle(cap(1, "Buenos días", 0.5, 2.0, translation="Good morning"))
    assert len(records(path)) == 2 and out.late == 1


def test_a_translation_that_finalizes_in_time_is_written_once_complete(tmp_path):
    clock = Clock(S + 3)
    out = output(tmp_path, clock, S, split="session", formats=("jsonl", "vtt"))
    out.handle(cap(1, "Buenos días", 0.5, 2.0, translation="Good", tfinal=False))
    clock.t += TRANSLATION_WAIT - 1
    out.idle(0.0)
    out.handle(cap(1, "Buenos días", 0.5, 2.0, translation="Good morning", tfinal=False))
    out.handle(cap(1, "Buenos días", 0.5, 2.0, translation="Good morning everyone"))
    clock.t += TRANSLATION_WAIT
    out.idle(0.0)
    (jsonl,) = tmp_path.glob("*.jsonl")
    assert [r["translation"] for r in records(jsonl)] == ["Good morning everyone"]
    (vtt,) = tmp_path.glob("*.vtt")
    assert vtt_cues(vtt)[0] == [(0.5, 2.0, ["Buenos días", "[en] Good morning everyone"])]


def test_close_writes_lines_still_waiting_for_their_translation(tmp_path):
    clock = Clock(S + 3)
    out = output(tmp_path, clock, S, formats=("jsonl",))
    out.handle(cap(1, "Guten Tag", 0.5, 2.0, translation="Good", tfinal=False))
    assert not list(tmp_path.iterdir())
    out.close()
    (path,) = tmp_path.glob("*.jsonl")
    assert [(r["seq"], r["translation"]) for r in records(path)] == [(1, "Good")]


def test_every_translation_under_its_line_in_the_boards_order(tmp_path):
    clock = Clock(S + 3)
    out = output(tmp_path, clock, S, split="session")
    texts = {"de": "Guten Morgen.", "fr": "Bonjour.", "": "Hallo --> Welt."}
    out.handle(cap(1, "Good morning.", 0.5, 2.0, translations=texts))
    out.handle(
        cap(2, "", 2.5, 3.0, language="hi", translations={"fr": "Merci."})
    )  # translation only
    base = tmp_path / "2026-11-22T09-14-03"
    one, two = records(base.with_suffix(".jsonl"))
    assert list(one["translations"].items()) == list(texts.items())  # the order kept
    assert (one["translation"], one["translation_language"]) == ("Guten Morgen.", "de")
    assert (two["text"], two["translations"]) == ("", {"fr": "Merci."})
    assert (two["translation"], two["translation_language"]) == ("Merci.", "fr")
    rows = ["Good morning.", "[de] Guten Morgen.", "[fr] Bonjour.", "Hallo -> Welt."]
    assert srt_cues(base.with_suffix(".srt")) == [(0.5, 2.0, rows), (2.5, 3.0, ["[fr] Merci."])]
    rows[-1] = "Hallo -&gt; Welt."  # escaped in VTT
    assert vtt_cues(base.with_suffix(".vtt"))[0] == [(0.5, 2.0, rows), (2.5, 3.0, ["[fr] Merci."])]


def test_the_translations_written_are_chosen_per_output(tmp_path):
    ini = tmp_path / "edgecap.ini"
    ini.write_text(f"[transcript]\ndirectory = {tmp_path / 't'}\ntranslations = fr, de, it\n")
    cfg = load([ini], env={}).config.transcript
    assert cfg.translations == ("fr", "de", "it")
    clock = Clock(S + 3)
    out = TranscriptOutput(cfg, clock=clock, started_at=S, monotonic=clock.monotonic)
    out.open()
    texts = {"de": "Danke.", "es": "Gracias.", "fr": "Merci."}
    out.handle(cap(1, "Thank you.", 0.5, 2.0, translations=texts))
    out.handle(cap(2, "", 2.5, 3.0, translations={"es": "Adiós."}))  # no language chosen: skipped
    out.handle(cap(3, "Bye.", 3.5, 4.0, translations={"es": "Adiós."}))  # its text still is
    out.close()
    (jsonl,) = (tmp_path / "t").glob("*.jsonl")
    assert [(r["seq"], r["translations"]) for r in records(jsonl)] == [
        (1, {"fr": "Merci.", "de": "Danke."}),  # in the order chosen
        (3, {}),
    ]
    assert [r["translation"] for r in records(jsonl)] == ["Merci.", None]
    (vtt,) = (tmp_path / "t").glob("*.vtt")
    assert [rows for _, _, rows in vtt_cues(vtt)[0]] == [
        ["Thank you.", "[fr] Merci.", "[de] Danke."],
        ["Bye."],
    ]
    assert out.written == 2


def test_a_new_set_after_midnight_with_cue_times_of_the_day(tmp_path):
    clock = Clock(NIGHT + 1)  # the run started at 23:59:00
    out = output(tmp_path, clock, NIGHT)
    clock.t = NIGHT + 12
    out.handle(cap(1, "before midnight", 10.0, 11.0))
    clock.t = NIGHT + 63
    out.handle(cap(2, "across midnight", 58.0, 62.0))  # spoken 23:59:58: the old day
    clock.t = NIGHT + 72
    out.idle(0.0)
    out.handle(cap(3, "after midnight", 70.0, 71.5))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"2026-11-2{d}.{f}" for d in (2, 3) for f in ("jsonl", "srt", "vtt")]
    assert [r["seq"] for r in records(tmp_path / "2026-11-22.jsonl")] == [1, 2]
    assert [r["seq"] for r in records(tmp_path / "2026-11-23.jsonl")] == [3]
    day = 86400.0
    assert [c[:2] for c in vtt_cues(tmp_path / "2026-11-22.vtt")[0]] == [
        (day - 50, day - 49),  # 23:59:10 → 23:59:11
        (day - 2, day + 2),
    ]
    assert [c[:2] for c in srt_cues(tmp_path / "2026-11-23.srt")] == [(10.0, 11.5)]
    out.close()


def test_rotation_at_max_size_keeps_every_part_valid(tmp_path):
    clock = Clock(S)
    out = output(tmp_path, clock, S, split="session", max_size=2000)
    for seq in range(1, 41):
        clock.t = S + 2 * seq + 1
        out.handle(cap(seq, f"caption {seq} " + "words " * 12, 2.0 * seq, 2.0 * seq + 1.5))
    stem = "2026-11-22T09-14-03"
    parts = {
        fmt: sorted(tmp_path.glob(f"{stem}*.{fmt}"), key=lambda p: (len(p.name), p.name))
        for fmt in ("jsonl", "vtt", "srt")
    }
    assert len(parts["jsonl"]) >= 3
    assert [p.name for p in parts["jsonl"][:3]] == [
        f"{stem}.jsonl",
        f"{stem}-2.jsonl",
        f"{stem}-3.jsonl",
    ]
    # all formats move on together: a part holds the same captions in each format
    assert [p.stem for p in parts["vtt"]] == [p.stem for p in parts["jsonl"]]
    assert [p.stem for p in parts["srt"]] == [p.stem for p in parts["jsonl"]]
    assert all(p.stat().st_size <= 2000 for ps in parts.values() for p in ps)
    seqs = [r["seq"] for p in parts["jsonl"] for r in records(p)]
    assert seqs == list(range(1, 41))
    starts = []
    for vtt, srt, jsonl in zip(parts["vtt"], parts["srt"], parts["jsonl"], strict=True):
        cues = vtt_cues(vtt)[0]
        assert len(cues) == len(srt_cues(srt)) == len(records(jsonl))
        starts += [c[0] for c in cues]
    assert starts == [2.0 * seq for seq in range(1, 41)]


def test_keep_deletes_only_the_oldest_of_our_sets(tmp_path):
    ours = [
        "2026-11-18.jsonl",
        "2026-11-18.vtt",
        "2026-11-18-2.jsonl",
        "2026-11-19T08-00-00.srt",
        "2026-11-20.jsonl",
        "2026-11-21.vtt",
        "2026-11-25.jsonl",  # newer than today (a clock that was ahead): never deleted
    ]
    foreign = ["notes.txt", "2026-11-17.jsonl.bak", "2026-11-16.json", "x2026-11-15.vtt"]
    for name in ours + foreign:
        (tmp_path / name).write_text("{}\n")
    clock = Clock(S + 5)
    out = output(tmp_path, clock, S, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ours + foreign), "only on write"
    out.handle(cap(1, "hello", 2.0, 3.0))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(
        foreign
        + ["2026-11-21.vtt", "2026-11-25.jsonl"]
        + [f"2026-11-22.{f}" for f in ("jsonl", "vtt", "srt")]
    )
    out.close()


def test_a_restart_repairs_records_cut_off_by_a_kill_and_appends(tmp_path):
    clock = Clock(S + 3)
    first = output(tmp_path, clock, S)
    first.handle(cap(1, "one", 1.0, 2.0, speaker="1"))
    first.handle(cap(2, "two", 2.5, 3.0, speaker="2"))
    # killed in the middle of writing line 3 (no close)
    day = tmp_path / "2026-11-22"
    cut = {
        "jsonl": b'{"seq": 3, "start": 4.0, "te',
        "vtt": b"00:00:04.000 --> 00:0",
        "srt": b"3\n0",
    }
    for fmt, data in cut.items():
        with open(day.with_suffix(f".{fmt}"), "ab") as f:
            f.write(data)
    first._close_files()  # the dead process's descriptors (and locks) are gone

    later = S + 600  # a new run the same day, numbering from 1 again
    clock.t = later + 2
    second = output(tmp_path, clock, later)
    second.handle(cap(1, "three", 0.5, 1.5))
    assert [r["text"] for r in records(day.with_suffix(".jsonl"))] == ["one", "two", "three"]
    cues = vtt_cues(day.with_suffix(".vtt"))[0]
    assert [c[2][-1] for c in cues] == ["<v Speaker 1>one", "<v Speaker 2>two", "three"]
    nine_fourteen = S - dt.datetime(2026, 11, 22).timestamp()
    assert cues[2][0] == pytest.approx(nine_fourteen + 600.5)
    assert [c[2] for c in srt_cues(day.with_suffix(".srt"))] == [
        ["Speaker 1: one"],
        ["Speaker 2: two"],
        ["three"],
    ]
    second.close()


def test_a_write_failing_midway_is_reported_then_completed_once(tmp_path, monkeypatch):
    clock = Clock(S + 3)
    out = output(tmp_path, clock, S, split="session")
    out.handle(cap(1, "one", 1.0, 2.0))
    real = transcript_module._write_all
    calls = []

    def disk_full_after_one_write(fd: int, data: bytes) -> None:
        calls.append(data)
        if len(calls) == 1:
            return real(fd, data)  # line 2's JSONL record
        real(fd, data[: len(data) // 2])  # half of its VTT cue, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transcript_module, "_write_all", disk_full_after_one_write)
    with pytest.raises(
        OutputUnavailable, match=f"cannot write transcripts in {tmp_path}: disk full"
    ):
        out.handle(cap(2, "two", 2.5, 3.0))
    out.close()  # what the worker does; close() must not raise
    monkeypatch.setattr(transcript_module, "_write_all", real)

    out.open()  # the worker's retry
    clock.t += 1
    out.handle(cap(3, "three", 3.5, 4.0))
    base = tmp_path / "2026-11-22T09-14-03"
    assert [r["seq"] for r in records(base.with_suffix(".jsonl"))] == [1, 2, 3]
    assert [c[2] for c in vtt_cues(base.with_suffix(".vtt"))[0]] == [["one"], ["two"], ["three"]]
    assert [c[2] for c in srt_cues(base.with_suffix(".srt"))] == [["one"], ["two"], ["three"]]
    out.close()


def test_a_directory_that_cannot_be_made_is_unavailable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = TranscriptOutput(TranscriptConfig(directory=blocker / "transcripts"))
    with pytest.raises(
        OutputUnavailable, match=r"cannot write transcripts in .*a-file/transcripts"
    ):
        out.open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_directory_without_write_permission_is_unavailable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    out = TranscriptOutput(TranscriptConfig(directory=locked))
    with pytest.raises(OutputUnavailable, match="permission denied"):
        out.open()


def test_a_full_disk_is_unavailable_at_open(tmp_path, monkeypatch):
    real = os.statvfs

    def full(path):
        st = real(path)
        return os.statvfs_result((*st[:4], 10, *st[5:]))  # 10 blocks left

    monkeypatch.setattr(os, "statvfs", full)
    with pytest.raises(OutputUnavailable, match="disk full"):
        TranscriptOutput(TranscriptConfig(directory=tmp_path)).open()


def test_wall_times_come_from_capture_time_and_follow_a_stepped_clock(tmp_path):
    stale = S - 3 * 86400  # a Pi without a clock battery: the time saved at the last shutdown
    clock = Clock(stale + 3)
    out = output(tmp_path, clock, stale, formats=("jsonl",))
    out.handle(cap(1, "before the clock is set", 1.0, 2.0))
    clock.step(3 * 86400)  # the network sets the clock: the run began at S after all
    clock.t += 27
    out.handle(cap(2, "after", 28.0, 29.0))
    clock.t += 3600  # written an hour late (a long outage): still the time it was spoken
    out.handle(cap(3, "late", 40.0, 41.0))
    stale_day = dt.datetime.fromtimestamp(stale).strftime("%Y-%m-%d")
    assert [r["wall"] for r in records(tmp_path / f"{stale_day}.jsonl")] == [iso(stale + 1.0)]
    walls = [r["wall"] for r in records(tmp_path / "2026-11-22.jsonl")]
    assert walls == [iso(S + 28.0), iso(S + 40.0)]


def test_an_output_made_mid_run_without_started_at_anchors_on_the_clock(tmp_path):
    clock = Clock(S + 3600)  # made at a reload, an hour into the run
    out = TranscriptOutput(
        TranscriptConfig(directory=tmp_path, formats=("jsonl",)),
        clock=clock,
        monotonic=clock.monotonic,
    )
    out.open()
    clock.t += 1
    out.handle(cap(7, "an hour in", 3598.5, 3600.0))  # capture time counts from the run's start
    (path,) = tmp_path.glob("*.jsonl")
    assert [r["wall"] for r in records(path)] == [iso(S + 3601 - 1.5)]


def test_files_deleted_while_open_are_written_anew(tmp_path):
    clock = Clock(S + 3)
    out = output(tmp_path, clock, S, split="session")
    out.handle(cap(1, "one", 1.0, 2.0))
    for path in tmp_path.iterdir():
        path.unlink()
    out.handle(cap(2, "two", 2.5, 3.0))
    base = tmp_path / "2026-11-22T09-14-03"
    assert [r["seq"] for r in records(base.with_suffix(".jsonl"))] == [2]
    assert [c[2] for c in vtt_cues(base.with_suffix(".vtt"))[0]] == [["two"]]
    assert [c[2] for c in srt_cues(base.with_suffix(".srt"))] == [["two"]]


def test_a_second_writer_of_the_same_set_takes_the_next_part(tmp_path):
    clock = Clock(S + 3)
    one, two = output(tmp_path, clock, S), output(tmp_path, clock, S)
    one.handle(cap(1, "one", 1.0, 2.0))
    two.handle(cap(1, "two", 1.0, 2.0))
    one.handle(cap(2, "one again", 2.5, 3.0))
    assert [r["text"] for r in records(tmp_path / "2026-11-22.jsonl")] == ["one", "one again"]
    assert [r["text"] for r in records(tmp_path / "2026-11-22-2.jsonl")] == ["two"]
    one.close()
    two.close()
