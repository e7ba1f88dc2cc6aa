"""The Azure Speech emulator is strict: it refuses what USP forbids with the codes of
PROTOCOLS.md §3a, and answers a well-behaved client as its docstring says. Driven with a raw
websocket-client and frames built here (no edgecap code)."""

from __future__ import annotations

import http.client
import json
import random
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import websocket

from .azure import (
    AzureEmulator,
    Refusal,
    SessionPlan,
    TokenPlan,
    riff_header,
    synthesis_audio,
    text_of,
    translation_of,
    turn_words,
)
from .soniox import noise_pcm
from .tls import TlsMaterial

KEY = "k"
Message = tuple[str, dict[str, str], Any]  # (path, headers, JSON body or binary payload)


@pytest.fixture
def make_emu(tmp_path: Path, tls_material: TlsMaterial) -> Iterator[Callable[..., AzureEmulator]]:
    made: list[AzureEmulator] = []

    def make(**kwargs: Any) -> AzureEmulator:
        kwargs.setdefault("api_key", KEY)
        emu = AzureEmulator(tmp_path, tls=tls_material, **kwargs)
        made.append(emu)
        return emu

    yield make
    for emu in made:
        emu.close()


@pytest.fixture
def emu(make_emu: Callable[..., AzureEmulator]) -> AzureEmulator:
    return make_emu(telemetry_timeout=2.0)


# -- a tiny USP client side ---------------------------------------------------------------


def _ts() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def text(path: str, body: Any = None, rid: str | None = None, **extra: str) -> str:
    """A text message as the native SDK writes it (``Name:value``, no space)."""
    headers = {"X-Timestamp": _ts(), "Path": path}
    if rid is not None:
        headers["X-RequestId"] = rid
    headers.update(extra)
    block = "".join(f"{k}:{v}\r\n" for k, v in headers.items() if v != "")
    return block + "\r\n" + ("" if body is None else json.dumps(body))


def config() -> str:
    return text("speech.config", {"context": {"system": {"name": "test"}}}, **_JSON)


def context(rid: str) -> str:
    return text("speech.context", {"audio": {"streams": {"1": None}}}, rid)


def telemetry(rid: str) -> str:
    return text("telemetry", {"ReceivedMessages": []}, rid, **_JSON)


def audio(rid: str, payload: bytes, path: str = "audio") -> bytes:
    block = f"X-Timestamp:{_ts()}\r\nPath:{path}\r\nX-RequestId:{rid}\r\nX-StreamId:1\r\n"
    return struct.pack(">H", len(block)) + block.encode() + payload


_JSON = {"Content-Type": "application/json"}


def parse(message: str | bytes) -> Message:
    if isinstance(message, bytes):
        (size,) = struct.unpack_from(">H", message)
        block, payload = message[2 : 2 + size].decode(), message[2 + size :]
    else:
        block, _, body = message.partition("\r\n\r\n")
        payload = json.loads(body)
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(":") for line in block.split("\r\n") if line)
    )
    return headers["path"], headers, payload


def connect(
    emu: AzureEmulator, mode: str = "conversation", key: str = KEY, **query: Any
) -> websocket.WebSocket:
    if not query:
        query = {"language": "en-US"} if mode != "translation" else {"from": "en-US", "to": "de"}
    return websocket.create_connection(
        emu.url_for(mode, **query),
        header=[f"Ocp-Apim-Subscription-Key: {key}", f"X-ConnectionId: {uuid.uuid4().hex}"],
        sslopt={"ca_certs": emu.ca_file},
        suppress_origin=True,
        timeout=3,
    )


def send_turn(ws: websocket.WebSocket, rid: str, pcm: bytes) -> list[Message]:
    """One whole turn as the SDK sends it; the replies up to ``turn.end``."""
    ws.send(context(rid))
    ws.send_binary(audio(rid, riff_header()))
    for i in range(0, len(pcm), 3200):
        ws.send_binary(audio(rid, pcm[i : i + 3200]))
    ws.send_binary(audio(rid, b""))
    got: list[Message] = []
    while not got or got[-1][0] != "turn.end":
        got.append(parse(ws.recv()))
    return got


