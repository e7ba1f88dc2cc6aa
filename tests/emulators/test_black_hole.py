"""The black hole: a connect that hangs in SYN_SENT, or a TLS handshake that never ends."""

from __future__ import annotations

import errno
import select
import socket
import ssl
import time

import pytest

from .black_hole import BlackHole


def test_unanswered_connects_hang_until_their_timeout() -> None:
    with BlackHole("unanswered") as hole:
        assert hole.unanswered == 0
        for _ in range(2):  # not once by luck: every SYN is dropped
            sock = socket.socket()
            sock.setblocking(False)
            assert sock.connect_ex(hole.address) in (errno.EINPROGRESS, errno.EAGAIN)
            assert hole.wait_attempt(1.0)  # seen, hanging in SYN_SENT
            began = time.monotonic()
            assert select.select([], [sock], [], 0.4)[1] == []  # never completes
            assert time.monotonic() - began >= 0.35
            sock.close()
        assert hole.unanswered == 0


def test_silent_connections_are_accepted_and_get_no_tls_answer() -> None:
    with BlackHole("silent") as hole:
        sock = socket.create_connection(hole.address, timeout=2.0)
        assert hole.wait_accepted(1, 2.0)
        sock.settimeout(0.4)
        tls = ssl.create_default_context()
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            tls.wrap_socket(sock, server_hostname="127.0.0.1")
        assert time.monotonic() - began >= 0.35
        sock.close()
        assert hole.accepted == 1
