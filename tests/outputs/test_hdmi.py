"""The HDMI output rendering into a real framebuffer-format file (with a sysfs tree of its
geometry), read back into pixels: placement, colours, only changed rows written, the frame
rate cap, status line, dimming and blanking, translations stacked under their line (and the
choice of languages), scripts (Devanagari shaping, Arabic right to left, CJK), device loss.
Four renders are kept as reference PNGs in docs/images (the README shows one) and compared
at every run; EDGECAP_UPDATE_IMAGES=1 writes them again."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.schema import HdmiConfig
from edgecap.outputs import fonts as fontmod
from edgecap.outputs import framebuffer as fbmod
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.fonts import FontChain, find_font
from edgecap.outputs.framebuffer import read_geometry, screenshot
from edgecap.outputs.hdmi import HdmiOutput, auto_font_size
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard
from tests.conftest import REPO
from tests.outputs.test_framebuffer import fake_fb

__all__ = ["fake_fb"]  # also used by the daemon tests

IMAGES = REPO / "docs" / "images"
LATIN, DEVA = "DejaVuSans.ttf", "Lohit-Devanagari.ttf"  # what `make deps` installs
CJK, ARABIC = "NotoSansCJK-Regular.ttc", "NotoSansArabic-Regular.ttf"
FONTS = (LATIN, DEVA)  # the reference images depend on these fonts only
WHITE, GREY, AMBER = (255, 255, 255), (160, 160, 160), (255, 214, 102)
BLUE = (125, 200, 255)  # the second translation under a line
BLACK = (0, 0, 0)

needs_deva = pytest.mark.skipif(
    find_font(DEVA) is None, reason="fonts-lohit-deva missing: no Devanagari font to shape with"
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def line(seq, text, final=True, translation="", lang="en", **translations):
    """A caption line; ``translation`` is its one translation (tagged "es"), or
    ``translations`` several (language=text, in target order)."""
    return CaptionLine(
        seq=seq,
        text=text,
        speaker=None,
        language=lang,
        start=None,
        end=None,
        final=final,
        translation_final=final,
        translations=({"es": translation} if translation else {}) | translations,
    )


def screen(dev: Path, tmp_path: Path) -> np.ndarray:
    return screenshot(read_geometry(dev, tmp_path / "sys"))


def near(pixels: np.ndarray, rgb, tol: int = 12) -> np.ndarray:
    return np.abs(pixels.astype(int) - rgb).max(axis=-1) <= tol


def text_rows(pixels: np.ndarray, rgb, min_px: int = 20) -> np.ndarray:
    """Rows where that colour is text (enough pixels of it, not an antialiased edge)."""
    return np.flatnonzero(near(pixels, rgb).sum(axis=1) >= min_px)


def slot_colours(out: HdmiOutput, band: np.ndarray) -> list:
    """The dominant text colour of each caption slot that has text, top to bottom."""
    found = []
    for i in range(out.rows):
        slot = band[out.slot_y(i) : out.slot_y(i) + out.line_height]
        counts = {c: near(slot, c).sum() for c in (WHITE, AMBER, GREY, BLUE)}
        if max(counts.values()) > 30:
            found.append(max(counts, key=counts.__getitem__))
    return found


def output(tmp_path, dev, **kw) -> tuple[HdmiOutput, Clock]:
    clock = Clock()
    kw.setdefault("fonts", FONTS)
    out = HdmiOutput(dev, tmp_path / "sys", clock=clock, **kw)
    out.open()
    return out, clock


def render(out: HdmiOutput, clock: Clock, *events) -> None:
    for e in events:
        out.handle(e)
    clock.t += 1.0
    out.idle(0)


def check_reference(img: np.ndarray, name: str, tmp_path: Path) -> None:
    """The render must match docs/images/<name>: same size, and at most 0.5 % of the text
    pixels different (room for another FreeType's antialiasing, none for layout drift)."""
    if find_font(LATIN) is None or find_font(DEVA) is None:
        pytest.skip(
            f"{name}: reference rendered with {LATIN} and {DEVA}, not installed here "
            "(the other checks of this test passed)"
        )
    path = IMAGES / name
    if os.environ.get("EDGECAP_UPDATE_IMAGES") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, optimize=True)
        return
    assert path.exists(), f"{path} missing: run with EDGECAP_UPDATE_IMAGES=1"
    ref = np.asarray(Image.open(path).convert("RGB"))
    assert ref.shape == img.shape, f"{name}: {img.shape} rendered, {ref.shape} in the reference"
    ink = (ref.max(axis=-1) > 40) | (img.max(axis=-1) > 40)
    differ = np.abs(ref.astype(int) - img.astype(int)).max(axis=-1) > 48
    assert ink.sum() > 1000
    share = differ.sum() / ink.sum()
    if share > 0.005:
        Image.fromarray(img).save(tmp_path / name)
    assert share <= 0.005, f"{name}: {share:.1%} of text pixels differ; see {tmp_path / name}"