def until_closed(ws: websocket.WebSocket) -> tuple[list[str | bytes], int | None]:
    """Every message until the server's close, and its close code (None: connection lost)."""
    out: list[str | bytes] = []
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return out, struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
            out.append(data.decode() if opcode == websocket.ABNF.OPCODE_TEXT else data)
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return out, None
    finally:
        ws.shutdown()


# -- the upgrade --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"key": "wrong"}, 401),
        ({"no_key": True}, 401),
        ({"path": "/speech/recognition/banter/cognitiveservices/v1"}, 404),
        ({"no_connection_id": True}, 400),
        ({"connection_id": "7F3F-not-hex"}, 400),
        ({"query": "profanity=masked"}, 400),  # no language
        ({"query": "language=en-US&format=verbose"}, 400),
        ({"query": "language=en-US&profanity=bleep"}, 400),
        ({"path": "/speech/translation/cognitiveservices/v1", "query": "from=en-US"}, 400),
    ],
)
def test_the_upgrade_is_refused(emu: AzureEmulator, change: dict[str, Any], status: int) -> None:
    path = change.get("path", "/speech/recognition/conversation/cognitiveservices/v1")
    header = [f"X-ConnectionId: {change.get('connection_id', uuid.uuid4().hex)}"]
    if change.get("no_connection_id"):
        header = []
    if not change.get("no_key"):
        header.append(f"Ocp-Apim-Subscription-Key: {change.get('key', KEY)}")
    url = f"{emu.base_url}{path}?{change.get('query', 'language=en-US')}"
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(url, header=header, sslopt={"ca_certs": emu.ca_file})
    assert info.value.status_code == status
    assert emu.sessions == [] and emu.connections == 1


def test_bearer_token_and_query_key_are_accepted_and_usp_is_echoed(
    make_emu: Callable[..., AzureEmulator],
) -> None:
    emu = make_emu(tokens=("tok",))
    cid = uuid.uuid4().hex
    for header, query, subprotocols in (
        (["Authorization: Bearer tok"], {"language": "en-US"}, ["USP"]),
        ([], {"language": "en-US", "Ocp-Apim-Subscription-Key": KEY}, None),
    ):
        ws = websocket.create_connection(
            emu.url_for("interactive", **query, **({} if header else {"X-ConnectionId": cid})),
            header=header + ([f"X-ConnectionId: {cid}"] if header else []),
            sslopt={"ca_certs": emu.ca_file},
            subprotocols=subprotocols,
        )
        # websocket-client lowercases the echoed name; the server's own record is exact.
        assert (ws.getsubprotocol() or "").upper() == (subprotocols[0] if subprotocols else "")
        ws.close()
    assert [s.mode for s in emu.sessions] == ["interactive", "interactive"]
    assert [s.subprotocol for s in emu.sessions] == ["USP", None]


# -- happy turns --------------------------------------------------------------------------


