"""The Azure codec driven by the real LinkWorker against the strict Azure emulator over TLS
(issue 12, first slice: recognition and translation end to end through the link; the fault
tests come with the service's wiring), and its auth (item 2): bearer tokens from the
emulator's token endpoint — renewed, replaced when refused, a refused key fatal — and a
keyless container."""

from __future__ import annotations

import logging
import time

import pytest

from edgecap.config.schema import AzureConfig
from edgecap.runtime.speech import SpeechAudio
from edgecap.services.azure import AzureCodec
from tests.emulators.azure import (
    AzureEmulator,
    Refusal,
    SessionPlan,
    TokenPlan,
    text_of,
    translation_of,
    turn_words,
)
from tests.emulators.black_hole import BlackHole
from tests.link.harness import LinkRun, utterances, wait_until


@pytest.fixture
def azure(tmp_path):
    with AzureEmulator(tmp_path, api_key="test-key") as emulator:
        yield emulator


def _spoken(events) -> list[bytes]:  # type: ignore[no-untyped-def]
    """The PCM of each utterance, in order."""
    out: dict[int, bytes] = {}
    for e in events:
        if isinstance(e, SpeechAudio):
            out[e.utterance] = out.get(e.utterance, b"") + e.frame.pcm
    return [out[k] for k in sorted(out)]


def test_recognition_turns_arrive_whole_with_telemetry(azure):
    codec = AzureCodec(AzureConfig(host=azure.base_url, language="en-US"), replay_speed=10.0)
    events = utterances([1500, 1200], gap_ms=600)
    run = LinkRun(azure, codec=codec).start()
    run.feed(events)
    assert wait_until(lambda: len(azure.sessions) == 1 and len(azure.sessions[0].turns) == 2, 10)
    assert wait_until(run.settled, 10)
    run.stop()
    session = azure.sessions[0]
    assert session.violations == []
    assert [bytes(t.audio) for t in session.turns] == _spoken(events)
    assert all(t.telemetry for t in session.turns)
    expected = [text_of([w for _, w in turn_words(pcm)]) for pcm in _spoken(events)]
    assert " ".join(run.sink.finals).split() == " ".join(expected).split()
    assert run.link.failures == 0 and run.sink.losses == []


def test_translation_into_two_languages(azure):
    cfg = AzureConfig(
        host=azure.base_url, mode="translation", language="en-US", targets=("de", "fr")
    )
    codec = AzureCodec(cfg, replay_speed=10.0)
    events = utterances([1500])
    run = LinkRun(azure, codec=codec).start()
    run.feed(events)
    assert wait_until(lambda: azure.sessions and azure.sessions[0].turns, 10)
    assert wait_until(run.settled, 10)
    run.stop()
    assert azure.sessions[0].violations == []
    words = [w for _, w in turn_words(_spoken(events)[0])]
    assert set(run.sink.translated) == {"de", "fr"}
    for language in ("de", "fr"):
        got = " ".join(run.sink.translated[language]).split()
        assert got == [translation_of(w, language).strip() for w in words]


# -- auth: bearer tokens and keyless containers (issue 12, item 2) -----------------------------


def _words(events) -> list[str]:  # type: ignore[no-untyped-def]
    return [w.strip() for pcm in _spoken(events) for _, w in turn_words(pcm)]


def _captioned(run: LinkRun) -> list[str]:
    with run.sink.lock:
        return " ".join(run.sink.finals).split()


def _token_codec(azure: AzureEmulator, lifetime: float | None = None) -> AzureCodec:
    """auth = token with the emulator's token endpoint; ``lifetime``: what the codec takes
    a token's life to be (the service's 600 s otherwise), renewed with a fifth left."""
    cfg = AzureConfig(
        host=azure.base_url, language="en-US", auth="token", token_url=azure.token_url
    )
    codec = AzureCodec(cfg, replay_speed=10.0)
    if lifetime is not None:
        codec.token_lifetime, codec.token_renew_before = lifetime, lifetime / 5
    return codec