# --- placement and colours ----------------------------------------------------------------


def test_rollup_1080p_rgb565_bottom_band_colours_and_reference(tmp_path):
    dev = fake_fb(tmp_path, 1920, 1080, 16)
    out, clock = output(tmp_path, dev)
    assert out.size == auto_font_size(1920, 1080, 7) == 67
    render(
        out,
        clock,
        line(1, "Unless the system is established for the frequent formal review"),
        line(2, "of activities there, ponder in this regard", translation="revisión formal"),
        line(3, "and all my fellow Americans", final=False),
    )
    px = screen(dev, tmp_path)
    assert (px[: out.band_top] == 0).all(), "garbage not cleared, or text above the band"
    band = px[out.band_top :]
    assert (px[-out.margin :] == 0).all(), "text in the bottom margin"
    # the translation under its line, the provisional line the newest, at the bottom
    assert slot_colours(out, band)[-3:] == [WHITE, AMBER, GREY]
    cols = np.flatnonzero(band.max(axis=(0, 2)) > 0)
    assert cols.min() >= out.margin - 2 and cols.max() <= 1920 - out.margin  # not clipped
    check_reference(px, "hdmi-rollup-1080p.png", tmp_path)


def test_two_way_800x480_bgrx_status_line_and_reference(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev)
    board = StatusBoard()
    board.set("audio", "speech")
    board.set("link", "retrying", "network down")
    render(
        out,
        clock,
        board.snapshot(),
        line(1, "Good morning, everyone.", translation="सभी को सुप्रभात।"),
        line(2, "आज हम नई योजना पर बात करेंगे।", translation="Today we will talk about the new plan."),
        line(3, "Any questions", translation="कोई सवाल", final=False),
    )
    px = screen(dev, tmp_path)
    band = px[out.band_top :]
    assert out.status_text(clock.t) == "Hearing speech · Speech service unreachable (network down)"
    status = band[: out.line_height]
    assert near(status, GREY).sum() > 50 and not near(status, WHITE).any()
    # line by line: source (white), translation (amber), …, provisional (grey) at the bottom
    assert slot_colours(out, band) == [WHITE, AMBER, WHITE, AMBER, GREY, AMBER]
    check_reference(px, "hdmi-two-way-800x480.png", tmp_path)


def test_two_translations_stack_under_their_line_in_order_and_reference(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev, translations=("de", "hi"))
    assert out.rows_per_line == 3 and out.rows == 9  # three lines of three rows fit
    render(
        out,
        clock,
        line(1, "Good morning, everyone.", es="Buenos días a todos.",
             de="Guten Morgen zusammen.", hi="सभी को सुप्रभात।"),
        line(2, "Today we talk about the new plan.", es="Hoy hablamos del nuevo plan.",
             de="Heute sprechen wir über den Plan.", hi="आज हम नई योजना पर बात करेंगे।"),
        line(3, "Any questions", final=False, de="Irgendwelche Fragen", hi="कोई सवाल"),
    )  # fmt: skip
    band = screen(dev, tmp_path)[out.band_top :]
    # each line: the original, then German (amber), then Hindi (blue), each on its own row
    assert slot_colours(out, band) == [WHITE, AMBER, BLUE] * 2 + [GREY, AMBER, BLUE]
    check_reference(screen(dev, tmp_path), "hdmi-two-translations-800x480.png", tmp_path)


