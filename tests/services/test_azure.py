"""The Azure Speech codec against the official SDK's recorded traffic and the notes (§3a)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import struct
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecap.captions.events import SynthesizedAudio
from edgecap.captions.tokens import Token, TokenUpdate
from edgecap.config.schema import AzureConfig
from edgecap.config.secrets import SecretValue
from edgecap.services.azure import RIFF_HEADER, AzureCodec
from edgecap.services.codec import (
    Codec,
    Outgoing,
    ProtocolError,
    Retry,
    ServiceError,
    ServiceNotice,
)
from tests.link.traces import handshake_headers, load_trace, of_kind

TRACE_KEY = "DUMMY_AZURE_KEY"
KEY = SecretValue("test", TRACE_KEY)
HEX32 = re.compile(r"[0-9a-f]{32}")

STT = AzureConfig(region="westeurope")
DETAILED = replace(STT, recognition_mode="interactive", format="detailed")
# The detailed trace was recorded with profanity=raw ([daemon] profanity = off).
PROFANITY = {DETAILED: "off"}
TRANSLATION = AzureConfig(
    region="westeurope", mode="translation", targets=("de", "fr"), voice="de-DE-KatjaNeural"
)


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class Ids:
    """Hands out the given request ids in order (the SDK's, to compare bytes)."""

    def __init__(self, *ids: str) -> None:
        self.ids = list(ids)

    def __call__(self) -> str:
        return self.ids.pop(0)


def codec(
    cfg: AzureConfig = STT,
    *,
    stamp: str = "2026-11-22T03:30:41.589Z",
    ids: Any = None,
    profanity: str | None = None,
):
    kw: dict[str, Any] = {
        "clock": lambda: epoch(stamp),
        "profanity": profanity or PROFANITY.get(cfg, "mask"),
    }
    if ids is not None:
        kw["new_id"] = ids
    return AzureCodec(cfg, **kw)


def split_text(payload: str | bytes) -> tuple[str, dict[str, Any]]:
    assert isinstance(payload, str)
    head, _, body = payload.partition("\r\n\r\n")
    return head + "\r\n\r\n", json.loads(body)


def split_binary(payload: str | bytes) -> tuple[str, bytes]:
    assert isinstance(payload, bytes)
    (size,) = struct.unpack(">H", payload[:2])
    return payload[2 : 2 + size].decode("ascii"), payload[2 + size :]


def server_text(path: str, body: Any, request_id: str | None, *, spaced: bool = True) -> str:
    sep = ": " if spaced else ":"
    head = [f"Path{sep}{path}"]
    if request_id is not None:
        head.append(f"X-RequestId{sep}{request_id}")
    head.append(f"Content-Type{sep}application/json; charset=utf-8")
    text = "" if body == {} and path == "turn.end" else json.dumps(body)
    return "\r\n".join(head) + "\r\n\r\n" + text


def server_binary(path: str, request_id: str, payload: bytes) -> bytes:
    head = f"Path: {path}\r\nX-RequestId: {request_id}\r\nContent-Type: audio/x-wav\r\n"
    return struct.pack(">H", len(head)) + head.encode() + payload


def client(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return of_kind(records, kind)


# -- attributes -----------------------------------------------------------------------------


def test_codec_attributes() -> None:
    c: Codec = AzureCodec(replace(STT, session_max=300.0), replay_speed=2.0)
    assert (c.name, c.keepalive_interval, c.session_max, c.replay_speed) == (
        "azure",
        None,
        300.0,
        2.0,
    )
    assert c.keepalive() is None and c.end_of_stream() == []
    assert c.audio_chunk_ms == 100
    assert not c.sends_finished and 0 < c.finish_grace <= 2
    assert c.slow_retry_min >= 60  # 429: 1-2-4-4 minutes


# -- the URL for region, endpoint and host --------------------------------------------------


@pytest.mark.parametrize(
    ("trace", "cfg"),
    [
        ("azure_stt_simple.jsonl", STT),
        ("azure_stt_push.jsonl", STT),
        ("azure_stt_detailed.jsonl", DETAILED),
        ("azure_translation_v1.jsonl", TRANSLATION),
    ],
)
def test_path_and_query_are_the_sdk_ones(trace: str, cfg: AzureConfig) -> None:
    (hs,) = of_kind(load_trace(trace), "handshake")
    url = urlsplit(codec(cfg).handshake(KEY).url)
    assert f"{url.path}?{url.query}" == hs["path"]


def test_region_urls() -> None:
    assert codec(STT).url() == (
        "wss://westeurope.stt.speech.microsoft.com/speech/recognition/conversation/"
        "cognitiveservices/v1?language=en-US&profanity=masked"
    )
    dictation = replace(STT, recognition_mode="dictation", language="de-DE")
    assert codec(dictation, profanity="remove").url() == (
        "wss://westeurope.stt.speech.microsoft.com/speech/recognition/dictation/"
        "cognitiveservices/v1?language=de-DE&profanity=removed"
    )
    no_voice = replace(TRANSLATION, voice="", targets=("fr", "de", "pt-BR"))
    assert codec(no_voice).url() == (
        "wss://westeurope.s2s.speech.microsoft.com/speech/translation/cognitiveservices/v1"
        "?from=en-US&to=fr&to=de&to=pt-BR"
    )


def test_endpoint_is_used_as_given_with_the_query_added() -> None:
    cfg = replace(STT, region="", endpoint="wss://x.example.test/speech/custom/v1?cid=42")
    url = urlsplit(codec(cfg).url())
    assert (url.scheme, url.netloc, url.path) == ("wss", "x.example.test", "/speech/custom/v1")
    assert parse_qsl(url.query) == [("cid", "42"), ("language", "en-US"), ("profanity", "masked")]


@pytest.mark.parametrize("host", ["ws://10.0.0.5:5000", "ws://10.0.0.5:5000/"])
def test_host_gets_the_modes_path(host: str) -> None:
    assert codec(replace(STT, region="", host=host)).url() == (
        "ws://10.0.0.5:5000/speech/recognition/conversation/cognitiveservices/v1"
        "?language=en-US&profanity=masked"
    )
    assert (
        codec(replace(TRANSLATION, region="", host=host))
        .url()
        .startswith("ws://10.0.0.5:5000/speech/translation/cognitiveservices/v1?")
    )


def test_no_place_to_connect_is_an_error() -> None:
    with pytest.raises(ValueError, match="region, endpoint or host"):
        codec(AzureConfig()).handshake(KEY)


def test_handshake_headers_are_the_sdks_without_a_subprotocol() -> None:
    sdk = handshake_headers(load_trace("azure_stt_simple.jsonl"))
    c = codec()
    hs = c.handshake(KEY)
    headers = dict(h.split(": ", 1) for h in hs.headers)
    assert headers["Ocp-Apim-Subscription-Key"] == sdk["ocp-apim-subscription-key"]
    assert HEX32.fullmatch(headers["X-ConnectionId"])
    assert HEX32.fullmatch(sdk["x-connectionid"])
    assert hs.subprotocols == ()  # the SDK asks for USP; websocket-client fails if not echoed
    assert TRACE_KEY not in repr(hs)
    again = dict(h.split(": ", 1) for h in c.handshake(KEY).headers)
    assert again["X-ConnectionId"] != headers["X-ConnectionId"]


@pytest.mark.parametrize("bad", [None, SecretValue("test", " "), SecretValue("t", "a\r\nb")])
def test_handshake_refuses_a_missing_or_unprintable_key(bad: SecretValue | None) -> None:
    with pytest.raises(ValueError):
        codec().handshake(bad)


TOKEN = SecretValue("the token service", "eyJhbGciOi.J9.sig-_")


def _headers(hs: Any) -> dict[str, str]:
    return dict(h.split(": ", 1) for h in hs.headers)


def test_auth_key_needs_a_key_and_no_token() -> None:
    c = codec()
    assert c.needs_key and c.token_request(KEY) is None
    assert set(_headers(c.handshake(KEY, None))) == {"Ocp-Apim-Subscription-Key", "X-ConnectionId"}


def test_auth_token_exchanges_the_key_at_the_regions_issue_token_endpoint() -> None:
    c = codec(replace(STT, auth="token"))
    request = c.token_request(KEY)
    assert c.needs_key and request is not None
    assert request.url == "https://westeurope.api.cognitive.microsoft.com/sts/v1.0/issueToken"
    assert request.headers == (f"Ocp-Apim-Subscription-Key: {TRACE_KEY}",)
    assert (request.lifetime, request.renew_before) == (600.0, 120.0)
    assert TRACE_KEY not in repr(request)
    own = replace(STT, auth="token", token_url="https://sts.example.test/sts/v1.0/issueToken")
    assert codec(own).token_request(KEY).url == own.token_url  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        codec(replace(STT, auth="token")).token_request(None)


def test_auth_token_sends_the_bearer_token_alone() -> None:
    hs = codec(replace(STT, auth="token")).handshake(KEY, TOKEN)
    headers = _headers(hs)
    assert set(headers) == {"Authorization", "X-ConnectionId"}
    assert headers["Authorization"] == f"Bearer {TOKEN.reveal()}"
    assert HEX32.fullmatch(headers["X-ConnectionId"])
    assert TOKEN.reveal() not in repr(hs) and TRACE_KEY not in repr(hs)


@pytest.mark.parametrize(
    "bad", [None, SecretValue("t", ""), SecretValue("t", "a b"), SecretValue("t", "a\r\nX: 1")]
)
def test_auth_token_refuses_a_missing_or_unprintable_token(bad: SecretValue | None) -> None:
    with pytest.raises(ValueError):
        codec(replace(STT, auth="token")).handshake(KEY, bad)


def test_auth_none_needs_no_key_and_sends_no_auth_header() -> None:
    container = AzureConfig(host="ws://10.0.0.5:5000", auth="none")
    c = codec(container)
    assert not c.needs_key and c.token_request(None) is None
    assert set(_headers(c.handshake(None))) == {"X-ConnectionId"}
    assert set(_headers(c.handshake(KEY))) == {"X-ConnectionId"}  # a key is not sent either


# -- client → service framing against the SDK trace ------------------------------------------


def test_speech_config_is_the_sdk_framing() -> None:
    records = load_trace("azure_stt_push.jsonl")  # push stream: "Stream", as our input
    sdk = client(records, "client_text")[0]
    (out,) = codec(stamp=sdk["headers"]["X-Timestamp"]).start()
    assert out.what == "start"
    head, body = split_text(out.payload)
    want_head = "".join(f"{k}:{v}\r\n" for k, v in sdk["headers"].items()) + "\r\n"
    assert head == want_head
    assert body["context"]["audio"] == sdk["body"]["context"]["audio"]
    assert list(body["context"]) == list(sdk["body"]["context"])
    assert list(body["context"]["system"]) == list(sdk["body"]["context"]["system"])
    assert body["context"]["system"]["lang"] == "Python"


@pytest.mark.parametrize(
    ("trace", "cfg"),
    [
        ("azure_stt_simple.jsonl", STT),
        ("azure_stt_detailed.jsonl", DETAILED),
        ("azure_translation_v1.jsonl", TRANSLATION),
    ],
)
def test_a_turn_begins_as_the_sdks(trace: str, cfg: AzureConfig) -> None:
    records = load_trace(trace)
    context = client(records, "client_text")[1]
    riff = client(records, "client_binary")[0]
    request_id = context["headers"]["X-RequestId"]
    c = codec(cfg, stamp=context["headers"]["X-Timestamp"], ids=Ids("c" * 32, request_id))
    c.handshake(KEY)
    c.start()
    first, header = c.begin_turn()
    head, body = split_text(first.payload)
    if context.get("raw_head"):
        assert head == context["raw_head"]
    assert head == "".join(f"{k}:{v}\r\n" for k, v in context["headers"].items()) + "\r\n"
    assert body == context["body"]
    assert list(body) == list(context["body"])  # the SDK's key order
    raw, payload = split_binary(header.payload)
    assert raw == "".join(f"{k}:{v}\r\n" for k, v in riff["headers"].items())
    assert len(raw) == riff["header_len"] == 136
    assert payload == RIFF_HEADER == bytes.fromhex(riff["payload_head"])


def test_audio_and_end_of_turn_are_the_sdk_framing() -> None:
    records = load_trace("azure_stt_simple.jsonl")
    audio = next(r for r in client(records, "client_binary") if r["payload_len"] == 3200)
    end = next(r for r in client(records, "client_binary") if r["payload_len"] == 0)
    request_id = audio["headers"]["X-RequestId"]
    c = codec(stamp=audio["headers"]["X-Timestamp"], ids=Ids("c" * 32, request_id))
    c.handshake(KEY)
    c.begin_turn()
    (out,) = c.audio(b"\x01\x02" * 1600)
    raw, payload = split_binary(out.payload)
    assert raw == audio["raw_header"]
    assert len(raw) == audio["header_len"] == 110
    assert payload == b"\x01\x02" * 1600
    (stop,) = c.end_turn()
    raw, payload = split_binary(stop.payload)
    assert (len(raw), payload) == (end["header_len"], b"")
    assert "Path:audio\r\n" in raw and f"X-RequestId:{request_id}\r\n" in raw


def test_a_long_chunk_goes_in_messages_of_at_most_8192_bytes() -> None:
    c = codec()
    c.begin_turn()
    outs = c.audio(b"\x00\x01" * 5000)
    bodies = [split_binary(o.payload)[1] for o in outs]
    assert [len(b) for b in bodies] == [8192, 1808]
    assert b"".join(bodies) == b"\x00\x01" * 5000


@pytest.mark.parametrize("pcm", [b"", b"\x00\x01\x02"])
def test_audio_refuses_empty_or_partial_samples(pcm: bytes) -> None:
    c = codec()
    c.begin_turn()
    with pytest.raises(ValueError):
        c.audio(pcm)


def test_turn_calls_out_of_order_are_refused() -> None:
    c = codec()
    with pytest.raises(ValueError):
        c.audio(b"\x00\x00")
    with pytest.raises(ValueError):
        c.end_turn()
    c.begin_turn()
    with pytest.raises(ValueError):
        c.begin_turn()


def test_every_turn_has_a_new_request_id_and_stream_id() -> None:
    c = codec()
    seen = []
    for _ in range(3):
        context, riff = c.begin_turn()
        head = split_binary(riff.payload)[0]
        request_id = re.search(r"X-RequestId:(\w+)", head).group(1)  # type: ignore[union-attr]
        assert HEX32.fullmatch(request_id)
        assert f"X-RequestId:{request_id}\r\n" in str(context.payload)
        seen.append((request_id, re.search(r"X-StreamId:(\d+)", head).group(1)))  # type: ignore[union-attr]
        c.audio(b"\x00\x00" * 160)
        c.end_turn()
    assert len({r for r, _ in seen}) == 3
    assert [s for _, s in seen] == ["1", "2", "3"]
    c.reset()
    assert "X-StreamId:1\r\n" in split_binary(c.begin_turn()[1].payload)[0]


# -- a whole session, replayed from the trace ------------------------------------------------


def replay(trace: str, cfg: AzureConfig) -> tuple[list[Outgoing], list[Any], AzureCodec]:
    """Drive the codec through the SDK's session: its sends become our calls, the server's
    messages go to parse (their X-RequestId is the turn they belong to)."""
    records = load_trace(trace)
    c = codec(cfg)
    c.handshake(KEY)
    ours: list[Outgoing] = [*c.start()]
    events: list[Any] = []
    request_id = ""
    for r in records:
        if r["kind"] == "client_text" and r["headers"]["Path"] == "speech.context":
            turn = c.begin_turn()
            request_id = re.search(r"X-RequestId:(\w+)", str(turn[0].payload)).group(1)  # type: ignore[union-attr]
            ours += turn
        elif r["kind"] == "client_binary" and r["payload_len"] == 3200:
            ours += c.audio(b"\x00\x01" * 1600)
        elif r["kind"] == "client_binary" and r["payload_len"] == 0:
            ours += c.end_turn()
        elif r["kind"] == "server_sent":
            if "binary_len" in r:
                parsed = c.parse(server_binary(r["path"], request_id, b"RIFF" + b"\0" * 3240))
            else:
                parsed = c.parse(server_text(r["path"], r["body"], request_id))
            ours += parsed.replies
            events += parsed.events
    return ours, events, c


def shape(out: Outgoing) -> tuple[str, str, tuple[str, ...], int]:
    if isinstance(out.payload, bytes):
        raw, payload = split_binary(out.payload)
        size = len(payload)
    else:
        raw = out.payload.split("\r\n\r\n", 1)[0]
        size = -1
    names = tuple(line.split(":", 1)[0] for line in raw.split("\r\n") if line)
    path = re.search(r"Path:([\w.]+)", raw).group(1)  # type: ignore[union-attr]
    return ("text" if size < 0 else "binary", path, names, size)


def sdk_shape(r: dict[str, Any]) -> tuple[str, str, tuple[str, ...], int]:
    if r["kind"] == "client_text":
        return ("text", r["headers"]["Path"], tuple(r["headers"]), -1)
    return ("binary", "audio", tuple(r["headers"]), r["payload_len"])


@pytest.mark.parametrize(
    ("trace", "cfg"),
    [
        ("azure_stt_simple.jsonl", STT),
        ("azure_stt_push.jsonl", STT),
        ("azure_translation_v1.jsonl", TRANSLATION),
    ],
)
def test_a_session_is_the_sdks_frame_for_frame(trace: str, cfg: AzureConfig) -> None:
    """Same messages, same header names in the same order, same payload sizes. The SDK sends
    its connection metrics as a telemetry message of their own; we put them in the turn's."""
    ours, _, _ = replay(trace, cfg)
    records = load_trace(trace)
    sdk = [
        sdk_shape(r)
        for r in records
        if r["kind"] in ("client_text", "client_binary")
        and not (
            r["kind"] == "client_text"
            and "ReceivedMessages" not in r["body"]
            and r["headers"]["Path"] == "telemetry"
        )
    ]
    assert [shape(o) for o in ours] == sdk


def test_telemetry_answers_every_turn_end() -> None:
    ours, events, _ = replay("azure_stt_simple.jsonl", STT)
    turns = [split_text(o.payload)[0] for o in ours if o.what == "turn"]
    telemetry = [o for o in ours if o.what == "telemetry"]
    assert len(telemetry) == len(turns) == 2
    finalized = [e for e in events if isinstance(e, TokenUpdate) and e.finalized]
    assert len(finalized) == 2
    for context_head, reply in zip(turns, telemetry, strict=True):
        head, body = split_text(reply.payload)
        request_id = re.search(r"X-RequestId:(\w+)", context_head).group(1)  # type: ignore[union-attr]
        assert head.endswith(
            "Path:telemetry\r\nContent-Type:application/json; charset=utf-8\r\n"
            f"X-RequestId:{request_id}\r\n\r\n"
        )
        received = [next(iter(m)) for m in body["ReceivedMessages"]]
        assert {"turn.start", "speech.phrase", "turn.end"} <= set(received)
    first = split_text(telemetry[0].payload)[1]["Metrics"]
    assert first[0]["Name"] == "Connection" and HEX32.fullmatch(first[0]["Id"])
    assert split_text(telemetry[1].payload)[1]["Metrics"] == []  # once per connection


def test_the_next_turn_continues_from_the_service_tag() -> None:
    ours, _, _ = replay("azure_stt_simple.jsonl", STT)
    contexts = [split_text(o.payload)[1] for o in ours if o.what == "turn"]
    sdk = [
        r["body"]
        for r in client(load_trace("azure_stt_simple.jsonl"), "client_text")
        if r["headers"]["Path"] == "speech.context"
    ]
    assert "continuation" not in contexts[0]
    cont = contexts[1]["continuation"]
    assert cont["previousServiceTag"] == sdk[1]["continuation"]["previousServiceTag"]
    # where the turn's audio begins in the session: 30 chunks of 100 ms, in ticks
    assert cont["audio"] == {"streams": {"1": {"offset": "30000000"}}}
    assert list(contexts[1]) == list(sdk[1])


# -- service → client ------------------------------------------------------------------------

RID = "0123456789abcdef0123456789abcdef"


def open_turn(cfg: AzureConfig = STT, audio_ms: int = 0) -> AzureCodec:
    """A codec in a turn whose request id is RID, after ``audio_ms`` of earlier turns."""
    c = codec(cfg, ids=Ids("b" * 32, RID))
    c.handshake(KEY)
    if audio_ms:
        c._new_id = Ids("e" * 32, RID)  # earlier turn, then ours
        c.begin_turn()
        c.audio(b"\x00\x00" * (audio_ms * 16))
        c.end_turn()
        c.parse(server_text("turn.end", {}, "e" * 32))
    c.begin_turn()
    return c


def next_turn(c: AzureCodec) -> None:
    """The trace's next turn (at session audio 0 again: the trace's audio is not sent)."""
    c._new_id = Ids(RID)  # answered, so the id may come again here
    c.begin_turn()


def parse(c: AzureCodec, path: str, body: Any, *, spaced: bool = True) -> list[Any]:
    parsed = c.parse(server_text(path, body, RID, spaced=spaced))
    if path != "turn.end":
        assert parsed.replies == ()
    return list(parsed.events)


@pytest.mark.parametrize("spaced", [True, False])
def test_hypothesis_is_provisional_in_session_milliseconds(spaced: bool) -> None:
    body = {"Text": "hello wor", "Offset": 5000000, "Duration": 12000000}
    assert parse(open_turn(), "speech.hypothesis", body, spaced=spaced) == [
        TokenUpdate(provisional=(Token("hello wor", False, "none", 500, 1700, language="en-US"),))
    ]
    later = parse(open_turn(audio_ms=3000), "speech.fragment", body)
    assert later[0].provisional[0].start_ms == 3500
    assert later[0].provisional[0].end_ms == 4700


def test_every_recognition_result_of_the_traces() -> None:
    expected = {
        "speech.startDetected": [],
        "speech.endDetected": [],
        "turn.start": [],
    }
    for trace, cfg in [("azure_stt_simple.jsonl", STT), ("azure_stt_detailed.jsonl", DETAILED)]:
        c = open_turn(cfg)
        for r in of_kind(load_trace(trace), "server_sent"):
            if r["path"] in expected:
                assert parse(c, r["path"], r["body"]) == []
            elif r["path"] == "speech.hypothesis":
                (update,) = parse(c, r["path"], r["body"])
                assert update.provisional[0].text == "hello wor" and not update.final
            elif r["path"] == "speech.phrase":
                (update,) = parse(c, r["path"], r["body"])
                (token,) = update.final
                assert (token.text, token.is_final, token.start_ms, token.end_ms) == (
                    "Hello world.",
                    True,
                    500,
                    2700,
                )
                assert token.confidence == (0.93 if cfg.format == "detailed" else None)
                assert update.provisional == () and update.final_audio_ms == 2700
            elif r["path"] == "turn.end":
                c.end_turn()
                parsed = c.parse(server_text("turn.end", r["body"], RID))
                assert parsed.events == (TokenUpdate(finalized=True),)
                assert len(parsed.replies) == 1
                next_turn(c)
            else:
                pytest.fail(f"unexpected path {r['path']}")


def test_nbest_display_and_confidence_win_in_detailed_format() -> None:
    body = {
        "RecognitionStatus": "Success",
        "Offset": 0,
        "Duration": 10000000,
        "DisplayText": "Hi.",
        "NBest": [{"Confidence": 0.5, "Display": "Hello."}, {"Confidence": 0.1, "Display": "X"}],
    }
    (update,) = parse(open_turn(DETAILED), "speech.phrase", body)
    assert [(t.text, t.confidence) for t in update.final] == [("Hello.", 0.5)]


@pytest.mark.parametrize(
    "status", ["NoMatch", "InitialSilenceTimeout", "BabbleTimeout", "EndOfDictation"]
)
def test_no_match_makes_no_caption(status: str) -> None:
    body = {"RecognitionStatus": status, "Offset": 10000000, "Duration": 5000000}
    update, *notes = parse(open_turn(), "speech.phrase", body)
    assert update == TokenUpdate(final_audio_ms=1500)
    # heard but not recognised (or only noise) is worth a status note; silence is not
    if status in ("NoMatch", "BabbleTimeout"):
        assert [type(n) for n in notes] == [ServiceNotice]
        assert notes[0].kind == {"NoMatch": "no_match", "BabbleTimeout": "babble_timeout"}[status]
    else:
        assert notes == []


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        ("Error", Retry.BACKOFF),
        ("TooManyRequests", Retry.SLOW),
        ("BadRequest", Retry.FATAL),
        ("Forbidden", Retry.FATAL),
    ],
)
def test_error_statuses_are_service_errors(status: str, retry: Retry) -> None:
    (error,) = parse(open_turn(), "speech.phrase", {"RecognitionStatus": status})
    assert isinstance(error, ServiceError) and error.retry is retry
    assert status in error.message


