"""The whole daemon side by side with the services' example client and official SDKs (not a
test).

    .venv/bin/python bench/compare.py [--service soniox|azure|sarvam|all] [--minutes 5]
        [--idle-minutes 1] [--runs 1] [--results bench/results.json]
        [--clients daemon,example,sdk] [--source alsa|wav]

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

Prints a table per service, writes the figures into ``--results`` (bench/results.json;
merged, keyed ``compare-<service>``, with the machine, the date and the git commit; the
daemon's source is its row's ``source`` and the entry's ``daemon_source``).
``--runs N`` repeats the round N times and reports medians (issue 15 asks for >= 3).
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import CORPUS_DIR, corpus_available
from bench.daemon import (
    KEY,
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
        for name, value in rows[0].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values = [r[name] for r in rows if r[name] is not None]
                merged[name] = statistics.median(values) if values else None
        merged["ok"] = all(r["ok"] for r in rows)
        merged["n"] = len(rows)
        out.append(merged)
    return out


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
    """The compare-* entries of the results file as one Markdown table (the one in
    docs/performance.md)."""
    results = json.loads(path.read_text())
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
    if not corpus_available():
        progress(f"the corpus is not at {CORPUS_DIR} (EDGECAP_CORPUS names it)")
        return 1
    sdk_state = ensure_sdk_venv() if "sdk" in clients else {}
    services = SERVICES if args.service == "all" else (args.service,)
    wall = time.monotonic()
    ok = True
    for service in services:
        result = run_service(
            service, args.minutes, args.idle_minutes, args.runs, clients, sdk_state, args.source
        )
        carry_over(result, args.results, clients)
        print("\n".join(report(result)) + "\n")
        sys.stdout.flush()
        merge_results(args.results, f"compare-{service}", result)
        ok &= all(r["ok"] for r in result["median"] if r["measured"])
    print(f"(benchmark ran in {time.monotonic() - wall:.0f} s; figures in {args.results})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
