"""The Soniox real-time codec: edgecap's side of ``wss://stt-rt.soniox.com/transcribe-websocket``.

Pure translation (see ``edgecap.services.codec``); the wire format is the one the official SDK
2.10 was recorded sending and accepting (``../shared/protocol-traces/soniox_*.jsonl``,
``../shared/PROTOCOLS.md`` §1):

- auth: ``Authorization: Bearer <key>`` at the handshake, never ``api_key`` in the config;
- first frame: the JSON start message; then audio as BINARY frames; ``{"type": "keepalive"}``
  and ``{"type": "finalize"}`` as TEXT; an empty TEXT frame ends the audio;
- no turns on the wire: a session is one audio stream, so ``begin_turn`` sends nothing and
  ``end_turn`` is the finalize request;
- from the service: JSON results (final tokens first, then the provisional tail, which each
  result replaces), the special final tokens ``<end>`` (endpoint) and ``<fin>`` (finalize
  done), ``finished: true`` at the end, or an error (``error_code``/``error_type``) that the
  service follows with a close.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from edgecap.captions.tokens import Token, TokenKind, TokenUpdate
from edgecap.config.schema import SonioxConfig
from edgecap.config.secrets import SecretValue
from edgecap.services.codec import (
    Handshake,
    Outgoing,
    Parsed,
    ProtocolError,
    Retry,
    ServiceError,
    ServiceEvent,
    SessionFinished,
    TokenRequest,
)
from edgecap.services.service_text import finite as _finite
from edgecap.services.service_text import json_type as _json_type
from edgecap.services.service_text import shorten as _shorten

END_TOKEN = "<end>"  # endpoint detected: the speaker finished a phrase
FIN_TOKEN = "<fin>"  # reply to a finalize request

# Byte for byte what SDK 2.10 sends (soniox_happy.jsonl).
KEEPALIVE_MESSAGE = '{"type": "keepalive"}'
FINALIZE_MESSAGE = '{"type": "finalize"}'
END_OF_AUDIO_MESSAGE = ""  # an empty TEXT frame; an empty BINARY frame would do too

_TOKEN_KINDS: dict[str, TokenKind] = {
    "original": "original",
    "translation": "translation",
    "none": "none",
}

# §1.6: Soniox error_code → what the Link does about it.
_ERROR_RETRY: dict[int, Retry] = {
    400: Retry.FATAL,
    401: Retry.FATAL,
    402: Retry.FATAL,
    403: Retry.FATAL,
    408: Retry.ONCE,
    429: Retry.SLOW,
    500: Retry.BACKOFF,
    503: Retry.NOW,
}

# A slug for a code when the service sent no error_type (and for HTTP refusals).
_CODE_SLUGS: dict[int, str] = {
    400: "bad_request",
    401: "unauthenticated",
    402: "payment_required",
    403: "permission_denied",
    404: "not_found",
    408: "request_timeout",
    429: "limit_exceeded",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

# Only consulted when an error message carries no usable error_code.
_TYPE_RETRY: dict[str, Retry] = {
    "invalid_request": Retry.FATAL,
    "model_not_available": Retry.FATAL,
    "unauthenticated": Retry.FATAL,
    "temp_api_key_session_expired": Retry.FATAL,
    "permission_denied": Retry.FATAL,
    "organization_balance_exhausted": Retry.FATAL,
    "request_timeout": Retry.ONCE,
    "limit_exceeded": Retry.SLOW,
    "max_concurrent_connections_reached": Retry.SLOW,
    "internal_error": Retry.BACKOFF,
    "service_unavailable": Retry.NOW,
}

_CLOSE_KINDS: dict[int, str] = {
    1008: "policy_violation",
    1011: "server_error",
    1012: "restarting",
    1013: "try_again_later",
    1014: "bad_gateway",
}

_EXCERPT = 80  # characters of a bad message quoted in a ProtocolError
_MESSAGE_MAX = 200  # characters of a service's error text or close reason kept


def error_retry(code: int | None, error_type: str | None = None) -> Retry:
    """The retry class of a Soniox error (§1.6). ``error_type`` only decides when the code
    is missing; unknown errors are retried with backoff, never in a tight loop."""
    if code is None:
        if error_type is None:
            return Retry.BACKOFF
        if error_type.endswith("_budget_exhausted"):
            return Retry.FATAL
        return _TYPE_RETRY.get(error_type, Retry.BACKOFF)
    if code in _ERROR_RETRY:
        return _ERROR_RETRY[code]
    if 400 <= code < 500:
        return Retry.FATAL
    return Retry.BACKOFF


class SonioxCodec:
    """Soniox real-time STT and translation, as the Link's ``Codec``."""

    name = "soniox"
    slow_retry_min = 5.0  # 429: Soniox asks for a backoff starting at 2-5 s
    audio_chunk_ms = 100
    sends_finished = True  # the end of audio is answered with ``finished: true``
    finish_grace = 0.0  # not used: the link waits for finished
    needs_key = True

    def __init__(
        self, cfg: SonioxConfig, *, sample_rate: int = 16000, replay_speed: float = 1.5
    ) -> None:
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.keepalive_interval: float | None = cfg.keepalive
        self.session_max: float = cfg.session_max
        self.replay_speed = replay_speed

    def __repr__(self) -> str:
        return (
            f"SonioxCodec(url={self.cfg.url!r}, model={self.cfg.model!r}, "
            f"sample_rate={self.sample_rate})"
        )

    # -- client → service ---------------------------------------------------------------

    def token_request(self, key: SecretValue | None) -> TokenRequest | None:
        return None  # the key goes in the handshake itself

    def handshake(self, key: SecretValue | None, token: SecretValue | None = None) -> Handshake:
        if key is None:
            raise ValueError("Soniox needs an API key")
        value = key.reveal().strip()
        # A CR/LF in a header value would smuggle extra headers into the request.
        if not value or not value.isprintable():
            raise ValueError(f"the Soniox API key from {key.origin} is empty or not printable")
        return Handshake(url=self.cfg.url, headers=(f"Authorization: Bearer {value}",))

    def start_config(self) -> dict[str, Any]:
        """The start message as a dict, keys in the SDK's order (never the key)."""
        cfg = self.cfg
        msg: dict[str, Any] = {
            "model": cfg.model,
            "audio_format": "pcm_s16le",
            "num_channels": 1,
            "sample_rate": self.sample_rate,
        }
        if cfg.language_hints:
            msg["language_hints"] = list(cfg.language_hints)
            if cfg.language_hints_strict:
                msg["language_hints_strict"] = True
        context: dict[str, Any] = {}
        if cfg.context_general:
            context["general"] = [{"key": k, "value": v} for k, v in cfg.context_general]
        if cfg.context_text:
            context["text"] = cfg.context_text
        if cfg.context_terms:
            context["terms"] = list(cfg.context_terms)
        if cfg.translation_terms:
            context["translation_terms"] = [
                {"source": s, "target": t} for s, t in cfg.translation_terms
            ]
        if context:
            msg["context"] = context
        msg["enable_speaker_diarization"] = cfg.diarization
        msg["enable_language_identification"] = cfg.language_identification
        msg["enable_endpoint_detection"] = cfg.endpoint_detection
        if cfg.max_endpoint_delay:
            msg["max_endpoint_delay_ms"] = round(cfg.max_endpoint_delay * 1000)
        if cfg.translation == "one_way":
            msg["translation"] = {"type": "one_way", "target_language": cfg.target_language}
        elif cfg.translation == "two_way":
            msg["translation"] = {
                "type": "two_way",
                "language_a": cfg.language_a,
                "language_b": cfg.language_b,
            }
        return msg

    def start(self) -> list[Outgoing]:
        # json.dumps with its default separators: the SDK's exact bytes.
        return [Outgoing(json.dumps(self.start_config()), "start")]

    def begin_turn(self) -> list[Outgoing]:
        """Nothing: Soniox hears one stream per session and finds the utterances itself."""
        return []

    def audio(self, pcm: bytes) -> list[Outgoing]:
        # An empty binary frame means "end of audio" to Soniox, and an odd length would
        # shift every later sample by a byte: both are bugs upstream, not audio.
        if not pcm:
            raise ValueError("empty audio chunk (Soniox would take it as end of audio)")
        if len(pcm) % 2:
            raise ValueError(f"audio chunk of {len(pcm)} bytes is not whole s16le samples")
        return [Outgoing(bytes(pcm), "audio")]

    def end_turn(self) -> list[Outgoing]:
        """Finalize: everything sent so far becomes final, answered by ``<fin>``."""
        return [Outgoing(FINALIZE_MESSAGE, "finalize")]

    def keepalive(self) -> Outgoing:
        return Outgoing(KEEPALIVE_MESSAGE, "keepalive")

    def end_of_stream(self) -> list[Outgoing]:
        return [Outgoing(END_OF_AUDIO_MESSAGE, "end")]

    def reset(self) -> None:
        """Nothing to forget: every Soniox message stands on its own."""

    # -- service → client ---------------------------------------------------------------

    def parse(self, message: str | bytes) -> Parsed:
        """Soniox asks for no replies: only events."""
        return Parsed(events=tuple(self._events(message)))

    def _events(self, message: str | bytes) -> list[ServiceEvent]:
        if not isinstance(message, str):
            size = len(message) if isinstance(message, bytes | bytearray) else "?"
            raise ProtocolError(f"binary message ({size} bytes): Soniox sends JSON text only")
        try:
            data = json.loads(message)
        except (ValueError, RecursionError):
            raise ProtocolError(f"not JSON: {_excerpt(message)}") from None
        if not isinstance(data, dict):
            raise ProtocolError(f"not a JSON object but {_json_type(data)}")

        error = _error(data)
        raw_tokens = data.get("tokens")
        if error is not None:
            # The service closes right after an error, so the session did not finish. Tokens
            # sent with it are kept when they parse; the error must not be lost to them.
            events: list[ServiceEvent] = []
            if isinstance(raw_tokens, list) and raw_tokens:
                with contextlib.suppress(ProtocolError):
                    events.append(_update(data, raw_tokens))
            return [*events, error]

        finished = data.get("finished")
        if finished is not None and not isinstance(finished, bool):
            raise ProtocolError(f"finished is {_json_type(finished)}, not a boolean")
        if raw_tokens is None and not finished:
            raise ProtocolError(f"neither tokens, an error nor finished: {_excerpt(message)}")
        if raw_tokens is not None and not isinstance(raw_tokens, list):
            raise ProtocolError(f"tokens is {_json_type(raw_tokens)}, not a list")
        update = _update(data, raw_tokens or [])
        return [update, SessionFinished()] if finished else [update]

    def handshake_refused(self, status: int) -> ServiceError:
        kind = _CODE_SLUGS.get(status, f"http_{status}")
        message = f"the service refused the connection with HTTP {status}"
        if status in (400, 404):
            return ServiceError(status, kind, message + " (check url and config)", Retry.FATAL)
        if status in (401, 402, 403):
            return ServiceError(status, kind, message, Retry.FATAL)
        if status == 408:
            return ServiceError(status, kind, message, Retry.ONCE)
        if status == 429:
            return ServiceError(status, kind, message, Retry.SLOW)
        return ServiceError(status, kind, message, Retry.BACKOFF)

    def closed(self, code: int | None, reason: str, finished: bool) -> ServiceError | None:
        if finished:
            return None
        said = f": {_shorten(reason)}" if reason and reason.strip() else ""
        if code is None or code == 1006:
            return ServiceError(
                code,
                "connection_lost",
                f"the connection ended without a close{said}",
                Retry.BACKOFF,
            )
        if code in (1000, 1001):
            # The service ended the session before finishing it: reconnect and replay.
            return ServiceError(
                code, "closed", f"the service closed the session early{said}", Retry.BACKOFF
            )
        kind = _CLOSE_KINDS.get(code, f"close_{code}")
        return ServiceError(code, kind, f"the service closed the connection{said}", Retry.BACKOFF)


