"""Captions for other programs: newline-delimited JSON on a local Unix stream socket.

The protocol is documented in docs/socket-protocol.md. Everything runs on the output's
worker thread: sockets are non-blocking, ``handle`` encodes an event once and appends it to
every client's outgoing buffer, and ``idle`` (every 50 ms) accepts new clients, flushes what
the kernel would not take at once and reads (and discards) what clients send. A client
that stops reading is cut once its buffer passes ``client_buffer``, after a last notice,
and nobody else notices.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import logging
import os
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from edgecap import __version__
from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.daemon.status import StatusSnapshot
from edgecap.outputs.base import OutputEvent, OutputUnavailable

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
READ_CHUNK = 65536
CLOSE_GRACE = 2.0  # seconds a client cut as slow has to take its notice


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def caption_message(line: CaptionLine) -> dict:
    translations = []
    if line.translation:
        translations.append(
            {
                "language": line.translation_language,
                "text": line.translation,
                "final": line.translation_final,
            }
        )
    return {
        "type": "caption",
        "id": f"c{line.seq}",
        "seq": line.seq,
        "final": line.final,
        "text": line.text,
        "language": line.language,
        "speaker": line.speaker,
        "start": None if line.start is None else round(line.start, 3),
        "end": None if line.end is None else round(line.end, 3),
        "translations": translations,
    }


def status_message(snap: StatusSnapshot) -> dict:
    return {
        "type": "status",
        "summary": snap.summary(),
        "parts": {n: {"state": p.state, "detail": p.detail} for n, p in snap.parts.items()},
        "counters": dict(snap.counters),
    }


def gap_message(loss: AudioLoss) -> dict:
    return {
        "type": "gap",
        "seconds": round(loss.seconds, 3),
        "start": loss.start,
        "end": loss.end,
        "reason": loss.reason,
    }


@dataclass
class _Client:
    sock: socket.socket
    out: bytearray = field(default_factory=bytearray)
    eof: bool = False  # it sent EOF: it may still read (a half-close), it will not write
    closing_since: float | None = None  # cut as slow: only the notice is left to send


class SocketOutput:
    name = "socket"
    idle_interval = 0.05

    def __init__(
        self,
        path: Path,
        *,
        mode: int = 0o660,
        group: str = "",
        history: int = 20,
        client_buffer: int = 256 * 1024,
        max_clients: int = 32,
        service: str = "",
        languages: list[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.mode = mode
        self.group = group
        self.history = history
        self.client_buffer = client_buffer
        self.max_clients = max_clients
        self.hello = _line(
            {
                "type": "hello",
                "v": PROTOCOL_VERSION,
                "server": f"edgecap {__version__}",
                "service": service,
                "languages": languages or [],
            }
        )
        self._listener: socket.socket | None = None
        self._clients: dict[int, _Client] = {}
        self._finals: OrderedDict[int, bytes] = OrderedDict()  # seq → newest final message
        self._provisional: tuple[int, bytes] | None = None
        self._status: bytes | None = None
        # figures (read by the supervisor for status)
        self.clients_served = 0
        self.clients_dropped_slow = 0
        self.clients_refused = 0
        self.bytes_sent = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    # --- Output -----------------------------------------------------------------------
    def open(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            self._remove_stale()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            listener.bind(str(self.path))
            listener.listen(16)  # at once: a client that sees the file can connect
            os.chmod(self.path, self.mode)
            if self.group:
                try:
                    gid = grp.getgrnam(self.group).gr_gid
                except KeyError:
                    listener.close()
                    self.path.unlink(missing_ok=True)
                    raise OutputUnavailable(f"no such group: {self.group}") from None
                os.chown(self.path, -1, gid)
            listener.setblocking(False)
        except OSError as exc:
            raise OutputUnavailable(f"cannot serve {self.path}: {exc.strerror or exc}") from None
        self._listener = listener
        log.info("captions served on %s", self.path)

    def _remove_stale(self) -> None:
        if not self.path.exists() and not self.path.is_symlink():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # nobody listens: left over from a crash
            return
        finally:
            probe.close()
        raise OutputUnavailable(f"another program already serves {self.path}")

    def handle(self, event: OutputEvent) -> None:
        if isinstance(event, CaptionLine):
            data = _line(caption_message(event))
            if event.final:
                self._finals[event.seq] = data
                self._finals.move_to_end(event.seq)
                while len(self._finals) > self.history:
                    self._finals.popitem(last=False)
                if self._provisional and self._provisional[0] == event.seq:
                    self._provisional = None
            else:
                self._provisional = (event.seq, data)
        elif isinstance(event, AudioLoss):
            data = _line(gap_message(event))
        elif isinstance(event, StatusSnapshot):
            data = _line(status_message(event))
            self._status = data
        else:
            return
        for fd in list(self._clients):
            self._queue(fd, data)
        self.idle(0.0)

    def idle(self, now: float) -> None:
        self._accept()
        for fd in list(self._clients):
            self._read(fd)
            self._flush(fd)
            client = self._clients.get(fd)
            if client is None or client.closing_since is None:
                continue
            if not client.out or time.monotonic() - client.closing_since > CLOSE_GRACE:
                self._drop(fd)

    def close(self) -> None:
        bye = _line({"type": "bye"})
        for fd in list(self._clients):
            client = self._clients[fd]
            with contextlib.suppress(OSError):
                client.sock.setblocking(True)
                client.sock.settimeout(0.2)
                client.sock.sendall(bytes(client.out[:65536]) + bye)
            self._drop(fd)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                self.path.unlink()

    # --- clients ----------------------------------------------------------------------
    def _accept(self) -> None:
        if self._listener is None:
            return
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                raise OutputUnavailable(f"socket {self.path} failed: {exc}") from None
            sock.setblocking(False)
            if len(self._clients) >= self.max_clients:
                self.clients_refused += 1
                with contextlib.suppress(OSError):
                    sock.send(_line({"type": "error", "error": "too_many_clients"}))
                sock.close()
                continue
            fd = sock.fileno()
            self._clients[fd] = _Client(sock)
            self.clients_served += 1
            greeting = self.hello + b"".join(self._finals.values())
            if self._provisional is not None:
                greeting += self._provisional[1]
            if self._status is not None:
                greeting += self._status
            self._queue(fd, greeting)

    def _queue(self, fd: int, data: bytes) -> None:
        client = self._clients.get(fd)
        if client is None:
            return
        if client.closing_since is not None:
            return
        client.out += data
        self._flush(fd)
        if fd in self._clients and len(client.out) > self.client_buffer:
            self._cut_slow(client)

    def _cut_slow(self, client: _Client) -> None:
        """Keep the rest of a line already begun (the client must never see half a JSON
        object), drop every later line, and leave the notice as the last thing to send."""
        self.clients_dropped_slow += 1
        log.warning("caption socket: a client stopped reading; disconnecting it")
        begun = client.out.find(b"\n") + 1
        del client.out[begun:]
        client.out += _line(
            {
                "type": "error",
                "error": "slow_client",
                "message": f"more than {self.client_buffer} bytes unread; disconnected",
            }
        )
        client.closing_since = time.monotonic()

    def _flush(self, fd: int) -> None:
        client = self._clients.get(fd)
        if client is None or not client.out:
            return
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        del client.out[:sent]
        self.bytes_sent += sent

    def _read(self, fd: int) -> None:
        """Input from clients means nothing: read it so it cannot pile up, and notice EOF."""
        client = self._clients.get(fd)
        if client is None or client.eof:
            return
        for _ in range(16):  # bounded work per call, whatever a client sends
            try:
                data = client.sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    self._drop(fd)
                return
            if not data:
                # Gone, or only half-closed: the next send tells (EPIPE drops it).
                client.eof = True
                return

    def _drop(self, fd: int) -> None:
        client = self._clients.pop(fd, None)
        if client is not None:
            with contextlib.suppress(OSError):
                client.sock.close()
