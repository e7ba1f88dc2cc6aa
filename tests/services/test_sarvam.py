"""The Sarvam codec against the official SDK's recorded traffic and the notes (§2)."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecap.captions.tokens import Token, TokenUpdate
from edgecap.config.schema import SarvamConfig
from edgecap.config.secrets import SecretValue
from edgecap.services.codec import (
    Codec,
    Outgoing,
    ProtocolError,
    Retry,
    ServiceError,
    ServiceEvent,
    ServiceNotice,
)
from edgecap.services.sarvam import FLUSH_MESSAGE, LEGACY_URL, V3_URL, SarvamCodec, error_retry
from tests.link.traces import handshake_headers, load_trace, of_kind

TRACE_KEY = "DUMMY_SARVAM_KEY"
KEY = SecretValue("test", TRACE_KEY)
# What the SDK was configured with in the traces.
V3_TRANSLATE = SarvamConfig(language="hi-IN", mode="translate")
LEGACY = SarvamConfig(
    model="saaras:v2.5", mode="translate", high_vad_sensitivity=True, prompt="Banking customer call"
)
TRANSCRIBE = SarvamConfig(language="hi-IN")
CHUNK = bytes(range(256)) * 25  # 6400 bytes: the SDK's 200 ms chunk
MS = 32  # bytes of audio per millisecond


def codec(cfg: SarvamConfig = TRANSCRIBE, **kw: Any) -> SarvamCodec:
    return SarvamCodec(cfg, **kw)


def client_frames(trace: str) -> list[dict[str, Any]]:
    return [r for r in of_kind(load_trace(trace), "client_frame") if r["opcode"] == "text"]


def server_texts(trace: str) -> list[str]:
    return [r["text"] for r in of_kind(load_trace(trace), "server_sent")]


def sdk_accepted(trace: str) -> list[dict[str, Any]]:
    """The server messages the SDK parsed (its value is the message it accepted)."""
    return [r["value"] for r in of_kind(load_trace(trace), "sdk_parsed")]


def events(c: SarvamCodec, message: str | bytes) -> list[ServiceEvent]:
    parsed = c.parse(message)
    assert parsed.replies == ()
    return list(parsed.events)


def data(transcript: str, language: str | None = "hi-IN", probability: Any = None) -> str:
    return json.dumps(
        {
            "type": "data",
            "data": {
                "request_id": "20250101_abc",
                "transcript": transcript,
                "language_code": language,
                "language_probability": probability,
                "metrics": {"audio_duration": 1.0, "processing_latency": 0.21},
            },
        }
    )


def vad(signal: str) -> str:
    body = {"event_type": "vad", "signal_type": signal, "timestamp": "2026-11-22T03:30:08+00:00"}
    return json.dumps({"type": "events", "data": {**body, "occured_at": 1795318208.75}})


def send_turn(c: SarvamCodec, ms: int, *, end: bool = True) -> list[Outgoing]:
    """A turn of ``ms`` of audio in 200 ms chunks (then its flush when ``end``)."""
    out = c.begin_turn()
    for _ in range(ms // 200):
        out += c.audio(bytes(200 * MS))
    if end:
        out += c.end_turn()
    return out


def update_of(c: SarvamCodec, message: str) -> TokenUpdate:
    first, *_ = events(c, message)
    assert isinstance(first, TokenUpdate)
    return first


# -- attributes and the URL ------------------------------------------------------------------


def test_codec_attributes() -> None:
    c: Codec = codec(replace(TRANSCRIBE, keepalive=15.0, session_max=600.0), replay_speed=2.0)
    assert (c.name, c.keepalive_interval, c.session_max, c.replay_speed) == (
        "sarvam",
        15.0,
        600.0,
        2.0,
    )
    assert c.audio_chunk_ms == 200  # within the recommended 100-250 ms, as the SDK's trace
    assert not c.sends_finished and c.finish_grace > 0
    assert c.needs_key and c.token_request(KEY) is None
    assert c.end_of_stream() == [] and c.slow_retry_min >= 30


@pytest.mark.parametrize(
    ("trace", "cfg"),
    [("sarvam_stt_v3.jsonl", V3_TRANSLATE), ("sarvam_sttt.jsonl", LEGACY)],
)
def test_path_and_query_are_the_sdks_byte_for_byte(trace: str, cfg: SarvamConfig) -> None:
    (handshake,) = of_kind(load_trace(trace), "handshake")
    url = urlsplit(codec(cfg).handshake(KEY).url)
    assert f"{url.path}?{url.query}" == handshake["path"]
    assert (url.scheme, url.netloc) == ("wss", "api.sarvam.ai")


def test_default_endpoints_follow_the_model() -> None:
    assert codec(SarvamConfig()).url().startswith(V3_URL + "?language-code=unknown&")
    assert codec(LEGACY).url().startswith(LEGACY_URL + "?model=saaras%3Av2.5&")
    assert "mode=" not in codec(LEGACY).url() and "language-code" not in codec(LEGACY).url()
    assert "mode=codemix" in codec(SarvamConfig(mode="codemix")).url()


def test_url_overrides_the_endpoint_and_keeps_its_own_query() -> None:
    c = codec(replace(TRANSCRIBE, url="wss://stt.example.net/speech-to-text/ws?tenant=a"))
    url = urlsplit(c.url())
    assert (url.netloc, url.path) == ("stt.example.net", "/speech-to-text/ws")
    assert url.query.startswith("tenant=a&language-code=hi-IN&model=saaras%3Av3&mode=transcribe")


def test_handshake_is_the_sdk_key_header_once() -> None:
    sdk = handshake_headers(load_trace("sarvam_stt_v3.jsonl"))
    hs = codec(V3_TRANSLATE).handshake(KEY)
    assert hs.headers == (f"api-subscription-key: {sdk['api-subscription-key']}",)
    assert hs.subprotocols == ()
    assert TRACE_KEY not in repr(hs) and TRACE_KEY not in repr(codec())


@pytest.mark.parametrize("value", ["", "   ", "abc\r\nX-Injected: 1", "a\x00b"])
def test_handshake_refuses_a_key_that_cannot_be_a_header(value: str) -> None:
    with pytest.raises(ValueError) as info:
        codec().handshake(SecretValue("test", value))
    if value.strip():
        assert value.strip() not in str(info.value)
    with pytest.raises(ValueError):
        codec().handshake(None)


# -- client → service ---------------------------------------------------------------------------


def test_the_prompt_message_is_the_sdks_and_only_on_the_legacy_endpoint() -> None:
    (prompt, *_) = client_frames("sarvam_sttt.jsonl")
    (out,) = codec(LEGACY).start()
    assert isinstance(out.payload, str)
    assert json.loads(out.payload) == prompt["json"] and len(out.payload) == prompt["len"]
    assert codec(replace(LEGACY, prompt="")).start() == []
    assert codec(V3_TRANSLATE).start() == []


def test_audio_is_the_sdk_message_with_an_integer_sample_rate() -> None:
    sdk = next(f for f in client_frames("sarvam_stt_v3.jsonl") if "audio" in f["json"])
    c = codec()
    c.begin_turn()
    (out,) = c.audio(CHUNK)
    assert isinstance(out.payload, str) and out.what == "audio"
    assert len(out.payload) == sdk["len"] == 8606  # 6400 B → 8536 base64 chars, framed
    message = json.loads(out.payload)
    assert base64.b64decode(message["audio"]["data"], validate=True) == CHUNK
    shape = {k: v for k, v in message["audio"].items() if k != "data"}
    assert shape == {k: v for k, v in sdk["json"]["audio"].items() if k != "data"}
    assert shape == {"sample_rate": 16000, "encoding": "audio/wav"}
    assert list(message["audio"]) == list(sdk["json"]["audio"])  # the SDK's key order
    # formatted around the base64, yet exactly what json.dumps (as the SDK) would write
    data = base64.b64encode(CHUNK).decode()
    expected = {"audio": {"data": data, "sample_rate": 16000, "encoding": "audio/wav"}}
    assert out.payload == json.dumps(expected)


@pytest.mark.parametrize("pcm", [b"", b"\x00\x01\x02"])
def test_audio_refuses_empty_or_partial_samples(pcm: bytes) -> None:
    c = codec()
    c.begin_turn()
    with pytest.raises(ValueError):
        c.audio(pcm)


def test_flush_ends_a_turn_with_the_sdks_bytes() -> None:
    sdk = next(f for f in client_frames("sarvam_sttt.jsonl") if f["json"] == {"type": "flush"})
    c = codec()
    out = send_turn(c, 400)
    assert out[-1] == Outgoing(FLUSH_MESSAGE, "finalize")
    assert len(FLUSH_MESSAGE) == sdk["len"] and json.loads(FLUSH_MESSAGE) == sdk["json"]
    assert c.begin_turn() == [] and c.end_turn() == []  # a turn without audio asks nothing


def test_a_session_is_the_sdks_frame_for_frame() -> None:
    """The v3 trace: five 200 ms chunks, then a flush (the SDK also sent a whole WAV file
    before its flush, which edgecap never does: raw PCM was declared)."""
    sdk = [
        ("audio", f["len"]) if "audio" in f["json"] else ("flush", f["len"])
        for f in client_frames("sarvam_stt_v3.jsonl")
        if not (f["json"].get("audio", {}).get("data", "").find("RIFF") >= 0)
    ]
    c = codec(V3_TRANSLATE)
    ours = [*c.start(), *c.begin_turn()]
    for _ in range(5):
        ours += c.audio(CHUNK)
    ours += c.end_turn()
    assert [(o.what.replace("finalize", "flush"), len(o.payload)) for o in ours] == sdk


def test_keepalive_is_a_tenth_of_a_second_of_silence() -> None:
    out = codec().keepalive()
    assert out.what == "keepalive" and isinstance(out.payload, str)
    audio = json.loads(out.payload)["audio"]
    assert base64.b64decode(audio["data"]) == bytes(100 * MS)
    assert audio["sample_rate"] == 16000


# -- service → client: the traces -----------------------------------------------------------


@pytest.mark.parametrize(
    ("trace", "cfg"),
    [("sarvam_stt_v3.jsonl", V3_TRANSLATE), ("sarvam_sttt.jsonl", LEGACY)],
)
def test_every_server_message_of_the_traces(trace: str, cfg: SarvamConfig) -> None:
    """Translate mode: the transcript is the English translation, from the detected
    language; VAD events give no event; each flush is answered by its data message."""
    assert len(server_texts(trace)) == len(sdk_accepted(trace))  # the SDK took them all
    c = codec(cfg)
    c.start()
    send_turn(c, 1000)
    send_turn(c, 200)
    updates = []
    for text in server_texts(trace):
        got = events(c, text)
        if json.loads(text)["type"] == "events":
            assert got == []
        else:
            (update,) = got
            updates.append(update)
    assert len(updates) == 2
    for update, (start, covered) in zip(updates, ((0, 1000), (1000, 1200)), strict=True):
        assert isinstance(update, TokenUpdate)
        (token,) = update.final
        assert token == Token(
            "My phone number is 9840950950",
            True,
            "translation",
            start_ms=start,
            end_ms=covered,
            language="en",
            source_language="hi-IN",
            language_confidence=0.93,  # the trace's language_probability
        )
        assert update.finalized and update.endpoint and update.provisional == ()
        assert update.final_audio_ms == covered


def test_transcribe_mode_fills_the_transcript_in_its_language() -> None:
    c = codec(SarvamConfig())  # language unknown: the detected one labels the line
    send_turn(c, 600)
    update = update_of(c, data("नमस्ते दुनिया", "hi-IN", 0.93))
    (token,) = update.final
    assert token == Token(
        "नमस्ते दुनिया", True, "none", 0, 600, language="hi-IN", language_confidence=0.93
    )
    assert token.spoken


def test_the_language_probability_labels_only_a_detected_language() -> None:
    c = codec(SarvamConfig(language="hi-IN"))
    send_turn(c, 400)
    # no detection: the configured language, and no probability to show
    (token,) = update_of(c, data("कुछ", None, None)).final
    assert (token.language, token.language_confidence) == ("hi-IN", None)
    c = codec(SarvamConfig(mode="translate"))
    send_turn(c, 400)
    (token,) = update_of(c, data("something", "hi-IN", 0.8)).final
    assert (token.language, token.source_language) == ("en", "hi-IN")
    assert token.language_confidence == 0.8


@pytest.mark.parametrize("mode", ["translit", "codemix", "verbatim"])
def test_other_modes_are_shown_as_they_come(mode: str) -> None:
    c = codec(SarvamConfig(language="ta-IN", mode=mode))
    send_turn(c, 400)
    (token,) = update_of(c, data("vanakkam ulagam hello", None)).final
    assert token.kind == "none" and token.text == "vanakkam ulagam hello"
    assert token.language == "ta-IN"  # the configured one, when none is detected


def test_detection_still_running_leaves_the_language_open() -> None:
    c = codec(SarvamConfig())
    send_turn(c, 400)
    (token,) = update_of(c, data("कुछ", None)).final
    assert token.language is None


# -- what confirms audio --------------------------------------------------------------------


def test_flushes_are_answered_in_order_and_confirm_what_was_sent_before_each() -> None:
    c = codec()
    send_turn(c, 800)
    send_turn(c, 400)
    first = update_of(c, data("एक"))
    second = update_of(c, data("दो"))
    assert (first.finalized, first.final_audio_ms) == (True, 800)
    assert (second.finalized, second.final_audio_ms) == (True, 1200)
    assert (second.final[0].start_ms, second.final[0].end_ms) == (800, 1200)


@pytest.mark.parametrize(("high", "vad_ms"), [(False, 1000), (True, 500)])
def test_a_segment_the_services_vad_ended_confirms_up_to_its_silence(
    high: bool, vad_ms: int
) -> None:
    """No flush waits: the data follows END_SPEECH, and the speech it covers ended at
    least the VAD's silence before the event came."""
    c = codec(replace(TRANSCRIBE, high_vad_sensitivity=high))
    send_turn(c, 3000, end=False)
    assert events(c, vad("START_SPEECH")) == []
    assert events(c, vad("END_SPEECH")) == []
    for _ in range(2):
        c.audio(bytes(200 * MS))  # more audio went out before the data came
    update = update_of(c, data("पहला वाक्य"))
    assert not update.finalized and update.endpoint
    assert update.final_audio_ms == 3000 - vad_ms
    (token,) = update.final
    assert (token.start_ms, token.end_ms) == (0, 3000 - vad_ms)
    # the turn's flush then confirms the rest
    c.end_turn()
    rest = update_of(c, data("दूसरा"))
    assert rest.finalized and rest.final_audio_ms == 3400
    assert rest.final[0].start_ms == 3000 - vad_ms


