"""The Sarvam emulator is strict: it refuses what §2 of PROTOCOLS.md says the service
refuses, accepts what the official SDK was recorded sending, and answers in the shapes the
SDK accepted. Driven with a raw websocket-client and messages built here (no edgecap code)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from tests.link.traces import load_trace, of_kind

from .sarvam import (
    LEGACY_PATH,
    V3_PATH,
    SarvamEmulator,
    SessionPlan,
    audio_message,
    detected_language,
    english_word,
    latin_word,
    native_word,
    sdk_query,
    words_of,
)
from .soniox import noise_pcm, silence_pcm
from .tls import TlsMaterial

KEY = "k"
FLUSH = '{"type": "flush"}'


@pytest.fixture
def make_emu(tmp_path: Path, tls_material: TlsMaterial) -> Iterator[Callable[..., SarvamEmulator]]:
    made: list[SarvamEmulator] = []

    def make(**kwargs: Any) -> SarvamEmulator:
        kwargs.setdefault("api_key", KEY)
        kwargs.setdefault("max_speed", 1000.0)  # the tests send faster than real time
        kwargs.setdefault("burst", 1000.0)
        emu = SarvamEmulator(tmp_path, tls=tls_material, **kwargs)
        made.append(emu)
        return emu

    yield make
    for emu in made:
        emu.close()


@pytest.fixture
def emu(make_emu: Callable[..., SarvamEmulator]) -> SarvamEmulator:
    return make_emu()


def connect(
    emu: SarvamEmulator,
    path: str = V3_PATH,
    *,
    keys: tuple[str, ...] = (KEY,),
    query: dict[str, str] | None = None,
    **changes: str,
) -> websocket.WebSocket:
    q = sdk_query(path) if query is None else query
    q.update(changes)
    return websocket.create_connection(
        emu.url_for(path, **q),
        header=[f"api-subscription-key: {k}" for k in keys],
        sslopt={"ca_certs": emu.ca_file},
        suppress_origin=True,
        timeout=5,
    )


def refused(emu: SarvamEmulator, path: str = V3_PATH, **kw: Any) -> int:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(emu, path, **kw)
    return info.value.status_code


def recv(ws: websocket.WebSocket) -> dict[str, Any]:
    return json.loads(ws.recv())


def send_audio(ws: websocket.WebSocket, pcm: bytes, chunk: int = 6400) -> None:
    for i in range(0, len(pcm), chunk):
        ws.send(audio_message(pcm[i : i + chunk]))


def close_code(ws: websocket.WebSocket) -> int:
    """The code of the server's close frame, which must come next. websocket-client
    answers it but keeps the socket open (its close() then does nothing), so the socket is
    shut here: the server's closing handshake ends at once, not after its timeout."""
    opcode, payload = ws.recv_data(control_frame=True)
    ws.shutdown()
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    return int.from_bytes(payload[:2], "big")


def kinds_until_close(ws: websocket.WebSocket) -> list[str]:
    """The type of every message up to the server's close (then the socket is shut)."""
    kinds = []
    while True:
        opcode, payload = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()
            return kinds
        kinds.append(str(json.loads(payload)["type"]))


def until_data(ws: websocket.WebSocket) -> tuple[list[str], dict[str, Any]]:
    """The VAD signals before the next data message, and its body."""
    signals = []
    while True:
        message = recv(ws)
        if message["type"] == "data":
            return signals, message["data"]
        assert message["type"] == "events", message
        signals.append(message["data"]["signal_type"])


# -- the upgrade ------------------------------------------------------------------------------


