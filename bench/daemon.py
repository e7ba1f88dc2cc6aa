"""Benchmark of the whole daemon's CPU per audio-hour on a cloud service (not a test).

    .venv/bin/python bench/daemon.py [--service azure|soniox|sarvam|local]
        [--mode recognition|translation] [--source alsa|wav]
        [--minutes 5] [--idle-minutes 1] [--hdmi] [--connect on_demand|warm] [--json FILE]
    .venv/bin/python bench/daemon.py --suite     # the offline engine, Azure translation,
                                                 # Soniox with the HDMI screen: one after
                                                 # the other (what bench/compare.py lacks)

The real daemon, ``edgecap run -c <generated ini>``, runs as a process of its own on the
bench's audio paced in real time, against the strict emulator of the service
(tests/emulators/azure.py, soniox.py or sarvam.py, in this process, over TLS on 127.0.0.1,
its CA in [link] ca_file) through the TCP fault proxy in pass-through
(tests/emulators/fault_proxy.py), which counts the bytes. ``--service local`` runs the
offline engine instead (pocketsphinx, no emulator, no proxy, no bytes); its decoding (the
"ec-local" thread and the engine's own process, whose CPU and memory count as the
daemon's) is reported apart from the rest of the daemon. Everything else is the
configuration's defaults (gate on, link on_demand, …). Outputs: the Unix socket, read by one
client here that counts the captions, and nothing else (stdout off); ``--hdmi`` adds the
HDMI output on a framebuffer file (1920×1080, 16 bpp: what a Pi's HDMI framebuffer is).

The audio reaches the daemon one of two ways (``--source``):
- ``alsa`` (the default: production's thread shape): ``[audio] source = alsa`` on a capture
  device of ALSA's ``file`` plugin (a ``null`` slave reading a FIFO, in a private ALSA
  configuration: the daemon's XDG_CONFIG_HOME; see ``AlsaFeed``), which a thread of this
  process feeds with the WAV's samples, one 100 ms block (3200 bytes, one PortAudio period
  of the daemon) every 100 ms. The daemon's capture read sleeps in the kernel until the
  block is there, as on a microphone. There is no end of input: the bench stops the daemon
  with SIGTERM at the end of the idle phase, and goes on writing quiet noise until it exits
  (a microphone does not stop). The writer's CPU is this process's, not the daemon's.
- ``wav``: ``[audio] source = wav, realtime = yes``: the daemon reads the WAV itself and
  paces it (a timed wait per block), and ends at its end.

The WAV: corpus speech clips (bench.corpus, every language, in a seeded random order) with
2-4 s pauses of quiet room noise (about -60 dBFS) between them, cut at ``--minutes`` of
"talk"; then ``--idle-minutes`` of the same quiet noise (nobody speaks: the idle phase).
Azure is asked for en-US whatever a clip's language (the emulator recognises any audio),
Sarvam for hi-IN (saaras:v3 on /speech-to-text/ws; the emulator takes audio at up to
``SARVAM_MAX_SPEED`` × real time, so real time passes); translation: Azure into de and fr,
Soniox one-way into de (it takes one target), Sarvam mode = translate (into English).

Measured from /proc while the daemon runs (sampled every ``SAMPLE_S``), in CPU seconds of
utime + stime (10 ms ticks):
- the process: per phase — startup (exec to the audio's start), talk, idle, shutdown (end
  of the input to exit) — and the whole run (``getrusage`` of the reaped child, so nothing
  is missed); CPU-s per audio-hour of talk, per idle hour (and of the part after the link
  closed, when the idle phase is longer than [link] idle_close: ``--idle-minutes 3``), and
  per wall-hour of the whole run; peak RSS (VmHWM). The audio's start: for ``wav`` the
  capture thread's start (it opens the file and starts the WAV's clock first thing); for
  ``alsa`` the daemon's first capture read (``AlsaFeed``: block i is written at that
  moment + i × 100 ms). The end of the input: for ``wav`` its end (start + talk + idle);
  for ``alsa`` the SIGTERM, sent at start + talk + idle;
- each thread (``/proc/<pid>/task/*/stat``, named by edgecap's workers: "ec-capture",
  "ec-link", "ec-out-socket" …; the main thread is the supervisor): the
  same phases, and its wake-ups per second of talk and of idle (``voluntary_ctxt_switches``
  in ``/proc/<pid>/task/*/status``: the ``wakes`` of each ``threads`` row in the JSON, per
  phase); a thread that is not a Worker keeps the name it inherited ("edgecap": the
  OpenBLAS thread numpy starts at import, one per core but one, when something uses numpy:
  the screen, a resampled source, the offline engine). A thread that ended is
  counted up to its last sample, so the threads' sum can fall short of the process by what
  ended threads spent in their last ``SAMPLE_S``;
- bytes up and down at the proxy (TCP payload: TLS and WebSocket framing included);
- captions on the socket: final lines, caption messages (provisional updates included),
  translations, gaps; and what the emulator saw (sessions, seconds of audio, violations);
- the start: the daemon runs as systemd starts it (``Type=notify``): ``NOTIFY_SOCKET``
  names a datagram socket the bench reads (``NotifyListener``), ``WATCHDOG_USEC`` is the
  unit's; exec → READY=1 is ``ready.start_to_ready_s``;
- memory growth: the slope of VmRSS over the audio (its first 30 s left out), MB per hour
  of audio (``memory.rss_growth``);
- latency percentiles (``latency``, ms; the ALSA source only: its capture times are the
  bench's FIFO writes): an audio block captured → its bytes at the emulator (Soniox,
  Sarvam: the Azure emulator does not record when audio came); the emulator's message →
  the caption it caused read on the socket; a clip's speech end (bench.corpus's ground
  truth) → the final caption, and the same less the emulator's answer to the end of the
  utterance (see ``latency_figures``).

The official SDKs are not run here (bench/compare.py runs them, and the example client,
beside the daemon via ``run_daemon``); their figures from the issues (12, 13, 14) are
printed beside the result as anchors. ``--results FILE`` merges the figures into the
bench's results file (bench/results.json), keyed ``daemon-<service>-<mode>[-hdmi]`` for
the ALSA source, with ``-wav`` after it for the WAV source (and ``-warm`` for
``--connect warm``); the figures' ``setup`` and ``input`` say which source it was.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import contextlib
import dataclasses
import fcntl
import json
import os
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import CORPUS_DIR, clips, corpus_available, quiet_noise, speech_bounds
from edgecap.runtime.frames import BLOCK_MS, SAMPLE_RATE
from tests.emulators.azure import AzureEmulator
from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.sarvam import V3_PATH as SARVAM_PATH
from tests.emulators.sarvam import SarvamEmulator
from tests.emulators.soniox import SonioxEmulator

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key"
SAMPLE_S = 0.25  # /proc sampling interval
CLK_TCK = os.sysconf("SC_CLK_TCK")
ENGINE_TASK = "ec-engine (process)"  # the offline engine's process, as one row
PAUSE_S = (2.0, 4.0)
HDMI_GEOMETRY = (1920, 1080, 16)
TARGETS = {"azure": ("de", "fr"), "soniox": ("de",), "sarvam": ("en",)}
SERVICES = ("azure", "soniox", "sarvam", "local")
AZURE_PHRASE_PAUSE_MS = 500  # the Azure emulator's segment_silence_ms (a phrase per pause)
KEY_VARIABLES = {
    "azure": "AZURE_SPEECH_KEY",
    "soniox": "SONIOX_API_KEY",
    "sarvam": "SARVAM_API_KEY",
}
# The Sarvam emulator's pace limit: real time with the link's replay after a connect
# (pre-roll and what queued while connecting) inside the burst.
SARVAM_MAX_SPEED = 2.0
SARVAM_BURST_S = 3.0
Emulator = AzureEmulator | SonioxEmulator | SarvamEmulator
# Figures of the official clients on this kind of machine, from the issues (not run here).
ANCHORS = {
    "azure": "official Speech SDK: ~73 CPU-s per audio-hour at real time, 37 MB RSS",
    "soniox": "official SDK 29.6, Soniox's example client 11.9, edgecap then 108 "
    "CPU-s per audio-hour",
    "sarvam": "official SDK (sarvamai): ~5.3 CPU-s per audio-hour unpaced, 44 MB RSS",
    "local": "none (no peer: the offline engine's decoding is the cost)",
}
ANCHORS_SHORT = {
    "azure": "SDK 73 CPU-s/h, 37 MB",
    "soniox": "SDK 29.6, example client 11.9",
    "sarvam": "SDK 5.3 unpaced, 44 MB",
    "local": "-",
}
TARGET_CPU_PER_H = 10.0
PHASES = ("startup", "talk", "idle", "shutdown")
LATENCY_LABELS = {
    "capture_to_wire": "block captured → on the wire",
    "service_to_socket": "service message → socket client",
    "speech_end_to_final": "speech end → final caption",
    "emulator_answer": "the emulator's answer to the end of an utterance",
    "speech_end_to_final_less_answer": "speech end → final caption, less the emulator's answer",
}
SOURCES = ("alsa", "wav")
ALSA_DEVICE = "edgecap_bench_mic"
SOURCE_TEXT = {
    "alsa": f"ALSA capture ({ALSA_DEVICE}: file plugin on a FIFO the bench fills a 100 ms "
    "block at a time in real time)",
    "wav": "WAV paced in real time by the daemon",
}


def progress(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def boottime() -> float:
    """Seconds since boot: the clock /proc's start times are counted on."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


