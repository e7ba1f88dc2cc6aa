"""Connection: one TLS WebSocket, written by the link thread and read by its reader thread.

The stress test sends bursts of audio as fast as the socket takes them while the emulator
answers every message, so the reader is reading while the link is writing. Both go through
one TLS connection, and OpenSSL does not allow reads and writes of one connection from two
threads at once: before they were serialized, a few connections in a hundred ended right
after the burst with a made-up "Connection to remote host was lost" (bench/link.py saw 5-6
spurious outages in 400 replays).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import pytest

from edgecap.config.secrets import SecretValue
from edgecap.link.connection import Closed, Connection, Message, SendFailed, tls_context
from edgecap.services.soniox import SonioxCodec
from tests.emulators.soniox import SonioxEmulator, noise_pcm
from tests.link.harness import soniox_config

KEY = SecretValue("test", "test-key")


@pytest.fixture
def emu(tmp_path: Path):
    # lag 0: a result message for every audio message, at once
    with SonioxEmulator(tmp_path, api_key="test-key", lag_ms=0, ping_interval=0.05) as e:
        yield e


def open_connection(emu: SonioxEmulator, number: int, inbox: queue.Queue) -> Connection:
    codec = SonioxCodec(soniox_config(emu.url))
    conn = Connection(number, codec.handshake(KEY), inbox, tls=tls_context(Path(emu.ca_file)))
    conn.open()
    for out in codec.start():
        conn.send(out)
    return conn


def test_reads_and_writes_at_once_never_break_the_connection(emu: SonioxEmulator) -> None:
    pcm = noise_pcm(4000, seed=3)  # 40 messages of 100 ms, each answered by the emulator
    chunks = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]
    codec = SonioxCodec(soniox_config(emu.url))
    endings: list[str] = []
    answered = 0
    for number in range(1, 61):
        inbox: queue.Queue = queue.Queue(maxsize=1000)
        conn = open_connection(emu, number, inbox)
        try:
            for chunk in chunks:
                for out in codec.audio(chunk):
                    conn.send(out)
            deadline = time.monotonic() + 5
            got = 0
            while got < len(chunks) and time.monotonic() < deadline:
                try:
                    item = inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                if isinstance(item, Message):
                    got += 1
                elif isinstance(item, Closed):
                    endings.append(f"connection {number}: {item.reason or item.code}")
                    break
            answered += got
        except SendFailed as exc:
            endings.append(f"connection {number}: send failed: {exc}")
        finally:
            assert conn.close(timeout=2.0), "the reader did not end"
    assert endings == []
    assert answered == 60 * len(chunks)  # every message answered, none lost or doubled


def test_a_send_is_not_held_up_by_a_quiet_reader(emu: SonioxEmulator) -> None:
    """The reader holds the I/O lock only while bytes are there to read: with nothing
    coming in, a send goes out at once (not after a read timeout)."""
    inbox: queue.Queue = queue.Queue(maxsize=100)
    conn = open_connection(emu, 1, inbox)
    codec = SonioxCodec(soniox_config(emu.url))
    try:
        time.sleep(0.3)
        waits = []
        for _ in range(20):
            t = time.monotonic()
            conn.send(codec.keepalive())
            waits.append(time.monotonic() - t)
            time.sleep(0.03)
        assert max(waits) < 0.1, waits
    finally:
        assert conn.close(timeout=2.0)


def test_close_ends_the_reader_while_it_waits(emu: SonioxEmulator) -> None:
    inbox: queue.Queue = queue.Queue(maxsize=100)
    conn = open_connection(emu, 7, inbox)
    before = {t.name for t in threading.enumerate()}
    assert "edgecap-link-reader-7" in before
    t = time.monotonic()
    assert conn.close(timeout=2.0)
    assert time.monotonic() - t < 1.0
    assert "edgecap-link-reader-7" not in {t.name for t in threading.enumerate()}


def test_a_graceful_close_says_goodbye_with_a_close_frame(emu: SonioxEmulator) -> None:
    inbox: queue.Queue = queue.Queue(maxsize=100)
    conn = open_connection(emu, 5, inbox)
    assert conn.close(timeout=2.0, code=1000)
    assert emu.wait_for(lambda: len(emu.sessions) == 1 and emu.sessions[0].done, 3)
    assert emu.sessions[0].client_close_code == 1000
    # a plain close (a session given up) just ends the connection
    conn = open_connection(emu, 6, inbox)
    assert conn.close(timeout=2.0)
    assert emu.wait_for(lambda: len(emu.sessions) == 2 and emu.sessions[1].done, 3)
    assert emu.sessions[1].client_close_code is None


def test_the_reader_hands_over_frames_as_they_came(emu: SonioxEmulator) -> None:
    """No parsing on the reader thread: the link gets the service's text as it was sent."""
    inbox: queue.Queue = queue.Queue(maxsize=100)
    conn = open_connection(emu, 8, inbox)
    codec = SonioxCodec(soniox_config(emu.url))
    try:
        for out in codec.audio(noise_pcm(100, seed=1)):
            conn.send(out)
        item = inbox.get(timeout=3)
        assert isinstance(item, Message) and item.conn == 8
        assert isinstance(item.data, str)
        assert emu.sessions[0].sent[0] == json.loads(item.data)
    finally:
        assert conn.close(timeout=2.0)
