"""The framebuffer layer on real files: geometry from a sysfs-style tree or config, RGB565 and
32 bpp packing checked byte by byte, stride padding, writes of rows only, and device errors
turned into OutputUnavailable."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecap.outputs import framebuffer as fbmod
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.framebuffer import (
    Framebuffer,
    FramebufferInfo,
    Packed,
    coverage_tables,
    list_framebuffers,
    pack_color,
    pack_coverage,
    pack_image,
    read_geometry,
    screenshot,
    sysfs_node,
    unpack,
)


def reference_pack(rgb: np.ndarray, bpp: int) -> np.ndarray:
    """The framebuffer's formats computed the plain way, in numpy, from their definitions:
    an (h, w, 3) RGB array → (h, w × bpp/8) bytes, RGB565 little endian or B, G, R, X."""
    if bpp == 16:
        r, g, b = (rgb[..., i].astype(np.uint16) for i in range(3))
        px = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
        return px.astype("<u2").view(np.uint8).reshape(rgb.shape[0], -1)
    out = np.empty((rgb.shape[0], rgb.shape[1], 4), dtype=np.uint8)
    out[..., 0], out[..., 1], out[..., 2], out[..., 3] = rgb[..., 2], rgb[..., 1], rgb[..., 0], 255
    return out.reshape(rgb.shape[0], -1)


def packed(rgb: np.ndarray, bpp: int) -> Packed:
    rows = reference_pack(rgb, bpp)
    return Packed(rows.tobytes(), rows.shape[0], rows.shape[1])


def fake_sysfs(
    root: Path, node: str, width: int, height: int, bpp: int, stride: int = 0, **extra: str
) -> Path:
    """<root>/<node>/{virtual_size,bits_per_pixel,stride,name} as the kernel has them."""
    d = root / node
    d.mkdir(parents=True)
    (d / "virtual_size").write_text(f"{width},{height}\n")
    (d / "bits_per_pixel").write_text(f"{bpp}\n")
    (d / "stride").write_text(f"{stride or width * bpp // 8}\n")
    (d / "name").write_text("test fb\n")
    for key, value in extra.items():
        (d / key).write_text(value)
    return d


def fake_fb(tmp_path: Path, width: int, height: int, bpp: int, stride: int = 0) -> Path:
    """A framebuffer as a regular file of the exact size (full of 0xff: garbage the output
    must clear), with its geometry under tmp_path/sys/fb0. Returns the device path."""
    fake_sysfs(tmp_path / "sys", "fb0", width, height, bpp, stride)
    dev = tmp_path / "fb0"
    dev.write_bytes(b"\xff" * (stride or width * bpp // 8) * height)
    return dev


def test_geometry_from_sysfs_and_config_wins(tmp_path):
    fake_sysfs(tmp_path, "fb1", 1920, 1080, 16, stride=3840)
    info = read_geometry(Path("/dev/fb1"), tmp_path)
    assert (info.width, info.height, info.bpp, info.stride, info.name) == (
        1920,
        1080,
        16,
        3840,
        "test fb",
    )
    assert (info.row_bytes, info.size) == (3840, 3840 * 1080)
    cfg = read_geometry(Path("/dev/fb1"), tmp_path, width=800, height=480, bpp=32)
    assert (cfg.width, cfg.height, cfg.bpp) == (800, 480, 32)
    assert cfg.stride == 3840  # the stride still comes from sysfs
    none = read_geometry(Path("/dev/fb7"), tmp_path, width=640, height=480, bpp=16)
    assert none.stride == 1280  # no sysfs at all: width × bpp


def test_sysfs_node_follows_a_link_and_the_visible_mode_narrows_the_virtual_size(tmp_path):
    (tmp_path / "fb2").write_bytes(b"")
    (tmp_path / "hdmi").symlink_to(tmp_path / "fb2")
    assert sysfs_node(tmp_path / "hdmi", tmp_path / "sys") == tmp_path / "sys" / "fb2"
    # a driver that allocates twice the height for panning: captions go on the visible part
    fake_sysfs(tmp_path / "sys", "fb0", 1280, 1440, 32, modes="U:1280x720p-0\n")
    info = read_geometry(Path("/dev/fb0"), tmp_path / "sys")
    assert (info.width, info.height) == (1280, 720)


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({}, "unknown geometry"),
        ({"virtual_size": "800,480", "bits_per_pixel": "24"}, "24 bits per pixel"),
        ({"virtual_size": "garbage", "bits_per_pixel": "16"}, "unknown geometry"),
        ({"virtual_size": "800,480", "bits_per_pixel": "16", "stride": "100"}, "stride 100"),
    ],
)
def test_unusable_geometry_is_unavailable(tmp_path, files, match):
    node = tmp_path / "fb0"
    node.mkdir()
    for name, text in files.items():
        (node / name).write_text(text)
    with pytest.raises(OutputUnavailable, match=match):
        read_geometry(Path("/dev/fb0"), tmp_path)


def test_list_framebuffers(tmp_path):
    fake_sysfs(tmp_path, "fb0", 1920, 1080, 16)
    fake_sysfs(tmp_path, "fb10", 800, 480, 32)
    fake_sysfs(tmp_path, "fb1", 320, 240, 24)  # unsupported: left out
    (tmp_path / "fbcon").mkdir()  # not a framebuffer
    found = list_framebuffers(tmp_path)
    assert [(str(i.device), i.width, i.height, i.bpp) for i in found] == [
        ("/dev/fb0", 1920, 1080, 16),
        ("/dev/fb10", 800, 480, 32),
    ]
    assert list_framebuffers(tmp_path / "missing") == []


def test_pack_rgb565_little_endian_and_bgrx():
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    img = Image.fromarray(px, "RGB")
    assert pack_image(img, 16).data == bytes.fromhex("00f8e0071f00ffff")
    assert pack_image(img, 32).data == bytes.fromhex("0000ffff00ff00ffff0000ffffffffff")
    assert pack_color((255, 0, 0), 16) == bytes.fromhex("00f8")
    assert pack_color((0, 0, 255), 32) == bytes.fromhex("ff0000ff")
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for bpp, tol in ((32, 0), (16, 8)):
        info = FramebufferInfo(Path("x"), 7, 5, bpp, 7 * bpp // 8)
        rows = pack_image(Image.fromarray(rgb, "RGB"), bpp)
        assert (rows.height, rows.row_bytes) == (5, 7 * bpp // 8)
        # Pillow's band tables give every bit as the definition does
        assert rows.data == reference_pack(rgb, bpp).tobytes()
        back = unpack(bytes(rows.data), info)
        assert np.abs(back.astype(int) - rgb).max() <= tol
    with pytest.raises(ValueError, match="bits per pixel"):
        pack_image(img, 24)


def test_every_channel_value_packs_as_defined():
    """Every green and blue value against every other (256 × 256 pixels), red spread over
    all its values: each channel's bits land where RGB565 and BGRX put them."""
    g, b = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    r = (g * 7 + b * 13) % 256
    rgb = np.stack([r, g, b], axis=-1).astype(np.uint8)
    for bpp in (16, 32):
        rows = pack_image(Image.fromarray(rgb, "RGB"), bpp)
        assert rows.data == reference_pack(rgb, bpp).tobytes()


