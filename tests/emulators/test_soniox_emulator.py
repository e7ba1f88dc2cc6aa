"""The Soniox emulator is as strict as PROTOCOLS.md §1 says, and its output is predictable.

The client is websocket-client, as in the product.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websocket
from websocket import ABNF

from .soniox import (
    UNIT_BYTES,
    SessionPlan,
    SonioxEmulator,
    expected_word_units,
    expected_words,
    noise_pcm,
    silence_pcm,
    speaker_for_unit,
    translation_of,
    word_for_unit,
)

API_KEY = "test-key"
TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "protocol-traces"
START: dict[str, Any] = {
    "model": "stt-rt-v3",
    "audio_format": "pcm_s16le",
    "sample_rate": 16000,
    "num_channels": 1,
}
FRAME_MS = 100
FRAME = FRAME_MS * 32

Factory = Callable[..., SonioxEmulator]
_CLIENTS: list[websocket.WebSocket] = []


@pytest.fixture(autouse=True)
def _shut_clients(soniox_factory: Factory) -> Iterator[None]:
    """Drop the test's client sockets before its emulators close (torn down first, since
    it depends on the factory), so no server thread waits out a closing handshake."""
    yield
    while _CLIENTS:
        _CLIENTS.pop().shutdown()


def connect(
    emu: SonioxEmulator,
    *,
    key: str | None = API_KEY,
    header: list[str] | None = None,
    origin: bool = False,
    url: str | None = None,
    timeout: float = 5.0,
) -> websocket.WebSocket:
    headers = list(header or [])
    if key is not None:
        headers.append(f"Authorization: Bearer {key}")
    ws = websocket.create_connection(
        url or emu.url,
        header=headers,
        sslopt={"ca_certs": emu.ca_file},
        suppress_origin=not origin,
        timeout=timeout,
    )
    _CLIENTS.append(ws)
    return ws


def start(emu: SonioxEmulator, config: dict[str, Any] | None = None, **kw: Any) -> Any:
    ws = connect(emu, **kw)
    ws.send(json.dumps(START if config is None else config))
    return ws


def read_until_close(ws: websocket.WebSocket) -> tuple[list[dict[str, Any]], int | None]:
    """Every JSON message up to the close frame, and the close code.

    websocket-client answers the close frame itself; the socket is then closed so that the
    server does not wait for the end of the TCP connection.
    """
    messages = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
            ws.shutdown()
            return messages, code
        assert opcode == ABNF.OPCODE_TEXT, f"unexpected opcode {opcode}"
        messages.append(json.loads(data))


def assert_error(ws: websocket.WebSocket, code: int, error_type: str, close: int = 1000) -> dict:
    messages, close_code = read_until_close(ws)
    error = messages[-1]
    assert set(error) == {"error_code", "error_type", "error_message", "request_id"}
    assert (error["error_code"], error["error_type"]) == (code, error_type)
    assert error["error_message"]
    uuid.UUID(error["request_id"])
    assert close_code == close
    return error


def send_audio(ws: websocket.WebSocket, pcm: bytes, frame: int = FRAME) -> list[dict]:
    """Send pcm in frames, reading the one result each frame gets."""
    results = []
    for i in range(0, len(pcm), frame):
        ws.send_binary(pcm[i : i + frame])
        results.append(json.loads(ws.recv()))
    return results


def finals(messages: list[dict]) -> list[dict]:
    return [t for m in messages for t in m.get("tokens", []) if t["is_final"]]


def originals(tokens: list[dict]) -> list[dict]:
    return [t for t in tokens if "start_ms" in t]


# -- the deterministic recognizer -----------------------------------------------------------


def test_word_for_unit_is_a_pure_function_of_the_unit() -> None:
    assert word_for_unit(bytes(UNIT_BYTES)) is None
    units = [noise_pcm(20, seed) for seed in range(400)]
    words = [word_for_unit(u) for u in units]
    hits = [w for w in words if w is not None]
    assert 20 <= len(hits) <= 85  # about one unit in eight
    assert all(w.startswith(" w") and len(w) == 10 for w in hits)
    assert words == [word_for_unit(u) for u in units]
    assert {speaker_for_unit(u) for u in units} == {"1", "2"}
    assert translation_of(" wdeadbeef") == " tdeadbeef"


# -- replay of the official SDK's session ----------------------------------------------------


def _trace_frames(audio: str) -> list[tuple[str, str | bytes]]:
    """The client frames of soniox_happy.jsonl, in order, with real audio content.

    The trace keeps only the first 48 bytes of each audio frame: they are a 440 Hz sine of
    amplitude 8000 (truncated to int16), so "tone" rebuilds the exact frames. The tone
    happens to contain no emulator word, so "noise" replays the same frame sizes with
    word-bearing audio.
    """
    n = np.arange(16000)
    tone = (8000 * np.sin(2 * np.pi * 440 * n / 16000)).astype("<i2").tobytes()
    records = [json.loads(line) for line in (TRACES / "soniox_happy.jsonl").open()]
    frames: list[tuple[str, str | bytes]] = []
    noise = noise_pcm(4000, seed=7)
    offset = 0
    for rec in records:
        if rec["kind"] != "client_frame":
            continue
        if rec["opcode"] == "text":
            frames.append(("text", rec["text"]))
            continue
        size = rec["len"]
        if audio == "tone":
            phase = [k for k in range(5) if tone[k * 3840 : k * 3840 + 48].hex() == rec["head_hex"]]
            assert len(phase) == 1
            frames.append(("binary", tone[phase[0] * 3840 : phase[0] * 3840 + size]))
        else:
            frames.append(("binary", noise[offset : offset + size]))
        offset += size
    return frames


@pytest.mark.parametrize("audio", ["tone", "noise"])
def test_replay_of_the_sdk_happy_trace(soniox: SonioxEmulator, audio: str) -> None:
    if not (TRACES / "soniox_happy.jsonl").exists():
        pytest.skip("protocol traces not available")
    frames = _trace_frames(audio)
    config = json.loads(frames[0][1])
    assert "api_key" not in config and config["translation"]["type"] == "two_way"
    ws = connect(soniox, key="test-key")
    sent_audio = bytearray()
    results: list[dict] = []
    final_ms = 0
    for kind, payload in frames:
        if kind == "binary":
            assert isinstance(payload, bytes)
            ws.send_binary(payload)
            sent_audio += payload
            total = len(sent_audio) // 32
            msg = json.loads(ws.recv())
            final_ms = max(final_ms, (total - 500) // 20 * 20)
            assert (msg["total_audio_proc_ms"], msg["final_audio_proc_ms"]) == (total, final_ms)
            results.append(msg)
        elif payload == json.dumps({"type": "finalize"}):
            ws.send(payload)
            msg = json.loads(ws.recv())
            assert msg["tokens"][-1] == {"text": "<fin>", "is_final": True}
            total = len(sent_audio) // 32
            assert msg["final_audio_proc_ms"] == msg["total_audio_proc_ms"] == total == 1560
            final_ms = total
            results.append(msg)
        else:
            ws.send(payload)  # start message, keepalives, then "" (end of audio)
    tail, close_code = read_until_close(ws)
    results += tail
    assert close_code == 1000
    assert tail[-1] == {
        "tokens": [],
        "final_audio_proc_ms": 3060,
        "total_audio_proc_ms": 3060,
        "finished": True,
    }
    assert not any("error_code" in m for m in results)

    words = expected_word_units(bytes(sent_audio))
    assert (len(words) == 0) == (audio == "tone")
    final_originals = originals(finals(results))
    assert [(t["start_ms"], t["text"]) for t in final_originals] == [(20 * k, w) for k, w in words]
    for msg in results:
        tokens = msg["tokens"]
        flags = [t["is_final"] for t in tokens]
        assert flags == sorted(flags, reverse=True)  # finals first
        for t in originals(tokens):
            assert t["language"] == "en" and t["translation_status"] == "original"
            assert t["speaker"] in ("1", "2") and t["confidence"] == 0.9
            assert (t["end_ms"] <= msg["final_audio_proc_ms"]) == t["is_final"]
    translations = [t for t in finals(results) if t.get("translation_status") == "translation"]
    assert [t["text"] for t in translations] == [translation_of(w) for _, w in words]
    assert all(t["language"] == "es" and t["source_language"] == "en" for t in translations)
    assert not any(t["text"] == "<end>" for t in finals(results))  # no silence in the audio

    session = soniox.sessions[0]
    assert session.config == config
    assert bytes(session.audio) == bytes(sent_audio)
    assert len(session.keepalive_times) == 2 and len(session.finalize_times) == 1
    assert session.end_received and session.finished_sent and session.close_code == 1000
    assert session.final_words == [w for _, w in words]
    assert session.error_sent is None and not session.origin_header
    assert ("Authorization", "Bearer test-key") in session.headers


# -- authentication -------------------------------------------------------------------------


def test_legacy_api_key_in_the_start_message_is_accepted_without_header(
    soniox: SonioxEmulator,
) -> None:
    ws = start(soniox, {"api_key": API_KEY, **START}, key=None)
    results = send_audio(ws, noise_pcm(200))
    assert [r["total_audio_proc_ms"] for r in results] == [100, 200]
    ws.send("")
    messages, code = read_until_close(ws)
    assert messages[-1]["finished"] is True and code == 1000
    assert soniox.sessions[0].config["api_key"] == API_KEY


def test_key_in_header_and_start_message_is_refused(soniox: SonioxEmulator) -> None:
    ws = start(soniox, {"api_key": API_KEY, **START})
    error = assert_error(ws, 400, "invalid_request")
    assert "not both" in error["error_message"]
    assert error["request_id"] == soniox.sessions[0].request_id


@pytest.mark.parametrize(
    ("header", "config_key"),
    [
        ("Authorization: Bearer wrong", None),
        ("Authorization: Basic dGVzdC1rZXk=", None),
        ("Authorization: Bearer ", None),
        (None, None),
        (None, "wrong"),
    ],
    ids=["wrong-bearer", "basic-scheme", "empty-bearer", "no-key", "wrong-legacy-key"],
)
def test_bad_or_missing_key_gets_401_then_close(
    soniox: SonioxEmulator, header: str | None, config_key: str | None
) -> None:
    config = START if config_key is None else {"api_key": config_key, **START}
    ws = start(soniox, config, key=None, header=[header] if header else None)
    assert_error(ws, 401, "unauthenticated")
    session = soniox.sessions[0]
    assert session.error_sent == 401 and session.close_code == 1000


def test_wrong_path_is_refused_at_the_handshake(soniox: SonioxEmulator) -> None:
    url = f"wss://127.0.0.1:{soniox.port}/transcribe"
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        connect(soniox, url=url)
    assert exc.value.status_code == 404
    assert soniox.connections == 1 and soniox.sessions == []
    assert soniox.rejected_paths == ["/transcribe"]


def test_client_without_the_ca_fails_verification(soniox: SonioxEmulator) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        websocket.create_connection(soniox.url, timeout=5, suppress_origin=True)
    # the certificate also names localhost (checked at 127.0.0.1: the name need not resolve)
    ctx = ssl.create_default_context(cafile=soniox.ca_file)
    with (
        socket.create_connection(("127.0.0.1", soniox.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() is not None


def test_headers_and_origin_are_recorded(soniox: SonioxEmulator) -> None:
    ws = connect(soniox, origin=True, header=["X-Probe: 1"])
    ws.send(json.dumps(START))
    ws.send("")
    read_until_close(ws)
    session = soniox.sessions[0]
    assert session.origin_header
    assert ("X-Probe", "1") in session.headers
    assert session.path == "/transcribe-websocket"


# -- the start message ----------------------------------------------------------------------

_V5 = {**START, "model": "stt-rt-v5"}
BAD_CONFIGS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown-field": ({**START, "enable_magic": True}, "invalid_request"),
    "missing-model": ({k: v for k, v in START.items() if k != "model"}, "invalid_request"),
    "model-not-str": ({**START, "model": 3}, "invalid_request"),
    "unknown-model": ({**START, "model": "stt-rt-v9"}, "model_not_available"),
    "format-wav": ({**START, "audio_format": "wav"}, "invalid_request"),
    "format-auto-default": (
        {k: v for k, v in START.items() if k != "audio_format"},
        "invalid_request",
    ),
    "format-unknown": ({**START, "audio_format": "pcm_s16"}, "invalid_request"),
    "raw-without-rate": (
        {k: v for k, v in START.items() if k != "sample_rate"},
        "invalid_request",
    ),
    "rate-str": ({**START, "sample_rate": "16000"}, "invalid_request"),
    "rate-8k": ({**START, "sample_rate": 8000}, "invalid_request"),
    "stereo": ({**START, "num_channels": 2}, "invalid_request"),
    "channels-bool": ({**START, "num_channels": True}, "invalid_request"),
    "hints-str": ({**START, "language_hints": "en"}, "invalid_request"),
    "hints-int": ({**START, "language_hints": [1]}, "invalid_request"),
    "strict-str": ({**START, "language_hints_strict": "yes"}, "invalid_request"),
    "diarization-int": ({**START, "enable_speaker_diarization": 1}, "invalid_request"),
    "lid-none": ({**START, "enable_language_identification": None}, "invalid_request"),
    "endpoint-str": ({**START, "enable_endpoint_detection": "true"}, "invalid_request"),
    "context-list": ({**START, "context": ["demo"]}, "invalid_request"),
    "context-unknown": ({**START, "context": {"domain": "demo"}}, "invalid_request"),
    "general-dict": ({**START, "context": {"general": {"domain": "demo"}}}, "invalid_request"),
    "general-no-value": ({**START, "context": {"general": [{"key": "d"}]}}, "invalid_request"),
    "text-int": ({**START, "context": {"text": 5}}, "invalid_request"),
    "terms-str": ({**START, "context": {"terms": "Soniox"}}, "invalid_request"),
    "tterms-half": (
        {**START, "context": {"translation_terms": [{"source": "a"}]}},
        "invalid_request",
    ),
    "one-way-no-target": ({**START, "translation": {"type": "one_way"}}, "invalid_request"),
    "two-way-extra": (
        {
            **START,
            "translation": {
                "type": "two_way",
                "language_a": "en",
                "language_b": "es",
                "target_language": "es",
            },
        },
        "invalid_request",
    ),
    "translation-type": (
        {**START, "translation": {"type": "three_way", "target_language": "es"}},
        "invalid_request",
    ),
    "translation-str": ({**START, "translation": "es"}, "invalid_request"),
    "delay-low": ({**START, "max_endpoint_delay_ms": 499}, "invalid_request"),
    "delay-high": ({**START, "max_endpoint_delay_ms": 3001}, "invalid_request"),
    "delay-float": ({**START, "max_endpoint_delay_ms": 1000.0}, "invalid_request"),
    "sensitivity-v3": ({**START, "endpoint_sensitivity": 0.5}, "invalid_request"),
    "sensitivity-range": ({**_V5, "endpoint_sensitivity": 1.5}, "invalid_request"),
    "latency-level": ({**START, "endpoint_latency_adjustment_level": 4}, "invalid_request"),
    "reference-long": ({**START, "client_reference_id": "x" * 257}, "invalid_request"),
}


@pytest.mark.parametrize(("config", "error_type"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_schema_violation_gets_400(
    soniox: SonioxEmulator, config: dict[str, Any], error_type: str
) -> None:
    ws = start(soniox, config)
    error = assert_error(ws, 400, error_type)
    if config.get("audio_format", "auto") != "pcm_s16le" or config.get("sample_rate") == 8000:
        assert error["error_message"].startswith("This emulator supports only") or (
            "Unknown audio_format" in error["error_message"]
        )
    assert soniox.sessions[0].config == config


GOOD_CONFIGS: dict[str, dict[str, Any]] = {
    "minimal": START,
    "v4-v5-features": {
        **_V5,
        "model": "stt-rt-v4",
        "endpoint_sensitivity": -1,
        "endpoint_latency_adjustment_level": 3,
        "max_endpoint_delay_ms": 500,
        "language_hints_strict": True,
        "client_reference_id": "x" * 256,
    },
    "everything": {
        **_V5,
        "language_hints": ["en", "es"],
        "context": {
            "general": [{"key": "domain", "value": "demo"}],
            "text": "a talk",
            "terms": ["Soniox"],
            "translation_terms": [{"source": "hello", "target": "hola"}],
        },
        "enable_speaker_diarization": True,
        "enable_language_identification": True,
        "enable_endpoint_detection": True,
        "max_endpoint_delay_ms": 3000,
        "translation": {"type": "one_way", "target_language": "es"},
    },
}


@pytest.mark.parametrize("config", GOOD_CONFIGS.values(), ids=GOOD_CONFIGS.keys())
def test_valid_start_messages_are_accepted(soniox: SonioxEmulator, config: dict) -> None:
    ws = start(soniox, config)
    assert send_audio(ws, noise_pcm(100))[0]["total_audio_proc_ms"] == 100
    ws.send("")
    messages, code = read_until_close(ws)
    assert messages[-1]["finished"] and code == 1000


@pytest.mark.parametrize(
    "first",
    [b"\x00\x00" * 320, "not json", "[1, 2]", ""],
    ids=["binary", "not-json", "json-array", "empty-text"],
)
def test_first_frame_must_be_a_json_object(soniox: SonioxEmulator, first: str | bytes) -> None:
    ws = connect(soniox)
    if isinstance(first, bytes):
        ws.send_binary(first)
    else:
        ws.send(first)
    assert_error(ws, 400, "invalid_request")
    assert soniox.sessions[0].config is None


# -- messages after the start -----------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"\x01\x02\x03",
        '{"type": "flush"}',
        '{"type": "keepalive", "x": 1}',
        '{"type": "finalize", "trailing_silence_ms": "300"}',
        "keepalive",
        '"finalize"',
    ],
    ids=["odd-audio", "unknown-type", "keepalive-extra", "finalize-bad-silence", "bare", "str"],
)
def test_invalid_frame_after_start_gets_400(soniox: SonioxEmulator, frame: str | bytes) -> None:
    ws = start(soniox)
    send_audio(ws, noise_pcm(100))
    if isinstance(frame, bytes):
        ws.send_binary(frame)
    else:
        ws.send(frame)
    assert_error(ws, 400, "invalid_request")


def test_finalize_makes_everything_final_then_fin(soniox: SonioxEmulator) -> None:
    pcm = noise_pcm(1000, seed=3)
    ws = start(soniox)
    results = send_audio(ws, pcm)
    ws.send(json.dumps({"type": "finalize", "trailing_silence_ms": 300}))
    fin = json.loads(ws.recv())
    assert fin["tokens"][-1] == {"text": "<fin>", "is_final": True}
    assert fin["final_audio_proc_ms"] == fin["total_audio_proc_ms"] == 1000
    assert all(t["is_final"] for t in fin["tokens"])
    assert [t["text"] for t in originals(finals([*results, fin]))] == expected_words(pcm)
    # audio after a finalize continues the session's timeline; F never goes back
    more = send_audio(ws, noise_pcm(100, seed=4))
    assert more[0]["total_audio_proc_ms"] == 1100 and more[0]["final_audio_proc_ms"] == 1000
    assert len(soniox.sessions[0].finalize_times) == 1


def test_finals_are_sent_once_and_the_tail_is_provisional(soniox_factory: Factory) -> None:
    emu = soniox_factory(lag_ms=300)
    pcm = noise_pcm(3000, seed=11)
    ws = start(emu)
    results = send_audio(ws, pcm, frame=2 * 32 * 60)  # 120 ms frames
    ws.send("")
    tail, _ = read_until_close(ws)
    final_ms = 0
    for msg in results:
        total = msg["total_audio_proc_ms"]
        final_ms = max(final_ms, (total - 300) // 20 * 20)
        assert msg["final_audio_proc_ms"] == final_ms
        for t in msg["tokens"]:
            assert (t["end_ms"] <= final_ms) == t["is_final"]
            assert t["end_ms"] - t["start_ms"] == 20
    final_tokens = originals(finals(results + tail))
    starts = [t["start_ms"] for t in final_tokens]
    assert len(starts) == len(set(starts)) > 10  # each final exactly once
    assert [t["text"] for t in final_tokens] == expected_words(pcm)
    provisional = {(t["start_ms"], t["text"]) for m in results for t in m["tokens"]}
    assert provisional <= {(t["start_ms"], t["text"]) for t in final_tokens}
    assert "translation_status" not in final_tokens[0]
    assert "speaker" not in final_tokens[0] and "language" not in final_tokens[0]


def test_same_audio_gives_same_words_in_every_session(soniox_factory: Factory) -> None:
    pcm = noise_pcm(1500, seed=5)
    words = []
    for lag in (500, 100):
        emu = soniox_factory(lag_ms=lag)
        for frame in (FRAME, 1280):
            ws = start(emu)
            send_audio(ws, pcm, frame=frame)
            ws.send("")
            read_until_close(ws)
        words += [s.final_words for s in emu.sessions]
    assert words[0] == expected_words(pcm) and len(words[0]) > 3
    assert all(w == words[0] for w in words)


def test_translation_tokens_follow_their_originals(soniox: SonioxEmulator) -> None:
    config = {
        **START,
        "language_hints": ["de"],
        "enable_speaker_diarization": True,
        "enable_language_identification": True,
        "translation": {"type": "one_way", "target_language": "fr"},
    }
    pcm = noise_pcm(2000, seed=9)
    ws = start(soniox, config)
    results = send_audio(ws, pcm)
    ws.send("")
    tail, _ = read_until_close(ws)
    seen = 0
    for msg in results + tail:
        fin = [t for t in msg["tokens"] if t["is_final"]]
        orig = [t for t in fin if t.get("translation_status") == "original"]
        trans = [t for t in fin if t.get("translation_status") == "translation"]
        assert fin == orig + trans  # originals first, then their translations
        assert [t["text"] for t in trans] == [translation_of(t["text"]) for t in orig]
        for o, t in zip(orig, trans, strict=True):
            assert not {"start_ms", "end_ms", "confidence"} & set(t)
            assert (t["language"], t["source_language"]) == ("fr", "de")
            assert t["speaker"] == o["speaker"] and o["language"] == "de"
        seen += len(trans)
    assert seen == len(expected_words(pcm)) > 3


def test_endpoint_after_half_a_second_of_digital_silence(soniox: SonioxEmulator) -> None:
    config = {**START, "enable_endpoint_detection": True}
    speech = noise_pcm(400, seed=0)
    assert expected_words(speech)
    pcm = silence_pcm(600) + speech + silence_pcm(600) + noise_pcm(200, seed=3)
    ws = start(soniox, config)
    results = send_audio(ws, pcm)
    ends = [(i, m) for i, m in enumerate(results) for t in m["tokens"] if t["text"] == "<end>"]
    assert len(ends) == 1  # not for the leading silence: no word before it
    index, msg = ends[0]
    position = msg["tokens"].index({"text": "<end>", "is_final": True})
    assert all(t["is_final"] for t in msg["tokens"][:position])
    # 600 ms lead + 400 ms speech + 25 silent units: the endpoint closes at 1500 ms
    assert msg["final_audio_proc_ms"] == msg["total_audio_proc_ms"] == 1500
    before = originals(finals(results[: index + 1]))
    assert [t["text"] for t in before] == expected_words(silence_pcm(600) + speech)


def test_no_endpoint_without_endpoint_detection(soniox: SonioxEmulator) -> None:
    pcm = noise_pcm(400) + silence_pcm(800)
    ws = start(soniox)
    results = send_audio(ws, pcm)
    assert not any(t["text"] == "<end>" for m in results for t in m["tokens"])


@pytest.mark.parametrize("second", ["", b""], ids=["text", "binary"])
def test_end_of_audio_is_an_empty_frame_and_a_second_one_is_tolerated(
    soniox: SonioxEmulator, second: str | bytes
) -> None:
    pcm = noise_pcm(700, seed=1)
    ws = start(soniox)
    send_audio(ws, pcm)
    if isinstance(second, bytes):
        ws.send(b"", opcode=ABNF.OPCODE_BINARY)
    else:
        ws.send("")
    ws.send("")  # the SDK's close() sends it again
    messages, code = read_until_close(ws)
    assert code == 1000
    assert not any("error_code" in m for m in messages)
    assert messages[-1] == {
        "tokens": [],
        "final_audio_proc_ms": 700,
        "total_audio_proc_ms": 700,
        "finished": True,
    }
    assert soniox.wait_for(lambda: soniox.sessions[0].done, 2.0)
    session = soniox.sessions[0]
    assert session.end_received and session.finished_sent and session.close_code == 1000
    assert session.final_words == expected_words(pcm)


def test_audio_lead_over_wall_clock_is_recorded(soniox: SonioxEmulator) -> None:
    ws = start(soniox)
    send_audio(ws, noise_pcm(1000), frame=1000 * 32)
    assert soniox.sessions[0].max_lead_s > 0.8
    ws2 = start(soniox)
    for _ in range(3):
        send_audio(ws2, noise_pcm(40), frame=40 * 32)
        time.sleep(0.06)
    assert soniox.sessions[1].max_lead_s < 0.1


# -- idle timeout ---------------------------------------------------------------------------


@pytest.mark.parametrize("send_start", [True, False], ids=["after-start", "before-start"])
def test_idle_session_gets_408(soniox_factory: Factory, send_start: bool) -> None:
    emu = soniox_factory(idle_timeout=0.5)
    began = time.monotonic()
    ws = start(emu) if send_start else connect(emu)
    error = assert_error(ws, 408, "request_timeout")
    assert time.monotonic() - began >= 0.5
    assert "0.5" in error["error_message"]


def test_keepalives_hold_an_idle_session_open(soniox_factory: Factory) -> None:
    emu = soniox_factory(idle_timeout=0.5)
    ws = start(emu)
    for _ in range(5):
        time.sleep(0.2)
        ws.send(json.dumps({"type": "keepalive"}))
    ws.send("")
    messages, code = read_until_close(ws)
    assert messages == [
        {"tokens": [], "final_audio_proc_ms": 0, "total_audio_proc_ms": 0, "finished": True}
    ]
    assert code == 1000
    assert len(emu.sessions[0].keepalive_times) == 5


# -- fault plans ------------------------------------------------------------------------------

SLUGS = {402: "organization_balance_exhausted", 429: "limit_exceeded", 500: "internal_error"}


@pytest.mark.parametrize("code", [402, 429, 500, 503])
def test_planned_error_after_some_audio(soniox: SonioxEmulator, code: int) -> None:
    soniox.plan(SessionPlan(error=code, error_after_ms=300))
    ws = start(soniox)
    results = send_audio(ws, noise_pcm(200))  # 100 ms, 200 ms: normal results
    assert [r["total_audio_proc_ms"] for r in results] == [100, 200]
    ws.send_binary(noise_pcm(100, seed=1))
    error = assert_error(ws, code, SLUGS.get(code, "service_unavailable"))
    if code == 503:
        assert error["error_message"] == (
            "Cannot continue request (code 11). Please restart the request."
        )
    session = soniox.sessions[0]
    assert session.error_sent == code and session.fault == "error"
    assert session.audio_ms == 300 and len(session.sent) == 3


def test_planned_error_right_after_start_with_custom_close(soniox: SonioxEmulator) -> None:
    soniox.plan(SessionPlan(error=503, close_code=1011))
    ws = start(soniox)
    assert_error(ws, 503, "service_unavailable", close=1011)
    assert soniox.sessions[0].close_code == 1011 and soniox.sessions[0].audio_ms == 0


def test_plans_apply_to_the_next_connections_in_order(soniox: SonioxEmulator) -> None:
    soniox.plan(SessionPlan(error=429))
    soniox.plan(SessionPlan(error=402, error_type="organization_monthly_budget_exhausted"))
    assert_error(start(soniox), 429, "limit_exceeded")
    assert_error(start(soniox), 402, "organization_monthly_budget_exhausted")
    ws = start(soniox)
    assert send_audio(ws, noise_pcm(100))[0]["total_audio_proc_ms"] == 100
    assert [s.plan is None for s in soniox.sessions] == [False, False, True]


def test_drop_resets_the_tcp_connection(soniox: SonioxEmulator) -> None:
    soniox.plan(SessionPlan(drop_after_ms=200))
    ws = start(soniox)
    send_audio(ws, noise_pcm(100))
    ws.send_binary(noise_pcm(100, seed=1))
    assert soniox.wait_for(lambda: soniox.sessions[0].done, 2.0)
    # Read below TLS: the kernel reports the RST. (Through TLS, OpenSSL 3 turns the reset
    # into an EOF, which websocket-client reports as "Connection to remote host was lost".)
    raw = socket.fromfd(ws.sock.fileno(), socket.AF_INET, socket.SOCK_STREAM)
    try:
        raw.settimeout(2)
        with pytest.raises(ConnectionResetError):
            raw.recv(1)
    finally:
        raw.close()
    session = soniox.sessions[0]
    assert session.fault == "drop" and session.close_code is None and session.sent[-1]


def test_drop_gives_the_client_a_connection_error_without_close_frame(
    soniox: SonioxEmulator,
) -> None:
    soniox.plan(SessionPlan(drop_after_ms=0))
    ws = start(soniox)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        ws.recv_data(control_frame=True)  # a close frame would be returned, not raised
    assert soniox.sessions[0].sent == []


def test_silent_server_answers_pings_but_nothing_else(soniox: SonioxEmulator) -> None:
    soniox.plan(SessionPlan(silent_after_ms=200))
    ws = start(soniox)
    send_audio(ws, noise_pcm(100))
    for seed in range(5):
        ws.send_binary(noise_pcm(100, seed=seed))
    ws.send(json.dumps({"type": "finalize"}))
    ws.send("")
    assert soniox.wait_for(lambda: soniox.sessions[0].audio_ms == 600, 2.0)
    ws.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    ws.settimeout(2)
    ws.ping(b"alive?")
    assert ws.recv_data(control_frame=True) == (ABNF.OPCODE_PONG, b"alive?")
    session = soniox.sessions[0]
    assert session.fault == "silent" and len(session.sent) == 1
    assert not session.finished_sent and session.close_code is None


def test_a_server_that_never_confirms_the_end_listens_and_says_nothing(
    soniox: SonioxEmulator,
) -> None:
    """``unanswered_end``: results while audio flows; from the first finalize on, neither
    ``<fin>`` nor ``finished`` — the audio still arrives and is recorded."""
    soniox.plan(SessionPlan(unanswered_end=True))
    ws = start(soniox)
    results = send_audio(ws, noise_pcm(400))
    assert results[-1]["total_audio_proc_ms"] == 400  # answered while audio flows
    ws.send(json.dumps({"type": "finalize"}))
    ws.send_binary(noise_pcm(100, seed=2))
    ws.send("")
    assert soniox.wait_for(
        lambda: soniox.sessions[0].end_received and soniox.sessions[0].audio_ms == 500, 2.0
    )
    ws.settimeout(0.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    session = soniox.sessions[0]
    assert session.fault == "unanswered_end" and len(session.finalize_times) == 1
    assert not session.finished_sent and session.close_code is None
    assert all("<fin>" not in json.dumps(m) for m in session.sent)


# -- shutdown -------------------------------------------------------------------------------


def test_close_ends_live_connections_and_joins_every_thread(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    emu = SonioxEmulator(tmp_path, api_key=API_KEY, idle_timeout=30)
    emu.plan(SessionPlan(silent_after_ms=0))
    silent = start(emu)
    busy = start(emu)
    send_audio(busy, noise_pcm(100))
    idle = connect(emu)  # no start message yet
    assert emu.wait_for(lambda: len(emu.sessions) == 3, 2.0)
    began = time.monotonic()
    emu.close()
    assert time.monotonic() - began < 2.5
    assert [t for t in threading.enumerate() if t not in before] == []
    for ws in (silent, busy, idle):
        _, code = read_until_close(ws)
        assert code == 1001
    assert [s.done for s in emu.sessions] == [True, True, True]
    emu.close()  # idempotent
