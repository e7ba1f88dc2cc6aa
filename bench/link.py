"""Benchmark of the cloud link (not a test): prints tables.

    .venv/bin/python bench/link.py [--quick]

Everything is real: a LinkWorker (edgecap/link/worker.py) with the Soniox codec, the strict
Soniox emulator over TLS on 127.0.0.1 (tests/emulators/soniox.py) and a TCP fault proxy
in front of it (tests/emulators/fault_proxy.py). Default link settings unless stated.

1. Resume: speech is fed live (real time, continuous utterances of emulator-recognisable
   audio); the connection is cut and refused for 5 s; measured from the moment the proxy
   accepts again to (a) the next connection attempt (the backoff wait), (b) the first audio
   byte of the new session at the emulator, (c) the backlog drained (the link's buffer holds
   nothing unsent).
2. Loss per outage: the same, with outages of 5, 30 and 60 s and speech through all of it
   (the worst case); the loss the link reported is compared with the audio the emulator
   never received. The three outages run side by side (one emulator, proxy and link each).
3. Bytes on the wire: the shared corpus through the real speech gate, the gate's output
   sent through the link, counted at the proxy (TLS and WebSocket framing included), versus
   the same clips streamed ungated. Plus the cost of a warm idle connection (keepalives).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import clips, corpus_available, digital_silence, frames_of
from edgecap.gate.events import SpeechAudio, SpeechEnd, SpeechStart
from edgecap.gate.speech_gate import GateSettings, SpeechGate
from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.soniox import SonioxEmulator
from tests.link.harness import (
    LinkRun,
    coverage_gaps,
    forwarded_pcm,
    utterances,
    wait_until,
)

DEFAULTS = dict(retry_first=1.0, retry_max=30.0, connect_timeout=5.0, dead_after=10.0)


def progress(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def proxied(emu: SonioxEmulator, proxy: FaultProxy) -> str:
    return emu.url.replace(f":{emu.port}/", f":{proxy.port}/")


# --- 1 and 2: outages -----------------------------------------------------------------------
class Outage:
    """One emulator + proxy + link, speech fed live, one outage of ``seconds``."""

    def __init__(self, tmp: Path, seconds: float, speech_s: float) -> None:
        self.seconds = seconds
        self.emu = SonioxEmulator(tmp, lag_ms=300)
        self.proxy = FaultProxy(("127.0.0.1", self.emu.port))
        self.run = LinkRun(
            self.emu, url=proxied(self.emu, self.proxy), replay_speed=1.5, **DEFAULTS
        )
        # continuous speech: 4 s utterances with 0.3 s pauses
        n = int(speech_s / 4.3) + 1
        self.events = utterances([4000] * n, gap_ms=300, seed=int(seconds * 10))
        self.result: dict = {}

    def go(self) -> None:
        run, proxy, emu = self.run, self.proxy, self.emu
        run.start()
        run.feed(self.events, realtime=1.0)
        wait_until(lambda: emu.sessions and emu.sessions[0].audio_ms >= 3000, 15)
        attempts_before = run.link.attempts
        proxy.refuse(self.seconds)
        proxy.cut()
        time.sleep(self.seconds)
        back = time.monotonic()
        wait_until(lambda: len(emu.sessions) >= 2 and emu.sessions[-1].first_audio_at, 60)
        first_audio = emu.sessions[-1].first_audio_at
        resumed = [t for t in run.link.resumed_at if t >= back - 0.001]
        wait_until(lambda: run.link.buffer.pending_samples < 16_000 * 0.2, 120)
        drained = time.monotonic()
        run.wait_fed(600)
        wait_until(lambda: run.link.buffer.empty, 30)
        run.stop(timeout=10)
        forwarded = forwarded_pcm(self.events)
        gaps = coverage_gaps(forwarded, [bytes(s.audio) for s in emu.sessions])
        self.result = {
            "outage": self.seconds,
            "to_attempt": (min(resumed) - back) if resumed else float("nan"),
            "to_first_audio": (first_audio - back) if first_audio else float("nan"),
            "to_drained": drained - back,
            "reported_lost": sum(loss[0] for loss in run.sink.losses),
            "counted_lost": run.link.buffer.dropped.seconds,
            "not_received": sum(b - a for a, b in gaps) / 32_000,
            "attempts": run.link.attempts - attempts_before,
        }

    def close(self) -> None:
        self.proxy.close()
        self.emu.close()


def outages(lengths: list[float], speech_after: float) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="edgecap-bench-"))
    runs = [Outage(tmp / f"o{i}", s, 3 + s + speech_after) for i, s in enumerate(lengths)]
    threads = [threading.Thread(target=o.go, name=f"outage-{o.seconds}") for o in runs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(900)
    finally:
        for o in runs:
            o.close()
    return [o.result for o in runs]


# --- 3: bytes on the wire ---------------------------------------------------------------------
def gate_events(pcm: bytes, settings: GateSettings, start: int) -> list:
    gate = SpeechGate(settings)
    out: list = []
    for frame in frames_of(pcm, 20, start=start):
        out += gate.feed(frame)
    return out + gate.flush("end_of_input")


def ungated_events(pcm: bytes, n: int, start: int) -> list:
    frames = list(frames_of(pcm, 20, start=start))
    return [
        SpeechStart(n, start, start, 0.0),
        *(SpeechAudio(n, f) for f in frames),
        SpeechEnd(n, frames[-1].end if frames else start, "end_of_input", 0.0),
    ]


def wire_bytes(events: list) -> tuple[int, int, int]:
    """(bytes up through the proxy, audio bytes received, sessions) for sending ``events``."""
    tmp = Path(tempfile.mkdtemp(prefix="edgecap-bench-"))
    with SonioxEmulator(tmp, lag_ms=300) as emu, FaultProxy(("127.0.0.1", emu.port)) as proxy:
        # a buffer large enough for everything at once: this measures bytes, not outages
        run = LinkRun(emu, url=proxied(emu, proxy), replay_speed=10.0, buffer=600.0)
        run.start()
        run.feed(events)
        ends = sum(isinstance(e, SpeechEnd) for e in events)
        wait_until(lambda: emu.sessions and len(emu.sessions[-1].finalize_times) >= ends, 600)
        run.stop(timeout=30)
        return proxy.bytes_up, sum(len(s.audio) for s in emu.sessions), len(emu.sessions)


def warm_idle_bytes(seconds: float) -> float:
    """Bytes per hour of a warm connection with nobody speaking (keepalives + pings)."""
    tmp = Path(tempfile.mkdtemp(prefix="edgecap-bench-"))
    with SonioxEmulator(tmp) as emu, FaultProxy(("127.0.0.1", emu.port)) as proxy:
        run = LinkRun(emu, url=proxied(emu, proxy), connect="warm", dead_after=10.0)
        run.start()
        wait_until(lambda: emu.sessions, 5)
        time.sleep(1.0)
        before, t0 = proxy.bytes_up + proxy.bytes_down, time.monotonic()
        time.sleep(seconds)
        used = proxy.bytes_up + proxy.bytes_down - before
        elapsed = time.monotonic() - t0
        run.stop()
    return used / elapsed * 3600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s outage and 2 clips only")
    args = parser.parse_args()

    lengths = [5.0] if args.quick else [5.0, 30.0, 60.0]
    progress(
        f"outages {lengths} s with live speech (runs side by side, ~{max(lengths) + 40:.0f} s)"
    )
    results = outages(lengths, speech_after=8.0)
    if not args.quick:
        progress("resume after a 5 s outage, 4 more times")
        results += outages([5.0, 5.0, 5.0, 5.0], speech_after=8.0)

    print("Link benchmark (LinkWorker + Soniox emulator over TLS + TCP fault proxy)")
    print()
    print("Resume after an outage (s from the service accepting again; defaults:")
    print("retry_first 1 s, retry_max 30 s, replay_speed 1.5)")
    print(f"{'outage':>7} {'attempt':>8} {'1st audio':>10} {'connect':>8} {'drained':>8}")
    for r in results:
        connect = r["to_first_audio"] - r["to_attempt"]
        print(
            f"{r['outage']:>6.0f}s {r['to_attempt']:>8.2f} {r['to_first_audio']:>10.2f} "
            f"{connect:>8.2f} {r['to_drained']:>8.2f}"
        )
    fives = [r for r in results if r["outage"] == 5.0]
    if len(fives) > 1:
        med = statistics.median(r["to_first_audio"] for r in fives)
        worst = max(r["to_first_audio"] for r in fives)
        print(f"5 s outage, {len(fives)} runs: first audio median {med:.2f} s, max {worst:.2f} s")
    print()
    print("Speech lost per outage (30 s buffer, speech throughout)")
    print(f"{'outage':>7} {'reported':>9} {'counted':>8} {'not received':>13} {'attempts':>9}")
    seen = set()
    for r in results:
        if r["outage"] in seen:
            continue
        seen.add(r["outage"])
        print(
            f"{r['outage']:>6.0f}s {r['reported_lost']:>8.2f}s {r['counted_lost']:>7.2f}s "
            f"{r['not_received']:>12.2f}s {r['attempts']:>9d}"
        )
    print()

    if not corpus_available():
        print("bytes on the wire: skipped (../shared/corpus not found)")
        return 0
    settings = GateSettings(
        enabled=True,
        aggressiveness=2,
        frame_ms=20,
        preroll_ms=300,
        hangover_ms=600,
        min_speech_ms=150,
        max_utterance_s=60.0,
    )
    print("Bytes on the wire: gated vs everything streamed (bytes up through the proxy)")
    print(
        f"{'category':>9} {'audio s':>8} {'gated':>10} {'ungated':>10} {'ratio':>6} {'overhead':>9}"
    )
    by_cat: dict[str, list] = {}
    for c in clips():
        by_cat.setdefault(c.category, []).append(c)
    for cat in ("speech", "hum", "music", "kitchen"):
        chosen = by_cat.get(cat, [])[: 2 if args.quick else None]
        if not chosen:
            continue
        progress(f"bytes on the wire: {cat} ({len(chosen)} clips)")
        gated: list = []
        ungated: list = []
        pos = 0
        total_s = 0.0
        for n, c in enumerate(chosen, start=1):
            pcm = digital_silence(16_000) + c.pcm() + digital_silence(32_000)
            total_s += len(c.pcm()) / 32_000
            evs = gate_events(pcm, settings, pos)
            # renumber utterances so they stay unique across clips
            base = n * 1000
            gated += [replace(e, utterance=base + e.utterance) for e in evs]
            ungated += ungated_events(pcm, n, pos)
            pos += len(pcm) // 2 + 16_000
        up_g, _, _ = wire_bytes(gated)
        up_u, audio_u, _ = wire_bytes(ungated)
        print(
            f"{cat:>9} {total_s:>8.1f} {up_g:>10,d} {up_u:>10,d} {up_g / up_u:>6.2f} "
            f"{(up_u / audio_u - 1) * 100 if audio_u else 0:>8.1f}%"
        )
    progress("warm idle connection (10 s)")
    per_hour = warm_idle_bytes(10.0)
    print()
    print(f"warm idle connection (keepalive every 5 s + pings): {per_hour / 1024:,.0f} KiB/hour")
    return 0


if __name__ == "__main__":
    sys.exit(main())
