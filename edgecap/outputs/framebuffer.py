"""The Linux framebuffer: geometry from sysfs (or config), pixel packing, row writes.

fbdev exposes the screen as a file of ``height`` rows of ``stride`` bytes. edgecap supports
the two formats a Raspberry Pi's HDMI framebuffer uses: 16 bits per pixel (RGB565, little
endian) and 32 (XRGB8888 little endian, i.e. bytes B, G, R, X). Pillow has no RGB565
packer, and numpy alone would cost the daemon some 12 MB of memory, so packing is done with
Pillow's per-band tables (``Image.point``) and band merges: each byte of a packed pixel is
one band, and a 16-bit pixel's two bytes are the bands of an "LA" image, whose raw bytes are
exactly the little-endian pixels (:func:`pack_image`, :func:`pack_coverage`; numpy stays
for :func:`unpack`, which tests and screenshots use). Writes are ``os.pwrite`` of whole
rows, one call per run of adjacent rows, and only of the rows the caller says changed: the
screen is never rewritten whole for a partial update, which is what makes a framebuffer
flicker.

Nothing here needs a real device: tests point ``device`` at a regular file of the exact size
and ``sysfs`` at a directory tree of the same files the kernel has.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageChops

from edgecap.outputs.base import OutputUnavailable

if TYPE_CHECKING:
    import numpy as np

SYSFS = Path("/sys/class/graphics")
FBIOBLANK = 0x4611  # <linux/fb.h>
FB_BLANK_UNBLANK = 0
FB_BLANK_POWERDOWN = 4
_GONE = (errno.ENODEV, errno.ENXIO, errno.EIO, errno.EBADF, errno.ENOENT)


@dataclass(frozen=True)
class FramebufferInfo:
    device: Path
    width: int
    height: int
    bpp: int  # 16 (RGB565) or 32 (XRGB8888)
    stride: int  # bytes from one row to the next (>= width * bpp / 8)
    name: str = ""  # the driver's name from sysfs ("vc4drmfb", "simple" …), if known

    @property
    def row_bytes(self) -> int:
        """Bytes of pixels in a row (the stride may add padding after them)."""
        return self.width * self.bpp // 8

    @property
    def size(self) -> int:
        """Bytes of the whole visible frame."""
        return self.stride * self.height


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def sysfs_node(device: Path, sysfs: Path = SYSFS) -> Path:
    """The sysfs directory of ``device``: /dev/fb1 → <sysfs>/fb1. A link such as
    /dev/fb-hdmi → /dev/fb1 is followed to find the fbN name."""
    device = Path(device)
    name = device.name
    if not re.fullmatch(r"fb\d+", name):
        with contextlib.suppress(OSError):
            name = device.resolve().name
    return Path(sysfs) / name


def _visible_size(node: Path) -> tuple[int, int]:
    """Width and height: ``virtual_size`` ("1920,1080"), narrowed to the current mode
    ("U:1920x1080p-0" in ``mode``/``modes``) when a driver allocates a taller virtual
    screen for panning, so that captions never land below the visible area."""
    size = _read(node / "virtual_size") or ""
    m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", size)
    if not m:
        return 0, 0
    width, height = int(m.group(1)), int(m.group(2))
    for key in ("mode", "modes"):
        first = (_read(node / key) or "").partition("\n")[0]
        mode = re.match(r"\w*:(\d+)x(\d+)", first)
        if mode and 0 < int(mode.group(1)) <= width and 0 < int(mode.group(2)) <= height:
            return int(mode.group(1)), int(mode.group(2))
    return width, height


def read_geometry(
    device: Path,
    sysfs: Path = SYSFS,
    *,
    width: int = 0,
    height: int = 0,
    bpp: int = 0,
    stride: int = 0,
) -> FramebufferInfo:
    """Geometry of ``device`` (e.g. /dev/fb0). Values given here (from config; 0 = not
    given) win over sysfs: ``<sysfs>/fb0/virtual_size``, ``bits_per_pixel``, ``stride``.
    Raises OutputUnavailable when it cannot be known or is not supported."""
    device = Path(device)
    node = sysfs_node(device, sysfs)
    if not (width and height):
        w, h = _visible_size(node)
        width, height = width or w, height or h
    bpp = bpp or _int(_read(node / "bits_per_pixel"))
    if not (width and height and bpp):
        raise OutputUnavailable(
            f"unknown geometry of {device}: set [hdmi] width, height and bpp, or check {node}"
        )
    if bpp not in (16, 32):
        raise OutputUnavailable(f"{device} has {bpp} bits per pixel; 16 and 32 are supported")
    row_bytes = width * bpp // 8
    stride = stride or _int(_read(node / "stride")) or row_bytes
    if stride < row_bytes:
        raise OutputUnavailable(
            f"{device}: stride {stride} is shorter than a row of {width} pixels at {bpp} bpp"
        )
    return FramebufferInfo(device, width, height, bpp, stride, _read(node / "name") or "")


def list_framebuffers(sysfs_root: Path = SYSFS) -> list[FramebufferInfo]:
    """Every fbN under ``sysfs_root`` whose geometry is readable (for `edgecap devices`);
    ``device`` is /dev/fbN."""
    found = []
    nodes = sorted(Path(sysfs_root).glob("fb[0-9]*"), key=lambda p: _int(p.name[2:]))
    for node in nodes:
        if not re.fullmatch(r"fb\d+", node.name):
            continue
        try:
            found.append(read_geometry(Path("/dev") / node.name, sysfs_root))
        except OutputUnavailable:
            continue
    return found


@dataclass(frozen=True, slots=True)
class Packed:
    """Rows of packed pixels, back to back: ``height`` rows of ``row_bytes`` bytes."""

    data: bytes | memoryview
    height: int
    row_bytes: int

    @classmethod
    def empty(cls) -> Packed:
        return cls(b"", 0, 0)

    def columns(self, a: int, b: int) -> Packed:
        """Bytes ``a``..``b`` of every row."""
        rb, data = self.row_bytes, memoryview(self.data)
        return Packed(
            b"".join(data[y * rb + a : y * rb + b] for y in range(self.height)), self.height, b - a
        )

    def beside(self, right: Packed) -> Packed:
        """These rows with ``right``'s appended, row by row (the same height)."""
        if right.height != self.height:
            raise ValueError(f"{self.height} rows beside {right.height}")
        a, b = self.row_bytes, right.row_bytes
        left_rows, right_rows = memoryview(self.data), memoryview(right.data)
        out = bytearray((a + b) * self.height)
        for y in range(self.height):
            at = y * (a + b)
            out[at : at + a] = left_rows[y * a : (y + 1) * a]
            out[at + a : at + a + b] = right_rows[y * b : (y + 1) * b]
        return Packed(bytes(out), self.height, a + b)


