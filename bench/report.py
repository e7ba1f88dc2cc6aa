"""Writes the benches' figures (bench/results.json) into docs/performance.md (not a test).

    .venv/bin/python bench/report.py [--results bench/results.json]
        [--doc docs/performance.md] [--check]

The document keeps its prose; the tables are generated, each between a pair of markers:

    <!-- bench:begin NAME -->
    … (replaced on every run) …
    <!-- bench:end NAME -->

with NAME one of ``SECTIONS``:

- ``compare``: the whole daemon beside the example client and the official SDK, per
  service, from the same run (bench/compare.py's ``compare-<service>`` entries: its
  ``--markdown``), with the rounds, audio, commit, date and machine of each;
- ``idle``: CPU-s per idle hour, connected (``warm``) and disconnected (``on_demand``
  after ``idle_close``), medians (``idle-<service>``: ``bench/compare.py --what idle``);
- ``gate``: the speech gate on the corpus (``gate``: bench/gate.py): per category the share
  of the audio forwarded (the bytes on the wire vs an ungated client) and of the reference
  speech, onset and release, and its CPU;
- ``daemon``: start to READY (sd_notify), peak RSS and RSS growth per hour of audio, from
  the daemon's rounds of ``compare-<service>`` (and the idle runs' starts);
- ``single``: the single runs of ``bench/daemon.py --results`` (``daemon-<service>-<mode>
  [-hdmi][-wav][-warm]``): the whole daemon's CPU per audio-hour, during the talk and the
  quiet, the offline engine's decoding apart, peak RSS — the local engine and the HDMI
  screen, which bench/compare.py does not run;
- ``latency``: percentiles of block captured → on the wire, service message → socket
  client, speech end → final caption (less the emulator's answer), from the daemon's
  rounds; and, when the results hold them, the outputs bench's publish → socket client /
  framebuffer written / serial bytes (``outputs``) and the offline engine's speech end →
  final caption (``offline``).

A figure the results do not hold is shown as "-" (a section with none at all says which
bench makes it). The output depends on the results file alone (no clock), so running it
twice changes nothing. ``--check`` writes nothing and exits 1 if the document is not what
it would write (the figures belong to one machine: not for CI). Markers of an unknown
section are an error; a known section the document has no markers for is left out.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import statistics
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.compare import (
    IDLE_CONNECTS,
    IDLE_TARGET_PER_H,
    SERVICES,
    fmt,
    machine_text,
    markdown_notes,
    markdown_table,
    when,
)

log = logging.getLogger("bench.report")

REPO = Path(__file__).resolve().parents[1]
WIDTH = 92  # docs/performance.md's lines
MARKER = re.compile(
    r"(<!-- bench:begin (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- bench:end (?P=name) -->)",
    re.DOTALL,
)
ANY_MARKER = re.compile(r"<!-- bench:(begin|end) ([\w-]+) -->")
DAEMON_LATENCY = {
    "capture_to_wire": "block captured → on the wire",
    "service_to_socket": "service message → socket client",
    "speech_end_to_final": "speech end → final caption",
    "speech_end_to_final_less_answer": "speech end → final caption, less the emulator's answer",
}
OUTPUT_LATENCY = {  # bench/outputs.py's outputs, by name
    "socket": "publish → socket client read the line",
    "hdmi 1920x1080x16": "publish → framebuffer written (1920×1080, 16 bpp)",
    "hdmi 800x480x32": "publish → framebuffer written (800×480, 32 bpp)",
    "serial (lines)": "publish → serial bytes on the pty",
}
Results = dict[str, Any]


def figures(results: Results, key: str) -> Any:
    entry = results.get(key)
    return None if not entry else entry.get("figures")


def daemon_rounds(results: Results, service: str) -> list[dict[str, Any]]:
    """The daemon's measured rows of each round of ``compare-<service>``."""
    f = figures(results, f"compare-{service}")
    if not f:
        return []
    return [r for rs in f["runs"] for r in rs if r["client"] == "daemon" and r["measured"]]


