"""One WebSocket connection to a speech service: TLS, optional proxy, read and written by
the link's one thread.

The Connection is owned by the LinkWorker, which opens it, sends on it, reads it and closes
it, all on its own thread. There is no reader thread: the link sleeps in one ``select()``
on its wake-up flag and this connection's socket (:meth:`Connection.fileno`), and when the
socket is readable (or TLS already holds decrypted bytes: :attr:`Connection.buffered`) it
calls :meth:`Connection.read`, which returns the frames there now, as they came (text or
bytes), tagged with the connection's number. A reader thread used to do this and hand each
frame over: a thread hop, a queue and a contended I/O lock per service message, which on
the machines we measure on cost more CPU than parsing the message (issue 14). One thread
also means a read and a write never overlap on the TLS connection (one OpenSSL ``SSL``
object must not be read by one thread while another writes to it).

A read takes only what is there: it looks with ``select(…, 0)`` before each frame and reads
with a short socket timeout (``READ_SLICE``), so a frame that arrives in pieces is resumed on
the next turn (websocket-client keeps the partial frame) and never holds the link longer than
that. Pongs that the library sends while reading go out from the same thread.

The connection does not interpret what it reads: the link parses each frame with the codec,
so every codec call happens on that one thread, and a reply the protocol requires goes out
from where the codec's state lives. The end of the connection — a close frame, a reset, a
protocol error — is returned as a ``Closed`` item after the frames before it, so the link
learns of every ending in one place and in order. The connection knows no codec at all.

Opening is interruptible. The connection dials the TCP socket itself (then the proxy's
CONNECT tunnel, then TLS: a ``Dialer``, which the token fetch of ``token.py`` uses too;
websocket-client does the HTTP upgrade on that socket), so it holds
the socket from its first moment: ``interrupt()`` from another thread shuts it down, which
ends a connect that hangs in SYN_SENT, a TLS handshake or an upgrade that gets no answer at
once instead of after ``connect_timeout`` — a stop is not held up by a network black hole.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import websocket

from edgecap.services.codec import Handshake, Outgoing, Retry, ServiceError

log = logging.getLogger(__name__)

READ_SLICE = 0.05  # the longest a read waits for the rest of a frame that came in pieces
READ_LIMIT = 64  # frames one read() takes at most (the link handles them, then reads again)
# What a send from a thread that must not wait (``has_room``) may add to the socket: a second
# of 16 kHz PCM in the largest encoding (base64), with room to spare.
SEND_ROOM = 48 * 1024


@dataclass(frozen=True)
class Message:
    """One data frame of connection ``conn``, as it came (TEXT: str, BINARY: bytes)."""

    conn: int
    data: str | bytes


@dataclass(frozen=True)
class Closed:
    """Connection ``conn`` ended. ``code`` is the close code (None: no close frame)."""

    conn: int
    code: int | None
    reason: str


InboxItem = Message | Closed


class ConnectFailed(Exception):
    """The connection could not be opened; ``error`` says why and whether to retry."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.describe())
        self.error = error


class Refused(Exception):
    """The service answered the HTTP upgrade with ``status`` instead of 101 (what that
    means is the codec's to say)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class SendFailed(Exception):
    """A send did not go through: the connection is gone (its next read returns the
    ending)."""


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's CAs, plus ``ca_file`` if given. Verification is never switched off."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


def proxy_address(proxy: str | None) -> tuple[str, int] | None:
    """(host, port) of an ``http://host:port`` proxy, or None."""
    if not proxy:
        return None
    parts = urlsplit(proxy)
    if not parts.hostname:
        raise ValueError(f"not a proxy URL: {proxy!r}")
    return parts.hostname, parts.port or 80


