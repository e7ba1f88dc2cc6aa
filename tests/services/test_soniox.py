"""The Soniox codec against the official SDK's recorded traffic and the protocol notes (§1)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecap.captions.tokens import Token, TokenUpdate
from edgecap.config.schema import SonioxConfig
from edgecap.config.secrets import SecretValue
from edgecap.services.codec import (
    Codec,
    Outgoing,
    ProtocolError,
    Retry,
    ServiceError,
    ServiceEvent,
    SessionFinished,
)
from edgecap.services.soniox import SonioxCodec, error_retry
from tests.link.traces import client_texts, handshake_headers, load_trace, of_kind

KEY = SecretValue("test", "sk-TEST-7f3a9c0d1e2b-KEY")
TRACE_KEY = "DUMMY_SONIOX_KEY"
SDK_210_TRACES = ["soniox_happy.jsonl", "soniox_error401.jsonl", "soniox_error503.jsonl"]
ALL_TRACES = [*SDK_210_TRACES, "soniox_old_sdk.jsonl"]

# The config the SDK traces were recorded with.
TRACE_CFG = SonioxConfig(
    model="stt-rt-v3",
    language_hints=("en", "es"),
    context_general=(("domain", "demo"),),
    context_terms=("Soniox",),
    translation_terms=(("hello", "hola"),),
    diarization=True,
    language_identification=True,
    endpoint_detection=True,
    translation="two_way",
    language_a="en",
    language_b="es",
)


def codec(cfg: SonioxConfig = TRACE_CFG, **kw: Any) -> SonioxCodec:
    return SonioxCodec(cfg, **kw)


def start_text(cfg: SonioxConfig, **kw: Any) -> str:
    (msg,) = codec(cfg, **kw).start()
    assert msg.what == "start"
    assert isinstance(msg.payload, str)
    return msg.payload


def start_json(cfg: SonioxConfig, **kw: Any) -> dict[str, Any]:
    return json.loads(start_text(cfg, **kw))


def events_of(c: SonioxCodec, message: str | bytes) -> list[ServiceEvent]:
    """The events of one message; Soniox never asks for a reply."""
    parsed = c.parse(message)
    assert parsed.replies == ()
    return list(parsed.events)


def parse_one(message: str) -> list[ServiceEvent]:
    return events_of(codec(), message)


def result(*tokens: dict[str, Any], **top: Any) -> str:
    return json.dumps({"tokens": list(tokens), **top})


# -- the codec's constants ----------------------------------------------------------------


def test_codec_attributes_follow_config() -> None:
    cfg = replace(TRACE_CFG, keepalive=7.5, session_max=3600.0)
    c: Codec = SonioxCodec(cfg, replay_speed=2.0)  # also a static check of the protocol
    assert (c.name, c.keepalive_interval, c.session_max) == ("soniox", 7.5, 3600.0)
    assert c.slow_retry_min >= 2.0
    assert c.audio_chunk_ms == 100
    assert c.replay_speed == 2.0
    assert SonioxCodec(cfg).replay_speed == 1.5
    assert c.sends_finished  # the end of audio is answered with finished: true


# -- client → service, against the SDK 2.10 trace ----------------------------------------


@pytest.mark.parametrize("trace", SDK_210_TRACES)
def test_start_message_is_the_sdk_bytes(trace: str) -> None:
    records = load_trace(trace)
    first_text = client_texts(records)[0]
    assert start_text(TRACE_CFG) == first_text


def test_start_message_is_the_old_sdk_config_without_its_api_key() -> None:
    old = json.loads(client_texts(load_trace("soniox_old_sdk.jsonl"))[0])
    assert old.pop("api_key") == TRACE_KEY  # 2.9 put the key in the config…
    assert start_json(TRACE_CFG) == old  # …we send the same config without it
    assert list(start_json(TRACE_CFG)) == list(old)


def test_handshake_is_the_sdk_bearer_header() -> None:
    records = load_trace("soniox_happy.jsonl")
    sdk = handshake_headers(records)
    hs = codec().handshake(SecretValue("test", TRACE_KEY))
    assert hs.headers == (f"Authorization: {sdk['authorization']}",)
    (handshake,) = of_kind(records, "handshake")
    url = urlsplit(hs.url)
    assert (url.scheme, url.path, url.query) == ("wss", handshake["path"], "")
    assert hs.subprotocols == ()


def test_handshake_uses_the_configured_url() -> None:
    cfg = replace(TRACE_CFG, url="wss://soniox.example.test/transcribe-websocket")
    assert codec(cfg).handshake(KEY).url == "wss://soniox.example.test/transcribe-websocket"


@pytest.mark.parametrize(
    ("method", "expected_text", "what"),
    [
        ("keepalive", '{"type": "keepalive"}', "keepalive"),
        ("end_turn", '{"type": "finalize"}', "finalize"),
        ("end_of_stream", "", "end"),
    ],
)
def test_control_frames_are_the_sdk_bytes(method: str, expected_text: str, what: str) -> None:
    sdk_texts = client_texts(load_trace("soniox_happy.jsonl"))[1:]
    result = getattr(codec(), method)()
    (out,) = result if isinstance(result, list) else [result]
    assert out == Outgoing(expected_text, what)
    assert isinstance(out.payload, str)  # a TEXT frame, as the SDK's
    assert out.payload in sdk_texts


def test_a_turn_begins_without_a_message() -> None:
    # one stream per session: Soniox finds the utterances itself
    assert codec().begin_turn() == []


def test_the_trace_sends_no_other_text_frames() -> None:
    sdk_texts = set(client_texts(load_trace("soniox_happy.jsonl"))[1:])
    c = codec()
    ours = {c.keepalive().payload, *(o.payload for o in [*c.end_turn(), *c.end_of_stream()])}
    assert sdk_texts == ours


def test_a_session_of_v2_calls_is_the_sdk_session_frame_for_frame() -> None:
    """The whole happy trace (start, two utterances with a finalize and keepalives between,
    end of audio) replayed through the v2 calls gives the SDK's frames, in order."""
    frames = of_kind(load_trace("soniox_happy.jsonl"), "client_frame")
    c = codec()
    ours: list[Outgoing] = [*c.start()]
    in_turn = False
    for record in frames[1:]:
        if record["opcode"] == "binary":
            if not in_turn:
                ours += c.begin_turn()
                in_turn = True
            ours += c.audio(b"\x00\x01" * (record["len"] // 2))
        elif record["text"] == '{"type": "finalize"}':
            ours += c.end_turn()
            in_turn = False
        elif record["text"] == '{"type": "keepalive"}':
            ours.append(c.keepalive())
        else:
            ours += c.end_of_stream()
    wire = [
        ("binary", len(o.payload)) if isinstance(o.payload, bytes) else ("text", o.payload)
        for o in ours
    ]
    sdk = [("binary", r["len"]) if r["opcode"] == "binary" else ("text", r["text"]) for r in frames]
    assert wire == sdk


def test_audio_is_a_binary_frame() -> None:
    (out,) = codec().audio(bytearray(b"\x01\x02" * 1600))
    assert out == Outgoing(b"\x01\x02" * 1600, "audio")
    assert type(out.payload) is bytes


@pytest.mark.parametrize("pcm", [b"", b"\x00\x01\x02"])
def test_audio_refuses_empty_or_partial_samples(pcm: bytes) -> None:
    # an empty binary frame would end the stream at Soniox
    with pytest.raises(ValueError):
        codec().audio(pcm)


# -- start message variants --------------------------------------------------------------

MINIMAL = SonioxConfig(model="stt-rt-v5", language_identification=False, endpoint_detection=False)


def test_start_minimal_has_no_optional_fields() -> None:
    assert start_json(MINIMAL) == {
        "model": "stt-rt-v5",
        "audio_format": "pcm_s16le",
        "num_channels": 1,
        "sample_rate": 16000,
        "enable_speaker_diarization": False,
        "enable_language_identification": False,
        "enable_endpoint_detection": False,
    }


def test_start_one_way_translation() -> None:
    msg = start_json(replace(MINIMAL, translation="one_way", target_language="de"))
    assert msg["translation"] == {"type": "one_way", "target_language": "de"}


def test_start_two_way_translation() -> None:
    msg = start_json(replace(MINIMAL, translation="two_way", language_a="hi", language_b="en"))
    assert msg["translation"] == {"type": "two_way", "language_a": "hi", "language_b": "en"}


def test_start_no_translation_has_no_field() -> None:
    assert "translation" not in start_json(replace(TRACE_CFG, translation="none"))


def test_start_sample_rate_from_constructor() -> None:
    assert start_json(MINIMAL, sample_rate=8000)["sample_rate"] == 8000


def test_start_no_hints_means_no_hint_fields_even_when_strict() -> None:
    msg = start_json(replace(MINIMAL, language_hints_strict=True))
    assert "language_hints" not in msg
    assert "language_hints_strict" not in msg


def test_start_strict_hints() -> None:
    msg = start_json(replace(MINIMAL, language_hints=("hi", "en"), language_hints_strict=True))
    assert msg["language_hints"] == ["hi", "en"]
    assert msg["language_hints_strict"] is True
    keys = list(msg)
    assert keys.index("language_hints") + 1 == keys.index("language_hints_strict")


def test_start_hints_not_strict_omit_strict() -> None:
    msg = start_json(replace(MINIMAL, language_hints=("en",)))
    assert msg["language_hints"] == ["en"]
    assert "language_hints_strict" not in msg


@pytest.mark.parametrize(
    ("changes", "context"),
    [
        ({}, None),
        (
            {"context_text": "Council meeting, Mayor Ana Ruiz"},
            {"text": "Council meeting, Mayor Ana Ruiz"},
        ),
        ({"context_terms": ("Pi", "HDMI")}, {"terms": ["Pi", "HDMI"]}),
        (
            {"context_general": (("domain", "medicine"), ("topic", "rounds"))},
            {
                "general": [
                    {"key": "domain", "value": "medicine"},
                    {"key": "topic", "value": "rounds"},
                ]
            },
        ),
        (
            {"translation_terms": (("council", "consejo"),)},
            {"translation_terms": [{"source": "council", "target": "consejo"}]},
        ),
        (
            {
                "context_general": (("a", "b"),),
                "context_text": "t",
                "context_terms": ("x",),
                "translation_terms": (("s", "t"),),
            },
            {
                "general": [{"key": "a", "value": "b"}],
                "text": "t",
                "terms": ["x"],
                "translation_terms": [{"source": "s", "target": "t"}],
            },
        ),
    ],
)
def test_start_context_pieces(changes: dict[str, Any], context: dict[str, Any] | None) -> None:
    msg = start_json(replace(MINIMAL, **changes))
    assert msg.get("context") == context
    if context is not None:
        assert list(msg["context"]) == list(context)  # general, text, terms, translation_terms


@pytest.mark.parametrize(("seconds", "ms"), [(0.5, 500), (1.25, 1250), (3.0, 3000)])
def test_start_max_endpoint_delay_is_int_ms(seconds: float, ms: int) -> None:
    cfg = replace(TRACE_CFG, max_endpoint_delay=seconds)
    text = start_text(cfg)
    assert f'"max_endpoint_delay_ms": {ms},' in text  # an int, not 1250.0
    keys = list(json.loads(text))
    assert keys.index("enable_endpoint_detection") + 1 == keys.index("max_endpoint_delay_ms")
    assert keys.index("max_endpoint_delay_ms") + 1 == keys.index("translation")


def test_start_zero_endpoint_delay_is_omitted() -> None:
    assert "max_endpoint_delay_ms" not in start_json(replace(TRACE_CFG, max_endpoint_delay=0.0))


def test_start_full_field_order() -> None:
    cfg = replace(TRACE_CFG, language_hints_strict=True, context_text="x", max_endpoint_delay=1.0)
    assert list(start_json(cfg)) == [
        "model",
        "audio_format",
        "num_channels",
        "sample_rate",
        "language_hints",
        "language_hints_strict",
        "context",
        "enable_speaker_diarization",
        "enable_language_identification",
        "enable_endpoint_detection",
        "max_endpoint_delay_ms",
        "translation",
    ]


def test_start_json_round_trip() -> None:
    cfg = replace(
        TRACE_CFG,
        context_text='Zürich "quoted" \\ back\nslash',
        context_terms=("naïve", "日本"),
        max_endpoint_delay=2.0,
    )
    c = codec(cfg)
    (msg,) = c.start()
    assert json.loads(msg.payload) == c.start_config()
    assert json.loads(msg.payload)["context"]["text"] == cfg.context_text


# -- service → client, against the SDK's view of the same messages -----------------------


def sdk_view(event: dict[str, Any]) -> list[ServiceEvent]:
    """What the codec must report for one message, built from the SDK's parse of it."""
    if event.get("error_code") is not None:
        return [
            ServiceError(
                event["error_code"],
                event["error_type"],
                event["error_message"],
                error_retry(event["error_code"]),
            )
        ]
    tokens = [
        Token(
            text=t["text"],
            is_final=t["is_final"],
            kind=t.get("translation_status") or "none",
            start_ms=t.get("start_ms"),
            end_ms=t.get("end_ms"),
            speaker=t.get("speaker"),
            language=t.get("language"),
            source_language=t.get("source_language"),
            confidence=t.get("confidence"),
        )
        for t in event["tokens"]
    ]
    words = [t for t in tokens if t.text not in ("<end>", "<fin>")]
    update = TokenUpdate(
        final=tuple(t for t in words if t.is_final),
        provisional=tuple(t for t in words if not t.is_final),
        endpoint=any(t.text == "<end>" for t in tokens),
        finalized=any(t.text == "<fin>" for t in tokens),
        final_audio_ms=event.get("final_audio_proc_ms"),
        total_audio_ms=event.get("total_audio_proc_ms"),
    )
    return [update, SessionFinished()] if event.get("finished") else [update]


@pytest.mark.parametrize("trace", ALL_TRACES)
def test_every_server_message_reads_as_the_sdk_read_it(trace: str) -> None:
    records = load_trace(trace)
    sent = [r["text"] for r in of_kind(records, "server_sent")]
    seen = [r["event"] for r in of_kind(records, "sdk_event")]
    assert sent
    assert len(sent) == len(seen)  # one SDK event per message, in order
    c = codec()
    for message, event in zip(sent, seen, strict=True):
        assert events_of(c, message) == sdk_view(event), message


def session_events(trace: str) -> list[ServiceEvent]:
    c = codec()
    return [e for r in of_kind(load_trace(trace), "server_sent") for e in events_of(c, r["text"])]


def test_happy_trace_as_a_caption_stream() -> None:
    events = session_events("soniox_happy.jsonl")
    assert isinstance(events[-1], SessionFinished)
    assert sum(isinstance(e, SessionFinished) for e in events) == 1
    updates = [e for e in events if isinstance(e, TokenUpdate)]
    finals = [t for u in updates for t in u.final]
    spoken = "".join(t.text for t in finals if t.spoken)
    assert spoken == " hello hello hello wor hello hello hello world"
    assert [t.text for t in finals if not t.spoken] == [" hola"]
    assert [t.source_language for t in finals if not t.spoken] == ["en"]
    assert not any("<" in t.text for u in updates for t in (*u.final, *u.provisional))
    assert [u.endpoint for u in updates].count(True) == 1
    assert [u.finalized for u in updates].count(True) == 1
    finalized = next(u for u in updates if u.finalized)
    assert [t.text for t in finalized.final] == [" wor"]
    assert finalized.provisional == ()
    assert updates[-1].final_audio_ms == updates[-1].total_audio_ms == 2000


def test_translation_token_has_no_timing() -> None:
    events = session_events("soniox_happy.jsonl")
    (hola,) = [t for e in events if isinstance(e, TokenUpdate) for t in e.final if not t.spoken]
    assert hola == Token(
        " hola", True, "translation", speaker="1", language="es", source_language="en"
    )


@pytest.mark.parametrize(
    ("trace", "code", "kind", "retry"),
    [
        ("soniox_error401.jsonl", 401, "unauthenticated", Retry.FATAL),
        ("soniox_error503.jsonl", 503, "service_unavailable", Retry.NOW),
    ],
)
def test_error_traces(trace: str, code: int, kind: str, retry: Retry) -> None:
    events = session_events(trace)
    error = events[-1]
    assert isinstance(error, ServiceError)
    assert (error.code, error.kind, error.retry) == (code, kind, retry)
    assert error.message  # the service's text, for the log
    assert sum(isinstance(e, ServiceError) for e in events) == 1


def test_finished_comes_last_after_the_update() -> None:
    events = parse_one(
        '{"tokens": [{"text": " end", "is_final": true}], "final_audio_proc_ms": 5, '
        '"total_audio_proc_ms": 6, "finished": true}'
    )
    assert events == [
        TokenUpdate(final=(Token(" end", True),), final_audio_ms=5, total_audio_ms=6),
        SessionFinished(),
    ]


def test_finished_without_tokens_field() -> None:
    assert parse_one('{"finished": true}') == [TokenUpdate(), SessionFinished()]


def test_empty_result_clears_the_tail() -> None:
    assert parse_one('{"tokens": []}') == [TokenUpdate()]


def test_absent_proc_ms_are_none_and_float_ms_are_ints() -> None:
    (update,) = parse_one(result({"text": "a", "is_final": True, "start_ms": 10.0}))
    assert isinstance(update, TokenUpdate)
    assert (update.final_audio_ms, update.total_audio_ms) == (None, None)
    assert update.final[0].start_ms == 10
    assert type(update.final[0].start_ms) is int


def test_speaker_int_becomes_str() -> None:
    (update,) = parse_one(result({"text": "a", "is_final": False, "speaker": 2}))
    assert isinstance(update, TokenUpdate)
    assert update.provisional[0].speaker == "2"


def test_unknown_fields_are_ignored() -> None:
    plain = result({"text": " hi", "is_final": True, "language": "en"}, total_audio_proc_ms=9)
    extra = json.dumps(
        {
            "tokens": [{"text": " hi", "is_final": True, "language": "en", "new": {"x": 1}}],
            "total_audio_proc_ms": 9,
            "future_field": [1, 2],
            "type": "result",
        }
    )
    assert parse_one(extra) == parse_one(plain)


def test_special_tokens_only_set_flags() -> None:
    (update,) = parse_one(
        result(
            {"text": " a", "is_final": True},
            {"text": "<end>", "is_final": True},
            {"text": "<fin>", "is_final": True},
        )
    )
    assert update == TokenUpdate(final=(Token(" a", True),), endpoint=True, finalized=True)


def test_error_with_tokens_reports_them_first() -> None:
    events = parse_one(
        result(
            {"text": " last", "is_final": True}, error_code=503, error_type="service_unavailable"
        )
    )
    assert events[0] == TokenUpdate(final=(Token(" last", True),))
    assert isinstance(events[1], ServiceError)
    assert events[1].retry is Retry.NOW


def test_error_survives_malformed_tokens_and_finished() -> None:
    events = parse_one('{"tokens": [7], "finished": "x", "error_code": 429}')
    assert events == [ServiceError(429, "limit_exceeded", "", Retry.SLOW)]


# -- errors and their retry classes (§1.6) -----------------------------------------------


@pytest.mark.parametrize(
    ("code", "retry"),
    [
        (400, Retry.FATAL),
        (401, Retry.FATAL),
        (402, Retry.FATAL),
        (403, Retry.FATAL),
        (408, Retry.ONCE),
        (429, Retry.SLOW),
        (500, Retry.BACKOFF),
        (503, Retry.NOW),
        (404, Retry.FATAL),  # any other 4xx
        (409, Retry.FATAL),
        (422, Retry.FATAL),
        (499, Retry.FATAL),
        (501, Retry.BACKOFF),  # any other 5xx
        (502, Retry.BACKOFF),
        (504, Retry.BACKOFF),
        (599, Retry.BACKOFF),
        (302, Retry.BACKOFF),  # unknown
        (600, Retry.BACKOFF),
        (0, Retry.BACKOFF),
    ],
)
def test_error_code_table(code: int, retry: Retry) -> None:
    message = json.dumps(
        {"tokens": [], "error_code": code, "error_type": "some_type", "error_message": "m"}
    )
    assert parse_one(message) == [ServiceError(code, "some_type", "m", retry)]
    assert error_retry(code) is retry


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (400, "bad_request"),
        (401, "unauthenticated"),
        (402, "payment_required"),
        (403, "permission_denied"),
        (408, "request_timeout"),
        (429, "limit_exceeded"),
        (500, "internal_error"),
        (503, "service_unavailable"),
        (418, "error_418"),
    ],
)
def test_error_kind_from_code_when_type_missing(code: int, kind: str) -> None:
    (error,) = parse_one(json.dumps({"error_code": code, "error_message": "m"}))
    assert isinstance(error, ServiceError)
    assert (error.code, error.kind) == (code, kind)