def test_a_data_message_nothing_places_confirms_nothing() -> None:
    c = codec()
    send_turn(c, 1000, end=False)
    update = update_of(c, data("बिना संकेत"))
    assert update.final_audio_ms is None and not update.finalized
    assert update.final[0].text == "बिना संकेत"


def test_a_vad_end_too_early_in_the_session_confirms_no_more_than_its_start() -> None:
    c = codec()
    send_turn(c, 400, end=False)
    events(c, vad("END_SPEECH"))
    assert update_of(c, data("छोटा")).final_audio_ms == 0


def pcm_of(out: Outgoing) -> bytes:
    assert isinstance(out.payload, str)
    return base64.b64decode(json.loads(out.payload)["audio"]["data"], validate=True)


def chunk_quiet_at(frame: int) -> bytes:
    """200 ms of loud audio whose 20 ms frame ``frame`` is near silence."""
    frames = [b"\x00\x40" * 320] * 10
    frames[frame] = b"\x01\x00" * 320
    return b"".join(frames)


def test_a_long_utterance_is_flushed_after_its_quietest_frame() -> None:
    """flush_after of audio with no word from the service: a flush inside the utterance,
    cut after the chunk's quietest frame; its answer confirms that far and ends a line,
    but is not the turn's end the link waits for."""
    c = codec(flush_after=1.0)
    c.begin_turn()
    for _ in range(4):
        assert len(c.audio(chunk_quiet_at(9))) == 1  # 800 ms: not yet
    crossing = chunk_quiet_at(3)
    audio, flush, rest = c.audio(crossing)  # 1 s
    assert flush == Outgoing(FLUSH_MESSAGE, "flush")
    assert pcm_of(audio) == crossing[: 4 * 640] and pcm_of(rest) == crossing[4 * 640 :]
    assert len(c.audio(chunk_quiet_at(0))) == 1  # the clock started again at the cut
    update = update_of(c, data("लंबा भाषण"))
    assert (update.finalized, update.final_audio_ms, update.endpoint) == (False, 880, True)
    (end,) = c.end_turn()
    assert end.what == "finalize"
    last = update_of(c, data("जारी"))
    assert (last.finalized, last.final_audio_ms) == (True, 1200)
    assert last.final[0].start_ms == 880