def pixel_bytes(rgb: tuple[int, int, int], bpp: int) -> tuple[int, ...]:
    """One colour as the bytes of one pixel: RGB565 little endian, or B, G, R, X (X = 255,
    in case a driver reads it as alpha)."""
    r, g, b = rgb
    if bpp == 16:
        px = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
        return (px & 0xFF, px >> 8)
    if bpp == 32:
        return (b, g, r, 255)
    raise ValueError(f"unsupported bits per pixel: {bpp}")


def pack_color(rgb: tuple[int, int, int], bpp: int) -> bytes:
    """One colour as the bytes of one pixel (see :func:`pixel_bytes`)."""
    return bytes(pixel_bytes(rgb, bpp))


# A packed pixel's bytes as Pillow bands: RGB565's two (low, high), XRGB8888's four.
_MODES = {16: "LA", 32: "RGBA"}


def _merged(bands: list[Image.Image], bpp: int, width: int, height: int) -> Packed:
    return Packed(Image.merge(_MODES[bpp], bands).tobytes(), height, width * bpp // 8)


def pack_image(img: Image.Image, bpp: int) -> Packed:
    """An image (any mode; converted to RGB) → its rows in the framebuffer's format."""
    if bpp not in _MODES:
        raise ValueError(f"unsupported bits per pixel: {bpp}")
    r, g, b = img.convert("RGB").split()
    if bpp == 16:
        # low byte: GGGBBBBB (g's bits 4..2, b's 7..3); high: RRRRRGGG (r's 7..3, g's 7..5).
        # The two halves of each byte have no bit in common, so adding them is an OR.
        low = ImageChops.add(g.point(lambda v: ((v >> 2) & 7) << 5), b.point(lambda v: v >> 3))
        high = ImageChops.add(r.point(lambda v: v & 0xF8), g.point(lambda v: v >> 5))
        bands = [low, high]
    else:
        bands = [b, g, r, Image.new("L", img.size, 255)]
    return _merged(bands, bpp, img.width, img.height)


def coverage_tables(
    fill: tuple[int, int, int], background: tuple[int, int, int], bpp: int
) -> tuple[list[int], ...]:
    """For each byte of a packed pixel, its value at each coverage 0..255 of ``fill`` over
    ``background``: round((bg × (255 − a) + fill × a) / 255) per channel, as Pillow blends
    text drawn in RGB, then packed."""
    blended = []
    for a in range(256):
        mixed = []
        for f, bg in zip(fill, background, strict=True):
            t = bg * (255 - a) + f * a + 128
            mixed.append(((t >> 8) + t) >> 8)
        blended.append(pixel_bytes((mixed[0], mixed[1], mixed[2]), bpp))
    return tuple([px[i] for px in blended] for i in range(len(blended[0])))


def pack_coverage(cover: Image.Image, tables: tuple[list[int], ...], bpp: int) -> Packed:
    """A coverage mask ("L") → packed rows of the colour the tables blend
    (:func:`coverage_tables`)."""
    return _merged([cover.point(t) for t in tables], bpp, cover.width, cover.height)


def unpack(data: bytes, info: FramebufferInfo) -> np.ndarray:
    """Framebuffer bytes (a whole frame) → (h, w, 3) uint8 RGB, for tests and screenshots.
    RGB565 is widened by bit replication, so white stays 255."""
    import numpy as np

    rows = np.frombuffer(data, dtype=np.uint8)[: info.size]
    rows = rows.reshape(info.height, info.stride)[:, : info.row_bytes]
    if info.bpp == 16:
        px = rows.copy().view("<u2").reshape(info.height, info.width)
        r5, g6, b5 = (px >> 11) & 0x1F, (px >> 5) & 0x3F, px & 0x1F
        r = (r5 << 3) | (r5 >> 2)
        g = (g6 << 2) | (g6 >> 4)
        b = (b5 << 3) | (b5 >> 2)
        return np.stack([r, g, b], axis=-1).astype(np.uint8)
    px = rows.reshape(info.height, info.width, 4)
    return px[..., [2, 1, 0]].copy()


def screenshot(info: FramebufferInfo) -> np.ndarray:
    """What is on the framebuffer now, as (h, w, 3) RGB."""
    try:
        with open(info.device, "rb") as f:
            data = f.read(info.size)
    except OSError as exc:
        raise OutputUnavailable(f"cannot read {info.device}: {exc.strerror}") from None
    if len(data) < info.size:
        raise OutputUnavailable(f"{info.device} is shorter than its {info.size}-byte frame")
    return unpack(data, info)


class Framebuffer:
    """An open framebuffer device written row by row. Every OSError on it becomes
    OutputUnavailable, so the worker closes and reopens it with backoff."""

    def __init__(self, info: FramebufferInfo) -> None:
        self.info = info
        self._fd: int | None = None
        self.writes = 0  # pwrite calls

    def open(self) -> None:
        try:
            self._fd = os.open(self.info.device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise OutputUnavailable(f"no framebuffer at {self.info.device}") from None
            raise OutputUnavailable(
                f"cannot open framebuffer {self.info.device}: {exc.strerror}"
            ) from None

    def write_rows(self, y: int, packed: Packed) -> None:
        """Write ``packed`` (rows of ``row_bytes``) at screen row ``y`` with one pwrite.
        When the stride has padding, the padding bytes are written as zeros along with the
        rows (they are never displayed), which keeps it one call."""
        info = self.info
        if y < 0 or y + packed.height > info.height or packed.row_bytes != info.row_bytes:
            raise ValueError(f"rows {y}..{y + packed.height} do not fit {info.device}")
        data = packed.data
        if info.stride != info.row_bytes:
            pad, rb = bytes(info.stride - info.row_bytes), info.row_bytes
            data = b"".join(bytes(data[i * rb : (i + 1) * rb]) + pad for i in range(packed.height))
        self._pwrite(memoryview(data).cast("B"), y * info.stride)

    def _pwrite(self, data: memoryview, offset: int) -> None:
        if self._fd is None:
            raise OutputUnavailable(f"{self.info.device} is not open")
        try:
            while data:
                n = os.pwrite(self._fd, data, offset)
                if n <= 0:
                    raise OutputUnavailable(f"{self.info.device} took no more bytes")
                data = data[n:]
                offset += n
                self.writes += 1
        except OSError as exc:
            if exc.errno in _GONE:
                raise OutputUnavailable(f"{self.info.device} went away: {exc.strerror}") from None
            raise OutputUnavailable(f"cannot write {self.info.device}: {exc.strerror}") from None

    def set_power(self, on: bool) -> bool:
        """Blank (display off, the monitor may go to standby) or unblank through FBIOBLANK.
        False when the device does not do it (a regular file, some drivers): the caller has
        already painted the screen black, which is blank enough."""
        if self._fd is None:
            return False
        try:
            fcntl.ioctl(self._fd, FBIOBLANK, FB_BLANK_UNBLANK if on else FB_BLANK_POWERDOWN)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