def test_the_status_error_trace_is_a_retried_service_error() -> None:
    (phrase,) = [
        r
        for r in of_kind(load_trace("azure_status_error.jsonl"), "server_sent")
        if r["path"] == "speech.phrase"
    ][:1]
    (error,) = parse(open_turn(), "speech.phrase", phrase["body"])
    assert error == ServiceError(None, "service_error", "RecognitionStatus Error", Retry.BACKOFF)


def translated(final: bool, de: str, fr: str, text: str, start: int, end: int) -> list[Token]:
    return [
        Token(text, final, "original", start, end, language="en-US"),
        Token(de, final, "translation", language="de", source_language="en-US"),
        Token(fr, final, "translation", language="fr", source_language="en-US"),
    ]


@pytest.mark.parametrize("trace", ["azure_translation.jsonl", "azure_translation_v1.jsonl"])
def test_every_translation_result_of_the_traces(trace: str) -> None:
    c = open_turn(TRANSLATION)
    seen = set()
    for r in of_kind(load_trace(trace), "server_sent"):
        path = r["path"]
        seen.add(path)
        if path == "translation.hypothesis":
            (update,) = parse(c, path, r["body"])
            end = 500 + r["body"]["Duration"] // 10000
            assert list(update.provisional) == translated(
                False, "Hallo Wel", "Bonjour le mon", "hello wor", 500, end
            )
        elif path == "translation.phrase":
            (update,) = parse(c, path, r["body"])
            assert list(update.final) == translated(
                True, "Hallo Welt.", "Bonjour le monde.", "Hello world.", 500, 2700
            )
        elif path == "translation.synthesis":
            wav = b"RIFF" + (bytes(range(256)) * 13)[:3240]  # as long as the SDK's payload
            assert len(wav) in {e.get("audio_len") for e in of_kind(load_trace(trace), "sdk_event")}
            (audio,) = c.parse(server_binary(path, RID, wav)).events
            assert audio == SynthesizedAudio("de", "audio/x-wav", wav, end=False)
        elif path == "translation.synthesis.end":
            (end_chunk,) = parse(c, path, r["body"])
            assert end_chunk == SynthesizedAudio("de", "audio/x-wav", b"", end=True)
        elif path == "turn.end":
            c.end_turn()
            parsed = c.parse(server_text(path, r["body"], RID))
            assert parsed.events == (TokenUpdate(finalized=True),)
            next_turn(c)
        else:
            assert parse(c, path, r["body"]) == []
    assert {"translation.hypothesis", "translation.phrase", "translation.synthesis"} <= seen