def test_any_message_from_the_service_puts_off_the_flush_inside_an_utterance() -> None:
    c = codec(flush_after=1.0)
    c.begin_turn()
    for n in range(20):
        assert len(c.audio(chunk_quiet_at(5))) == 1, n
        if n % 4 == 3:
            events(c, vad("START_SPEECH"))


def test_a_flush_at_the_end_of_the_last_chunk_leaves_nothing_for_end_turn() -> None:
    c = codec(flush_after=0.2)
    c.begin_turn()
    assert [o.what for o in c.audio(chunk_quiet_at(9))] == ["audio", "flush"]
    assert c.end_turn() == []  # the flush before it covered the whole turn
    update = update_of(c, data("छोटा"))
    assert not update.finalized and update.final_audio_ms == 200


def test_an_empty_answer_to_a_flush_is_a_notice_only_if_no_words_came() -> None:
    c = codec()
    send_turn(c, 400)
    update, notice = events(c, data(""))
    assert isinstance(update, TokenUpdate) and update.final == () and update.finalized
    assert not update.endpoint
    assert isinstance(notice, ServiceNotice) and notice.kind == "no_match"
    # words from the service's own segment, then an empty answer: nothing missing
    send_turn(c, 2000, end=False)
    events(c, vad("END_SPEECH"))
    events(c, data("शब्द"))
    c.end_turn()
    assert [type(e) for e in events(c, data(""))] == [TokenUpdate]


