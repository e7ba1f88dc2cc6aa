"""`edgecap run` with a cloud service, end to end, on what it costs when speech cannot all
be captioned: a file read as fast as possible waits for the service (nothing dropped, the
service's pace kept), the losses reported add up to the totals, and a file run that could
not caption its speech says so with its exit status."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from edgecap.link.worker import (
    DROPPED_PACED,
    DROPPED_UNREACHABLE,
    PACE_BURST,
    UNSENT_AT_STOP,
    UNSENT_REFUSED,
)
from edgecap.runtime.frames import SAMPLE_RATE
from tests.conftest import REPO, corpus_clip
from tests.daemon.test_daemon import edgecap, events
from tests.daemon.test_daemon_soniox import DEMO, caption_words, gate_output, write_config
from tests.daemon.test_daemon_stop import assert_totals, losses
from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.soniox import SonioxEmulator, expected_words
from tests.link.harness import pace_excess, proxied

EX_TEMPFAIL = 75


@pytest.fixture
def emu(tmp_path):
    with SonioxEmulator(tmp_path / "emu", api_key="the-key", lag_ms=300) as emulator:
        yield emulator


@pytest.mark.slow
def test_a_fast_file_run_waits_for_the_service_and_loses_nothing(tmp_path, emu):
    """The README's `--file … --fast` with a cloud service: 35 s of read speech, a 5 s
    buffer. The file waits for the link, the link for the service's pace (replay_speed 10
    here, with its one-second burst) — to the end of input too — and every word comes
    back; nothing is dropped, nothing reported lost, exit 0."""
    clip = corpus_clip("en_osr_harvard_list72_8k.16k.wav")
    ini = write_config(tmp_path, emu, "env:SONIOX_API_KEY", link__buffer="5s")
    proc = edgecap(
        "run", "-c", str(ini), "--file", str(clip), "--fast", env={"SONIOX_API_KEY": "the-key"}
    )
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    (session,) = emu.sessions
    sent = bytes(session.audio)
    forwarded = gate_output(clip)
    assert len(forwarded) / 2 / SAMPLE_RATE > 20  # most of the clip is speech
    assert sent == forwarded, "the service did not get all the speech, once, in order"
    assert caption_words(events(out)) == [w.strip() for w in expected_words(sent)]
    assert losses(events(out)) == []
    assert "0.00 s lost in 0 reports" in err
    # never faster than replay_speed × real time, beyond the one-second burst
    assert pace_excess(session.frames, 10.0) <= PACE_BURST + 0.1 + 0.15
    assert session.end_received and session.finished_sent


@pytest.mark.slow
def test_the_losses_reported_add_up_to_the_totals(tmp_path, emu):
    """Two separate outages longer than the 1 s buffer, the second lasting through the
    stop: each dropped stretch is reported as dropped while the service was unreachable,
    the speech still held at the stop as not sent, and the totals line is their sum."""
    with FaultProxy(("127.0.0.1", emu.port)) as proxy:
        ini = write_config(
            tmp_path,
            emu,
            "env:SONIOX_API_KEY",
            audio__realtime="yes",
            audio__loop="yes",
            gate__enabled="no",  # every frame is speech: the drops do not depend on pauses
            soniox__url=proxied(emu, proxy),
            link__buffer="1s",
            link__finish_timeout="1s",
        )
        proc = edgecap("run", "-c", str(ini), env={"SONIOX_API_KEY": "the-key"})
        try:
            assert emu.wait_for(lambda: emu.sessions and emu.sessions[0].audio_ms >= 1000, 20)
            proxy.refuse(2.5)
            proxy.cut()  # outage 1
            assert emu.wait_for(
                lambda: len(emu.sessions) >= 2 and emu.sessions[1].audio_ms >= 2000, 15
            )
            proxy.refuse(1e6)
            proxy.cut()  # outage 2, through the stop
            time.sleep(2.5)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    reported = losses(events(out))
    reasons = [x["reason"] for x in reported]
    # one report per outage, then what was still held at the stop (the replay after an
    # outage may also have to drop while it is paced: said so, never "unreachable")
    assert [r for r in reasons if r != DROPPED_PACED] == [
        DROPPED_UNREACHABLE,
        DROPPED_UNREACHABLE,
        UNSENT_AT_STOP,
    ], reasons
    outages = [x for x in reported if x["reason"] == DROPPED_UNREACHABLE]
    assert all(x["seconds"] >= 1.0 for x in outages)  # 2.5 s and more, minus the 1 s buffer
    assert_totals(err, reported)


def test_a_file_run_whose_key_is_refused_exits_75(tmp_path, emu):
    """Every word lost: not a success. No waiting for a reload (a file is not a service
    under systemd), the loss reported with its cause, exit status 75."""
    ini = write_config(tmp_path, emu, "env:SONIOX_API_KEY")
    began = time.monotonic()
    proc = edgecap(
        "run", "-c", str(ini), "--file", str(DEMO), "--fast", env={"SONIOX_API_KEY": "wrong"}
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EX_TEMPFAIL, err
    assert time.monotonic() - began < 15
    assert emu.connections == 1  # refused once, never hammered
    reported = losses(events(out))
    assert [x["reason"] for x in reported] == [UNSENT_REFUSED]
    speech = len(gate_output(DEMO)) / 2 / SAMPLE_RATE
    assert reported[0]["seconds"] == pytest.approx(speech, abs=0.001)
    assert_totals(err, reported)
    assert "exit status 75" in err
    assert "wrong" not in out + err


def test_run_help_documents_the_exit_status():
    out = subprocess.run(
        [sys.executable, "-m", "edgecap", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    text = " ".join(out.split())
    assert "75" in text and "78" in text and "70" in text
