"""A thread with an owner.

Every thread in edgecap is a Worker: the supervisor starts it, asks it to stop, joins it
with a deadline, and hears about it when it ends — normally or with an exception, which is
logged once with its traceback and kept in ``error``. A worker calls ``beat()`` whenever it
makes progress; the supervisor reads ``heartbeat`` to tell a working pipeline from a hung
one (systemd's watchdog is fed from that, never from a free-running timer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


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

    def run(self) -> None:
        raise NotImplementedError

    def _main(self) -> None:
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