# -- parsing helpers -------------------------------------------------------------------


def _error(data: dict[str, Any]) -> ServiceError | None:
    """The error a message reports, or None. A message that says it is an error stays one
    even when its fields are odd: losing the error would hide why the session ended."""
    code_raw = data.get("error_code")
    type_raw = data.get("error_type")
    text_raw = data.get("error_message")
    if code_raw is None and type_raw is None and text_raw is None:
        return None
    code: int | None = None
    if isinstance(code_raw, int) and not isinstance(code_raw, bool):
        code = code_raw
    elif isinstance(code_raw, str) and code_raw.isascii() and code_raw.isdigit():
        code = int(code_raw[:6])
    error_type = type_raw if isinstance(type_raw, str) and type_raw.strip() else None
    if error_type is not None:
        kind = _shorten(error_type, 60)
    elif code is not None:
        kind = _CODE_SLUGS.get(code, f"error_{code}")
    else:
        kind = "error"
    message = _shorten(text_raw) if isinstance(text_raw, str) else ""
    return ServiceError(code, kind, message, error_retry(code, error_type))


def _update(data: dict[str, Any], raw_tokens: list[Any]) -> TokenUpdate:
    final: list[Token] = []
    provisional: list[Token] = []
    endpoint = finalized = False
    for index, raw in enumerate(raw_tokens):
        token = _token(raw, index)
        if token.text == END_TOKEN:
            endpoint = True
        elif token.text == FIN_TOKEN:
            finalized = True
        elif token.is_final:
            final.append(token)
        else:
            provisional.append(token)
    return TokenUpdate(
        final=tuple(final),
        provisional=tuple(provisional),
        endpoint=endpoint,
        finalized=finalized,
        final_audio_ms=_ms(data, "final_audio_proc_ms"),
        total_audio_ms=_ms(data, "total_audio_proc_ms"),
    )


