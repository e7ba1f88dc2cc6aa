"""The soak (not a test): hours of corpus speech through the real daemon under a fault schedule.

    .venv/bin/python bench/soak.py [--hours 2.0] [--services soniox,azure,sarvam]
        [--shares soniox=0.4,azure=0.4,sarvam=0.2] [--results bench/results.json] [--json FILE]
    make soak

For each service in turn, the real daemon (``edgecap run -c <generated ini>``, a process of
its own, as in bench/daemon.py) captions corpus talk (bench.corpus clips in a seeded random
order with 2-4 s quiet pauses: ``bench.daemon.build_wav``) against the strict emulator of
the service (tests/emulators, in this process, TLS on 127.0.0.1) through the TCP fault
proxy (tests/emulators/fault_proxy.py), while a fault schedule runs. ``--hours`` is the
audio in total, split between the services by ``--shares`` (weights, ``DEFAULT_SHARES``:
Sarvam, fed at 1.25× where the others take 4×, gets half as much, so that the default 2 h
take about 50 minutes); each service gets at least what one round of the schedule needs
(``round_floor_s``), so a short run (``--hours 0.05``) still injects every fault once.

The audio: the daemon captures from ALSA (``[audio] source = alsa``, production's path) on
a device of ALSA's ``file`` plugin whose ``infile`` is a FIFO this process writes, one
100 ms block at a time, at ``PACE`` × real time (Soniox, Azure: 4×; Sarvam: 1.25×). The
source is live for the daemon (it never waits for the link), so an outage costs speech
beyond the link's buffer, as on a real microphone. Writes block when the FIFO is full, so a
daemon that falls behind slows the feed instead of losing audio unnoticed here. The plugin
writes what it captured to its output ``file``, a second FIFO drained by this process:
closing that drain makes the plugin's next write fail, and PortAudio's capture read with it
("Unanticipated host error", as an unplugged USB microphone): the microphone fault
(tests/audio/conftest.py). Pace, per service: the link sends buffered speech at
``[link] replay_speed`` (10, the highest, for Soniox and Azure, whose emulators take audio at
any speed; for Sarvam ``SARVAM_MAX_SPEED`` = 2, what its emulator allows, with a 3 s burst,
bench/daemon.py's settings), so the feed is slower than the replay and the link catches up
after an outage. Everything else is the configuration's defaults but the outputs: the
Unix socket (``client_buffer = 64K``, so a client that never reads is cut sooner) and a
serial display (``[serial]``, profile ``lines``) on a real pty behind a symlink.

The fault schedule (``FAULTS``, in a round, over and over from the end of a clean lead-in
until 80 % of the talk; the rest of the talk and a quiet tail are clean again), each
injected once the link is connected and has caught up (the service has the speech fed up to
``CATCHUP_S`` ago: no backlog from the fault before) and waited out (until the daemon
recovered, or a time limit):

- ``cut``: the proxy resets the live connection (RST both ways);
- ``tcp_refuse``: the proxy resets every new connection for 3 s, and cuts the live one;
- ``refuse_4xx`` / ``refuse_5xx``: the next upgrade is refused with HTTP 408 / twice with
  502 (Soniox: by a subclass of its emulator that refuses upgrades; Azure, Sarvam: their
  plans), after a cut;
- ``error_503``: Soniox sends its 503 error ("restart the request") 1.5 s into the next
  session; Azure and Sarvam refuse the next upgrade with 503;
- ``close_1011``: the next session is closed with 1011 after 1.5 s of audio (Soniox: its
  500 error, then close 1011);
- ``stall``: the proxy stops forwarding, both ways, connections kept open (half-open), for
  12 s (past ``[link] dead_after``, 10 s);
- ``key_rejected``: the service stops taking the key (the emulator's key changes), the
  connection is cut, the daemon's reconnect is refused (401/403: the link's "rejected"
  state); then the new key is written into the key file (``api_key = file:…``) and the daemon
  gets SIGHUP;
- ``mic_vanish``: the microphone is pulled out (the device leaves the ALSA config, the
  plugin's next write fails); 2 s after the daemon reported it missing, it is put back;
- ``serial_unplug``: the pty's master is closed (the display is gone); 1 s after the daemon
  reported the output unavailable, a new pty takes the symlink's place;
- ``slow_client``: a second socket client connects and never reads, for 15 s;
- ``reload_good``: SIGHUP with a changed ``[link] idle_close`` (the link is replaced: the old
  session ends gracefully, the new one takes over);
- ``reload_bad``: SIGHUP with a broken ini (``[gate] aggressiveness = 9``): refused, the
  running config stays (captions go on); the good ini is then put back.

The checks (any failure: exit status 1), per service:

- the daemon never crashed: one process for the whole run, exit status 0 after SIGTERM,
  one "edgecap starting" in its log; no "Traceback" in its log (stderr);
- every fault was observed (the daemon reported what the fault does) and recovered from
  (a new session received audio, or the part is back);
- every final caption delivered once on the socket: no ``seq`` done twice, and no two final
  lines with the same text over overlapping capture times (outside the reported gaps);
- no speech lost unreported: the speech the gate forwards (the daemon's gate at its
  defaults, run here on the same audio, started afresh where the daemon's started afresh:
  at each microphone fault's point of return) that no session of the emulator received, in
  seconds, is at most the seconds the daemon reported lost (``gap`` messages) plus
  ``LOSS_SLACK_S`` (and ``MIC_SLACK_S`` per microphone fault: a block dies with the device);
- losses only beyond the buffer bound: every gap comes during or after a link outage, and
  none after an outage that could not fill the buffer (audio fed during the outage plus the
  longest utterance, which may wait unconfirmed, under ``[link] buffer``);
- no pace violation at the emulator (Sarvam: audio faster than it allows);
- RSS growth (median of the last quarter of the run minus median of the first) < 5 MB;
- threads (``/proc/<pid>/task``) and file descriptors (``/proc/<pid>/fd``) at the end as
  at the start (both taken with the talk going and the link connected: before the first
  fault, and in the quiet tail).

It prints a table and merges the figures into ``--results`` (bench/results.json) under
``soak``. docs/soak.md has the figures of a run.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import fcntl
import json
import logging
import os
import random
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
import wave
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import CORPUS_DIR, corpus_available, frames_of, quiet_noise
from bench.daemon import (
    SARVAM_BURST_S,
    SARVAM_MAX_SPEED,
    build_wav,
    edgecap_command,
    merge_results,
    progress,
)
from edgecap.config.schema import GateConfig, LinkConfig
from edgecap.gate.speech_gate import GateSettings, SpeechGate
from edgecap.runtime.frames import SAMPLE_RATE
from edgecap.runtime.speech import SpeechAudio
from tests.emulators.azure import AzureEmulator
from tests.emulators.azure import SessionPlan as AzurePlan
from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.sarvam import V3_PATH as SARVAM_PATH
from tests.emulators.sarvam import SarvamEmulator
from tests.emulators.sarvam import SessionPlan as SarvamPlan
from tests.emulators.soniox import Session as SonioxSession
from tests.emulators.soniox import SessionPlan as SonioxPlan
from tests.emulators.soniox import SonioxEmulator

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("soniox", "azure", "sarvam")
PACE = {"soniox": 4.0, "azure": 4.0, "sarvam": 1.25}  # × real time, the feed
# --hours split (weights): Sarvam's slower feed gets a smaller part (2 h: 48 + 48 + 24 min
# of audio, about 12 + 12 + 19 minutes of wall time)
DEFAULT_SHARES = {"soniox": 0.4, "azure": 0.4, "sarvam": 0.2}
REPLAY = {"soniox": 10.0, "azure": 10.0, "sarvam": SARVAM_MAX_SPEED}  # [link] replay_speed
DEVICE = "edgecap_soak_mic"
BLOCK_BYTES = 3200  # 100 ms: one PortAudio period of the daemon, one read of the plugin
BLOCK_S = 0.1
FRAME_BYTES = 640  # 20 ms, the daemon's frame ([audio] frame_ms default)
FIFO_PIPE = 65536
KEY0 = "soak-key-0"
SAMPLE_S = 1.0  # /proc sampling
LEAD_S = 20.0  # clean wall seconds before the first fault
ROUND_S = 230.0  # wall seconds one round of the schedule takes, about (for the floor)
FAULT_SHARE = 0.8  # faults start until this share of the talk's wall time
QUIET_WALL_S = 10.0  # quiet after the talk, wall seconds: the last finals arrive
STOP_LIMIT_S = 30.0
RECOVER_S = 60.0
CATCHUP_S = 3.0  # caught up: the service has what was fed up to this long ago (audio s)
CATCHUP_WAIT_S = 120.0  # a fault not recovered from in this long is a failure
SPACING_S = 4.0  # wall seconds of normal running between faults
STALL_S = 12.0
TCP_REFUSE_S = 11.0  # longer than the link's longest backoff ([link] retry_max, 10 s)
SLOW_CLIENT_S = 15.0
RSS_LIMIT_MB = 5.0
LOSS_SLACK_S = 1.0
MIC_SLACK_S = 0.5
# Audio the service may hold unconfirmed, at most (s): what a link outage costs on top of
# the speech fed during it. Soniox confirms as its finals come (its lag, 0.5 s); Sarvam at the
# end of a segment, which the codec's flush closes after [link] dead_after / 2 of speech;
# Azure at the end of a turn (an utterance: the longest one the gate makes of the talk).
UNCONFIRMED_S: dict[str, float | None] = {
    "soniox": 2.0,
    "sarvam": LinkConfig().dead_after / 2 + 2.0,
    "azure": None,
}
FAULTS = (
    "cut",
    "refuse_5xx",
    "mic_vanish",
    "error_503",
    "slow_client",
    "tcp_refuse",
    "reload_good",
    "close_1011",
    "serial_unplug",
    "refuse_4xx",
    "stall",
    "key_rejected",
    "reload_bad",
)
SCHEDULE = list(FAULTS)  # the round in use (--faults)
LINK_OUTAGES = frozenset(
    {"cut", "tcp_refuse", "refuse_4xx", "refuse_5xx", "error_503", "close_1011", "stall"}
    | {"key_rejected", "reload_good"}
)


def round_floor_s(service: str) -> float:
    """The least audio (s) a service gets: a lead-in, one round, and the clean rest."""
    round_s = ROUND_S * len(SCHEDULE) / len(FAULTS)
    return (LEAD_S + round_s) / FAULT_SHARE * PACE[service]


# --- the emulators -------------------------------------------------------------------------------
class RefusingSoniox(SonioxEmulator):
    """The Soniox emulator, able to refuse upgrades with an HTTP status (the service's
    gateway does: a 408, a 502), queued with :meth:`refuse_next`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._refusals: list[int] = []
        super().__init__(*args, **kwargs)

    def refuse_next(self, status: int) -> None:
        with self._cond:
            self._refusals.append(status)

    def _refusal(self, request: Any) -> tuple[int, str] | None:
        with self._cond:
            if self._refusals:
                return self._refusals.pop(0), "Refused by the soak\n"
        return None