@pytest.mark.parametrize(
    ("fields", "code", "kind", "retry"),
    [
        ({"error_message": "??"}, None, "error", Retry.BACKOFF),
        ({"error_type": "service_unavailable"}, None, "service_unavailable", Retry.NOW),
        ({"error_type": "unauthenticated"}, None, "unauthenticated", Retry.FATAL),
        ({"error_type": "project_monthly_budget_exhausted"}, None, None, Retry.FATAL),
        ({"error_type": "max_concurrent_connections_reached"}, None, None, Retry.SLOW),
        ({"error_type": "brand_new"}, None, "brand_new", Retry.BACKOFF),
        ({"error_code": "503"}, 503, "service_unavailable", Retry.NOW),  # digits as a string
        ({"error_code": True, "error_message": "x"}, None, "error", Retry.BACKOFF),
        (
            {"error_code": None, "error_type": None, "error_message": "x"},
            None,
            "error",
            Retry.BACKOFF,
        ),
    ],
)
def test_error_without_a_usable_code(
    fields: dict[str, Any], code: int | None, kind: str | None, retry: Retry
) -> None:
    (error,) = parse_one(json.dumps(fields))
    assert isinstance(error, ServiceError)
    assert (error.code, error.retry) == (code, retry)
    if kind is not None:
        assert error.kind == kind