def test_two_recognition_turns_simple_format(emu: AzureEmulator) -> None:
    ws = connect(emu)
    ws.send(config())
    pcms = [noise_pcm(900, seed=1), noise_pcm(700, seed=2)]
    rids = [uuid.uuid4().hex, uuid.uuid4().hex]
    for rid, pcm in zip(rids, pcms, strict=True):
        got = send_turn(ws, rid, pcm)
        words = [w for _, w in turn_words(pcm)]
        assert words
        paths = [p for p, _, _ in got]
        assert paths[0] == "turn.start" and paths[-1] == "turn.end"
        assert paths[1] == "speech.startDetected"
        assert paths[-3:-1] == ["speech.endDetected", "speech.phrase"]
        assert all(h["x-requestid"] == rid for _, h, _ in got)
        hypotheses = [b["Text"] for p, _, b in got if p == "speech.hypothesis"]
        assert hypotheses == [text_of(words[: i + 1]) for i in range(len(words))]
        phrase = got[-2][2]
        first_unit = turn_words(pcm)[0][0]
        assert phrase == {
            "RecognitionStatus": "Success",
            "Offset": first_unit * 20 * 10_000,
            "Duration": (len(pcm) // 32 - first_unit * 20) * 10_000,
            "DisplayText": text_of(words),
        }
        ws.send(telemetry(rid))
    ws.close()
    (s,) = emu.sessions
    assert emu.wait_for(lambda: s.done, 3)
    assert s.violations == [] and s.client_close_code == 1000
    assert [t.request_id for t in s.turns] == rids
    assert [bytes(t.audio) for t in s.turns] == pcms
    assert all(t.riff == riff_header() and t.telemetry == {"ReceivedMessages": []} for t in s.turns)
    assert s.config == {"context": {"system": {"name": "test"}}}


def quiet_pcm(ms: int, seed: int = 0) -> bytes:
    """Room noise around -64 dBFS: a pause to the phrase segmentation, not digital silence."""
    rng = random.Random(seed)
    return struct.pack(f"<{ms * 16}h", *(rng.randint(-30, 30) for _ in range(ms * 16)))


def test_with_segmentation_a_pause_ends_a_phrase_inside_the_turn(
    make_emu: Callable[..., AzureEmulator],
) -> None:
    emu = make_emu(segment_silence_ms=500)
    loud = [noise_pcm(1500, seed=1), noise_pcm(1500, seed=2), noise_pcm(600, seed=3)]
    # a 700 ms pause ends the first phrase; 300 ms does not end the second
    pcm = loud[0] + quiet_pcm(700) + loud[1] + quiet_pcm(300, seed=1) + loud[2]
    ws = connect(emu)
    ws.send(config())
    got = send_turn(ws, A, pcm)
    ws.send(telemetry(A))
    units = {0: 0, 1: (1500 + 700) // 20, 2: (1500 + 700 + 1500 + 300) // 20}
    words = [[(units[i] + k, w) for k, w in turn_words(part)] for i, part in enumerate(loud)]
    first, second = words[0], words[1] + words[2]
    assert first and words[1] and words[2]
    phrases = [b for p, _, b in got if p == "speech.phrase"]
    assert phrases == [
        {
            "RecognitionStatus": "Success",
            "Offset": first[0][0] * 200_000,
            "Duration": (75 - first[0][0]) * 200_000,  # up to where the pause began
            "DisplayText": text_of([w for _, w in first]),
        },
        {
            "RecognitionStatus": "Success",
            "Offset": second[0][0] * 200_000,
            "Duration": (len(pcm) // 640 - second[0][0]) * 200_000,
            "DisplayText": text_of([w for _, w in second]),
        },
    ]
    # the hypotheses after the first phrase carry only the second one's words
    paths = [p for p, _, _ in got]
    after = [b["Text"] for p, _, b in got[paths.index("speech.phrase") :] if "hypothesis" in p]
    assert after == [text_of([w for _, w in second[: i + 1]]) for i in range(len(second))]
    assert paths[-3:] == ["speech.endDetected", "speech.phrase", "turn.end"]
    # a turn whose words all went out at a pause ends with no phrase (no NoMatch)
    got = send_turn(ws, B, loud[0] + quiet_pcm(600))
    ws.send(telemetry(B))
    assert [p for p, _, _ in got].count("speech.phrase") == 1
    assert got[-3][0] == "speech.phrase" and got[-2][0] == "speech.endDetected"
    ws.close()
    (s,) = emu.sessions
    assert emu.wait_for(lambda: s.done, 3) and s.violations == []
    assert len(s.turns[0].words) == len(first) + len(second)  # the quiet units held none


def test_headers_with_a_space_after_the_colon_are_accepted(emu: AzureEmulator) -> None:
    """The JS SDK writes ``Name: value`` with lowercased names; both forms are USP."""

    def js_style(message: str) -> str:
        block, _, body = message.partition("\r\n\r\n")
        lines = [
            f"{n.lower()}: {v}" for n, _, v in (ln.partition(":") for ln in block.split("\r\n"))
        ]
        return "\r\n".join(lines) + "\r\n\r\n" + body

    ws = connect(emu)
    ws.send(js_style(config()))
    rid = uuid.uuid4().hex
    ws.send(js_style(context(rid)))
    block = f"x-timestamp: {_ts()}\r\npath: audio\r\nx-requestid: {rid}\r\n".encode()
    ws.send_binary(struct.pack(">H", len(block)) + block + riff_header() + PCM)
    ws.send_binary(audio(rid, b""))
    while parse(ws.recv())[0] != "turn.end":
        pass
    ws.send(js_style(telemetry(rid)))
    ws.close()
    (s,) = emu.sessions
    assert emu.wait_for(lambda: s.done, 3)
    assert s.violations == [] and s.turns[0].telemetry is not None
    assert (
        s.turns[0].context == {"audio": {"streams": {"1": None}}} and bytes(s.turns[0].audio) == PCM
    )


def test_detailed_format_and_no_match(emu: AzureEmulator) -> None:
    ws = connect(emu, language="en-US", format="detailed")
    ws.send(config())
    pcm = noise_pcm(600, seed=3)
    phrase = send_turn(ws, uuid.uuid4().hex, pcm)[-2][2]
    units = turn_words(pcm)
    (best,) = phrase["NBest"]
    assert best["Confidence"] == 0.9 and best["Display"] == text_of([w for _, w in units])
    assert [(w["Word"], w["Offset"]) for w in best["Words"]] == [
        (w.strip(), k * 200_000) for k, w in units
    ]
    silent = send_turn(ws, uuid.uuid4().hex, bytes(6400))  # digital silence: no words
    assert [p for p, _, _ in silent] == [
        "turn.start",
        "speech.endDetected",
        "speech.phrase",
        "turn.end",
    ]
    assert silent[2][2]["RecognitionStatus"] == "NoMatch" and "DisplayText" not in silent[2][2]
    ws.close()


def test_translation_into_two_languages_with_synthesis(
    make_emu: Callable[..., AzureEmulator],
) -> None:
    emu = make_emu(synthesis_chunk=1000)
    query = {"features": "texttospeech", "from": "en-US", "to": ["de", "fr"], "voice": "de-DE-X"}
    ws = connect(emu, "translation", **query)
    ws.send(config())
    pcm = noise_pcm(800, seed=5)
    rid = uuid.uuid4().hex
    got = send_turn(ws, rid, pcm)
    words = [w for _, w in turn_words(pcm)]
    hypotheses = [b for p, _, b in got if p == "translation.hypothesis"]
    assert len(hypotheses) == len(words)
    assert hypotheses[-1]["Translation"]["Translations"][1] == {
        "Language": "fr",
        "Text": "".join(translation_of(w, "fr") for w in words),
    }
    (phrase,) = [b for p, _, b in got if p == "translation.phrase"]
    assert phrase["Text"] == text_of(words)
    assert phrase["Translation"] == {
        "TranslationStatus": "Success",
        "Translations": [
            {"Language": lang, "Text": "".join(translation_of(w, lang) for w in words)}
            for lang in ("de", "fr")
        ],
    }
    chunks = [b for p, _, b in got if p == "translation.synthesis"]
    assert len(chunks) > 1 and all(len(c) <= 1000 for c in chunks)
    assert b"".join(chunks) == synthesis_audio(words, "de")
    paths = [p for p, _, _ in got]
    assert paths[-3:] == ["translation.synthesis", "translation.synthesis.end", "turn.end"]
    ws.send(telemetry(rid))
    ws.close()
    (s,) = emu.sessions
    assert emu.wait_for(lambda: s.done, 3)
    assert s.violations == [] and bytes(s.turns[0].audio) == pcm


# -- strictness ---------------------------------------------------------------------------

A, B = "a" * 32, "b" * 32
PCM = noise_pcm(100, seed=9)


@pytest.mark.parametrize(
    ("steps", "code", "complaint"),
    [
        ([context(A)], 1002, "before speech.config"),
        ([audio(A, riff_header())], 1002, "before speech.config"),
        ([config(), config()], 1002, "once, first"),
        ([text("speech.config", {})], 1002, "needs a Content-Type"),
        ([config(), text("", {}, A)], 1002, "without Path"),
        ([config(), text("speech.context", {})], 1002, "X-RequestId"),
        ([config(), text("speech.context", {}, "A" * 32)], 1002, "X-RequestId"),
        ([config(), text("speech.context", {}, A, **{"X-Timestamp": ""})], 1002, "X-Timestamp"),
        ([config(), "Path:speech.context\r\nno blank line"], 1002, "blank line"),
        ([config(), text("speech.context", rid=A) + "{not json"], 1007, "not JSON"),
        ([config(), text("speech.event", {}, A)], 1002, "unknown path"),
        ([config(), context(A), audio(A, PCM)], 1007, "RIFF"),
        ([config(), context(A), audio(A, riff_header(8000))], 1007, "16 kHz"),
        ([config(), b"\x01"], 1007, "header length"),
        ([config(), b"\x7f\x00Path:audio\r\n"], 1007, "out of range"),
        ([config(), audio(A, b"", path="speech.context")], 1007, "must be audio"),
        ([config(), audio(A, riff_header() + PCM[:3])], 1007, "whole s16le"),
        ([config(), audio(A, riff_header()), audio(A, bytes(9000))], 1007, "over 8192"),
        ([config(), context(A), context(B)], 1002, "previous one is open"),
        ([config(), telemetry(A)], 1002, "never started"),
        ([config(), context(A), telemetry(A), telemetry(A)], 1002, "got no turn.end"),
    ],
)
def test_a_bad_message_closes_the_connection(
    emu: AzureEmulator, steps: list[str | bytes], code: int, complaint: str
) -> None:
    ws = connect(emu)
    for step in steps:
        if isinstance(step, bytes):
            ws.send_binary(step)
        else:
            ws.send(step)
    _, got_code = until_closed(ws)
    assert got_code == code
    (s,) = emu.sessions
    assert emu.wait_for(lambda: s.done, 3)
    assert s.close_code == code
    assert len(s.violations) == 1 and complaint in s.violations[0]


@pytest.mark.parametrize(
    ("after", "complaint"),
    [
        (lambda rid: audio(rid, PCM), "ended turn"),
        (lambda rid: context(rid), "ended turn"),
        (telemetry, "third telemetry"),
    ],
)
def test_a_finished_turn_takes_nothing_more(
    emu: AzureEmulator, after: Callable[[str], str | bytes], complaint: str
) -> None:
    ws = connect(emu)
    ws.send(config())
    send_turn(ws, A, PCM)
    ws.send(telemetry(A))
    ws.send(telemetry(A))  # SDK 1.53 acknowledged a turn in two (azure_stt_push.jsonl)
    message = after(A)
    ws.send_binary(message) if isinstance(message, bytes) else ws.send(message)
    assert until_closed(ws)[1] == 1002
    (s,) = emu.sessions
    assert emu.wait_for(lambda: s.done, 3) and complaint in s.violations[0]


def test_a_request_id_is_never_taken_twice_even_on_another_connection(
    emu: AzureEmulator,
) -> None:
    first = connect(emu)
    first.send(config())
    send_turn(first, A, PCM)
    first.send(telemetry(A))
    first.close()
    second = connect(emu)
    second.send(config())
    second.send(context(A))
    assert until_closed(second)[1] == 1002
    assert emu.wait_for(lambda: len(emu.sessions) == 2 and emu.sessions[1].done, 3)
    assert emu.sessions[0].violations == [] and "reused" in emu.sessions[1].violations[0]


def test_no_telemetry_after_turn_end_closes_the_connection(
    make_emu: Callable[..., AzureEmulator],
) -> None:
    emu = make_emu(telemetry_timeout=0.3)
    ws = connect(emu)
    ws.send(config())
    send_turn(ws, A, PCM)
    started = time.monotonic()
    assert until_closed(ws)[1] == 1002
    assert 0.25 < time.monotonic() - started < 2.0
    assert emu.sessions[0].violations == ["no telemetry after turn.end"]


def test_one_telemetry_inside_a_long_turn_is_taken_but_is_not_its_acknowledgement(
    make_emu: Callable[..., AzureEmulator],
) -> None:
    """SDK 1.53 sends its Metrics for the open turn about a minute into a long one."""
    emu = make_emu(telemetry_timeout=0.3)
    ws = connect(emu)
    ws.send(config())
    ws.send(context(A))
    ws.send_binary(audio(A, riff_header()))
    ws.send_binary(audio(A, PCM[:3200]))
    ws.send(telemetry(A))  # mid-turn: no close
    for i in range(3200, len(PCM), 3200):
        ws.send_binary(audio(A, PCM[i : i + 3200]))
    ws.send_binary(audio(A, b""))
    got = []
    while not got or got[-1][0] != "turn.end":
        got.append(parse(ws.recv()))
    (s,) = emu.sessions
    assert s.turns[0].telemetry_mid_turn == 1 and s.turns[0].telemetry is None
    # the turn's end still wants its own telemetry
    assert until_closed(ws)[1] == 1002
    assert s.violations == ["no telemetry after turn.end"]


# -- limits and faults --------------------------------------------------------------------


def test_the_connection_limit_closes_even_a_busy_connection(
    make_emu: Callable[..., AzureEmulator],
) -> None:
    emu = make_emu(connection_limit=0.6)
    ws = connect(emu)
    ws.send(config())
    ws.send_binary(audio(A, riff_header()))
    stop = threading.Event()

    def feed() -> None:  # keep audio flowing, so the idle limit never applies
        while not stop.wait(0.05):
            try:
                ws.send_binary(audio(A, PCM[:3200]))
            except (websocket.WebSocketException, OSError):
                return

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        started = time.monotonic()
        assert until_closed(ws)[1] == 1000
        assert 0.5 < time.monotonic() - started < 2.0
    finally:
        stop.set()
        feeder.join()
    (s,) = emu.sessions
    assert s.limit == "connection" and s.violations == [] and s.audio_bytes > 3200


def test_the_idle_limit_closes_a_quiet_connection(make_emu: Callable[..., AzureEmulator]) -> None:
    emu = make_emu(idle_timeout=0.3, limit_close_code=1001)
    ws = connect(emu)
    ws.send(config())
    started = time.monotonic()
    assert until_closed(ws)[1] == 1001
    assert 0.25 < time.monotonic() - started < 2.0
    assert emu.sessions[0].limit == "idle"


def test_fault_plans(emu: AzureEmulator) -> None:
    emu.plan(SessionPlan(refuse=401))
    emu.plan(SessionPlan(close_after_ms=200, close_code=1011))
    emu.plan(SessionPlan(drop_after_ms=200))
    emu.plan(SessionPlan(status_error=True))
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(emu)
    assert info.value.status_code == 401
    pcm = noise_pcm(400, seed=7)
    for expected in (1011, None):
        ws = connect(emu)
        ws.send(config())
        ws.send_binary(audio(A if expected else B, riff_header()))
        for i in range(0, len(pcm), 3200):
            try:
                ws.send_binary(audio(A if expected else B, pcm[i : i + 3200]))
            except (websocket.WebSocketException, OSError):
                break
        assert until_closed(ws)[1] == expected
    ws = connect(emu)
    ws.send(config())
    rid = uuid.uuid4().hex
    ws.send(context(rid))
    ws.send_binary(audio(rid, riff_header() + pcm[:6400]))
    ws.send_binary(audio(rid, b""))
    messages, code = until_closed(ws)
    assert code == 1000
    assert parse(messages[-1])[2]["RecognitionStatus"] == "Error"
    assert [s.fault for s in emu.sessions] == ["close", "drop", "status_error"]
    assert emu.sessions[1].close_code is None  # a RST, no close frame
    assert emu.connections == 4
    ok = connect(emu)  # the plans are used up: the next connection is normal
    ok.close()


def test_close_ends_live_connections_and_joins_every_thread(
    tmp_path: Path, tls_material: TlsMaterial
) -> None:
    before = set(threading.enumerate())
    emu = AzureEmulator(tmp_path, api_key=KEY, tls=tls_material)
    ws = connect(emu)
    ws.send(config())
    assert emu.wait_for(lambda: bool(emu.sessions) and emu.sessions[0].config is not None, 3)
    emu.close()
    assert until_closed(ws)[1] == 1001
    assert [t for t in threading.enumerate() if t not in before and t.is_alive()] == []
    emu.close()  # idempotent


# -- the token endpoint and keyless containers ------------------------------------------------


def post_token(
    emu: AzureEmulator, key: str | None = KEY, method: str = "POST"
) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of a token request as the SDK makes it (http.client)."""
    context = ssl.create_default_context(cafile=emu.ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", emu.port, context=context, timeout=3)
    try:
        headers = {"Content-Length": "0"}
        if key is not None:
            headers["Ocp-Apim-Subscription-Key"] = key
        conn.request(method, "/sts/v1.0/issueToken", headers=headers)
        response = conn.getresponse()
        body = response.read().decode()
        return response.status, body, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def connect_bearer(emu: AzureEmulator, token: str) -> websocket.WebSocket:
    return websocket.create_connection(
        emu.url_for("conversation", language="en-US"),
        header=[f"Authorization: Bearer {token}", f"X-ConnectionId: {uuid.uuid4().hex}"],
        sslopt={"ca_certs": emu.ca_file},
        suppress_origin=True,
        timeout=3,
    )


def test_a_token_is_issued_for_the_key_and_opens_the_upgrade(emu: AzureEmulator) -> None:
    status, token, _ = post_token(emu)
    status2, token2, _ = post_token(emu)
    assert (status, status2) == (200, 200) and token != token2  # fresh every time
    assert emu.issued_tokens == [token, token2]
    fetch = emu.token_fetches[0]
    assert (fetch.method, fetch.status, fetch.token) == ("POST", 200, token)
    assert ("Ocp-Apim-Subscription-Key", KEY) in fetch.headers
    ws = connect_bearer(emu, token)
    ws.close()
    assert emu.wait_for(lambda: len(emu.sessions) == 1, 3)
    assert emu.bearer_of(emu.sessions[0]) == token
    assert emu.connections == 1  # token requests are not upgrades


@pytest.mark.parametrize(
    ("key", "method", "status"), [("wrong", "POST", 401), (None, "POST", 401), (KEY, "GET", 405)]
)
def test_the_token_endpoint_refuses_a_wrong_key_or_method(
    emu: AzureEmulator, key: str | None, method: str, status: int
) -> None:
    assert post_token(emu, key, method)[0] == status
    assert emu.issued_tokens == [] and [f.status for f in emu.token_fetches] == [status]


def test_the_upgrade_refuses_an_unknown_revoked_or_expired_token(
    make_emu: Callable[..., AzureEmulator],
) -> None:
    emu = make_emu(token_lifetime=0.3)
    _, old, _ = post_token(emu)
    connect_bearer(emu, old).close()  # valid while young
    emu.revoke_tokens()
    _, expiring, _ = post_token(emu)  # issued after the revocation: still good
    connect_bearer(emu, expiring).close()
    time.sleep(0.35)
    for token in ("never-issued", old, expiring, KEY):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            connect_bearer(emu, token)
        assert info.value.status_code == 401
    assert emu.auth_refusals == [
        Refusal("unknown_token", "never-issued"),
        Refusal("revoked_token", old),
        Refusal("expired_token", expiring),
        Refusal("unknown_token", KEY),  # the key is no bearer token
    ]
    assert len(emu.sessions) == 2


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_token_plans_set_the_status_and_the_framing(emu: AzureEmulator, framing: str) -> None:
    emu.plan_token(TokenPlan(framing=framing))  # type: ignore[arg-type]
    emu.plan_token(TokenPlan(status=503))
    status, token, headers = post_token(emu)
    assert status == 200 and token == emu.issued_tokens[0]
    assert ("content-length" in headers) == (framing == "length")
    assert (headers.get("transfer-encoding") == "chunked") == (framing == "chunked")
    assert post_token(emu)[0] == 503  # whatever the key
    assert post_token(emu)[0] == 200  # the plans are used up
    assert [f.status for f in emu.token_fetches] == [200, 503, 200]


def test_a_keyless_container_takes_connections_with_no_auth_at_all(
    make_emu: Callable[..., AzureEmulator],
) -> None:
    emu = make_emu(api_key=None)
    ws = websocket.create_connection(
        emu.url_for("conversation", language="en-US"),
        header=[f"X-ConnectionId: {uuid.uuid4().hex}"],
        sslopt={"ca_certs": emu.ca_file},
        suppress_origin=True,
        timeout=3,
    )
    ws.send(config())
    rid = uuid.uuid4().hex
    got = send_turn(ws, rid, noise_pcm(400, seed=9))
    ws.send(telemetry(rid))
    ws.close()
    assert got[-1][0] == "turn.end"
    assert post_token(emu)[0] == 404  # a container has no token service
    assert emu.wait_for(lambda: len(emu.sessions) == 1 and emu.sessions[0].done, 3)
    assert emu.sessions[0].violations == [] and emu.auth_refusals == []