def test_coverage_packs_as_pillow_blends_text_then_packs():
    """A coverage mask through the colour's tables: the same bytes as blending the colour
    over the background in RGB (Pillow's rounding) and packing that."""
    fill, bg = (255, 191, 0), (10, 20, 30)
    cover = np.arange(256, dtype=np.uint8).reshape(16, 16)
    a = cover.astype(np.uint32)[..., None]
    t = np.array(bg, np.uint32) * (255 - a) + np.array(fill, np.uint32) * a + 128
    blended = (((t >> 8) + t) >> 8).astype(np.uint8)
    # Pillow drawing the colour through an "L" mask is the blend the tables follow
    drawn = Image.new("RGB", (16, 16), bg)
    drawn.paste(Image.new("RGB", (16, 16), fill), (0, 0), Image.fromarray(cover, "L"))
    assert (np.asarray(drawn) == blended).all()
    for bpp in (16, 32):
        rows = pack_coverage(Image.fromarray(cover, "L"), coverage_tables(fill, bg, bpp), bpp)
        assert rows.data == reference_pack(blended, bpp).tobytes()


def test_packed_rows_split_and_joined_by_columns():
    rows = Packed(bytes(range(12)), 3, 4)  # rows 0..3, 4..7, 8..11
    left, right = rows.columns(0, 1), rows.columns(1, 4)
    assert left == Packed(bytes([0, 4, 8]), 3, 1)
    assert left.beside(right) == rows
    with pytest.raises(ValueError):
        left.beside(Packed(b"ab", 2, 1))


def test_rows_written_at_their_offset_with_stride_padding(tmp_path, monkeypatch):
    # 10 px × 4 bytes = 40 bytes of pixels in a 48-byte stride
    fake_sysfs(tmp_path / "sys", "fb0", 10, 6, 32, stride=48)
    dev = tmp_path / "fb0"
    dev.write_bytes(b"\x11" * 48 * 6)
    info = read_geometry(dev, tmp_path / "sys")
    calls: list[tuple[int, int]] = []
    real = os.pwrite
    monkeypatch.setattr(
        fbmod.os,
        "pwrite",
        lambda fd, data, off: calls.append((off, len(data))) or real(fd, data, off),
    )
    fb = Framebuffer(info)
    fb.open()
    rows = packed(np.full((2, 10, 3), 200, dtype=np.uint8), 32)
    fb.write_rows(3, rows)
    fb.close()
    assert calls == [(3 * 48, 2 * 48)]  # one call for both rows, padding included
    data = dev.read_bytes()
    assert data[: 3 * 48] == b"\x11" * 3 * 48 and data[5 * 48 :] == b"\x11" * 48
    assert (screenshot(info)[3:5] == 200).all()
    with pytest.raises(ValueError):
        Framebuffer(info).write_rows(5, rows)  # would run off the screen


def test_missing_device_and_write_errors_are_unavailable(tmp_path, monkeypatch):
    info = FramebufferInfo(tmp_path / "fb0", 4, 2, 16, 8)
    with pytest.raises(OutputUnavailable, match=f"no framebuffer at {tmp_path / 'fb0'}"):
        Framebuffer(info).open()
    # a real device that refuses writes: /dev/full (ENOSPC)
    full = Framebuffer(FramebufferInfo(Path("/dev/full"), 4, 2, 16, 8))
    full.open()
    row = Packed(bytes(8), 1, 8)
    with pytest.raises(OutputUnavailable, match="cannot write /dev/full"):
        full.write_rows(0, row)
    full.close()
    (tmp_path / "fb0").write_bytes(bytes(16))
    fb = Framebuffer(info)
    fb.open()
    for code in (errno.ENODEV, errno.EIO):

        def gone(fd, data, off, code=code):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(fbmod.os, "pwrite", gone)
        with pytest.raises(OutputUnavailable, match="went away"):
            fb.write_rows(0, row)
    monkeypatch.setattr(fbmod.os, "pwrite", lambda fd, data, off: 0)
    with pytest.raises(OutputUnavailable, match="took no more bytes"):
        fb.write_rows(0, row)
    assert fb.set_power(False) is False  # a regular file cannot be blanked: ignored
    fb.close()
    fb.close()  # twice is fine