def stamp(entry: dict[str, Any]) -> str:
    """A results entry's provenance: "abc1234, 2026-12-07 17:12 UTC"."""
    return f"{entry['code'].get('commit') or '?'}, {when(entry.get('date'))}"


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# --- the sections ---------------------------------------------------------------------------
def section_compare(results: Results) -> list[str]:
    if not any(f"compare-{s}" in results for s in SERVICES):
        return ["No figures yet: `bench/compare.py` makes them."]
    return [*markdown_table(results), "", *markdown_notes(results)]


def section_idle(results: Results) -> list[str]:
    rows = [
        "| service | connected, silent (`warm`) | disconnected (`on_demand`, after idle_close) "
        "| runs | measured per run | start → READY ms | commit, date |",
        "|---|---|---|---|---|---|---|",
    ]
    machines = []
    for service in SERVICES:
        entry = results.get(f"idle-{service}")
        if not entry:
            continue
        f = entry["figures"]
        cells = []
        for connect in IDLE_CONNECTS:
            m = f["median"][connect]
            each = [r["cpu_per_hour"] for rs in f["runs"] for r in rs if r["connect"] == connect]
            mark = "" if m["ok"] else " (!)"
            cells.append(
                f"{fmt(m['cpu_per_hour'])}{mark} ({', '.join(fmt(v) for v in each)})"
                if len(each) > 1
                else f"{fmt(m['cpu_per_hour'])}{mark}"
            )
        rows.append(
            f"| {service} | {cells[0]} | {cells[1]} | {len(f['runs'])} "
            f"| {f['hold_minutes']:g} min | {fmt(ms(f.get('start_to_ready_s')), '.0f')} "
            f"| {stamp(entry)} |"
        )
        machines.append(machine_text(entry.get("machine")))
    if not machines:
        return ["No figures yet: `bench/compare.py --what idle --runs 3` makes them."]
    return [
        *rows,
        "",
        f"CPU-s per hour, the median of the runs (each run's in brackets); issue 15's target "
        f"is {IDLE_TARGET_PER_H:g}. Each run: the daemon with the configuration's defaults but "
        "for `[link] connect`, a little talk then quiet on the ALSA source, measured over the "
        "quiet after the talk settled (warm) or after the link closed (on_demand); (!) marks "
        "a run that failed or never reached the state. Machine: "
        + "; ".join(dict.fromkeys(machines))
        + ".",
    ]