def test_reset_forgets_the_sessions_flushes() -> None:
    c = codec()
    send_turn(c, 400)
    c.reset()
    update = update_of(c, data("नया"))
    assert not update.finalized and update.final_audio_ms is None


# -- errors ---------------------------------------------------------------------------------


def test_the_error_trace_is_fatal_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    (text,) = [t for t in server_texts("sarvam_error_msg.jsonl") if '"error"' in t]
    with caplog.at_level(logging.ERROR, logger="edgecap.services.sarvam"):
        (error,) = events(codec(), text)
    (record,) = caplog.records
    assert "this is a bug" in record.getMessage() and "Invalid audio format" in record.getMessage()
    assert error == ServiceError(
        None,
        "invalid_request_error",
        "Invalid audio format (edgecap sent what the service refuses: please report it)",
        Retry.FATAL,
    )
    closed = of_kind(load_trace("sarvam_error_msg.jsonl"), "server_closed")[0]["code"]
    assert codec().closed(closed, "error", False).retry is Retry.BACKOFF  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("code", "retry"),
    [
        ("invalid_api_key_error", Retry.FATAL),
        ("invalid_request_error", Retry.FATAL),
        ("unprocessable_entity_error", Retry.FATAL),
        ("insufficient_quota_error", Retry.FATAL),
        ("rate_limit_exceeded_error", Retry.SLOW),
        ("internal_server_error", Retry.BACKOFF),
        ("gateway_timeout_error", Retry.ONCE),
        ("billing_service_unavailable_error", Retry.BACKOFF),
        ("something_new_error", Retry.BACKOFF),
    ],
)
def test_in_band_errors_and_their_retry_classes(code: str, retry: Retry) -> None:
    message = json.dumps({"type": "error", "data": {"error": "Said\nthe service", "code": code}})
    (error,) = events(codec(), message)
    assert isinstance(error, ServiceError)
    assert (error.kind, error.retry, error_retry(code)) == (code, retry, retry)
    assert error.message.startswith("Said the service")  # one line
    if code == "insufficient_quota_error":
        assert "add credits" in error.message