def _session_over(run: LinkRun, azure: AzureEmulator, count: int) -> bool:
    """``count`` sessions were made, the last one ended by the link (idle), all answered."""
    return wait_until(
        lambda: len(azure.sessions) == count and azure.sessions[-1].done, 5
    ) and wait_until(lambda: run.state() == "idle" and run.link.buffer.empty, 2)


def test_token_sessions_after_expiry_use_a_renewed_token_and_captions_go_on(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with AzureEmulator(tmp_path, api_key="test-key", token_lifetime=1.0) as azure:
        codec = _token_codec(azure, lifetime=1.0)  # renewed when older than 0.8 s
        run = LinkRun(azure, codec=codec, idle_close=0.2).start()
        first, second = utterances([400], seed=11), utterances([400], seed=12)
        run.feed(first)
        assert _session_over(run, azure, 1)
        # the next session begins after the first token expired at the service
        time.sleep(max(0.0, azure.token_fetches[0].at + 1.05 - time.monotonic()))
        run.feed(second)
        assert _session_over(run, azure, 2)
        run.stop()
        tokens = azure.issued_tokens
        bearers = [azure.bearer_of(s) for s in azure.sessions]
        fetches = azure.token_fetches
    assert fetches[1].at - fetches[0].at >= azure.token_lifetime
    assert len(tokens) == 2 and bearers == tokens  # renewed before use: never refused
    assert azure.auth_refusals == []
    assert all("Ocp-Apim-Subscription-Key" not in dict(s.headers) for s in azure.sessions)
    assert _captioned(run) == _words(first) + _words(second)
    assert run.link.failures == 0 and run.sink.losses == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("edgecap")]
    assert any("new azure token" in m for m in ours)
    assert not [m for m in ours if "test-key" in m or any(t in m for t in tokens)]


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_token_the_service_refuses_is_replaced_once_then_captions_go_on(tmp_path, how):
    lifetime = 0.6 if how == "expired" else 600.0  # expired: earlier than the codec thinks
    with AzureEmulator(tmp_path, api_key="test-key", token_lifetime=lifetime) as azure:
        run = LinkRun(azure, codec=_token_codec(azure), idle_close=0.2).start()
        first = utterances([400], seed=21)
        run.feed(first)
        assert _session_over(run, azure, 1)
        if how == "revoked":
            azure.revoke_tokens()
        else:
            time.sleep(max(0.0, azure.token_fetches[0].at + lifetime + 0.05 - time.monotonic()))
        second = utterances([400], seed=22)
        run.feed(second)
        assert _session_over(run, azure, 2)
        run.stop()
        tokens = azure.issued_tokens
        assert [azure.bearer_of(s) for s in azure.sessions] == tokens
        assert azure.auth_refusals == [Refusal(f"{how}_token", tokens[0])]
        assert azure.connections == 3  # the refused upgrade, then the fresh token's
    assert _captioned(run) == _words(first) + _words(second)
    assert run.link.failures == 1 and run.link.token_failures == 0
    assert run.sink.losses == []


def test_a_fresh_token_refused_at_the_upgrade_is_fatal(azure):
    run = LinkRun(azure, codec=_token_codec(azure), idle_close=0.2).start()
    run.feed(utterances([400], seed=31))
    assert _session_over(run, azure, 1)
    azure.plan(SessionPlan(refuse=401))  # the cached token: refused, a fresh one is got…
    azure.plan(SessionPlan(refuse=401))  # …and refused too: the key is not good here
    run.feed(utterances([400], seed=32))
    assert wait_until(lambda: run.state() == "rejected", 5)
    time.sleep(0.6)  # several backoffs (retry_max 0.5 s): nothing is tried again
    assert len(azure.token_fetches) == 2 and azure.connections == 3
    assert "HTTP 401" in run.detail()
    run.stop()