def test_without_a_list_the_lines_first_two_translations_show(tmp_path):
    def draw(sub: str, **translations) -> np.ndarray:
        (tmp_path / sub).mkdir()
        dev = fake_fb(tmp_path / sub, 800, 480, 32)
        out, clock = output(tmp_path / sub, dev)
        render(out, clock, line(1, "thank you", **translations))
        return screen(dev, tmp_path / sub)[out.band_top :], out

    three, out = draw("three", es="gracias", de="danke", fr="merci")
    assert out.rows_per_line == 2  # the band is sized for one; two take a line more
    assert slot_colours(out, three) == [WHITE, AMBER, BLUE]
    two, _ = draw("two", es="gracias", de="danke")
    assert (three == two).all()  # the third ("merci") is not drawn


def test_a_language_not_chosen_never_appears(tmp_path):
    def draw(sub: str, chosen: tuple[str, ...], show: str = "both", **translations):
        (tmp_path / sub).mkdir()
        dev = fake_fb(tmp_path / sub, 800, 480, 32)
        out, clock = output(tmp_path / sub, dev, translations=chosen, show=show)
        render(out, clock, line(1, "see you", **translations), line(2, "soon", es="pronto"))
        return screen(dev, tmp_path / sub)[out.band_top :], out

    chosen, out = draw("chosen", ("fr",), es="hasta luego", de="bis bald", fr="à bientôt")
    alone, _ = draw("alone", ("fr",), fr="à bientôt")
    assert (chosen == alone).all()  # exactly as if the line had no other translation
    assert slot_colours(out, chosen) == [WHITE, AMBER, WHITE]  # line 2 has no French
    # show = translation: the chosen translations only, in the order chosen
    both, out = draw("translation", ("de", "es"), "translation", es="hasta luego", de="bis bald")
    assert slot_colours(out, both)[-3:] == [AMBER, BLUE, AMBER]  # de, es; then line 2's es
    assert not near(both, WHITE).any()


def test_from_config_takes_the_offline_mark_languages_and_colours(tmp_path):
    def draw(sub: str, make, event) -> tuple[np.ndarray, HdmiOutput]:
        (tmp_path / sub).mkdir()
        dev = fake_fb(tmp_path / sub, 800, 480, 32)
        clock = Clock()
        out = make(dev, tmp_path / sub / "sys", clock)
        out.open()
        render(out, clock, event)
        return screen(dev, tmp_path / sub), out

    red = (255, 0, 0)
    cfg = replace(HdmiConfig(), fonts=FONTS, translations=("hi",), translation_color=(red,))
    configured, out = draw(
        "config",
        lambda dev, sys, clock: HdmiOutput.from_config(
            replace(cfg, device=dev, sysfs=sys), offline_mark="≈ ", clock=clock
        ),
        replace(line(1, "spoken offline", es="hablado", hi="ऑफ़लाइन"), offline=True),
    )
    assert out.languages == ("hi",) and out.rows_per_line == 2
    by_hand, _ = draw(
        "by-hand",
        lambda dev, sys, clock: HdmiOutput(
            dev, sys, fonts=FONTS, translation_color=red, clock=clock
        ),
        line(1, "≈ spoken offline", hi="ऑफ़लाइन"),
    )
    assert near(configured, red).sum() > 50
    assert (configured == by_hand).all()  # the mark, only Hindi, in the colour configured
    problems = replace(HdmiConfig(), translation_color=()).problems()
    assert problems == [("translation_color", "needs at least one colour")]


def test_show_one_of_text_and_translation(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 32)
    for show, present, absent in (("original", WHITE, AMBER), ("translation", AMBER, WHITE)):
        out, clock = output(tmp_path, dev, show=show)
        render(out, clock, line(1, "hello there", translation="hola"))
        px = screen(dev, tmp_path)
        assert near(px, present).sum() > 50 and not near(px, absent).any(), show
        assert out.rows == 3  # no room kept for what is not shown
        out.close()


