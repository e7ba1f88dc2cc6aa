"""Logging: the journal under systemd, standard error otherwise; repeats rate-limited.

A device that stays unplugged for a week must not write a million identical lines. The
RepeatLimiter lets the first record of each (logger, level, message template) through, drops
repeats for ``interval`` seconds, and then reports how many it dropped.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
MAX_KEYS = 2048


class RepeatLimiter(logging.Filter):
    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.interval <= 0:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.interval:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            if len(self._seen) >= MAX_KEYS:
                self._seen.clear()
            self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.msg = (
                f"{record.msg} (and {last[1]} similar messages in the last {now - last[0]:.0f} s)"
            )
        return True


def under_journal() -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str = "info", target: str = "auto", repeat_interval: float = 60.0) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handler: logging.Handler | None = None
    if target == "journal" or (target == "auto" and under_journal()):
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="edgecap")
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(RepeatLimiter(repeat_interval))
    root.addHandler(handler)
    root.setLevel(LEVELS[level])


def fields(**values: object) -> dict[str, dict[str, str]]:
    """Structured journal fields for one log call: ``log.warning(msg, **fields(state=…))``.

    They become ``EDGECAP_STATE=…`` etc. in the journal (``journalctl -o verbose``, or
    ``journalctl EDGECAP_ERROR=unauthenticated``); on stderr they are not shown.
    """
    return {"extra": {f"EDGECAP_{k.upper()}": str(v) for k, v in values.items() if v is not None}}
