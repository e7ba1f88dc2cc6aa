"""The TLS WebSocket server every strict service emulator stands on.

A service emulator (``soniox.py``, ``stateful.py``) writes only its protocol: a
:class:`SessionRecord` subclass (what one connection did), a :class:`SessionRunner` subclass
(the conversation on one connection) and an :class:`EmulatorServer` subclass that names its
path and makes those two. This module owns the rest, once:

* a ``websockets`` sync server on 127.0.0.1 (a free port) over real TLS (``tls.py``), served
  by one thread from construction until :meth:`EmulatorServer.close`;
* HTTP 404 for any other path (and whatever else :meth:`EmulatorServer._refusal` refuses
  before the upgrade, such as a wrong key);
* the bookkeeping tests read: ``sessions``, ``connections``, ``rejected_paths``, and
  :meth:`EmulatorServer.wait_for`, all under one lock that every record is changed under
  (before the matching bytes go on the wire) and that wakes the waiters;
* :meth:`EmulatorServer.close`: live connections closed with 1001, and every thread the
  server (and websockets, for it) started joined — so no test leaves a thread behind;
* in a runner: receiving with a stop check and a protocol clock (:meth:`SessionRunner._tick`),
  closing with a code, and aborting the TCP connection (a RST) as a fault.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, NoReturn, Self, TypedDict, TypeVar

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from .tls import TlsMaterial, make_tls

# shutdown() polls its handler threads at this interval (0.1 s by default, which would add
# 0.1 s to nearly every test's teardown).
SHUTDOWN_POLLING_INTERVAL = 0.01


class ServerOptions(TypedDict, total=False):
    """What an emulator's constructor passes on to :class:`EmulatorServer` (its own
    parameters are its protocol's): ``**options: Unpack[ServerOptions]``."""

    api_key: str
    tls: TlsMaterial | None
    ping_interval: float | None
    close_timeout: float
    open_timeout: float
    poll_interval: float


@dataclass(eq=False, kw_only=True)
class SessionRecord:
    """What the server itself records of one accepted WebSocket connection (an emulator's
    session subclasses it and adds its protocol's records).

    ``close_code`` is the close code the emulator sent (None if it sent none: the client
    closed first, or the connection was dropped); ``client_close_code`` is the code of the
    client's close frame, if one arrived; ``lost`` is set when the connection ended without
    one. ``done`` is set when the connection's handler has finished.
    """

    index: int
    headers: list[tuple[str, str]]
    close_code: int | None = None
    client_close_code: int | None = None
    lost: bool = False
    done: bool = False


S = TypeVar("S", bound=SessionRecord)
E = TypeVar("E", bound="EmulatorServer[Any]")


class ConnectionOver(Exception):
    """The connection is over (closed, dropped, or stopping): leave the handler."""