def test_error_branches_on_code_not_on_message_text() -> None:
    (a,) = parse_one('{"error_code": 503, "error_message": "Invalid API key."}')
    (b,) = parse_one('{"error_code": 401, "error_message": "Please restart the request."}')
    assert isinstance(a, ServiceError) and isinstance(b, ServiceError)
    assert (a.retry, b.retry) == (Retry.NOW, Retry.FATAL)


def test_error_message_is_shortened_to_one_line() -> None:
    (error,) = parse_one(json.dumps({"error_code": 500, "error_message": "line\n" * 1000}))
    assert isinstance(error, ServiceError)
    assert len(error.message) <= 200
    assert "\n" not in error.message


@pytest.mark.parametrize(
    ("status", "kind", "retry"),
    [
        (400, "bad_request", Retry.FATAL),
        (401, "unauthenticated", Retry.FATAL),
        (402, "payment_required", Retry.FATAL),
        (403, "permission_denied", Retry.FATAL),
        (404, "not_found", Retry.FATAL),
        (408, "request_timeout", Retry.ONCE),
        (429, "limit_exceeded", Retry.SLOW),
        (500, "internal_error", Retry.BACKOFF),
        (502, "bad_gateway", Retry.BACKOFF),
        (503, "service_unavailable", Retry.BACKOFF),  # at the handshake: down, not best-effort
        (504, "gateway_timeout", Retry.BACKOFF),
        (599, "http_599", Retry.BACKOFF),
        (410, "http_410", Retry.BACKOFF),
        (302, "http_302", Retry.BACKOFF),
        (200, "http_200", Retry.BACKOFF),
    ],
)
def test_handshake_refused(status: int, kind: str, retry: Retry) -> None:
    error = codec().handshake_refused(status)
    assert (error.code, error.kind, error.retry) == (status, kind, retry)
    assert str(status) in error.message


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (None, "connection_lost"),
        (1006, "connection_lost"),
        (1000, "closed"),
        (1001, "closed"),
        (1008, "policy_violation"),
        (1011, "server_error"),
        (1012, "restarting"),
        (1013, "try_again_later"),
        (1014, "bad_gateway"),
        (1002, "close_1002"),
        (1003, "close_1003"),
        (1007, "close_1007"),
        (1009, "close_1009"),
        (4000, "close_4000"),
    ],
)
def test_closed_before_finished_is_retried_with_backoff(code: int | None, kind: str) -> None:
    error = codec().closed(code, "bye now", finished=False)
    assert error is not None
    assert (error.code, error.kind, error.retry) == (code, kind, Retry.BACKOFF)
    assert "bye now" in error.message


