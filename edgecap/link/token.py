"""Bearer tokens for services that take one at the handshake instead of the key.

A codec says how a token is got (``Codec.token_request``: a URL, headers with the key, the
token's lifetime); this module fetches it — an HTTP/1.1 POST with an empty body over a
socket from the connection's own :class:`~edgecap.link.connection.Dialer` (the ``[link]``
proxy tunnel, TLS verified with ``[link] ca_file``), so a stop interrupts a fetch that
hangs as it interrupts a connect — and :class:`TokenCache` keeps it until it is due for
renewal.

No thread renews tokens in the background: a token is only shown at the WebSocket upgrade,
and an open connection stays authorised after its token expires, so a token is needed only
when a connection is made. The link asks the cache then, on its own thread, and the cache
fetches a new one when the one it holds has less than ``renew_before`` of its life left.
Fetching during a session instead would stall the link thread — and the audio it sends —
for as long as the token service takes to answer; and a second thread would be one more
owner of a socket and of the key for nothing.

What a failure means is decided here, as vendor-neutral HTTP: 401/403 (the key was
refused) is fatal until a reload; 429 is a rate limit; anything else (network, timeout,
5xx, a malformed answer) is worth retrying with backoff. The key and the token are never
logged, and the repr of everything holding them masks them.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from edgecap.config.secrets import SecretValue
from edgecap.link.connection import Dialer
from edgecap.services.codec import Retry, ServiceError, TokenRequest

MAX_HEAD = 16 * 1024  # the status line and headers of an answer
MAX_BODY = 16 * 1024  # its body (a token is about 1 KiB)
_RECV = 4096
_HEX = b"0123456789abcdefABCDEF"


class TokenFailed(Exception):
    """No token: ``error`` says why and whether to retry."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.describe())
        self.error = error


class HttpError(ValueError):
    """An answer that is not well-formed HTTP/1.1 (or is too long)."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # names lowercased; a repeated header's values joined with ", "
    body: bytes


def fetch_token(request: TokenRequest, dialer: Dialer, timeout: float) -> SecretValue:
    """POST ``request`` and return the token of a 2xx answer; raise TokenFailed otherwise.

    Connecting is bounded by the dialer's timeout per step, the exchange after it by
    ``timeout`` as a whole; ``dialer.interrupt()`` from another thread ends either at once.
    """
    try:
        host, port, target = _https_target(request.url)
        wire = _request_bytes(request, host, port, target)
    except ValueError as exc:
        raise TokenFailed(ServiceError(None, "token_config", str(exc), Retry.FATAL)) from None
    try:
        try:
            sock = dialer.dial(host, port, True)
        except ssl.SSLCertVerificationError as exc:
            why = f"the token service's certificate: {exc.verify_message or 'untrusted'}"
            raise _failed("token_tls_untrusted", why, Retry.SLOW) from None
        except (OSError, ValueError) as exc:
            raise _unreachable(dialer, exc) from None
        try:
            deadline = time.monotonic() + timeout
            sock.settimeout(timeout)
            sock.sendall(wire)
            response = read_response(_recv_until(sock, deadline))
        except HttpError as exc:
            if dialer.interrupted:  # the shut-down socket read as an early end
                raise _unreachable(dialer, exc) from None
            raise _failed("token_bad_answer", f"the token service: {exc}", Retry.BACKOFF) from None
        except OSError as exc:
            raise _unreachable(dialer, exc) from None
        finally:
            sock.close()
    finally:
        dialer.release()
    if dialer.interrupted:  # a body up to the end of the connection may be cut short
        raise _unreachable(dialer, InterruptedError())
    return _token_of(response)


class TokenCache:
    """The link's token: fetched when a connection needs one and the one held is due.

    ``get`` returns the held token while it has more than ``renew_before`` of its
    ``lifetime`` left (counted from when its fetch began, so never later than the
    service counts), and the same request (a reloaded key asks anew). ``drop`` forgets it:
    the service refused it at the upgrade, or the owner reloaded.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._request: TokenRequest | None = None
        self._token: SecretValue | None = None
        self._fetched_at = 0.0
        self.fetches = 0  # tokens fetched (successfully)

    def __repr__(self) -> str:
        held = "a token" if self._token is not None else "no token"
        return f"TokenCache({held}, {self.fetches} fetched)"

    def fresh(self, request: TokenRequest, now: float) -> bool:
        """Is the held token good for a connection made now with ``request``?"""
        return (
            self._token is not None
            and self._request == request
            and now - self._fetched_at < request.lifetime - request.renew_before
        )

    def get(self, request: TokenRequest, now: float, dialer: Dialer) -> SecretValue:
        """The held token if fresh, else a new one (TokenFailed if none can be had;
        the held one is forgotten then)."""
        if self.fresh(request, now) and self._token is not None:
            return self._token
        self.drop()
        token = fetch_token(request, dialer, self._timeout)
        self._request, self._token, self._fetched_at = request, token, now
        self.fetches += 1
        return token

    def drop(self) -> None:
        self._request = self._token = None