@pytest.mark.parametrize("trace", ["sarvam_stt_v3.jsonl", "sarvam_sttt.jsonl"])
def test_the_sdks_recorded_upgrade_is_accepted(emu: SarvamEmulator, trace: str) -> None:
    (handshake,) = of_kind(load_trace(trace), "handshake")
    headers = [
        f"{name}: {value.replace('DUMMY_SARVAM_KEY', KEY)}"
        for name, value in handshake["headers"]
        if name.lower().startswith(("api-", "user-agent", "x-fern"))
    ]
    ws = websocket.create_connection(
        f"{emu.base_url}{handshake['path']}",
        header=headers,
        sslopt={"ca_certs": emu.ca_file},
        suppress_origin=True,
    )
    ws.close()
    assert emu.wait_for(lambda: len(emu.sessions) == 1 and emu.sessions[0].done, 2)
    (session,) = emu.sessions
    assert session.endpoint == ("v3" if "v3" in trace else "legacy")
    assert session.violations == []


def test_other_paths_are_404(emu: SarvamEmulator) -> None:
    assert refused(emu, "/speech-to-text-realtime/ws") == 404
    assert emu.rejected_paths and emu.sessions == []


@pytest.mark.parametrize("keys", [(), ("wrong",), (KEY, KEY)])
def test_a_missing_wrong_or_repeated_key_is_403(emu: SarvamEmulator, keys: tuple[str, ...]) -> None:
    assert refused(emu, keys=keys) == 403
    assert emu.sessions == []


@pytest.mark.parametrize(
    ("path", "change"),
    [
        (V3_PATH, {"language_code": "hi-IN"}),  # the SDK's name is language-code
        (V3_PATH, {"language-code": ""}),
        (V3_PATH, {"mode": "summarize"}),
        (V3_PATH, {"model": "saaras:v2.5"}),
        (V3_PATH, {"sample_rate": "44100"}),
        (V3_PATH, {"flush_signal": "True"}),
        (V3_PATH, {"input_audio_codec": "mp3"}),
        (LEGACY_PATH, {"mode": "translate"}),
        (LEGACY_PATH, {"language-code": "hi-IN"}),
        (LEGACY_PATH, {"model": "saaras:v3"}),
    ],
)
def test_a_query_the_endpoint_does_not_take_is_400(
    emu: SarvamEmulator, path: str, change: dict[str, str]
) -> None:
    assert refused(emu, path, **change) == 400


def test_raw_pcm_needs_input_audio_codec(emu: SarvamEmulator) -> None:
    query = sdk_query()
    del query["input_audio_codec"]
    assert refused(emu, query=query) == 400


# -- recognition --------------------------------------------------------------------------------


def test_a_flushed_utterance_in_devanagari(emu: SarvamEmulator) -> None:
    pcm = noise_pcm(1000, seed=3)
    ws = connect(emu)
    send_audio(ws, pcm)
    ws.send(FLUSH)
    signals, body = until_data(ws)
    words = words_of(pcm)
    assert len(words) >= 3 and signals == ["START_SPEECH", "END_SPEECH"]
    assert body["transcript"] == " ".join(native_word(w, "hi-IN") for w in words)
    assert all("\u0900" <= c <= "\u097f" or c == " " for c in body["transcript"])
    assert (body["language_code"], body["language_probability"]) == ("hi-IN", None)
    assert body["timestamps"] is None and body["diarized_transcript"] is None
    assert body["metrics"]["audio_duration"] == 1.0
    ws.close()
    (segment,) = emu.sessions[0].segments
    assert (segment.audio, segment.by, segment.words) == (pcm, "flush", tuple(words))


@pytest.mark.parametrize("trace", ["sarvam_stt_v3.jsonl", "sarvam_sttt.jsonl"])
def test_messages_have_the_shapes_the_sdk_accepted(make_emu: Any, trace: str) -> None:
    accepted = [r["value"] for r in of_kind(load_trace(trace), "sdk_parsed")]
    want = {(m["type"], tuple(sorted(m["data"]))) for m in accepted}
    path = V3_PATH if "v3" in trace else LEGACY_PATH
    emu = make_emu()
    ws = connect(emu, path)
    send_audio(ws, noise_pcm(600, seed=4))
    ws.send(FLUSH)
    until_data(ws)
    ws.close()
    sent = emu.sessions[0].sent
    got = {(m["type"], tuple(sorted(m["data"]))) for m in sent}
    extra = {"timestamps", "diarized_transcript"} if path == V3_PATH else set()
    assert got == {
        (kind, tuple(sorted({*fields, *extra})) if kind == "data" else fields)
        for kind, fields in want
    }


