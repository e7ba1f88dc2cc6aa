"""Logging: the journal under systemd, standard error otherwise; repeats rate-limited.

A device that stays unplugged for a week must not write a million identical lines, and a
service that sends a flood of malformed messages must not fill the journal. But a record
that carries new values — a second loss of speech, a key refused again after a reload, a
state change — must never vanish: the journal is where an owner finds out what happened.

The RepeatLimiter groups records by (logger, level, message template) and gives each record a
*signature*: its structured journal fields (``fields()``: state, service, error …) when it
has them, else its arguments. Within ``interval`` seconds of the last record of its group
that went out, a record is dropped only if

- its signature is the one that went out last (a true repeat: the same state again, the
  same device still missing), or
- it has no structured fields and its group already let ``DISTINCT_MAX`` different records
  out in this interval (a flood of varying values).

Records at ERROR or above are never dropped. When a group's record goes out after drops, it
says how many similar records were dropped.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgecap.runtime.escape import escape_controls

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
MAX_KEYS = 2048
DISTINCT_MAX = 20  # different records of one unstructured group let out per interval
FIELD_PREFIX = "EDGECAP_"


@dataclass
class _Group:
    since: float  # start of the current interval
    last: tuple[object, ...]  # signature of the last record let out
    distinct: int  # records let out in this interval
    dropped: int  # records dropped since the last one let out


def _signature(record: logging.LogRecord) -> tuple[tuple[object, ...], bool]:
    """(signature, structured): the record's journal fields if any, else its arguments."""
    structured = tuple(
        sorted((k, v) for k, v in vars(record).items() if k.startswith(FIELD_PREFIX))
    )
    if structured:
        return structured, True
    args = record.args
    if isinstance(args, tuple):
        return tuple(repr(a) for a in args), False
    return (repr(args),), False


class RepeatLimiter(logging.Filter):
    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._groups: dict[tuple[str, int, str], _Group] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.interval <= 0 or record.levelno >= logging.ERROR:
            return True
        key = (record.name, record.levelno, str(record.msg))
        signature, structured = _signature(record)
        now = self._clock()
        with self._lock:
            group = self._groups.get(key)
            if group is None or now - group.since >= self.interval:
                dropped = group.dropped if group is not None else 0
                if len(self._groups) >= MAX_KEYS:
                    self._groups.clear()
                self._groups[key] = _Group(now, signature, 1, 0)
                elapsed = now - group.since if group is not None else 0.0
            elif signature == group.last or (not structured and group.distinct >= DISTINCT_MAX):
                group.dropped += 1
                return False
            else:
                dropped, elapsed = group.dropped, now - group.since
                group.last, group.distinct, group.dropped = signature, group.distinct + 1, 0
        if dropped:
            record.msg = (
                f"{record.msg} (and {dropped} similar messages in the last {elapsed:.0f} s)"
            )
        return True


class SafeFormatter(logging.Formatter):
    """Escapes control characters in the message (a file name with terminal escapes, a
    line break that would forge a second record); a traceback keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


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
            handler.setFormatter(SafeFormatter("%(message)s"))
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
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
