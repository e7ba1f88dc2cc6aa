"""An address on 127.0.0.1 where connections go nowhere: for stops during a connect.

Two kinds, as the network makes them:

* ``BlackHole("silent")``: every connection is accepted and then nothing — not a byte is
  read or written — so a TLS handshake (or a proxy's answer) waits for ever, as behind a
  server that hangs or a middlebox that swallows the traffic. ``accepted`` counts them.
* ``BlackHole("unanswered")``: the listening socket's backlog is full and the kernel drops
  every SYN, so ``connect()`` itself hangs in SYN_SENT, as behind a firewall that drops
  packets. (Linux drops a SYN when a listener's accept queue is full; the queue is filled
  with connections of our own that are never accepted.)

One thread owns everything (a selector loop); ``close()`` stops it and closes every socket.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Literal

Kind = Literal["silent", "unanswered"]


class BlackHole:
    def __init__(self, kind: Kind = "silent") -> None:
        self.kind = kind
        self._lock = threading.Lock()
        self._accepted: list[float] = []
        self._held: list[socket.socket] = []  # accepted (silent) or filling the backlog
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if kind == "unanswered":
            self._listener.listen(0)
            self._fill_backlog()
        else:
            self._listener.listen(16)
            self._listener.setblocking(False)
            self._thread = threading.Thread(target=self._run, name=f"black-hole-{self.port}")
            self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def url(self, path: str = "/") -> str:
        return f"wss://127.0.0.1:{self.port}{path}"

    @property
    def accepted(self) -> int:
        """Connections that arrived (silent kind)."""
        with self._lock:
            return len(self._accepted)

    @property
    def accepted_at(self) -> list[float]:
        with self._lock:
            return list(self._accepted)

    def wait_accepted(self, count: int, timeout: float) -> bool:
        return _wait(lambda: self.accepted >= count, timeout)

    @property
    def unanswered(self) -> int:
        """Connects to this address hanging in SYN_SENT now (any process on the box), read
        from /proc/net/tcp: how a test sees an attempt the kernel never lets through."""
        count = 0
        with open("/proc/net/tcp", encoding="ascii") as table:
            next(table)
            for row in table:
                fields = row.split()
                remote, state = fields[2], fields[3]
                if state == "02" and int(remote.rsplit(":", 1)[1], 16) == self.port:
                    count += 1
        return count

    def wait_attempt(self, timeout: float) -> bool:
        """Wait until a connection attempt is stuck here (accepted, or in SYN_SENT)."""
        if self.kind == "silent":
            return self.wait_accepted(1, timeout)
        return _wait(lambda: self.unanswered >= 1, timeout)

    def _fill_backlog(self) -> None:
        """Connect to ourselves until a connect no longer completes: the queue is full."""
        for _ in range(16):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.settimeout(0.2)
            try:
                probe.connect(self.address)
            except OSError:
                probe.close()  # this one hung in SYN_SENT: the backlog is full
                return
            self._held.append(probe)
        raise RuntimeError("the listen backlog never filled")

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for _ in sel.select(0.05):
                    try:
                        conn, _ = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    with self._lock:
                        self._accepted.append(time.monotonic())
                        self._held.append(conn)
        finally:
            sel.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            if self._thread.is_alive():  # pragma: no cover - would be a bug here
                raise RuntimeError("black hole thread did not stop")
        with self._lock:
            held, self._held = self._held, []
        for sock in (*held, self._listener):
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