@pytest.mark.parametrize(("high", "silence_ms"), [("false", 1000), ("true", 500)])
def test_its_vad_ends_a_segment_after_silence(
    emu: SarvamEmulator, high: str, silence_ms: int
) -> None:
    speech = noise_pcm(600, seed=5)
    ws = connect(emu, high_vad_sensitivity=high)
    send_audio(ws, speech + silence_pcm(silence_ms - 20))
    ws.send(audio_message(silence_pcm(20)))  # the unit that completes the silence
    signals, body = until_data(ws)
    assert signals == ["START_SPEECH", "END_SPEECH"]
    assert body["transcript"] == " ".join(native_word(w, "hi-IN") for w in words_of(speech))
    ws.close()
    (segment,) = emu.sessions[0].segments
    assert segment.by == "vad" and segment.audio == speech + silence_pcm(silence_ms)


def test_a_flush_with_nothing_to_say_is_answered_empty(emu: SarvamEmulator) -> None:
    ws = connect(emu)
    send_audio(ws, silence_pcm(400))
    ws.send(FLUSH)
    signals, body = until_data(ws)
    assert signals == [] and body["transcript"] == ""
    assert body["language_code"] == "hi-IN"
    ws.close()


def test_a_silent_empty_flush_gets_no_answer(make_emu: Any) -> None:
    emu = make_emu(empty_flush="silent")
    ws = connect(emu)
    send_audio(ws, silence_pcm(400))
    ws.send(FLUSH)
    send_audio(ws, noise_pcm(200, seed=6))
    assert recv(ws)["data"]["signal_type"] == "START_SPEECH"  # nothing came before it
    ws.close()


@pytest.mark.parametrize(
    ("path", "mode", "write"),
    [
        (V3_PATH, "translate", english_word),
        (LEGACY_PATH, "translate", english_word),
        (V3_PATH, "translit", latin_word),
    ],
)
def test_modes_write_the_words_their_way(
    emu: SarvamEmulator, path: str, mode: str, write: Callable[[str], str]
) -> None:
    pcm = noise_pcm(800, seed=7)
    ws = connect(emu, path, query=sdk_query(path, language="unknown", mode=mode))
    send_audio(ws, pcm)
    ws.send(FLUSH)
    _, body = until_data(ws)
    words = words_of(pcm)
    assert body["transcript"] == " ".join(write(w) for w in words)
    assert body["transcript"].isascii()
    language, probability = detected_language(words)
    assert (body["language_code"], body["language_probability"]) == (language, probability)
    assert language in ("hi-IN", "ta-IN", "bn-IN") and 0.5 <= probability <= 0.99  # type: ignore[operator]
    ws.close()


def test_codemix_mixes_scripts(emu: SarvamEmulator) -> None:
    pcm = noise_pcm(3000, seed=8)
    ws = connect(emu, query=sdk_query(mode="codemix"))
    send_audio(ws, pcm)
    ws.send(FLUSH)
    _, body = until_data(ws)
    words = body["transcript"].split()
    assert len(words) == len(words_of(pcm))
    assert any(w.isascii() for w in words) and not all(w.isascii() for w in words)
    ws.close()


def test_tamil_is_written_in_tamil(emu: SarvamEmulator) -> None:
    ws = connect(emu, query=sdk_query(language="ta-IN"))
    send_audio(ws, noise_pcm(600, seed=9))
    ws.send(FLUSH)
    _, body = until_data(ws)
    assert body["transcript"] and all(
        "\u0b80" <= c <= "\u0bff" or c == " " for c in body["transcript"]
    )
    ws.close()


