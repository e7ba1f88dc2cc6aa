"""FaultProxy forwards bytes faithfully and injects each fault it promises."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import websocket

from .fault_proxy import FaultProxy
from .soniox import SonioxEmulator, expected_words, noise_pcm

ProxyFactory = Callable[[tuple[str, int]], FaultProxy]


class EchoServer:
    """A TCP echo server on 127.0.0.1 run by one owned thread (joined by close())."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.address = self._listener.getsockname()
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="echo-server")
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        pending: dict[socket.socket, bytearray] = {}
        try:
            while not self._stop.is_set():
                for key, events in sel.select(0.02):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        conn, _ = sock.accept()
                        conn.setblocking(False)
                        pending[conn] = bytearray()
                        sel.register(conn, selectors.EVENT_READ)
                        continue
                    try:
                        if events & selectors.EVENT_READ:
                            data = sock.recv(65536)
                            if not data:
                                raise ConnectionError("eof")
                            self.received += len(data)
                            pending[sock] += data
                        if pending[sock]:
                            sent = sock.send(pending[sock])
                            del pending[sock][:sent]
                    except BlockingIOError:
                        pass
                    except OSError:
                        sel.unregister(sock)
                        del pending[sock]
                        sock.close()
                        continue
                    wanted = selectors.EVENT_READ
                    if pending[sock]:
                        wanted |= selectors.EVENT_WRITE
                    sel.modify(sock, wanted)
        finally:
            for sock in pending:
                sock.close()
            sel.close()
            self._listener.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer, fault_proxy_factory: ProxyFactory) -> FaultProxy:
    return fault_proxy_factory(echo.address)


