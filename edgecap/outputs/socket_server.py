"""Captions for other programs: newline-delimited JSON on a local Unix stream socket.

The wire protocol (version 2) is documented in docs/socket-protocol.md; the functions
``*_message`` below build its objects. Synthesized speech (spoken translations) is not sent:
the protocol carries text.

Threads: none of our own. Everything runs on the OutputWorker's thread and every socket is
non-blocking. ``handle`` encodes an event once, appends the bytes to each client's outgoing
buffer and tries one non-blocking ``send`` per client, so a caption normally reaches every
reader within the same call. Between events the worker sleeps in ``wait_io``: one
``poll()`` on the listening socket, the clients (for input, hang-ups, and room for what
the kernel would not take at once), a watch on the socket's directory and the worker's
wake-up descriptor (an event or a stop), with no timeout unless a deadline is near (a slow
client's notice grace). When it returns, ``idle`` asks ``poll(0)`` which sockets are ready:
it accepts new clients, flushes backlogs, reads and throws away whatever clients send, and
drops clients that hung up. A client is served the moment its socket is ready, and an idle
server costs no CPU at all.

``inline``: handle() never blocks, so the worker may call it on the publisher's thread while
its own thread sleeps in ``wait_io`` (worker.py): a caption then reaches the readers with no
thread woken at all. The worker's lock keeps every call on one thread at a time, so there
are still no locks here. The poll object is shared with that sleeping thread: handle() only
changes its registrations (allowed while another thread polls; the running poll keeps the
set it started with), and ``wants_thread`` tells the worker to wake its thread to poll the
new set — a client whose backlog now needs POLLOUT, or one that was dropped.

A client that stops reading is cut once more than ``client_buffer`` bytes wait for it: the
line already begun is completed, everything after it is dropped, an ``error`` notice is the
last thing it is sent (best effort, within ``_NOTICE_GRACE``), and then it is closed. The
others never wait for it.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import logging
import math
import os
import select
import socket
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecap import __version__
from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.schema import SocketConfig
from edgecap.outputs.base import TEXT, OutputEvent, OutputUnavailable
from edgecap.outputs.client_history import CaptionHistory, poll_with_wake
from edgecap.outputs.dirwatch import DirWatch
from edgecap.runtime.logsetup import fields
from edgecap.runtime.status import StatusSnapshot

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 2

_READ_CHUNK = 65536
_READS_PER_TURN = 16  # at most 1 MiB of client input is read (and dropped) per client per turn
_NOTICE_GRACE = 2.0  # seconds a client cut as slow has to take its notice
_CLOSE_BUDGET = 0.5  # seconds close() spends getting `bye` out to everyone
# Seconds between checks that the socket file is still ours, where its directory cannot be
# watched (without inotify); with a watch, it is checked when the directory changes.
_PATH_CHECK_EVERY = 1.0
_PATH_RETRY = 30.0  # seconds before trying again to serve a path someone else holds now
_ACCEPT_PAUSE = 1.0  # seconds without accepting after the process ran out of descriptors
_PROBE_TIMEOUT = 0.3  # seconds to wait on another server when the path is taken
_BACKLOG = 128  # connections not accepted yet; a full backlog blocks connect()

_HANGUP = select.POLLHUP | select.POLLERR | select.POLLNVAL
_FD_SHORTAGE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


# --- messages ---------------------------------------------------------------------------
def encode(message: dict[str, Any]) -> bytes:
    """One protocol line. Unicode stays readable (``ensure_ascii=False``); a lone surrogate
    cannot break the encoding, and JSON never carries NaN (see ``_number``)."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "replace") + b"\n"


def _number(value: float | None, digits: int = 3) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def hello_message(
    service: str,
    languages: list[str],
    targets: list[str] | None = None,
    translation_only: bool = False,
) -> dict[str, Any]:
    return {
        "type": "hello",
        "v": PROTOCOL_VERSION,
        "server": f"edgecap {__version__}",
        "service": service,
        "languages": list(languages),
        "targets": list(targets or ()),
        "translation_only": translation_only,
    }


def caption_message(line: CaptionLine) -> dict[str, Any]:
    """A caption line. ``translations`` is a list, one entry per language in the board's
    order (the configured targets first): a list keeps that order for every JSON decoder,
    and it is the shape version 1 already had, so v1 clients read it unchanged."""
    translations = [
        {"language": language or None, "text": text, "final": line.translation_final}
        for language, text in line.translations.items()
    ]
    return {
        "type": "caption",
        "id": f"c{line.seq}",
        "seq": line.seq,
        "final": line.final,
        "done": line.done,
        "text": line.text,
        "language": line.language,
        "language_confidence": _number(line.language_confidence),
        "translations": translations,
        "speaker": line.speaker,
        "start": _number(line.start),
        "end": _number(line.end),
        "offline": line.offline,
    }