Emulator = RefusingSoniox | AzureEmulator | SarvamEmulator


def make_emulator(service: str, directory: Path) -> Emulator:
    if service == "azure":
        return AzureEmulator(directory, api_key=KEY0)
    if service == "sarvam":
        return SarvamEmulator(
            directory, api_key=KEY0, max_speed=SARVAM_MAX_SPEED, burst=SARVAM_BURST_S
        )
    return RefusingSoniox(directory, api_key=KEY0)


def session_pcm(emu: Emulator) -> Iterator[bytes]:
    """Every stretch of PCM the service received, each from a frame boundary: a session's
    audio (Soniox, Sarvam) or a turn's (Azure, whose turns start with a RIFF header)."""
    for s in emu.sessions:
        if isinstance(emu, AzureEmulator):
            for turn in s.turns:
                yield bytes(turn.audio)
        else:
            yield bytes(s.audio)  # type: ignore[union-attr]


def session_audio_bytes(emu: Emulator, session: Any) -> int:
    return session.audio_bytes if isinstance(emu, AzureEmulator) else len(session.audio)


def session_summaries(emu: Emulator, expected: Expected, t_base: float) -> list[dict[str, Any]]:
    """Per session: when its audio began, how much came, which stretch of the talk (indexes
    of the gate's frames) it covered, and its fault."""
    where = expected.index
    out = []
    for s in emu.sessions:
        pcms = (
            [bytes(t.audio) for t in s.turns]
            if isinstance(emu, AzureEmulator)
            else [bytes(s.audio)]
        )
        idx = [
            where[h]
            for pcm in pcms
            for off in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)
            if (h := hash(pcm[off : off + FRAME_BYTES])) in where
        ]
        first = getattr(s, "first_audio_at", None)
        out.append(
            {
                "index": s.index,
                "audio_at_s": None if first is None else first - t_base,
                "audio_s": sum(len(p) for p in pcms) / 2 / SAMPLE_RATE,
                "frames": [min(idx), max(idx)] if idx else None,
                "fault": s.fault,
                "odd_bytes": [len(p) % FRAME_BYTES for p in pcms if len(p) % FRAME_BYTES],
            }
        )
    return out


def newest_frame(emu: Emulator, index: dict[int, int]) -> int | None:
    """Where the service is in the talk: the index (into the gate's frames) of the last frame
    of the newest session's audio that is one of them (keepalive silence is not)."""
    for s in reversed(emu.sessions):
        if isinstance(emu, AzureEmulator):
            pcm = bytes(s.turns[-1].audio[-50 * FRAME_BYTES :]) if s.turns else b""
        else:
            pcm = bytes(s.audio[-50 * FRAME_BYTES :])  # type: ignore[union-attr]
        pcm = pcm[len(pcm) % FRAME_BYTES :]
        for end in range(len(pcm), 0, -FRAME_BYTES):
            i = index.get(hash(pcm[end - FRAME_BYTES : end]))
            if i is not None:
                return i
    return None


def violations(emu: Emulator, excused: set[int]) -> tuple[list[str], list[str]]:
    """What the service held against the client: (on sessions of the daemon's, on sessions
    ``excused``: those open when a stall began, whose queued audio the proxy delivers at once
    when it resumes — a burst of the proxy's, not the daemon's, on a connection it gave up)."""
    if isinstance(emu, SonioxEmulator):
        return [], []  # its errors are the planned ones (faults), nothing is a violation
    mine, held = [], []
    for s in emu.sessions:
        (held if s.index in excused else mine).extend(
            f"session {s.index}: {v}" for v in s.violations
        )
    return mine, held


