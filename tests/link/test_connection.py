"""Connection: one TLS WebSocket, written and read by the link's one thread (no reader
thread: the link selects on ``fileno()`` and calls ``read()``).

The stress test sends bursts of audio while the emulator answers every message, and reads
between the bursts: every answer arrives, none doubled, and no connection ends for nothing.
(With a reader thread, reads and writes of one TLS connection from two threads had to be
serialized: before they were, a few connections in a hundred ended right after a burst with
a made-up "Connection to remote host was lost". One thread cannot do that.)
"""

from __future__ import annotations

import json
import select
import threading
import time
from pathlib import Path

import pytest

from edgecap.config.secrets import SecretValue
from edgecap.link.connection import (
    READ_SLICE,
    SEND_ROOM,
    Closed,
    Connection,
    InboxItem,
    Message,
    SendFailed,
    tls_context,
)
from edgecap.services.codec import Outgoing
from edgecap.services.soniox import SonioxCodec
from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.soniox import SessionPlan, SonioxEmulator, noise_pcm
from tests.link.harness import proxied, soniox_config

KEY = SecretValue("test", "test-key")


@pytest.fixture
def emu(tmp_path: Path):
    # lag 0: a result message for every audio message, at once
    with SonioxEmulator(tmp_path, api_key="test-key", lag_ms=0, ping_interval=0.05) as e:
        yield e


def open_connection(emu: SonioxEmulator, number: int) -> Connection:
    codec = SonioxCodec(soniox_config(emu.url))
    conn = Connection(number, codec.handshake(KEY), tls=tls_context(Path(emu.ca_file)))
    conn.open()
    for out in codec.start():
        conn.send(out)
    return conn


def read_for(conn: Connection, seconds: float, until: int | None = None) -> list[InboxItem]:
    """What the link's loop does: sleep on the socket, read what is there."""
    items: list[InboxItem] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (until is None or len(items) < until):
        fd = conn.fileno()
        if fd is None:
            break
        if conn.buffered or select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            items.extend(conn.read())
    return items


def test_sends_and_reads_on_one_thread_never_break_the_connection(emu: SonioxEmulator) -> None:
    pcm = noise_pcm(4000, seed=3)  # 40 messages of 100 ms, each answered by the emulator
    chunks = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]
    codec = SonioxCodec(soniox_config(emu.url))
    endings: list[str] = []
    answered = 0
    for number in range(1, 31):
        conn = open_connection(emu, number)
        got: list[InboxItem] = []
        try:
            for i, chunk in enumerate(chunks):
                for out in codec.audio(chunk):
                    conn.send(out)
                if i % 5 == 4:  # read between bursts: answers pile up meanwhile
                    got.extend(conn.read())
            got.extend(read_for(conn, 5, until=len(chunks) - len(got)))
        except SendFailed as exc:
            endings.append(f"connection {number}: send failed: {exc}")
        finally:
            conn.close(timeout=2.0)
        endings += [
            f"connection {number}: {c.reason or c.code}" for c in got if isinstance(c, Closed)
        ]
        answered += sum(isinstance(m, Message) for m in got)
    assert endings == []
    assert answered == 30 * len(chunks)  # every message answered, none lost or doubled


def test_a_read_takes_what_is_there_and_never_waits_for_more(emu: SonioxEmulator) -> None:
    """Nothing coming in: read() returns at once (not after a read timeout), and a send
    goes out at once too."""
    conn = open_connection(emu, 1)
    codec = SonioxCodec(soniox_config(emu.url))
    try:
        assert read_for(conn, 0.3) == []  # the emulator pings every 50 ms: answered
        reads, sends = [], []
        for _ in range(20):
            t = time.monotonic()
            assert conn.read() == []  # pings are answered and not returned
            reads.append(time.monotonic() - t)
            t = time.monotonic()
            conn.send(codec.keepalive())
            sends.append(time.monotonic() - t)
            assert read_for(conn, 0.03) == []
        assert max(reads) < READ_SLICE, reads
        assert max(sends) < 0.1, sends
        assert conn.last_received > conn.opened_at  # the emulator's pings were read
    finally:
        conn.close(timeout=2.0)


def test_a_connection_has_no_thread_of_its_own(emu: SonioxEmulator) -> None:
    def ours() -> set[str]:  # (the emulator's threads are in this process too)
        return {t.name for t in threading.enumerate() if t.name.startswith("edgecap")}

    before = ours()
    conn = open_connection(emu, 7)
    assert emu.wait_for(lambda: len(emu.sessions) == 1, 3)
    assert ours() == before
    t = time.monotonic()
    conn.close(timeout=2.0)
    assert time.monotonic() - t < 1.0
    assert conn.fileno() is None and conn.read() == []