@pytest.mark.parametrize("code", [None, 1000, 1001, 1006, 1011, 4000])
def test_closed_after_finished_is_normal(code: int | None) -> None:
    assert codec().closed(code, "", finished=True) is None


def test_close_reason_is_shortened() -> None:
    error = codec().closed(1011, "x\r\n" * 500, finished=False)
    assert error is not None
    assert len(error.message) < 260
    assert "\n" not in error.message and "\r" not in error.message
    no_reason = codec().closed(1011, "", finished=False)
    assert no_reason is not None and not no_reason.message.endswith(": ")


# -- malformed messages ------------------------------------------------------------------

MALFORMED = {
    "binary": b'{"tokens": []}',
    "empty text": "",
    "not json": "hello there",
    "truncated json": '{"tokens": [',
    "a list": "[1, 2]",
    "a string": '"tokens"',
    "null": "null",
    "a number": "42",
    "empty object": "{}",
    "unknown message": '{"type": "surprise"}',
    "tokens an object": '{"tokens": {}}',
    "tokens a string": '{"tokens": "a b"}',
    "token a number": '{"tokens": [1]}',
    "token null": '{"tokens": [null]}',
    "token without text": '{"tokens": [{"is_final": true}]}',
    "text a number": '{"tokens": [{"text": 5, "is_final": true}]}',
    "text null": '{"tokens": [{"text": null, "is_final": true}]}',
    "is_final missing": '{"tokens": [{"text": "a"}]}',
    "is_final a string": '{"tokens": [{"text": "a", "is_final": "true"}]}',
    "is_final a number": '{"tokens": [{"text": "a", "is_final": 1}]}',
    "start_ms a string": '{"tokens": [{"text": "a", "is_final": true, "start_ms": "10"}]}',
    "start_ms negative": '{"tokens": [{"text": "a", "is_final": true, "start_ms": -5}]}',
    "end_ms a bool": '{"tokens": [{"text": "a", "is_final": true, "end_ms": true}]}',
    "end_ms infinite": '{"tokens": [{"text": "a", "is_final": true, "end_ms": Infinity}]}',
    "confidence NaN": '{"tokens": [{"text": "a", "is_final": true, "confidence": NaN}]}',
    "confidence a string": '{"tokens": [{"text": "a", "is_final": true, "confidence": "hi"}]}',
    "confidence huge int": '{"tokens": [{"text": "a", "is_final": true, "confidence": '
    + "9" * 400
    + "}]}",
    "speaker a list": '{"tokens": [{"text": "a", "is_final": true, "speaker": [1]}]}',
    "speaker a bool": '{"tokens": [{"text": "a", "is_final": true, "speaker": true}]}',
    "language a number": '{"tokens": [{"text": "a", "is_final": true, "language": 5}]}',
    "source_language an object": '{"tokens": [{"text": "a", "is_final": true, '
    '"source_language": {}}]}',
    "unknown translation_status": '{"tokens": [{"text": "a", "is_final": true, '
    '"translation_status": "maybe"}]}',
    "translation_status a list": '{"tokens": [{"text": "a", "is_final": true, '
    '"translation_status": ["none"]}]}',
    "final_audio_proc_ms a string": '{"tokens": [], "final_audio_proc_ms": "300"}',
    "total_audio_proc_ms negative": '{"tokens": [], "total_audio_proc_ms": -1}',
    "finished a string": '{"tokens": [], "finished": "yes"}',
    "finished a number": '{"tokens": [], "finished": 1}',
    "deep nesting": "[" * 100_000 + "]" * 100_000,
    "huge integer literal": "1" * 10_000,
}