# --- the audio -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Audio:
    path: Path
    talk_s: float
    idle_s: float
    clips: int  # clips (or parts of one) in the talk
    speech_s: float  # of the talk, clip audio (the rest is pauses)
    # where each whole clip's speech ends (bench.corpus's energy ground truth), in samples
    # from the WAV's start: the "speech end" of the latency to the final caption
    speech_ends: tuple[int, ...] = ()


def build_wav(directory: Path, minutes: float, idle_minutes: float, seed: int = 7) -> Audio:
    """Corpus talk with 2-4 s pauses, cut at ``minutes``, then ``idle_minutes`` of quiet."""
    rng = random.Random(seed)
    speech = [c for c in clips() if c.category == "speech"]
    talk_n = round(minutes * 60 * SAMPLE_RATE)
    parts: list[bytes] = []
    have = speech_n = used = 0
    ends: list[int] = []
    order: list = []
    while have < talk_n:
        if not order:
            order = rng.sample(speech, len(speech))
        pause = quiet_noise(round(rng.uniform(*PAUSE_S) * SAMPLE_RATE), seed=rng.randrange(2**31))
        pcm = order.pop().pcm()
        for chunk, is_speech in ((pause, False), (pcm, True)):
            take = chunk[: max(0, talk_n - have) * 2]
            parts.append(take)
            if is_speech and len(take) == len(chunk):
                ends.append(have + speech_bounds(chunk)[1])
            have += len(take) // 2
            if is_speech and take:
                speech_n += len(take) // 2
                used += 1
    idle_n = round(idle_minutes * 60 * SAMPLE_RATE)
    parts.append(quiet_noise(idle_n, seed=seed + 1))
    path = directory / "talk.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for part in parts:
            w.writeframes(part)
    return Audio(
        path, talk_n / SAMPLE_RATE, idle_n / SAMPLE_RATE, used, speech_n / SAMPLE_RATE, tuple(ends)
    )


# --- the configuration ---------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    service: str  # azure, soniox, sarvam or local
    mode: str  # recognition or translation
    hdmi: bool = False
    source: str = "alsa"  # how the audio comes in: alsa (as in production) or wav
    connect: str = "on_demand"  # [link] connect: the default, or warm (the idle costs)

    @property
    def label(self) -> str:
        return (
            f"{self.service} {self.mode}"
            + (" + hdmi" if self.hdmi else "")
            + f", {self.source}"
            + (f", {self.connect}" if self.connect != "on_demand" else "")
        )