def test_translation_tokens_follow_the_configured_targets() -> None:
    cfg = replace(TRANSLATION, targets=("fr", "DE"), voice="")
    body = {
        "RecognitionStatus": "Success",
        "Text": "Hi.",
        "Translation": {
            "TranslationStatus": "Success",
            "Translations": [
                {"Language": "de", "Text": "Hallo."},
                {"Language": "fr", "Text": "Salut."},
            ],
        },
    }
    (update,) = parse(open_turn(cfg), "translation.phrase", body)
    assert [(t.language, t.text) for t in update.final] == [
        ("en-US", "Hi."),
        ("fr", "Salut."),
        ("DE", "Hallo."),
    ]


@pytest.mark.parametrize(
    ("wrapper", "final"), [("SpeechPhrase", True), ("SpeechHypothesis", False)]
)
def test_translation_response_is_the_phrase_or_hypothesis(wrapper: str, final: bool) -> None:
    inner: dict[str, Any] = {"Text": "Hello world.", "Offset": 5000000, "Duration": 22000000}
    if final:
        inner["RecognitionStatus"] = "Success"
    body = {
        wrapper: inner,
        "TranslationStatus": "Success",
        "Translations": [
            {"Language": "de", "Text": "Hallo Welt."},
            {"Language": "fr", "Text": "Bonjour."},
        ],
    }
    (update,) = parse(open_turn(TRANSLATION), "translation.response", body)
    tokens = update.final if final else update.provisional
    assert list(tokens) == translated(final, "Hallo Welt.", "Bonjour.", "Hello world.", 500, 2700)