def test_translation_only_keeps_lines_whose_translation_is_still_coming(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev, show="translation", lines=1)
    render(out, clock, line(1, "hello", translation="hola"), line(2, "and then", final=False))
    band = screen(dev, tmp_path)[out.band_top :]
    assert slot_colours(out, band) == [AMBER]  # line 2 has nothing to show yet


def test_fullscreen_fills_from_the_top_then_rolls(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev, layout_mode="fullscreen", font_size=40, show="original")
    assert out.band_top == 0 and out.rows == (480 - 2 * out.margin) // out.line_height - 1
    render(out, clock, line(1, "first line"))
    rows = text_rows(screen(dev, tmp_path), WHITE, 5)
    assert rows.min() < 480 // 4  # a page: the first line at the top
    render(out, clock, *[line(i, f"caption line number {i}") for i in range(2, 21)])
    rows = text_rows(screen(dev, tmp_path), WHITE, 5)
    assert rows.min() < 480 // 4 and rows.max() > 480 * 3 // 4


def test_many_lines_shrink_the_font_to_fit(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 16)
    out, clock = output(tmp_path, dev, lines=12)
    assert out.size < auto_font_size(800, 480)
    assert out.band_top >= 0 and out.rows == 24
    render(out, clock, *[line(i, f"line {i}", translation=f"línea {i}") for i in range(1, 13)])
    band = screen(dev, tmp_path)[out.band_top :]
    assert len(text_rows(band, AMBER, 3)) and near(band, WHITE).any()


# --- no flicker: only changed rows, at most max_fps ---------------------------------------


def test_only_changed_rows_are_written(tmp_path, monkeypatch):
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev, max_fps=10)
    writes: list[tuple[int, int]] = []  # (offset, bytes) of every pwrite on the device
    real = os.pwrite
    monkeypatch.setattr(
        fbmod.os,
        "pwrite",
        lambda fd, data, off: writes.append((off, len(data))) or real(fd, data, off),
    )
    render(out, clock, line(1, "a steady line"), line(2, "typing", final=False))
    assert writes and all(off >= out.band_top * 3200 for off, _ in writes)
    writes.clear()
    render(out, clock, line(2, "typing more", final=False))
    slot = out.band_top + out.slot_y(out.rows - 1)  # the provisional line is the last slot
    assert writes, "the change was not written"
    for off, size in writes:
        assert off % 3200 == 0 and size % 3200 == 0  # whole rows
        assert slot <= off // 3200 and (off + size) // 3200 <= slot + out.line_height
    assert sum(size for _, size in writes) < out.line_height * 3200  # not even the whole slot
    writes.clear()
    render(out, clock, line(2, "typing more", final=False))  # nothing changed
    clock.t += 1
    out.idle(0)
    assert writes == []
    px = screen(dev, tmp_path)
    assert len(text_rows(px, GREY, 10)) and len(text_rows(px, WHITE, 10))


def test_max_fps_caps_renders_and_the_last_update_wins(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 16)
    out, clock = output(tmp_path, dev, max_fps=10)
    base = out.renders
    words = [f"word{i}" for i in range(12)]
    for i in range(100):  # 100 provisional updates over one second
        out.handle(line(1, " ".join(words[: i % len(words) + 1]) + f" {i}", final=False))
        clock.t += 0.01
    assert out.renders - base <= 11  # 10 per second, plus the first one at once
    clock.t += 0.2
    out.idle(0)
    # the screen shows the last update, exactly as a fresh output draws it
    final = screen(dev, tmp_path)
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    fresh_dev = fake_fb(fresh_dir, 800, 480, 16)
    fresh, fclock = output(fresh_dir, fresh_dev, max_fps=10)
    render(fresh, fclock, line(1, " ".join(words[: 99 % len(words) + 1]) + " 99", final=False))
    assert (screen(fresh_dev, fresh_dir) == final).all()
    assert out.wake_in(0) > 1.0  # drawn: nothing is due soon
    out.handle(line(1, "one more", final=False))  # drawn at once: no frame for 0.2 s
    drawn = out.renders
    out.handle(line(1, "one more word", final=False))  # right after a frame: held back
    assert out.renders == drawn and out.wake_in(0) == pytest.approx(0.1)  # in one frame
    clock.t += out.wake_in(0)
    out.idle(0)
    assert out.renders == drawn + 1 and out.wake_in(0) > 1.0