@pytest.mark.parametrize("body", [None, "oops", [], {"code": 7}, {}])
def test_an_error_stays_an_error_whatever_its_fields(body: Any) -> None:
    (error,) = events(codec(), json.dumps({"type": "error", "data": body}))
    assert isinstance(error, ServiceError) and error.retry is Retry.BACKOFF


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (401, Retry.FATAL),
        (403, Retry.FATAL),
        (400, Retry.FATAL),
        (404, Retry.FATAL),
        (422, Retry.FATAL),
        (402, Retry.FATAL),
        (408, Retry.ONCE),
        (429, Retry.SLOW),
        (500, Retry.BACKOFF),
        (503, Retry.BACKOFF),
    ],
)
def test_handshake_refusals(status: int, retry: Retry) -> None:
    error = codec().handshake_refused(status)
    assert (error.code, error.retry) == (status, retry)


def test_the_401_trace_is_fatal() -> None:
    (rejected,) = of_kind(load_trace("sarvam_reject401.jsonl"), "sdk_exception")
    assert "status_code=401" in rejected["error"]
    assert codec().handshake_refused(401).retry is Retry.FATAL


@pytest.mark.parametrize(
    ("code", "finished", "retry"),
    [
        (1000, True, None),
        (None, True, None),
        (1006, True, None),
        (1000, False, Retry.ONCE),  # its idle limit, or its end of a session: go on at once
        (1001, False, Retry.ONCE),
        (None, False, Retry.BACKOFF),
        (1006, False, Retry.BACKOFF),
        (1011, False, Retry.BACKOFF),
        (1011, True, Retry.BACKOFF),
        (1008, False, Retry.FATAL),
        (1013, False, Retry.SLOW),
    ],
)
def test_closes(code: int | None, finished: bool, retry: Retry | None) -> None:
    error = codec().closed(code, "bye", finished)
    assert (error.retry if error else None) is retry


