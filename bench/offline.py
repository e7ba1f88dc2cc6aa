"""Benchmark of the offline engine (not a test): prints a table.

    .venv/bin/python bench/offline.py [--results bench/results.json]

For every English speech clip of the shared corpus: word error rate against its reference
transcript (a) decoding the whole file directly with pocketsphinx and (b) through the speech
gate and the LocalWorker, as the daemon does (utterance by utterance); the real-time factor
(decoding CPU / audio duration) and the latency from speech end to the final caption
(pocketsphinx's end of utterance). ``--results FILE`` merges the figures into the bench's
results file, keyed ``offline`` (``final_ms``: percentiles of speech end → final caption).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import clips, corpus_available
from bench.daemon import merge_results, percentiles
from edgecap.services.local.recognizers import PocketsphinxRecognizer
from tests.services.local.test_worker import gate_events, run_worker
from tests.services.local.wer import direct_decode, transcript, wer, words


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="merge the figures in (key: offline)")
    args = parser.parse_args()
    if not corpus_available():
        print("shared corpus not found")
        return 1
    print("Offline engine (pocketsphinx 5, bundled en-US model) on the corpus' English clips")
    print(f"{'clip':<36} {'audio s':>7} {'WER direct':>10} {'WER daemon':>10} {'RTF':>5} "
          f"{'final ms p50/max':>17}")  # fmt: skip
    rtfs, finals, cpu, speech = [], [], [], []
    words_total, errors_direct, errors_daemon = 0, 0.0, 0.0
    for c in clips():
        if c.category != "speech" or c.lang != "en":
            continue
        pcm = c.pcm()
        seconds = len(pcm) / 32_000
        t0 = time.process_time()
        direct = direct_decode(c.path)
        direct_cpu = time.process_time() - t0
        sink, _, worker = run_worker(gate_events(pcm), PocketsphinxRecognizer())
        text = " ".join(w.strip() for w in sink.finals)
        ref = transcript(c.base)
        n = len(words(ref))
        words_total += n
        errors_direct += wer(ref, direct) * n
        errors_daemon += wer(ref, text) * n
        rtf = worker.decode_seconds / seconds
        cpu.append(worker.decode_seconds)
        speech.append(seconds)
        rtfs.append(rtf)
        finals += worker.final_ms
        lat = worker.final_ms or [0.0]
        print(
            f"{c.base:<36} {seconds:>7.1f} {wer(ref, direct):>10.3f} {wer(ref, text):>10.3f} "
            f"{rtf:>5.2f} {statistics.median(lat):>8.0f}/{max(lat):<8.0f}"
        )
        del direct_cpu
    print(f"{'all (word-weighted)':<36} {'':>7} {errors_direct / words_total:>10.3f} "
          f"{errors_daemon / words_total:>10.3f}   ({words_total} reference words)")  # fmt: skip
    print(f"real-time factor median {statistics.median(rtfs):.2f} "
          f"(decoding CPU s per s of audio); final caption p50 {statistics.median(finals):.0f} ms, "
          f"max {max(finals):.0f} ms after speech end")  # fmt: skip
    print(f"decoding CPU: {statistics.median(rtfs) * 3600:.0f} CPU-s per audio-hour "
          f"(median clip), {sum(cpu) / sum(speech) * 3600:.0f} over all clips; the gate "
          f"keeps silence away from the engine")  # fmt: skip
    if args.results:
        merge_results(
            args.results,
            "offline",
            {
                "wer_direct": errors_direct / words_total,
                "wer_daemon": errors_daemon / words_total,
                "reference_words": words_total,
                "rtf_median": statistics.median(rtfs),
                "cpu_per_audio_hour": sum(cpu) / sum(speech) * 3600,
                "final_ms": percentiles(finals),
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