def test_the_screen_is_rewritten_whole_every_minute(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 16)
    out, clock = output(tmp_path, dev, dim_after=0, blank_after=0)
    render(out, clock, line(1, "steady"))
    good = dev.read_bytes()
    with open(dev, "r+b") as f:  # a kernel message on the console scribbles over it
        f.seek(1600 * 10)
        f.write(b"\xaa" * 1600 * 400)
    clock.t += 30
    out.idle(0)
    assert dev.read_bytes() != good  # nothing changed as far as the output knows
    clock.t += 31
    out.idle(0)
    assert dev.read_bytes() == good


def test_a_screen_where_nothing_changes_is_rewritten_less_and_less_often(tmp_path):
    """Every minute while captions come; while nothing is drawn, 2, 4, 8, 16 minutes apart
    (each rewrite costs a full frame); every minute again once a caption comes. wake_in
    names each rewrite: the worker sleeps until then."""
    dev = fake_fb(tmp_path, 320, 240, 16)
    out, clock = output(tmp_path, dev, dim_after=0, blank_after=0)
    rewrites: list[float] = []
    real = out._refresh
    out._refresh = lambda: rewrites.append(clock.t) or real()  # type: ignore[method-assign]
    render(out, clock, line(1, "steady"))
    start = clock.t
    while clock.t < start + 3000:
        clock.t += out.wake_in(0)  # straight to the next deadline, as the worker sleeps
        out.idle(0)
    gaps = [round(b - a) for a, b in zip([start - 1, *rewrites], rewrites, strict=False)]
    assert gaps[:7] == [60, 60, 120, 240, 480, 960, 960]  # (a caption before the first)
    render(out, clock, line(2, "talking again"))
    assert out.wake_in(0) <= 60.0


# --- status, notices, dim and blank -------------------------------------------------------


def test_status_line_notice_dim_blank_and_wake(tmp_path, monkeypatch):
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev, dim_after=60, blank_after=120)
    power: list[bool] = []
    monkeypatch.setattr(out.fb, "set_power", lambda on: power.append(on) or False)
    board = StatusBoard()
    board.set("audio", "device_missing", "no capture device matches 'USB'")
    render(out, clock, board.snapshot())
    assert out.status_text(clock.t) == "No microphone: no capture device matches 'USB'"
    assert near(screen(dev, tmp_path), GREY).sum() > 50
    board.set("audio", "listening")
    render(out, clock, board.snapshot())
    assert out.status_text(clock.t) == "Listening…"  # no captions yet
    render(out, clock, line(1, "hello"))
    assert out.status_text(clock.t) == ""  # captions flowing: nothing to say
    clock.t += 10
    assert out.status_text(clock.t) == "Listening…"  # quiet for a while
    render(out, clock, AudioLoss(12.0, 1.0, 13.0, "network down"))
    assert out.status_text(clock.t) == "⚠ 12.0 s of speech lost (network down)"
    clock.t += 11
    assert out.status_text(clock.t) == "Listening…"  # the notice is gone after 10 s
    out.idle(0)
    before = out.renders
    render(out, clock, board.snapshot())  # the same status again: no redraw
    assert out.renders == before
    clock.t = out._last_caption + 61
    out.idle(0)
    px = screen(dev, tmp_path)
    assert not near(px, WHITE, 40).any() and px.max() > 40  # dimmed, still there
    clock.t += 60
    out.idle(0)
    assert screen(dev, tmp_path).max() == 0  # blanked
    assert power == [False]  # and powered down (FBIOBLANK) where the driver can
    render(out, clock, line(2, "awake"))
    assert near(screen(dev, tmp_path), WHITE).sum() > 50
    assert power == [False, True]


# --- scripts ------------------------------------------------------------------------------


