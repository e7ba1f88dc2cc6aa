"""The pipe between the daemon and its offline engine process (``child.py``).

Requests (daemon → engine): one byte saying what, four bytes of payload length (little
endian), the payload. ``S`` an utterance starts; ``F`` audio (16 kHz mono s16le; answered,
empty, once decoded); ``P`` the words so far (answered); ``E`` the utterance ends (answered
with its words as JSON ``[[word, start ms, end ms], …]``); ``Q`` quit. Replies (engine →
daemon): ``O`` (done) or ``X`` (failed), the length, UTF-8 text. The first reply, unasked,
says whether the engine could be built: ``O`` and its name, or ``X`` and why not.
"""

from __future__ import annotations

import os
import select
import struct
import time

START, FEED, PARTIAL, FINISH, QUIT = b"S", b"F", b"P", b"E", b"Q"
OK, FAILED = b"O", b"X"
HEADER = struct.Struct("<cI")
MAX_PAYLOAD = 1 << 26  # 64 MiB: far past any utterance (30 s of audio is 960 kB)


class ChannelClosed(EOFError):
    """The other end of the pipe is gone (or sent something that is not a message)."""


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes | None:
    """``size`` bytes from ``fd``, or None at a clean end before the first one; waits until
    ``deadline`` (time.monotonic) at most, else raises TimeoutError. Without a deadline it
    blocks in read(), no polling."""
    data = bytearray()
    while len(data) < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no answer before the deadline")
        chunk = os.read(fd, size - len(data))
        if not chunk:
            if not data:
                return None
            raise ChannelClosed(f"the stream ended inside a message ({len(data)}/{size} bytes)")
        data += chunk
    return bytes(data)


def read_message(fd: int, deadline: float | None = None) -> tuple[bytes, bytes] | None:
    """The next (kind, payload) from ``fd``, or None when the stream ended between
    messages; waits until ``deadline`` at most (see ``_read_exactly``)."""
    header = _read_exactly(fd, HEADER.size, deadline)
    if header is None:
        return None
    kind, size = HEADER.unpack(header)
    if size > MAX_PAYLOAD:
        raise ChannelClosed(f"a message of {size} bytes: not this protocol")
    payload = _read_exactly(fd, size, deadline) if size else b""
    if payload is None:
        raise ChannelClosed("the stream ended inside a message")
    return kind, payload


def write_message(fd: int, kind: bytes, payload: bytes = b"") -> None:
    """One message, all of it (a pipe may take a large one in parts)."""
    data = memoryview(HEADER.pack(kind, len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def write_reply(fd: int, ok: bool, text: str) -> None:
    write_message(fd, OK if ok else FAILED, text.encode("utf-8", "replace"))
