"""Telling systemd how the daemon is: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

Everything here is a no-op when the daemon was not started by systemd (no NOTIFY_SOCKET),
so ``edgecap run`` in a terminal behaves the same. Messages go through systemd-python's
``sd_notify`` when it is installed, else through a datagram socket of our own (the
protocol is one datagram of newline-separated ``KEY=value`` lines). A notify socket that
has gone away is logged once, never raised: systemd's bookkeeping must not stop captions.

The watchdog is fed by the supervisor, and only when every worker is alive and has made
progress recently (``Worker.heartbeat``) — never from a timer of its own, or a hung
pipeline would be kept alive forever.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

try:  # pragma: no branch - depends on the installation
    from systemd import daemon as _sd_daemon
except ImportError:  # pragma: no cover - systemd-python is a dependency; keep running
    _sd_daemon = None


def _send_raw(path: str, message: str) -> None:
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(address)
        s.sendall(message.encode())


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.socket_path = env.get("NOTIFY_SOCKET", "")
        self.enabled = bool(self.socket_path)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_usec = int(usec) if usec.isdigit() and mine else 0
        self._failed = False
        self._last_status = ""
        self.sent: list[str] = []  # what was sent, newest last (bounded), for status pages
        self._use_library = _sd_daemon is not None and env is os.environ

    @property
    def last_status(self) -> str:
        """The STATUS= text last sent (with READY or alone): what systemd shows now."""
        return self._last_status

    @property
    def watchdog_interval(self) -> float | None:
        """Send WATCHDOG=1 this often (half the configured timeout); None: no watchdog."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, *fields: str) -> bool:
        if not self.enabled or not fields:
            return False
        message = "\n".join(fields)
        try:
            if self._use_library:
                ok = bool(_sd_daemon.notify(message))  # type: ignore[union-attr]
            else:
                _send_raw(self.socket_path, message)
                ok = True
        except OSError as exc:
            ok = False
            if not self._failed:
                log.warning("cannot notify systemd at %s: %s", self.socket_path, exc)
        self._failed = not ok
        if ok:
            self.sent.append(message)
            del self.sent[:-50]
        return ok

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=Reloading the configuration…")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=Stopping…")
