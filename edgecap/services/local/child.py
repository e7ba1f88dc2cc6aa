"""The offline engine's process: ``python -m edgecap.services.local.child ENGINE [MODEL]``.

Started by :class:`edgecap.services.local.process.DecoderProcess`, it builds the recognizer
and then serves the daemon over its stdin and stdout, one request at a time (the framing
is in ``framing.py``). It exists because pocketsphinx holds the GIL for the whole of every
call — 0.25–0.5 s for the first search after an utterance's look-ahead, up to a second for
``end_utt`` on a long utterance here, eight times that on a Pi Zero 2 W — and a capture
thread that cannot take the GIL for longer than the device's buffer (about 200 ms) loses
audio. In a process of its own the decoding also runs on another core.

It ignores SIGTERM, SIGINT and SIGHUP: at a stop systemd signals every process of the
service, and the daemon may still want the last words of the utterance in progress; the
daemon ends it by closing its stdin (or a ``Q`` request), and if the daemon dies the closed
pipe ends it too (and the kernel's parent-death signal, where it can be set).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path

from edgecap.services.local.framing import (
    FEED,
    FINISH,
    PARTIAL,
    QUIT,
    START,
    read_message,
    write_reply,
)
from edgecap.services.local.recognizers import EngineError, make_recognizer

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the closed pipe still ends us


def serve(engine: str, model: Path | None, requests: int, replies: int) -> int:
    """Build the recognizer, say so (or why not), then answer requests until told to quit
    or the daemon's end of the pipe closes."""
    try:
        recognizer = make_recognizer(engine, model)
    except EngineError as exc:
        write_reply(replies, False, str(exc))
        return 0
    write_reply(replies, True, recognizer.name)
    while True:
        message = read_message(requests)
        if message is None:
            return 0
        op, payload = message
        if op == FEED:
            recognizer.feed(payload)
            write_reply(replies, True, "")  # taken: the daemon paces itself by this
        elif op == START:
            recognizer.start()
        elif op == PARTIAL:
            write_reply(replies, True, recognizer.partial())
        elif op == FINISH:
            write_reply(replies, True, json.dumps(recognizer.finish()))
        elif op == QUIT:
            return 0
        else:
            write_reply(replies, False, f"unknown request {op!r}")
            return 2


def main(argv: list[str]) -> int:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    _die_with_parent()
    if len(argv) not in (2, 3):
        raise SystemExit("usage: python -m edgecap.services.local.child ENGINE [MODEL]")
    model = Path(argv[2]) if len(argv) == 3 and argv[2] else None
    # The replies get a descriptor of their own; fd 1 becomes stderr, so that nothing a
    # library prints (Python or C) can enter the reply channel.
    replies = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return serve(argv[1], model, sys.stdin.fileno(), replies)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
