"""A wake-up flag a thread sleeps on together with a socket: an eventfd and a select().

``threading.Event`` cannot be waited on together with a descriptor, so a thread that sleeps
until "something happened or this socket is readable" needs a flag that is a descriptor
too. :class:`Wakeup` is one: ``set()`` from any thread (another thread's put, a stop) makes
its eventfd readable, and ``wait(timeout, fd)`` sleeps in one ``select()`` on that eventfd
and ``fd``. ``set()`` writes the eventfd only when the flag was clear, so a burst of sets
between two waits costs one write.

The contract is the Event's, as the link uses it: the sleeper calls ``clear()`` *before*
it looks for work, and a ``set()`` that comes after it looked ends the next ``wait()``
at once. (A set that races with clear() is never lost: clear() empties the eventfd before
it lowers the flag, so at worst the next wait returns at once for nothing.)
"""

from __future__ import annotations

import contextlib
import os
import select
import threading


class Wakeup:
    """See the module docstring. The eventfd is made by :meth:`open` (or the first wait) and
    released by :meth:`close`: a flag made and never waited on holds no descriptor."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._closed = False
        self._flag = False
        # set() never writes to a descriptor closed meanwhile. Reentrant: a signal handler
        # runs on the main thread, and may call set() while that thread is inside set().
        self._lock = threading.RLock()

    def open(self) -> None:
        """Make the eventfd now (before the threads that set it start; idempotent)."""
        with self._lock:
            if self._fd is None and not self._closed:
                self._fd = os.eventfd(int(self._flag), os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def set(self) -> None:
        """Wake the sleeper (any thread, or a signal handler; quick, never blocks)."""
        if self._flag:
            return
        self._flag = True
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(BlockingIOError):  # the counter is full: it is set
                    os.eventfd_write(self._fd, 1)

    def is_set(self) -> bool:
        return self._flag

    def clear(self) -> None:
        """The sleeper, before it looks for work."""
        fd = self._fd
        if fd is not None:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(fd)
        self._flag = False

    def wait(self, timeout: float | None, fd: int | None = None) -> bool:
        """Sleep until set, ``fd`` is readable, or ``timeout`` (None: no limit) passed.
        True if set. After :meth:`close` it returns at once."""
        if self._fd is None:
            self.open()
        own = self._fd
        if self._flag or own is None:
            return self._flag
        fds = [own] if fd is None else [own, fd]
        select.select(fds, [], [], None if timeout is None else max(0.0, timeout))
        return self._flag

    def close(self) -> None:
        """Release the eventfd; later sets only raise the flag, later waits return at once."""
        with self._lock:
            fd, self._fd = self._fd, None
            self._closed = True
        if fd is not None:
            os.close(fd)