def test_a_failed_translation_is_a_notice_and_the_caption_kept() -> None:
    body = {
        "RecognitionStatus": "Success",
        "Text": "Hi.",
        "Translation": {"TranslationStatus": "Error", "FailureReason": "quota"},
    }
    update, notice = parse(open_turn(TRANSLATION), "translation.phrase", body)
    assert [t.text for t in update.final] == ["Hi."]
    assert notice == ServiceNotice("translation_failed", "no translation into de, fr: Error quota")


def test_a_language_missing_from_a_final_is_a_notice() -> None:
    body = {
        "RecognitionStatus": "Success",
        "Text": "Hi.",
        "Translation": {
            "TranslationStatus": "Success",
            "Translations": [{"Language": "de", "Text": "Hallo."}],
        },
    }
    update, notice = parse(open_turn(TRANSLATION), "translation.phrase", body)
    assert [(t.text, t.language) for t in update.final] == [("Hi.", "en-US"), ("Hallo.", "de")]
    assert notice == ServiceNotice("translation_failed", "no translation into fr")
    # a hypothesis may lack a language for a while: no notice
    hyp = {"Text": "Hi", "Translation": body["Translation"]}
    assert len(parse(open_turn(TRANSLATION), "translation.hypothesis", hyp)) == 1


def test_a_failed_synthesis_still_ends_the_audio(caplog: pytest.LogCaptureFixture) -> None:
    body = {"SynthesisStatus": "Error", "FailureReason": "voice unknown"}
    with caplog.at_level(logging.WARNING):
        (end,) = parse(open_turn(TRANSLATION), "translation.synthesis.end", body)
    assert end == SynthesizedAudio("de", "audio/x-wav", b"", end=True)
    assert "voice unknown" in caplog.text


