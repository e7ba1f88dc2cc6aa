"""The ``web`` output: the caption page, its live stream and ``/metrics``, on the LAN.

Three things are served, and nothing else: ``/`` (the page, page.html), ``/events`` (the
captions as Server-Sent Events: ``hello``, the recent history, the line being spoken, the
status, then every change as it happens) and ``/metrics`` (Prometheus). Only GET and HEAD
are answered; nothing a request says can change anything. No file is ever opened for a
request, so no path can reach one.

Why no HTTP server framework. The standard library's ``ThreadingHTTPServer`` gives every
connection a thread: a room of 200 phones would be 200 threads on a Pi Zero, each blocked
in a write to a phone that may have left the wifi, none of them stoppable in bounded time,
and its ``serve_forever`` wakes every half second to poll. Instead this output does what the
caption socket does (socket_server.py): everything runs on the OutputWorker's one thread,
every socket is non-blocking, and between events the thread sleeps in one ``poll()`` on the
listening sockets, the connections and the worker's wake-up descriptor. Parsing requests is
the part that must be exactly right (request line, header limits, framing, smuggling), and
that part is h11's: a small, well-kept, pure-Python HTTP/1.1 library that does no I/O and
starts no thread (sans-I/O), so it fits this loop as it is. Responses are built here; every
header value in them is ours, never a request's.

Per connection: a request has ``request_timeout`` to arrive whole (at most
``MAX_REQUEST_HEAD`` bytes of head; a body is refused) and its response as long to be taken;
then the connection is closed (no keep-alive: a phone opens two connections per visit).
Per stream: every event is encoded once and the same bytes are appended to each viewer's
buffer and sent with one non-blocking ``send``; a viewer whose buffer passes
``client_buffer`` has stopped reading and is cut (its page reconnects by itself, and gets
the history again), so a stuck phone never delays the others; a comment every
``heartbeat`` seconds, with ``TCP_USER_TIMEOUT``, finds phones that left without a word.
Like the caption socket's, ``handle`` never blocks (encode once, append, one non-blocking
``send`` per viewer, a stuck viewer cut), so it is ``inline``: the worker may call it on the
publisher's thread while its own sleeps (worker.py), and ``wants_thread`` tells it when
that thread must poll again (a viewer's backlog needs POLLOUT, a viewer was dropped).

The access code (``[web] access_code``): the page asks for it once, checks it (both sides
hashed, compared in constant time, at most ``_CODE_TRIES`` wrong tries a minute from one
address), and leaves a cookie that holds an HMAC of the code, not the code; changing the
code signs every viewer out. ``/metrics`` never needs it (a scraper cannot type it): give
it its own ``metrics_listen`` where the room's wifi should not see it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import logging
import math
import select
import socket
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs

import h11

from edgecap import __version__
from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.schema import WebConfig, parse_listen
from edgecap.config.secrets import SecretNotFound
from edgecap.outputs.base import TEXT, OutputEvent, OutputUnavailable
from edgecap.outputs.client_history import CaptionHistory, poll_with_wake
from edgecap.outputs.socket_server import caption_message, encode, gap_message
from edgecap.outputs.web import page as pages
from edgecap.outputs.web.address import access_code, base_url
from edgecap.outputs.web.metrics import EdgecapCollector, Metrics, WebCounts
from edgecap.runtime.logsetup import fields
from edgecap.runtime.status import StatusBoard, StatusSnapshot

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192  # bytes of request line and headers; more is answered 431
MAX_TARGET = 2048  # bytes of the path and query; more is answered 414
REQUEST_TIMEOUT = 10.0  # seconds for a request to arrive, and again for its answer to go
CLIENT_BUFFER = 256 * 1024  # bytes a viewer may fall behind before it is cut
HEARTBEAT = 15.0  # seconds between keep-alive comments on the streams

_READ_CHUNK = 16384
_READS_PER_TURN = 4
_LINGER = 2.0  # seconds a closing connection has to take its answer and hang up
_CLOSE_BUDGET = 0.5  # seconds close() spends getting `bye` out to every viewer
_PENDING = 64  # connections still asking (not yet streaming), beyond max_clients
_USER_TIMEOUT_MS = 30_000  # unacknowledged data this long: the phone is gone
_SNDBUF = 64 * 1024  # the kernel's send buffer per connection (it doubles it)
_STREAM_INPUT_MAX = 64 * 1024  # bytes a viewer may send (it has nothing to send)
_ACCEPT_PAUSE = 1.0  # seconds without accepting after the process ran out of descriptors
_CODE_TRIES = 10  # wrong access codes from one address …
_CODE_WINDOW = 60.0  # … per this many seconds
_CODE_PEERS = 256  # addresses remembered for that
_BACKLOG = 128
COOKIE = "edgecap_access"
_COOKIE_AGE = 30 * 86400
_MAC_MESSAGE = b"edgecap web access v1"

_READING, _REPLYING, _STREAM, _LINGERING = range(4)
_FAILED = select.POLLERR | select.POLLNVAL
_FD_SHORTAGE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_HEARTBEAT_FRAME = b":\n\n"


def frame(event: str, message: dict[str, Any]) -> bytes:
    """One Server-Sent Event: its type and one line of JSON (JSON escapes every line break,
    so the data is always a single ``data:`` line)."""
    return b"event: " + event.encode() + b"\ndata: " + encode(message)[:-1] + b"\n\n"


def code_mac(code: str) -> bytes:
    """What the cookie holds for ``code``: an HMAC keyed by the code (the code cannot be
    read back from it), in hex."""
    return hmac.new(code.encode("utf-8"), _MAC_MESSAGE, hashlib.sha256).hexdigest().encode()


# After the greeting: what follows happens now (the page's screen reader hears it; the
# history before it is shown, not read out).
_LIVE = frame("live", {"type": "live"})


class _Conn:
    __slots__ = (
        "deadline",
        "fd",
        "http",
        "kind",
        "limit",
        "mask",
        "out",
        "peer",
        "reading",
        "received",
        "sock",
        "state",
    )

    def __init__(self, sock: socket.socket, peer: str, kind: str, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.kind = kind  # "page" or "metrics": which listener it came through
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        self.state = _READING
        self.deadline: float | None = deadline
        self.out = bytearray()
        self.limit = 0
        self.reading = True
        self.received = 0
        self.mask = select.POLLIN


class WebOutput:
    """The ``web`` output. Its counters are plain attributes, safe to read from any thread
    (each a single value written by the worker's thread)."""

    name = "web"
    takes = TEXT  # captions, losses and status
    inline = True  # handle() never blocks: it may run on the publisher's thread (base.py)

    def __init__(
        self,
        cfg: WebConfig,
        status: StatusBoard | None = None,
        *,
        service: str = "local",
        languages: list[str] | tuple[str, ...] = (),
        targets: list[str] | tuple[str, ...] = (),
        translation_only: bool = False,
        client_buffer: int = CLIENT_BUFFER,
        request_timeout: float = REQUEST_TIMEOUT,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        """``status``: read by /metrics; ``service``, ``languages`` (spoken), ``targets``
        (translation targets, in order) and ``translation_only`` as for the socket output:
        they tell the page which views to offer."""
        self.cfg = cfg
        self.status = status
        self.service = service
        self.client_buffer = client_buffer
        self.request_timeout = request_timeout
        self.heartbeat = heartbeat
        self._only = frozenset(cfg.languages) if cfg.languages else None
        self.languages = list(cfg.languages or targets)  # the translations viewers may pick
        self._hello = frame(
            "hello",
            {
                "type": "hello",
                "v": 1,
                "server": f"edgecap {__version__}",
                "title": cfg.title,
                "service": service,
                "spoken": list(languages),
                "transcript": not translation_only,
                "languages": self.languages,
            },
        )
        self._pages = {
            "captions": pages.caption_page(cfg.title),
            "code": pages.code_page(cfg.title, wrong=False),
            "wrong": pages.code_page(cfg.title, wrong=True),
            "full": pages.full_page(cfg.title, cfg.max_clients),
            "throttled": pages.throttled_page(cfg.title),
        }
        self._poller = select.poll()
        self._poll_changed = False  # registrations changed since wait_io began to poll
        self._listeners: dict[int, tuple[socket.socket, str]] = {}
        self._conns: dict[int, _Conn] = {}  # every connection
        self._timed: dict[int, _Conn] = {}  # of those, the ones not streaming (a deadline)
        self._streams: dict[int, _Conn] = {}  # the viewers
        self._scratch = bytearray(_READ_CHUNK)
        # What a new viewer is sent after hello; kept across close()/open().
        self._history = CaptionHistory(cfg.history)  # for clients that come mid-talk
        self._status_frame: bytes | None = None
        self._summary: str | None = None
        self._mac: bytes | None = None  # the cookie a viewer must show; None: no code
        self._wrong_codes: OrderedDict[str, list[float]] = OrderedDict()  # peer → [since, n]
        self._metrics: Metrics | None = None
        self._next_beat: float | None = None
        self._accept_at: float | None = None
        self._shortage_warned = False
        self.address: tuple[str, int] | None = None  # where the page is served, once open
        self.metrics_address: tuple[str, int] | None = None
        # Counters (for /metrics and the status).
        self.viewers_served = 0
        self.viewers_cut = 0
        self.refused: dict[str, int] = {"full": 0, "code": 0, "busy": 0}
        self.responses: dict[int, int] = {}
        self.bytes_sent = 0
        self.captions = {False: 0, True: 0}
        self.caption_updates = 0

    @property
    def viewers(self) -> int:
        return len(self._streams)

    # --- Output -----------------------------------------------------------------------
    def open(self) -> None:
        try:
            code = access_code(self.cfg)
        except SecretNotFound as exc:
            raise OutputUnavailable(f"[web] access_code: no code found: {exc}") from None
        self._mac = code_mac(code) if code else None
        self.metrics_address = None
        page = self._listen(self.cfg.listen, "page")
        self.address = page.getsockname()[:2]
        if self.cfg.metrics and self.cfg.metrics_listen:
            try:
                metrics = self._listen(self.cfg.metrics_listen, "metrics")
            except BaseException:
                self._close_listeners()
                raise
            self.metrics_address = metrics.getsockname()[:2]
        if self.cfg.metrics and self._metrics is None:
            self._metrics = Metrics(EdgecapCollector(self.status, self.counts, self.service))
        self._accept_at = None
        log.info(
            "caption page served on %s:%d%s; viewers open %s",
            *self.address,
            f", /metrics on {self.cfg.metrics_listen}" if self.metrics_address else "",
            base_url(self.cfg),
        )

    def handle(self, event: OutputEvent) -> None:
        if isinstance(event, CaptionLine):
            self.caption_updates += 1
            if event.done and (event.text or event.translations):
                self.captions[event.offline] += 1
            data = frame("caption", self._caption(event))
            self._history.remember(event, data)
        elif isinstance(event, AudioLoss):
            data = frame("gap", gap_message(event))
        elif isinstance(event, StatusSnapshot):
            summary = event.summary()
            if summary == self._summary:
                return  # a change viewers cannot see
            self._summary = summary
            data = self._status_frame = frame("status", {"type": "status", "summary": summary})
        else:
            return
        self._broadcast(data)

    def wait_io(self, timeout: float | None, wake_fd: int) -> None:
        """Sleep in poll() until a socket is ready, ``wake_fd`` is readable (an event or a
        stop) or ``timeout`` passed; idle() does the work."""
        self._poll_changed = False  # before the poll: it is about to see every change
        poll_with_wake(self._poller, timeout, wake_fd)

    @property
    def wants_thread(self) -> bool:
        """After an inline handle(): the sleeping poll watches a stale set (a viewer's
        backlog needs POLLOUT, or a viewer was dropped); the worker wakes it."""
        return self._poll_changed

    def wake_in(self, now: float) -> float | None:
        """The next deadline: a request or answer taking too long, the next heartbeat, or
        accepting again after a shortage of descriptors."""
        due = [c.deadline for c in self._timed.values() if c.deadline is not None]
        due += [t for t in (self._next_beat, self._accept_at) if t is not None]
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def idle(self, now: float) -> None:
        for fd, ready in self._poller.poll(0):
            listener = self._listeners.get(fd)
            if listener is not None:
                self._accept(*listener)
                continue
            conn = self._conns.get(fd)
            if conn is None:
                continue
            if ready & _FAILED:
                self._drop(conn)
                continue
            if ready & (select.POLLIN | select.POLLHUP):
                self._read(conn)
            if ready & select.POLLOUT and conn.fd in self._conns:
                self._write(conn)
        mono = time.monotonic()  # our own clock: deadlines must not depend on the caller
        for conn in [c for c in self._timed.values() if c.deadline and mono >= c.deadline]:
            self._expire(conn)
        if self._accept_at is not None and mono >= self._accept_at:
            self._accept_at = None
            for fd in self._listeners:
                self._poller.register(fd, select.POLLIN)
        if not self._streams:
            self._next_beat = None
        elif self._next_beat is not None and mono >= self._next_beat:
            self._next_beat = mono + self.heartbeat
            self._broadcast(_HEARTBEAT_FRAME)

    def close(self) -> None:
        """Tell every viewer ``bye`` (within ``_CLOSE_BUDGET``: their pages show that the
        captions stopped and reconnect), then close everything."""
        self._close_listeners()
        try:
            self._say_bye()
        except Exception:
            log.exception("caption page: saying bye failed")
        for conn in list(self._conns.values()):
            self._drop(conn)
        self._next_beat = None

    def counts(self) -> WebCounts:
        return WebCounts(
            viewers=len(self._streams),
            max_viewers=self.cfg.max_clients,
            viewers_served=self.viewers_served,
            viewers_cut=self.viewers_cut,
            refused=dict(self.refused),
            responses=dict(self.responses),
            bytes_sent=self.bytes_sent,
            captions=dict(self.captions),
            caption_updates=self.caption_updates,
        )

    # --- listening ----------------------------------------------------------------------
    def _listen(self, text: str, kind: str) -> socket.socket:
        try:
            host, port = parse_listen(text)
        except ValueError as exc:
            raise OutputUnavailable(f"[web] listen {text!r}: {exc}") from None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(
            family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            # a restarted daemon takes its port back at once (old connections in TIME_WAIT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
            sock.listen(_BACKLOG)
        except OSError as exc:
            sock.close()
            what = "the caption page" if kind == "page" else "/metrics"
            raise OutputUnavailable(
                f"cannot serve {what} on {text}: {exc.strerror or exc}"
            ) from None
        self._listeners[sock.fileno()] = (sock, kind)
        self._poller.register(sock.fileno(), select.POLLIN)
        return sock

    def _close_listeners(self) -> None:
        for fd, (sock, _) in list(self._listeners.items()):
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(fd)
            sock.close()
        self._listeners.clear()

    def _accept(self, listener: socket.socket, kind: str) -> None:
        while True:
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _FD_SHORTAGE:
                    raise OutputUnavailable(
                        f"caption page: accept failed: {exc.strerror}"
                    ) from None
                # The connection waits in the backlog; the listeners leave the poll for a
                # while (they stay readable: the thread would spin).
                if not self._shortage_warned:
                    self._shortage_warned = True
                    log.warning("caption page cannot accept a connection: %s", exc.strerror)
                for fd in self._listeners:
                    with contextlib.suppress(KeyError, ValueError):
                        self._poller.unregister(fd)
                self._accept_at = time.monotonic() + _ACCEPT_PAUSE
                return
            self._shortage_warned = False
            if len(self._conns) >= self.cfg.max_clients + _PENDING:
                self.refused["busy"] += 1  # a flood of half-open requests: no room to ask
                with contextlib.suppress(OSError):
                    sock.close()
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                # bounded kernel memory per viewer (the kernel would grow it to megabytes
                # for a phone that stopped reading), small frames sent at once, and a phone
                # that left the wifi found within _USER_TIMEOUT_MS
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, _USER_TIMEOUT_MS)
            conn = _Conn(sock, str(addr[0]), kind, time.monotonic() + self.request_timeout)
            self._conns[conn.fd] = conn
            self._timed[conn.fd] = conn
            self._poller.register(conn.fd, conn.mask)

    # --- requests -----------------------------------------------------------------------
    def _read(self, conn: _Conn) -> None:
        for _ in range(_READS_PER_TURN):
            try:
                n = conn.sock.recv_into(self._scratch)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(conn)
                return
            if n == 0:
                if conn.state == _REPLYING:
                    conn.reading = False  # a half-close: it still reads its answer
                    self._watch(conn)
                else:
                    # left before asking; has taken its answer; or a page closed (a
                    # browser never half-closes a stream: its place is free at once)
                    self._drop(conn)
                return
            conn.received += n
            if conn.state == _READING and conn.received > MAX_REQUEST_HEAD:
                self._reply(conn, 431, pages.text_response(431, "431: the request is too large"))
                return
            if conn.state == _READING:
                self._parse(conn, bytes(self._scratch[:n]))
                if conn.fd not in self._conns:
                    return
            elif conn.state == _STREAM and conn.received > _STREAM_INPUT_MAX:
                self._drop(conn)  # a viewer has nothing to say; this one will not stop
                return

    def _parse(self, conn: _Conn, data: bytes) -> None:
        conn.http.receive_data(data)
        try:
            event = conn.http.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            why = "the request is too large" if status == 431 else "a malformed request"
            self._reply(conn, status, pages.text_response(status, f"{status}: {why}"))
            return
        if event is h11.NEED_DATA:
            return
        if isinstance(event, h11.Request):
            self._route(conn, event)
        else:
            self._drop(conn)

    def _route(self, conn: _Conn, request: h11.Request) -> None:
        headers: dict[bytes, bytes] = {}
        for name, value in request.headers:
            headers[name] = headers[name] + b"; " + value if name in headers else value
        head_only = request.method == b"HEAD"
        if headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers:
            self._reply(conn, 413, pages.text_response(413, "413: no request here has a body"))
            return
        if request.method not in (b"GET", b"HEAD"):
            text = "405: this server only shows captions (GET and HEAD)"
            self._reply(conn, 405, pages.text_response(405, text, extra=[("Allow", "GET, HEAD")]))
            return
        target = request.target
        if len(target) > MAX_TARGET:
            self._reply(conn, 414, pages.text_response(414, "414: the address is too long"))
            return
        if not target.startswith(b"/"):
            self._reply(conn, 400, pages.text_response(400, "400: ask for a path, such as /"))
            return
        path, _, query = target.partition(b"?")
        if (
            path == b"/metrics"
            and self._metrics is not None
            and (conn.kind == "metrics" or not self.metrics_address)
        ):
            self._serve_metrics(conn, headers, head_only)
        elif conn.kind == "metrics":
            self._not_found(conn, head_only)
        elif path == b"/":
            self._serve_page(conn, query, headers, head_only)
        elif path == b"/events":
            self._serve_events(conn, headers, head_only)
        else:
            self._not_found(conn, head_only)

    def _not_found(self, conn: _Conn, head_only: bool) -> None:
        text = "404: only / (the captions) is here"
        self._reply(conn, 404, pages.text_response(404, text, head_only=head_only))

    def _serve_page(
        self, conn: _Conn, query: bytes, headers: dict[bytes, bytes], head_only: bool
    ) -> None:
        if self._mac is not None and not self._cookie_ok(headers):
            code = _query_code(query)
            if code is None:
                self.refused["code"] += 1
                self._html(conn, 403, "code", head_only)
            elif self._throttled(conn.peer):
                self.refused["code"] += 1
                self._html(conn, 429, "throttled", head_only, [("Retry-After", "60")])
            elif not hmac.compare_digest(code_mac(code), self._mac):
                self._wrong_code(conn.peer)
                self.refused["code"] += 1
                self._html(conn, 403, "wrong", head_only)
            else:
                # the code leaves the address bar (and the history); the cookie stays
                cookie = (
                    f"{COOKIE}={self._mac.decode()}; Path=/; Max-Age={_COOKIE_AGE}; "
                    "HttpOnly; SameSite=Strict"
                )
                data = pages.text_response(
                    303,
                    "303: see /",
                    head_only=head_only,
                    extra=[("Location", "/"), ("Set-Cookie", cookie)],
                )
                self._reply(conn, 303, data)
            return
        if len(self._streams) >= self.cfg.max_clients:
            self.refused["full"] += 1
            self._html(conn, 503, "full", head_only, [("Retry-After", "30")])
            return
        self._html(conn, 200, "captions", head_only)

    def _serve_events(self, conn: _Conn, headers: dict[bytes, bytes], head_only: bool) -> None:
        if self._mac is not None and not self._cookie_ok(headers):
            self.refused["code"] += 1
            text = "403: the access code is needed: open / first"
            self._reply(conn, 403, pages.text_response(403, text, head_only=head_only))
            return
        if len(self._streams) >= self.cfg.max_clients:
            self.refused["full"] += 1
            text = f"503: the caption page is full ({self.cfg.max_clients} viewers)"
            data = pages.text_response(
                503, text, head_only=head_only, extra=[("Retry-After", "30")]
            )
            self._reply(conn, 503, data)
            return
        head = pages.response(
            200,
            [
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Content-Security-Policy", pages.NO_CONTENT_CSP),
                ("X-Accel-Buffering", "no"),
            ],
            length=False,
        )
        if head_only:
            self._reply(conn, 200, head)
            return
        greeting = b"".join(
            [
                head,
                self._hello,
                *self._history.messages(),
                *([self._status_frame] if self._status_frame is not None else []),
                _LIVE,
            ]
        )
        conn.state = _STREAM
        conn.deadline = None
        del self._timed[conn.fd]
        self._streams[conn.fd] = conn
        # The greeting does not count against the allowance (a long history may be larger
        # than client_buffer); once it has caught up, the limit is exact.
        conn.limit = self.client_buffer + len(greeting)
        self.viewers_served += 1
        self.responses[200] = self.responses.get(200, 0) + 1
        if self._next_beat is None:
            self._next_beat = time.monotonic() + self.heartbeat
        self._send(conn, greeting)

    def _serve_metrics(self, conn: _Conn, headers: dict[bytes, bytes], head_only: bool) -> None:
        assert self._metrics is not None
        accept = headers.get(b"accept", b"").decode("latin-1")
        body, content_type = self._metrics.render(accept)
        headers_out = [
            ("Content-Type", content_type),
            ("Content-Security-Policy", pages.NO_CONTENT_CSP),
        ]
        data = pages.response(200, headers_out, body, head_only=head_only)
        self._reply(conn, 200, data)

    def _html(
        self,
        conn: _Conn,
        status: int,
        page: str,
        head_only: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        data = pages.html_response(
            status, self._pages[page], head_only=head_only, extra=extra or ()
        )
        self._reply(conn, status, data)

    # --- the access code ----------------------------------------------------------------
    def _cookie_ok(self, headers: dict[bytes, bytes]) -> bool:
        assert self._mac is not None
        for item in headers.get(b"cookie", b"").split(b";"):
            name, _, value = item.strip().partition(b"=")
            if name == COOKIE.encode() and hmac.compare_digest(value, self._mac):
                return True
        return False

    def _throttled(self, peer: str) -> bool:
        entry = self._wrong_codes.get(peer)
        if entry is None:
            return False
        if time.monotonic() - entry[0] >= _CODE_WINDOW:
            del self._wrong_codes[peer]
            return False
        return entry[1] >= _CODE_TRIES

    def _wrong_code(self, peer: str) -> None:
        now = time.monotonic()
        entry = self._wrong_codes.pop(peer, None)
        if entry is None or now - entry[0] >= _CODE_WINDOW:
            entry = [now, 0]
        entry[1] += 1
        self._wrong_codes[peer] = entry
        while len(self._wrong_codes) > _CODE_PEERS:
            self._wrong_codes.popitem(last=False)
        if entry[1] == _CODE_TRIES:
            log.warning(
                "caption page: %d wrong access codes from %s in a minute; it waits",
                _CODE_TRIES,
                peer,
                **fields(output=self.name),
            )

    # --- sending ------------------------------------------------------------------------
    def _reply(self, conn: _Conn, status: int, data: bytes) -> None:
        """Answer once and close: the answer has ``request_timeout`` to be taken."""
        self.responses[status] = self.responses.get(status, 0) + 1
        conn.state = _REPLYING
        conn.deadline = time.monotonic() + self.request_timeout
        conn.out += data
        self._write(conn)

    def _broadcast(self, data: bytes) -> None:
        for conn in list(self._streams.values()):
            self._send(conn, data)

    def _send(self, conn: _Conn, data: bytes) -> None:
        conn.out += data
        self._write(conn)
        if conn.fd in self._streams and len(conn.out) > conn.limit:
            self._cut(conn)

    def _write(self, conn: _Conn) -> None:
        if conn.out:
            try:
                sent = conn.sock.send(conn.out, socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(conn)  # it went away (EPIPE, ECONNRESET, ETIMEDOUT)
                return
            if sent:
                del conn.out[:sent]  # cheap: bytearray trims its front in place
                self.bytes_sent += sent
                if not conn.out and conn.state == _STREAM:
                    conn.limit = self.client_buffer  # caught up: greeting allowance spent
        if not conn.out and conn.state == _REPLYING:
            self._linger(conn)
            return
        self._watch(conn)

    def _linger(self, conn: _Conn) -> None:
        """The answer is out: end our side and give the client a moment to read it and
        hang up (closing at once, with its request's bytes unread, would reset the
        connection and could destroy the answer on the way)."""
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        conn.state = _LINGERING
        conn.deadline = time.monotonic() + _LINGER
        if not conn.reading:
            self._drop(conn)
            return
        self._watch(conn)

    def _watch(self, conn: _Conn) -> None:
        mask = (select.POLLIN if conn.reading else 0) | (select.POLLOUT if conn.out else 0)
        if mask != conn.mask:
            self._poller.modify(conn.fd, mask)  # with mask 0, a hang-up is still reported
            conn.mask = mask
            self._poll_changed = True  # after the change (see wants_thread)

    def _cut(self, conn: _Conn) -> None:
        self.viewers_cut += 1
        log.warning(
            "caption page: a viewer (%s) stopped reading (%d bytes waiting); disconnected it",
            conn.peer,
            len(conn.out),
            **fields(output=self.name),
        )
        self._drop(conn)

    def _expire(self, conn: _Conn) -> None:
        if conn.state == _READING and conn.received:
            self._reply(conn, 408, pages.text_response(408, "408: the request took too long"))
            conn.deadline = time.monotonic() + _LINGER  # and that answer has little time
        else:
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        if self._conns.pop(conn.fd, None) is None:
            return
        self._timed.pop(conn.fd, None)
        self._streams.pop(conn.fd, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._poller.unregister(conn.fd)
        self._poll_changed = True
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _say_bye(self) -> None:
        bye = frame("bye", {"type": "bye"})
        for conn in list(self._streams.values()):
            conn.out += bye
            self._write(conn)
        deadline = time.monotonic() + _CLOSE_BUDGET
        while any(c.out for c in self._streams.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for fd, ready in self._poller.poll(max(1, math.ceil(left * 1000))):
                conn = self._streams.get(fd)
                if conn is None:
                    continue
                if ready & _FAILED:
                    self._drop(conn)
                elif ready & select.POLLOUT:
                    self._write(conn)
                elif ready & (select.POLLIN | select.POLLHUP):
                    self._read(conn)
        for conn in list(self._streams.values()):
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)  # a clean end of the stream

    # --- what the page is sent ----------------------------------------------------------
    def _caption(self, line: CaptionLine) -> dict[str, Any]:
        message = caption_message(line)
        if self._only is not None:
            message["translations"] = [
                t for t in message["translations"] if t["language"] in self._only
            ]
        return message


def _query_code(query: bytes) -> str | None:
    """The ``code`` of a query string, or None."""
    try:
        values = parse_qs(query.decode("utf-8"), max_num_fields=8).get("code")
    except (UnicodeDecodeError, ValueError):
        return None
    return values[0].strip() if values and values[0].strip() else None
