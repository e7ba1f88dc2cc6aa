"""The HDMI output's render costs what changed, not the screen: each slot is written only
when what it shows changes (one pwrite of its rows), a strip is drawn only as wide as its
text, a caption that grows by a word is drawn a word at a time, and the same words in
another colour are not drawn again. Whatever the path, the screen must be byte for byte
the frame the plain rendering gives — every slot a full-width RGB image with its text drawn
in its colour, packed whole (``plain_frame``, independent of the output's strips) — through
growth, scrolls, colour changes, the minute's full rewrite and a device lost mid-frame.
All on real framebuffer-format files; pwrite is wrapped only to count and to fail."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgecap.captions.events import CaptionLine
from edgecap.outputs import fonts as fontmod
from edgecap.outputs import framebuffer as fbmod
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.fonts import FontChain
from edgecap.outputs.framebuffer import pack_color
from edgecap.outputs.hdmi import DIM, HdmiOutput
from edgecap.outputs.rollup import Row, layout
from tests.outputs.test_framebuffer import reference_pack
from tests.outputs.test_hdmi import (
    AMBER,
    BLUE,
    FONTS,
    GREY,
    WHITE,
    Clock,
    line,
    needs_deva,
    output,
    render,
)
from tests.outputs.test_hdmi import fake_fb as _fake_fb

WORDS = "Unless the system is established for the frequent formal review of activities".split()  # noqa: SIM905


def fake_fb(root: Path, width: int, height: int, bpp: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return _fake_fb(root, width, height, bpp)


def plain_frame(out: HdmiOutput, lines: list[CaptionLine], phase: str = "on") -> bytes:
    """The whole frame as the plain rendering draws ``lines`` (no status line, no QR code):
    the background, and each caption row a full-width RGB strip of the background with its
    text drawn by the font chain in its colour, packed whole."""
    info = out.info
    assert info is not None and out.fonts is not None
    frame = np.empty((info.height, info.row_bytes), dtype=np.uint8)
    frame[:] = np.tile(np.frombuffer(pack_color(out.background, info.bpp), np.uint8), info.width)
    rows = layout(lines, out.rows, out.text_width, out.show, out.fonts.width)
    first = out.rows - len(rows) if out.layout_mode == "rollup" else 0
    for i, row in enumerate(rows):
        img = Image.new("RGB", (info.width, out.line_height), out.background)
        out.fonts.draw(
            ImageDraw.Draw(img),
            out.margin,
            out.baseline,
            row.text,
            colour(out, row, phase),
            align_width=out.text_width,
        )
        y = out.band_top + out.slot_y(first + i)
        frame[y : y + out.line_height] = reference_pack(np.asarray(img), info.bpp)
    return frame.tobytes()


def colour(out: HdmiOutput, row: Row, phase: str) -> tuple[int, int, int]:
    rgb = {"final": WHITE, "provisional": GREY}.get(row.style) or (AMBER, BLUE)[row.order]
    if phase == "dim":
        bg = out.background
        rgb = tuple(round(b + (c - b) * DIM) for c, b in zip(rgb, bg, strict=True))  # type: ignore[assignment]
    return rgb


class Writes:
    """Every pwrite on the framebuffer as (first row, rows), for the device's stride; the
    real pwrite does the writing. ``fail_in`` = n: the n-th call from now raises ENODEV
    instead, as when the screen is unplugged."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stride: int) -> None:
        self.stride = stride
        self.calls: list[tuple[int, int]] = []
        self.fail_in = 0
        real = os.pwrite

        def pwrite(fd: int, data, offset: int) -> int:  # type: ignore[no-untyped-def]
            if self.fail_in:
                self.fail_in -= 1
                if not self.fail_in:
                    raise OSError(errno.ENODEV, "No such device")
            self.calls.append((offset // stride, len(data) // stride))
            return real(fd, data, offset)

        monkeypatch.setattr(fbmod.os, "pwrite", pwrite)

    def clear(self) -> None:
        self.calls.clear()

    @property
    def rows(self) -> int:
        return sum(n for _, n in self.calls)


def grow(out: HdmiOutput, clock: Clock, seq: int, words: list[str], **kw) -> CaptionLine:
    """A provisional line growing word by word, each update drawn; then final (returned)."""
    for i in range(1, len(words) + 1):
        event = line(seq, " ".join(words[:i]), final=i == len(words), **kw)
        render(out, clock, event)
    return event


# --- the same pixels, for less ------------------------------------------------------------


@pytest.mark.parametrize("geometry", [(1920, 1080, 16), (800, 480, 32)])
def test_a_growing_caption_is_drawn_a_word_at_a_time_into_the_same_frame(tmp_path, geometry):
    dev = fake_fb(tmp_path, *geometry)
    out, clock = output(tmp_path, dev, show="original", lines=3)
    shown: dict[int, CaptionLine] = {}
    for seq in range(1, 5):  # four lines: the last ones scroll the first away
        words = WORDS[seq - 1 : seq + 5]
        grown_before = out.strips_grown
        for i in range(1, len(words) + 1):
            shown[seq] = line(seq, " ".join(words[:i]), final=i == len(words))
            render(out, clock, shown[seq])
            assert dev.read_bytes() == plain_frame(out, list(shown.values())), (seq, i)
        # every word after the first is drawn on its own (the last one in the final colour)
        assert out.strips_grown - grown_before == len(words) - 1
    drawn = out.strips_drawn
    render(out, clock, line(5, "Unless", final=False))
    render(out, clock, line(5, "Unless"))  # final: the same words, in another colour
    assert out.strips_drawn == drawn + 1  # drawn once: the colour change did not draw it
    shown[5] = line(5, "Unless")
    assert dev.read_bytes() == plain_frame(out, list(shown.values()))


@needs_deva
def test_devanagari_and_mixed_scripts_grow_into_the_same_frame(tmp_path):
    dev = fake_fb(tmp_path, 1280, 720, 32)
    out, clock = output(tmp_path, dev, show="original", lines=4, font_size=48)
    lines = [
        "क्षत्रिय, श्री, द्वार, हृदय — संयुक्ताक्षर सही बनते हैं।",
        "आज की बैठक में Soniox से 2 घंटे",
        "Say नमस्ते to all, फिर office में",
    ]
    shown: dict[int, CaptionLine] = {}
    for seq, text in enumerate(lines, 1):
        words = text.split(" ")
        for i in range(1, len(words) + 1):
            shown[seq] = line(seq, " ".join(words[:i]), final=i == len(words), lang="hi")
            render(out, clock, shown[seq])
            assert dev.read_bytes() == plain_frame(out, list(shown.values())), (seq, i)
    assert out.strips_grown >= sum(len(t.split(" ")) - 2 for t in lines)


def test_appended_draws_only_what_it_can_draw_exactly(monkeypatch):
    chain = FontChain(FONTS, 40)
    added = chain.appended("Unless the", "Unless the system is")
    assert added is not None and [p.text for p in added] == [" system is"]
    assert added[0].x == chain.line("Unless the").pieces[-1].width  # right after them
    for old, new in (
        ("Unless the sys", "Unless the system"),  # a word that grew: shaped anew
        ("Unless the system", "Unless a system here"),  # not what is on screen
        ("Unless the", "Unless the"),  # nothing added
        ("مرحبا", "مرحبا بكم"),  # right to left
        ("Say", "Say مرحبا"),  # a right-to-left word after it
    ):
        assert chain.appended(old, new) is None, (old, new)
    # a Pillow that combined the glyphs of one call differently (before 10.2): never
    monkeypatch.setattr(fontmod, "GLYPHS_OVER", False)
    assert chain.appended("Unless the", "Unless the system is") is None


def test_appended_refuses_a_join_whose_advances_do_not_add_up(monkeypatch):
    """Kerning or shaping across the space would move what follows; no installed font
    kerns against a space, so the length of the added words is made to differ."""
    chain = FontChain(FONTS, 40)
    assert chain.appended("Unless the", "Unless the system") is not None
    real = chain._length
    monkeypatch.setattr(
        chain, "_length", lambda i, text, d: real(i, text, d) + (0.5 if text == " system" else 0)
    )
    assert chain.appended("Unless the", "Unless the system") is None


def test_dimming_changes_the_colour_without_drawing_the_text_again(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 16)
    out, clock = output(tmp_path, dev, show="original", dim_after=60, blank_after=0)
    events = [line(1, "a first line"), line(2, "and a second one"), line(3, "typing", False)]
    render(out, clock, *events)
    drawn = out.strips_drawn
    clock.t = out._last_caption + 61
    out.idle(0)
    assert out.phase(clock.t) == "dim"
    assert out.strips_drawn == drawn  # the coverage of each line, in the dimmed colours
    assert dev.read_bytes() == plain_frame(out, events, "dim")


# --- only what changed is written ---------------------------------------------------------


def test_a_provisional_update_writes_its_slot_rows_once(tmp_path, monkeypatch):
    dev = fake_fb(tmp_path, 1920, 1080, 16)
    out, clock = output(tmp_path, dev, show="original")
    writes = Writes(monkeypatch, 3840)
    render(out, clock, line(1, "a steady line"), line(2, "Unless the", final=False))
    writes.clear()
    render(out, clock, line(2, "Unless the system", final=False))
    slot = out.band_top + out.slot_y(out.rows - 1)  # the newest line, at the bottom
    assert len(writes.calls) == 1  # one pwrite
    (first, rows) = writes.calls[0]
    assert slot <= first and first + rows <= slot + out.line_height  # of that slot's rows
    assert rows < out.line_height  # those the text covers, not the whole slot
    writes.clear()
    render(out, clock, line(2, "Unless the system", final=False))  # nothing changed
    assert writes.calls == []
    assert dev.read_bytes() == plain_frame(
        out, [line(1, "a steady line"), line(2, "Unless the system", False)]
    )


def test_the_status_line_is_written_in_its_own_slot(tmp_path, monkeypatch):
    from edgecap.runtime.status import StatusBoard

    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev)
    render(out, clock, line(1, "hello"))
    board = StatusBoard()
    board.set("audio", "device_missing", "no capture device matches 'USB'")
    writes = Writes(monkeypatch, 3200)
    render(out, clock, board.snapshot())
    status = out.band_top + out.status_y
    assert len(writes.calls) == 1
    first, rows = writes.calls[0]
    assert status <= first and first + rows <= status + out.line_height


def test_a_scroll_rewrites_every_slot_once_and_right(tmp_path, monkeypatch):
    dev = fake_fb(tmp_path, 1920, 1080, 16)
    out, clock = output(tmp_path, dev)  # the original and a translation per line
    events = [
        line(i, f"line {i} " + " ".join(WORDS[i : i + 4]), es=f"línea {i}") for i in range(1, 5)
    ]
    render(out, clock, *events[:3])
    writes = Writes(monkeypatch, 3840)
    render(out, clock, events[3])  # every row moves up by a line
    assert dev.read_bytes() == plain_frame(out, events)
    tops = [out.band_top + out.slot_y(i) for i in range(out.rows)]
    covered = {
        t
        for t in tops
        for first, n in writes.calls
        if first < t + out.line_height and t < first + n
    }
    assert covered == set(tops)  # each slot written …
    assert writes.rows <= out.rows * out.line_height  # … once
    assert out.strips_drawn == 8  # and only the new line drawn: the others moved as they were


def test_the_qr_code_stays_while_the_captions_beside_it_change(tmp_path, monkeypatch):
    dev = fake_fb(tmp_path, 1280, 720, 32)
    out, clock = output(tmp_path, dev, join_url="http://192.168.1.20:8080/?code=4711")
    assert out._qr is not None
    top, left = out._qr_at
    h, w = out._qr.height, out._qr.row_bytes
    qr = np.frombuffer(out._qr.data, np.uint8).reshape(h, w)

    def qr_area() -> np.ndarray:
        frame = np.frombuffer(dev.read_bytes(), np.uint8).reshape(720, -1)
        return frame[out.band_top + top : out.band_top + top + h, left : left + w]

    render(out, clock, line(1, "Good evening"))
    assert (qr_area() == qr).all()
    writes = Writes(monkeypatch, 5120)
    render(out, clock, line(1, "Good evening and welcome"))
    assert len(writes.calls) == 1 and (qr_area() == qr).all()


# --- a whole frame when needed ------------------------------------------------------------


def test_the_minute_rewrite_after_growth_and_scrolls_is_the_exact_frame(tmp_path):
    dev = fake_fb(tmp_path / "a", 800, 480, 16)
    out, clock = output(tmp_path / "a", dev, dim_after=0, blank_after=0)
    events = [
        grow(out, clock, 1, WORDS[:5]),
        grow(out, clock, 2, WORDS[3:9], es="sí"),
        grow(out, clock, 3, WORDS[6:10]),
    ]
    with open(dev, "r+b") as f:  # something else draws over the screen
        f.seek(1600 * 100)
        f.write(b"\x5a" * 1600 * 300)
    clock.t += 61
    out.idle(0)  # the minute's rewrite
    fresh_dev = fake_fb(tmp_path / "b", 800, 480, 16)
    fresh, fclock = output(tmp_path / "b", fresh_dev, dim_after=0, blank_after=0)
    render(fresh, fclock, *events)
    assert dev.read_bytes() == fresh_dev.read_bytes() == plain_frame(out, events)


def test_a_write_lost_mid_frame_is_healed_by_the_next_frame_or_a_reopen(tmp_path, monkeypatch):
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev, show="original", lines=4)
    writes = Writes(monkeypatch, 3200)
    events = [line(i, f"caption {i} " + " ".join(WORDS[:i])) for i in range(1, 6)]
    render(out, clock, *events[:4])
    writes.fail_in = 2  # the scroll's second slot: the screen is half old, half new
    clock.t += 1
    with pytest.raises(OutputUnavailable, match="went away"):
        out.handle(events[4])  # drawn at once
    assert dev.read_bytes() != plain_frame(out, events)
    # the device answers again: the next frame is written whole (nothing else changed)
    writes.clear()
    events.append(line(6, "and one more"))
    render(out, clock, events[-1])
    assert writes.rows == 480 and dev.read_bytes() == plain_frame(out, events)
    # unplugged: the device is gone, and comes back full of something else
    out.close()
    dev.unlink()
    with pytest.raises(OutputUnavailable, match="no framebuffer"):
        out.open()
    dev.write_bytes(b"\xff" * 3200 * 480)
    out.open()  # as the worker does: the screen is cleared and every line drawn again
    clock.t += 1
    out.idle(0)
    assert dev.read_bytes() == plain_frame(out, events)
    out.close()


def test_opening_writes_the_background_a_slot_at_a_time(tmp_path, monkeypatch):
    """No frame-sized buffer: the screen is cleared in pieces of a slot's height."""
    dev = fake_fb(tmp_path, 1920, 1080, 16)
    writes = Writes(monkeypatch, 3840)
    out = HdmiOutput(dev, tmp_path / "sys", fonts=FONTS, clock=Clock())
    out.open()
    assert writes.rows == 1080 and max(n for _, n in writes.calls) == out.line_height
    assert dev.read_bytes() == bytes(3840 * 1080)
    out.close()