def test_the_legacy_endpoint_takes_a_prompt(emu: SarvamEmulator) -> None:
    ws = connect(emu, LEGACY_PATH)
    ws.send(json.dumps({"type": "config", "prompt": "Banking customer call"}))
    send_audio(ws, noise_pcm(400, seed=10))
    ws.send(FLUSH)
    until_data(ws)
    ws.close()
    assert emu.sessions[0].prompts == ["Banking customer call"]
    assert emu.sessions[0].violations == []


# -- strictness on the connection ------------------------------------------------------------


def _b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


def _audio(**body: Any) -> str:
    full = {"data": _b64(bytes(640)), "sample_rate": 16000, "encoding": "audio/wav"}
    full.update(body)
    return json.dumps({"audio": {k: v for k, v in full.items() if v is not None}})


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (_audio(sample_rate="16000"), "integer"),
        (_audio(sample_rate=16000.0), "integer"),
        (_audio(sample_rate=8000), "differs"),
        (_audio(data="!!!notbase64"), "base64"),
        (_audio(data=_b64(bytes(640))[:-2]), "base64"),  # padding cut: not strict base64
        (_audio(data=""), "base64"),
        (_audio(data=_b64(bytes(641))), "whole 16-bit samples"),
        (_audio(data=_b64(b"RIFF" + bytes(640))), "WAV header"),
        (_audio(encoding="audio/x-raw"), "encoding"),
        (_audio(encoding=None), "exactly"),
        (
            json.dumps(
                {
                    "audio": {
                        "data": _b64(bytes(640)),
                        "sample_rate": 16000,
                        "encoding": "audio/wav",
                        "x": 1,
                    }
                }
            ),
            "exactly",
        ),
        (json.dumps({"type": "config", "prompt": "hi"}), "translate endpoint"),
        (json.dumps({"type": "end_of_stream", "audio": {"data": ""}}), "unsupported"),
        (json.dumps({"type": "flush", "now": True}), "unsupported"),
        ("[1, 2]", "JSON object"),
        ("flush", "JSON"),
    ],
)
def test_a_bad_message_is_an_error_then_1011(emu: SarvamEmulator, message: str, why: str) -> None:
    ws = connect(emu)
    ws.send(message)
    error = recv(ws)
    assert error["type"] == "error" and error["data"]["code"] == "invalid_request_error"
    assert why in error["data"]["error"]
    assert close_code(ws) == 1011
    assert emu.wait_for(lambda: emu.sessions[0].done, 2)
    assert emu.sessions[0].violations == [error["data"]["error"]]


def test_a_binary_frame_is_refused(emu: SarvamEmulator) -> None:
    ws = connect(emu)
    ws.send_binary(bytes(640))
    assert "binary" in recv(ws)["data"]["error"]
    assert close_code(ws) == 1011


def test_a_flush_needs_flush_signal(emu: SarvamEmulator) -> None:
    ws = connect(emu, flush_signal="false")
    send_audio(ws, noise_pcm(200, seed=11))
    assert recv(ws)["data"]["signal_type"] == "START_SPEECH"
    ws.send(FLUSH)
    assert "flush_signal" in recv(ws)["data"]["error"]
    assert close_code(ws) == 1011


def test_audio_faster_than_real_time_beyond_the_burst_is_refused(make_emu: Any) -> None:
    emu = make_emu(max_speed=2.0, burst=1.0)
    ws = connect(emu)
    send_audio(ws, silence_pcm(1000))  # the burst: at once is fine
    time.sleep(0.3)  # earns 0.6 s
    send_audio(ws, silence_pcm(600))
    ws.send(audio_message(silence_pcm(200)))  # 0.2 s more than earned
    assert "faster than 2x real time" in recv(ws)["data"]["error"]
    assert close_code(ws) == 1011
    assert emu.sessions[0].audio_ms == 1600