def status_message(snap: StatusSnapshot) -> dict[str, Any]:
    counters: dict[str, float | None] = {}
    for name, value in snap.counters.items():
        counters[name] = value if isinstance(value, int) else _number(value, 6)
    return {
        "type": "status",
        "summary": snap.summary(),
        "parts": {n: {"state": p.state, "detail": p.detail} for n, p in snap.parts.items()},
        "counters": counters,
    }


def gap_message(loss: AudioLoss) -> dict[str, Any]:
    return {
        "type": "gap",
        "seconds": _number(loss.seconds),
        "start": _number(loss.start),
        "end": _number(loss.end),
        "reason": loss.reason,
    }


def error_message(error: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": error, "message": message}


_BYE = encode({"type": "bye"})


# --- one connected client ---------------------------------------------------------------
class _Client:
    __slots__ = ("cut_at", "fd", "limit", "mask", "mid_line", "out", "reading", "sock")

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.out = bytearray()  # bytes not yet taken by the kernel
        self.limit = limit  # more than this pending: cut as slow
        self.reading = True  # False after it half-closed: it may still read, it will not write
        self.mid_line = False  # the last send ended inside a line
        self.cut_at: float | None = None  # cut as slow: only the notice is left to send
        self.mask = select.POLLIN  # what it is registered for in the poller


class SocketOutput:
    """The ``socket`` output. The counters below are plain attributes, safe to read from
    any thread (each is a single int, written by one thread at a time: the worker's, or a
    publisher's inline, under the worker's lock)."""

    name = "socket"
    takes = TEXT  # captions, losses and status; never synthesized speech
    inline = True  # handle() never blocks: it may run on the publisher's thread (base.py)

    def __init__(
        self,
        cfg: SocketConfig,
        *,
        service: str,
        languages: list[str],
        targets: list[str] | tuple[str, ...] = (),
        translation_only: bool = False,
        on_clients: Callable[[int], None] | None = None,
    ) -> None:
        """``languages``: the configured spoken languages; ``targets``: the translation
        target languages, in display order; ``translation_only``: lines carry translations
        and no transcript. All three are told to every client in ``hello``.
        ``on_clients``: called with the number of clients whenever it changes (on this
        output's thread, or on the publisher's when a caption is delivered inline: must be
        quick and never block)."""
        self.cfg = cfg
        self._on_clients = on_clients
        self.path = Path(cfg.path)
        self._hello = encode(hello_message(service, languages, list(targets), translation_only))
        self._listener: socket.socket | None = None
        self._file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file
        self._poller = select.poll()
        self._poll_changed = False  # registrations changed since wait_io began to poll
        self._clients: dict[int, _Client] = {}
        self._cut: list[_Client] = []
        self._scratch = bytearray(_READ_CHUNK)
        # What a new client is sent after hello; kept across close()/open().
        self._history = CaptionHistory(cfg.history)  # for clients that come mid-talk
        self._status: bytes | None = None
        self._dirwatch: DirWatch | None = None  # the socket's directory, while open
        self._next_path_check: float | None = None  # None: when the directory changes
        self._accept_at: float | None = None  # not accepting until then (no descriptors)
        self._path_warned = False
        self._shortage_warned = False
        # Counters (for the status board).
        self.clients = 0  # connected now (clients being cut are no longer counted)
        self.clients_served = 0  # accepted since start
        self.clients_refused = 0  # turned away: max_clients reached
        self.clients_dropped_slow = 0  # cut because they did not read
        self.bytes_sent = 0

    # --- Output -----------------------------------------------------------------------
    def open(self) -> None:
        self._listener = self._listen()
        self._poller.register(self._listener.fileno(), select.POLLIN)
        self._accept_at = None
        self._dirwatch = DirWatch.open(self.path.parent)
        if self._dirwatch is not None:
            self._poller.register(self._dirwatch.fileno(), select.POLLIN)
            self._next_path_check = None
        else:
            self._next_path_check = time.monotonic() + _PATH_CHECK_EVERY
        self._path_warned = False
        log.info("captions served on %s", self.path)

    def handle(self, event: OutputEvent) -> None:
        if isinstance(event, CaptionLine):
            data = encode(caption_message(event))
            self._history.remember(event, data)
        elif isinstance(event, AudioLoss):
            data = encode(gap_message(event))
        elif isinstance(event, StatusSnapshot):
            data = encode(status_message(event))
            self._status = data
        else:
            return
        for client in list(self._clients.values()):
            self._send(client, data)

    def wait_io(self, timeout: float | None, wake_fd: int) -> None:
        """Sleep in poll() until a socket or the directory watch is ready, ``wake_fd`` is
        readable, or ``timeout`` passed; idle() does the work."""
        self._poll_changed = False  # before the poll: it is about to see every change
        poll_with_wake(self._poller, timeout, wake_fd)

    @property
    def wants_thread(self) -> bool:
        """After an inline handle(): the sleeping poll watches a stale set (a client's
        backlog needs POLLOUT, or a client was dropped); the worker wakes it."""
        return self._poll_changed

    def wake_in(self, now: float) -> float | None:
        """The next deadline: a slow client's notice grace ending, accepting again after a
        shortage of descriptors, or a check of the socket's path (without a watch)."""
        due = [c.cut_at + _NOTICE_GRACE for c in self._cut if c.cut_at is not None]
        due += [t for t in (self._accept_at, self._next_path_check) if t is not None]
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def idle(self, now: float) -> None:
        # Our own clock: grace periods must not depend on what a caller passes.
        mono = time.monotonic()
        listener_fd = self._listener.fileno() if self._listener is not None else -1
        watch_fd = self._dirwatch.fileno() if self._dirwatch is not None else -1
        path_changed = False
        for fd, ready in self._poller.poll(0):
            if fd == listener_fd:
                self._accept()
                continue
            if fd == watch_fd:
                self._dirwatch.clear()  # type: ignore[union-attr]
                path_changed = True
                continue
            client = self._clients.get(fd)
            if client is None:
                continue
            if ready & _HANGUP:
                self._drop(client)  # gone for good (a half-close is not a hang-up)
                continue
            if ready & select.POLLIN:
                self._read(client)
            if ready & select.POLLOUT and client.fd in self._clients:
                self._write(client)
        if self._cut:
            for client in list(self._cut):
                if client.cut_at is not None and mono - client.cut_at >= _NOTICE_GRACE:
                    self._drop(client)
        if self._accept_at is not None and mono >= self._accept_at:
            self._accept_at = None
            if self._listener is not None:  # try the backlog again
                self._poller.register(self._listener.fileno(), select.POLLIN)
        due = self._next_path_check is not None and mono >= self._next_path_check
        if path_changed or due:
            if self._dirwatch is None:
                self._next_path_check = mono + _PATH_CHECK_EVERY
            elif due:
                self._next_path_check = None
            self._check_path()

    def close(self) -> None:
        """Say ``bye`` to every client (within ``_CLOSE_BUDGET``), close them all and remove
        the socket file if it is still ours."""
        if self._dirwatch is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(self._dirwatch.fileno())
            self._dirwatch.close()
            self._dirwatch = None
        self._close_listener()  # first: nobody new arrives while we say bye
        try:
            self._say_bye()
        except Exception:
            log.exception("caption socket: saying bye failed")
        for client in list(self._clients.values()):
            self._drop(client)

    # --- the listening socket -----------------------------------------------------------
    def _listen(self) -> socket.socket:
        """A listening socket at the configured path, with its mode and group applied."""
        path = self.path
        gid = self._group_id()
        self._make_parent(path.parent)
        self._clear_stale(path)
        sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            try:
                sock.bind(str(path))
            except OSError as exc:
                raise OutputUnavailable(f"cannot create {path}: {_why(exc)}") from None
            # Nobody can connect before listen(), so the mode and group are in place first.
            try:
                os.chmod(path, self.cfg.mode)
                if gid is not None:
                    os.chown(path, -1, gid)
                sock.listen(_BACKLOG)
                st = os.stat(path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    path.unlink()
                step = f"give it to group {self.cfg.group!r}" if gid is not None else "set it up"
                raise OutputUnavailable(f"cannot {step} ({path}): {_why(exc)}") from None
        except BaseException:
            sock.close()
            raise
        self._file_id = (st.st_dev, st.st_ino)
        return sock

    def _group_id(self) -> int | None:
        name = self.cfg.group.strip()
        if not name:
            return None
        if name.isdigit():
            return int(name)
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            raise OutputUnavailable(
                f"[socket] group {name!r}: no such group on this system"
            ) from None

    @staticmethod
    def _make_parent(parent: Path) -> None:
        if parent.is_dir():
            return
        try:
            parent.mkdir(parents=True, exist_ok=True)
            os.chmod(parent, 0o755)  # not left to the umask: group members must get through
        except OSError as exc:
            raise OutputUnavailable(f"cannot create {parent}: {_why(exc)}") from None

    def _clear_stale(self, path: Path) -> None:
        """Remove a socket file left by a run that ended without cleaning up; refuse when
        something still listens there, or when the path is not a socket at all."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OutputUnavailable(f"cannot check {path}: {_why(exc)}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise OutputUnavailable(
                f"{path} exists and is not a socket; not touching it (choose another "
                "[socket] path or remove that file)"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        probe.settimeout(_PROBE_TIMEOUT)
        try:
            probe.connect(str(path))
        except FileNotFoundError:
            return  # it went away meanwhile
        except ConnectionRefusedError:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            log.info("removed a stale caption socket %s (left by an earlier run)", path)
            return
        except (TimeoutError, BlockingIOError):
            probe.close()
            raise OutputUnavailable(
                f"another program is listening on {path} (busy, not answering); "
                "is another edgecap running?"
            ) from None
        except OSError as exc:
            probe.close()
            raise OutputUnavailable(f"cannot check whether {path} is in use: {_why(exc)}") from None
        try:
            who = _describe_peer(probe)
        finally:
            probe.close()
        raise OutputUnavailable(
            f"{who} is already serving on {path}; stop it or choose another [socket] path"
        )

    def _check_path(self) -> None:
        """The socket file is how clients find us. If it was removed or replaced (someone
        cleaned /run), make a new one; the clients already connected keep their streams."""
        try:
            st = os.lstat(self.path)
            ours = (st.st_dev, st.st_ino) == self._file_id
        except OSError:
            ours = False
        if ours or self._listener is None:
            return
        try:
            fresh = self._listen()
        except OutputUnavailable as exc:
            # Someone else may hold the path now; probing them costs up to _PROBE_TIMEOUT
            # of this thread, so look again only now and then.
            self._next_path_check = time.monotonic() + _PATH_RETRY
            if not self._path_warned:
                self._path_warned = True
                log.warning(
                    "caption socket %s was removed and cannot be made again: %s", self.path, exc
                )
            return
        with contextlib.suppress(KeyError, ValueError):
            self._poller.unregister(self._listener.fileno())
        self._listener.close()
        self._listener = fresh
        if self._accept_at is None:
            self._poller.register(fresh.fileno(), select.POLLIN)
        if self._dirwatch is not None:
            self._dirwatch.watch(self.path.parent)  # the directory may have been made anew
        self._path_warned = False
        log.warning("caption socket %s had been removed; it is served again", self.path)

    def _close_listener(self) -> None:
        if self._listener is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._poller.unregister(self._listener.fileno())
        self._listener.close()
        self._listener = None
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._file_id:  # never remove another server's
                self.path.unlink()
        except OSError:
            pass
        self._file_id = None

    # --- clients ------------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _FD_SHORTAGE:
                    # The connection waits in the backlog. The listener stays readable, so
                    # it leaves the poll for a while (else the thread would spin).
                    if not self._shortage_warned:
                        self._shortage_warned = True
                        log.warning("caption socket cannot accept a client: %s", _why(exc))
                    with contextlib.suppress(KeyError, ValueError):
                        self._poller.unregister(self._listener.fileno())
                    self._accept_at = time.monotonic() + _ACCEPT_PAUSE
                    return
                raise OutputUnavailable(f"caption socket {self.path} failed: {_why(exc)}") from None
            self._shortage_warned = False
            sock.setblocking(False)
            if self.clients >= self.cfg.max_clients:
                self.clients_refused += 1
                limit = self.cfg.max_clients
                note = encode(
                    error_message("too_many_clients", f"too many clients (limit {limit})")
                )
                with contextlib.suppress(OSError):
                    sock.send(note, socket.MSG_NOSIGNAL)
                _close_quietly(sock)
                log.warning(
                    "caption socket: a client was turned away (%d connected)",
                    self.clients,
                    **fields(output=self.name),
                )
                continue
            greeting = b"".join(
                [
                    self._hello,
                    *self._history.messages(),
                    *([self._status] if self._status is not None else []),
                ]
            )
            # The greeting does not count against the client's allowance (a long history
            # may be larger than client_buffer); once it has caught up, the limit is exact.
            client = _Client(sock, self.cfg.client_buffer + len(greeting))
            self._clients[client.fd] = client
            self._poller.register(client.fd, client.mask)
            self.clients += 1
            self.clients_served += 1
            self._clients_changed()
            self._send(client, greeting)

    def _clients_changed(self) -> None:
        if self._on_clients is not None:
            self._on_clients(self.clients)

    def _send(self, client: _Client, data: bytes) -> None:
        if client.cut_at is not None:
            return
        client.out += data
        self._write(client)
        if client.fd in self._clients and client.cut_at is None and len(client.out) > client.limit:
            self._cut_slow(client)

    def _write(self, client: _Client) -> None:
        if client.out:
            try:
                sent = client.sock.send(client.out, socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(client)  # it went away (EPIPE, ECONNRESET)
                return
            if sent:
                client.mid_line = client.out[sent - 1] != 0x0A
                del client.out[:sent]  # cheap: bytearray trims its front in place
                self.bytes_sent += sent
                if not client.out:
                    client.limit = self.cfg.client_buffer  # caught up: greeting allowance spent
        if client.cut_at is not None and not client.out:
            self._drop(client)  # the notice is out
            return
        self._watch(client)

    def _cut_slow(self, client: _Client) -> None:
        self.clients_dropped_slow += 1
        self.clients -= 1
        self._clients_changed()
        pending = len(client.out)
        # Finish the line the client already has the start of (it must never see half a
        # JSON object followed by something else), drop the rest, end with the notice.
        keep = client.out.find(b"\n") + 1 if client.mid_line else 0
        del client.out[keep:]
        client.out += encode(
            error_message(
                "slow_client",
                f"more than {self.cfg.client_buffer} bytes waited unread; disconnected",
            )
        )
        client.cut_at = time.monotonic()
        client.reading = False
        self._cut.append(client)
        log.warning(
            "caption socket: a client stopped reading (%d bytes waiting); disconnected it",
            pending,
            **fields(output=self.name),
        )
        self._write(client)

    def _read(self, client: _Client) -> None:
        """What clients send means nothing: read it so it cannot pile up, notice EOF."""
        for _ in range(_READS_PER_TURN):
            try:
                n = client.sock.recv_into(self._scratch)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(client)
                return
            if n == 0:
                # A half-close: the client still reads, it will not write any more.
                client.reading = False
                self._watch(client)
                return

    def _watch(self, client: _Client) -> None:
        mask = (select.POLLIN if client.reading else 0) | (select.POLLOUT if client.out else 0)
        if mask != client.mask:
            # Still registered with mask 0: poll always reports a hang-up.
            self._poller.modify(client.fd, mask)
            client.mask = mask
            self._poll_changed = True  # after the change (see wants_thread)

    def _drop(self, client: _Client) -> None:
        if self._clients.pop(client.fd, None) is None:
            return
        if client.cut_at is None:
            self.clients -= 1
            self._clients_changed()
        else:
            with contextlib.suppress(ValueError):
                self._cut.remove(client)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._poller.unregister(client.fd)
        self._poll_changed = True
        _close_quietly(client.sock)

    def _say_bye(self) -> None:
        for client in list(self._clients.values()):
            if client.cut_at is None:
                client.out += _BYE
                self._write(client)
        deadline = time.monotonic() + _CLOSE_BUDGET
        while any(c.out for c in self._clients.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for fd, ready in self._poller.poll(max(1, int(left * 1000))):
                client = self._clients.get(fd)
                if client is None:
                    continue
                if ready & _HANGUP:
                    self._drop(client)
                elif ready & select.POLLOUT:
                    self._write(client)
                elif ready & select.POLLIN:
                    self._read(client)

    # --- history for new clients --------------------------------------------------------


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _close_quietly(sock: socket.socket) -> None:
    """Close a client. What it sent and we never read is read first (bounded): closing a
    Unix socket with unread input makes the peer's next read fail with ECONNRESET instead
    of returning the last lines and then EOF."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        for _ in range(_READS_PER_TURN):
            if not sock.recv(_READ_CHUNK):
                break
    with contextlib.suppress(OSError):
        sock.close()


def _describe_peer(sock: socket.socket) -> str:
    """Who listens at the other end: 'another edgecap (edgecap 0.1.0, pid 812)'."""
    pid = None
    with contextlib.suppress(OSError, struct.error):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0] or None
    server = None
    with contextlib.suppress(OSError, ValueError):
        first = sock.recv(4096).split(b"\n", 1)[0]
        hello = json.loads(first)
        if isinstance(hello, dict) and hello.get("type") == "hello":
            server = str(hello.get("server") or "edgecap")
    where = f"pid {pid}" if pid else "pid unknown"
    if server is not None:
        return f"another edgecap ({server}, {where})"
    return f"another program ({where})"