def _token(raw: Any, index: int) -> Token:
    if not isinstance(raw, dict):
        raise ProtocolError(f"token {index} is {_json_type(raw)}, not an object")
    text = raw.get("text")
    if not isinstance(text, str):
        raise ProtocolError(f"token {index} has no text string")
    is_final = raw.get("is_final")
    if not isinstance(is_final, bool):
        raise ProtocolError(f"token {index}: is_final is {_json_type(is_final)}, not a boolean")
    status = raw.get("translation_status")
    if status is None:
        kind: TokenKind = "none"
    elif isinstance(status, str) and status in _TOKEN_KINDS:
        kind = _TOKEN_KINDS[status]
    else:
        what = _excerpt(status) if isinstance(status, str) else _json_type(status)
        raise ProtocolError(f"token {index}: unknown translation_status {what}")
    speaker = raw.get("speaker")
    if isinstance(speaker, int) and not isinstance(speaker, bool):
        speaker = str(speaker)
    elif speaker is not None and not isinstance(speaker, str):
        raise ProtocolError(f"token {index}: speaker is {_json_type(speaker)}")
    confidence = raw.get("confidence")
    if confidence is not None:
        confidence = _finite(confidence)
        if confidence is None:
            raise ProtocolError(f"token {index}: confidence is not a finite number")
    return Token(
        text=text,
        is_final=is_final,
        kind=kind,
        start_ms=_ms(raw, "start_ms", index),
        end_ms=_ms(raw, "end_ms", index),
        speaker=speaker,
        language=_opt_str(raw, "language", index),
        source_language=_opt_str(raw, "source_language", index),
        confidence=confidence,
    )


def _ms(obj: dict[str, Any], field: str, index: int | None = None) -> int | None:
    """A millisecond count: absent or null → None; a whole, finite, non-negative number."""
    value = obj.get(field)
    if value is None:
        return None
    number = _finite(value)
    if number is None or number < 0:
        where = f"token {index}: " if index is not None else ""
        raise ProtocolError(f"{where}{field} is not a non-negative number")
    return value if isinstance(value, int) else int(number)


def _opt_str(obj: dict[str, Any], field: str, index: int) -> str | None:
    value = obj.get(field)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"token {index}: {field} is {_json_type(value)}, not a string")
    return value


def _excerpt(text: str) -> str:
    return repr(_shorten(text, _EXCERPT))