# -- limits and faults -----------------------------------------------------------------------


def test_the_idle_limit_counts_audio_only(make_emu: Any) -> None:
    emu = make_emu(idle_timeout=0.5)
    ws = connect(emu)
    for _ in range(4):  # silence keeps it open past the limit …
        ws.send(audio_message(silence_pcm(100)))
        time.sleep(0.2)
    started = time.monotonic()
    for _ in range(4):  # … flushes do not
        ws.send(FLUSH)
        time.sleep(0.1)
    assert set(kinds_until_close(ws)) == {"data"}  # each flush was answered (empty)
    assert time.monotonic() - started < 0.8
    assert emu.wait_for(lambda: emu.sessions[0].done, 2)
    session = emu.sessions[0]
    assert (session.limit, session.close_code) == ("idle", 1000)
    ws.close()


@pytest.mark.parametrize(
    ("status", "code"), [(403, "invalid_api_key_error"), (429, "rate_limit_exceeded_error")]
)
def test_a_planned_refusal(emu: SarvamEmulator, status: int, code: str) -> None:
    emu.plan(SessionPlan(refuse=status))
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(emu)
    assert info.value.status_code == status
    assert code in info.value.resp_body.decode()  # type: ignore[union-attr]
    connect(emu).close()  # the plan was for one attempt
    assert emu.connections == 2


@pytest.mark.parametrize("code", ["insufficient_quota_error", "rate_limit_exceeded_error"])
def test_a_planned_error_then_close(emu: SarvamEmulator, code: str) -> None:
    emu.plan(SessionPlan(error=code, error_after_ms=400))
    ws = connect(emu)
    send_audio(ws, noise_pcm(600, seed=12), chunk=3200)
    assert kinds_until_close(ws)[-1] == "error"
    assert emu.wait_for(lambda: emu.sessions[0].done, 2)
    session = emu.sessions[0]
    assert (session.fault, session.close_code) == ("error", 1011)
    assert session.sent[-1]["data"]["code"] == code and session.audio_ms == 400


def test_a_planned_drop_resets_the_connection(emu: SarvamEmulator) -> None:
    emu.plan(SessionPlan(drop_after_ms=200))
    ws = connect(emu)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        send_audio(ws, noise_pcm(400, seed=13), chunk=3200)
        while True:
            ws.recv()
    assert emu.wait_for(lambda: emu.sessions[0].done, 2)
    assert emu.sessions[0].fault == "drop"


def test_a_silent_service_reads_but_answers_nothing(make_emu: Any) -> None:
    emu = make_emu(idle_timeout=0.3)
    emu.plan(SessionPlan(silent_after_ms=100))
    ws = connect(emu)
    send_audio(ws, noise_pcm(600, seed=14), chunk=3200)
    ws.send(FLUSH)
    ws.ping("x")
    time.sleep(0.5)  # past the idle limit: silence stops it too
    opcode, payload = ws.recv_data(control_frame=True)
    assert (opcode, payload) == (websocket.ABNF.OPCODE_PONG, b"x")
    ws.close()
    assert emu.wait_for(lambda: emu.sessions[0].done, 2)
    session = emu.sessions[0]
    assert session.fault == "silent" and session.sent == [] and session.audio_ms == 600
    assert session.limit is None


def test_a_planned_close_code(emu: SarvamEmulator) -> None:
    emu.plan(SessionPlan(close_after_ms=200, close_code=1013, close_reason="busy"))
    ws = connect(emu)
    send_audio(ws, noise_pcm(400, seed=15), chunk=3200)
    assert set(kinds_until_close(ws)) == {"events"}
    assert emu.wait_for(lambda: emu.sessions[0].done, 2)
    assert (emu.sessions[0].fault, emu.sessions[0].close_code) == ("close", 1013)