def write_config(
    directory: Path, setup: Setup, audio: Audio, port: int, ca_file: str
) -> tuple[Path, Path]:
    """The daemon's ini (defaults but for where things are); returns (ini, socket path)."""
    sock = directory / "captions.sock"
    source = (
        {"source": "alsa", "device": ALSA_DEVICE}  # found by name in the daemon's asoundrc
        if setup.source == "alsa"
        else {"source": "wav", "file": str(audio.path), "realtime": "yes"}
    )
    sections: dict[str, dict[str, str]] = {
        "daemon": {"service": setup.service},
        "audio": source,
        "socket": {"path": str(sock)},
        "stdout": {"enabled": "no"},
        "log": {"target": "stderr"},
    }
    if setup.service != "local":
        sections["link"] = {"ca_file": ca_file}
        if setup.connect != "on_demand":
            sections["link"]["connect"] = setup.connect
    targets = TARGETS.get(setup.service, ())
    if setup.service == "local":
        pass  # [local]'s defaults: pocketsphinx and its built-in en-US model
    elif setup.service == "sarvam":
        sarvam = {"url": f"wss://127.0.0.1:{port}{SARVAM_PATH}", "language": "hi-IN"}
        if setup.mode == "translation":
            sarvam["mode"] = "translate"
        sections["sarvam"] = sarvam
    elif setup.service == "azure":
        azure = {"host": f"wss://127.0.0.1:{port}", "language": "en-US"}
        if setup.mode == "translation":
            azure |= {"mode": "translation", "targets": ", ".join(targets)}
        sections["azure"] = azure
    else:
        soniox = {"url": f"wss://127.0.0.1:{port}/transcribe-websocket"}
        if setup.mode == "translation":
            soniox |= {"translation": "one_way", "target_language": targets[0]}
        sections["soniox"] = soniox
    if setup.hdmi:
        width, height, bpp = HDMI_GEOMETRY
        fb = directory / "fb0"
        fb.write_bytes(bytes(width * height * bpp // 8))
        (directory / "sysfs").mkdir()
        sections["hdmi"] = {
            "enabled": "yes",
            "device": str(fb),
            "sysfs": str(directory / "sysfs"),
            "width": str(width),
            "height": str(height),
            "bpp": str(bpp),
        }
    ini = directory / "edgecap.ini"
    ini.write_text(
        "".join(
            f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
            for name, keys in sections.items()
        )
    )
    return ini, sock


# --- /proc -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskStat:
    name: str
    cpu: float  # utime + stime, s
    start: float  # boot time of the task's start, s
    wakes: int = 0  # voluntary context switches: each is a sleep, and a wake-up after it


def read_stat(path: Path) -> TaskStat:
    """/proc/<pid>[/task/<tid>]/stat: comm, utime + stime, starttime."""
    text = path.read_text()
    head, _, tail = text.rpartition(")")  # comm may hold spaces and parentheses
    name = head.partition("(")[2]
    fields = tail.split()  # fields[0] is field 3 (state)
    utime, stime, start = int(fields[11]), int(fields[12]), int(fields[19])
    return TaskStat(name, (utime + stime) / CLK_TCK, start / CLK_TCK)


def read_wakes(path: Path) -> int:
    """/proc/<pid>/task/<tid>/status: voluntary_ctxt_switches, the times the thread slept
    (and so woke again). On a virtual machine a wake-up costs far more CPU than the work a
    thread of this daemon does per block, so the count explains most of a thread's CPU."""
    for line in path.read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def read_memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


@dataclass
class Sample:
    t: float  # boot time
    cpu: float  # the process: utime + stime of every thread, ended ones included
    threads: dict[int, TaskStat]
    rss_kb: int
    hwm_kb: int
    up: int  # proxy bytes so far
    down: int
    live: int  # connections through the proxy


def sample(pid: int, proxy: FaultProxy | None) -> Sample | None:
    t = boottime()
    try:
        proc = read_stat(Path(f"/proc/{pid}/stat"))
        rss, hwm = read_memory(pid)
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return None
    threads = {}
    children: list[int] = []
    for tid in tids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            task = read_stat(Path(f"/proc/{pid}/task/{tid}/stat"))
            wakes = read_wakes(Path(f"/proc/{pid}/task/{tid}/status"))
            threads[int(tid)] = dataclasses.replace(task, wakes=wakes)
            children += map(int, Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
    if proc.name == "" or not rss:  # a zombie: its memory is gone
        return None
    # The offline engine's process (services/local/process.py): its CPU is the daemon's
    # (the end's RUSAGE_CHILDREN counts it too, once reaped), one row named ENGINE_TASK,
    # and its memory is the box's.
    cpu = proc.cpu
    for child in children:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            task = read_stat(Path(f"/proc/{child}/stat"))
            wakes = read_wakes(Path(f"/proc/{child}/status"))
            c_rss, c_hwm = read_memory(child)
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            # anything else is short-lived (ctypes' find_library runs ldconfig at start)
            engine = b"edgecap.services.local.child" in cmdline
            name = ENGINE_TASK if engine else f"{task.name} (child process)"
            threads[child] = dataclasses.replace(task, name=name, wakes=wakes)
            cpu += task.cpu
            rss, hwm = rss + c_rss, hwm + c_hwm
    if proxy is None:  # the offline engine: no network
        return Sample(t, cpu, threads, rss, hwm, 0, 0, 0)
    return Sample(t, cpu, threads, rss, hwm, proxy.bytes_up, proxy.bytes_down, proxy.live)


def interpolate(points: list[tuple[float, float]], t: float) -> float:
    """The value at ``t`` of a rising series of (time, value), linear between samples;
    0 before the first, the last value after the last."""
    if not points or t < points[0][0]:
        return 0.0
    i = bisect.bisect_right(points, (t, float("inf")))
    if i >= len(points):
        return points[-1][1]
    (t0, v0), (t1, v1) = points[i - 1], points[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1


# --- the socket client -----------------------------------------------------------------------
@dataclass
class CaptionCount:
    messages: int = 0  # caption messages, provisional updates included
    finals: int = 0  # lines done
    withdrawn: int = 0  # final lines with no text and no translations
    words: int = 0  # in the text of lines done
    translations: dict[str, int] = field(default_factory=dict)  # lines done, per language
    gaps: list[dict[str, Any]] = field(default_factory=list)
    bye: bool = False
    error: str | None = None


class SocketClient:
    """Reads the daemon's caption socket until it closes (one thread, blocked on recv)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = CaptionCount()
        # (when read, monotonic; a final line with text or translations) of each caption
        self.captions: list[tuple[float, bool]] = []
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="bench-socket-client")

    def connect(self, deadline: float) -> None:
        """Connect once the daemon serves the socket (it appears after its start)."""
        while True:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the daemon never served {self.path}") from None
                time.sleep(0.05)
        self._sock = sock
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive() and self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv
            self._thread.join(5)

    def _run(self) -> None:
        assert self._sock is not None
        c = self.count
        try:
            with self._sock, self._sock.makefile(encoding="utf-8") as lines:
                for raw in lines:
                    now = time.monotonic()
                    m = json.loads(raw)
                    if m.get("type") == "caption":
                        done = bool(m.get("done")) and bool(m["text"] or m["translations"])
                        self.captions.append((now, done))
                    self._take(m, c)
        except (OSError, ValueError) as exc:
            c.error = str(exc)

    @staticmethod
    def _take(m: dict[str, Any], c: CaptionCount) -> None:
        kind = m.get("type")
        if kind == "caption":
            c.messages += 1
            if m.get("done"):
                if not m["text"] and not m["translations"]:
                    c.withdrawn += 1
                    return
                c.finals += 1
                c.words += len(m["text"].split())
                for t in m["translations"]:
                    lang = t.get("language") or "?"
                    c.translations[lang] = c.translations.get(lang, 0) + 1
        elif kind == "gap":
            c.gaps.append(m)
        elif kind == "bye":
            c.bye = True


# --- the ALSA source: a capture device of ALSA's file plugin, fed by the bench ------------
FEED_BLOCK_BYTES = SAMPLE_RATE * BLOCK_MS // 1000 * 2  # 3200: one block, one device period
FEED_BLOCK_S = BLOCK_MS / 1000
FEED_START_PIPE = 4096  # one page, the smallest pipe: room for block 0 and no more
FEED_PIPE = 65536  # Linux's default: 16 pages, a block each: 1.6 s the daemon may lag
FEED_START_LIMIT_S = 60.0  # the daemon's first capture read, after its socket is served
STOP_LIMIT_S = 30.0  # from SIGTERM to the daemon's exit, before it is killed


class AlsaFeed:
    """The microphone of an ``--source alsa`` run: a private ALSA configuration (the
    daemon's ``$XDG_CONFIG_HOME/alsa/asoundrc``) defining ``ALSA_DEVICE`` as ALSA's ``file``
    plugin with a ``null`` slave reading a FIFO (``infile``), and one thread of the bench
    ("bench-alsa-feed") writing the audio into the FIFO a block at a time at real time.

    What the plugin needs (tests/audio/conftest.py, /work/shared/TESTBED.md):
    - the FIFO is held open O_RDWR from before the daemon starts (ALSA opens it while
      PortAudio lists the devices, and an open with no writer blocks) until the writer has
      stopped after the daemon exited (with every writer gone the plugin would return
      stale samples at full speed);
    - it fills each capture read with ONE read() of the FIFO, so the writer writes whole
      blocks (3200 bytes: one PortAudio period of the daemon) and nothing else.

    The clock: block 0 goes into the pipe first, shrunk to one page so that it has no room
    for another; the pipe turns writable when the daemon's first capture read takes that
    block, which wakes the writer (a blocking select, no polling). That moment is the
    audio's start ``t0`` (boot time). Block i is then written at t0 + i × 100 ms on an
    absolute schedule, so the daemon's reads return every 100 ms, into a pipe grown back to
    64 KiB (16 blocks), non-blocking: a daemon running late never holds the writer up, and
    a block that finds the pipe full is dropped and counted, as a device overruns. After the
    audio's last block the writer goes on with quiet room noise until it is stopped: the
    bench sends the daemon SIGTERM at the end of the idle phase, and a microphone does not
    fall silent while the daemon shuts down (its capture read would wait in the kernel).
    """

    def __init__(self, directory: Path, pcm: bytes, seed: int = 11) -> None:
        self.config_home = directory / "xdg"
        self.fifo = directory / "mic.fifo"
        pad = -len(pcm) % FEED_BLOCK_BYTES  # whole blocks only
        self._pcm = pcm + quiet_noise(pad // 2, seed=seed)
        self._after = quiet_noise(SAMPLE_RATE, seed=seed + 1)  # cycled after the audio
        self.blocks = len(self._pcm) // FEED_BLOCK_BYTES
        self.t0: float | None = None  # boot time of the daemon's first capture read
        self.dropped = 0  # blocks of the audio that found the FIFO full
        self.after = 0  # quiet blocks written after the audio
        # when each block of the audio went into the FIFO (monotonic): the daemon's capture
        # read returns it then, so this is when it was "captured" (block 0: its first read)
        self.written: list[float] = []
        self.error: BaseException | None = None
        self._fd = self._stop_r = self._stop_w = -1
        self._thread = threading.Thread(target=self._run, name="bench-alsa-feed")

    @property
    def env(self) -> dict[str, str]:
        """What the daemon's environment needs: ALSA reads the asoundrc under it."""
        return {"XDG_CONFIG_HOME": str(self.config_home)}

    def __enter__(self) -> AlsaFeed:
        asoundrc = self.config_home / "alsa" / "asoundrc"
        asoundrc.parent.mkdir(parents=True)
        asoundrc.write_text(
            f"pcm.{ALSA_DEVICE} {{\n"
            f"    type file\n"
            f'    slave.pcm "null"\n'
            f'    file "/dev/null"\n'
            f'    infile "{self.fifo}"\n'
            f'    format "raw"\n'
            f'    hint {{ show on description "edgecap bench mic" }}\n'
            f"}}\n"
        )
        os.mkfifo(self.fifo)
        self._fd = os.open(self.fifo, os.O_RDWR)
        self._stop_r, self._stop_w = os.pipe()
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, FEED_START_PIPE)
            os.write(self._fd, self._block(0))
            self._thread.start()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._close()

    def stop(self) -> None:
        """Ends the writer at once (it waits on the stop pipe), within bounded time."""
        if self._thread.is_alive():
            os.write(self._stop_w, b"x")
            self._thread.join(5)
            if self._thread.is_alive():
                raise RuntimeError("the ALSA feed's writer did not stop")

    def _close(self) -> None:
        for fd in (self._fd, self._stop_r, self._stop_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._stop_r = self._stop_w = -1

    def _block(self, i: int) -> bytes:
        if i < self.blocks:
            return self._pcm[i * FEED_BLOCK_BYTES : (i + 1) * FEED_BLOCK_BYTES]
        k = (i - self.blocks) % (len(self._after) // FEED_BLOCK_BYTES)
        return self._after[k * FEED_BLOCK_BYTES : (k + 1) * FEED_BLOCK_BYTES]

    def _run(self) -> None:
        try:
            self._feed()
        except BaseException as exc:  # surfaced by the owner (measure) after the run
            self.error = exc

    def _feed(self) -> None:
        stop, fd = self._stop_r, self._fd
        # until the daemon's first read takes block 0 (the pipe turns writable), or stop
        if select.select([stop], [fd], [])[0]:
            return
        self.t0, start = boottime(), time.monotonic()
        self.written.append(start)
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, FEED_PIPE)
        os.set_blocking(fd, False)
        i = 1
        while True:
            delay = start + i * FEED_BLOCK_S - time.monotonic()
            if select.select([stop], [], [], max(delay, 0.0))[0]:
                return
            try:
                os.write(fd, self._block(i))  # ≤ PIPE_BUF: all of it or nothing
            except BlockingIOError:
                if i < self.blocks:
                    self.dropped += 1
            if i < self.blocks:
                self.written.append(time.monotonic())
            if i >= self.blocks:
                self.after += 1
            i += 1


# --- systemd's side of sd_notify, and when the emulator answered ----------------------------
WATCHDOG_USEC = 30_000_000  # systemd/edgecap.service: WatchdogSec=30s
NOTIFY_STOP = b"\0bench-notify-stop"


class NotifyListener:
    """What systemd does for a ``Type=notify`` service: a datagram socket, named to the
    daemon in ``NOTIFY_SOCKET`` (with ``WATCHDOG_USEC`` as the unit sets it), which one
    thread of the bench ("bench-notify") reads, blocked in ``recv``, noting when each
    message came (monotonic). The daemon sends READY=1 once its capture has opened the
    source: from its exec to then is the start to READY. Stopped by a datagram of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self.error: BaseException | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="bench-notify")

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}

    def __enter__(self) -> NotifyListener:
        try:
            self._sock.bind(str(self.path))
            self._thread.start()
        except BaseException:
            self._sock.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(NOTIFY_STOP, str(self.path))
            self._thread.join(5)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError("the notify listener did not stop")

    def _run(self) -> None:
        try:
            while True:
                data = self._sock.recv(65536)
                if data == NOTIFY_STOP:
                    return
                self.messages.append((time.monotonic(), data.decode(errors="replace")))
        except BaseException as exc:  # surfaced by the owner (measure) after the run
            self.error = exc


@contextlib.contextmanager
def send_times(emu: Emulator | None) -> Iterator[list[float]]:
    """When the emulator sent each of its messages (monotonic, once on the socket), for as
    long as the context lasts: the emulators record what they sent, not when, so the
    connection runner's ``_send`` is wrapped (this process is the emulator's only user)."""
    times: list[float] = []
    if emu is None:
        yield times
        return
    runner = sys.modules[type(emu).__module__]._SessionRunner  # type: ignore[attr-defined]
    original = runner.__dict__["_send"]

    def timed(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        times.append(time.monotonic())

    runner._send = timed
    try:
        yield times
    finally:
        runner._send = original


@dataclass
class Probes:
    """What one run's start and latency figures are computed from (monotonic times)."""

    exec_at: float = 0.0  # just before the daemon's exec
    notify: list[tuple[float, str]] = field(default_factory=list)  # sd_notify messages
    written: list[float] = field(default_factory=list)  # block i of the audio into the FIFO
    captions: list[tuple[float, bool]] = field(default_factory=list)  # read on the socket


# --- one run -------------------------------------------------------------------------------
def edgecap_command() -> list[str]:
    script = Path(sys.executable).with_name("edgecap")
    if script.exists():
        return [str(script)]
    found = shutil.which("edgecap")
    return [found] if found else [sys.executable, "-m", "edgecap"]


@contextlib.contextmanager
def emulator(service: str, directory: Path):  # type: ignore[no-untyped-def]
    emu: Emulator
    if service == "azure":
        # phrases end at the speaker's pauses, as the service segments them: an ungated
        # peer's one long turn is not one phrase growing for the whole talk
        emu = AzureEmulator(directory, api_key=KEY, segment_silence_ms=AZURE_PHRASE_PAUSE_MS)
    elif service == "sarvam":
        emu = SarvamEmulator(
            directory, api_key=KEY, max_speed=SARVAM_MAX_SPEED, burst=SARVAM_BURST_S
        )
    else:
        emu = SonioxEmulator(directory, api_key=KEY)
    try:
        yield emu
    finally:
        emu.close()


def emulator_figures(emu: Emulator | None, skip: int = 0) -> dict[str, Any]:
    """What the service saw (its sessions after the first ``skip``): sessions, seconds of
    audio, turns (Azure), finalizes (Soniox) or transcripts (Sarvam), violations."""
    if emu is None:
        return {"sessions": 0, "audio_s": 0.0, "turns": 0, "violations": []}
    if isinstance(emu, AzureEmulator):
        azure = emu.sessions[skip:]
        count = len(azure)
        audio_bytes = sum(s.audio_bytes for s in azure)
        violations = [v for s in azure for v in s.violations]
        turns = sum(len(s.turns) for s in azure)
    elif isinstance(emu, SarvamEmulator):
        sarvam = emu.sessions[skip:]
        count = len(sarvam)
        audio_bytes = sum(len(s.audio) for s in sarvam)
        violations = [v for s in sarvam for v in s.violations]
        turns = sum(len(s.segments) for s in sarvam)
    else:
        soniox = emu.sessions[skip:]
        count = len(soniox)
        audio_bytes = sum(len(s.audio) for s in soniox)
        violations = [f"error {s.error_sent}" for s in soniox if s.error_sent]
        turns = sum(len(s.finalize_times) for s in soniox)
    return {
        "sessions": count,
        "audio_s": audio_bytes / 2 / SAMPLE_RATE,
        "turns": turns,
        "violations": violations,
    }


def code_state() -> dict[str, Any]:
    """The commit the daemon ran from, and the files of edgecap/ changed since (a figure
    belongs to a version of the code)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.rstrip()  # not lstrip: a porcelain line starts with its status
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", "edgecap").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed": [c[3:] for c in changed]}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    uname = os.uname()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": f"{uname.sysname} {uname.release} {uname.machine}",
        "python": sys.version.split()[0],
        "host": uname.nodename,
    }


def merge_results(path: Path, name: str, figures: Any) -> None:
    """Merge one bench's figures into the results file (a JSON object keyed by bench
    name), with the machine, the date and the code they belong to."""
    results: dict[str, Any] = {}
    if path.exists():
        try:
            results = json.loads(path.read_text())
        except ValueError:
            progress(f"{path} is not JSON: rewritten")
    results[name] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "code": code_state(),
        "figures": figures,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def run_one(setup: Setup, minutes: float, idle_minutes: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgecap-bench-daemon-") as tmp:
        directory = Path(tmp)
        progress(f"[{setup.label}] building {minutes:g} min of talk + {idle_minutes:g} min idle")
        audio = build_wav(directory, minutes, idle_minutes)
        if setup.service == "local":
            return run_daemon(setup, audio, directory)
        with (
            emulator(setup.service, directory / "emu") as emu,
            FaultProxy(("127.0.0.1", emu.port)) as proxy,
        ):
            return run_daemon(setup, audio, directory, emu, proxy)


def run_daemon(
    setup: Setup,
    audio: Audio,
    directory: Path,
    emu: Emulator | None = None,
    proxy: FaultProxy | None = None,
) -> dict[str, Any]:
    """One daemon run on ``audio`` (files in ``directory``), into ``emu`` through ``proxy``
    (both None for the offline engine). The emulator may have served others before: only
    the sessions of this run count in the service-side figures."""
    before = len(emu.sessions) if emu is not None else 0
    port = proxy.port if proxy is not None else 0
    ca_file = emu.ca_file if emu is not None else ""
    ini, sock = write_config(directory, setup, audio, port, ca_file)
    code = code_state()  # what the daemon is about to load
    up0, down0 = (proxy.bytes_up, proxy.bytes_down) if proxy is not None else (0, 0)
    probes = Probes()
    with send_times(emu) as sends:
        log = directory / "daemon.log"
        result = measure(setup, audio, ini, sock, proxy, log, (up0, down0), probes)
    result["service_side"] = emulator_figures(emu, before)
    result["ready"] = ready_figures(probes)
    sessions = emu.sessions[before:] if emu is not None else []
    result["latency"] = latency_figures(audio, probes, sessions, sends)
    return result | {"code": code}


def measure(
    setup: Setup,
    audio: Audio,
    ini: Path,
    sock: Path,
    proxy: FaultProxy | None,
    log: Path,
    bytes_before: tuple[int, int] = (0, 0),
    probes: Probes | None = None,
) -> dict[str, Any]:
    """One daemon run, started as systemd would (``NotifyListener``), measured from /proc;
    ``probes`` (if given) gets the times the start and latency figures are made of."""
    probes = probes if probes is not None else Probes()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    if setup.service in KEY_VARIABLES:
        env[KEY_VARIABLES[setup.service]] = KEY
    env.pop("CREDENTIALS_DIRECTORY", None)  # the key comes from the environment
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    expected = audio.talk_s + audio.idle_s
    term_at: float | None = None  # boot time of the SIGTERM at the end of an ALSA input
    stopping = False  # SIGTERM sent
    with contextlib.ExitStack() as stack:
        notify = stack.enter_context(NotifyListener(log.parent / "notify.sock"))
        env |= notify.env
        feed: AlsaFeed | None = None
        if setup.source == "alsa":  # the FIFO open, block 0 in it, before the daemon starts
            with wave.open(str(audio.path), "rb") as w:
                pcm = w.readframes(w.getnframes())
            feed = stack.enter_context(AlsaFeed(log.parent / "alsa", pcm))
            env |= feed.env
        with log.open("wb") as err:
            probes.exec_at = time.monotonic()
            proc = subprocess.Popen(
                [*edgecap_command(), "run", "-c", str(ini)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                cwd=REPO,
            )
        samples: list[Sample] = []
        client = SocketClient(sock)
        try:
            started = read_stat(Path(f"/proc/{proc.pid}/stat")).start
            client.connect(time.monotonic() + 30)
            wall0 = time.monotonic()
            next_note = 30.0
            deadline = wall0 + expected + 120
            while True:
                s = sample(proc.pid, proxy)
                if s is not None:
                    samples.append(s)
                wait = SAMPLE_S
                if feed is not None and feed.t0 is not None and term_at is None:
                    wait = min(wait, max(0.0, feed.t0 + expected - boottime()))  # on time
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if now - wall0 >= next_note and samples:
                    progress(
                        f"[{setup.label}] {now - wall0:4.0f} s of ~{expected:.0f}: "
                        f"{samples[-1].cpu:.2f} CPU-s, {client.count.finals} lines"
                    )
                    next_note += 30
                if feed is not None and not stopping:
                    if feed.t0 is not None and boottime() >= feed.t0 + expected:
                        proc.send_signal(signal.SIGTERM)  # the end of the input: no EOF here
                        term_at, stopping, deadline = boottime(), True, now + STOP_LIMIT_S
                    elif feed.t0 is None and now > wall0 + FEED_START_LIMIT_S:
                        progress(f"[{setup.label}] the daemon never read from {ALSA_DEVICE}")
                        proc.send_signal(signal.SIGTERM)
                        stopping, deadline = True, now + STOP_LIMIT_S
                if now > deadline:
                    if stopping:
                        progress(f"[{setup.label}] the daemon did not exit after SIGTERM: killed")
                        break
                    progress(f"[{setup.label}] the daemon did not stop at the end of its input")
                    proc.send_signal(signal.SIGTERM)
                    stopping, deadline = True, now + STOP_LIMIT_S
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            ended = boottime()
            client.join(10)  # the daemon closed the socket: its end is there to read
    if notify.error is not None:
        raise RuntimeError(f"the notify listener failed: {notify.error!r}") from notify.error
    probes.notify = list(notify.messages)
    probes.captions = list(client.captions)
    if feed is not None:
        probes.written = list(feed.written)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if " ERROR " in line]  # the log's format: "time LEVEL …"
    if proc.returncode != 0 or errors:
        progress(f"[{setup.label}] exit status {proc.returncode}, {len(errors)} errors; log:")
        progress("\n".join(lines[-15:] if proc.returncode else errors[:5]))
    total_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    totals = (
        (proxy.bytes_up - bytes_before[0], proxy.bytes_down - bytes_before[1])
        if proxy is not None
        else (0, 0)
    )
    if feed is None:  # the WAV: its clock starts with the capture thread, the file ends
        t0 = audio_start(samples)
        clock = (t0, t0 + expected)
        source = {"source": "wav", "paced_by": "the daemon ([audio] realtime = yes)"}
    else:
        if feed.error is not None:
            raise RuntimeError(f"the ALSA feed failed: {feed.error!r}") from feed.error
        if feed.t0 is None:
            progress("\n".join(lines[-15:]))
            raise RuntimeError(f"the daemon never read from {ALSA_DEVICE}: no figures")
        # no SIGTERM: the daemon ended before the input did (a failure, reported as such)
        clock = (feed.t0, term_at if term_at is not None else ended)
        opened = next((line for line in lines if f"opened alsa:{ALSA_DEVICE}" in line), "")
        source = {
            "source": "alsa",
            "device": ALSA_DEVICE,
            "paced_by": f"the bench: {FEED_BLOCK_BYTES} bytes every {BLOCK_MS} ms into the "
            "file plugin's FIFO",
            "opened": opened[opened.find("opened") :] if opened else None,
            "blocks": feed.blocks,
            "blocks_dropped": feed.dropped,
            "sigterm_late_s": None if term_at is None else term_at - (feed.t0 + expected),
        }
    life = (started, ended)
    return analyse(setup, audio, samples, proc.pid, life, clock, total_cpu, totals, client) | {
        "input": source,
        "exit_status": proc.returncode,
        "log_errors": errors,
    }


# --- the figures -----------------------------------------------------------------------------
IDLE_SETTLE_S = 10.0  # after the talk: its last caption and the link's turn are done
RSS_WARMUP_S = 30.0  # the first part of the audio, left out of the RSS slope (at most)
FINAL_WITHIN_S = 5.0  # a final caption this long after a speech end is its utterance's
CAUSE_WITHIN_S = 1.0  # a caption this long after the emulator's last message is its answer
SAMPLES_PER_BLOCK = FEED_BLOCK_BYTES // 2


def percentiles(values: list[float]) -> dict[str, float] | None:
    """n, p50, p90, p99 and max (nearest rank) of ``values``; None if there are none."""
    if not values:
        return None
    v = sorted(values)

    def rank(q: float) -> float:
        return v[min(len(v) - 1, max(0, int(q * len(v) + 0.5) - 1))]

    return {"n": len(v), "p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": v[-1]}


def rss_slope(samples: list[Sample], start: float, end: float) -> dict[str, Any] | None:
    """VmRSS over the audio (least squares over the samples from ``start`` to ``end``, boot
    times): MB per hour, and the window. None under 30 s or 20 samples."""
    points = [(s.t, s.rss_kb / 1024) for s in samples if start <= s.t <= end]
    if len(points) < 20 or end - start < 30:
        return None
    mt = statistics.fmean(t for t, _ in points)
    mr = statistics.fmean(r for _, r in points)
    var = sum((t - mt) ** 2 for t, _ in points)
    slope = sum((t - mt) * (r - mr) for t, r in points) / var
    return {
        "mb_per_h": slope * 3600,
        "window_s": end - start,
        "first_mb": points[0][1],
        "last_mb": points[-1][1],
    }


def ready_figures(probes: Probes) -> dict[str, Any]:
    """From the exec to READY=1 (sd_notify), and what was sent."""
    first = next((m for m in probes.notify if "READY=1" in m[1].splitlines()), None)
    ready = None if first is None else first[0]
    status = None
    if first is not None:
        status = next((x[7:] for x in first[1].splitlines() if x.startswith("STATUS=")), None)
    return {
        "start_to_ready_s": None if ready is None else ready - probes.exec_at,
        "status": status,
        "messages": len(probes.notify),
        "watchdogs": sum("WATCHDOG=1" in m.splitlines() for _, m in probes.notify),
    }


def audio_chunks(session: Any) -> list[tuple[float, int]] | None:
    """(when, PCM bytes) of each audio message an emulator session received, in order;
    None when the emulator does not record it (Azure)."""
    frames = getattr(session, "frames", None)
    if frames is None or not hasattr(session, "audio"):
        return None
    chunks: list[tuple[float, int]] = []
    for t, kind, what in list(frames):
        if kind == "binary":  # Soniox: raw PCM
            chunks.append((t, int(what)))
        elif kind == "text" and '"audio"' in str(what):  # Sarvam: base64 in JSON
            with contextlib.suppress(ValueError, KeyError, TypeError, binascii.Error):
                data = json.loads(str(what))["audio"]["data"]
                chunks.append((t, len(base64.b64decode(data))))
    return chunks


def capture_to_wire(pcm: bytes, written: list[float], sessions: list[Any]) -> list[float] | None:
    """Seconds from the capture of each audio message's last block (its write into the
    FIFO: the daemon's read returns it then) to the message's arrival at the emulator.
    Each message is found in the WAV by its last 20 ms (unique in corpus speech and random
    room noise); pre-roll and what queued while connecting are sent late by design and are
    in the tail."""
    if not written:
        return None
    out: list[float] = []
    hint = 0
    block = FEED_BLOCK_BYTES
    for session in sessions:
        chunks = audio_chunks(session)
        if chunks is None:
            return None
        audio = bytes(session.audio)
        pos = 0
        for t, n in chunks:
            piece = audio[pos : pos + n]
            pos += n
            tail = piece[-640:]
            if len(tail) < 64:
                continue
            at = pcm.find(tail, max(0, hint - 10 * 2 * SAMPLE_RATE))
            if at < 0 or at % 2:
                continue  # not from the WAV (a keepalive's silence)
            end = at + len(tail)
            hint = end
            b = (end - 1) // block
            if b < len(written):
                out.append(t - written[b])
    return out


def latency_figures(
    audio: Audio, probes: Probes, sessions: list[Any], sends: list[float]
) -> dict[str, Any]:
    """Latency percentiles (ms) of one run, where the run can tell them (an ALSA source:
    the capture times are the bench's FIFO writes; WAV runs have none):
    - capture_to_wire: an audio block captured → its bytes at the emulator;
    - service_to_socket: the emulator's message → the caption it caused read on the
      socket (each caption message against the emulator's last message before it);
    - speech_end_to_final: the block holding a clip's speech end captured → the final
      caption read on the socket (the first within ``FINAL_WITHIN_S``, before the next
      clip's end), with ``emulator_answer`` (the utterance's end signal at the emulator —
      Soniox's finalize, Sarvam's flush — to its next message; Azure's is not recorded: 0)
      subtracted in ``speech_end_to_final_less_answer``."""
    ms = 1000.0
    written = probes.written
    out: dict[str, Any] = {}
    with wave.open(str(audio.path), "rb") as w:
        pcm = w.readframes(w.getnframes())
    wire = capture_to_wire(pcm, written, sessions) if sessions else None
    out["capture_to_wire"] = percentiles([x * ms for x in wire]) if wire else None

    cause: list[float] = []
    sends = sorted(sends)
    for t, _ in probes.captions:
        i = bisect.bisect_right(sends, t) - 1
        if i >= 0 and t - sends[i] <= CAUSE_WITHIN_S:
            cause.append((t - sends[i]) * ms)
    out["service_to_socket"] = percentiles(cause)

    signals: list[float] | None = None
    if sessions and hasattr(sessions[0], "finalize_times"):  # Soniox
        signals = sorted(t for s in sessions for t in s.finalize_times)
    elif sessions and hasattr(sessions[0], "messages"):  # Sarvam
        signals = sorted(t for s in sessions for t, k in s.messages if k == "flush")
    finals = [t for t, done in probes.captions if done]
    ends = [
        written[b] for e in audio.speech_ends if (b := (e - 1) // SAMPLES_PER_BLOCK) < len(written)
    ]
    totals, answers, less = [], [], []
    missed = 0
    for k, e in enumerate(ends):
        limit = min(e + FINAL_WITHIN_S, ends[k + 1] if k + 1 < len(ends) else float("inf"))
        final = next((t for t in finals if e < t <= limit), None)
        if final is None:
            missed += 1
            continue
        answer = 0.0
        if signals is not None:
            sig = next((t for t in signals if e < t <= final), None)
            reply = next((t for t in sends if sig is not None and sig <= t <= final), None)
            if sig is not None and reply is not None:
                answer = reply - sig
        totals.append((final - e) * ms)
        answers.append(answer * ms)
        less.append((final - e - answer) * ms)
    out["speech_end_to_final"] = percentiles(totals)
    out["emulator_answer"] = percentiles(answers) if signals is not None else None
    out["speech_end_to_final_less_answer"] = percentiles(less)
    out["speech_ends"] = {"captured": len(ends), "without_final": missed}
    return out


def audio_start(samples: list[Sample]) -> float:
    """When the WAV's clock started (``--source wav``): the capture worker's thread start
    (it opens the file first thing)."""
    for s in samples:
        for task in s.threads.values():
            if task.name == "ec-capture":
                return task.start
    raise RuntimeError("no ec-capture thread seen: are the threads named (runtime/worker.py)?")


def group_name(name: str, main: bool) -> str:
    """Threads of the same kind, one row: the link's reader threads are numbered."""
    if name == ENGINE_TASK or name.endswith("(child process)"):
        return name
    if main:
        return f"{name} (main: supervisor)"
    if not name.startswith("ec-"):
        return f"{name} (not a Worker)"
    return name.rstrip("0123456789") + "*" if name.startswith("ec-link-rd-") else name


def analyse(
    setup: Setup,
    audio: Audio,
    samples: list[Sample],
    pid: int,
    life: tuple[float, float],
    clock: tuple[float, float],
    total_cpu: float,
    bytes_total: tuple[int, int],
    client: SocketClient,
) -> dict[str, Any]:
    """The figures of one run. ``life``: the daemon's exec and exit; ``clock``: the audio's
    start and the end of the input (boot times): the phases' bounds."""
    started, ended = life
    t0, input_end = clock
    bounds = {
        "startup": (started, t0),
        "talk": (t0, t0 + audio.talk_s),
        "idle": (t0 + audio.talk_s, input_end),
        "shutdown": (input_end, ended),
    }
    cpu_series = [(started, 0.0)] + [(s.t, s.cpu) for s in samples] + [(ended, total_cpu)]

    # when the link closed after the talk (on_demand: after idle_close without speech)
    talk_a, talk_b = bounds["talk"]
    idle_b = bounds["idle"][1]
    closed_at = None
    if setup.service != "local":  # the offline engine has no link
        closed_at = next((s.t for s in samples if s.t > talk_b and s.live == 0), None)
    if closed_at is not None and idle_b - closed_at >= 10:
        bounds["idle, link closed"] = (closed_at, idle_b)
    if idle_b - (talk_b + IDLE_SETTLE_S) >= 10:  # the quiet, once the last words are done
        bounds["idle, settled"] = (talk_b + IDLE_SETTLE_S, idle_b)

    def over(series: list[tuple[float, float]], phase: str) -> float:
        a, b = bounds[phase]
        return interpolate(series, b) - interpolate(series, a)

    phases = {}
    for phase, (a, b) in bounds.items():
        phases[phase] = {"wall_s": b - a, "cpu_s": over(cpu_series, phase)}
    for phase in ("talk", "idle", "idle, link closed", "idle, settled"):
        if phase in phases:
            p = phases[phase]
            p["per_hour"] = p["cpu_s"] / p["wall_s"] * 3600 if p["wall_s"] > 0 else None

    # per thread, grouped by kind
    series: dict[int, list[tuple[float, float]]] = {}
    wake_series: dict[int, list[tuple[float, float]]] = {}
    names: dict[int, str] = {}
    for s in samples:
        for tid, task in s.threads.items():
            names[tid] = task.name
            series.setdefault(tid, [(task.start, 0.0)]).append((s.t, task.cpu))
            wake_series.setdefault(tid, [(task.start, 0.0)]).append((s.t, task.wakes))
    threads: dict[str, dict[str, Any]] = {}
    for tid, points in series.items():
        row = threads.setdefault(
            group_name(names[tid], tid == pid),
            {"n": 0, **dict.fromkeys(PHASES, 0.0), "wakes": dict.fromkeys(PHASES, 0.0)},
        )
        row["n"] += 1
        for phase in PHASES:
            row[phase] += over(points, phase)
            row["wakes"][phase] += over(wake_series[tid], phase)
    for row in threads.values():
        row["total"] = sum(row[p] for p in PHASES)
    audio_h = (audio.talk_s + audio.idle_s) / 3600
    decoding = None
    if "ec-local" in threads:  # the offline engine's thread and process: decoding, apart
        dec = dict(threads["ec-local"])
        engine = threads.get(ENGINE_TASK)
        if engine is not None:
            for key in ("total", *PHASES):
                dec[key] += engine[key]
        decoding = {
            "cpu_s": dec["total"],
            "talk_cpu_s": dec["talk"],
            "per_audio_hour": dec["total"] / audio_h,
            "talk_per_hour": dec["talk"] / audio.talk_s * 3600 if audio.talk_s else None,
            "rest_per_audio_hour": (total_cpu - dec["total"]) / audio_h,
            "rest_talk_per_hour": (phases["talk"]["cpu_s"] - dec["talk"]) / audio.talk_s * 3600
            if audio.talk_s
            else None,
        }

    def proxy_at(t: float, attr: str) -> float:
        return interpolate([(s.t, getattr(s, attr)) for s in samples], t)

    last = samples[-1] if samples else None
    at_talk_end = min(samples, key=lambda s: abs(s.t - talk_b)) if samples else None
    c = client.count
    return {
        "setup": {
            "service": setup.service,
            "mode": setup.mode,
            "hdmi": setup.hdmi,
            "source": setup.source,
            "connect": setup.connect,
        },
        "audio": {
            "talk_s": audio.talk_s,
            "idle_s": audio.idle_s,
            "speech_clip_s": audio.speech_s,
            "clips": audio.clips,
        },
        "phases": phases,
        "whole": {
            "wall_s": ended - started,
            "cpu_s": total_cpu,
            "per_wall_hour": total_cpu / (ended - started) * 3600,
            "per_audio_hour": total_cpu / (audio.talk_s + audio.idle_s) * 3600,
        },
        "memory": {
            "peak_rss_mb": (last.hwm_kb if last else 0) / 1024,
            "rss_end_of_talk_mb": (at_talk_end.rss_kb if at_talk_end else 0) / 1024,
            # the slope of VmRSS over the audio, its first part (allocations that happen
            # once: imports, the first connection) left out
            "rss_growth": rss_slope(
                samples, t0 + min(RSS_WARMUP_S, 0.25 * (input_end - t0)), input_end
            ),
        },
        "bytes": {
            "up": bytes_total[0],
            "down": bytes_total[1],
            "talk_up": proxy_at(talk_b, "up") - proxy_at(talk_a, "up"),
            "talk_down": proxy_at(talk_b, "down") - proxy_at(talk_a, "down"),
        },
        "link_closed_after_talk_s": None if closed_at is None else closed_at - talk_b,
        "captions": {
            "lines": c.finals,
            "messages": c.messages,
            "withdrawn": c.withdrawn,
            "words": c.words,
            "translations": c.translations,
            "gaps": len(c.gaps),
            "gap_s": sum(g.get("seconds") or 0 for g in c.gaps),
            "bye": c.bye,
            "client_error": c.error,
        },
        "decoding": decoding,
        "threads": threads,
        "threads_cpu_s": sum(r["total"] for r in threads.values()),
        "samples": len(samples),
    }


# --- the report -------------------------------------------------------------------------------
def fmt_rate(value: float | None) -> str:
    return f"{value:7.1f}" if value is not None else f"{'-':>7s}"


def report(r: dict[str, Any]) -> None:
    s, a, ph, w = r["setup"], r["audio"], r["phases"], r["whole"]
    label = f"{s['service']} {s['mode']}" + (" + hdmi 1920x1080" if s["hdmi"] else "")
    source = s.get("source", "wav")
    print(f"Daemon benchmark: {label}; edgecap run, {SOURCE_TEXT[source]}, config defaults")
    print(
        f"talk: {a['talk_s']:.0f} s ({a['clips']} corpus clips, {a['speech_clip_s']:.0f} s of "
        f"clip audio, 2-4 s quiet pauses); idle: {a['idle_s']:.0f} s of quiet; outputs: socket"
        + (", hdmi" if s["hdmi"] else "")
    )
    print()
    print(f"{'phase':22s} {'wall s':>7s} {'CPU s':>7s} {'CPU-s/h':>8s}")
    rows = [
        ("startup (exec→audio)", ph["startup"], None),
        ("talk", ph["talk"], ph["talk"]["per_hour"]),
        ("idle", ph["idle"], ph["idle"]["per_hour"]),
        (f"shutdown ({'EOF' if source == 'wav' else 'TERM'}→exit)", ph["shutdown"], None),
    ]
    if "idle, link closed" in ph:  # a part of the idle phase, after the link closed
        closed = ph["idle, link closed"]
        rows.insert(3, ("  of which link closed", closed, closed["per_hour"]))
    if "idle, settled" in ph:  # the idle phase from IDLE_SETTLE_S after the talk
        settled = ph["idle, settled"]
        rows.insert(3, (f"  from talk+{IDLE_SETTLE_S:g} s", settled, settled["per_hour"]))
    for name, p, rate in rows:
        print(f"{name:22s} {p['wall_s']:7.1f} {p['cpu_s']:7.2f}  {fmt_rate(rate)}")
    print(f"{'whole run':22s} {w['wall_s']:7.1f} {w['cpu_s']:7.2f}  {w['per_wall_hour']:7.1f}")
    print(
        f"CPU-s per audio-hour of talk: {ph['talk']['per_hour']:.1f} (target < "
        f"{TARGET_CPU_PER_H:g}); per idle hour: {fmt_rate(ph['idle']['per_hour']).strip()}; "
        f"whole run per hour of audio (startup and shutdown in): {w['per_audio_hour']:.1f}"
    )
    m = r["memory"]
    growth = m.get("rss_growth")
    print(
        f"memory: peak RSS (VmHWM) {m['peak_rss_mb']:.1f} MB; RSS at the end of the talk "
        f"{m['rss_end_of_talk_mb']:.1f} MB; RSS growth "
        + (
            f"{growth['mb_per_h']:+.2f} MB per hour of audio (slope over "
            f"{growth['window_s']:.0f} s: {growth['first_mb']:.1f} → {growth['last_mb']:.1f} MB)"
            if growth
            else "- (run too short)"
        )
    )
    ready = r.get("ready") or {}
    if ready.get("start_to_ready_s") is not None:
        print(
            f"start: exec → READY=1 (sd_notify) {ready['start_to_ready_s'] * 1000:.0f} ms; "
            f"{ready['messages']} notify messages, {ready['watchdogs']} WATCHDOG=1"
        )
    for name, label in LATENCY_LABELS.items():
        q = (r.get("latency") or {}).get(name)
        if q:
            print(
                f"latency, {label}: p50 {q['p50']:.1f} / p90 {q['p90']:.1f} / p99 "
                f"{q['p99']:.1f} / max {q['max']:.1f} ms (n {q['n']})"
            )
    dec = r.get("decoding")
    if dec:
        print(
            f"offline engine: decoding (ec-local) {dec['cpu_s']:.2f} CPU-s = "
            f"{dec['per_audio_hour']:.1f} per audio-hour ({fmt_rate(dec['talk_per_hour']).strip()}"
            f" during the talk); the rest of the daemon {dec['rest_per_audio_hour']:.1f} per "
            f"audio-hour ({fmt_rate(dec['rest_talk_per_hour']).strip()} during the talk)"
        )
    i = r.get("input", {})
    if source == "alsa":
        late = i["sigterm_late_s"]
        print(
            f"input: {i['blocks']} blocks of {BLOCK_MS} ms written, {i['blocks_dropped']} dropped "
            f"(FIFO full); the daemon {i['opened'] or 'logged no opened device'}; SIGTERM "
            + ("not sent" if late is None else f"{late * 1000:.0f} ms after the idle phase")
        )
    print(f"anchor: {ANCHORS[s['service']]}")
    code = r["code"]
    print(
        f"code: commit {code['commit'] or '?'}"
        + (f" + {len(code['changed'])} changed files in edgecap/" if code["changed"] else "")
    )
    if s["service"] != "local":
        report_link(r)
    c, e = r["captions"], r["service_side"]
    trans = ", ".join(f"{k} {v}" for k, v in sorted(c["translations"].items())) or "none"
    print(
        f"captions on the socket: {c['lines']} final lines ({c['words']} words), "
        f"{c['messages']} caption messages, translations: {trans}; gaps: {c['gaps']} "
        f"({c['gap_s']:.1f} s); withdrawn: {c['withdrawn']}; bye: {'yes' if c['bye'] else 'NO'}"
        + (f"; client error: {c['client_error']}" if c["client_error"] else "")
    )
    print(
        f"service side: {e['sessions']} session(s), {e['audio_s']:.1f} s of audio received, "
        f"{e['turns']} turns/finalizes, violations: {'; '.join(e['violations']) or 'none'}; "
        f"daemon exit status {r['exit_status']}, errors logged: {len(r['log_errors'])}"
    )
    for line in r["log_errors"][:3]:
        print(f"!! {line}")
    print()
    print("per thread (CPU seconds from /proc/<pid>/task/*/stat):")
    talk_cpu = ph["talk"]["cpu_s"] or 1e-9
    print(
        f"{'thread':32s} {'n':>2s} {'startup':>8s} {'talk':>7s} {'/audio-h':>8s} "
        f"{'idle':>6s} {'/idle-h':>7s} {'shutdn':>6s} {'total':>6s} {'% talk':>6s} "
        f"{'wakes/s talk':>12s} {'idle':>5s}"
    )
    talk_h_s, idle_s = ph["talk"]["wall_s"], ph["idle"]["wall_s"]
    for name, t in sorted(r["threads"].items(), key=lambda kv: -kv[1]["total"]):
        idle_rate = t["idle"] / idle_s * 3600 if idle_s > 0 else None
        print(
            f"{name:32s} {t['n']:2d} {t['startup']:8.2f} {t['talk']:7.2f} "
            f"{t['talk'] / talk_h_s * 3600:8.2f} {t['idle']:6.2f} {fmt_rate(idle_rate)} "
            f"{t['shutdown']:6.2f} {t['total']:6.2f} {t['talk'] / talk_cpu * 100:5.1f}% "
            f"{t['wakes']['talk'] / talk_h_s:12.1f} "
            f"{t['wakes']['idle'] / idle_s if idle_s > 0 else 0:5.1f}"
        )
    print(
        f"{'sum of threads':32s}    {'':8s} {'':7s} {'':8s} {'':6s} {'':7s} {'':6s} "
        f"{r['threads_cpu_s']:6.2f}   (process: {w['cpu_s']:.2f}; the rest: ended threads' "
        f"last {SAMPLE_S:g} s, or the exit)"
    )
    print()


def report_link(r: dict[str, Any]) -> None:
    """The bytes at the proxy and when the link closed (a cloud service's run)."""
    b = r["bytes"]
    talk_h = r["audio"]["talk_s"] / 3600
    print(
        f"bytes at the proxy: {b['up'] / 1e6:.2f} MB up, {b['down'] / 1e6:.2f} MB down in "
        f"all; during the talk {b['talk_up'] / 1e6 / talk_h:.1f} MB up and "
        f"{b['talk_down'] / 1e6 / talk_h:.1f} MB down per audio-hour"
    )
    closed = r["link_closed_after_talk_s"]
    print(
        "link: "
        + (
            f"closed {closed:.0f} s after the talk ended (on_demand, idle_close)"
            if closed is not None
            else "still connected at the end of the idle phase"
        )
    )


def report_summary(results: list[dict[str, Any]]) -> None:
    print("Summary: CPU-s per audio-hour of talk, at real time (target < 10)")
    print(
        f"{'run':26s} {'talk':>7s} {'idle/h':>7s} {'whole/h':>7s} {'startup':>7s} "
        f"{'peak MB':>7s} {'lines':>6s}  anchor"
    )
    for r in results:
        s, ph = r["setup"], r["phases"]
        label = f"{s['service']} {s['mode']}" + (" + hdmi" if s["hdmi"] else "")
        label += f", {s.get('source', 'wav')}"
        print(
            f"{label:26s} {ph['talk']['per_hour']:7.1f} "
            f"{fmt_rate(ph['idle']['per_hour'])} {r['whole']['per_wall_hour']:7.1f} "
            f"{ph['startup']['cpu_s']:7.2f} {r['memory']['peak_rss_mb']:7.1f} "
            f"{r['captions']['lines']:6d}  {ANCHORS_SHORT[s['service']]}"
        )
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", choices=SERVICES, default="azure")
    parser.add_argument("--mode", choices=("recognition", "translation"), default="recognition")
    parser.add_argument("--minutes", type=float, default=5.0, help="talk, minutes of audio")
    parser.add_argument("--idle-minutes", type=float, default=1.0, help="quiet after the talk")
    parser.add_argument("--hdmi", action="store_true", help="add the HDMI output (a file)")
    parser.add_argument(
        "--connect",
        choices=("on_demand", "warm"),
        default="on_demand",
        help="[link] connect (the default: on_demand)",
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="alsa",
        help="alsa: the daemon captures from an ALSA device the bench feeds in real time (as "
        "in production); wav: the daemon reads and paces the WAV itself",
    )
    parser.add_argument(
        "--suite",
        action="store_true",
        help="the offline engine, Azure translation into two languages, and Soniox with the "
        "HDMI screen (1080p16), one after the other: what bench/compare.py does not run",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    parser.add_argument(
        "--results",
        type=Path,
        metavar="FILE",
        help="merge the figures into this results file (e.g. bench/results.json), keyed "
        "daemon-<service>-<mode>[-hdmi][-wav]",
    )
    args = parser.parse_args()
    if args.service == "local" and args.mode != "recognition":
        parser.error("the offline engine does not translate")
    if not corpus_available():
        progress(f"the corpus is not at {CORPUS_DIR} (EDGECAP_CORPUS names it)")
        return 1
    if args.suite:
        setups = [
            Setup("local", "recognition", args.hdmi, args.source),
            Setup("azure", "translation", args.hdmi, args.source),
            Setup("soniox", "recognition", True, args.source),
        ]
    else:
        setups = [Setup(args.service, args.mode, args.hdmi, args.source, args.connect)]
    wall = time.monotonic()
    results = []
    for setup in setups:  # one at a time: two daemons would share the machine's 2 cores
        results.append(run_one(setup, args.minutes, args.idle_minutes))
        report(results[-1])
        sys.stdout.flush()
    if len(results) > 1:
        report_summary(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.results:
        for r in results:
            s = r["setup"]
            name = f"daemon-{s['service']}-{s['mode']}" + ("-hdmi" if s["hdmi"] else "")
            name += "-wav" if s["source"] == "wav" else ""
            name += "-warm" if s.get("connect", "on_demand") == "warm" else ""
            merge_results(args.results, name, r)
    print(f"(benchmark ran in {time.monotonic() - wall:.0f} s)")
    return 0 if all(r["exit_status"] == 0 and not r["log_errors"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