@pytest.mark.parametrize("message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_message_is_a_protocol_error(message: str | bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        codec().parse(message)
    assert 0 < len(str(info.value)) <= 160


def test_protocol_error_quotes_little_of_the_message() -> None:
    message = "not json " + "x" * 5000 + " TAIL-THAT-MUST-NOT-APPEAR"
    with pytest.raises(ProtocolError) as info:
        codec().parse(message)
    assert "TAIL" not in str(info.value)
    assert len(str(info.value)) <= 120


# -- properties --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
TOKEN_FIELDS = [
    "text",
    "is_final",
    "start_ms",
    "end_ms",
    "confidence",
    "speaker",
    "language",
    "source_language",
    "translation_status",
]
TOP_FIELDS = [
    "tokens",
    "final_audio_proc_ms",
    "total_audio_proc_ms",
    "finished",
    "error_code",
    "error_type",
    "error_message",
]
field_values = json_values | st.sampled_from(["<end>", "<fin>", "original", "translation", 7, 0.5])
tokenish = st.dictionaries(st.sampled_from(TOKEN_FIELDS), field_values, max_size=9)
resultish = st.dictionaries(
    st.sampled_from(TOP_FIELDS),
    field_values | st.lists(tokenish | json_values, max_size=4),
    max_size=7,
)


def check_events(events: list[ServiceEvent]) -> None:
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, TokenUpdate | ServiceError | SessionFinished)
    for event in events[:-1]:  # an error or the end only ever comes last
        assert isinstance(event, TokenUpdate)
    for event in events:
        if isinstance(event, TokenUpdate):
            for token in (*event.final, *event.provisional):
                assert token.text not in ("<end>", "<fin>")
            assert all(t.is_final for t in event.final)
            assert not any(t.is_final for t in event.provisional)