def test_a_wrong_key_is_fatal_after_one_token_attempt(azure):
    run = LinkRun(azure, codec=_token_codec(azure), key="wrong-key").start()
    run.feed(utterances([400], seed=41))
    assert wait_until(lambda: run.state() == "rejected", 5)
    time.sleep(0.6)  # several backoffs (retry_max 0.5 s): no retry loop
    assert [f.status for f in azure.token_fetches] == [401]
    assert azure.connections == 0 and azure.sessions == []
    assert "refused the key" in run.detail()
    assert run.status.snapshot().counters["link_token_failures"] == 1
    run.stop()


def test_a_failing_token_service_is_retried_with_backoff(azure):
    azure.plan_token(TokenPlan(status=500))
    azure.plan_token(TokenPlan(status=503))
    run = LinkRun(azure, codec=_token_codec(azure), idle_close=0.2).start()
    events = utterances([400], seed=51)
    run.feed(events)
    assert _session_over(run, azure, 1)
    run.stop()
    assert [f.status for f in azure.token_fetches] == [500, 503, 200]
    assert run.link.token_failures == 2 and run.link.failures == 2
    assert run.status.snapshot().counters["link_token_failures"] == 2
    assert _captioned(run) == _words(events)


def test_a_stop_interrupts_a_token_fetch_that_hangs(tmp_path):
    with BlackHole("silent") as hole, AzureEmulator(tmp_path) as azure:
        cfg = AzureConfig(
            host=azure.base_url,
            auth="token",
            token_url=f"https://127.0.0.1:{hole.port}/sts/v1.0/issueToken",
        )
        run = LinkRun(azure, codec=AzureCodec(cfg), connect_timeout=30.0).start()
        run.feed(utterances([400], seed=61))
        assert hole.wait_attempt(5)
        assert run.state() == "connecting"
        started = time.monotonic()
        run.stop(timeout=2.0)
        assert time.monotonic() - started < 1.0
        assert azure.connections == 0
    # a fetch our own stop ended is not the token service's failure, nor the link's
    assert run.link.token_failures == 0 and run.link.failures == 0


def test_auth_none_a_keyless_container_gets_no_key_and_no_auth_header(tmp_path):
    with AzureEmulator(tmp_path, api_key=None) as container:
        cfg = AzureConfig(host=container.base_url, language="en-US", auth="none")
        run = LinkRun(container, codec=AzureCodec(cfg, replay_speed=10.0), idle_close=0.2)
        asked: list[int] = []
        run.link._key_source = lambda: asked.append(1)  # type: ignore[assignment,func-returns-value]
        run.start()
        events = utterances([400], seed=71)
        run.feed(events)
        assert _session_over(run, container, 1)
        run.stop()
        (session,) = container.sessions
    names = {name.lower() for name, _ in session.headers}
    assert "x-connectionid" in names
    assert not names & {"ocp-apim-subscription-key", "authorization"}
    assert asked == [] and container.token_fetches == []
    assert _captioned(run) == _words(events)


def test_speech_heard_but_not_recognised_is_a_status_notice(azure):
    """NoMatch gives no caption but a notice the status shows (and counts)."""
    from edgecap.runtime.frames import Frame
    from edgecap.runtime.speech import SpeechEnd, SpeechStart

    frame = 320  # 20 ms
    events = [SpeechStart(1, 16_000, 16_000, 0.0)]
    events += [SpeechAudio(1, Frame(bytes(2 * frame), 16_000 + k * frame, 0.0)) for k in range(50)]
    events.append(SpeechEnd(1, 16_000 + 50 * frame, "silence", 0.0))
    codec = AzureCodec(AzureConfig(host=azure.base_url, language="en-US"), replay_speed=10.0)
    run = LinkRun(azure, codec=codec).start()
    run.feed(events)
    assert wait_until(lambda: run.link.notices == 1, 10)
    snap = run.status.snapshot()
    assert snap.counters["link_notices"] == 1
    assert snap.state_of("notice") == "no_match"
    assert "not recognised" in snap.fresh_notice()
    run.stop()
    assert run.sink.finals == [] and run.link.failures == 0
