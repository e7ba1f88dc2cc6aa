"""The offline engine in a process of its own, behind the same interface as in-process.

Why (``child.py`` has the measurements): pocketsphinx holds the GIL through every call,
for up to seconds on a Pi, which would keep the capture thread from the device for longer
than its buffer lasts. The daemon's side is this class: the same ``start`` / ``feed`` /
``partial`` / ``finish`` the offline worker calls on its own thread, each a message on the
child's stdin (``framing.py``); ``partial`` and ``finish`` wait for the answer — the worker
thread waits in a read of a pipe, the GIL free — so captions come as before, in order.

Failures are the owner's to see: a child that cannot build its engine (no model, a bad
one) raises :class:`EngineError` from the constructor, as the in-process engine does (a
config problem: exit 78); a child that dies or stops making sense later raises
:class:`EngineCrashed` from the call at hand, and :meth:`restart` starts a new one. A
child is never left behind: :meth:`close` asks it to quit, closes its stdin, and kills it
if it has not gone within ``close_timeout``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from edgecap.services.local.framing import (
    FEED,
    FINISH,
    OK,
    PARTIAL,
    QUIT,
    START,
    ChannelClosed,
    read_message,
    write_message,
)
from edgecap.services.local.recognizers import EngineError, Word

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # the directory holding edgecap/


class EngineCrashed(RuntimeError):
    """The offline engine's process ended, or answered nonsense, in the middle of its work."""


class EngineTimedOut(EngineCrashed):
    """It did not answer before :attr:`DecoderProcess.deadline` (a stop's): it was killed."""


class DecoderProcess:
    """A :class:`~edgecap.services.local.recognizers.Recognizer` whose engine runs in a
    child process (``python -m edgecap.services.local.child``)."""

    def __init__(
        self,
        engine: str,
        model_path: Path | None = None,
        *,
        python: str = sys.executable,
        close_timeout: float = 2.0,
    ) -> None:
        self.engine = engine
        self.model_path = model_path
        self.python = python
        self.close_timeout = close_timeout
        self.name = engine
        self.restarts = 0
        # time.monotonic() past which no answer is waited for (set by a stop): the child is
        # killed instead, so a stop never waits on a decoder that is far behind
        self.deadline: float | None = None
        self._started = False  # the open utterance has reached the engine
        self._cpu_done = 0.0  # CPU of the children before the current one
        self._proc: subprocess.Popen[bytes] | None = None
        self._spawn()

    # -- the Recognizer interface -----------------------------------------------------

    def start(self) -> None:
        # Sent with the utterance's first audio: an utterance that gets none (its audio
        # skipped at a stop, a crash) costs the engine nothing.
        self._started = False

    def feed(self, pcm: bytes) -> None:
        """Returns once the engine has decoded ``pcm``, as the in-process engine does: the
        worker's stop budget and its "behind" state count on a feed taking as long as its
        decoding (fire-and-forget would pile the backlog up in the pipe instead, out of
        their sight)."""
        if not self._started:
            self._send(START)
            self._started = True
        self._send(FEED, pcm)
        self._answer()

    def partial(self) -> str:
        if not self._started:
            return ""
        self._send(PARTIAL)
        return self._answer()

    def finish(self) -> list[Word]:
        if not self._started:
            return []
        self._started = False
        self._send(FINISH)
        text = self._answer()
        try:
            words = [(str(w), int(s), int(e)) for w, s, e in json.loads(text)]
        except (ValueError, TypeError) as exc:
            raise EngineCrashed(f"the offline engine answered {text[:80]!r}: {exc}") from None
        return words

    def close(self) -> None:
        """Ask the child to quit and wait for it (killed after ``close_timeout``)."""
        proc = self._proc
        if proc is None:
            return
        self._cpu_done += self._child_cpu() or 0.0
        self._proc = None
        if proc.stdin is not None:
            with contextlib.suppress(OSError):  # already gone
                write_message(proc.stdin.fileno(), QUIT)
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(self.close_timeout)
        except subprocess.TimeoutExpired:
            log.warning("the offline engine's process did not quit: killed")
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    # -- beyond it ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def restart(self) -> None:
        """A new child after a crash (its engine is built again: the look-ahead's running
        mean starts over)."""
        self.close()
        self.restarts += 1
        self._started = False
        self._spawn()

    def cpu_seconds(self) -> float:
        """CPU every child so far has used (user + system; the current one from /proc)."""
        return self._cpu_done + (self._child_cpu() or 0.0)

    def _child_cpu(self) -> float | None:
        pid = self.pid
        if pid is None:
            return None
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # -- the pipe -----------------------------------------------------------------------

    def _spawn(self) -> None:
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{PACKAGE_ROOT}{os.pathsep}{path}" if path else str(PACKAGE_ROOT)
        argv = [self.python, "-m", "edgecap.services.local.child", self.engine]
        if self.model_path is not None:
            argv.append(str(self.model_path))
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
                bufsize=0,  # raw pipes: the framing reads and writes whole messages itself
            )
        except OSError as exc:
            raise EngineError(f"the offline engine's process could not start: {exc}") from None
        self._proc = proc
        try:
            message = self._read(proc)
        except EngineCrashed as exc:
            self.close()
            raise EngineError(f"the offline engine did not start: {exc}") from None
        kind, payload = message
        if kind != OK:
            self.close()
            raise EngineError(payload.decode("utf-8", "replace"))
        self.name = payload.decode("utf-8", "replace") or self.engine
        log.debug("offline engine %s runs in process %d", self.name, proc.pid)

    def _send(self, kind: bytes, payload: bytes = b"") -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise EngineCrashed("the offline engine's process is not running")
        try:
            write_message(proc.stdin.fileno(), kind, payload)
        except (ValueError, OSError) as exc:
            raise EngineCrashed(self._ended(proc, f"could not be written to ({exc})")) from None

    def _answer(self) -> str:
        proc = self._proc
        if proc is None:
            raise EngineCrashed("the offline engine's process is not running")
        kind, payload = self._read(proc)
        text = payload.decode("utf-8", "replace")
        if kind != OK:
            raise EngineCrashed(f"the offline engine failed: {text}")
        return text

    def _read(self, proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
        assert proc.stdout is not None
        try:
            message = read_message(proc.stdout.fileno(), self.deadline)
        except TimeoutError:
            proc.kill()
            self.close()
            raise EngineTimedOut("the offline engine did not answer in time: stopped") from None
        except (ChannelClosed, OSError, ValueError) as exc:
            raise EngineCrashed(self._ended(proc, str(exc))) from None
        if message is None:
            raise EngineCrashed(self._ended(proc, "closed its output"))
        return message

    def _ended(self, proc: subprocess.Popen[bytes], what: str) -> str:
        try:
            code = proc.wait(0.5)
        except subprocess.TimeoutExpired:
            return f"the offline engine's process {what}"
        how = f"signal {-code}" if code < 0 else f"status {code}"
        return f"the offline engine's process ended ({how}): {what}"