def parse_or_protocol_error(message: str | bytes) -> None:
    try:
        events = events_of(codec(), message)
    except ProtocolError:
        return
    check_events(events)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text() | st.binary())
def test_parse_arbitrary_text_only_raises_protocol_error(message: str | bytes) -> None:
    parse_or_protocol_error(message)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_parse_arbitrary_json_only_raises_protocol_error(value: Any) -> None:
    parse_or_protocol_error(json.dumps(value))


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(resultish)
def test_parse_result_shaped_json_only_raises_protocol_error(value: dict[str, Any]) -> None:
    parse_or_protocol_error(json.dumps(value))


good_token = st.fixed_dictionaries(
    {
        "text": st.text(min_size=1, max_size=10).filter(lambda s: s not in ("<end>", "<fin>")),
        "is_final": st.booleans(),
    },
    optional={
        "start_ms": st.integers(0, 10**7),
        "end_ms": st.integers(0, 10**7),
        "confidence": st.floats(0, 1),
        "speaker": st.text(max_size=3) | st.integers(0, 9),
        "language": st.sampled_from(["en", "es", "hi"]),
        "source_language": st.sampled_from(["en", "es"]),
        "translation_status": st.sampled_from(["original", "translation", "none"]),
    },
)


@settings(max_examples=200)
@given(st.lists(good_token, max_size=8), st.sampled_from([None, "<end>", "<fin>"]))
def test_well_formed_results_keep_every_word(tokens: list[dict[str, Any]], special: Any) -> None:
    sent = [*tokens, {"text": special, "is_final": True}] if special else tokens
    (update,) = parse_one(json.dumps({"tokens": sent}))
    assert isinstance(update, TokenUpdate)
    assert [t.text for t in update.final] == [t["text"] for t in tokens if t["is_final"]]
    assert [t.text for t in update.provisional] == [t["text"] for t in tokens if not t["is_final"]]
    assert update.endpoint == (special == "<end>")
    assert update.finalized == (special == "<fin>")
    for token, raw in zip(
        (*update.final, *update.provisional),
        sorted(tokens, key=lambda t: not t["is_final"]),
        strict=True,
    ):
        assert token.kind == raw.get("translation_status", "none")
        assert token.start_ms == raw.get("start_ms")
        assert token.confidence == raw.get("confidence")
        speaker = raw.get("speaker")
        assert token.speaker == (None if speaker is None else str(speaker))


