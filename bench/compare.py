"""The whole daemon side by side with the services' example client and official SDKs (not a
test).

    .venv/bin/python bench/compare.py [--service soniox|azure|sarvam|all] [--minutes 5]
        [--idle-minutes 1] [--runs 1] [--results bench/results.json]
        [--clients daemon,example,sdk] [--source alsa|wav]
        [--what compare,idle] [--idle-hold-minutes 2]
    .venv/bin/python bench/compare.py --markdown     # the compare table, from the results

For each service, in one run, on the same audio (bench/daemon.py's WAV: corpus talk with
2-4 s pauses of quiet room noise, then ``--idle-minutes`` of quiet) into the same emulator
(tests/emulators/, TLS on 127.0.0.1) through the same pass-through proxy that counts the
bytes, one client after the other (never two at once: the machine has 2 cores):

- **daemon**: ``edgecap run`` with the configuration's defaults (gate on, link on_demand),
  a socket output (bench/daemon.py's ``run_daemon``), the audio paced in real time as
  ``--source`` says: ``alsa`` (the default, as in production) captures from an ALSA
  ``file``-plugin device whose FIFO the bench fills a 100 ms block at a time, and is
  stopped with SIGTERM after the idle phase; ``wav`` has the daemon read and pace the WAV
  itself, to its end (see bench/daemon.py). The peers below always read the file;
- **example**: bench/example_client.py, the vendors' raw example pattern (websocket-client,
  the whole file ungated in 120 ms chunks at real time, a reader thread): Soniox and Sarvam.
  Azure documents no raw WebSocket example (its clients are the SDKs), so it has none;
- **sdk**: the official SDK, driven by bench/sdk_<service>.py in a venv of its own,
  ``bench/.venv-sdk`` (created here if missing with the pinned versions of ``SDKS``; never
  a runtime dependency of edgecap), pointed at the emulator (how, in each script's
  docstring) and trusting its CA through ``SSL_CERT_FILE``. An SDK that cannot be installed,
  pointed at the emulator or made to trust its CA is reported as such, and the issue's
  anchor figure stands in its row, marked "anchor".

Measured per client: CPU seconds of the process (utime + stime of the reaped child, all its
threads: the daemon's from bench/daemon.py, the peers' from ``wait4``), per hour of audio
(startup and shutdown in: the same for every client) and per wall hour; peak RSS (VmHWM,
sampled from /proc every ``SAMPLE_S``); bytes up and down at the proxy (TLS and WebSocket
framing included; "vs ungated": bytes up over the raw PCM of the whole file, 115.2 MB an
hour); the results the client got (caption lines for the daemon; final tokens, transcripts
or phrases for the peers). Ratios: the daemon over the example client and over the SDK.

The daemon's row also has, from bench/daemon.py: ``start_to_ready_s`` (exec → READY=1 on
the NOTIFY_SOCKET the bench listens on), ``rss_growth_mb_per_h`` (the slope of VmRSS) and
``latency`` (percentiles in ms: block captured → on the wire, service message → socket
client, speech end → final caption less the emulator's answer); medians over the rounds,
key by key.

Prints a table per service, writes the figures into ``--results`` (bench/results.json;
merged, keyed ``compare-<service>``, with the machine, the date and the git commit; the
daemon's source is its row's ``source`` and the entry's ``daemon_source``).
``--runs N`` repeats the round N times and reports medians (issue 15 asks for >= 3).

``--what idle`` (or ``compare,idle``) measures the daemon's idle costs instead (or as well):
per service, ``--runs`` rounds of two daemon runs, ``[link] connect = warm`` (connected and
silent, measured from 10 s after a little talk) and the default ``on_demand`` (measured
after the link closed, ``idle_close`` after the talk), each over ``--idle-hold-minutes`` of
quiet: CPU-s per idle hour, what each thread took and how often it woke, the start to
READY. Keyed ``idle-<service>``. bench/report.py writes all of it into docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import CORPUS_DIR, corpus_available
from bench.daemon import (
    IDLE_SETTLE_S,
    KEY,
    LATENCY_LABELS,
    SAMPLE_S,
    SOURCE_TEXT,
    SOURCES,
    Audio,
    Setup,
    build_wav,
    emulator,
    merge_results,
    progress,
    read_memory,
    run_daemon,
)
from bench.daemon import report as daemon_report
from edgecap.config.schema import LinkConfig
from edgecap.runtime.frames import SAMPLE_RATE
from tests.emulators.fault_proxy import FaultProxy

BENCH = Path(__file__).resolve().parent
SDK_VENV = BENCH / ".venv-sdk"
SDKS = {
    "soniox": "soniox==2.10.0",
    "azure": "azure-cognitiveservices-speech==1.53.0",
    "sarvam": "sarvamai==0.1.39",
}
SDK_MODULES = {"soniox": "soniox", "azure": "azure.cognitiveservices.speech", "sarvam": "sarvamai"}
SERVICES = ("soniox", "azure", "sarvam")
EXAMPLE_SERVICES = ("soniox", "sarvam")
CLIENTS = ("daemon", "example", "sdk")
PCM_BYTES_PER_HOUR = SAMPLE_RATE * 2 * 3600
# Figures of the official clients on this kind of machine, from the issues (12, 13, 14):
# what stands in a row that could not be measured here.
ANCHORS: dict[str, dict[str, dict[str, Any]]] = {
    "soniox": {
        "sdk": {"cpu_per_audio_hour": 29.6, "peak_rss_mb": None, "note": "issue 12"},
        "example": {"cpu_per_audio_hour": 11.9, "peak_rss_mb": None, "note": "issue 12"},
    },
    "azure": {
        "sdk": {"cpu_per_audio_hour": 73.0, "peak_rss_mb": 37.0, "note": "issue 14, real time"},
    },
    "sarvam": {
        "sdk": {
            "cpu_per_audio_hour": 5.3,
            "peak_rss_mb": 44.0,
            "note": "issue 13, unpaced, no compression",
        },
    },
}
PEER_TIMEOUT_S = 120.0  # beyond the audio's length
PARTS = ("compare", "idle")
# The idle costs: a little talk (the link connects, on_demand too, and serves a turn), then
# quiet; measured over the last ``--idle-hold-minutes`` of it: connected (warm, from
# IDLE_SETTLE_S after the talk) and disconnected (on_demand, from the link's close after
# [link] idle_close, the configuration's default).
IDLE_TALK_MINUTES = 0.25
IDLE_CONNECTS = ("warm", "on_demand")
IDLE_PHASE = {"warm": "idle, settled", "on_demand": "idle, link closed"}
IDLE_TARGET_PER_H = 2.0  # issue 15: CPU-s per idle hour


# --- the SDK venv ------------------------------------------------------------------------------
def sdk_python() -> Path:
    return SDK_VENV / "bin" / "python"


def ensure_sdk_venv() -> dict[str, str | None]:
    """Create bench/.venv-sdk with the pinned SDKs if it is missing; returns, per service,
    None when its SDK imports there, else why not."""
    python = sdk_python()
    if not python.exists():
        progress(f"creating {SDK_VENV} with {', '.join(SDKS.values())}")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(SDK_VENV)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "websocket-client", *SDKS.values()],
                check=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            progress(f"the SDK venv could not be made: {exc}")
    state: dict[str, str | None] = {}
    for service, module in SDK_MODULES.items():
        if not python.exists():
            state[service] = f"no SDK venv at {SDK_VENV}"
            continue
        done = subprocess.run(
            [str(python), "-c", f"import {module}"], capture_output=True, text=True
        )
        state[service] = (
            None
            if done.returncode == 0
            else f"{SDKS[service]} does not import: {done.stderr.strip().splitlines()[-1:]}"
        )
    return state


# --- one peer ----------------------------------------------------------------------------------
@dataclass
class PeerRun:
    client: str  # example or sdk
    cpu_s: float
    wall_s: float
    peak_rss_mb: float
    up: int
    down: int
    exit_status: int
    summary: dict[str, Any]  # the script's JSON line
    stderr_tail: str
    sessions: int  # at the emulator
    violations: list[str]


def run_peer(
    client: str, command: list[str], env: dict[str, str], proxy: FaultProxy, emu: Any, log: Path
) -> PeerRun:
    """Run one peer script to its end: CPU from its rusage (``wait4``), VmHWM sampled."""
    up0, down0 = proxy.bytes_up, proxy.bytes_down
    before = len(emu.sessions)
    t0 = time.monotonic()
    hwm = 0
    with log.open("wb") as err:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env
        )
    assert proc.stdout is not None
    deadline = t0 + PEER_TIMEOUT_S + float(env.get("BENCH_AUDIO_S", "0"))
    while True:
        with contextlib.suppress(OSError, ValueError):
            hwm = max(hwm, read_memory(proc.pid)[1])
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            progress(f"[{client}] did not end in time: killed")
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(SAMPLE_S)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read().decode(errors="replace")
    proc.stdout.close()
    summary: dict[str, Any] = {}
    with contextlib.suppress(ValueError, IndexError):
        summary = json.loads(out.strip().splitlines()[-1])
    sessions = emu.sessions[before:]
    violations = [v for s in sessions for v in getattr(s, "violations", [])]
    violations += [f"error {s.error_sent}" for s in sessions if getattr(s, "error_sent", None)]
    return PeerRun(
        client=client,
        cpu_s=usage.ru_utime + usage.ru_stime,
        wall_s=wall,
        peak_rss_mb=hwm / 1024,
        up=proxy.bytes_up - up0,
        down=proxy.bytes_down - down0,
        exit_status=proc.returncode,
        summary=summary,
        stderr_tail="\n".join(log.read_text(errors="replace").splitlines()[-5:]),
        sessions=len(sessions),
        violations=violations,
    )


def peer_command(client: str, service: str, proxy_port: int, pcm: Path, ca: str) -> list[str]:
    if service == "soniox":
        url = f"wss://127.0.0.1:{proxy_port}/transcribe-websocket"
    else:  # the Sarvam scripts append the path; the Azure SDK takes a host
        url = f"wss://127.0.0.1:{proxy_port}"
    common = ["--url", url, "--key", KEY, "--pcm", str(pcm)]
    if client == "example":
        return [
            sys.executable,
            str(BENCH / "example_client.py"),
            "--service",
            service,
            *common,
            "--ca",
            ca,
        ]
    return [str(sdk_python()), str(BENCH / f"sdk_{service}.py"), *common]


# --- one service ---------------------------------------------------------------------------
def row_from_daemon(r: dict[str, Any], audio: Audio) -> dict[str, Any]:
    audio_s = audio.talk_s + audio.idle_s
    w = r["whole"]
    ok = r["exit_status"] == 0 and not r["log_errors"]
    return {
        "client": "daemon",
        "measured": True,
        "ok": ok,
        "source": r["setup"]["source"],  # alsa or wav: how the audio came in
        "cpu_s": w["cpu_s"],
        "wall_s": w["wall_s"],
        "cpu_per_audio_hour": w["cpu_s"] / audio_s * 3600,
        "cpu_per_wall_hour": w["per_wall_hour"],
        "talk_cpu_per_hour": r["phases"]["talk"]["per_hour"],
        "peak_rss_mb": r["memory"]["peak_rss_mb"],
        "up": r["bytes"]["up"],
        "down": r["bytes"]["down"],
        "up_vs_ungated": r["bytes"]["up"] / (audio_s * PCM_BYTES_PER_HOUR / 3600),
        "results": f"{r['captions']['lines']} lines",
        "sessions": r["service_side"]["sessions"],
        "violations": r["service_side"]["violations"],
        "note": "" if ok else f"exit {r['exit_status']}, {len(r['log_errors'])} errors logged",
        # exec → READY=1, the slope of VmRSS, latency percentiles (bench/daemon.py)
        "start_to_ready_s": (r.get("ready") or {}).get("start_to_ready_s"),
        "rss_growth_mb_per_h": (r["memory"].get("rss_growth") or {}).get("mb_per_h"),
        "latency": r.get("latency"),
        # bench/daemon.py's own figures: phases, per-thread CPU, captions, service side
        "detail": {
            k: r[k]
            for k in (
                "input",
                "phases",
                "threads",
                "captions",
                "service_side",
                "link_closed_after_talk_s",
            )
        },
    }


def row_from_peer(p: PeerRun, audio: Audio) -> dict[str, Any]:
    audio_s = audio.talk_s + audio.idle_s
    # A violation the emulator recorded is shown beside the figures, not taken for a
    # failure: the emulator may be stricter than the service (see the report's notes).
    ok = p.exit_status == 0 and bool(p.summary.get("finished"))
    note = ""
    if not ok:
        note = p.summary.get("error") or p.stderr_tail.splitlines()[-1:] or f"exit {p.exit_status}"
        note = str(note)[:200]
    return {
        "client": p.client,
        "measured": True,
        "ok": ok,
        "cpu_s": p.cpu_s,
        "wall_s": p.wall_s,
        "cpu_per_audio_hour": p.cpu_s / audio_s * 3600,
        "cpu_per_wall_hour": p.cpu_s / p.wall_s * 3600,
        "talk_cpu_per_hour": None,
        "peak_rss_mb": p.peak_rss_mb,
        "up": p.up,
        "down": p.down,
        "up_vs_ungated": p.up / (audio_s * PCM_BYTES_PER_HOUR / 3600),
        "results": f"{p.summary.get('finals', '?')} finals, {p.summary.get('messages', '?')} msgs",
        "sessions": p.sessions,
        "violations": p.violations,
        "note": note,
    }


def anchor_row(service: str, client: str, why: str) -> dict[str, Any] | None:
    anchor = ANCHORS.get(service, {}).get(client)
    if anchor is None:
        return None
    return {
        "client": client,
        "measured": False,
        "ok": True,
        "cpu_s": None,
        "wall_s": None,
        "cpu_per_audio_hour": anchor["cpu_per_audio_hour"],
        "cpu_per_wall_hour": None,
        "talk_cpu_per_hour": None,
        "peak_rss_mb": anchor["peak_rss_mb"],
        "up": None,
        "down": None,
        "up_vs_ungated": None,
        "results": "",
        "sessions": 0,
        "violations": [],
        "note": f"anchor ({anchor['note']}): {why}",
    }


def run_service(
    service: str,
    minutes: float,
    idle_minutes: float,
    runs: int,
    clients: tuple[str, ...],
    sdk_state: dict[str, str | None],
    source: str = "alsa",
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"edgecap-bench-compare-{service}-") as tmp:
        directory = Path(tmp)
        progress(f"[{service}] building {minutes:g} min of talk + {idle_minutes:g} min idle")
        audio = build_wav(directory, minutes, idle_minutes)
        pcm = directory / "talk.pcm"  # the same audio, raw, for the peers
        with wave.open(str(audio.path), "rb") as w:
            pcm.write_bytes(w.readframes(w.getnframes()))
        audio_s = audio.talk_s + audio.idle_s
        rounds: list[list[dict[str, Any]]] = []
        with (
            emulator(service, directory / "emu") as emu,
            FaultProxy(("127.0.0.1", emu.port)) as proxy,
        ):
            env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
            env |= {"SSL_CERT_FILE": emu.ca_file, "BENCH_AUDIO_S": f"{audio_s:.0f}"}
            for n in range(runs):
                rows: list[dict[str, Any]] = []
                if "daemon" in clients:
                    progress(f"[{service}] run {n + 1}/{runs}: the daemon")
                    (directory / f"daemon-{n}").mkdir()
                    setup = Setup(service, "recognition", source=source)
                    r = run_daemon(setup, audio, directory / f"daemon-{n}", emu, proxy)
                    daemon_report(r)  # its phases and threads, as bench/daemon.py prints them
                    rows.append(row_from_daemon(r, audio))
                for client in ("example", "sdk"):
                    if client not in clients:
                        continue
                    if client == "example" and service not in EXAMPLE_SERVICES:
                        continue
                    why = sdk_state.get(service) if client == "sdk" else None
                    if why is None:
                        progress(f"[{service}] run {n + 1}/{runs}: the {client} client")
                        command = peer_command(client, service, proxy.port, pcm, emu.ca_file)
                        log = directory / f"{client}-{n}.log"
                        row = row_from_peer(run_peer(client, command, env, proxy, emu, log), audio)
                        if row["ok"] or client == "example":
                            rows.append(row)
                            continue
                        why = f"the SDK did not work against the emulator: {row['note']}"
                        rows.append(row)  # what it did, next to the anchor
                    stand_in = anchor_row(service, client, why)
                    if stand_in is not None:
                        rows.append(stand_in)
                rounds.append(rows)
        return {
            "service": service,
            "audio": asdict(audio) | {"path": None, "seconds": audio_s},
            "daemon_source": source if "daemon" in clients else None,
            "runs": rounds,
            "median": medians(rounds),
        }


def medians(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per client (and measured or anchor), the median of each figure over the rounds."""
    keys: list[tuple[str, bool]] = []
    for rows in rounds:
        for row in rows:
            if (row["client"], row["measured"]) not in keys:
                keys.append((row["client"], row["measured"]))
    out = []
    for client, measured in keys:
        rows = [
            r for rs in rounds for r in rs if (r["client"], r["measured"]) == (client, measured)
        ]
        merged = dict(rows[-1])
        for name in {k for r in rows for k in r}:
            values = [r.get(name) for r in rows]
            if any(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                merged[name] = median_tree(values)
        if any(isinstance(r.get("latency"), dict) for r in rows):
            merged["latency"] = median_tree([r.get("latency") for r in rows])
        merged["ok"] = all(r["ok"] for r in rows)
        merged["n"] = len(rows)
        out.append(merged)
    return out


def median_tree(values: list[Any]) -> Any:
    """The median of numbers (None left out; None if none), key by key through dicts
    (percentile tables: the median of the rounds' p50s, p90s …)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, dict) for v in present):
        keys = list(dict.fromkeys(k for v in present for k in v))
        return {k: median_tree([v.get(k) for v in present]) for k in keys}
    numbers = [v for v in present if isinstance(v, int | float) and not isinstance(v, bool)]
    return statistics.median(numbers) if numbers else present[-1]


def carry_over(result: dict[str, Any], path: Path, clients: tuple[str, ...]) -> None:
    """With ``--clients`` a subset, take the other clients' rows from the results file's
    previous ``compare-<service>`` entry when it was made on the same audio (the WAV is
    seeded: same minutes, same corpus, same bytes), marked with the date they were
    measured on; so a round can be completed piecewise and its table still compares."""
    if set(clients) == set(CLIENTS) or not path.exists():
        return
    try:
        previous = json.loads(path.read_text()).get(f"compare-{result['service']}")
    except ValueError:
        return
    if not previous:
        return
    figures = previous["figures"]
    same = {k: figures["audio"].get(k) for k in ("talk_s", "idle_s", "clips")} == {
        k: result["audio"][k] for k in ("talk_s", "idle_s", "clips")
    }
    if not same:
        progress(f"[{result['service']}] the previous results were on other audio: not kept")
        return
    for row in figures["median"]:
        if row["client"] not in clients:
            kept = dict(row)
            kept.setdefault("measured_on", previous["date"])
            if row["client"] == "daemon" and row["measured"]:  # rows from before: the WAV
                result["daemon_source"] = kept.setdefault("source", "wav")
            result["median"].append(kept)
            result.setdefault("carried_over", []).append(
                {"client": row["client"], "date": previous["date"], "code": previous["code"]}
            )
    order = {c: i for i, c in enumerate(CLIENTS)}
    result["median"].sort(key=lambda r: (order[r["client"]], not r["measured"]))


# --- idle costs ----------------------------------------------------------------------------------
def idle_row(connect: str, r: dict[str, Any]) -> dict[str, Any]:
    """One idle run's figures: CPU-s per hour over its measured window, what each thread took
    and how often it woke in the quiet, the start to READY."""
    phase = r["phases"].get(IDLE_PHASE[connect])
    idle = r["phases"]["idle"]
    ok = r["exit_status"] == 0 and not r["log_errors"] and phase is not None
    note = ""
    if phase is None:
        note = "the link never closed" if connect == "on_demand" else "no quiet to measure"
    elif not ok:
        note = f"exit {r['exit_status']}, {len(r['log_errors'])} errors logged"
    wall = idle["wall_s"] or 1e-9
    return {
        "connect": connect,
        "ok": ok,
        "cpu_per_hour": phase["per_hour"] if phase else None,
        "window_s": phase["wall_s"] if phase else None,
        "link_closed_after_talk_s": r["link_closed_after_talk_s"],
        "start_to_ready_s": (r.get("ready") or {}).get("start_to_ready_s"),
        "peak_rss_mb": r["memory"]["peak_rss_mb"],
        "bytes_idle": r["bytes"]["up"] - r["bytes"]["talk_up"],
        # the whole idle phase (warm: all connected; on_demand: idle_close, then closed)
        "threads_idle": {
            name: {
                "cpu_per_hour": t["idle"] / wall * 3600,
                "wakes_per_s": t["wakes"]["idle"] / wall,
            }
            for name, t in r["threads"].items()
        },
        "note": note,
    }


def run_idle(service: str, hold_minutes: float, runs: int, source: str) -> dict[str, Any]:
    """The daemon's cost per idle hour, connected (warm) and disconnected (on_demand),
    ``runs`` rounds of both, one daemon at a time, against the service's emulator."""
    idle_close = LinkConfig().idle_close
    with tempfile.TemporaryDirectory(prefix=f"edgecap-bench-idle-{service}-") as tmp:
        directory = Path(tmp)
        audios = {}
        for connect in IDLE_CONNECTS:
            lead = IDLE_SETTLE_S if connect == "warm" else idle_close + 2 * SAMPLE_S
            (directory / connect).mkdir()
            audios[connect] = build_wav(
                directory / connect, IDLE_TALK_MINUTES, hold_minutes + lead / 60
            )
        rounds: list[list[dict[str, Any]]] = []
        with (
            emulator(service, directory / "emu") as emu,
            FaultProxy(("127.0.0.1", emu.port)) as proxy,
        ):
            for n in range(runs):
                rows = []
                for connect in IDLE_CONNECTS:
                    progress(f"[{service}] idle run {n + 1}/{runs}: {connect}")
                    run_dir = directory / f"{connect}-{n}"
                    run_dir.mkdir()
                    setup = Setup(service, "recognition", source=source, connect=connect)
                    r = run_daemon(setup, audios[connect], run_dir, emu, proxy)
                    rows.append(idle_row(connect, r))
                rounds.append(rows)
        audio = audios["warm"]
        return {
            "service": service,
            "source": source,
            "hold_minutes": hold_minutes,
            "talk_s": audio.talk_s,
            "idle_close_s": idle_close,
            "target_per_hour": IDLE_TARGET_PER_H,
            "runs": rounds,
            "median": {
                connect: {
                    "cpu_per_hour": median_tree(
                        [r["cpu_per_hour"] for rs in rounds for r in rs if r["connect"] == connect]
                    ),
                    "n": sum(
                        r["cpu_per_hour"] is not None
                        for rs in rounds
                        for r in rs
                        if r["connect"] == connect
                    ),
                    "ok": all(r["ok"] for rs in rounds for r in rs if r["connect"] == connect),
                }
                for connect in IDLE_CONNECTS
            },
            "start_to_ready_s": median_tree([r["start_to_ready_s"] for rs in rounds for r in rs]),
        }


def report_idle(result: dict[str, Any]) -> list[str]:
    lines = [
        f"{result['service']}: idle costs, CPU-s per hour (target <= {IDLE_TARGET_PER_H:g}); "
        f"{len(result['runs'])} round(s) of {result['hold_minutes']:g} min measured"
    ]
    for connect in IDLE_CONNECTS:
        m = result["median"][connect]
        runs = [r for rs in result["runs"] for r in rs if r["connect"] == connect]
        each = ", ".join(fmt(r["cpu_per_hour"]) for r in runs)
        notes = "; ".join(sorted({r["note"] for r in runs if r["note"]}))
        lines.append(
            f"  {connect:10s} median {fmt(m['cpu_per_hour'])} ({each})"
            + (f"; {notes}" if notes else "")
        )
    ready = result.get("start_to_ready_s")
    lines.append(
        f"  start to READY: median {fmt(None if ready is None else ready * 1000, '.0f')} ms"
    )
    return lines


# --- the report ------------------------------------------------------------------------------
def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def report(result: dict[str, Any]) -> list[str]:
    """The service's table, as lines (printed, and the Markdown in docs/performance.md is
    the same figures)."""
    service, audio = result["service"], result["audio"]
    rows = result["median"]
    source = result.get("daemon_source")
    lines = [
        f"{service}: {audio['talk_s'] / 60:g} min talk ({audio['clips']} corpus clips) + "
        f"{audio['idle_s'] / 60:g} min quiet, real time, one client at a time; "
        f"medians of {len(result['runs'])} run(s)",
        f"{'client':10s} {'CPU-s/audio-h':>13s} {'/wall-h':>8s} {'talk/h':>7s} "
        f"{'peak MB':>8s} {'MB up':>7s} {'vs ungated':>10s} {'MB down':>8s}  results / note",
    ]
    if source is not None:
        lines.insert(1, f"the daemon's audio: {SOURCE_TEXT[source]}; the peers read the file")
    for r in rows:
        name = r["client"] + ("" if r["measured"] else " *")
        up = None if r["up"] is None else r["up"] / 1e6
        down = None if r["down"] is None else r["down"] / 1e6
        tail = r["results"] + (f"; {r['note']}" if r["note"] else "")
        if r.get("measured_on"):
            tail += f"; measured {r['measured_on']} (an earlier invocation)"
        if r["violations"]:
            tail += f"; emulator: {'; '.join(sorted(set(r['violations'])))}"
        lines.append(
            f"{name:10s} {fmt(r['cpu_per_audio_hour']):>13s} {fmt(r['cpu_per_wall_hour']):>8s} "
            f"{fmt(r['talk_cpu_per_hour']):>7s} {fmt(r['peak_rss_mb']):>8s} "
            f"{fmt(up, '.2f'):>7s} {fmt(r['up_vs_ungated'], '.2f'):>10s} "
            f"{fmt(down, '.2f'):>8s}  {tail}"
        )
    daemon = next((r for r in rows if r["client"] == "daemon"), None)
    if daemon is not None and daemon.get("start_to_ready_s") is not None:
        lines.append(
            f"daemon: exec → READY {daemon['start_to_ready_s'] * 1000:.0f} ms; RSS growth "
            f"{fmt(daemon.get('rss_growth_mb_per_h'), '+.1f')} MB per audio-hour"
        )
    for name, label in LATENCY_LABELS.items():
        q = ((daemon or {}).get("latency") or {}).get(name)
        if q:
            lines.append(
                f"daemon latency, {label}: p50 {q['p50']:.1f} / p90 {q['p90']:.1f} / "
                f"p99 {q['p99']:.1f} ms"
            )
    if daemon is not None:
        for peer in rows:
            if peer["client"] == "daemon":
                continue
            label = peer["client"] + ("" if peer["measured"] else " (anchor)")
            cpu = ratio(daemon["cpu_per_audio_hour"], peer["cpu_per_audio_hour"])
            lines.append(
                f"daemon / {label}: CPU {cpu}"
                f", RSS {ratio(daemon['peak_rss_mb'], peer['peak_rss_mb'])}"
                f", bytes up {ratio(daemon['up'], peer['up'])}"
            )
    lines.append("(* an anchor figure from the issues, not measured in this run)")
    return lines


def markdown(path: Path) -> list[str]:
    """The compare-* entries of the results file as Markdown: the table and, per service,
    what was run, when, on what (docs/performance.md's, written there by bench/report.py)."""
    results = json.loads(path.read_text())
    return [*markdown_table(results), "", *markdown_notes(results)]


def when(date: str | None) -> str:
    """A results entry's date ("2026-12-07T17:12:52Z") as "2026-12-07 17:12 UTC"."""
    return "?" if not date else date.replace("T", " ")[:16] + " UTC"


def machine_text(machine: dict[str, Any] | None) -> str:
    if not machine:
        return "?"
    return (
        f"{machine.get('cpu') or '?'}, {machine.get('cores', '?')} cores, "
        f"{machine.get('kernel', '?')}, Python {machine.get('python', '?')}"
    )


def markdown_notes(results: dict[str, Any]) -> list[str]:
    """Per service in the table: rounds (the table gives their medians), audio, the daemon's
    source, commit, date; rows carried over from an earlier invocation; the machine(s)."""
    lines, machines = [], []
    for service in SERVICES:
        entry = results.get(f"compare-{service}")
        if not entry:
            continue
        f = entry["figures"]
        audio, runs = f["audio"], len(f["runs"])
        source = f.get("daemon_source") or next(
            (r.get("source", "wav") for r in f["median"] if r["client"] == "daemon"), None
        )
        text = (
            f"- **{service}**: "
            + (f"medians of {runs} rounds" if runs > 1 else "1 round (no median)")
            + f", {audio['talk_s'] / 60:g} min of talk ({audio['clips']} corpus clips) + "
            f"{audio['idle_s'] / 60:g} min of quiet at real time, one client after the other "
            f"({', '.join(dict.fromkeys(r['client'] for r in f['median'] if r['measured']))})"
            + ("; the daemon on ALSA capture" if source == "alsa" else "")
            + ("; the daemon reading the WAV" if source == "wav" else "")
            + f"; commit {entry['code'].get('commit') or '?'}"
            + (" with changes" if entry["code"].get("changed") else "")
            + f", {when(entry.get('date'))}"
        )
        for carried in f.get("carried_over", []):
            text += (
                f"; the {carried['client']} row from an earlier invocation "
                f"({when(carried['date'])}, commit {carried['code'].get('commit') or '?'})"
            )
        lines.append(text + ".")
        machines.append(machine_text(entry.get("machine")))
    if machines:
        lines.append("- Machine: " + "; ".join(dict.fromkeys(machines)) + ".")
    return lines


def markdown_table(results: dict[str, Any]) -> list[str]:
    """The compare-* entries of the results as one Markdown table: per service, the daemon
    and its peers from the same run, medians, the daemon over each peer as ratios."""
    lines = [
        "| service | client | CPU-s / audio-h | CPU-s / wall-h | peak RSS MB | MB up "
        "| up vs ungated | MB down | daemon ÷ client (CPU, RSS, bytes up) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for service in SERVICES:
        entry = results.get(f"compare-{service}")
        if not entry:
            continue
        rows = entry["figures"]["median"]
        daemon = next((r for r in rows if r["client"] == "daemon"), None)
        for r in rows:
            name = r["client"] + ("" if r["measured"] else " (anchor)")
            if r["client"] == "daemon" and r["measured"]:  # rows from before have no source
                name += f" ({r.get('source', 'wav')} source)"
            ratios = "—"
            if daemon is not None and r is not daemon:
                ratios = ", ".join(
                    ratio(daemon[k], r[k]) for k in ("cpu_per_audio_hour", "peak_rss_mb", "up")
                )
            up = None if r["up"] is None else r["up"] / 1e6
            down = None if r["down"] is None else r["down"] / 1e6
            lines.append(
                f"| {service} | {name} | {fmt(r['cpu_per_audio_hour'])} "
                f"| {fmt(r['cpu_per_wall_hour'])} | {fmt(r['peak_rss_mb'])} | {fmt(up, '.2f')} "
                f"| {fmt(r['up_vs_ungated'], '.2f')} | {fmt(down, '.2f')} | {ratios} |"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", choices=(*SERVICES, "all"), default="all")
    parser.add_argument("--minutes", type=float, default=5.0, help="talk, minutes of audio")
    parser.add_argument("--idle-minutes", type=float, default=1.0, help="quiet after the talk")
    parser.add_argument("--runs", type=int, default=1, help="rounds; the table gives medians")
    parser.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help="which clients run, comma-separated (daemon, example, sdk)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=BENCH / "results.json",
        help="merge the figures into this file (keyed compare-<service>)",
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="alsa",
        help="the daemon's audio: alsa (an ALSA device the bench feeds in real time, as in "
        "production) or wav (the daemon paces the file); the peers read the file",
    )
    parser.add_argument(
        "--what",
        default="compare",
        help="what runs, comma-separated: compare (the clients side by side, keyed "
        "compare-<service>), idle (the daemon's idle costs, warm and on_demand, --runs "
        "rounds, keyed idle-<service>)",
    )
    parser.add_argument(
        "--idle-hold-minutes",
        type=float,
        default=2.0,
        help="idle: the quiet measured per run (after the talk settled, or the link closed)",
    )
    parser.add_argument(
        "--awake",
        action="store_true",
        help="keep every CPU awake meanwhile (SCHED_IDLE spinners, see vcpus_awake): a VM's "
        "cost of waking a halted vCPU is left out, as on bare metal; the figures go into "
        "--results as usual, so give this run a file of its own",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the results file's compare tables as Markdown and exit (no run)",
    )
    args = parser.parse_args()
    if args.markdown:
        print("\n".join(markdown(args.results)))
        return 0
    clients = tuple(c.strip() for c in args.clients.split(",") if c.strip())
    if not set(clients) <= set(CLIENTS) or args.runs < 1:
        parser.error(f"--clients takes {', '.join(CLIENTS)}; --runs at least 1")
    parts = tuple(p.strip() for p in args.what.split(",") if p.strip())
    if not parts or not set(parts) <= set(PARTS):
        parser.error(f"--what takes {', '.join(PARTS)}")
    if not corpus_available():
        progress(f"the corpus is not at {CORPUS_DIR} (EDGECAP_CORPUS names it)")
        return 1
    sdk_state = ensure_sdk_venv() if "sdk" in clients and "compare" in parts else {}
    services = SERVICES if args.service == "all" else (args.service,)
    wall = time.monotonic()
    ok = True
    spinners = vcpus_awake() if args.awake else contextlib.nullcontext()
    with spinners:
        ok = run_services(args, services, clients, parts, sdk_state)
    print(f"(benchmark ran in {time.monotonic() - wall:.0f} s; figures in {args.results})")
    return 0 if ok else 1


@contextlib.contextmanager
def vcpus_awake() -> Iterator[None]:
    """One busy loop per CPU at SCHED_IDLE (it runs only when nothing else wants the CPU,
    and any other thread that wakes takes the CPU from it at once).

    On this VM most of what a thread's wake-up costs is the hypervisor waking a halted
    vCPU (bench/wakeups.py: ~0.3 ms on a quiet machine, a quarter of that under load); a
    bare-metal core (a Pi) wakes from its idle state in microseconds. With every vCPU kept
    busy, none halts, and the clients' CPU time shows their own work. Their CPU is measured
    per process, so the spinners' is in nobody's figures."""
    code = (
        "import os\n"
        "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
        "while True:\n"
        "    pass\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def run_services(
    args: argparse.Namespace,
    services: tuple[str, ...],
    clients: tuple[str, ...],
    parts: tuple[str, ...],
    sdk_state: dict[str, Any],
) -> bool:
    ok = True
    for service in services:
        if "compare" in parts:
            result = run_service(
                service, args.minutes, args.idle_minutes, args.runs, clients, sdk_state, args.source
            )
            result["vcpus_awake"] = bool(args.awake)
            carry_over(result, args.results, clients)
            print("\n".join(report(result)) + "\n")
            sys.stdout.flush()
            merge_results(args.results, f"compare-{service}", result)
            ok &= all(r["ok"] for r in result["median"] if r["measured"])
        if "idle" in parts:
            idle = run_idle(service, args.idle_hold_minutes, args.runs, args.source)
            print("\n".join(report_idle(idle)) + "\n")
            sys.stdout.flush()
            merge_results(args.results, f"idle-{service}", idle)
            ok &= all(m["ok"] for m in idle["median"].values())
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