@needs_deva
def test_devanagari_is_shaped(tmp_path, monkeypatch):
    chain = FontChain(FONTS, 48)
    assert chain.runs("caption: नमस्ते") == [(0, "caption: "), (1, "नमस्ते")]

    def draw(tmp: Path) -> np.ndarray:
        dev = fake_fb(tmp, 800, 480, 16)
        out, clock = output(tmp, dev, show="original")
        render(out, clock, line(1, "क्षत्रिय कैसे हैं", lang="hi"))
        return screen(dev, tmp)[out.band_top :]

    (tmp_path / "raqm").mkdir()
    (tmp_path / "basic").mkdir()
    shaped = draw(tmp_path / "raqm")
    monkeypatch.setattr(fontmod, "RAQM", fontmod.ImageFont.Layout.BASIC)
    unshaped = draw(tmp_path / "basic")
    assert near(shaped, WHITE).sum() > 200 and near(unshaped, WHITE).sum() > 200
    differ = np.abs(shaped.astype(int) - unshaped).max(axis=-1) > 100
    assert differ.sum() > 200, "the same glyphs with and without raqm: no shaping happened"
    # the conjunct क्ष is one glyph, narrower than क + ् + ष side by side
    cols = [np.flatnonzero(img.max(axis=(0, 2)) > 100) for img in (shaped, unshaped)]
    assert cols[0].max() < cols[1].max()


@needs_deva
def test_devanagari_reference(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 16)
    out, clock = output(tmp_path, dev, show="original", lines=4)
    render(
        out,
        clock,
        line(1, "नमस्ते, आप कैसे हैं?", lang="hi"),
        line(2, "क्षत्रिय, श्री, द्वार, हृदय — संयुक्ताक्षर सही बनते हैं।", lang="hi"),
        line(3, "आज की बैठक में Soniox से 2 घंटे", lang="hi"),
        line(4, "हम शुरू करते", lang="hi", final=False),
    )
    check_reference(screen(dev, tmp_path), "hdmi-devanagari.png", tmp_path)


def arabic_chain(size: int) -> FontChain:
    chain = FontChain((LATIN, ARABIC), size)
    if not all(any(chain.covers(i, ch) for i in range(len(chain.fonts))) for ch in "مرحباشك"):
        pytest.skip(f"no Arabic font: neither {LATIN} nor {ARABIC} (fonts-noto-core) installed")
    return chain


def test_arabic_reads_right_to_left(tmp_path):
    chain = arabic_chain(40)
    fonts = tuple(str(p) for p in chain.paths)

    def ink_columns(text: str, sub: str) -> tuple[np.ndarray, HdmiOutput]:
        d = tmp_path / sub
        d.mkdir()
        dev = fake_fb(d, 800, 480, 32)
        out, clock = output(d, dev, show="original", fonts=fonts, font_size=40)
        render(out, clock, line(1, text, lang="ar"))
        return screen(dev, d)[out.band_top :], out

    # the first (logical) word is drawn at the right edge, where it is drawn when alone
    full, out = ink_columns("مرحبا بكم في الاجتماع", "full")
    alone, _ = ink_columns("مرحبا", "alone")
    cols = np.flatnonzero(full.max(axis=-1).max(axis=0) > 100)
    assert cols.max() >= 800 - out.margin - 8  # right aligned
    word = np.flatnonzero(alone.max(axis=-1).max(axis=0) > 100)
    right = slice(word.min() + 4, 800)  # (its first pixels may join the next word)
    same = np.abs(full[:, right].astype(int) - alone[:, right]).max(axis=-1) <= 16
    assert same.mean() > 0.99, "the first word is not at the right"
    assert cols.min() < word.min() - 100  # the rest of the line is to its left

    # mixed directions: pieces in screen order, each drawn whole in its own direction
    rtl = chain.line("أهلا Soniox اليوم")
    assert rtl.rtl and [(p.text.strip(), p.direction) for p in rtl.pieces] == [
        ("اليوم", "rtl"),
        ("Soniox", "ltr"),
        ("أهلا", "rtl"),
    ]
    ltr = chain.line("Say مرحبا بكم to all 2 times")
    assert not ltr.rtl and [p.text.strip() for p in ltr.pieces] == [
        "Say",
        "مرحبا بكم",
        "to all 2 times",
    ]
    assert [p.text for p in chain.line("عدد 123 كتب").pieces][1].strip() == "123"


