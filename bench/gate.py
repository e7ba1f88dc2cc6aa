"""Benchmark of the speech gate on the shared corpus (not a test): prints tables.

    .venv/bin/python bench/gate.py [--runs N] [--results bench/results.json]

Accuracy: every clip is fed on its own, frame by frame (``feed``: the frame on which each
decision falls; the capture thread feeds blocks of 100 ms with ``feed_block``, which decides
the same on the same frames, reported with the block), between 1 s of digital silence before
and 2 s after, so the gate starts listening and can close.
- sent %: share of the clip's audio forwarded (pauses and the clip's own leading and
  trailing room sound included);
- GT sent %: share of the ground-truth speech (bench.corpus: energy-based, independent of
  webrtcvad) that was forwarded (what the service gets of what was said);
- onset delay: from the true speech onset to the frame on which SpeechStart was decided
  (negative: the gate opened on sound before the speech, which the pre-roll then covers);
- release: from the true end of speech to the frame on which SpeechEnd was decided (the
  hang-over is part of it by design).
CPU: the whole corpus back to back (no padding) through one gate, frames (and blocks of
five frames, as the capture thread feeds them) built beforehand, ``time.process_time()``
around the feed loop, median of N runs, extrapolated to one hour of audio; the bare
webrtcvad calls on the same frames are timed in alternation with it. This is the gate's own
work in a tight loop: in the daemon the capture thread also pays for waking up per block.
``--results FILE`` merges the default settings' figures into the bench's results file,
keyed ``gate`` (bench/report.py's gate table).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import webrtcvad

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import (
    CORPUS_DIR,
    GT_FRAME,
    Clip,
    clips,
    corpus_available,
    digital_silence,
    frames_of,
    speech_bounds,
    speech_mask,
)
from bench.daemon import merge_results
from edgecap.gate.speech_gate import GateSettings, SpeechGate
from edgecap.runtime.frames import SAMPLE_RATE, Frame, block_frames
from edgecap.runtime.speech import SpeechAudio, SpeechEnd, SpeechStart

LEAD = SAMPLE_RATE  # digital silence before each clip
TAIL = 2 * SAMPLE_RATE  # and after it
CATEGORY_ORDER = ["speech", "hum", "music", "kitchen"]


@dataclass
class ClipResult:
    clip: Clip
    samples: int
    sent: int = 0  # samples forwarded inside the clip
    gt_speech: int = 0  # ground-truth speech samples
    gt_sent: int = 0  # of those, forwarded
    utterances: int = 0
    onset_ms: float | None = None
    release_ms: float | None = None


@dataclass
class Category:
    results: list[ClipResult] = field(default_factory=list)

    def add(self, r: ClipResult) -> None:
        self.results.append(r)

    @property
    def audio_s(self) -> float:
        return sum(r.samples for r in self.results) / SAMPLE_RATE

    @property
    def sent_pct(self) -> float:
        return 100.0 * sum(r.sent for r in self.results) / sum(r.samples for r in self.results)

    @property
    def gt_sent_pct(self) -> float | None:
        gt = sum(r.gt_speech for r in self.results)
        return 100.0 * sum(r.gt_sent for r in self.results) / gt if gt else None

    def values(self, name: str) -> list[float]:
        return [v for r in self.results if (v := getattr(r, name)) is not None]


def run_clip(c: Clip, pcm: bytes, settings: GateSettings) -> ClipResult:
    n = len(pcm) // 2
    result = ClipResult(c, n)
    gate = SpeechGate(settings)
    stream = digital_silence(LEAD) + pcm + digital_silence(TAIL)
    sent = np.zeros(LEAD + n + TAIL, dtype=bool)
    starts: list[int] = []  # sample (relative to the clip) at which each start was decided
    ends: list[int] = []
    for frame in frames_of(stream, settings.frame_ms):
        for e in gate.feed(frame):
            if isinstance(e, SpeechAudio):
                sent[e.frame.start : e.frame.end] = True
            elif isinstance(e, SpeechStart):
                starts.append(frame.end - LEAD)
            elif isinstance(e, SpeechEnd):
                ends.append(frame.end - LEAD)
    for _ in gate.flush("end_of_input"):
        ends.append(len(stream) - LEAD)
    in_clip = sent[LEAD : LEAD + n]
    result.sent = int(in_clip.sum())
    result.utterances = len(starts)
    if c.category == "speech":
        onset, end = speech_bounds(pcm)
        mask = np.repeat(speech_mask(pcm), GT_FRAME)
        result.gt_speech = int(mask.sum())
        result.gt_sent = int((mask & in_clip[: len(mask)]).sum())
        if starts:
            result.onset_ms = (starts[0] - onset) * 1000 / SAMPLE_RATE
        if ends:
            result.release_ms = (ends[-1] - end) * 1000 / SAMPLE_RATE
    return result


def accuracy(corpus: list[tuple[Clip, bytes]], settings: GateSettings) -> dict[str, Category]:
    cats = {name: Category() for name in CATEGORY_ORDER}
    for c, pcm in corpus:
        cats[c.category].add(run_clip(c, pcm, settings))
    return cats


def _time_gate(frames: list[Frame], settings: GateSettings) -> float:
    gate = SpeechGate(settings)
    feed = gate.feed
    t0 = time.process_time()
    for f in frames:
        feed(f)
    gate.flush("end_of_input")
    return time.process_time() - t0


def _time_gate_blocks(blocks: list[Frame], settings: GateSettings) -> float:
    gate = SpeechGate(settings)
    feed_block = gate.feed_block
    t0 = time.process_time()
    for b in blocks:
        feed_block(b)
    gate.flush("end_of_input")
    return time.process_time() - t0


def blocks_of(frames: list[Frame], per_block: int) -> list[Frame]:
    """Consecutive frames joined into blocks of ``per_block`` (as a source reads them)."""
    return [
        Frame(b"".join(f.pcm for f in frames[i : i + per_block]), frames[i].start, 0.0)
        for i in range(0, len(frames), per_block)
    ]


def _time_vad(frames: list[Frame], mode: int) -> float:
    is_speech = webrtcvad.Vad(mode).is_speech
    t0 = time.process_time()
    for f in frames:
        is_speech(f.pcm, SAMPLE_RATE)
    return time.process_time() - t0


def cpu_per_hour(
    frames: list[Frame], settings: GateSettings, runs: int
) -> tuple[float, float, float]:
    """CPU seconds per audio-hour of the gate fed frames, fed blocks, and of the bare
    webrtcvad calls, timed in alternation (the machine is shared and noisy), medians of
    ``runs``, after a warm-up."""
    audio_s = len(frames) * settings.frame_ms / 1000
    blocks = blocks_of(frames, block_frames(settings.frame_ms))
    _time_gate(frames, settings)
    _time_gate_blocks(blocks, settings)
    gate_t, block_t, vad_t = [], [], []
    for _ in range(runs):
        gate_t.append(_time_gate(frames, settings))
        block_t.append(_time_gate_blocks(blocks, settings))
        vad_t.append(_time_vad(frames, settings.aggressiveness))
    per_hour = 3600 / audio_s
    return (
        statistics.median(gate_t) * per_hour,
        statistics.median(block_t) * per_hour,
        statistics.median(vad_t) * per_hour,
    )


def quantiles(values: list[float]) -> dict[str, float | int] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "max": float(max(values)),
    }


def figures(cats: dict[str, Category], settings: GateSettings, cpu: tuple[float, ...]) -> dict:
    """What ``--results`` keeps: per category, the share of the audio forwarded (bytes on
    the wire vs an ungated client) and of the reference speech; onset and release; CPU."""
    gate_cpu, block_cpu, vad_cpu = cpu
    return {
        "settings": {
            "aggressiveness": settings.aggressiveness,
            "frame_ms": settings.frame_ms,
            "preroll_ms": settings.preroll_ms,
            "hangover_ms": settings.hangover_ms,
            "min_speech_ms": settings.min_speech_ms,
        },
        "categories": {
            name: {
                "clips": len(cat.results),
                "audio_s": cat.audio_s,
                "sent_pct": cat.sent_pct,
                "gt_sent_pct": cat.gt_sent_pct,
                "utterances": sum(r.utterances for r in cat.results),
                "onset_ms": quantiles(cat.values("onset_ms")),
                "release_ms": quantiles(cat.values("release_ms")),
            }
            for name, cat in cats.items()
            if cat.results  # a corpus may lack a category
        },
        "cpu_per_audio_hour": {"frames": gate_cpu, "blocks": block_cpu, "webrtcvad": vad_cpu},
    }


def pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):6.0f}" if values else "     -"


def fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-".rjust(len(format(0.0, spec)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="CPU runs (median)")
    parser.add_argument("--results", type=Path, help="merge the figures in (key: gate)")
    args = parser.parse_args()
    if not corpus_available():
        print(f"corpus not found at {CORPUS_DIR} (set EDGECAP_CORPUS)", file=sys.stderr)
        return 2
    wall = time.monotonic()
    corpus = [(c, c.pcm()) for c in clips()]
    base = GateSettings()
    print(
        f"speech gate on {len(corpus)} corpus clips; settings: aggressiveness "
        f"{base.aggressiveness}, {base.frame_ms} ms frames, pre-roll {base.preroll_ms} ms, "
        f"hang-over {base.hangover_ms} ms, min speech {base.min_speech_ms} ms"
    )
    print()

    # Per category, default settings.
    cats = accuracy(corpus, base)
    print(
        f"{'category':9s} {'clips':>5s} {'audio s':>8s} {'sent %':>7s} {'GT sent %':>9s} "
        f"{'utts':>5s} | {'onset delay ms':^23s} | {'release ms':^23s}"
    )
    print(
        f"{'':9s} {'':5s} {'':8s} {'':7s} {'':9s} {'':5s} | {'p50':>6s} {'p90':>6s} {'max':>6s}   "
        f" | {'p50':>6s} {'p90':>6s} {'max':>6s}"
    )
    for name in CATEGORY_ORDER:
        cat = cats[name]
        on, rel = cat.values("onset_ms"), cat.values("release_ms")
        print(
            f"{name:9s} {len(cat.results):5d} {cat.audio_s:8.1f} {cat.sent_pct:7.1f} "
            f"{fmt(cat.gt_sent_pct, '9.2f')} {sum(r.utterances for r in cat.results):5d} | "
            f"{pct(on, 50)} {pct(on, 90)} {pct(on, 100)}    | "
            f"{pct(rel, 50)} {pct(rel, 90)} {pct(rel, 100)}"
        )
    speech = cats["speech"]
    early = [r for r in speech.results if r.onset_ms is not None and r.onset_ms < 0]
    print(
        f"onset delay min {min(speech.values('onset_ms')):.0f} ms; opened before the "
        f"energy onset (on pre-speech room sound) in {len(early)} of "
        f"{len(speech.results)} speech clips: " + ", ".join(r.clip.base for r in early)
    )
    by_lang: dict[str, list[float]] = {}
    for r in speech.results:
        if r.onset_ms is not None:
            by_lang.setdefault(r.clip.lang, []).append(r.onset_ms)
    print(
        "onset delay p50 by language (ms): "
        + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in sorted(by_lang.items()))
    )
    print()

    # CPU, default settings, side by side with the bare detector.
    frames: list[Frame] = []
    start = 0
    for _, pcm in corpus:
        frames.extend(frames_of(pcm, base.frame_ms, start))
        start = frames[-1].end
    audio_s = len(frames) * base.frame_ms / 1000
    gate_cpu, block_cpu, vad_cpu = cpu_per_hour(frames, base, args.runs)
    us_per_frame = gate_cpu / 3600 * base.frame_ms / 1000 * 1e6
    per_block = block_frames(base.frame_ms)
    us_per_block = block_cpu / 3600 * base.frame_ms * per_block / 1000 * 1e6
    print(
        f"CPU, median of {args.runs} runs over the whole corpus back to back ({audio_s:.0f} s, "
        f"{len(frames)} frames):\n  gate fed frames {gate_cpu:.2f} CPU-s per audio-hour "
        f"({us_per_frame:.1f} us/frame); fed blocks of {per_block} frames {block_cpu:.2f} "
        f"({us_per_block:.1f} us/block); bare webrtcvad calls {vad_cpu:.2f}; "
        f"gate/webrtcvad {gate_cpu / vad_cpu:.2f} (blocks {block_cpu / vad_cpu:.2f})"
    )
    print()
    if args.results:
        merge_results(args.results, "gate", figures(cats, base, (gate_cpu, block_cpu, vad_cpu)))

    # Per aggressiveness, compact.
    print(
        f"{'aggr':>4s} {'speech sent %':>13s} {'GT sent %':>9s} {'onset p50':>9s} "
        f"{'onset p90':>9s} {'release p50':>11s} {'hum %':>6s} {'music %':>7s} "
        f"{'kitchen %':>9s} {'CPU s/h':>7s} {'blocks':>7s} {'vad s/h':>7s}"
    )
    for a in range(4):
        s = GateSettings(aggressiveness=a)
        c = accuracy(corpus, s)
        on, rel = c["speech"].values("onset_ms"), c["speech"].values("release_ms")
        cpu, blk, vad = cpu_per_hour(frames, s, args.runs)
        print(
            f"{a:4d} {c['speech'].sent_pct:13.1f} {fmt(c['speech'].gt_sent_pct, '9.2f')} "
            f"{np.percentile(on, 50):9.0f} {np.percentile(on, 90):9.0f} "
            f"{np.percentile(rel, 50):11.0f} {c['hum'].sent_pct:6.1f} {c['music'].sent_pct:7.1f} "
            f"{c['kitchen'].sent_pct:9.1f} {cpu:7.2f} {blk:7.2f} {vad:7.2f}"
        )
    print()
    print(f"(benchmark ran in {time.monotonic() - wall:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
