"""Where viewers find the caption page: the listen address, this box's LAN address, the URL
they open (with the access code in it, when there is one) and that URL as a QR code.

``edgecap web-url`` prints the URL (``--qr``: as a QR code in the terminal, too); the HDMI
screen shows the same QR code (``qr_image``), so people in the room join by pointing a
phone's camera at the screen. The QR code is made with segno (pure Python, no dependencies).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from typing import TYPE_CHECKING, TextIO
from urllib.parse import quote

from edgecap.config.schema import WebConfig, parse_listen
from edgecap.config.secrets import SecretNotFound, resolve

if TYPE_CHECKING:
    from PIL import Image

_SIOCGIFADDR = 0x8915  # Linux: the IPv4 address of an interface
_ANY = ("0.0.0.0", "::")


def lan_addresses() -> list[str]:
    """This box's IPv4 addresses a phone in the room could reach: every interface that is
    up and has one, loopback and link-local left out, private (LAN) addresses first."""
    found: list[tuple[bool, str]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # down, or no IPv4 address
            addr = ipaddress.IPv4Address(reply[20:24])
            if addr.is_loopback or addr.is_link_local or addr.is_unspecified:
                continue
            found.append((not addr.is_private, str(addr)))
    return [addr for _, addr in sorted(found, key=lambda item: item[0])]


def base_url(cfg: WebConfig) -> str:
    """The page's address without the code: ``[web] url``, else made from ``listen`` (an
    address listening on every interface is replaced by this box's LAN address, or by its
    mDNS name when it has none)."""
    if cfg.url:
        return cfg.url
    host, port = parse_listen(cfg.listen)
    if host in _ANY:
        addresses = lan_addresses()
        host = addresses[0] if addresses else f"{socket.gethostname()}.local"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}/" if port == 80 else f"http://{host}:{port}/"


def access_code(cfg: WebConfig) -> str | None:
    """The access code, read from where the config says; None without one. Raises
    SecretNotFound when a source is configured and none has it."""
    if not cfg.access_code.sources:
        return None
    return resolve(cfg.access_code).reveal()


def page_url(cfg: WebConfig, code: str | None) -> str:
    """The address viewers open: with the code in it, they skip the code form."""
    url = base_url(cfg)
    if not code:
        return url
    return f"{url}{'&' if '?' in url else '?'}code={quote(code, safe='')}"


def join_url(cfg: WebConfig) -> str | None:
    """What the HDMI screen's QR code says: None when the page is off; the address without
    the code when the code cannot be read (the web output says why in its status)."""
    if not cfg.enabled:
        return None
    code = None
    with contextlib.suppress(SecretNotFound):
        code = access_code(cfg)
    return page_url(cfg, code)


# --- the QR code ------------------------------------------------------------------------
def qr_matrix(text: str, border: int = 4) -> list[list[bool]]:
    """The QR code of ``text`` as rows of modules (True = dark), with a quiet zone of
    ``border`` modules (4 is what scanners expect)."""
    import segno

    code = segno.make(text, error="m", micro=False)
    return [[bool(bit) for bit in row] for row in code.matrix_iter(scale=1, border=border)]


def qr_image(
    text: str,
    size: int,
    dark: tuple[int, int, int] = (0, 0, 0),
    light: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """The QR code of ``text`` as an RGB image at most ``size`` pixels square: whole pixels
    per module (a blurred module is what makes a code unreadable), quiet zone included."""
    from PIL import Image

    rows = qr_matrix(text)
    modules = len(rows)
    scale = max(1, size // modules)
    img = Image.new("RGB", (modules, modules), light)
    pixels = img.load()
    assert pixels is not None
    for y, row in enumerate(rows):
        for x, bit in enumerate(row):
            if bit:
                pixels[x, y] = dark
    return img.resize((modules * scale, modules * scale), Image.Resampling.NEAREST)


def print_web_url(cfg: WebConfig, out: TextIO, err: TextIO, *, qr: bool = False) -> int:
    """``edgecap web-url``: the page's address (with the code), and with ``qr`` the QR code
    in the terminal. Exit status 0, or 69 (EX_UNAVAILABLE) when the page is not enabled,
    78 (EX_CONFIG) when the access code cannot be read."""
    try:
        code = access_code(cfg)
    except SecretNotFound as exc:
        err.write(f"edgecap: [web] access_code: no code found: {exc}\n")
        return 78
    url = page_url(cfg, code)
    out.write(url + "\n")
    if qr:
        import segno

        segno.make(url, error="m", micro=False).terminal(out=out, compact=True)
    if not cfg.enabled:
        err.write("edgecap: note: the caption page is off ([web] enabled = no)\n")
        return 69
    return 0