@contextlib.contextmanager
def client(proxy: FaultProxy, timeout: float = 2.0) -> Iterator[socket.socket]:
    sock = socket.create_connection(proxy.address, timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def assert_reset_at_once(proxy: FaultProxy) -> None:
    """The TCP handshake completes (the kernel accepts), then the proxy resets: depending on
    timing connect() itself or the first recv() reports it."""
    with pytest.raises(ConnectionResetError), client(proxy) as sock:
        sock.recv(1)


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_bytes_pass_both_ways_and_eof_is_forwarded(echo: EchoServer, proxy: FaultProxy) -> None:
    payload = os.urandom(300_000)
    with client(proxy) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        assert (proxy.accepted, proxy.live) == (1, 1)
        assert proxy.bytes_up == proxy.bytes_down == echo.received == len(payload)
        sock.shutdown(socket.SHUT_WR)  # the echo server closes on EOF; so does the proxy
        assert sock.recv(1) == b""
        assert wait_until(lambda: proxy.live == 0)


def test_tls_websocket_passes_through_untouched(
    soniox_factory: Callable[..., SonioxEmulator], fault_proxy_factory: ProxyFactory
) -> None:
    emu = soniox_factory()
    proxy = fault_proxy_factory(("127.0.0.1", emu.port))
    url = f"wss://127.0.0.1:{proxy.port}/transcribe-websocket"
    ws = websocket.create_connection(
        url,
        header=["Authorization: Bearer test-key"],
        sslopt={"ca_certs": emu.ca_file},
        suppress_origin=True,
        timeout=5,
    )
    try:
        start = {"model": "stt-rt-v5", "audio_format": "pcm_s16le"}
        ws.send(json.dumps({**start, "sample_rate": 16000, "num_channels": 1}))
        pcm = noise_pcm(600, seed=1)
        ws.send_binary(pcm)
        assert json.loads(ws.recv())["total_audio_proc_ms"] == 600
        ws.send("")
        assert json.loads(ws.recv())["tokens"]
        assert json.loads(ws.recv())["finished"] is True
    finally:
        ws.shutdown()
    assert emu.sessions[0].final_words == expected_words(pcm)
    assert proxy.bytes_up > len(pcm) and proxy.bytes_down > 0


def test_cut_resets_every_live_connection(proxy: FaultProxy) -> None:
    with client(proxy) as a, client(proxy) as b:
        for sock in (a, b):
            sock.sendall(b"hi")
            assert recv_exactly(sock, 2) == b"hi"
        assert proxy.live == 2
        proxy.cut()
        assert proxy.live == 0
        for sock in (a, b):
            with pytest.raises(ConnectionResetError):
                sock.recv(1)
    with client(proxy) as c:  # a cut is not sticky
        c.sendall(b"again")
        assert recv_exactly(c, 5) == b"again"


def test_refuse_resets_new_connections_for_a_while(proxy: FaultProxy) -> None:
    with client(proxy) as old:
        old.sendall(b"1")  # a round trip: the proxy has accepted it before the refusal
        assert recv_exactly(old, 1) == b"1"
        proxy.refuse(0.4)
        began = time.monotonic()
        for _ in range(3):
            assert_reset_at_once(proxy)
        old.sendall(b"old")  # connections made before are not affected
        assert recv_exactly(old, 3) == b"old"
    assert (proxy.refused, proxy.accepted) == (3, 1)
    time.sleep(max(0.0, 0.45 - (time.monotonic() - began)))
    with client(proxy) as sock:
        sock.sendall(b"ok")
        assert recv_exactly(sock, 2) == b"ok"
    assert proxy.refused == 3


def test_stall_holds_everything_open_until_resume(echo: EchoServer, proxy: FaultProxy) -> None:
    with client(proxy) as sock:
        sock.sendall(b"before")
        assert recv_exactly(sock, 6) == b"before"
        proxy.stall()
        sock.sendall(b"during")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        assert (proxy.bytes_up, echo.received, proxy.live) == (6, 6, 1)
        sock.settimeout(2.0)
        proxy.resume()
        assert recv_exactly(sock, 6) == b"during"
        assert proxy.bytes_up == proxy.bytes_down == 12


def test_stall_forwards_no_close_either(echo: EchoServer, proxy: FaultProxy) -> None:
    with client(proxy) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        proxy.stall()
        sock.shutdown(socket.SHUT_WR)
        time.sleep(0.2)
        assert proxy.live == 1  # the EOF was not read, so nothing closed
        proxy.resume()
        assert sock.recv(1) == b""  # now it flows: echo closes, proxy forwards the EOF
        assert wait_until(lambda: proxy.live == 0)


def test_delay_adds_latency_in_order(proxy: FaultProxy) -> None:
    with client(proxy) as sock:
        proxy.delay(0.25)
        began = time.monotonic()
        for part in (b"one,", b"two,", b"three"):
            sock.sendall(part)
            time.sleep(0.01)
        assert recv_exactly(sock, 13) == b"one,two,three"
        assert time.monotonic() - began >= 0.5  # 0.25 s each way
        proxy.delay(0)
        sock.sendall(b"fast")
        assert recv_exactly(sock, 4) == b"fast"


def test_throttle_caps_throughput(proxy: FaultProxy) -> None:
    rate = 16_000
    payload = os.urandom(rate)  # one second's worth each way
    with client(proxy) as sock:
        proxy.throttle(rate)
        began = time.monotonic()
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        assert time.monotonic() - began >= 0.85  # minus the 50 ms burst of each direction
        proxy.throttle(None)
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload


def test_unreachable_upstream_resets_the_client(fault_proxy_factory: ProxyFactory) -> None:
    spare = socket.create_server(("127.0.0.1", 0))
    address = spare.getsockname()
    spare.close()  # nothing listens there now
    proxy = fault_proxy_factory(address)
    assert_reset_at_once(proxy)
    assert (proxy.upstream_failures, proxy.accepted) == (1, 0)


def test_close_stops_quickly_and_joins_its_thread(echo: EchoServer) -> None:
    before = set(threading.enumerate())
    proxy = FaultProxy(echo.address)
    assert [t.name for t in set(threading.enumerate()) - before] == [f"fault-proxy-{proxy.port}"]
    with client(proxy) as a, client(proxy) as b:
        a.sendall(b"x")
        assert recv_exactly(a, 1) == b"x"
        proxy.stall()
        b.sendall(b"queued")
        proxy.delay(5)
        began = time.monotonic()
        proxy.close()
        assert time.monotonic() - began < 1.0
        assert set(threading.enumerate()) - before == set()
        assert a.recv(1) == b""  # closed, not left half-open
        proxy.close()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=1).close()
