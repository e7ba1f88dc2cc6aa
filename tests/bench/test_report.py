"""bench/report.py: the results file's figures rendered into docs/performance.md's marked
sections, the prose around them untouched, idempotent, and ``--check`` failing on a stale
document. A small synthetic results dict stands in for bench/results.json."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.compare import median_tree
from bench.corpus import Clip
from bench.gate import CATEGORY_ORDER, Category, ClipResult
from bench.gate import figures as gate_figures
from edgecap.gate.speech_gate import GateSettings

MACHINE = {
    "cpu": "Test CPU 9000",
    "cores": 2,
    "kernel": "Linux 6.1 x86_64",
    "python": "3.11.7",
    "host": "box",
}
CODE = {"commit": "abc1234", "changed": []}


def daemon_row(cpu: float, rss: float, up: int, **extra: Any) -> dict[str, Any]:
    return {
        "client": "daemon",
        "measured": True,
        "ok": True,
        "source": "alsa",
        "cpu_per_audio_hour": cpu,
        "cpu_per_wall_hour": cpu,
        "peak_rss_mb": rss,
        "up": up,
        "down": 500_000,
        "up_vs_ungated": 0.64,
        "violations": [],
        "note": "",
        "results": "10 lines",
        **extra,
    }


def latency(p50: float) -> dict[str, Any]:
    q = {"n": 100, "p50": p50, "p90": p50 * 2, "p99": p50 * 3, "max": p50 * 4}
    return {
        "capture_to_wire": q,
        "service_to_socket": {**q, "p50": p50 / 2},
        "speech_end_to_final": {**q, "p50": 700.0},
        "speech_end_to_final_less_answer": {**q, "p50": 690.0},
    }


def results() -> dict[str, Any]:
    rounds = [
        [
            daemon_row(
                48.0, 37.0, 3_600_000, start_to_ready_s=0.30, rss_growth_mb_per_h=1.0,
                latency=latency(2.0),
            ),
            {**daemon_row(40.0, 40.0, 4_000_000), "client": "sdk"},
        ],
        [
            daemon_row(
                52.0, 37.5, 3_700_000, start_to_ready_s=0.34, rss_growth_mb_per_h=3.0,
                latency=latency(4.0),
            ),
            {**daemon_row(40.0, 40.0, 4_000_000), "client": "sdk"},
        ],
        [
            daemon_row(
                50.0, 36.5, 3_650_000, start_to_ready_s=0.32, rss_growth_mb_per_h=2.0,
                latency=latency(3.0),
            ),
            {**daemon_row(40.0, 40.0, 4_000_000), "client": "sdk"},
        ],
    ]  # fmt: skip
    merged_latency = median_tree([r[0]["latency"] for r in rounds])
    median = [
        {**daemon_row(50.0, 37.0, 3_650_000), "latency": merged_latency, "n": 3},
        {**daemon_row(40.0, 40.0, 4_000_000), "client": "sdk", "n": 3},
    ]
    idle_runs = [
        [
            {"connect": "warm", "cpu_per_hour": w, "ok": True, "start_to_ready_s": 0.3},
            {"connect": "on_demand", "cpu_per_hour": d, "ok": True, "start_to_ready_s": 0.5},
        ]
        for w, d in ((20.0, 11.0), (22.0, 12.0), (21.0, 13.0))
    ]
    return {
        "compare-soniox": {
            "date": "2026-12-07T17:12:52Z",
            "machine": MACHINE,
            "code": CODE,
            "figures": {
                "service": "soniox",
                "audio": {"talk_s": 120.0, "idle_s": 60.0, "clips": 8},
                "daemon_source": "alsa",
                "runs": rounds,
                "median": median,
            },
        },
        "idle-soniox": {
            "date": "2026-12-07T18:00:00Z",
            "machine": MACHINE,
            "code": CODE,
            "figures": {
                "service": "soniox",
                "hold_minutes": 2.0,
                "runs": idle_runs,
                "median": {
                    "warm": {"cpu_per_hour": 21.0, "n": 3, "ok": True},
                    "on_demand": {"cpu_per_hour": 12.0, "n": 3, "ok": True},
                },
                "start_to_ready_s": 0.4,
            },
        },
        "outputs": {
            "date": "2026-12-07T18:10:00Z",
            "machine": MACHINE,
            "code": CODE,
            "figures": {
                "latency": {
                    "socket": {"n": 120, "p50": 0.4, "p90": 0.6, "p99": 0.9, "max": 1.2},
                    "serial (lines)": {"n": 120, "p50": 1.1, "p90": 1.5, "p99": 2.0, "max": 2.5},
                }
            },
        },
    }


DOC = """# Performance

