"""Benchmark of the cloud link (not a test): prints tables.

    .venv/bin/python bench/link.py [--runs N] [--lengths 5,30,60] [--no-corpus]

Everything is real: a LinkWorker (edgecap/link/worker.py) with the Soniox codec, the strict
Soniox emulator over TLS on 127.0.0.1 (tests/emulators/soniox.py, its default 500 ms lag of
finals) and the TCP fault proxy in front of it (tests/emulators/fault_proxy.py). Link
settings are the configuration defaults (edgecap.config.schema.LinkConfig: on_demand,
buffer 30 s, replay_speed 1.5, retry_first 1 s, retry_max 10 s, dead_after 10 s, ...)
unless a section says otherwise. Each run is one emulator + proxy + link in a process of
its own, so runs side by side do not share an interpreter lock; progress goes to stderr.

1. Resume after an outage, and 2. speech lost per outage. Live speech is fed in real time
   the whole time: the emulator's word-bearing noise (``noise_pcm``), 4 s utterances with
   0.3 s pauses, frames put into the speech queue as the gate would (not corpus speech: it
   is the worst case for loss, someone talking through the outage, and the emulator
   recognises every byte of it). After 3-8 s of a healthy session (staggered between
   runs) the proxy refuses new connections for N s and cuts the live one (``refuse(N)``
   then ``cut()`` at once: in the other order a reconnect could slip in between). Times
   are counted from the moment the proxy accepts again:
   - backoff: until the link's successful connection attempt began (``_connect`` is
     wrapped to time it);
   - connect: that attempt (TCP, TLS, WebSocket upgrade, start message);
   - (a) first audio: the first audio byte of the new session at the emulator
     (``Session.first_audio_at``);
   - (b) drained: the first audio message at which the emulator had everything fed so far
     but at most 0.2 s (live chunks are 100 ms; from the emulator's frame logs and the
     feeder's log; should the new session fail, the drain goes on in the next one, and the
     failure is printed with "!!").
   Loss: what the link reported (``CaptionSink.loss``), its counter (``buffer.dropped``),
   the speech fed that no session received, and the speech fed that no session finalized
   (``coverage_gaps`` of the sessions' audio, and of each one's audio up to its last
   ``final_audio_proc_ms``): the link reports as lost what it dropped, including audio the
   cut session had received but not finalized, so it must equal the last one.
3. Bytes on the wire: per corpus category (bench.corpus, the categories of bench/gate.py),
   the clips back to back through the real SpeechGate (defaults) and what it forwards sent
   through the link (fed at once, replay_speed 10, a buffer holding all of it), versus the
   same audio with the gate off (everything streamed). Bytes up are counted at the proxy:
   TCP payload, so TLS records and WebSocket framing are in, IP/TCP headers are not.
   Plus a warm idle connection (keepalive and ping every 5 s) and the connection setup.
CPU of the link: its thread (which reads its connection too: no reader thread), read from its own
thread CPU clock (``time.pthread_getcpuclockid``), so the emulator, proxy and feeder
threads in the same process are not counted.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import CORPUS_DIR, clips, corpus_available, frames_of
from bench.gate import CATEGORY_ORDER
from edgecap.config.schema import LinkConfig
from edgecap.gate.speech_gate import GateSettings, SpeechGate
from edgecap.runtime.frames import SAMPLE_RATE
from edgecap.runtime.speech import GateEvent, SpeechAudio, SpeechEnd
from edgecap.runtime.speech_queue import SpeechQueue
from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.soniox import SonioxEmulator
from tests.link.harness import FRAME_BYTES, LinkRun, coverage_gaps, utterances, wait_until

BYTES_PER_S = 2 * SAMPLE_RATE
DEFAULTS = LinkConfig()
LINK = dict(
    connect=DEFAULTS.connect,
    idle_close=DEFAULTS.idle_close,
    buffer=DEFAULTS.buffer,
    retry_first=DEFAULTS.retry_first,
    retry_max=DEFAULTS.retry_max,
    connect_timeout=DEFAULTS.connect_timeout,
    dead_after=DEFAULTS.dead_after,
    finish_timeout=DEFAULTS.finish_timeout,
)
DRAINED_S = 0.2  # "caught up": the emulator has all speech fed but at most this much
UTTERANCE_MS, PAUSE_MS = 4000, 300


def progress(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class Rig:
    """An emulator, a fault proxy in front of it and a LinkRun connecting through it."""

    def __init__(self, replay_speed: float = DEFAULTS.replay_speed, **settings: object) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="edgecap-bench-")
        self.emu = SonioxEmulator(self._tmp.name)
        self.proxy = FaultProxy(("127.0.0.1", self.emu.port))
        url = self.emu.url.replace(f":{self.emu.port}/", f":{self.proxy.port}/")
        self.run = LinkRun(self.emu, url=url, replay_speed=replay_speed, **{**LINK, **settings})
        self.attempts: list[tuple[float, float, bool]] = []  # (start, end, connected)
        link = self.run.link
        connect = link._connect

        def timed_connect(now: float) -> None:
            t0 = time.monotonic()
            connect(now)
            self.attempts.append((t0, time.monotonic(), link._conn is not None))

        link._connect = timed_connect  # type: ignore[method-assign]
        self.failures: list[tuple[float, str]] = []  # every session that ended badly
        failed = link._session_failed

        def noted_failure(error) -> None:  # type: ignore[no-untyped-def]
            self.failures.append((time.monotonic(), error.describe()))
            failed(error)

        link._session_failed = noted_failure  # type: ignore[method-assign]

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proxy.close()
        self.emu.close()
        self._tmp.cleanup()

    def link_cpu(self) -> float:
        """CPU seconds of the link thread (which also reads its connection)."""
        return thread_cpu(self.run.link._thread)


def thread_cpu(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def quiet_logs() -> None:
    # The link logs every retry as a warning; only errors are of interest here.
    logging.basicConfig(level=logging.ERROR, format="%(processName)s %(name)s: %(message)s")


class LiveSpeech:
    """Continuous speech fed in real time; logs when each audio frame was put."""

    def __init__(self, queue: SpeechQueue, seconds: float, seed: int) -> None:
        n = int(seconds * 1000 / (UTTERANCE_MS + PAUSE_MS)) + 1
        self.events = utterances([UTTERANCE_MS] * n, gap_ms=PAUSE_MS, seed=seed)
        self.queue = queue
        self.parts: list[bytes] = []  # audio fed, in order
        self.times: list[float] = []  # when each of those frames was put
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-speech")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop at the next frame; an open utterance is ended as the gate would."""
        self._stop.set()
        self._thread.join()

    @property
    def fed_bytes(self) -> int:
        return len(self.times) * FRAME_BYTES

    def fed_at(self, t: float) -> int:
        return bisect.bisect_right(self.times, t) * FRAME_BYTES

    def forwarded(self) -> bytes:
        return b"".join(list(self.parts))

    def _run(self) -> None:
        t0 = time.monotonic()
        first = None
        open_utt = None
        for e in self.events:
            if self._stop.is_set():
                break
            sample = e.frame.end if isinstance(e, SpeechAudio) else e.sample
            first = sample if first is None else first
            delay = t0 + (sample - first) / SAMPLE_RATE - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self.queue.put(e)
            if isinstance(e, SpeechAudio):
                self.parts.append(e.frame.pcm)
                self.times.append(time.monotonic())
                open_utt = (e.utterance, e.frame.end)
            elif isinstance(e, SpeechEnd):
                open_utt = None
        if open_utt is not None:
            self.queue.put(SpeechEnd(open_utt[0], open_utt[1], "end_of_input", 0.0))


