"""The HDMI output rendering into a real framebuffer-format file (with a sysfs tree of its
geometry), read back into pixels: placement, colours, only changed rows written, the frame
rate cap, dimming, scripts. Three renders are kept as reference PNGs in docs/images (the
README shows one); set EDGECAP_UPDATE_IMAGES=1 to write them again."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.daemon.status import StatusBoard
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.framebuffer import list_framebuffers, read_geometry, unpack
from edgecap.outputs.hdmi import FontChain, HdmiOutput, find_font
from tests.conftest import REPO

IMAGES = REPO / "docs" / "images"
FONTS = ("DejaVuSans.ttf", "Lohit-Devanagari.ttf")
WHITE, GREY, AMBER = (255, 255, 255), (160, 160, 160), (255, 214, 102)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def fake_fb(tmp_path: Path, width: int, height: int, bpp: int, stride: int = 0) -> Path:
    node = tmp_path / "sys" / "fb0"
    node.mkdir(parents=True)
    (node / "virtual_size").write_text(f"{width},{height}\n")
    (node / "bits_per_pixel").write_text(f"{bpp}\n")
    stride = stride or width * bpp // 8
    (node / "stride").write_text(f"{stride}\n")
    (node / "name").write_text("test fb\n")
    dev = tmp_path / "fb0"
    dev.write_bytes(b"\xff" * stride * height)  # garbage the output must clear
    return dev


def screen(dev: Path, tmp_path: Path) -> np.ndarray:
    return unpack(dev.read_bytes(), read_geometry(dev, tmp_path / "sys"))


def line(seq, text, final=True, translation="", speaker=None):
    return CaptionLine(seq, text, translation, speaker, "en", "es", None, None, final, final)


def has_color(pixels: np.ndarray, rgb, tol: int = 12) -> bool:
    return bool((np.abs(pixels.astype(int) - rgb).max(axis=-1) <= tol).any())


def output(tmp_path, dev, **kw) -> tuple[HdmiOutput, Clock]:
    clock = Clock()
    out = HdmiOutput(dev, tmp_path / "sys", fonts=FONTS, clock=clock, **kw)
    out.open()
    return out, clock


def render(out: HdmiOutput, clock: Clock, *events) -> None:
    for e in events:
        out.handle(e)
    clock.t += 1.0
    out.idle(0)


def check_reference(img: np.ndarray, name: str) -> None:
    path = IMAGES / name
    if os.environ.get("EDGECAP_UPDATE_IMAGES") == "1" or not path.exists():
        IMAGES.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, optimize=True)
        return
    ref = np.asarray(Image.open(path).convert("RGB"))
    assert ref.shape == img.shape
    diff = np.abs(ref.astype(int) - img.astype(int)).mean()
    assert diff < 2.0, f"{name} differs from the reference (mean {diff:.2f}); see the PNG"


def test_rollup_1080p_rgb565_bottom_band_colours_and_reference(tmp_path):
    dev = fake_fb(tmp_path, 1920, 1080, 16)
    out, clock = output(tmp_path, dev)
    render(
        out,
        clock,
        line(1, "Unless the system is established for the frequent", translation=""),
        line(2, "formal review of activities there", translation="revisión formal de actividades"),
        line(3, "ponder in this regard", final=False),
    )
    px = screen(dev, tmp_path)
    assert not (px == 255).all(), "the garbage was not cleared"
    top, band = px[: out.band_top], px[out.band_top :]
    assert not has_color(top, WHITE, 40), "captions must stay in the bottom band"
    assert has_color(band, WHITE) and has_color(band, GREY) and has_color(band, AMBER)

    def rows_of(rgb):  # rows where that colour is text, not an antialiased edge
        hits = (np.abs(band.astype(int) - rgb).max(-1) <= 12).sum(axis=1)
        return np.flatnonzero(hits >= 40)

    rows_white, rows_amber, rows_grey = rows_of(WHITE), rows_of(AMBER), rows_of(GREY)
    assert rows_amber.min() > rows_white.min()  # the translation is under its line
    assert rows_grey.min() > rows_amber.max()  # the provisional line is the newest
    check_reference(px, "hdmi-rollup-1080p.png")


def test_only_changed_rows_are_written_and_fps_is_capped(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev, max_fps=10)
    render(out, clock, line(1, "a steady line"), line(2, "typing", final=False))
    written = out.fb.bytes_written
    rows_before = out.rows_written
    render(out, clock, line(2, "typing more", final=False))
    changed = out.rows_written - rows_before
    assert 0 < changed <= out.line_height + 4  # one text row, not the band, not the screen
    assert out.fb.bytes_written - written == changed * 800 * 4
    renders = out.renders
    for i in range(30):  # 30 updates within one frame interval
        out.handle(line(2, "typing " + "x" * i, final=False))
    assert out.renders == renders  # the clock did not move: capped
    clock.t += 0.11
    out.idle(0)
    assert out.renders == renders + 1
    px = screen(dev, tmp_path)
    check_reference(px, "hdmi-800x480.png")


def test_status_line_loss_notice_dim_and_blank(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev, dim_after=60, blank_after=120)
    board = StatusBoard()
    board.set("audio", "device_missing", "no capture device matches 'USB'")
    render(out, clock, board.snapshot())
    assert has_color(screen(dev, tmp_path), GREY)
    assert "No microphone" in out._status
    board.set("audio", "listening")
    render(out, clock, board.snapshot(), line(1, "hello"))
    assert out._status == ""
    render(out, clock, AudioLoss(12.0, 1.0, 13.0, "service unreachable"))
    assert out._notice.startswith("⚠ 12.0 s")
    clock.t += 61
    out.idle(0)
    px = screen(dev, tmp_path)
    assert not has_color(px, WHITE, 20) and px.max() > 40  # dimmed, not gone
    clock.t += 60
    out.idle(0)
    assert screen(dev, tmp_path).max() == 0  # blanked
    render(out, clock, line(2, "awake"))
    assert has_color(screen(dev, tmp_path), WHITE)


@pytest.mark.skipif(find_font("Lohit-Devanagari.ttf") is None, reason="fonts-lohit-deva missing")
def test_devanagari_is_shaped_and_reference(tmp_path):
    chain = FontChain(FONTS, 48)
    assert [i for i, _ in chain.runs("caption: नमस्ते")] == [0, 1]
    dev = fake_fb(tmp_path, 800, 480, 16)
    out, clock = output(tmp_path, dev, show="original")
    render(out, clock, line(1, "नमस्ते, आप कैसे हैं?"), line(2, "क्षत्रिय"))
    px = screen(dev, tmp_path)
    check_reference(px, "hdmi-devanagari.png")
    # shaping: the conjunct क्ष is not the three glyphs side by side
    from PIL import ImageDraw, ImageFont

    font = chain.fonts[1]
    shaped = font.getlength("क्ष")
    basic = ImageFont.truetype(font.path, 48, layout_engine=ImageFont.Layout.BASIC)
    assert shaped != basic.getlength("क्ष")
    assert ImageDraw  # imported for clarity of what is compared


def test_arabic_is_right_aligned(tmp_path):
    if FontChain(FONTS, 40).whole("مرحبا") != 0 or find_font("DejaVuSans.ttf") is None:
        pytest.skip("no font with Arabic")
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev, show="original")
    render(out, clock, line(1, "مرحبا بكم"))
    px = screen(dev, tmp_path)[out.band_top :]
    cols = np.flatnonzero((px.max(axis=-1) > 128).any(axis=0))
    assert cols.min() > 800 // 2 and cols.max() > 800 - out.margin - 10


def test_missing_framebuffer_and_unknown_geometry(tmp_path):
    with pytest.raises(OutputUnavailable, match="unknown geometry"):
        HdmiOutput(tmp_path / "fb0", tmp_path / "nosys").open()
    node = tmp_path / "sys" / "fb0"
    node.mkdir(parents=True)
    (node / "virtual_size").write_text("800,480\n")
    (node / "bits_per_pixel").write_text("32\n")
    with pytest.raises(OutputUnavailable, match="no framebuffer at"):
        HdmiOutput(tmp_path / "fb0", tmp_path / "sys").open()
    (tmp_path / "fb0").write_bytes(b"")
    infos = list_framebuffers(tmp_path / "sys")
    assert [(i.width, i.height, i.bpp, i.stride) for i in infos] == [(800, 480, 32, 3200)]


def test_fullscreen_uses_the_whole_screen(tmp_path):
    dev = fake_fb(tmp_path, 800, 480, 32)
    out, clock = output(tmp_path, dev, layout_mode="fullscreen", font_size=40, show="original")
    assert out.band_top == 0 and out.rows == (480 - out.line_height) // out.line_height
    render(out, clock, *[line(i, f"caption line number {i}") for i in range(1, 21)])
    px = screen(dev, tmp_path)
    text_rows = np.flatnonzero((px.min(axis=-1) > 200).any(axis=1))
    assert text_rows.min() < 480 // 4  # the upper part of the screen is used too
    assert text_rows.max() > 480 * 3 // 4