def section_gate(results: Results) -> list[str]:
    entry = results.get("gate")
    if not entry:
        return ["No figures yet: `bench/gate.py --results bench/results.json` makes them."]
    f = entry["figures"]
    rows = [
        "| clips | n | audio s | forwarded % (bytes vs ungated) | reference speech forwarded % "
        "| utterances | onset p50 / p90 ms | release p50 / p90 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def pair(q: dict[str, Any] | None) -> str:
        return "-" if not q else f"{fmt(q['p50'], '.0f')} / {fmt(q['p90'], '.0f')}"

    order = ["speech", "hum", "music", "kitchen"]  # bench/gate.py's
    ranked = sorted(f["categories"], key=lambda n: (order.index(n) if n in order else 9, n))
    for name in ranked:
        c = f["categories"][name]
        rows.append(
            f"| {name} | {c['clips']} | {fmt(c['audio_s'])} | {fmt(c['sent_pct'])} "
            f"| {fmt(c['gt_sent_pct'], '.2f')} | {c['utterances']} | {pair(c['onset_ms'])} "
            f"| {pair(c['release_ms'])} |"
        )
    st, cpu = f["settings"], f["cpu_per_audio_hour"]
    return [
        *rows,
        "",
        f"The default settings (aggressiveness {st['aggressiveness']}, {st['frame_ms']} ms "
        f"frames, pre-roll {st['preroll_ms']} ms, hang-over {st['hangover_ms']} ms, minimum "
        f"speech {st['min_speech_ms']} ms), each clip fed on its own between 1 s of digital "
        "silence and 2 s after. Forwarded: the share of the clip's audio the gate lets "
        "through (its room sound before and after the speech included): what a gated client "
        "sends against an ungated one. Reference speech: the corpus's energy-based speech "
        "frames (independent of webrtcvad) that were forwarded. Onset: true speech onset to "
        "the frame that opened the gate (negative: opened on the room sound before, which "
        "the pre-roll covers); release: true speech end to the close (the hang-over is in "
        f"it). CPU, the gate alone in a tight loop: {fmt(cpu['blocks'], '.2f')} CPU-s per "
        f"audio-hour fed 100 ms blocks as the capture thread does "
        f"({fmt(cpu['webrtcvad'], '.2f')} of it the bare webrtcvad calls). "
        f"{stamp(entry)}; "
        f"{machine_text(entry.get('machine'))}.",
    ]


def section_daemon(results: Results) -> list[str]:
    rows = [
        "| service | start → READY ms | peak RSS MB | RSS growth MB per audio-hour "
        "| measured over | runs |",
        "|---|---|---|---|---|---|",
    ]
    any_row = False
    for service in SERVICES:
        rounds = daemon_rounds(results, service)
        idle = figures(results, f"idle-{service}")
        starts = [r.get("start_to_ready_s") for r in rounds]
        if idle:
            starts += [r.get("start_to_ready_s") for rs in idle["runs"] for r in rs]
        if not rounds and not idle:
            continue
        any_row = True
        audio = (figures(results, f"compare-{service}") or {}).get("audio")
        over = (
            f"{audio['talk_s'] / 60:g} min talk + {audio['idle_s'] / 60:g} min quiet"
            if audio and rounds
            else "-"
        )
        n_start = sum(s is not None for s in starts)
        start = f"{fmt(ms(median(starts)), '.0f')} (n {n_start})" if n_start else "-"
        rows.append(
            f"| {service} | {start} "
            f"| {fmt(median([r.get('peak_rss_mb') for r in rounds]))} "
            f"| {fmt(median([r.get('rss_growth_mb_per_h') for r in rounds]), '+.1f')} "
            f"| {over} | {len(rounds)} |"
        )
    if not any_row:
        return ["No figures yet: `bench/compare.py` makes them."]
    return [
        *rows,
        "",
        "Medians of the daemon's rounds in `compare-<service>` (start → READY: and of the "
        "idle runs). Start → READY: from the exec to the READY=1 datagram on a NOTIFY_SOCKET "
        "the bench listens on, as systemd would (the daemon says READY once its capture has "
        "opened the source). RSS growth: the slope of VmRSS sampled every 0.25 s over the "
        "run, its first 30 s left out; a run of minutes says little about an hour (the soak "
        "does), a blip of 1 MB in 3 minutes reads as 20 MB/h.",
    ]


def section_single(results: Results) -> list[str]:
    rows = [
        "| service, mode | outputs | CPU-s per audio-hour | talk, per hour | quiet, per hour "
        "| offline decoding, per audio-hour | peak RSS MB | captions | audio | commit, date |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    machines = []
    for key in sorted(k for k in results if k.startswith("daemon-")):
        entry = results[key]
        f = entry["figures"]
        setup, phases, audio = f["setup"], f["phases"], f["audio"]
        outputs = "socket" + (" + HDMI 1080p16" if setup.get("hdmi") else "")
        source = "" if setup.get("source", "alsa") == "alsa" else f", {setup['source']} source"
        connect = setup.get("connect", "on_demand")
        dec = f.get("decoding")
        # with the offline engine, the first figures are the daemon's without its decoding
        whole = dec["rest_per_audio_hour"] if dec else f["whole"]["per_audio_hour"]
        talk = dec["rest_talk_per_hour"] if dec else phases.get("talk", {}).get("per_hour")
        decoding = (
            f"{fmt(dec['per_audio_hour'])} ({fmt(dec['talk_per_hour'])} in the talk)"
            if dec
            else "-"
        )
        idle = phases.get("idle", {})
        quiet = idle.get("per_hour")
        threads = f.get("threads") or {}
        local = threads.get("ec-local")
        if dec and local and idle.get("wall_s"):  # the quiet without the backlog's decoding
            # bench/daemon.py's ENGINE_TASK (not imported: it brings the emulators along)
            engine = (threads.get("ec-engine (process)") or {}).get("idle", 0.0)
            quiet = (idle["cpu_s"] - local["idle"] - engine) / idle["wall_s"] * 3600
        mark = "" if f["exit_status"] == 0 and not f["log_errors"] else " (!)"
        rows.append(
            f"| {setup['service']}, {setup['mode']}{source}"
            f"{', ' + connect if connect != 'on_demand' else ''}{mark} | {outputs} "
            f"| {fmt(whole)} | {fmt(talk)} | {fmt(quiet)} | {decoding} "
            f"| {fmt(f['memory']['peak_rss_mb'])} | {f['captions']['lines']} lines "
            f"| {audio['talk_s'] / 60:g} min talk + {audio['idle_s'] / 60:g} min quiet "
            f"| {stamp(entry)} |"
        )
        machines.append(machine_text(entry.get("machine")))
    if not machines:
        return ["No figures yet: `bench/daemon.py --results bench/results.json` makes them."]
    return [
        *rows,
        "",
        "One run each of `bench/daemon.py` (the whole daemon, the configuration's defaults, the "
        "ALSA source, real time; no peers beside it). With the offline engine (`local`) the "
        "CPU columns are the daemon without its decoding (the ec-local thread and the engine's "
        "process), which has "
        "its own column; (!) marks a run that exited non-zero or logged an error. Machine: "
        + "; ".join(dict.fromkeys(machines))
        + ".",
    ]


def percentile_cells(q: dict[str, Any] | None) -> str:
    if not q:
        return "- | - | - | - | -"
    return (
        f"{fmt(q.get('n'), '.0f')} | {fmt(q.get('p50'))} | {fmt(q.get('p90'))} "
        f"| {fmt(q.get('p99'))} | {fmt(q.get('max'))}"
    )


def section_latency(results: Results) -> list[str]:
    rows = [
        "| path | where | n | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    measured: dict[str, dict[str, Any]] = {}  # service: its daemon's latency (medians)
    unmeasured = []
    for service in SERVICES:
        entry = figures(results, f"compare-{service}") or {}
        merged = next(
            (r for r in entry.get("median", []) if r["client"] == "daemon" and r["measured"]),
            None,
        )
        if merged is None:
            continue
        if any((merged.get("latency") or {}).get(k) for k in DAEMON_LATENCY):
            measured[service] = merged["latency"]
        else:
            unmeasured.append(service)
    for key, label in DAEMON_LATENCY.items():
        for service, latency in measured.items():
            rows.append(f"| {label} | daemon, {service} | {percentile_cells(latency.get(key))} |")
    outputs = figures(results, "outputs")
    if outputs:
        for name, label in OUTPUT_LATENCY.items():
            q = (outputs.get("latency") or {}).get(name)
            if q:
                rows.append(f"| {label} | outputs bench | {percentile_cells(q)} |")
    offline = figures(results, "offline")
    if offline and offline.get("final_ms"):
        rows.append(
            f"| speech end → final caption | offline engine | "
            f"{percentile_cells(offline['final_ms'])} |"
        )
    notes: list[str] = []
    if measured:
        notes += [
            "",
            "Daemon rows: each round's percentiles over its run, the median of the rounds "
            "(`compare-<service>`: "
            + ", ".join(f"{s} {len(daemon_rounds(results, s))} round(s)" for s in measured)
            + '); "-": not measured in those rounds (a WAV source has no capture times; the '
            "Azure emulator does not record when audio arrived). Captured: the bench's write "
            "of the 100 ms block into the ALSA FIFO, which the daemon's read returns at once. "
            "On the wire: the audio message's arrival at the emulator (pre-roll and audio "
            "queued while connecting are sent late by design: the tail). Service message → "
            "socket client: each caption message against the emulator's last message before "
            "it. Speech end: the block holding the end of a clip's speech (the corpus's "
            "energy ground truth); the gate's hang-over is in the figure; the emulator's "
            "answer (its end-of-utterance signal to its reply) is subtracted in the last row.",
        ]
    if unmeasured:
        notes += [
            "",
            "The daemon's latency is not in the results' rounds of: "
            + ", ".join(unmeasured)
            + " (measured before `bench/daemon.py` took it).",
        ]
    missing = [
        what
        for what, have in (
            ("`outputs` (bench/outputs.py)", outputs),
            ("`offline` (bench/offline.py)", offline),
        )
        if not have
    ]
    if missing:
        notes += ["", "Not in the results file yet: " + ", ".join(missing) + "."]
    if len(rows) == 2:
        return [
            "No latency figures yet: the daemon's rounds of `bench/compare.py` make them.",
            *notes,
        ]
    return [*rows, *notes]


SECTIONS: dict[str, Callable[[Results], list[str]]] = {
    "compare": section_compare,
    "idle": section_idle,
    "gate": section_gate,
    "daemon": section_daemon,
    "single": section_single,
    "latency": section_latency,
}


# --- the document ------------------------------------------------------------------------------
class ReportError(Exception):
    """The document's markers are wrong (unknown, unpaired)."""


def wrap(lines: list[str]) -> list[str]:
    """Prose and list items wrapped at the document's width (tables as they are)."""
    out: list[str] = []
    for line in lines:
        if line.startswith("|") or len(line) <= WIDTH:
            out.append(line)
            continue
        indent = "  " if line.startswith("- ") else ""
        out += textwrap.wrap(
            line, WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
        )
    return out


def render(results: Results) -> dict[str, str]:
    """Each section's Markdown, as it goes between its markers."""
    return {name: "\n".join(wrap(make(results))) + "\n" for name, make in SECTIONS.items()}


def apply(doc: str, sections: dict[str, str]) -> str:
    """``doc`` with the body of every marked section replaced (nothing else touched)."""
    names = [m.group(2) for m in ANY_MARKER.finditer(doc)]
    unknown = sorted(set(names) - set(sections))
    if unknown:
        raise ReportError(f"unknown sections in the document: {', '.join(unknown)}")
    paired = [m.group("name") for m in MARKER.finditer(doc)]
    unpaired = sorted({n for n in names if names.count(n) != 2 or n not in paired})
    if unpaired:
        raise ReportError(f"markers not paired (begin … end, once): {', '.join(unpaired)}")

    def fill(m: re.Match[str]) -> str:
        return f"{m.group(1)}\n{sections[m.group('name')]}\n{m.group(4)}"

    return MARKER.sub(fill, doc)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results.json")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "performance.md")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the document's tables are not the results file's",
    )
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    doc = args.doc.read_text()
    try:
        new = apply(doc, render(results))
    except ReportError as exc:
        log.error("%s: %s", args.doc, exc)
        return 2
    absent = [n for n in SECTIONS if f"<!-- bench:begin {n} -->" not in doc]
    if absent:
        log.info("%s has no markers for: %s (left out)", args.doc, ", ".join(absent))
    if new == doc:
        log.info("%s is up to date with %s", args.doc, args.results)
        return 0
    if args.check:
        diff = difflib.unified_diff(
            doc.splitlines(keepends=True),
            new.splitlines(keepends=True),
            str(args.doc),
            f"{args.doc} from {args.results}",
        )
        sys.stdout.writelines(diff)
        log.error("%s is stale: run bench/report.py", args.doc)
        return 1
    tmp = args.doc.with_suffix(".tmp")
    tmp.write_text(new)
    tmp.replace(args.doc)
    log.info("%s: wrote %s", args.doc, ", ".join(n for n in SECTIONS if n not in absent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