def _target(url: str) -> tuple[str, int, bool]:
    """(host, port, TLS?) of a ws:// or wss:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a WebSocket URL: {url!r}")
    secure = parts.scheme == "wss"
    return parts.hostname, parts.port or (443 if secure else 80), secure


class Interrupted(OSError):
    """``interrupt()`` ended an open() in progress."""


class Dialer:
    """Opens one socket to a server: TCP to it (or to the proxy), the proxy's CONNECT
    tunnel, then TLS — holding the socket from its first moment, so that
    :meth:`interrupt` from another thread ends whatever step waits (a connect in SYN_SENT,
    a proxy or TLS handshake, and what its owner then does on the socket until
    :meth:`release`). One dialer serves one attempt: once interrupted it stays so.
    The Connection uses one to open, the token fetch (``token.py``) another."""

    def __init__(self, tls: ssl.SSLContext, proxy: str | None, timeout: float) -> None:
        self._tls = tls
        self._proxy = proxy
        self._timeout = timeout
        # while dialing (until release()): a second handle of the socket, for interrupt()
        self._ctl_lock = threading.Lock()
        self._ctl: socket.socket | None = None
        self._interrupted = False

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def interrupt(self) -> None:
        """From another thread: end a dial in progress now (or the next one), and any
        wait on its socket until it is released."""
        with self._ctl_lock:
            self._interrupted = True
            ctl = self._ctl
        if ctl is not None:
            with contextlib.suppress(OSError):
                ctl.shutdown(socket.SHUT_RDWR)  # the socket itself, whatever handle is waiting

    def dial(self, host: str, port: int, secure: bool) -> socket.socket:
        """A connected socket to host:port (TLS if ``secure``, verified with the context),
        every step bounded by ``timeout``. Interruptible until :meth:`release`."""
        proxy = proxy_address(self._proxy)
        peer = proxy or (host, port)
        infos = socket.getaddrinfo(peer[0], peer[1], 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        error: OSError = OSError(f"no address for {peer[0]}")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                self._hold(sock)
                sock.settimeout(self._timeout)
                sock.connect(address)
                break
            except OSError as exc:
                self.release()
                sock.close()
                if self._interrupted:
                    raise Interrupted("interrupted") from None
                error = exc
        else:
            raise error
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if proxy is not None:
                _tunnel(sock, host, port)
            if secure:
                return self._tls.wrap_socket(sock, server_hostname=host)
            return sock
        except BaseException:
            sock.close()
            if self._interrupted:
                raise Interrupted("interrupted") from None
            raise

    def _hold(self, sock: socket.socket) -> None:
        """Keep a second handle of ``sock`` for interrupt() (shutting down a duplicate
        shuts the socket down: the TLS layer's own handle sees it too)."""
        with self._ctl_lock:
            if self._interrupted:
                raise Interrupted("interrupted")
            self._ctl = sock.dup()

    def release(self) -> None:
        """The socket is no longer interruptible (opened, or given up)."""
        with self._ctl_lock:
            ctl, self._ctl = self._ctl, None
        if ctl is not None:
            ctl.close()


class Connection:
    def __init__(
        self,
        number: int,
        handshake: Handshake,
        *,
        tls: ssl.SSLContext,
        proxy: str | None = None,
        connect_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.number = number
        self.clock = clock
        self._handshake = handshake
        self._connect_timeout = connect_timeout
        self._ws: websocket.WebSocket | None = None
        self._dialer = Dialer(tls, proxy, connect_timeout)  # interruptible while opening
        self.ended = False  # read() returned the Closed item: nothing more comes
        self.opened_at = 0.0
        self.last_received = 0.0  # any frame, pongs included
        self.last_message = 0.0  # a service message
        self.bytes_sent = 0

    # --- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        """Connect, TLS-verify and upgrade; raise Refused (an HTTP answer other than 101) or
        ConnectFailed with the classified reason. Each step waits at most
        ``connect_timeout``, and :meth:`interrupt` ends it at once."""
        try:
            ws = self._open()
        finally:
            self._release_ctl()
        self._ws = ws
        self.opened_at = self.last_received = self.last_message = self.clock()

    def _open(self) -> websocket.WebSocket:
        try:
            sock = self._dialer.dial(*_target(self._handshake.url))
        except ssl.SSLCertVerificationError as exc:
            raise ConnectFailed(
                ServiceError(None, "tls_untrusted", exc.verify_message or "certificate", Retry.SLOW)
            ) from None
        except (OSError, ValueError) as exc:
            raise self._failed(exc) from None
        # One thread reads and writes. websocket-client's own UTF-8 check of text frames runs in
        # Python byte by byte (a fifth of the link's CPU on Soniox); read() decodes strictly
        # in C instead, with the same outcome for a bad frame.
        ws = websocket.WebSocket(
            enable_multithread=False, skip_utf8_validation=True, get_mask_key=_MaskKeys()
        )
        try:
            ws.connect(
                self._handshake.url,
                socket=sock,
                header=list(self._handshake.headers),
                subprotocols=list(self._handshake.subprotocols) or None,
                timeout=self._connect_timeout,
                suppress_origin=True,
                redirect_limit=0,  # the key goes to the configured server, nowhere else
            )
        except websocket.WebSocketBadStatusException as exc:
            ws.shutdown()
            raise Refused(exc.status_code) from None
        except (OSError, websocket.WebSocketException) as exc:
            ws.shutdown()
            raise self._failed(exc) from None
        return ws

    def _failed(self, exc: BaseException) -> ConnectFailed:
        reason = "interrupted" if self._dialer.interrupted else _short(exc)
        return ConnectFailed(ServiceError(None, "connect_failed", reason, Retry.BACKOFF))

    def interrupt(self) -> None:
        """From another thread: end an :meth:`open` in progress now (or the next one)."""
        self._dialer.interrupt()

    @property
    def interrupted(self) -> bool:
        """:meth:`interrupt` was called (an open it ended failed for that, not the service)."""
        return self._dialer.interrupted

    def _release_ctl(self) -> None:
        self._dialer.release()

    def close(self, timeout: float = 1.0, *, code: int | None = None) -> None:
        """Tear the connection down now (on the link's thread).

        ``code``: say goodbye first with a close frame (a graceful end: a service that
        never ends a session itself learns that we did), without waiting for the answer;
        the send waits at most ``timeout``."""
        ws, self._ws = self._ws, None
        self.ended = True
        if ws is None:
            return
        if code is not None:
            with contextlib.suppress(OSError, websocket.WebSocketException, AttributeError):
                ws.sock.settimeout(min(self._connect_timeout, timeout))
                ws.send_close(code)
        ws.abort()  # no close handshake (the link decided it is over)
        ws.shutdown()

    # --- sending ----------------------------------------------------------------------
    def send(self, out: Outgoing) -> None:
        ws = self._ws
        if ws is None:
            raise SendFailed("not connected")
        opcode = websocket.ABNF.OPCODE_TEXT
        if isinstance(out.payload, bytes):
            opcode = websocket.ABNF.OPCODE_BINARY
        try:
            _timeout(ws.sock, self._connect_timeout)  # a send that long stalled is a dead link
            ws.send(out.payload, opcode=opcode)
        except (OSError, websocket.WebSocketException, AttributeError) as exc:
            # AttributeError: the socket is gone (closed under us)
            raise SendFailed(_short(exc)) from None
        self.bytes_sent += len(out.payload)

    def ping(self) -> None:
        ws = self._ws
        if ws is None:
            raise SendFailed("not connected")
        try:
            _timeout(ws.sock, self._connect_timeout)  # a send that long stalled is a dead link
            ws.ping(b"edgecap")
        except (OSError, websocket.WebSocketException, AttributeError) as exc:
            raise SendFailed(_short(exc)) from None

    def has_room(self, need: int = SEND_ROOM) -> bool:
        """The kernel takes ``need`` more bytes at once: a send now will not wait.

        For a caller that must never wait on the network (the capture thread sending on the
        link's behalf): what the kernel holds unsent or unacknowledged (``TIOCOUTQ``) plus
        ``need`` fits in half its send buffer (the other half: the kernel's own overhead per
        segment). A stalled or slow connection fills it, and the caller leaves the send to
        the link's thread. Two system calls, no wait; False when it cannot tell."""
        ws = self._ws
        if ws is None or self.ended or ws.sock is None:
            return False
        try:
            sock = ws.sock
            held = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
            size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        except (OSError, ValueError, AttributeError):
            return False
        return held + need <= size // 2

    # --- reading ----------------------------------------------------------------------
    def fileno(self) -> int | None:
        """The socket to wait on for :meth:`read`; None once the connection ended."""
        ws = self._ws
        if ws is None or self.ended or ws.sock is None:
            return None
        return ws.sock.fileno()

    @property
    def buffered(self) -> bool:
        """TLS holds decrypted bytes already: :meth:`read` has something, though the
        socket may not be readable (a select() would sleep on them)."""
        ws = self._ws
        if ws is None or self.ended or ws.sock is None:
            return False
        pending = getattr(ws.sock, "pending", None)  # plain ws:// has no TLS buffer
        return bool(pending and pending())

    def read(self, limit: int = READ_LIMIT) -> list[InboxItem]:
        """The frames that are there now (at most ``limit``), in order; the last item is a
        ``Closed`` if the connection ended. Never waits for a frame that has not begun to
        arrive, and at most ``READ_SLICE`` for the rest of one that has."""
        items: list[InboxItem] = []
        ws = self._ws
        if ws is None or self.ended:
            return items
        try:
            sock = ws.sock
            while len(items) < limit:
                if not self.buffered and not select.select([sock], [], [], 0)[0]:
                    break
                try:
                    _timeout(sock, READ_SLICE)
                    opcode, frame = ws.recv_data_frame(control_frame=True)
                except websocket.WebSocketTimeoutException:
                    break  # the rest of the frame comes later: resumed on the next read
                now = self.clock()
                self.last_received = now
                data = frame.data if frame is not None else b""
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    items.append(Closed(self.number, code, data[2:].decode("utf-8", "replace")))
                    self.ended = True
                    return items
                if opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
                    continue
                self.last_message = now
                message: str | bytes = data
                if opcode == websocket.ABNF.OPCODE_TEXT and isinstance(data, bytes):
                    try:
                        message = data.decode("utf-8")
                    except UnicodeDecodeError:  # RFC 6455 §8.1: fail the connection
                        items.append(Closed(self.number, None, "invalid UTF-8 in a text frame"))
                        self.ended = True
                        return items
                items.append(Message(self.number, message))
        except (OSError, ValueError, websocket.WebSocketException, AttributeError) as exc:
            # AttributeError: websocket-client after abort() (its socket is gone);
            # ValueError: select() on a socket closed under it.
            items.append(Closed(self.number, None, _short(exc)))
            self.ended = True
        return items


def _timeout(sock: socket.socket, seconds: float) -> None:
    """Set the socket's timeout if it differs: reads and sends each want their own, and
    setting it is a system call every time (once per audio message otherwise)."""
    if sock.gettimeout() != seconds:
        sock.settimeout(seconds)


class _MaskKeys:
    """WebSocket masking keys (RFC 6455 §5.3: from a strong source of entropy), from
    ``os.urandom`` a page at a time rather than one system call per frame."""

    _PAGE = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self, length: int) -> bytes:
        if self._at + length > len(self._pool):
            self._pool = os.urandom(max(self._PAGE, length))
            self._at = 0
        key = self._pool[self._at : self._at + length]
        self._at += length
        return key


def _tunnel(sock: socket.socket, host: str, port: int) -> None:
    """Ask an HTTP proxy for a CONNECT tunnel to host:port (TLS then goes through it)."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("ascii"))
    head = b""
    while b"\r\n\r\n" not in head:
        if len(head) > 16384:
            raise OSError("the proxy's answer is too long")
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("the proxy closed the connection")
        head += chunk
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or parts[1] != "200":
        raise OSError(f"the proxy refused the tunnel: {status_line[:80]}")
    # A proxy says nothing after its answer until the server speaks: no bytes are lost here.


def _short(exc: BaseException, limit: int = 160) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, socket.timeout):
        text = "timed out"
    return text if len(text) <= limit else text[: limit - 1] + "…"