Prose before, with a figure the lead wrote: 53.3 CPU-s.

<!-- bench:begin compare -->
an old table
<!-- bench:end compare -->

Prose between.

<!-- bench:begin latency -->
<!-- bench:end latency -->

Prose after.
"""


def section(text: str, name: str) -> str:
    begin, end = f"<!-- bench:begin {name} -->\n", f"<!-- bench:end {name} -->"
    return text.split(begin, 1)[1].split(end, 1)[0]


def test_compare_section_has_the_peers_beside_the_daemon_as_ratios_and_the_provenance() -> None:
    text = report.render(results())["compare"]
    lines = text.splitlines()
    daemon = next(line for line in lines if line.startswith("| soniox | daemon"))
    sdk = next(line for line in lines if line.startswith("| soniox | sdk"))
    assert "| 50.0 |" in daemon and "| 37.0 |" in daemon and "(alsa source)" in daemon
    # daemon ÷ sdk: CPU 50/40, RSS 37/40, bytes up 3.65/4.0 MB
    assert sdk.endswith("| 1.25, 0.93, 0.91 |")
    prose = " ".join(text.split())  # the wrapped lines joined
    assert "medians of 3 rounds" in prose
    assert "commit abc1234" in prose and "2026-12-07 17:12 UTC" in prose
    assert "Test CPU 9000, 2 cores" in prose
    assert all(len(line) <= report.WIDTH for line in lines if not line.startswith("|"))


def test_idle_start_and_latency_sections_show_medians_and_the_runs() -> None:
    sections = report.render(results())
    idle = next(line for line in sections["idle"].splitlines() if line.startswith("| soniox"))
    assert "21.0 (20.0, 22.0, 21.0)" in idle and "12.0 (11.0, 12.0, 13.0)" in idle
    assert "| 3 | 2 min | 400 |" in idle
    start = next(line for line in sections["daemon"].splitlines() if line.startswith("| soniox"))
    # start → READY: the 3 daemon rounds and the 6 idle runs, median 0.32 s
    assert start.startswith("| soniox | 320 (n 9) | 37.0 | +2.0 |")
    lat = sections["latency"].splitlines()
    wire = next(line for line in lat if line.startswith("| block captured → on the wire"))
    assert (
        wire == "| block captured → on the wire | daemon, soniox | 100 | 3.0 | 6.0 | 9.0 | 12.0 |"
    )
    sock = next(line for line in lat if "service message → socket client" in line)
    assert "| 1.5 |" in sock
    serial = next(line for line in lat if "serial bytes" in line)
    assert "| outputs bench | 120 | 1.1 | 1.5 | 2.0 | 2.5 |" in serial
    assert "`offline` (bench/offline.py)" in sections["latency"]  # not in these results


def single_run(service: str, hdmi: bool, decoding: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "date": "2026-12-07T19:00:00Z",
        "machine": MACHINE,
        "code": CODE,
        "figures": {
            "setup": {"service": service, "mode": "recognition", "hdmi": hdmi, "source": "alsa"},
            "audio": {"talk_s": 120.0, "idle_s": 60.0},
            "phases": {"talk": {"per_hour": 90.0}, "idle": {"per_hour": 40.0}},
            "whole": {"per_audio_hour": 70.0},
            "decoding": decoding,
            "memory": {"peak_rss_mb": 63.1},
            "captions": {"lines": 68},
            "exit_status": 0,
            "log_errors": [],
        },
    }


def test_single_runs_show_the_offline_engine_apart_from_the_rest_of_the_daemon() -> None:
    decoding = {
        "per_audio_hour": 900.0,
        "talk_per_hour": 1300.0,
        "rest_per_audio_hour": 60.0,
        "rest_talk_per_hour": 75.0,
    }
    given = {
        "daemon-local-recognition": single_run("local", False, decoding),
        "daemon-soniox-recognition-hdmi": single_run("soniox", True, None),
    }
    given["daemon-soniox-recognition-hdmi"]["figures"]["log_errors"] = ["boom"]
    # the quiet minute: 0.5 CPU-s, 0.2 of it the engine finishing its backlog
    local = given["daemon-local-recognition"]["figures"]
    local["phases"]["idle"] |= {"cpu_s": 0.5, "wall_s": 60.0}
    local["threads"] = {"ec-local": {"idle": 0.2}}
    lines = report.render(given)["single"].splitlines()
    local = next(line for line in lines if line.startswith("| local"))
    # the daemon without its decoding, then the decoding in its own column
    assert local.startswith("| local, recognition | socket | 60.0 | 75.0 | 18.0 | 900.0 (1300.0 ")
    hdmi = next(line for line in lines if line.startswith("| soniox"))
    assert hdmi.startswith("| soniox, recognition (!) | socket + HDMI 1080p16 | 70.0 | 90.0 |")
    assert "| - | 63.1 | 68 lines | 2 min talk + 1 min quiet | abc1234," in hdmi
    assert "bench/daemon.py --results" in report.render({})["single"]


def test_gate_section_shows_the_share_forwarded_per_category_from_the_gate_bench() -> None:
    def result(category: str, samples: int, sent: int, gt: int, gt_sent: int) -> ClipResult:
        clip = Clip(f"x_{category}", category, "en", Path("/nowhere.wav"))
        return ClipResult(clip, samples, sent, gt, gt_sent, 1, -40.0, 500.0)

    cats = {name: Category() for name in CATEGORY_ORDER}
    cats["speech"].add(result("speech", 160_000, 120_000, 100_000, 99_000))
    cats["speech"].add(result("speech", 160_000, 80_000, 60_000, 60_000))
    cats["hum"].add(result("hum", 320_000, 3_200, 0, 0))
    given = {"gate": {"date": "2026-12-07T19:00:00Z", "machine": MACHINE, "code": CODE}}
    given["gate"]["figures"] = gate_figures(cats, GateSettings(), (3.0, 2.5, 2.0))
    text = report.render(json.loads(json.dumps(given)))["gate"]  # as read back from the file
    speech = next(line for line in text.splitlines() if line.startswith("| speech"))
    # 200k of 320k samples forwarded; 159k of 160k reference speech samples
    assert speech == "| speech | 2 | 20.0 | 62.5 | 99.38 | 2 | -40 / -40 | 500 / 500 |"
    hum = next(line for line in text.splitlines() if line.startswith("| hum"))
    assert hum.startswith("| hum | 1 | 20.0 | 1.0 | - |")
    assert "2.50 CPU-s per audio-hour" in " ".join(text.split())
    assert "bench/gate.py --results" in report.render({})["gate"]


def test_apply_replaces_only_the_marked_bodies_and_is_idempotent() -> None:
    sections = report.render(results())
    once = report.apply(DOC, sections)
    assert once != DOC
    assert report.apply(once, sections) == once
    assert "an old table" not in once
    assert section(once, "compare") == f"\n{sections['compare']}\n"
    for prose in ("Prose before, with a figure the lead wrote: 53.3 CPU-s.", "Prose between."):
        assert prose in once
    assert once.endswith("<!-- bench:end latency -->\n\nProse after.\n")
    # sections the document has no markers for are left out, not appended
    assert "bench:begin idle" not in once


def test_an_empty_results_file_says_which_bench_makes_the_figures() -> None:
    sections = report.render({})
    assert "`bench/compare.py` makes them" in sections["compare"]
    assert "--what idle" in sections["idle"]


@pytest.mark.parametrize(
    "doc, error",
    [
        ("<!-- bench:begin nonsense -->\n<!-- bench:end nonsense -->\n", "unknown"),
        ("<!-- bench:begin compare -->\nno end\n", "not paired"),
        (DOC + "<!-- bench:begin compare -->\n<!-- bench:end compare -->\n", "not paired"),
    ],
)
def test_wrong_markers_are_errors(doc: str, error: str) -> None:
    with pytest.raises(report.ReportError, match=error):
        report.apply(doc, report.render(results()))


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["bench/report.py", *args])
    return report.main()


def test_check_fails_on_a_stale_document_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path, doc = tmp_path / "results.json", tmp_path / "performance.md"
    path.write_text(json.dumps(results()))
    doc.write_text(DOC)
    files = ("--results", str(path), "--doc", str(doc))
    assert run_main(monkeypatch, *files, "--check") == 1
    assert doc.read_text() == DOC
    assert "-an old table" in capsys.readouterr().out  # the diff
    assert run_main(monkeypatch, *files) == 0
    written = doc.read_text()
    assert "| soniox | daemon (alsa source) | 50.0 |" in written
    assert run_main(monkeypatch, *files, "--check") == 0
    # new figures make it stale again
    changed = copy.deepcopy(results())
    changed["compare-soniox"]["figures"]["median"][0]["cpu_per_audio_hour"] = 45.0
    path.write_text(json.dumps(changed))
    assert run_main(monkeypatch, *files, "--check") == 1
    assert doc.read_text() == written


def test_median_tree_takes_medians_key_by_key() -> None:
    rounds = [{"a": {"p50": 1.0, "n": 10}}, {"a": {"p50": 3.0, "n": 30}}, None, {"a": None}]
    assert median_tree(rounds) == {"a": {"p50": 2.0, "n": 20}}
    assert median_tree([None, None]) is None
