"""A TCP proxy on 127.0.0.1 that injects network faults between a client and a server.

Usage::

    with FaultProxy(("127.0.0.1", emu.port)) as px:
        connect to ("127.0.0.1", px.port) ...   # TLS passes through untouched
        px.stall(); ...; px.resume()
        px.cut()

One thread owns everything: the listening socket and every forwarded connection are
non-blocking sockets served by one selector loop, so there are no per-connection threads to
leak and every control is applied by that loop. Each control returns only after the loop
has picked it up, so it is in force on live connections when the call returns (``cut()``
returns after the resets were sent).

Faults:

* ``cut()``: RST every live connection, both sides (SO_LINGER 0, then close).
* ``refuse(seconds)``: for that long, new connections are accepted and reset at once.
* ``stall()`` / ``resume()``: nothing is read or written (so nothing closes either) while
  stalled; the kernel buffers fill and the peers see a silent, open connection.
* ``delay(seconds)``: each chunk is forwarded no earlier than ``seconds`` after it was read,
  in order (latency, not a throughput cap; applies to queued chunks at once).
* ``throttle(bytes_per_second)``: a token bucket per connection and direction (bursts of at
  most 50 ms worth of bytes); ``None`` lifts it.

A connection whose one side resets is reset on the other side too; an orderly shutdown
(EOF) is forwarded as a half-close once the queued bytes went out.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field

_LINGER_RST = struct.pack("ii", 1, 0)
_RECV_SIZE = 65536
_MAX_BUFFERED = 256 * 1024  # per direction; beyond it the proxy stops reading (backpressure)
_POLL_S = 0.05


@dataclass(eq=False)
class _Pipe:
    """One direction of one connection: bytes read from ``src``, queued for ``dst``."""

    src: socket.socket
    dst: socket.socket
    upstream: bool  # client -> server
    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    buffered: int = 0
    eof: bool = False  # src sent FIN
    shut: bool = False  # FIN forwarded to dst
    allowance: float = 0.0
    refilled: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Link:
    client: socket.socket
    server: socket.socket
    up: _Pipe
    down: _Pipe


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """Forward 127.0.0.1:``port`` to ``upstream``, with faults on demand (thread-safe)."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        connect_timeout: float = 1.0,
        control_timeout: float = 2.0,
    ) -> None:
        self.upstream = upstream
        self.connect_timeout = connect_timeout
        self.control_timeout = control_timeout
        self._cond = threading.Condition()
        # Settings, written by controls, read by the loop (under _cond).
        self._stalled = False
        self._delay = 0.0
        self._rate: float | None = None
        self._refuse_until = 0.0
        self._gen = 0  # bumped by every control
        self._seen = 0  # last generation the loop picked up
        self._cut_gen = 0
        self._stop = False
        self._running = True
        # Counters (written by the loop under _cond).
        self._accepted = 0
        self._refused = 0
        self._refused_at: list[float] = []  # time.monotonic() of each refusal
        self._failed = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._live = 0

        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._links: list[_Link] = []
        self._sel = selectors.DefaultSelector()
        self._registered: dict[socket.socket, int] = {}
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.port}")
        self._thread.start()

    # -- counters -----------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def accepted(self) -> int:
        """Connections accepted and forwarded (refused ones not included)."""
        with self._cond:
            return self._accepted

    @property
    def refused(self) -> int:
        """Connections reset at once because of :meth:`refuse`."""
        with self._cond:
            return self._refused

    @property
    def refused_at(self) -> list[float]:
        """When each refused connection arrived (time.monotonic())."""
        with self._cond:
            return list(self._refused_at)

    @property
    def upstream_failures(self) -> int:
        """Connections reset because the upstream could not be reached."""
        with self._cond:
            return self._failed

    @property
    def bytes_up(self) -> int:
        """Bytes delivered to the upstream (client -> server)."""
        with self._cond:
            return self._bytes_up

    @property
    def bytes_down(self) -> int:
        """Bytes delivered to clients (server -> client)."""
        with self._cond:
            return self._bytes_down

    @property
    def live(self) -> int:
        """Connections currently open."""
        with self._cond:
            return self._live

    # -- controls -----------------------------------------------------------------------

    def cut(self) -> None:
        """Reset every live connection; returns once the resets were sent."""
        with self._cond:
            self._cut_gen += 1
        self._apply()

    def refuse(self, seconds: float) -> None:
        """Reset every new connection at once for ``seconds`` from now."""
        with self._cond:
            self._refuse_until = time.monotonic() + seconds
        self._apply()

    def stall(self) -> None:
        """Stop forwarding in both directions; keep every connection open."""
        with self._cond:
            self._stalled = True
        self._apply()

    def resume(self) -> None:
        """Undo :meth:`stall`."""
        with self._cond:
            self._stalled = False
        self._apply()

    def delay(self, seconds: float) -> None:
        """Forward each chunk ``seconds`` after it was read (0 = no added latency)."""
        with self._cond:
            self._delay = max(0.0, seconds)
        self._apply()

    def throttle(self, bytes_per_second: float | None) -> None:
        """Cap each connection's throughput per direction (None = unlimited)."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive or None")
        with self._cond:
            self._rate = bytes_per_second
        self._apply()

    def close(self) -> None:
        """Stop the loop, close every socket and join the thread. Idempotent."""
        with self._cond:
            self._stop = True
        self._wake()
        self._thread.join(timeout=5)
        if self._thread.is_alive():  # pragma: no cover - would be a proxy bug
            raise RuntimeError("fault proxy thread did not stop")

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _apply(self) -> None:
        """Wait until the loop has started an iteration with the new settings."""
        with self._cond:
            self._gen += 1
            target = self._gen
        self._wake()
        with self._cond:
            self._cond.wait_for(
                lambda: self._seen >= target or not self._running, self.control_timeout
            )

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"x")

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        cut_done = 0
        try:
            while True:
                with self._cond:
                    if self._stop:
                        break
                    gen, cut_gen = self._gen, self._cut_gen
                    stalled, delay, rate = self._stalled, self._delay, self._rate
                    refuse_until = self._refuse_until
                if cut_gen > cut_done:
                    for link in list(self._links):
                        self._drop(link, reset=True)
                    cut_done = cut_gen
                with self._cond:
                    self._seen = gen
                    self._cond.notify_all()
                now = time.monotonic()
                timeout = self._update_interest(now, stalled, delay, rate)
                for key, events in self._sel.select(timeout):
                    self._dispatch(key, events, stalled, delay, rate, refuse_until)
        finally:
            for link in list(self._links):
                self._drop(link, reset=False)
            self._sel.close()
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()
            with self._cond:
                self._running = False
                self._cond.notify_all()

    def _due(self, pipe: _Pipe, now: float, delay: float, rate: float | None) -> float:
        """0 if the pipe's head can be written now, else seconds until it can (inf: never)."""
        if not pipe.queue:
            return float("inf")
        wait = pipe.queue[0][0] + delay - now
        if rate is not None:
            self._refill(pipe, now, rate)
            if pipe.allowance < 1:
                wait = max(wait, (1 - pipe.allowance) / rate)
        return max(0.0, wait)

    @staticmethod
    def _refill(pipe: _Pipe, now: float, rate: float) -> None:
        burst = max(1.0, rate * 0.05)
        pipe.allowance = min(burst, pipe.allowance + rate * (now - pipe.refilled))
        pipe.refilled = now

    def _update_interest(
        self, now: float, stalled: bool, delay: float, rate: float | None
    ) -> float:
        timeout = _POLL_S
        wanted: dict[socket.socket, int] = {}
        for link in self._links:
            for sock in (link.client, link.server):
                wanted[sock] = 0
            if stalled:
                continue
            for pipe in (link.up, link.down):
                if not pipe.eof and pipe.buffered < _MAX_BUFFERED:
                    wanted[pipe.src] |= selectors.EVENT_READ
                due = self._due(pipe, now, delay, rate)
                if due == 0:
                    wanted[pipe.dst] |= selectors.EVENT_WRITE
                else:
                    timeout = min(timeout, due)
        for sock, events in wanted.items():
            current = self._registered.get(sock, 0)
            if events == current:
                continue
            if current and events:
                self._sel.modify(sock, events, None)
            elif events:
                self._sel.register(sock, events, None)
            else:
                self._sel.unregister(sock)
            self._registered[sock] = events
        return timeout

    def _dispatch(
        self,
        key: selectors.SelectorKey,
        events: int,
        stalled: bool,
        delay: float,
        rate: float | None,
        refuse_until: float,
    ) -> None:
        sock = key.fileobj
        if sock is self._wake_r:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
            return
        if sock is self._listener:
            self._accept(refuse_until)
            return
        link = next((lk for lk in self._links if sock in (lk.client, lk.server)), None)
        if link is None or stalled:
            return
        assert isinstance(sock, socket.socket)
        if events & selectors.EVENT_WRITE:
            pipe = link.down if sock is link.client else link.up
            if not self._write(link, pipe, delay, rate):
                return
        if events & selectors.EVENT_READ:
            pipe = link.up if sock is link.client else link.down
            self._read(link, pipe)

    def _accept(self, refuse_until: float) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        # Counters change before the client can observe the event (here: the reset).
        if time.monotonic() < refuse_until:
            with self._cond:
                self._refused += 1
                self._refused_at.append(time.monotonic())
            _reset(client)
            return
        try:
            server = socket.create_connection(self.upstream, timeout=self.connect_timeout)
        except OSError:
            with self._cond:
                self._failed += 1
            _reset(client)
            return
        for s in (client, server):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, server, _Pipe(client, server, True), _Pipe(server, client, False))
        self._links.append(link)
        with self._cond:
            self._accepted += 1
            self._live = len(self._links)

    def _read(self, link: _Link, pipe: _Pipe) -> None:
        try:
            data = pipe.src.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(link, reset=True)
            return
        if not data:
            pipe.eof = True
            self._forward_eof(link, pipe)
            return
        pipe.queue.append((time.monotonic(), data))
        pipe.buffered += len(data)

    def _write(self, link: _Link, pipe: _Pipe, delay: float, rate: float | None) -> bool:
        """Send what is due on ``pipe``; False if the link was dropped."""
        now = time.monotonic()
        while pipe.queue and self._due(pipe, now, delay, rate) == 0:
            stamp, chunk = pipe.queue[0]
            limit = len(chunk) if rate is None else min(len(chunk), int(pipe.allowance))
            # Send and count under the lock: a reader of bytes_up/bytes_down that has
            # seen the bytes arrive also sees them counted.
            with self._cond:
                try:
                    sent = pipe.dst.send(chunk[:limit])
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    sent = -1
                if sent > 0 and pipe.upstream:
                    self._bytes_up += sent
                elif sent > 0:
                    self._bytes_down += sent
            if sent == 0:
                return True
            if sent < 0:
                self._drop(link, reset=True)
                return False
            if rate is not None:
                pipe.allowance -= sent
            pipe.buffered -= sent
            if sent == len(chunk):
                pipe.queue.popleft()
            else:
                pipe.queue[0] = (stamp, chunk[sent:])
            if sent < limit:
                return True  # the kernel buffer is full
        self._forward_eof(link, pipe)
        return True

    def _forward_eof(self, link: _Link, pipe: _Pipe) -> None:
        if pipe.eof and not pipe.queue and not pipe.shut:
            pipe.shut = True
            try:
                pipe.dst.shutdown(socket.SHUT_WR)
            except OSError:
                self._drop(link, reset=True)
                return
        if link.up.shut and link.down.shut:
            self._drop(link, reset=False)

    def _drop(self, link: _Link, *, reset: bool) -> None:
        if link not in self._links:
            return
        self._links.remove(link)
        with self._cond:
            self._live = len(self._links)
        for sock in (link.client, link.server):
            if self._registered.pop(sock, 0):
                self._sel.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()