# --- the microphone: ALSA's file plugin on two FIFOs ---------------------------------------------
class Drain:
    """Reads and throws away what the plugin writes to its output FIFO (one thread, blocked
    in select). The FIFO is held O_RDWR, so the plugin's open never blocks and a read never
    sees EOF; :meth:`close` closes it, and the plugin's next write fails (EPIPE)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._stop_r, self._stop_w = os.pipe()
        self.bytes = 0
        self._thread = threading.Thread(target=self._run, name="soak-mic-drain")
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready = select.select([self._fd, self._stop_r], [], [])[0]
            if self._stop_r in ready:
                return
            with contextlib.suppress(BlockingIOError):
                self.bytes += len(os.read(self._fd, 1 << 16))

    def close(self) -> None:
        if self._thread.is_alive():
            os.write(self._stop_w, b"x")
            self._thread.join(5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class Mic:
    """The daemon's microphone: a private ALSA config (the daemon's XDG_CONFIG_HOME) naming
    ``DEVICE``, a ``file`` plugin reading the FIFO ``mic.fifo``, which one thread of this
    process ("soak-mic-feed") fills a block at a time at ``pace`` × real time on an absolute
    schedule. The FIFO is held O_RDWR from before the daemon starts. Writes wait for room
    (the daemon falling behind slows the feed; nothing is dropped here). After the audio,
    quiet noise goes on until :meth:`stop` (a microphone does not fall silent at the end).
    ``times[i]`` is when block i went into the FIFO (time.monotonic())."""

    def __init__(self, directory: Path, pcm: bytes, pace: float) -> None:
        self.directory = directory
        self.config_home = directory / "xdg"
        self.asoundrc = self.config_home / "alsa" / "asoundrc"
        self.infile = directory / "mic.fifo"
        pad = -len(pcm) % BLOCK_BYTES
        self.pcm = pcm + quiet_noise(pad // 2, seed=5)
        self.blocks = len(self.pcm) // BLOCK_BYTES
        self.interval = BLOCK_S / pace
        self.times = array("d")
        self.done = threading.Event()  # every block of the audio was written
        # Where the daemon's stream began again after each pull (samples into the feed):
        # its gate starts afresh there (a new webrtcvad), which the check must model.
        self.resumes: list[int] = []
        self._written = 0  # bytes into the FIFO
        self._lock = threading.Lock()  # _written and the FIFO's content agree under it
        self.error: BaseException | None = None
        self._after = quiet_noise(SAMPLE_RATE, seed=6)
        self._plugs = 0
        self._drain: Drain | None = None
        self._fd = self._stop_r = self._stop_w = -1
        self._thread = threading.Thread(target=self._run, name="soak-mic-feed")

    @property
    def env(self) -> dict[str, str]:
        return {"XDG_CONFIG_HOME": str(self.config_home)}

    def start(self) -> None:
        self.asoundrc.parent.mkdir(parents=True)
        os.mkfifo(self.infile)
        self._fd = os.open(self.infile, os.O_RDWR | os.O_NONBLOCK)
        fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, FIFO_PIPE)
        self._stop_r, self._stop_w = os.pipe()
        self.plug()
        self._thread.start()

    def plug(self) -> None:
        """The microphone is there: a fresh output FIFO (drained), the device in the config."""
        self._plugs += 1
        self._drain = Drain(self.directory / f"captured{self._plugs}.fifo")
        self.asoundrc.write_text(
            f"pcm.{DEVICE} {{\n"
            f"    type file\n"
            f'    slave.pcm "null"\n'
            f'    file "{self.directory / f"captured{self._plugs}.fifo"}"\n'
            f'    infile "{self.infile}"\n'
            f'    format "raw"\n'
            f'    hint {{ show on description "edgecap soak mic" }}\n'
            f"}}\n"
        )

    def read_position(self) -> int:
        """Samples of the feed read out of the FIFO so far: what was written less what is
        still in it (FIONREAD). Exact while nothing reads (the device is pulled)."""
        with self._lock:
            unread = array("i", [0])
            fcntl.ioctl(self._fd, termios.FIONREAD, unread)
            return (self._written - unread[0]) // 2

    def pull(self) -> None:
        """The microphone is pulled out: gone from the config, its stream fails."""
        self.asoundrc.write_text("# the microphone was pulled out\n")
        if self._drain is not None:
            self._drain.close()
            self._drain = None

    def stop(self) -> None:
        if self._thread.is_alive():
            os.write(self._stop_w, b"x")
            self._thread.join(5)
        if self._drain is not None:
            self._drain.close()
        for fd in (self._fd, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _block(self, i: int) -> bytes:
        if i < self.blocks:
            return self.pcm[i * BLOCK_BYTES : (i + 1) * BLOCK_BYTES]
        k = (i - self.blocks) % (len(self._after) // BLOCK_BYTES)
        return self._after[k * BLOCK_BYTES : (k + 1) * BLOCK_BYTES]

    def _run(self) -> None:
        try:
            self._feed()
        except BaseException as exc:  # surfaced by the owner after the run
            self.error = exc

    def _feed(self) -> None:
        stop, fd = self._stop_r, self._fd
        start = time.monotonic()
        i = 0
        while True:
            delay = start + i * self.interval - time.monotonic()
            if delay > 0 and select.select([stop], [], [], delay)[0]:
                return
            readable, writable, _ = select.select([stop], [fd], [])
            if readable:
                return
            if writable:
                try:
                    with self._lock:
                        # ≤ PIPE_BUF: all or nothing, never partial
                        self._written += os.write(fd, self._block(i))
                except BlockingIOError:
                    continue  # room for less than a block: wait for more
                if i < self.blocks:
                    self.times.append(time.monotonic())
                    if i == self.blocks - 1:
                        self.done.set()
                i += 1
            if time.monotonic() - (start + i * self.interval) > 1.0:
                start = time.monotonic() - i * self.interval  # held back: no burst after


# --- the serial display: a pty behind a symlink --------------------------------------------------
class SerialDisplay:
    """A serial display at ``link`` (a symlink to a pty's slave, as udev names a USB adapter):
    one thread reads what the daemon writes. :meth:`unplug` closes the pty (the daemon's
    next write or poll fails); :meth:`plug` makes a new one behind the same name."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.bytes = 0
        self.lines = 0
        self._fds: tuple[int, int] | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)
        self._fds = (master, slave)
        self._thread = threading.Thread(target=self._run, args=(master,), name="soak-serial")
        self._thread.start()

    def unplug(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(5)
            os.read(self._stop_r, 16)
            self._thread = None
        if self._fds is not None:
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds = None

    def close(self) -> None:
        self.unplug()
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)

    def _run(self, master: int) -> None:
        while True:
            ready = select.select([master, self._stop_r], [], [])[0]
            if self._stop_r in ready:
                return
            try:
                data = os.read(master, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                return
            self.bytes += len(data)
            self.lines += data.count(b"\n")


# --- the socket client ---------------------------------------------------------------------------
@dataclass
class Final:
    seq: int
    text: str
    start: float | None
    end: float | None
    at: float  # time.monotonic() when it came


@dataclass
class Gap:
    seconds: float
    start: float | None
    end: float | None
    reason: str
    at: float


class Reader:
    """Reads the caption socket (one thread, blocked on recv): the final lines, the gaps,
    the latest status. Reconnects if the daemon closes it without ``bye`` (lines of the
    history sent again on a new connection are not counted twice)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.finals: list[Final] = []
        self.done = Counter[int]()
        self.done_msgs: dict[int, list[dict[str, Any]]] = {}
        self.gaps: list[Gap] = []
        self.parts: dict[str, str] = {}
        self.errors: list[str] = []
        self.messages = 0
        self.reconnects = 0
        self.bye = False
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="soak-socket-client")

    def connect(self, deadline: float) -> None:
        self._sock = self._open(deadline)
        self._thread.start()

    def _open(self, deadline: float) -> socket.socket:
        while True:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(str(self.path))
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the daemon never served {self.path}") from None
                time.sleep(0.1)

    def close(self) -> None:
        self._closing = True
        self._thread.join(10)
        if self._thread.is_alive() and self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._thread.join(5)

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def state(self, part: str) -> str:
        return self.parts.get(part, "")

    def _run(self) -> None:
        history_upto = 0  # a new connection sends the history again: seq up to here
        while True:
            assert self._sock is not None
            try:
                with self._sock, self._sock.makefile(encoding="utf-8") as lines:
                    for raw in lines:
                        self._take(json.loads(raw), history_upto)
            except (OSError, ValueError) as exc:
                self.errors.append(f"client: {exc}")
            if self.bye or self._closing:
                return
            try:  # closed without bye: the socket was made again (a reload of outputs)
                self._sock = self._open(time.monotonic() + 10)
            except TimeoutError:
                return
            self.reconnects += 1
            history_upto = max(self.done, default=0)

    def _take(self, m: dict[str, Any], history_upto: int) -> None:
        now = time.monotonic()
        kind = m.get("type")
        with self._cond:
            self.messages += 1
            if kind == "caption" and m.get("done"):
                seq = int(m["seq"])
                if seq <= history_upto and seq in self.done:
                    return  # history of a new connection
                self.done[seq] += 1
                self.done_msgs.setdefault(seq, []).append(
                    {"text": m["text"][:60], "start": m.get("start"), "at": now}
                )
                if m["text"] or m["translations"]:
                    self.finals.append(Final(seq, m["text"], m.get("start"), m.get("end"), now))
            elif kind == "gap":
                self.gaps.append(
                    Gap(m.get("seconds") or 0.0, m.get("start"), m.get("end"), m["reason"], now)
                )
            elif kind == "status":
                self.parts = {k: v.get("state", "") for k, v in m.get("parts", {}).items()}
            elif kind == "error":
                self.errors.append(f"{m.get('error')}: {m.get('message')}")
            elif kind == "bye":
                self.bye = True
            self._cond.notify_all()


# --- the daemon's configuration ------------------------------------------------------------------
def ini_text(sections: dict[str, dict[str, str]]) -> str:
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
        for name, keys in sections.items()
    )


def config_sections(
    service: str, directory: Path, port: int, ca_file: str, key_file: Path, serial: Path
) -> dict[str, dict[str, str]]:
    key = f"file:{key_file}"
    sections: dict[str, dict[str, str]] = {
        "daemon": {"service": service},
        "audio": {"source": "alsa", "device": DEVICE},
        "link": {"ca_file": ca_file, "replay_speed": f"{REPLAY[service]:g}"},
        "socket": {"path": str(directory / "captions.sock"), "client_buffer": "64K"},
        "serial": {"enabled": "yes", "device": str(serial)},
        "stdout": {"enabled": "no"},
        "log": {"target": "stderr"},
    }
    if service == "soniox":
        sections["soniox"] = {"url": f"wss://127.0.0.1:{port}/transcribe-websocket", "api_key": key}
    elif service == "azure":
        sections["azure"] = {"host": f"wss://127.0.0.1:{port}", "language": "en-US", "api_key": key}
    else:
        sections["sarvam"] = {
            "url": f"wss://127.0.0.1:{port}{SARVAM_PATH}",
            "language": "hi-IN",
            "api_key": key,
        }
    return sections


def write_key(path: Path, key: str) -> None:
    """The key file, replaced whole (mode 600: the daemon refuses a looser one)."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    tmp.replace(path)


# --- what the gate forwards ----------------------------------------------------------------------
@dataclass(frozen=True)
class Expected:
    frames: list[int]  # hash of each 20 ms frame the gate forwards, in order
    block_of: list[int]  # the feed's block each of those frames is in
    longest_utterance_s: float
    index: dict[int, int]  # hash → index in ``frames``


def gate_forwarded(pcm: bytes, resumes: Iterable[int] = ()) -> Expected:
    """The daemon's gate at its defaults on the same audio (webrtcvad is deterministic): the
    frames the service should receive, if nothing is lost.

    ``resumes``: samples where the daemon's stream began again after the microphone was
    lost. Its gate ends the utterance there and starts afresh — a new webrtcvad, whose
    noise estimate must learn the room again — so it forwards other frames for minutes
    after (a fresh detector at 41 s of a soak talk forwarded 5.4 s less of the following
    five minutes' speech, and other frames more). The gate here does the same at the same
    samples; without it that difference counted as speech lost unreported."""
    g = GateConfig()
    gate = SpeechGate(
        GateSettings(
            enabled=True,
            aggressiveness=g.aggressiveness,
            frame_ms=20,
            preroll_ms=round(g.preroll * 1000),
            hangover_ms=round(g.hangover * 1000),
            min_speech_ms=round(g.min_speech * 1000),
            max_utterance_s=g.max_utterance,
        )
    )
    frames: list[int] = []
    blocks: list[int] = []
    per_utterance: Counter[int] = Counter()

    def take(events: list) -> None:  # type: ignore[type-arg]
        for e in events:
            if isinstance(e, SpeechAudio):
                frames.append(hash(e.frame.pcm))
                blocks.append(e.frame.start * 2 // BLOCK_BYTES)
                per_utterance[e.utterance] += 1

    restarts = set(resumes)
    for frame in frames_of(pcm, 20):
        if frame.start in restarts:
            take(gate.flush("source_lost"))
        take(gate.feed(frame))
    take(gate.flush("end_of_input"))
    longest = max(per_utterance.values(), default=0) * FRAME_BYTES / 2 / SAMPLE_RATE
    index: dict[int, int] = {}
    for i, h in enumerate(frames):
        index.setdefault(h, i)
    return Expected(frames, blocks, longest, index)


def seen_frames(emu: Emulator) -> set[int]:
    seen: set[int] = set()
    for pcm in session_pcm(emu):
        for off in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
            seen.add(hash(pcm[off : off + FRAME_BYTES]))
    return seen


# --- /proc ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    t: float
    rss_kb: int
    threads: int
    fds: int


def proc_sample(pid: int) -> Sample | None:
    try:
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        threads = len(os.listdir(f"/proc/{pid}/task"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    return Sample(time.monotonic(), rss, threads, fds) if rss else None


# --- the faults ----------------------------------------------------------------------------------
@dataclass
class FaultRecord:
    kind: str
    start: float  # time.monotonic()
    end: float = 0.0  # recovered (or given up)
    observed: bool = False  # the daemon showed the fault (status, log, a refusal counted)
    recovered: bool = False
    note: str = ""
    caught_up: bool = True  # the link had caught up when it began (no backlog)


@dataclass
class Rig:
    service: str
    emu: Emulator
    proxy: FaultProxy
    mic: Mic
    serial: SerialDisplay
    reader: Reader
    proc: subprocess.Popen[bytes]
    ini: Path
    sections: dict[str, dict[str, str]]
    key_file: Path
    log: Path
    sock: Path
    expected: Expected
    keys: int = 0


class Driver:
    """Runs the fault schedule on one thread ("soak-faults") from ``begin`` until
    ``until`` (time.monotonic()), a whole round at least; every wait ends at :meth:`stop`."""

    def __init__(self, rig: Rig, begin: float, until: float) -> None:
        self.rig = rig
        self.begin = begin
        self.until = until
        self.records: list[FaultRecord] = []
        self.stalled: set[int] = set()  # sessions a stall held (see ``violations``)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-faults")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(RECOVER_S + 30)

    def _run(self) -> None:
        try:
            if self._stop.wait(max(0.0, self.begin - time.monotonic())):
                return
            n = 0
            while not self._stop.is_set():
                if n >= len(SCHEDULE) and time.monotonic() >= self.until:
                    return
                kind = SCHEDULE[n % len(SCHEDULE)]
                caught_up = self._settle()
                if self._stop.is_set():
                    return
                progress(f"[{self.rig.service}] fault {n + 1}: {kind}")
                record = FaultRecord(kind, time.monotonic(), caught_up=caught_up)
                self.records.append(record)
                getattr(self, f"_{kind}")(record)
                record.end = time.monotonic()
                if not record.recovered:
                    progress(f"[{self.rig.service}] !! {kind} not recovered: {record.note}")
                n += 1
                self._stop.wait(SPACING_S)
        except BaseException as exc:  # surfaced by the owner after the run
            self.error = exc

    # -- helpers ---------------------------------------------------------------------------
    def _settle(self) -> bool:
        """Before a fault: the link connected and caught up (the service has the speech fed
        up to CATCHUP_S ago), so that the fault starts with an empty backlog. False if it
        did not catch up within CATCHUP_WAIT_S."""
        r = self.rig.reader
        r.wait(lambda: r.state("link") == "connected" or self._stop.is_set(), RECOVER_S)
        deadline = time.monotonic() + CATCHUP_WAIT_S
        while not self._caught_up():
            if time.monotonic() > deadline:
                return False
            if self._stop.wait(0.5):
                return True
        return True

    def _caught_up(self) -> bool:
        rig = self.rig
        target = len(rig.mic.times) - int(CATCHUP_S / BLOCK_S)  # a block fed CATCHUP_S ago
        want = bisect.bisect_right(rig.expected.block_of, target) - 1  # the gate's frame then
        if want < 0:
            return True
        got = newest_frame(rig.emu, rig.expected.index)
        return got is not None and got >= want

    def _sessions(self) -> int:
        return len(self.rig.emu.sessions)

    def _recovered(self, record: FaultRecord, after: int, audio_s: float = 1.0) -> None:
        """A session from index ``after`` on received ``audio_s`` of audio."""
        emu = self.rig.emu
        need = int(audio_s * SAMPLE_RATE * 2)

        def ok() -> bool:
            return self._stop.is_set() or any(
                session_audio_bytes(emu, s) >= need for s in emu.sessions[after:]
            )

        deadline = time.monotonic() + RECOVER_S
        while time.monotonic() < deadline and not ok():
            emu.wait_for(ok, 1.0)  # the lock's waiters are woken on every record change
        record.recovered = ok() and not self._stop.is_set()
        if not record.recovered:
            record.note += f" no new session with {audio_s:g} s of audio in {RECOVER_S:g} s;"

    def _state(self, part: str, states: tuple[str, ...], timeout: float) -> bool:
        r = self.rig.reader
        return r.wait(lambda: r.state(part) in states or self._stop.is_set(), timeout)

    def _log_count(self, text: str) -> int:
        return self.rig.log.read_text(errors="replace").count(text)

    def _wait_log(self, text: str, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._log_count(text) >= count:
                return True
            if self._stop.wait(0.2):
                return False
        return False

    def _plan(self, **plan: Any) -> None:
        emu = self.rig.emu
        if isinstance(emu, AzureEmulator):
            emu.plan(AzurePlan(**plan))
        elif isinstance(emu, SarvamEmulator):
            emu.plan(SarvamPlan(**plan))
        else:
            emu.plan(SonioxPlan(**plan))

    def _refuse(self, status: int) -> None:
        emu = self.rig.emu
        if isinstance(emu, RefusingSoniox):
            emu.refuse_next(status)
        else:
            self._plan(refuse=status)

    def _refused_then_back(self, record: FaultRecord, statuses: tuple[int, ...]) -> None:
        before = self.rig.emu.connections
        sessions = self._sessions()
        for status in statuses:
            self._refuse(status)
        self.rig.proxy.cut()
        self._recovered(record, sessions)
        record.observed = self.rig.emu.connections - before > len(statuses)

    # -- the faults ----------------------------------------------------------------------------
    def _cut(self, record: FaultRecord) -> None:
        sessions = self._sessions()
        self.rig.proxy.cut()
        record.observed = True
        self._recovered(record, sessions)

    def _tcp_refuse(self, record: FaultRecord) -> None:
        px = self.rig.proxy
        refused, sessions = px.refused, self._sessions()
        px.refuse(TCP_REFUSE_S)
        px.cut()
        self._recovered(record, sessions)
        record.observed = px.refused > refused
        record.note += f" {px.refused - refused} connections refused;"

    def _refuse_4xx(self, record: FaultRecord) -> None:
        self._refused_then_back(record, (408,))

    def _refuse_5xx(self, record: FaultRecord) -> None:
        self._refused_then_back(record, (502, 502))

    def _error_503(self, record: FaultRecord) -> None:
        if isinstance(self.rig.emu, RefusingSoniox):
            self._mid_session(record, error=503, error_after_ms=1500)
        else:
            self._refused_then_back(record, (503,))

    def _close_1011(self, record: FaultRecord) -> None:
        if isinstance(self.rig.emu, RefusingSoniox):
            self._mid_session(record, error=500, error_after_ms=1500, close_code=1011)
        else:
            self._mid_session(record, close_after_ms=1500, close_code=1011)

    def _mid_session(self, record: FaultRecord, **plan: Any) -> None:
        """The next session fails on its own after 1.5 s of audio: a cut starts it."""
        sessions = self._sessions()
        self._plan(**plan)
        self.rig.proxy.cut()
        emu = self.rig.emu
        emu.wait_for(
            lambda: len(emu.sessions) > sessions and emu.sessions[sessions].fault is not None,
            RECOVER_S,
        )
        faulted = emu.sessions[sessions] if len(emu.sessions) > sessions else None
        record.observed = faulted is not None and faulted.fault is not None
        self._recovered(record, sessions + 1)

    def _stall(self, record: FaultRecord) -> None:
        emu = self.rig.emu
        sessions = self._sessions()
        self.stalled.update(s.index for s in emu.sessions if not s.done)
        self.rig.proxy.stall()
        try:
            # the link notices the dead connection (dead_after) and retries
            record.observed = self._state("link", ("retrying", "connecting"), STALL_S)
            self._stop.wait(max(0.0, record.start + STALL_S - time.monotonic()))
        finally:
            self.rig.proxy.resume()
        self._recovered(record, sessions)

    def _key_rejected(self, record: FaultRecord) -> None:
        rig = self.rig
        rig.keys += 1
        new_key = f"soak-key-{rig.keys}"
        sessions = self._sessions()
        rig.emu.api_key = new_key  # the service no longer takes the old key
        rig.proxy.cut()
        record.observed = self._state("link", ("rejected",), 30)
        if not record.observed:
            record.note += " the link never said rejected;"
        write_key(rig.key_file, new_key)
        rig.proc.send_signal(signal.SIGHUP)
        self._recovered(record, sessions)

    def _mic_vanish(self, record: FaultRecord) -> None:
        mic = self.rig.mic
        mic.pull()
        record.observed = self._state("audio", ("device_missing",), 20)
        if not record.observed:
            record.note += " the daemon never said device_missing;"
        self._stop.wait(2.0)
        mic.resumes.append(mic.read_position())  # the daemon reads again from here
        mic.plug()
        record.recovered = self._state("audio", ("listening", "speech"), RECOVER_S)
        if not record.recovered:
            record.note += " the microphone was not reopened;"

    def _serial_unplug(self, record: FaultRecord) -> None:
        display = self.rig.serial
        display.unplug()
        record.observed = self._state("output:serial", ("unavailable",), 20)
        if not record.observed:
            record.note += " the daemon never said the serial output is unavailable;"
        self._stop.wait(1.0)
        display.plug()
        record.recovered = self._state("output:serial", ("ok",), RECOVER_S)
        if not record.recovered:
            record.note += " the serial output was not reopened;"

    def _slow_client(self, record: FaultRecord) -> None:
        sock = socket.socket(socket.AF_UNIX)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            sock.connect(str(self.rig.sock))
            self._stop.wait(SLOW_CLIENT_S)
            sock.setblocking(False)
            closed = False
            with contextlib.suppress(BlockingIOError, ConnectionResetError):
                while chunk := sock.recv(1 << 16):
                    if b'"slow_client"' in chunk:
                        record.note += " cut as a slow client;"
                closed = True
            record.observed = True
            record.note += " the daemon closed it;" if closed else " still connected;"
        finally:
            sock.close()
        r = self.rig.reader
        finals = len(r.finals)
        record.recovered = r.wait(lambda: len(r.finals) > finals or self._stop.is_set(), 30)

    def _reload(self, sections: dict[str, dict[str, str]], extra: str = "") -> None:
        self.rig.ini.write_text(ini_text(sections) + extra)
        self.rig.proc.send_signal(signal.SIGHUP)

    def _reload_good(self, record: FaultRecord) -> None:
        rig = self.rig
        link = rig.sections["link"]
        link["idle_close"] = "61s" if link.get("idle_close") != "61s" else "60s"
        sessions = self._sessions()
        self._reload(rig.sections)
        self._recovered(record, sessions)
        # the link was replaced: the session of the old one was ended by the daemon (the
        # log's line for it is folded when it repeats: the emulator's record is not)
        emu = rig.emu
        old = emu.sessions[sessions - 1] if sessions else None
        if isinstance(old, SonioxSession):
            record.observed = old.end_received
        else:
            record.observed = old is not None and old.client_close_code is not None
        if not record.observed:
            record.note += " the old session was not ended by the daemon;"

    def _reload_bad(self, record: FaultRecord) -> None:
        rig = self.rig
        refused = self._log_count("reload refused, config unchanged")
        self._reload(rig.sections, "[gate]\naggressiveness = 9\n")
        record.observed = self._wait_log("reload refused, config unchanged", refused + 1, 20)
        rig.ini.write_text(ini_text(rig.sections))  # the good one back (no SIGHUP needed)
        r = rig.reader
        finals = len(r.finals)
        record.recovered = r.wait(lambda: len(r.finals) > finals or self._stop.is_set(), 30)
        record.recovered &= rig.proc.poll() is None


# --- one service ---------------------------------------------------------------------------------
def talk_pcm(directory: Path, audio_s: float, pace: float, seed: int) -> tuple[bytes, float, int]:
    """Corpus talk of ``audio_s`` then QUIET_WALL_S of quiet at ``pace``: (pcm, talk seconds,
    clips)."""
    audio = build_wav(directory, audio_s / 60, QUIET_WALL_S * pace / 60, seed=seed)
    with wave.open(str(audio.path), "rb") as w:
        pcm = w.readframes(w.getnframes())
    audio.path.unlink()
    return pcm, audio.talk_s, audio.clips


def run_service(service: str, audio_s: float, seed: int) -> dict[str, Any]:
    pace = PACE[service]
    with tempfile.TemporaryDirectory(prefix=f"edgecap-soak-{service}-") as tmp:
        directory = Path(tmp)
        progress(f"[{service}] {audio_s / 60:.1f} min of talk at {pace:g}x: building the audio")
        pcm, talk_s, clips = talk_pcm(directory, audio_s, pace, seed)
        expected = gate_forwarded(pcm)
        emu = make_emulator(service, directory / "emu")
        try:
            with FaultProxy(("127.0.0.1", emu.port)) as proxy:
                result = soak(service, directory, pcm, talk_s, emu, proxy, expected)
        finally:
            emu.close()
        result["audio"] |= {"clips": clips, "talk_s": talk_s}
        return result


def soak(
    service: str,
    directory: Path,
    pcm: bytes,
    talk_s: float,
    emu: Emulator,
    proxy: FaultProxy,
    expected: Expected,
) -> dict[str, Any]:
    pace = PACE[service]
    key_file = directory / "service.key"
    write_key(key_file, KEY0)
    serial = SerialDisplay(directory / "ttySOAK0")
    serial.plug()
    sections = config_sections(service, directory, proxy.port, emu.ca_file, key_file, serial.link)
    ini = directory / "edgecap.ini"
    ini.write_text(ini_text(sections))
    log = directory / "daemon.log"
    mic = Mic(directory, pcm, pace)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env.pop("NOTIFY_SOCKET", None)
    env |= mic.env
    samples: list[Sample] = []
    driver: Driver | None = None
    term_at: float | None = None
    reader = Reader(Path(sections["socket"]["path"]))
    mic.start()
    try:
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [*edgecap_command(), "run", "-c", str(ini)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                cwd=REPO,
            )
        started = time.monotonic()
        try:
            reader.connect(started + 60)
            rig = Rig(service, emu, proxy, mic, serial, reader, proc, ini, sections, key_file,
                      log, Path(sections["socket"]["path"]), expected)  # fmt: skip
            talk_wall = talk_s / pace
            begin = started + LEAD_S
            driver = Driver(rig, begin, started + talk_wall * FAULT_SHARE)
            driver.start()
            next_note = started + 60
            while proc.poll() is None:
                s = proc_sample(proc.pid)
                if s is not None:
                    samples.append(s)
                now = time.monotonic()
                if now >= next_note:
                    progress(
                        f"[{service}] {now - started:5.0f} s: {len(mic.times) * BLOCK_S:6.0f} s "
                        f"of audio fed, {len(reader.finals)} finals, {len(driver.records)} faults"
                    )
                    next_note += 60
                if term_at is None and mic.done.is_set() and not driver._thread.is_alive():
                    term_at = time.monotonic()
                    proc.send_signal(signal.SIGTERM)
                if term_at is not None and now > term_at + STOP_LIMIT_S:
                    progress(f"[{service}] !! the daemon did not exit after SIGTERM: killed")
                    proc.kill()
                if term_at is None and now > started + talk_wall * 3 + 600:
                    progress(f"[{service}] !! the run overran: stopping the faults and the daemon")
                    driver.stop()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(SAMPLE_S)
        finally:
            if driver is not None:
                driver.stop()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            ended = time.monotonic()
            reader.close()
    finally:
        mic.stop()
        serial.close()
    if driver is not None and driver.error is not None:
        raise RuntimeError(f"the fault driver failed: {driver.error!r}") from driver.error
    if mic.error is not None:
        raise RuntimeError(f"the microphone feed failed: {mic.error!r}") from mic.error
    text = log.read_text(errors="replace")
    if mic.resumes:
        # the daemon's gate started afresh where the microphone came back: so does this one
        expected = gate_forwarded(pcm, mic.resumes)
        odd = [r for r in mic.resumes if r % (FRAME_BYTES // 2)]
        if odd:
            progress(f"[{service}] !! the stream came back off the frame grid at {odd}")
    figures = analyse(
        service=service,
        expected=expected,
        seen=seen_frames(emu),
        mic_times=mic.times,
        records=driver.records if driver is not None else [],
        reader=reader,
        samples=samples,
        term_at=term_at,
        log_text=text,
        exit_status=proc.returncode,
    )
    figures["audio"] = {"fed_s": len(mic.times) * BLOCK_S, "pace": pace}
    figures["schedule"] = list(SCHEDULE)
    figures["mic_resumes_s"] = [r / SAMPLE_RATE for r in mic.resumes]
    figures["wall_s"] = ended - started
    stalled = driver.stalled if driver is not None else set()
    figures["sessions"] = session_summaries(emu, expected, t_base=samples[0].t if samples else 0)
    figures["service_side"] = {
        "sessions": len(emu.sessions),
        "connections": emu.connections,
        "violations": violations(emu, stalled)[0],
        "violations_of_stalled_sessions": violations(emu, stalled)[1],
        "proxy_refused": proxy.refused,
    }
    figures["serial"] = {"bytes": serial.bytes, "lines": serial.lines}
    figures["failures"] = failures(figures)
    if figures["failures"]:
        keep = REPO / "build" / f"soak-{service}-daemon.log"
        keep.parent.mkdir(exist_ok=True)
        keep.write_text(text)
        figures["log_kept"] = str(keep.relative_to(REPO))
    return figures


# --- the figures and the checks ------------------------------------------------------------------
def mode_of(values: list[int]) -> int | None:
    return Counter(values).most_common(1)[0][0] if values else None


def duplicates(finals: list[Final], done: Counter[int], gaps: list[Gap]) -> list[str]:
    """Lines delivered twice: a seq done twice, or the same text twice over overlapping
    capture times (not inside a reported gap)."""
    out = [f"seq {seq} done {n} times" for seq, n in sorted(done.items()) if n > 1]
    spans = [(g.start, g.end) for g in gaps if g.start is not None and g.end is not None]

    def in_gap(f: Final) -> bool:
        return any(a <= (f.start or 0) <= b or a <= (f.end or 0) <= b for a, b in spans)

    ordered = sorted(finals, key=lambda f: f.seq)
    for i, f in enumerate(ordered):
        if f.start is None or f.end is None or not f.text:
            continue
        for g in ordered[max(0, i - 30) : i]:
            if g.text != f.text or g.start is None or g.end is None:
                continue
            if max(f.start, g.start) < min(f.end, g.end) and not (in_gap(f) or in_gap(g)):
                out.append(f"seq {g.seq} and {f.seq}: the same text over the same audio")
    return out


def analyse(
    *,
    service: str,
    expected: Expected,
    seen: set[int],
    mic_times: array,  # type: ignore[type-arg]
    records: list[FaultRecord],
    reader: Reader,
    samples: list[Sample],
    term_at: float | None,
    log_text: str,
    exit_status: int | None,
) -> dict[str, Any]:
    buffer_s = LinkConfig().buffer
    pace = PACE[service]
    fed_blocks = len(mic_times)
    # speech the gate forwards of the audio fed that no session received
    lost_at = [
        i
        for i, (h, b) in enumerate(zip(expected.frames, expected.block_of, strict=True))
        if b < fed_blocks and h not in seen
    ]
    missing = len(lost_at)
    stretches: list[list[int]] = []  # [first, last] index into expected.frames
    for i in lost_at:
        if stretches and i == stretches[-1][1] + 1:
            stretches[-1][1] = i
        else:
            stretches.append([i, i])
    t_base = samples[0].t if samples else 0.0

    def latest_fault(t: float) -> str:
        before = [r for r in records if r.start <= t]
        return f"{before[-1].kind} at {before[-1].start - t_base:.0f} s" if before else "-"

    missing_stretches = []
    for a, b in sorted(stretches, key=lambda ab: ab[0] - ab[1])[:12]:
        fed_at = mic_times[expected.block_of[a]]
        missing_stretches.append(
            {
                "s": (b - a + 1) * FRAME_BYTES / 2 / SAMPLE_RATE,
                "frames": [a, b],
                "fed_at_s": fed_at - t_base,
                "audio_at_s": expected.block_of[a] * BLOCK_S,
                "latest_fault": latest_fault(fed_at),
            }
        )
    expected_n = sum(1 for b in expected.block_of if b < fed_blocks)
    frame_s = FRAME_BYTES / 2 / SAMPLE_RATE
    reported = sum(g.seconds for g in reader.gaps)

    # the link outages: from the fault to the recovery; what was fed meanwhile
    unconfirmed = UNCONFIRMED_S[service]
    if unconfirmed is None:
        unconfirmed = expected.longest_utterance_s
    outages = []
    for r in records:
        if r.kind in LINK_OUTAGES:
            fed_s = (r.end - r.start) * pace
            if not r.caught_up:  # a backlog from before: the buffer may be full already
                fed_s = buffer_s
            outages.append(
                {
                    "kind": r.kind,
                    "start": r.start,
                    "end": r.end,
                    "fed_s": fed_s,
                    "may_lose": fed_s + unconfirmed >= buffer_s,
                }
            )
    gaps = []
    for g in reader.gaps:
        # a gap is reported when the buffer overflowed, or at the end of the outage
        cause = next(  # the latest outage that began before it
            (o for o in reversed(outages) if o["start"] - 1 <= g.at <= o["end"] + 30), None
        )
        at_stop = term_at is not None and g.at >= term_at
        gaps.append(
            {
                "seconds": g.seconds,
                "reason": g.reason,
                "after_s": None if cause is None else g.at - cause["start"],
                "fault": None if cause is None else cause["kind"],
                "fault_may_lose": None if cause is None else cause["may_lose"],
                "at_stop": at_stop,
            }
        )
    # /proc: the first and last quarters; the counts before the first fault and at the end
    first_fault = records[0].start if records else None
    rss_first = rss_last = None
    threads = fds = {"start": None, "end": None}
    if samples:
        t0, t1 = samples[0].t, samples[-1].t
        q = (t1 - t0) / 4
        rss_first = statistics.median(s.rss_kb for s in samples if s.t <= t0 + q) / 1024
        rss_last = statistics.median(s.rss_kb for s in samples if s.t >= t1 - q) / 1024
        before = [s for s in samples if first_fault is None or s.t < first_fault][-5:]
        end = [s for s in samples if term_at is None or s.t < term_at][-5:]
        threads = {
            "start": mode_of([s.threads for s in before]),
            "end": mode_of([s.threads for s in end]),
        }
        fds = {"start": mode_of([s.fds for s in before]), "end": mode_of([s.fds for s in end])}
    faults = Counter(r.kind for r in records)
    return {
        "service": service,
        "exit_status": exit_status,
        "starts": log_text.count("edgecap starting"),
        "tracebacks": log_text.count("Traceback"),
        "log_errors": [ln for ln in log_text.splitlines() if " ERROR " in ln][:20],
        "faults": dict(sorted(faults.items())),
        "fault_records": [
            {
                "kind": r.kind,
                "at_s": r.start - (samples[0].t if samples else r.start),
                "took_s": r.end - r.start,
                "observed": r.observed,
                "recovered": r.recovered,
                "caught_up": r.caught_up,
                "note": r.note.strip(),
            }
            for r in records
        ],
        "captions": {
            "finals": len(reader.finals),
            "messages": reader.messages,
            "duplicates": duplicates(reader.finals, reader.done, reader.gaps),
            "reconnects": reader.reconnects,
            "client_errors": reader.errors,
            "bye": reader.bye,
        },
        "speech": {
            "expected_s": expected_n * frame_s,
            "missing_s": missing * frame_s,
            "reported_lost_s": reported,
            "longest_utterance_s": expected.longest_utterance_s,
            "buffer_s": buffer_s,
            "mic_faults": faults.get("mic_vanish", 0),
        },
        "gaps": gaps,
        "missing_stretches": missing_stretches,
        "duplicate_detail": {
            seq: reader.done_msgs.get(seq, []) for seq, n in reader.done.items() if n > 1
        },
        "outages": [
            {k: v for k, v in o.items() if k not in ("start", "end")} | {"s": o["end"] - o["start"]}
            for o in outages
        ],
        "rss_mb": {
            "first_quarter": rss_first,
            "last_quarter": rss_last,
            "growth": None if rss_first is None else rss_last - rss_first,  # type: ignore[operator]
            "peak": max((s.rss_kb for s in samples), default=0) / 1024,
        },
        "threads": threads,
        "fds": fds,
    }


def failures(r: dict[str, Any]) -> list[str]:
    """Every check the figures of one service fail (empty: it passed)."""
    out = []
    if r["exit_status"] != 0:
        out.append(f"exit status {r['exit_status']} after SIGTERM")
    if r["starts"] != 1:
        out.append(f"{r['starts']} daemon starts in the log")
    if r["tracebacks"]:
        out.append(f"{r['tracebacks']} tracebacks in the log")
    for f in r["fault_records"]:
        if not f["observed"] or not f["recovered"]:
            what = "not observed" if not f["observed"] else "not recovered"
            out.append(f"fault {f['kind']} at {f['at_s']:.0f} s {what}: {f['note']}")
    missing_kinds = [k for k in r.get("schedule", FAULTS) if k not in r["faults"]]
    if missing_kinds:
        out.append(f"faults never injected: {', '.join(missing_kinds)}")
    c = r["captions"]
    if c["duplicates"]:
        out.append(f"{len(c['duplicates'])} duplicate finals: {'; '.join(c['duplicates'][:3])}")
    if not c["finals"]:
        out.append("no final caption at all")
    if not c["bye"]:
        out.append("the socket client got no bye")
    s = r["speech"]
    slack = LOSS_SLACK_S + MIC_SLACK_S * s["mic_faults"]
    if s["missing_s"] > s["reported_lost_s"] + slack:
        out.append(
            f"speech lost unreported: {s['missing_s']:.1f} s never reached the service, "
            f"{s['reported_lost_s']:.1f} s reported lost"
        )
    for g in r["gaps"]:
        if g["at_stop"]:
            continue
        if g["fault"] is None:
            out.append(f"{g['seconds']:.1f} s lost without an outage ({g['reason']})")
        elif not g["fault_may_lose"]:
            out.append(
                f"{g['seconds']:.1f} s lost after a {g['fault']} too short to fill the "
                f"buffer ({g['reason']})"
            )
    if r["service_side"]["violations"]:
        out.append(f"service-side violations: {'; '.join(r['service_side']['violations'][:3])}")
    growth = r["rss_mb"]["growth"]
    if growth is None or growth >= RSS_LIMIT_MB:
        out.append(f"RSS growth {growth} MB (limit {RSS_LIMIT_MB:g})")
    for name in ("threads", "fds"):
        v = r[name]
        if v["start"] is None or v["start"] != v["end"]:
            out.append(f"{name}: {v['start']} at the start, {v['end']} at the end")
    return out


# --- the report ----------------------------------------------------------------------------------
def report(results: list[dict[str, Any]]) -> None:
    print("Soak: the daemon under a fault schedule (bench/soak.py; docs/soak.md)")
    print(
        f"{'service':8s} {'audio h':>7s} {'wall s':>7s} {'pace':>5s} {'faults':>6s} "
        f"{'finals':>6s} {'dups':>4s} {'gaps':>4s} {'lost s':>6s} {'unrep s':>7s} "
        f"{'RSS MB start/end/+':>19s} {'thr s/e':>7s} {'fds s/e':>7s} {'tb':>3s}  verdict"
    )
    for r in results:
        s, rss = r["speech"], r["rss_mb"]
        unreported = max(0.0, s["missing_s"] - s["reported_lost_s"])
        rss_text = (
            f"{rss['first_quarter']:.1f}/{rss['last_quarter']:.1f}/{rss['growth']:+.1f}"
            if rss["growth"] is not None
            else "-"
        )
        print(
            f"{r['service']:8s} {r['audio']['fed_s'] / 3600:7.3f} {r['wall_s']:7.0f} "
            f"{r['audio']['pace']:5.1f} {sum(r['faults'].values()):6d} "
            f"{r['captions']['finals']:6d} {len(r['captions']['duplicates']):4d} "
            f"{len(r['gaps']):4d} {s['reported_lost_s']:6.1f} {unreported:7.1f} "
            f"{rss_text:>19s} {r['threads']['start']}/{r['threads']['end']:<5} "
            f"{r['fds']['start']}/{r['fds']['end']:<5} {r['tracebacks']:3d}  "
            + ("PASS" if not r["failures"] else "FAIL")
        )
    print()
    for r in results:
        faults = ", ".join(f"{k} {v}" for k, v in r["faults"].items())
        print(f"{r['service']}: faults injected: {faults}")
        slow = [f for f in r["fault_records"] if f["kind"] == "slow_client"]
        print(
            f"  speech: {r['speech']['expected_s']:.0f} s forwarded by the gate, "
            f"{r['speech']['missing_s']:.1f} s never reached the service, "
            f"{r['speech']['reported_lost_s']:.1f} s reported lost in {len(r['gaps'])} gaps; "
            f"sessions {r['service_side']['sessions']}, upgrades {r['service_side']['connections']}"
            f", TCP refusals {r['service_side']['proxy_refused']}; pace violations "
            f"{len(r['service_side']['violations'])} (and "
            f"{len(r['service_side']['violations_of_stalled_sessions'])} on stalled sessions)"
            f"; serial "
            f"{r['serial']['lines']} lines; slow client: "
            + ("; ".join(f["note"] for f in slow) or "-")
        )
        for g in r["gaps"]:
            print(
                f"  gap {g['seconds']:.1f} s ({g['reason']}) "
                + (
                    "at stop"
                    if g["at_stop"]
                    else f"after {g['fault']} (+{g['after_s']:.0f} s)"
                    if g["fault"]
                    else "with no outage"
                )
            )
        if r["failures"]:
            for m in r["missing_stretches"][:4]:
                print(
                    f"  never reached the service: {m['s']:.1f} s of speech fed at "
                    f"{m['fed_at_s']:.0f} s (audio {m['audio_at_s']:.0f} s; {m['latest_fault']})"
                )
            for seq, msgs in list(r["duplicate_detail"].items())[:3]:
                texts = " | ".join(f"{x['text'][:24]}… at {x['start']}" for x in msgs)
                print(f"  seq {seq} done {len(msgs)} times: {texts}")
        for f in r["failures"]:
            print(f"  !! {f}")
        if r.get("log_kept"):
            print(f"  the daemon's log: {r['log_kept']}")
    print()


def split_hours(total_s: float, services: list[str], spec: str) -> dict[str, float]:
    """``total_s`` of audio split between ``services`` by the weights in ``spec``
    ("soniox=0.4,azure=0.4,sarvam=0.2"); a service it does not name gets the mean of the
    weights it does (all even when it names none)."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{part!r} is not service=weight") from None
        if name.strip() not in SERVICES or not weight > 0:
            raise ValueError(f"{part!r}: a service of {', '.join(SERVICES)} and a weight > 0")
        weights[name.strip()] = weight
    named = [weights[s] for s in services if s in weights]
    mean = sum(named) / len(named) if named else 1.0
    chosen = {s: weights.get(s, mean) for s in services}
    whole = sum(chosen.values())
    return {s: total_s * w / whole for s, w in chosen.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="audio in all, see --shares")
    parser.add_argument(
        "--shares",
        default=",".join(f"{k}={v:g}" for k, v in DEFAULT_SHARES.items()),
        help="how --hours is split: service=weight, comma-separated (the services run take "
        "their weights' part; a service not named gets the mean weight)",
    )
    parser.add_argument(
        "--services", default=",".join(SERVICES), help="comma-separated, in this order"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help="comma-separated: the schedule's round"
    )
    parser.add_argument(
        "--results", type=Path, default=REPO / "bench" / "results.json", metavar="FILE"
    )
    parser.add_argument("--no-results", action="store_true", help="do not write --results")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here too")
    args = parser.parse_args()
    # the emulators' library logs a client's abrupt end (the faults make many) with a trace
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    unknown = [s for s in services if s not in SERVICES]
    if unknown or not services:
        parser.error(f"--services: one or more of {', '.join(SERVICES)}")
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    if not kinds or any(k not in FAULTS for k in kinds):
        parser.error(f"--faults: one or more of {', '.join(FAULTS)}")
    SCHEDULE[:] = kinds
    if not corpus_available():
        progress(f"the corpus is not at {CORPUS_DIR} (EDGECAP_CORPUS names it)")
        return 1
    try:
        shares = split_hours(args.hours * 3600, services, args.shares)
    except ValueError as exc:
        parser.error(f"--shares: {exc}")
    results = []
    wall = time.monotonic()
    rng = random.Random(args.seed)
    for service in services:  # one at a time: the machine has two cores
        audio_s = max(shares[service], round_floor_s(service))
        results.append(run_service(service, audio_s, rng.randrange(2**31)))
        report(results[-1:])
        sys.stdout.flush()
    if len(results) > 1:
        report(results)
    summary = {
        "hours_asked": args.hours,
        "shares_s": shares,
        "audio_hours": sum(r["audio"]["fed_s"] for r in results) / 3600,
        "wall_s": time.monotonic() - wall,
        "passed": not any(r["failures"] for r in results),
        "services": results,
    }
    if not args.no_results:
        merge_results(args.results, "soak", summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"(soak ran in {summary['wall_s']:.0f} s; {summary['audio_hours']:.2f} h of audio)")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