# -- malformed messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        b'{"type": "data"}',
        "not json",
        "[1, 2]",
        '{"type": "mystery", "data": {}}',
        '{"type": "data", "data": "text"}',
        '{"type": "data", "data": {"language_code": "hi-IN"}}',
        '{"type": "data", "data": {"transcript": 5}}',
        '{"type": "data", "data": {"transcript": "a", "language_code": 5}}',
        '{"type": "data", "data": {"transcript": "a", "language_probability": "high"}}',
        '{"type": "events", "data": {"signal_type": 1}}',
        '{"type": "events", "data": null}',
    ],
)
def test_malformed_messages_are_protocol_errors(message: str | bytes) -> None:
    c = codec()
    send_turn(c, 200)
    with pytest.raises(ProtocolError):
        c.parse(message)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
messageish = st.fixed_dictionaries(
    {"type": st.sampled_from(["data", "events", "error", "other"])},
    optional={
        "data": st.fixed_dictionaries(
            {},
            optional={
                "transcript": json_values,
                "language_code": json_values,
                "language_probability": json_values,
                "signal_type": st.sampled_from(["START_SPEECH", "END_SPEECH"]) | json_values,
                "error": json_values,
                "code": json_values,
            },
        )
        | json_values
    },
)


def _parse_anything(message: str | bytes) -> None:
    c = codec(SarvamConfig(mode="translate"))
    send_turn(c, 400)
    try:
        got = c.parse(message)
    except ProtocolError:
        return
    for event in got.events:
        assert isinstance(event, TokenUpdate | ServiceError | ServiceNotice)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text() | st.binary() | json_values.map(json.dumps) | messageish.map(json.dumps))
def test_parse_raises_nothing_but_protocol_errors(message: str | bytes) -> None:
    _parse_anything(message)


# -- the config section ---------------------------------------------------------------------


def test_default_config_has_no_problems() -> None:
    assert SarvamConfig().problems() == []
    assert LEGACY.problems() == [] and V3_TRANSLATE.problems() == []


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"language": "hindi"}, "language"),
        ({"language": "hi_IN"}, "language"),
        ({"model": "saaras:v2.5"}, "mode"),  # the legacy endpoint only translates
        ({"model": "saaras:v2.5", "mode": "translate", "language": "hi-IN"}, "language"),
        ({"prompt": "council meeting"}, "prompt"),  # only the legacy endpoint takes one
    ],
)
def test_config_problems(changes: dict[str, Any], key: str) -> None:
    assert key in [k for k, _ in replace(SarvamConfig(), **changes).problems()]


def test_translates_follows_the_model_and_mode() -> None:
    assert not SarvamConfig().translates
    assert SarvamConfig(mode="translate").translates
    assert LEGACY.translates and LEGACY.legacy
