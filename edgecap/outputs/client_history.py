"""What the socket and web outputs keep for a client that connects mid-talk, and how both
sleep on their sockets.

A newcomer is greeted with the recent final lines (at most ``history``, in line order, each
as its newest encoded message) and then the few provisional lines still open, so it sees
what everyone else sees. Both servers keep the encoded bytes: a greeting costs no encoding.
"""

from __future__ import annotations

import math
import select
from collections import OrderedDict
from collections.abc import Iterator

from edgecap.captions.events import CaptionLine

PROVISIONAL_KEEP = 4  # provisional lines remembered for new clients (the board has one)


class CaptionHistory:
    def __init__(self, history: int) -> None:
        self.history = history
        self._finals: OrderedDict[int, bytes] = OrderedDict()  # seq → newest final message
        self._provisional: OrderedDict[int, bytes] = OrderedDict()

    def remember(self, line: CaptionLine, data: bytes) -> None:
        """``data``: the line's message as the clients get it."""
        if not line.final:
            self._provisional[line.seq] = data
            self._provisional.move_to_end(line.seq)
            while len(self._provisional) > PROVISIONAL_KEEP:
                self._provisional.popitem(last=False)
            return
        self._provisional.pop(line.seq, None)
        if not (line.text or line.translations):
            self._finals.pop(line.seq, None)  # withdrawn: a newcomer never saw it
            return
        # An update (its translation grew) keeps the line's place: history stays in order.
        self._finals[line.seq] = data
        while len(self._finals) > self.history:
            self._finals.popitem(last=False)

    def messages(self) -> Iterator[bytes]:
        """The greeting's captions: finals in order, then the open provisional lines."""
        yield from self._finals.values()
        yield from self._provisional.values()


def poll_with_wake(poller: select.poll, timeout: float | None, wake_fd: int) -> None:
    """Sleep in ``poller`` (the server's sockets) until one is ready, ``wake_fd`` is
    readable (an event or a stop), or ``timeout`` passed."""
    ms = None if timeout is None else math.ceil(timeout * 1000)  # never wake too early
    poller.register(wake_fd, select.POLLIN)
    try:
        poller.poll(ms)
    finally:
        poller.unregister(wake_fd)