class EmulatorServer(Generic[S]):
    """A TLS WebSocket server on 127.0.0.1 serving ``path`` (see the module docstring).

    Starts serving in the constructor, so a subclass sets what its handlers read *before*
    calling ``super().__init__``. ``api_key`` is the one key the service accepts (where
    and how it is sent is the protocol's to check). ``tls`` defaults to fresh material in
    ``tmp_dir``. ``ping_interval`` is the library's server-side keepalive
    ping (off by default so tests that read raw frames see no PINGs); ``close_timeout``
    bounds each closing handshake and ``open_timeout`` each TLS+HTTP handshake, and so how
    long :meth:`close` can take. ``poll_interval`` is the longest a connection's runner
    blocks in a receive before it looks at the stop flag and its protocol's clocks.
    """

    path: ClassVar[str]  # the one request target served; any other gets HTTP 404
    label: ClassVar[str]  # names the serving thread: "<label>-emulator-<port>"

    def __init__(
        self,
        tmp_dir: str | Path,
        *,
        api_key: str = "test-key",
        tls: TlsMaterial | None = None,
        ping_interval: float | None = None,
        close_timeout: float = 1.0,
        open_timeout: float = 2.0,
        poll_interval: float = 0.02,
    ) -> None:
        self.api_key = api_key
        self.poll_interval = poll_interval
        self.tls = tls if tls is not None else make_tls(tmp_dir)
        self._cond = threading.Condition(threading.RLock())
        self._sessions: list[S] = []
        self._connections = 0
        self._rejected: list[str] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._closed = False
        self._server: Server = serve(
            self._handle,
            "127.0.0.1",
            0,
            ssl=self.tls.server_context(),
            process_request=self._process_request,
            ping_interval=ping_interval,
            ping_timeout=ping_interval,
            close_timeout=close_timeout,
            open_timeout=open_timeout,
        )
        self._server.SHUTDOWN_POLLING_INTERVAL = SHUTDOWN_POLLING_INTERVAL
        self.port: int = self._server.socket.getsockname()[1]
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, name=f"{self.label}-emulator-{self.port}"
        )
        self._serve_thread.start()

    # -- what an emulator writes ----------------------------------------------------------

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        """(HTTP status, body) to refuse an upgrade to ``path`` with, or None to accept it."""
        return None

    def _new_session(self, index: int, request: Request) -> S:
        """The record of a newly accepted connection (called under the lock)."""
        raise NotImplementedError

    def _serve_session(self, conn: ServerConnection, session: S) -> None:
        """Run the protocol on one connection (the library's handler thread)."""
        raise NotImplementedError

    # -- public API -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``wss://127.0.0.1:PORT/<path>``."""
        return f"wss://127.0.0.1:{self.port}{self.path}"

    @property
    def ca_file(self) -> str:
        """PEM file of the CA that signed the server certificate."""
        return self.tls.ca_file

    @property
    def sessions(self) -> list[S]:
        """Snapshot of the accepted WebSocket connections, in order (the records are live).
        A refused request is only counted in ``connections``."""
        with self._cond:
            return list(self._sessions)

    @property
    def connections(self) -> int:
        """HTTP upgrade requests seen, refused ones included (TLS failures excluded)."""
        with self._cond:
            return self._connections

    @property
    def rejected_paths(self) -> list[str]:
        """Request targets refused with HTTP 404."""
        with self._cond:
            return list(self._rejected)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (evaluated under the emulator's lock) is true."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def close(self) -> None:
        """Close live connections (1001), stop serving and join all threads. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._stopping.set()
        self._server.shutdown(code=1001)
        self._serve_thread.join(timeout=5)
        with self._cond:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- server callbacks -----------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        with self._cond:
            self._connections += 1
            # Handler and reader threads belong to the library; track them to join them.
            self._threads.append(threading.current_thread())
            self._threads.append(conn.recv_events_thread)
            wrong_path = request.path != self.path
            if wrong_path:
                self._rejected.append(request.path)
            self._cond.notify_all()
        if wrong_path:
            return conn.respond(404, "Not Found\n")
        refusal = self._refusal(request)
        if refusal is not None:
            return conn.respond(*refusal)
        return None

    def _handle(self, conn: ServerConnection) -> None:
        request = conn.request
        assert request is not None
        with self._cond:
            if conn.keepalive_thread is not None:
                self._threads.append(conn.keepalive_thread)
            session = self._new_session(len(self._sessions), request)
            self._sessions.append(session)
            self._cond.notify_all()
        try:
            self._serve_session(conn, session)
        finally:
            with self._cond:
                session.done = True
                self._cond.notify_all()


class SessionRunner(Generic[E, S]):
    """The conversation on one connection, in the library's handler thread: an emulator
    writes :meth:`_converse` (and maybe :meth:`_tick`, :meth:`_client_closed`); leaving
    by :class:`ConnectionOver` or the connection's end is handled here."""

    def __init__(self, emu: E, conn: ServerConnection, session: S) -> None:
        self.emu = emu
        self.conn = conn
        self.session = session

    def _converse(self) -> None:
        """Receive and answer until the connection is over (by raising)."""
        raise NotImplementedError

    def _tick(self, now: float) -> float:
        """Called before every wait for a message: check the protocol's clocks (raise to
        end the connection) and return how long the wait may be at most."""
        return self.emu.poll_interval

    def _client_closed(self, exc: ConnectionClosed) -> None:
        """The connection ended from the client's side (already recorded)."""

    @contextlib.contextmanager
    def _update(self) -> Iterator[None]:
        """Mutate the session under the emulator's lock, then wake wait_for() callers."""
        with self.emu._cond:
            yield
            self.emu._cond.notify_all()

    def run(self) -> None:
        try:
            self._converse()
        except ConnectionOver:
            pass
        except ConnectionClosed as exc:
            with self._update():
                if exc.rcvd is not None:
                    self.session.client_close_code = exc.rcvd.code
                else:
                    self.session.lost = True
            self._client_closed(exc)

    def _receive(self) -> str | bytes:
        """The client's next message; closes with 1001 when the emulator is closing."""
        while True:
            if self.emu._stopping.is_set():
                self._close(1001)
            wait = min(self.emu.poll_interval, self._tick(time.monotonic()))
            try:
                return self.conn.recv(timeout=wait)
            except TimeoutError:
                continue

    def _close(self, code: int, reason: str = "") -> NoReturn:
        """Close the connection with ``code`` (recorded first) and leave the handler."""
        with self._update():
            self.session.close_code = code
        self.conn.close(code, reason)
        raise ConnectionOver

    def _abort(self) -> NoReturn:
        """Abort the TCP connection: RST (SO_LINGER 0), no close frame, no TLS alert."""
        sock = self.conn.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Close the fd ourselves, holding the library's protocol lock: its close_socket()
        # wakes the reader thread first, which then races to shutdown(SHUT_WR) the socket
        # (a FIN) before the close. Closing first sends the RST; close_socket() then only
        # wakes and retires the reader (closing an already closed socket is a no-op).
        with self.conn.protocol_mutex:
            sock.close()
        self.conn.close_socket()
        raise ConnectionOver
