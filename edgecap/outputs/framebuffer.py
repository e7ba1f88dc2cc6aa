"""The Linux framebuffer: geometry from sysfs (or config), pixel packing, row writes.

fbdev exposes the screen as a file of ``height`` rows of ``stride`` bytes. edgecap supports
the two formats a Raspberry Pi's HDMI framebuffer uses: 16 bits per pixel (RGB565, little
endian) and 32 (XRGB8888 little endian, i.e. bytes B, G, R, X). Packing is done in numpy
(Pillow has no RGB565 packer). Writes are ``pwrite`` of whole rows, and only of the rows
that changed.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecap.outputs.base import OutputUnavailable


@dataclass(frozen=True)
class FramebufferInfo:
    device: Path
    width: int
    height: int
    bpp: int
    stride: int
    name: str = ""

    @property
    def row_bytes(self) -> int:
        return self.width * self.bpp // 8


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_geometry(
    device: Path, sysfs: Path, *, width: int = 0, height: int = 0, bpp: int = 0, stride: int = 0
) -> FramebufferInfo:
    """Geometry of ``device`` (e.g. /dev/fb0): values given here win over sysfs
    (``<sysfs>/fb0/virtual_size``, ``bits_per_pixel``, ``stride``)."""
    node = sysfs / device.name
    if not (width and height):
        size = _read(node / "virtual_size")
        if size and "," in size:
            w, h = (int(x) for x in size.split(",")[:2])
            width, height = width or w, height or h
    if not bpp:
        bpp = int(_read(node / "bits_per_pixel") or 0)
    if not (width and height and bpp):
        raise OutputUnavailable(
            f"unknown geometry of {device}: set [hdmi] width, height and bpp, or check {node}"
        )
    if bpp not in (16, 32):
        raise OutputUnavailable(f"{device} has {bpp} bits per pixel; 16 and 32 are supported")
    if not stride:
        stride = int(_read(node / "stride") or 0) or width * bpp // 8
    return FramebufferInfo(device, width, height, bpp, stride, _read(node / "name") or "")


def list_framebuffers(sysfs: Path = Path("/sys/class/graphics")) -> list[FramebufferInfo]:
    """Every fbN under sysfs with a readable geometry (for `edgecap devices`)."""
    found = []
    for node in sorted(sysfs.glob("fb[0-9]*")):
        try:
            found.append(read_geometry(Path("/dev") / node.name, sysfs))
        except (OutputUnavailable, ValueError):
            continue
    return found


def pack(rgb: np.ndarray, bpp: int) -> np.ndarray:
    """An (h, w, 3) uint8 array → (h, w * bpp/8) bytes in the framebuffer's format."""
    if bpp == 16:
        r = rgb[..., 0].astype(np.uint16)
        g = rgb[..., 1].astype(np.uint16)
        b = rgb[..., 2].astype(np.uint16)
        px = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
        return px.astype("<u2").view(np.uint8).reshape(rgb.shape[0], -1)
    out = np.empty((rgb.shape[0], rgb.shape[1], 4), dtype=np.uint8)
    out[..., 0] = rgb[..., 2]
    out[..., 1] = rgb[..., 1]
    out[..., 2] = rgb[..., 0]
    out[..., 3] = 0
    return out.reshape(rgb.shape[0], -1)


def unpack(data: bytes, info: FramebufferInfo) -> np.ndarray:
    """Framebuffer bytes → (h, w, 3) uint8 RGB (tests and screenshots)."""
    rows = np.frombuffer(data, dtype=np.uint8)[: info.stride * info.height]
    rows = rows.reshape(info.height, info.stride)[:, : info.row_bytes]
    if info.bpp == 16:
        px = rows.copy().view("<u2").reshape(info.height, info.width).astype(np.uint32)
        r = ((px >> 11) & 0x1F) * 255 // 31
        g = ((px >> 5) & 0x3F) * 255 // 63
        b = (px & 0x1F) * 255 // 31
        return np.stack([r, g, b], axis=-1).astype(np.uint8)
    px = rows.reshape(info.height, info.width, 4)
    return px[..., [2, 1, 0]].copy()


class Framebuffer:
    def __init__(self, info: FramebufferInfo) -> None:
        self.info = info
        self._fd: int | None = None
        self.bytes_written = 0
        self.writes = 0

    def open(self) -> None:
        try:
            self._fd = os.open(self.info.device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise OutputUnavailable(
                f"no framebuffer at {self.info.device}: {exc.strerror}"
            ) from None

    def write_rows(self, y: int, packed: np.ndarray) -> None:
        """Write packed rows starting at screen row ``y``."""
        if self._fd is None:
            raise OutputUnavailable("framebuffer not open")
        info = self.info
        try:
            if info.stride == info.row_bytes:
                data = packed.tobytes()
                self._pwrite(data, y * info.stride)
            else:
                for i, row in enumerate(packed):
                    self._pwrite(row.tobytes(), (y + i) * info.stride)
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.EIO, errno.ENXIO, errno.EBADF):
                raise OutputUnavailable(f"{info.device} went away: {exc.strerror}") from None
            raise OutputUnavailable(f"cannot write {info.device}: {exc.strerror}") from None

    def _pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)  # type: ignore[arg-type]
            view = view[n:]
            offset += n
            self.bytes_written += n
        self.writes += 1

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
