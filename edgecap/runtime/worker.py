"""A thread with an owner.

Every thread in edgecap is a Worker: the supervisor starts it, asks it to stop, joins it
with a deadline, and hears about it when it ends — normally or with an exception, which is
logged once with its traceback and kept in ``error``. A worker calls ``beat()`` whenever it
makes progress; the supervisor reads ``heartbeat`` to tell a working pipeline from a hung
one (systemd's watchdog is fed from that, never from a free-running timer).

Each worker's thread also carries its name to the operating system (``os_thread_name``:
"ec-link", "ec-capture", "ec-out-socket" …, at most 15 bytes), so ``top -H``, ``ps -L``
and ``/proc/<pid>/task/*/comm`` tell the threads apart (for Python they are all "python"
otherwise). Linux only; where it cannot be set, the thread runs unnamed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

PR_SET_NAME = 15  # <linux/prctl.h>: name the calling thread
OS_NAME_MAX = 15  # bytes; the kernel keeps 16 with the terminating NUL
# Shorter spellings of name parts, so that most names fit in those 15 bytes whole.
_ABBREVIATIONS = (("output-", "out-"), ("-reader-", "-rd-"))


def os_thread_name(name: str) -> str:
    """The OS name of a worker's thread: "ec-" + its name, abbreviated, cut to 15 bytes
    ("link-reader-3" -> "ec-link-rd-3", "output-socket" -> "ec-out-socket")."""
    for long, short in _ABBREVIATIONS:
        name = name.replace(long, short)
    raw = f"ec-{name}".encode()[:OS_NAME_MAX]
    return raw.decode("utf-8", "ignore")  # a cut through a multi-byte character drops it


def _name_this_thread(name: str) -> None:
    """Set the calling thread's OS name (Linux prctl); any failure is ignored: a name is
    for people looking at ``top -H``, nothing depends on it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(os_thread_name(name).encode()), 0, 0, 0)
    except (OSError, AttributeError, ValueError):
        pass


class Worker:
    # Exceptions that are a clear message, not a bug: logged without a traceback.
    expected_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop = threading.Event()
        self.handing_over = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"edgecap-{name}", daemon=False)
        self._on_exit: Callable[[Worker], None] | None = None
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self.heartbeat = time.monotonic()
        # True while the thread waits for input by design (see ``waiting``)
        self.idle = False

    # --- owner side -----------------------------------------------------------------
    def start(self, on_exit: Callable[[Worker], None] | None = None) -> None:
        self._on_exit = on_exit
        self.heartbeat = time.monotonic()
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def hand_over(self) -> None:
        """Stop, leaving what is still queued for the worker that replaces this one (a
        config reload); a plain request_stop drains the input first."""
        self.handing_over.set()
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait until the thread ended; False if it is still running after ``timeout``."""
        if not self._thread.is_alive() and not self._thread.ident:
            return True  # never started
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- thread side ------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop was requested."""
        return self._stop.wait(seconds)

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around a blocking wait for input (a queue, a socket, the next deadline): the
        thread is idle by design, not hung, so it may sleep as long as it has nothing to do
        — the watchdog counts an idle worker as healthy instead of waking it to beat."""
        self.idle = True
        try:
            yield
        finally:
            self.idle = False
            self.heartbeat = time.monotonic()

    def stale(self, now: float, after: float) -> bool:
        """Made no progress for ``after`` seconds while not waiting for input (hung)."""
        return not self.idle and now - self.heartbeat > after

    def run(self) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        _name_this_thread(self.name)
        try:
            self.run()
        except BaseException as exc:  # surfaced to the owner, never swallowed
            self.error = exc
            expected = isinstance(exc, self.expected_errors)
            log.error("worker %s failed: %s", self.name, exc, exc_info=None if expected else exc)
        finally:
            self.finished.set()
            if self._on_exit is not None:
                try:
                    self._on_exit(self)
                except Exception:  # the owner's callback must not hide the exit
                    log.exception("exit callback of worker %s failed", self.name)
