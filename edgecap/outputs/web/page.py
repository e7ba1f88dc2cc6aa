"""The pages the web output serves, and the headers every response carries.

The caption page is one self-contained file shipped in the package (``page.html``: its CSS
and JavaScript inline, no CDN, nothing fetched but its own event stream), so it works in a
room with no internet. Its inline script and style are allowed by their SHA-256 hashes in
the Content-Security-Policy, computed here from the very bytes served: nothing else can
run on the page, not even something injected through a caption or the title (which are
inserted as text anyway).

Two small pages go with it: the access-code form and the "page full" notice. Every
response, page or not, forbids framing, MIME sniffing, referrers and caching.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from importlib import resources

REASONS = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

# Every response: no framing (clickjacking), no sniffing, no referrer, no caches, no
# cross-origin reads or windows, no powerful features.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"),
)
# What is not a page may not run or load anything at all.
NO_CONTENT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True)
class Page:
    body: bytes
    csp: str


def _page(text: str) -> Page:
    """A page with a policy that allows exactly its own inline script and style."""
    body = text.encode("utf-8")
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for match in _INLINE.finditer(body):
        digest = base64.b64encode(hashlib.sha256(match.group(2)).digest()).decode()
        hashes[match.group(1)].append(f"'sha256-{digest}'")
    script = " ".join(hashes[b"script"]) or "'none'"
    style = " ".join(hashes[b"style"]) or "'none'"
    csp = (
        f"default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; "
        "img-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return Page(body, csp)


def caption_page(title: str) -> Page:
    template = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    return _page(template.replace("{{title}}", html.escape(title)))


_SMALL_STYLE = """
:root { color-scheme: light dark; }
body { font: 1.2rem/1.5 system-ui, sans-serif; margin: 0; padding: 2rem 1.2rem;
  background: Canvas; color: CanvasText; }
main { max-width: 28rem; margin: 0 auto; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; }
input, button { font: inherit; padding: .5rem .7rem; border-radius: .4rem; }
input { width: 100%; margin: .5rem 0 1rem; letter-spacing: .15em; }
.error { color: #c62828; font-weight: 600; }
"""


def _small_page(title: str, heading: str, content: str, *, refresh: int | None = None) -> Page:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return _page(
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{html.escape(title)}</title><style>{_SMALL_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(heading)}</h1>{content}</main></body></html>\n"
    )


def code_page(title: str, *, wrong: bool) -> Page:
    """The form that asks for the room's access code (sent back to ``/?code=`` by GET:
    nothing on this server takes a POST)."""
    note = '<p class="error" role="alert">That code is not right. Try again.</p>' if wrong else ""
    return _small_page(
        title,
        title,
        f'{note}<form method="get" action="/">'
        '<label for="code">Access code for the captions of this room '
        "(it is shown in the room)</label>"
        '<input id="code" name="code" autocomplete="one-time-code" autocapitalize="none" '
        'spellcheck="false" required autofocus>'
        '<button type="submit">Show captions</button></form>',
    )


def full_page(title: str, limit: int) -> Page:
    return _small_page(
        title,
        "The caption page is full",
        f"<p>{limit} people are following the captions, the most this box serves at once. "
        "This page tries again by itself every 30 seconds.</p>",
        refresh=30,
    )


def throttled_page(title: str) -> Page:
    return _small_page(
        title,
        "Too many wrong codes",
        "<p>Wait a minute, then try the code again.</p>",
    )


def response(
    status: int,
    headers: Sequence[tuple[str, str]],
    body: bytes = b"",
    *,
    head_only: bool = False,
    length: bool = True,
) -> bytes:
    """One HTTP/1.1 response, to be followed by closing the connection. Header values are
    ours (never a request's bytes), so no header can be injected. ``length`` False: a
    stream, delimited by the end of the connection."""
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
        f"Date: {formatdate(usegmt=True)}",
        "Server: edgecap",
        "Connection: close",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS),
        *(f"{name}: {value}" for name, value in headers),
    ]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def html_response(
    status: int, page: Page, *, head_only: bool, extra: Sequence[tuple[str, str]] = ()
) -> bytes:
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Security-Policy", page.csp),
        *extra,
    ]
    return response(status, headers, page.body, head_only=head_only)


def text_response(
    status: int, text: str, *, head_only: bool = False, extra: Sequence[tuple[str, str]] = ()
) -> bytes:
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Security-Policy", NO_CONTENT_CSP),
        *extra,
    ]
    return response(status, headers, (text + "\n").encode("utf-8"), head_only=head_only)