# -- the exchange --------------------------------------------------------------------------


def _https_target(url: str) -> tuple[str, int, str]:
    """(host, port, request target) of an https:// URL."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"the token URL must be https://host/…, not {url[:80]!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, parts.port or 443, target


def _request_bytes(request: TokenRequest, host: str, port: int, target: str) -> bytes:
    name = f"[{host}]" if ":" in host else host
    authority = name if port == 443 else f"{name}:{port}"
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {authority}",
        "Content-Length: 0",
        "Connection: close",
    ]
    for header in request.headers:
        name, sep, _ = header.partition(":")
        # A CR/LF would smuggle a header (the key's own check is the codec's; this is the
        # wire's): refuse the request, never saying what was in it.
        if not sep or not name.strip() or not header.isprintable():
            raise ValueError("a token request header is malformed")
        lines.append(header)
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("a token request header is not ASCII") from None


def _recv_until(sock: socket.socket, deadline: float) -> Callable[[int], bytes]:
    """``recv`` of ``sock`` that times out at ``deadline`` overall, not per call."""

    def recv(size: int) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(left)
        return sock.recv(size)

    return recv


def _token_of(response: HttpResponse) -> SecretValue:
    status = response.status
    if 200 <= status < 300:
        try:
            token = response.body.decode("ascii").strip()
        except UnicodeDecodeError:
            token = ""
        # It goes into a header: printable, no spaces (a JWT is base64url and dots).
        if not token or not token.isprintable() or any(c.isspace() for c in token):
            raise _failed("token_bad_answer", "the token service sent no token", Retry.BACKOFF)
        return SecretValue("the token service", token)
    said = f"HTTP {status}" + (f" {_printable(response.reason)}" if response.reason else "")
    if status in (401, 403):
        raise TokenFailed(
            ServiceError(
                status,
                "token_key_refused",
                f"the token service refused the key ({said})",
                Retry.FATAL,
            )
        )
    if status == 429:
        raise TokenFailed(
            ServiceError(status, "token_rate_limited", f"the token service: {said}", Retry.SLOW)
        )
    raise TokenFailed(
        ServiceError(status, "token_http_error", f"the token service: {said}", Retry.BACKOFF)
    )


def _failed(kind: str, message: str, retry: Retry) -> TokenFailed:
    return TokenFailed(ServiceError(None, kind, message, retry))


def _unreachable(dialer: Dialer, exc: BaseException) -> TokenFailed:
    if dialer.interrupted:
        why = "interrupted"
    elif isinstance(exc, TimeoutError):
        why = "timed out"
    else:
        why = _printable(str(exc) or type(exc).__name__)
    return _failed("token_unreachable", f"the token service: {why}", Retry.BACKOFF)


def _printable(text: str, limit: int = 120) -> str:
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# -- HTTP/1.1 answers ----------------------------------------------------------------------


class _Stream:
    """Bytes from ``recv`` with a look-ahead buffer; EOF is ``recv`` returning b""."""

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self._buf = bytearray()
        self._eof = False

    def _more(self) -> bool:
        if self._eof:
            return False
        chunk = self._recv(_RECV)
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def line(self, limit: int) -> bytes:
        """One CRLF-terminated line, without it (a bare LF is taken too)."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                if end > limit:
                    raise HttpError("a line of the answer is too long")
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line.removesuffix(b"\r")
            if len(self._buf) > limit:
                raise HttpError("a line of the answer is too long")
            if not self._more():
                raise HttpError("the answer ended early")

    def exact(self, size: int) -> bytes:
        while len(self._buf) < size:
            if not self._more():
                raise HttpError("the answer ended early")
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def rest(self, limit: int) -> bytes:
        """Everything up to the end of the connection (at most ``limit`` bytes)."""
        while len(self._buf) <= limit and self._more():
            pass
        if len(self._buf) > limit:
            raise HttpError(f"the body is longer than {limit} bytes")
        out = bytes(self._buf)
        self._buf.clear()
        return out


