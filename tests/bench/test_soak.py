"""The soak's verdict (bench/soak.py) on synthetic figures: each check fails on what it is
there to catch, and a clean run passes. The soak itself runs with ``make soak``."""

from __future__ import annotations

import copy
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.corpus import clip, corpus_available, quiet_noise
from bench.soak import (
    BLOCK_BYTES,
    FAULTS,
    Final,
    Gap,
    Mic,
    duplicates,
    failures,
    gate_forwarded,
    split_hours,
)
from tests.gate.conftest import CORPUS


def clean() -> dict[str, Any]:
    return {
        "exit_status": 0,
        "starts": 1,
        "tracebacks": 0,
        "schedule": list(FAULTS),
        "faults": dict.fromkeys(FAULTS, 1),
        "fault_records": [
            {"kind": k, "at_s": 20.0 + i, "observed": True, "recovered": True, "note": ""}
            for i, k in enumerate(FAULTS)
        ],
        "captions": {"finals": 100, "duplicates": [], "bye": True},
        "speech": {"missing_s": 30.5, "reported_lost_s": 30.0, "mic_faults": 1},
        "gaps": [
            {
                "seconds": 30.0,
                "reason": "buffer full while the service was unreachable",
                "fault": "stall",
                "fault_may_lose": True,
                "at_stop": False,
            }
        ],
        "service_side": {"violations": []},
        "rss_mb": {"growth": 1.2},
        "threads": {"start": 5, "end": 5},
        "fds": {"start": 19, "end": 19},
    }


def test_a_clean_run_passes() -> None:
    assert failures(clean()) == []


def test_each_check_fails_on_what_it_catches() -> None:
    cases = {
        "exit status -9": ("exit_status", -9),
        "2 daemon starts": ("starts", 2),
        "1 tracebacks": ("tracebacks", 1),
        "RSS growth 5.5": ("rss_mb", {"growth": 5.5}),
        "fds: 19 at the start, 21": ("fds", {"start": 19, "end": 21}),
        "threads: 5 at the start, 6": ("threads", {"start": 5, "end": 6}),
        "service-side violations": ("service_side", {"violations": ["too fast"]}),
    }
    for expected, (key, value) in cases.items():
        r = clean()
        r[key] = value
        found = failures(r)
        assert len(found) == 1 and found[0].startswith(expected), (expected, found)


def test_speech_missing_beyond_what_was_reported_fails_within_the_slack_passes() -> None:
    r = clean()
    r["speech"]["missing_s"] = 30.0 + 1.0 + 0.5  # the slack: 1 s, and 0.5 s per mic fault
    assert failures(r) == []
    r["speech"]["missing_s"] = 32.0
    assert failures(r) == ["speech lost unreported: 32.0 s never reached the service, "
                           "30.0 s reported lost"]  # fmt: skip


def test_losses_only_after_an_outage_that_could_fill_the_buffer() -> None:
    r = clean()
    r["gaps"][0] |= {"fault": None, "fault_may_lose": None}
    assert failures(r)[0].startswith("30.0 s lost without an outage")
    r = clean()
    r["gaps"][0] |= {"fault": "cut", "fault_may_lose": False}
    assert "too short to fill the buffer" in failures(r)[0]
    r["gaps"][0]["at_stop"] = True  # at SIGTERM: reported, and not a fault's
    assert failures(r) == []


def test_a_fault_not_observed_or_not_recovered_or_never_injected_fails() -> None:
    r = clean()
    r["fault_records"][0] |= {"recovered": False, "note": "no new session"}
    assert failures(r) == ["fault cut at 20 s not recovered: no new session"]
    r = clean()
    del r["faults"]["stall"]
    assert failures(r) == ["faults never injected: stall"]


def test_duplicates_same_seq_twice_or_same_text_over_the_same_audio() -> None:
    finals = [
        Final(1, "w1 w2", 1.0, 2.0, 0.0),
        Final(2, "w3", 2.5, 3.0, 0.0),
        Final(3, "w1 w2", 1.5, 2.5, 0.0),  # the same words over overlapping audio
        Final(4, "w3", 9.0, 9.5, 0.0),  # the same words later: a repeated clip, fine
    ]
    done = Counter({1: 1, 2: 2, 3: 1, 4: 1})
    assert duplicates(finals, done, []) == [
        "seq 2 done 2 times",
        "seq 1 and 3: the same text over the same audio",
    ]
    inside = [Gap(3.0, 1.2, 1.8, "buffer full", 0.0)]  # around a reported gap: excused
    assert duplicates(finals, Counter({1: 1}), inside) == []


def test_the_verdict_does_not_change_its_input() -> None:
    r = clean()
    before = copy.deepcopy(r)
    failures(r)
    assert r == before


def test_hours_are_split_by_the_weights_of_the_services_run() -> None:
    shares = split_hours(7200, ["soniox", "azure", "sarvam"], "soniox=0.4,azure=0.4,sarvam=0.2")
    assert shares == pytest.approx({"soniox": 2880, "azure": 2880, "sarvam": 1440})
    # a service left out: the others share it all; one not named gets the mean weight
    assert split_hours(3600, ["azure", "sarvam"], "azure=0.4,sarvam=0.2") == pytest.approx(
        {"azure": 2400, "sarvam": 1200}
    )
    assert split_hours(3000, ["soniox", "azure"], "soniox=0.5") == pytest.approx(
        {"soniox": 1500, "azure": 1500}
    )
    assert split_hours(900, ["sarvam"], "") == {"sarvam": 900}
    for bad in ("soniox", "soniox=x", "bogus=1", "azure=0"):
        with pytest.raises(ValueError):
            split_hours(3600, ["azure"], bad)


# --- what the speech check compares with ----------------------------------------------------------


def test_the_reference_gate_starts_afresh_where_the_microphone_came_back() -> None:
    """The daemon's gate starts afresh (a new webrtcvad) when the microphone returns; the
    reference gate, told where, does the same: after that point it forwards exactly what a
    gate that never heard the earlier audio forwards — which is not what it forwards
    without being told (that difference was counted as speech lost unreported)."""
    if not corpus_available(CORPUS):
        pytest.skip(f"the corpus is not at {CORPUS}")
    speech = clip("en_librispeech_quilter", CORPUS).pcm()
    pcm = quiet_noise(16000, seed=1) + speech + quiet_noise(32000, seed=2) + speech
    back = len(speech) // 2 // 1600 * 1600  # samples; inside the first clip's speech
    whole, resumed = gate_forwarded(pcm), gate_forwarded(pcm, [back])
    fresh = gate_forwarded(pcm[2 * back :])

    def after(e: Any) -> list[int]:
        return [h for h, b in zip(e.frames, e.block_of, strict=True) if b * BLOCK_BYTES >= 2 * back]

    assert after(resumed) == fresh.frames and len(fresh.frames) > 100
    assert after(whole) != fresh.frames


def test_the_mic_knows_where_the_daemon_will_read_again(tmp_path: Path) -> None:
    """Where the daemon's stream goes on after a pull: what was written into the FIFO less
    what is still in it — counted over a real FIFO, read by a stand-in for the plugin."""
    mic = Mic(tmp_path, quiet_noise(8 * BLOCK_BYTES // 2, seed=3), pace=50.0)
    mic.start()
    try:
        reader = os.open(mic.infile, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert mic.done.wait(5)  # every block of the audio is in the FIFO
            got = len(os.read(reader, 5000))
            assert got == 5000
            assert mic.read_position() == got // 2
            got += len(os.read(reader, 3000))
            assert mic.read_position() == got // 2
        finally:
            os.close(reader)
    finally:
        mic.stop()