def test_a_graceful_close_says_goodbye_with_a_close_frame(emu: SonioxEmulator) -> None:
    conn = open_connection(emu, 5)
    conn.close(timeout=2.0, code=1000)
    assert emu.wait_for(lambda: len(emu.sessions) == 1 and emu.sessions[0].done, 3)
    assert emu.sessions[0].client_close_code == 1000
    # a plain close (a session given up) just ends the connection
    conn = open_connection(emu, 6)
    conn.close(timeout=2.0)
    assert emu.wait_for(lambda: len(emu.sessions) == 2 and emu.sessions[1].done, 3)
    assert emu.sessions[1].client_close_code is None


def test_frames_are_returned_as_they_came(emu: SonioxEmulator) -> None:
    """No parsing in the connection: the link gets the service's text as it was sent."""
    conn = open_connection(emu, 8)
    codec = SonioxCodec(soniox_config(emu.url))
    try:
        for out in codec.audio(noise_pcm(100, seed=1)):
            conn.send(out)
        (item,) = read_for(conn, 3, until=1)
        assert isinstance(item, Message) and item.conn == 8
        assert isinstance(item.data, str)
        assert emu.sessions[0].sent[0] == json.loads(item.data)
    finally:
        conn.close(timeout=2.0)


def test_the_end_of_the_connection_is_the_last_item(emu: SonioxEmulator) -> None:
    """The service ends the session (an error, then a close frame): the socket becomes
    readable, read() returns the error message and then the ending, in that order, and the
    connection has nothing more to wait on."""
    emu.plan(SessionPlan(error=503, close_code=1011))
    conn = open_connection(emu, 9)
    try:
        items = read_for(conn, 3)
        assert [type(i) for i in items] == [Message, Closed], items
        assert "503" in str(items[0].data)  # type: ignore[union-attr]
        assert items[1] == Closed(9, 1011, items[1].reason)  # type: ignore[union-attr]
        assert conn.fileno() is None and conn.read() == []
    finally:
        conn.close(timeout=2.0)


def test_a_text_frame_that_is_not_utf8_ends_the_connection(tmp_path: Path) -> None:
    """RFC 6455 §8.1: invalid UTF-8 in a text frame fails the connection. (The check is
    ours, in C: websocket-client's own runs in Python byte by byte.) A plain ws:// server
    on a raw socket, as no WebSocket library sends such a frame."""
    import base64
    import hashlib
    import socket

    from edgecap.services.codec import Handshake

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        peer, _ = server.accept()
        with peer:
            head = b""
            while b"\r\n\r\n" not in head:
                head += peer.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            magic = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
            accept = base64.b64encode(hashlib.sha1(key + magic).digest())
            peer.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            good = b'{"ok": 1}'
            peer.sendall(bytes([0x81, len(good)]) + good + bytes([0x81, 3]) + b"a\xff\xfe")
            time.sleep(0.5)

    thread = threading.Thread(target=serve)
    thread.start()
    conn = Connection(1, Handshake(f"ws://127.0.0.1:{port}/", ()), tls=tls_context(None))
    try:
        conn.open()
        items = read_for(conn, 3)
        assert items[0] == Message(1, '{"ok": 1}')
        assert items[1:] == [Closed(1, None, "invalid UTF-8 in a text frame")]
        assert conn.fileno() is None
    finally:
        conn.close()
        thread.join(5)
        server.close()


def test_has_room_follows_the_kernels_send_queue(emu: SonioxEmulator) -> None:
    """A stalled peer: the kernel's send queue fills, and ``has_room`` says so before a send
    would wait (the producer thread relies on it never to wait on the network)."""
    with FaultProxy(("127.0.0.1", emu.port)) as proxy:
        codec = SonioxCodec(soniox_config(proxied(emu, proxy)))
        conn = Connection(
            1, codec.handshake(KEY), tls=tls_context(Path(emu.ca_file)), connect_timeout=2.0
        )
        conn.open()
        try:
            assert conn.has_room()
            proxy.stall()
            payload = Outgoing(b"\0" * SEND_ROOM, "audio")
            sends = 0
            while conn.has_room():
                began = time.monotonic()
                conn.send(payload)  # the kernel takes it at once: has_room said so
                assert time.monotonic() - began < 0.5
                sends += 1
                assert sends < 2000, "the send queue never filled"
            assert sends >= 1
            # it said so before the kernel's buffer was full: half is kept for its overhead
            assert not conn.has_room()
        finally:
            conn.close(timeout=0.5)
    assert not conn.has_room()  # closed


def test_masking_keys_come_from_the_pool_and_never_repeat_within_it() -> None:
    from edgecap.link.connection import _MaskKeys

    keys = _MaskKeys()
    drawn = [keys(4) for _ in range(3000)]  # three pages: the pool is refilled
    assert all(len(k) == 4 for k in drawn)
    # 4 random bytes: a repeat among 3000 is possible but a 1-in-1400 chance; all equal
    # (a constant key) or a pool handed out twice would show as many repeats
    assert len(set(drawn)) >= 2990
    assert keys(10_000) and len(keys(10_000)) == 10_000  # longer than a page
