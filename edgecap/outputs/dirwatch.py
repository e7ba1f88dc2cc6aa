"""Tells when something in a directory changed, through a file descriptor (Linux inotify).

The caption socket must notice when its file is removed or replaced (someone cleaned
/run): checking the path every second would wake an idle daemon 3,600 times an hour for an
event that may never happen. An inotify watch on the directory costs nothing until the
directory changes; its descriptor joins the socket server's poll().

Python's standard library has no inotify, so it is called through ctypes. Where it cannot
be used (not Linux, no instances left: ``fs.inotify.max_user_instances``) ``open`` returns
None and the caller falls back to checking now and then.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# <sys/inotify.h>
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
# A name in the directory removed, renamed or made, or the directory itself going away.
CHANGES = IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


class DirWatch:
    """An inotify instance watching one directory (again with ``watch`` after it was made
    anew). ``fileno`` is readable after a change; ``clear`` reads the notices away."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, directory: Path) -> DirWatch | None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            fd = _lib().inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            log.debug("inotify unavailable: %s", os.strerror(ctypes.get_errno()))
            return None
        watch = cls(fd)
        if not watch.watch(directory):
            watch.close()
            return None
        return watch

    def fileno(self) -> int:
        return self.fd

    def watch(self, directory: Path) -> bool:
        """Watch ``directory`` (a directory made anew has a new inode: watch it again)."""
        wd = _lib().inotify_add_watch(self.fd, os.fsencode(directory), CHANGES)
        if wd < 0:
            log.debug("cannot watch %s: %s", directory, os.strerror(ctypes.get_errno()))
            return False
        return True

    def clear(self) -> None:
        """Read every pending notice (what changed does not matter: the caller looks)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self.fd, 4096):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