# -- malformed and unknown messages ---------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Path: speech.hypothesis\r\nX-RequestId: " + RID,  # no blank line
        "X-RequestId: " + RID + "\r\n\r\n{}",  # no Path
        "Path: speech.hypothesis\r\nX-RequestId: " + RID + "\r\n\r\n{not json",
        "Path: speech.hypothesis\r\nX-RequestId: " + RID + "\r\n\r\n[1]",
        "Path: speech.hypothesis\r\nX-RequestId: " + RID + '\r\n\r\n{"Text": 5}',
        "Path: speech.hypothesis\r\nX-RequestId: " + RID + '\r\n\r\n{"Text": "a", "Offset": -1}',
        "Path: speech.phrase\r\nX-RequestId: " + RID + '\r\n\r\n{"RecognitionStatus": "Huh"}',
        "Path: speech.phrase\r\nX-RequestId: " + RID + '\r\n\r\n{"RecognitionStatus": "Success"}',
        "Path: speech.keyword\r\nX-RequestId: " + RID + "\r\n\r\n{}",  # unknown path
        "Path: turn.end\r\nX-RequestId: " + "f" * 32 + "\r\n\r\n",  # not our request
        ": nameless\r\nPath: turn.end\r\n\r\n",
        b"\x00",
        b"\x10\x00Path: x",  # header longer than the message
        b"\x00\x05\xff\xfe\xfd\xfc\xfb",  # not ASCII
        struct.pack(">H", 12) + b"Path: turn.x",  # binary with a text path
    ],
)
def test_malformed_messages_are_protocol_errors(message: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        open_turn().parse(message)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.one_of(
        st.text(),
        st.binary(),
        st.builds(
            lambda path, body: f"Path: {path}\r\nX-RequestId: {RID}\r\n\r\n{body}",
            st.sampled_from(
                [
                    "speech.hypothesis",
                    "speech.phrase",
                    "translation.hypothesis",
                    "translation.phrase",
                    "translation.response",
                    "translation.synthesis.end",
                    "turn.start",
                    "turn.end",
                ]
            ),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(
                        st.sampled_from(
                            [
                                "Text",
                                "Offset",
                                "Duration",
                                "RecognitionStatus",
                                "NBest",
                                "Translation",
                                "Translations",
                                "Language",
                                "SpeechPhrase",
                                "SpeechHypothesis",
                                "Display",
                                "Confidence",
                                "context",
                            ]
                        ),
                        inner,
                        max_size=4,
                    )
                ),
                max_leaves=8,
            ).map(json.dumps),
        ),
    )
)
def test_parse_raises_nothing_but_protocol_errors(message: str | bytes) -> None:
    c = open_turn(TRANSLATION)
    with contextlib.suppress(ProtocolError):
        c.parse(message)


