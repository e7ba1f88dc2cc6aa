"""SIGTERM with a cloud service, when the network misbehaves: a real daemon, the Soniox
emulator over TLS, the fault proxy, a black hole. The README promises a stop within 2 s
(plus ``[link] finish_timeout`` while a session is open, for the service's last words), exit
0, the final words already received on every output, and every second of speech that
could not be captioned reported with its cause; no new connection once stopping."""

from __future__ import annotations

import re
import signal
import time

import pytest

from edgecap.link.worker import UNCONFIRMED_AT_STOP, UNSENT_AT_STOP
from tests.daemon.test_daemon import edgecap, events
from tests.daemon.test_daemon_soniox import caption_words, write_config
from tests.emulators.black_hole import BlackHole
from tests.emulators.fault_proxy import FaultProxy
from tests.emulators.soniox import PATH, SonioxEmulator
from tests.link.harness import proxied

KEY = {"SONIOX_API_KEY": "the-key"}
TOTALS = re.compile(r"([\d.]+) s lost in (\d+) reports")


@pytest.fixture
def emu(tmp_path):
    with SonioxEmulator(tmp_path / "emu", api_key="the-key", lag_ms=300) as emulator:
        yield emulator


def losses(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "audio_loss"]


def assert_totals(err: str, reported: list[dict]) -> None:
    """The totals line at stop is the sum of the losses reported on the way."""
    total, count = TOTALS.search(err).groups()  # type: ignore[union-attr]
    assert int(count) == len(reported)
    assert float(total) == pytest.approx(sum(x["seconds"] for x in reported), abs=0.005)


@pytest.mark.parametrize("kind", ["unanswered", "silent"])
def test_sigterm_during_a_connect_into_a_black_hole_exits_0_within_2_s(tmp_path, emu, kind):
    """The service's address swallows the SYN (or the TLS handshake); the connect timeout
    is 10 s. SIGTERM ends the attempt at once."""
    with BlackHole(kind) as hole:
        ini = write_config(
            tmp_path,
            emu,
            "env:SONIOX_API_KEY",
            audio__realtime="yes",
            audio__loop="yes",
            soniox__url=hole.url(PATH),
            link__connect_timeout="10s",
            link__finish_timeout="1s",
        )
        proc = edgecap("run", "-c", str(ini), env=KEY)
        try:
            assert hole.wait_attempt(20)  # the SYN, or the TLS handshake, is waiting
            time.sleep(0.3)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
            took = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
        assert hole.accepted == (1 if kind == "silent" else 0)  # one attempt, no other
    assert proc.returncode == 0, err
    assert took < 2.0, f"the stop took {took:.1f} s"
    reported = losses(events(out))
    assert [x["reason"] for x in reported] == [UNSENT_AT_STOP]
    assert reported[0]["seconds"] > 0
    assert_totals(err, reported)
    assert "did not stop" not in err


@pytest.mark.slow
def test_sigterm_with_a_half_open_connection_delivers_what_came_reports_the_rest(tmp_path, emu):
    """The network stalls mid-sentence (nothing passes, the connection stays open). At
    SIGTERM the link ends the turn and the stream, waits finish_timeout (1 s) for an answer
    that cannot come, and stops: no new connection, exit 0 within 2 s + finish_timeout, the
    final words that arrived before the stall are on stdout (the open line closed), and
    the speech the service never confirmed is reported lost with that cause."""
    with FaultProxy(("127.0.0.1", emu.port)) as proxy:
        ini = write_config(
            tmp_path,
            emu,
            "env:SONIOX_API_KEY",
            audio__realtime="yes",
            audio__loop="yes",
            soniox__url=proxied(emu, proxy),
            link__finish_timeout="1s",
            link__dead_after="30s",
        )
        proc = edgecap("run", "-c", str(ini), env=KEY)
        try:
            assert emu.wait_for(
                lambda: (
                    emu.sessions
                    and emu.sessions[0].audio_ms >= 2500
                    and len(emu.sessions[0].final_words) >= 3
                ),
                20,
            )
            before = list(emu.sessions[0].final_words)
            time.sleep(0.2)  # those are through the proxy
            proxy.stall()
            time.sleep(0.5)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
            took = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proxy.accepted == 1, "a new connection during the stop"
    assert proc.returncode == 0, err
    assert took < 2.0 + 1.0, f"the stop took {took:.1f} s"
    words = caption_words(events(out))
    sent = [w.strip() for w in emu.sessions[0].final_words]
    assert words == sent[: len(words)] and len(words) >= len(before)
    reported = losses(events(out))
    assert [x["reason"] for x in reported] == [UNCONFIRMED_AT_STOP]
    assert reported[0]["seconds"] >= 0.3 + 0.5  # the lag, and what went into the stall
    assert_totals(err, reported)
    assert "did not stop" not in err
