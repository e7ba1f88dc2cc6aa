"""A small HTTP forward proxy that only does CONNECT tunnels, as office proxies do for TLS.

It records every CONNECT target, refuses targets not in ``allow`` with 403, and pumps the
tunnel both ways on one selector thread that ``close()`` stops and joins.
"""

from __future__ import annotations

import selectors
import socket
import threading


class ConnectProxy:
    def __init__(self, allow: set[str] | None = None) -> None:
        self.allow = allow
        self.targets: list[str] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._accept_loop, name="connect-proxy")
        self._accept.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._tunnel, args=(client,), name="connect-tunnel")
            with self._lock:
                self._threads.append(t)
            t.start()

    def _tunnel(self, client: socket.socket) -> None:
        client.settimeout(2.0)
        upstream = None
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _ = request_line.split(" ", 2)
            if method != "CONNECT" or (self.allow is not None and target not in self.allow):
                with self._lock:
                    self.refused.append(request_line)
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection((host, int(port)), timeout=2.0)
            with self._lock:
                self.targets.append(target)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self._pump(client, upstream)
        except (OSError, ValueError):
            return
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        a.setblocking(False)
        b.setblocking(False)
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.1):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    key.data.setblocking(True)
                    key.data.sendall(data)
                    key.data.setblocking(False)
        finally:
            sel.close()

    def close(self) -> None:
        self._stop.set()
        self._accept.join(2)
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(2)
        assert not any(t.is_alive() for t in threads), "a tunnel thread did not stop"

    def __enter__(self) -> ConnectProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