# -- refusals and closes (§3a) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (400, Retry.FATAL),
        (401, Retry.FATAL),
        (403, Retry.FATAL),
        (404, Retry.FATAL),
        (429, Retry.SLOW),
        (500, Retry.BACKOFF),
        (503, Retry.BACKOFF),
    ],
)
def test_handshake_refusals(status: int, retry: Retry) -> None:
    error = codec().handshake_refused(status)
    assert (error.code, error.retry) == (status, retry)


def test_the_401_trace_is_fatal() -> None:
    assert of_kind(load_trace("azure_reject401.jsonl"), "handshake_rejected")
    error = codec().handshake_refused(401)
    assert error.kind == "unauthenticated" and error.retry is Retry.FATAL


@pytest.mark.parametrize("code", [1002, 1007])
def test_our_bugs_are_retried_with_a_loud_error(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        error = codec().closed(code, "bad header", finished=False)
    assert error is not None and error.retry is Retry.BACKOFF and error.code == code
    assert any(r.levelno == logging.ERROR and "bug" in r.getMessage() for r in caplog.records)


def test_the_1011_trace_is_retried_with_backoff() -> None:
    codes = {r["code"] for r in of_kind(load_trace("azure_close1011.jsonl"), "server_closed")}
    assert codes == {1011}
    error = codec().closed(1011, "Internal service error (simulated)", finished=False)
    assert error is not None
    assert (error.kind, error.retry) == ("server_error", Retry.BACKOFF)
    assert "simulated" in error.message


@pytest.mark.parametrize(
    ("code", "finished", "retry"),
    [
        (1000, True, None),
        (1001, True, None),
        (None, True, None),
        (1000, False, Retry.ONCE),  # the 10-minute or idle limit: go on at once
        (None, False, Retry.BACKOFF),
        (1006, False, Retry.BACKOFF),
        (1013, False, Retry.SLOW),
        (4000, False, Retry.BACKOFF),
        (1011, True, Retry.BACKOFF),  # an error is an error even at the end
    ],
)
def test_closes(code: int | None, finished: bool, retry: Retry | None) -> None:
    error = codec().closed(code, "", finished)
    assert (error.retry if error else None) is retry


# -- the config section ---------------------------------------------------------------------


def test_default_config_has_no_problems() -> None:
    assert AzureConfig().problems() == []
    assert STT.problems() == [] and DETAILED.problems() == [] and TRANSLATION.problems() == []


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"endpoint": "wss://x.test/a"}, "endpoint"),
        ({"region": "", "endpoint": "wss://x.test/a", "host": "ws://h:1"}, "host"),
        ({"region": "West Europe"}, "region"),
        ({"targets": ()}, "targets"),
        ({"targets": ("de", "DE")}, "targets"),
        ({"voice": "it-IT-ElsaNeural"}, "voice"),
        ({"voice": "nonsense"}, "voice"),
        ({"mode": "recognition"}, "targets"),
    ],
)
def test_config_problems(changes: dict[str, Any], key: str) -> None:
    problems = replace(TRANSLATION, **changes).problems()
    assert key in [k for k, _ in problems], problems