def test_cjk_falls_back_to_a_cjk_font():
    if find_font(CJK) is None:
        pytest.skip(f"{CJK} missing (fonts-noto-cjk): CJK falls back to boxes")
    chain = FontChain((LATIN, CJK), 48)
    assert chain.runs("字幕 captions") == [(1, "字幕 "), (0, "captions")]
    img = Image.new("L", (300, 80))
    chain.draw(ImageDraw.Draw(img), 0, 60, "字幕", 255)
    tofu = Image.new("L", (300, 80))
    FontChain((LATIN,), 48).draw(ImageDraw.Draw(tofu), 0, 60, "字幕", 255)
    assert (np.asarray(img) != np.asarray(tofu)).sum() > 300  # glyphs, not missing boxes


def test_missing_fonts_still_render(tmp_path, caplog):
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev, fonts=("NoSuchFont.ttf", "/nowhere/x.otf"))
    assert out.fonts.missing == ["NoSuchFont.ttf", "/nowhere/x.otf"]
    render(out, clock, line(1, "still legible"))
    assert near(screen(dev, tmp_path), WHITE).sum() > 50
    assert "none of the fonts" in caplog.text


def test_find_font_by_name_in_font_dirs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "My-Font.ttf").write_bytes(b"x")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")  # a loop is walked once
    assert find_font("my-font.TTF", [tmp_path]) == tmp_path / "a" / "b" / "My-Font.ttf"
    assert find_font("other.ttf", [tmp_path]) is None
    assert find_font(str(tmp_path / "a" / "b" / "My-Font.ttf")) is not None


@needs_deva
def test_coverage_is_read_from_the_cmap():
    cov_latin = fontmod.read_coverage(find_font(LATIN))
    cov_deva = fontmod.read_coverage(find_font(DEVA))
    assert cov_latin is not None and cov_deva is not None
    assert ord("A") in cov_latin and ord("क") not in cov_latin
    assert ord("क") in cov_deva and ord("्") in cov_deva
    assert fontmod.read_coverage(Path(__file__)) is None  # not a font


# --- device: missing, lost, reopened ------------------------------------------------------


def test_missing_framebuffer_and_unknown_geometry(tmp_path):
    with pytest.raises(OutputUnavailable, match="unknown geometry"):
        HdmiOutput(tmp_path / "fb0", tmp_path / "nosys").open()
    dev = fake_fb(tmp_path, 800, 480, 32)
    dev.unlink()
    with pytest.raises(OutputUnavailable, match=f"no framebuffer at {dev}"):
        HdmiOutput(dev, tmp_path / "sys").open()


def test_a_lost_device_is_reopened_by_the_worker(tmp_path, monkeypatch):
    dev = fake_fb(tmp_path, 800, 480, 16)
    cfg = replace(HdmiConfig(), device=dev, sysfs=tmp_path / "sys", fonts=FONTS)
    out = HdmiOutput.from_config(cfg)
    board = StatusBoard()
    worker = OutputWorker(out, board, retry_first=0.05, retry_max=0.1)
    failing = threading.Event()
    real = os.pwrite

    def pwrite(fd, data, off):
        if failing.is_set():
            failing.clear()
            raise OSError(5, "Input/output error")
        return real(fd, data, off)

    monkeypatch.setattr(fbmod.os, "pwrite", pwrite)
    worker.start()
    try:
        worker.publish(line(1, "before"))
        deadline = time.monotonic() + 5
        while out.renders < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        failing.set()
        worker.publish(line(2, "after the loss"))
        while (worker.failures < 1 or out.fb is None) and time.monotonic() < deadline:
            time.sleep(0.01)
        while board.snapshot().state_of("output:hdmi") != "ok" and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
    finally:
        worker.request_stop()
        assert worker.join(5)
    assert worker.failures == 1
    assert board.snapshot().parts["output:hdmi"].state == "ok"
    band = screen(dev, tmp_path)[out.band_top :]
    for slot in (out.rows - 2, out.rows - 1):  # both lines drawn again after reopening
        y = out.slot_y(slot)
        assert near(band[y : y + out.line_height], WHITE).sum() > 50