# -- the key stays secret ----------------------------------------------------------------


def test_key_is_only_in_the_handshake_header() -> None:
    c = codec(replace(TRACE_CFG, max_endpoint_delay=1.0, context_text="ctx"))
    hs = c.handshake(KEY)
    secret = KEY.reveal()
    assert hs.headers == (f"Authorization: Bearer {secret}",)
    assert secret not in repr(hs)
    assert secret not in repr(c)
    assert secret not in str(c.__dict__)
    outgoing = [
        *c.start(),
        *c.begin_turn(),
        *c.audio(b"\x00\x00"),
        c.keepalive(),
        *c.end_turn(),
        *c.end_of_stream(),
    ]
    for out in outgoing:
        payload = out.payload if isinstance(out.payload, str) else out.payload.decode("latin-1")
        assert secret not in payload
        assert "api_key" not in payload
        assert secret not in repr(out)


def test_handshake_needs_a_key() -> None:
    with pytest.raises(ValueError):
        codec().handshake(None)


@pytest.mark.parametrize("value", ["", "   ", "abc\r\nX-Injected: 1", "abc\ndef", "a\x00b"])
def test_handshake_refuses_a_key_that_cannot_be_a_header(value: str) -> None:
    with pytest.raises(ValueError) as info:
        codec().handshake(SecretValue("test", value))
    if value.strip():
        assert value.strip() not in str(info.value)


def test_reset_keeps_the_codec_working() -> None:
    c = codec()
    first = c.parse(result({"text": " a", "is_final": False}))
    c.reset()
    assert c.parse(result({"text": " a", "is_final": False})) == first
    assert c.start() == codec().start()