def test_voice_only_with_translation() -> None:
    assert [k for k, _ in replace(STT, voice="de-DE-KatjaNeural").problems()] == ["voice"]


def test_voice_target_is_the_target_the_voice_speaks() -> None:
    assert TRANSLATION.voice_target() == "de"
    assert replace(TRANSLATION, targets=("fr", "de-DE")).voice_target() == "de-DE"
    assert replace(TRANSLATION, voice="").voice_target() is None


def test_the_end_chunk_has_the_format_of_the_audio_it_ends() -> None:
    c = open_turn(TRANSLATION)
    head = f"Path:translation.synthesis\r\nX-RequestId:{RID}\r\nContent-Type:audio/ogg\r\n"
    message = struct.pack(">H", len(head)) + head.encode() + b"OggS"
    assert c.parse(message).events == (SynthesizedAudio("de", "audio/ogg", b"OggS", end=False),)
    (end,) = parse(c, "translation.synthesis.end", {"Status": "Success"})  # the older name
    assert end == SynthesizedAudio("de", "audio/ogg", b"", end=True)


def test_a_message_without_request_id_belongs_to_the_open_turn() -> None:
    c = open_turn()
    parsed = c.parse(server_text("turn.start", {"context": {"serviceTag": "tag1"}}, None))
    assert parsed.events == ()
    c.end_turn()
    reply = c.parse(server_text("turn.end", {}, None)).replies[0]
    assert f"X-RequestId:{RID}\r\n" in str(reply.payload)
    c._new_id = Ids("d" * 32)
    context = split_text(c.begin_turn()[0].payload)[1]
    assert context["continuation"]["previousServiceTag"] == "tag1"


def test_translation_without_a_voice_asks_for_no_synthesis() -> None:
    c = codec(replace(TRANSLATION, voice=""))
    body = split_text(c.begin_turn()[0].payload)[1]
    assert body == {
        "translation": {
            "targetLanguages": ["de", "fr"],
            "output": {"includePassThroughResults": True},
        },
        "audio": {"streams": {"1": None}},
    }
    assert "features" not in c.url() and "voice" not in c.url()