def frame_offset(forwarded: bytes, piece: bytes) -> int:
    at = forwarded.find(piece)
    while at >= 0 and at % FRAME_BYTES:
        at = forwarded.find(piece, at + 1)
    return at


# --- 1 and 2: one outage ---------------------------------------------------------------------
def outage_job(seconds: float, lead: float, seed: int) -> dict:
    quiet_logs()
    # enough speech for: lead, outage, the longest backoff (30 s), a full buffer drained at
    # 1.5x while speech goes on (~2 x 30 s), and a little more
    speech_s = lead + seconds + 30 + 70 + 10
    with Rig() as rig:
        emu, proxy, run = rig.emu, rig.proxy, rig.run
        live = LiveSpeech(run.queue, speech_s, seed)
        run.start()
        live.start()
        ok = wait_until(lambda: emu.sessions and emu.sessions[0].audio_ms >= lead * 1000, lead + 10)
        assert ok, "no session before the outage"
        t_cut = time.monotonic()
        proxy.refuse(seconds)
        proxy.cut()
        back = t_cut + seconds
        refused_before = proxy.refused

        def resumed_session():  # type: ignore[no-untyped-def]
            for s in emu.sessions[1:]:
                if s.first_audio_at is not None and s.first_audio_at > t_cut:
                    return s
            return None

        assert wait_until(lambda: resumed_session() is not None, seconds + 45, 0.01), "no resume"
        s = resumed_session()
        offsets: dict[int, int] = {}  # session index -> where its audio starts in the input

        def received_end() -> int | None:
            """Where the newest session's audio ends in the input (None: not known yet)."""
            x = emu.sessions[-1]
            if x.index not in offsets:
                if len(x.audio) < FRAME_BYTES:
                    return None
                offsets[x.index] = frame_offset(live.forwarded(), bytes(x.audio[:FRAME_BYTES]))
            return offsets[x.index] + len(x.audio)

        def caught_up() -> bool:
            end = received_end()
            return end is not None and live.fed_bytes - end <= DRAINED_S * BYTES_PER_S

        # (should the new session fail, the drain goes on in the next one)
        wait_until(caught_up, 150, 0.05)
        time.sleep(2.0)
        live.stop()
        attempts_link = run.link.attempts
        run.stop(timeout=15)

        forwarded = live.forwarded()
        gaps = coverage_gaps(forwarded, [bytes(x.audio) for x in emu.sessions])
        # what the service finalized: each session's audio up to its last final_audio_proc_ms
        finals = []
        for x in emu.sessions:
            f_ms = max((m.get("final_audio_proc_ms", 0) for m in x.sent), default=0)
            finals.append(bytes(x.audio[: f_ms * BYTES_PER_S // 1000]))
        unfinal = coverage_gaps(forwarded, finals)
        # the drain, from the emulator's frame logs (every session from the resumed one on)
        # and the feeder's log
        arrivals: list[tuple[float, int]] = []  # (when, where the received audio ended)
        for x in emu.sessions[s.index :]:
            if len(x.audio) < FRAME_BYTES:
                continue
            end = frame_offset(forwarded, bytes(x.audio[:FRAME_BYTES]))
            for t, kind, size in list(x.frames):
                if kind == "binary":
                    end += size  # type: ignore[operator]
                    arrivals.append((t, end))
        arrivals.sort()
        drained = next(
            (t for t, end in arrivals if live.fed_at(t) - end <= DRAINED_S * BYTES_PER_S),
            float("nan"),
        )
        off = frame_offset(forwarded, bytes(s.audio[:FRAME_BYTES]))
        ok_attempts = [a for a in rig.attempts if a[2] and a[0] > t_cut]
        a_start, a_end = ok_attempts[0][:2] if ok_attempts else (float("nan"), float("nan"))
        first_audio = s.first_audio_at
        assert first_audio is not None
        return {
            "outage": seconds,
            "backoff": max(0.0, a_start - back),
            "connect": a_end - max(a_start, back),
            "first_audio": first_audio - back,
            "drained": drained - back,
            "backlog_s": (live.fed_at(first_audio) - off) / BYTES_PER_S,
            "reported": sum(loss[0] for loss in run.sink.losses),
            "counted": run.link.buffer.dropped.seconds,
            "not_received": sum(b - a for a, b in gaps) / BYTES_PER_S,
            "not_final": sum(b - a for a, b in unfinal) / BYTES_PER_S,
            "unconfirmed_dropped": run.link.buffer.unconfirmed_dropped_samples / SAMPLE_RATE,
            "gaps": len(gaps),
            "refused": proxy.refused - refused_before,
            "attempts": attempts_link,
            "sessions": len(emu.sessions),
            "fed_s": len(forwarded) / BYTES_PER_S,
            "reasons": sorted({loss[3] for loss in run.sink.losses}),
            # sessions that ended badly after the link was back (none expected)
            "late_failures": [
                (round(t - first_audio, 2), what) for t, what in rig.failures if t > first_audio
            ],
        }


# --- real-time CPU, warm idle -----------------------------------------------------------------
def live_cpu_job(seconds: float) -> dict:
    """Live speech, no fault: the link's CPU and bytes per second of real-time streaming."""
    quiet_logs()
    with Rig() as rig:
        live = LiveSpeech(rig.run.queue, seconds + 10, seed=999)
        rig.run.start()
        live.start()
        assert wait_until(lambda: rig.emu.sessions and rig.emu.sessions[0].audio_ms > 2000, 10)
        cpu0, up0, fed0, t0 = rig.link_cpu(), rig.proxy.bytes_up, live.fed_bytes, time.monotonic()
        time.sleep(seconds)
        cpu1, up1, fed1, t1 = rig.link_cpu(), rig.proxy.bytes_up, live.fed_bytes, time.monotonic()
        live.stop()
        rig.run.stop(timeout=15)
    return {
        "wall": t1 - t0,
        "audio_s": (fed1 - fed0) / BYTES_PER_S,
        "cpu": cpu1 - cpu0,
        "bytes_up": up1 - up0,
    }


def warm_idle_job(cycles: int) -> dict:
    """A warm connection, nobody speaking: bytes and CPU over whole keepalive cycles."""
    quiet_logs()
    with Rig(connect="warm") as rig:
        emu, proxy = rig.emu, rig.proxy
        rig.run.start()
        assert wait_until(lambda: emu.sessions and emu.sessions[0].config is not None, 10)
        setup = (proxy.bytes_up, proxy.bytes_down)
        s = emu.sessions[0]
        assert wait_until(lambda: len(s.keepalive_times) >= 1, 10)
        time.sleep(0.5)  # the ping and its pong go with the keepalive
        up0, down0, cpu0, t0 = proxy.bytes_up, proxy.bytes_down, rig.link_cpu(), time.monotonic()
        assert wait_until(lambda: len(s.keepalive_times) >= 1 + cycles, 6 * cycles + 10)
        time.sleep(0.5)
        up1, down1, cpu1, t1 = proxy.bytes_up, proxy.bytes_down, rig.link_cpu(), time.monotonic()
        keepalives = len(s.keepalive_times)
        rig.run.stop(timeout=10)
    return {
        "setup_up": setup[0],
        "setup_down": setup[1],
        "wall": t1 - t0,
        "up": up1 - up0,
        "down": down1 - down0,
        "cpu": cpu1 - cpu0,
        "keepalives": keepalives,
    }


# --- 3: bytes on the wire -----------------------------------------------------------------------
def category_events(category: str, gate_on: bool) -> tuple[list[GateEvent], float]:
    """The category's clips back to back through one gate (on, or off: everything)."""
    gate = SpeechGate(GateSettings(enabled=gate_on))
    events: list[GateEvent] = []
    start = 0
    for c in clips():
        if c.category != category:
            continue
        pcm = c.pcm()
        for frame in frames_of(pcm, 20, start):
            events += gate.feed(frame)
        start += len(pcm) // 2 // 320 * 320
    events += gate.flush("end_of_input")
    return events, start / SAMPLE_RATE


def wire_job(category: str, gate_on: bool) -> dict:
    quiet_logs()
    events, audio_s = category_events(category, gate_on)
    forwarded = b"".join(e.frame.pcm for e in events if isinstance(e, SpeechAudio))
    ends = sum(isinstance(e, SpeechEnd) for e in events)
    # a buffer holding everything: this measures bytes, not outages
    with Rig(replay_speed=10.0, buffer=audio_s + 10) as rig:
        emu = rig.emu
        rig.run.start()
        t0 = time.monotonic()
        rig.run.feed(events)

        def done() -> bool:
            return sum(len(s.finalize_times) for s in emu.sessions) >= ends and (
                rig.run.link.buffer.empty
            )

        assert wait_until(done, audio_s / 5 + 30, 0.01), "not everything was confirmed"
        wall = time.monotonic() - t0
        cpu = rig.link_cpu() if ends else 0.0
        rig.run.stop(timeout=15)
        received = [bytes(s.audio) for s in emu.sessions]
        assert coverage_gaps(forwarded, received) == []
        return {
            "category": category,
            "gate": gate_on,
            "audio_s": audio_s,
            "forwarded_s": len(forwarded) / BYTES_PER_S,
            "bytes_up": rig.proxy.bytes_up,
            "bytes_down": rig.proxy.bytes_down,
            "audio_bytes": sum(len(r) for r in received),
            "sessions": len(emu.sessions),
            "utterances": ends,
            "cpu": cpu,
            "wall": wall,
        }


# --- the report -------------------------------------------------------------------------------
def median_max(values: list[float]) -> str:
    vals = [v for v in values if v == v]
    if not vals:
        return f"{'-':>7} {'-':>7}"
    return f"{statistics.median(vals):7.2f} {max(vals):7.2f}"


def report_outages(results: list[dict], runs: int, live: dict, idle: dict) -> None:
    print("Link benchmark: LinkWorker + Soniox emulator over TLS + TCP fault proxy")
    print(
        f"link defaults: {DEFAULTS.connect}, buffer {DEFAULTS.buffer:.0f} s, replay_speed "
        f"{DEFAULTS.replay_speed}, retry_first {DEFAULTS.retry_first:.0f} s, retry_max "
        f"{DEFAULTS.retry_max:.0f} s, dead_after {DEFAULTS.dead_after:.0f} s"
    )
    print(
        f"live speech: emulator noise_pcm, {UTTERANCE_MS / 1000:.0f} s utterances with "
        f"{PAUSE_MS} ms pauses, in real time throughout"
    )
    print()
    print(f"1. Resume after an outage: s from the proxy accepting again ({runs} runs each)")
    lengths = sorted({r["outage"] for r in results})
    print(f"{'':32s}" + "".join(f"{f'{n:.0f} s outage':>16s}" for n in lengths))
    print(f"{'':32s}" + "".join(f"{'median':>8s}{'max':>8s}" for _ in lengths))
    rows = [
        ("backoff wait", "backoff"),
        ("connect (TCP+TLS+upgrade+start)", "connect"),
        ("(a) first audio at the emulator", "first_audio"),
        ("(b) backlog drained", "drained"),
        ("backlog at resume (s of speech)", "backlog_s"),
    ]
    for label, key in rows:
        line = f"{label:32s}"
        for n in lengths:
            line += " " + median_max([r[key] for r in results if r["outage"] == n])
        print(line)
    share = [
        r["backoff"] / r["first_audio"] for r in results if r["first_audio"] > 0 and r["outage"]
    ]
    print(
        f"backoff share of (a): median {statistics.median(share) * 100:.0f} %; "
        f"(b) - (a) is the replay of the backlog at {DEFAULTS.replay_speed}x with speech "
        "going on"
    )
    print()
    print(f"2. Speech lost per outage ({DEFAULTS.buffer:.0f} s buffer, speech throughout)")
    print(
        f"{'outage':>6s} {'run':>3s} {'wait':>5s} {'reported':>8s} {'dropped':>8s} "
        f"{'not rcvd':>8s} {'not final':>9s} {'agree':>5s} {'unconf.':>7s} {'tries':>5s} "
        f"{'sess':>4s} {'fed s':>6s}"
    )
    for n in lengths:
        for i, r in enumerate([r for r in results if r["outage"] == n], start=1):
            agree = (
                abs(r["reported"] - r["not_final"]) < 1e-6
                and abs(r["counted"] - r["not_final"]) < 1e-6
            )
            print(
                f"{n:5.0f}s {i:3d} {r['backoff']:5.1f} {r['reported']:7.2f}s "
                f"{r['counted']:7.2f}s {r['not_received']:7.2f}s {r['not_final']:8.2f}s "
                f"{'yes' if agree else 'NO':>5s} "
                f"{r['unconfirmed_dropped']:6.2f}s {r['refused']:5d} {r['sessions']:4d} "
                f"{r['fed_s']:6.1f}"
            )
    print(
        "wait: backoff after the return (s); reported: CaptionSink.loss; dropped: "
        "buffer.dropped; not rcvd: fed speech no session received (coverage_gaps of the "
        "sessions' audio); not final: fed speech no session finalized (coverage_gaps of each "
        "session's audio up to its last final_audio_proc_ms); agree: reported = dropped = "
        "not final; unconf.: sent, not yet confirmed, then dropped (counted apart, not as "
        "lost); tries: attempts refused during the outage; sess: sessions at the emulator"
    )
    for r in results:
        if r["late_failures"]:
            print(
                f"!! {r['outage']:.0f} s outage: the resumed session failed "
                + "; ".join(
                    f"{t:.2f} s after its first audio: {what}" for t, what in r["late_failures"]
                )
                + f" (losses reported: {', '.join(r['reasons']) or 'none'})"
            )
    diff = [r["reported"] - r["not_received"] for r in results if r["reported"]]
    if diff:
        print(
            f"reported - not rcvd, where speech was lost: {min(diff):.2f} to {max(diff):.2f} s "
            "(audio the cut session had received but not finalized, dropped as the oldest)"
        )
    print()
    print("CPU of the link (its thread, which reads the connection too; thread CPU clock)")
    per_h = live["cpu"] / live["audio_s"] * 3600
    print(
        f"  live speech in real time: {per_h:.1f} CPU-s per audio-hour "
        f"({live['cpu']:.2f} s over {live['wall']:.0f} s, {live['audio_s']:.1f} s of speech); "
        f"{live['bytes_up'] / live['audio_s'] / 1000:.1f} kB up per s of speech"
    )
    print(
        f"  warm idle connection: {idle['cpu'] / idle['wall'] * 3600:.1f} CPU-s per hour "
        f"(the loop wakes every 20 ms)"
    )
    print()


def report_wire(rows: list[dict], live: dict, idle: dict) -> None:
    print("3. Bytes on the wire: gated (SpeechGate defaults) vs gate off (everything streamed)")
    print(
        f"{'category':9s} {'audio s':>7s} {'sent s':>6s} {'bytes up gated':>14s} "
        f"{'ungated':>10s} {'ratio':>6s} {'audio B gated':>13s} {'ungated':>10s} "
        f"{'overhead':>8s} {'gated':>7s}"
    )
    for cat in CATEGORY_ORDER:
        g = next((r for r in rows if r["category"] == cat and r["gate"]), None)
        u = next((r for r in rows if r["category"] == cat and not r["gate"]), None)
        if g is None or u is None:
            continue
        og = f"{(g['bytes_up'] / g['audio_bytes'] - 1) * 100:6.1f}%" if g["audio_bytes"] else "-"
        ou = f"{(u['bytes_up'] / u['audio_bytes'] - 1) * 100:7.1f}%"
        print(
            f"{cat:9s} {g['audio_s']:7.1f} {g['forwarded_s']:6.1f} {g['bytes_up']:14,d} "
            f"{u['bytes_up']:10,d} {g['bytes_up'] / u['bytes_up']:6.3f} "
            f"{g['audio_bytes']:13,d} {u['audio_bytes']:10,d} {ou:>8s} {og:>7s}"
        )
    print(
        "sent s: audio the gate forwarded; audio B: audio bytes the emulator received; "
        "overhead: bytes up / audio bytes - 1 (TLS + WebSocket framing + start, finalize and "
        "end messages + connection setup)"
    )
    fast = [r for r in rows if r["cpu"] and r["forwarded_s"]]
    if fast:
        cpu = sum(r["cpu"] for r in fast) / sum(r["forwarded_s"] for r in fast) * 3600
        print(
            f"link CPU in these fast runs (replay_speed 10, all at once): {cpu:.1f} CPU-s per "
            "audio-hour sent"
        )
    print()
    per_h_up = idle["up"] / idle["wall"] * 3600
    per_h_down = idle["down"] / idle["wall"] * 3600
    print(
        f"warm idle connection (keepalive + ping every 5 s; {idle['wall']:.1f} s measured): "
        f"{per_h_up / 1024:,.0f} KiB/hour up, {per_h_down / 1024:,.0f} KiB/hour down "
        f"({idle['up'] / (idle['wall'] / 5):.0f} B up per 5 s)"
    )
    print(
        f"connection setup (TCP payload: TLS handshake, upgrade, start message): "
        f"{idle['setup_up']:,d} B up, {idle['setup_down']:,d} B down"
    )
    print(
        f"(the default, {DEFAULTS.connect}, closes after {DEFAULTS.idle_close:.0f} s without "
        "speech: an idle hour then costs nothing, and the next utterance one setup)"
    )
    live_per_h = live["bytes_up"] / live["audio_s"] * 3600
    print(f"for scale: an hour of speech streamed live sends {live_per_h / 2**20:,.0f} MiB up")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per outage length")
    parser.add_argument("--lengths", default="5,30,60", help="outage lengths, s")
    parser.add_argument("--no-corpus", action="store_true", help="skip the bytes on the wire")
    args = parser.parse_args()
    lengths = [float(x) for x in args.lengths.split(",")]
    wall = time.monotonic()
    ctx = get_context("spawn")
    jobs = len(lengths) * args.runs + 2
    progress(
        f"outages {', '.join(f'{n:.0f}' for n in lengths)} s x {args.runs} runs, side by side "
        f"in {jobs} processes, in real time (~{max(lengths) + 110:.0f} s at most)"
    )
    results: list[dict] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        live_f = pool.submit(live_cpu_job, 30.0)
        idle_f = pool.submit(warm_idle_job, 6)
        futures = {}
        k = 0
        for n in lengths:
            for i in range(args.runs):
                lead = 3.0 + 0.37 * k  # staggered, so the returns rarely coincide
                futures[pool.submit(outage_job, n, lead, 100 + k)] = (n, i)
                k += 1
        for f in as_completed(futures):
            r = f.result()
            results.append(r)
            progress(
                f"  outage {r['outage']:.0f} s: first audio {r['first_audio']:.2f} s, drained "
                f"{r['drained']:.2f} s, lost {r['reported']:.2f} s "
                f"(t+{time.monotonic() - wall:.0f} s)"
            )
        live, idle = live_f.result(), idle_f.result()
    results.sort(key=lambda r: r["outage"])
    report_outages(results, args.runs, live, idle)

    if args.no_corpus or not corpus_available():
        if not args.no_corpus:
            print(f"bytes on the wire: skipped (corpus not found at {CORPUS_DIR})")
        print(f"(benchmark ran in {time.monotonic() - wall:.0f} s)")
        return 0
    progress("bytes on the wire: corpus categories gated and ungated, side by side")
    rows = []
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        wire = [pool.submit(wire_job, c, g) for c in CATEGORY_ORDER for g in (True, False)]
        for f in as_completed(wire):
            r = f.result()
            rows.append(r)
            progress(
                f"  {r['category']} {'gated' if r['gate'] else 'ungated'}: "
                f"{r['bytes_up']:,d} B up in {r['wall']:.1f} s"
            )
    report_wire(rows, live, idle)
    print()
    print(f"(benchmark ran in {time.monotonic() - wall:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