def read_response(recv: Callable[[int], bytes]) -> HttpResponse:
    """Read one HTTP/1.1 answer to a POST: status line, headers, and a body framed by
    ``Transfer-Encoding: chunked``, ``Content-Length``, or the end of the connection (the
    request said ``Connection: close``). Interim 1xx answers are skipped. The head and the
    body are each capped at 16 KiB. Raises HttpError for anything malformed."""
    stream = _Stream(recv)
    while True:
        status, reason, headers = _head(stream)
        if status >= 200:
            break
    if status in (204, 304):
        return HttpResponse(status, reason, headers, b"")
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower().split(",")[-1].strip() != "chunked":
            raise HttpError(f"unsupported Transfer-Encoding {_printable(encoding, 40)!r}")
        body = _chunked(stream)
    elif "content-length" in headers:
        length = _content_length(headers["content-length"])
        if length > MAX_BODY:
            raise HttpError(f"the body is longer than {MAX_BODY} bytes")
        body = stream.exact(length)
    else:
        body = stream.rest(MAX_BODY)
    return HttpResponse(status, reason, headers, body)


def _head(stream: _Stream) -> tuple[int, str, dict[str, str]]:
    used = 0
    line = stream.line(MAX_HEAD)
    used += len(line)
    parts = line.decode("latin-1").split(" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith("HTTP/1.")
        or len(parts[1]) != 3
        or not (parts[1].isascii() and parts[1].isdigit())
    ):
        raise HttpError(f"not an HTTP/1.1 status line: {_printable(parts[0], 40)!r}")
    status = int(parts[1])
    reason = parts[2].strip() if len(parts) > 2 else ""
    headers: dict[str, str] = {}
    while True:
        line = stream.line(MAX_HEAD - used)
        used += len(line) + 2
        if used > MAX_HEAD:
            raise HttpError(f"the head of the answer is longer than {MAX_HEAD} bytes")
        if not line:
            return status, reason, headers
        name, sep, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if not sep or not name or name != name.split()[0]:
            raise HttpError("a malformed header line")
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value


def _content_length(value: str) -> int:
    # Repeated Content-Length headers were joined; they must agree (RFC 9112 6.3).
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1:
        raise HttpError("conflicting Content-Length headers")
    (text,) = values
    if not (text.isascii() and text.isdigit()):
        raise HttpError("a malformed Content-Length")
    return int(text)


def _chunked(stream: _Stream) -> bytes:
    body = bytearray()
    while True:
        size_line = stream.line(256).split(b";", 1)[0].strip()  # extensions ignored
        if not size_line or size_line.strip(_HEX):
            raise HttpError("a malformed chunk size")
        size = int(size_line, 16)
        if size == 0:
            break
        if len(body) + size > MAX_BODY:
            raise HttpError(f"the body is longer than {MAX_BODY} bytes")
        body += stream.exact(size)
        if stream.line(2):
            raise HttpError("a chunk without its CRLF")
    used = 0
    while True:  # trailers, up to the blank line
        line = stream.line(MAX_HEAD)
        used += len(line) + 2
        if used > MAX_HEAD:
            raise HttpError("the trailers are too long")
        if not line:
            return bytes(body)
