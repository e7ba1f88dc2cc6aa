"""The Azure Speech codec: edgecap's side of the Speech service's WebSocket protocol ("USP").

Pure translation (see ``edgecap.services.codec``); the wire format is the one the official
Speech SDK 1.53 was recorded sending and accepting (``../shared/protocol-traces/azure_*.jsonl``,
``../shared/PROTOCOLS.md`` §3a):

- handshake: the mode's path and query string (recognition: ``language``, ``format``,
  ``profanity``; translation: ``from``, one ``to`` per target, ``features=texttospeech`` and
  ``voice``), the auth header (``[azure] auth``: ``Ocp-Apim-Subscription-Key``, or
  ``Authorization: Bearer`` with a token the link got from the issueToken endpoint with the
  key, or none for a container) and a fresh ``X-ConnectionId``; no subprotocol
  (websocket-client fails when a requested one is not echoed, and the service needs none);
- text messages: ``Name:value`` header lines, a blank line, a JSON body; binary messages: a
  2-byte big-endian header length, the header lines, the payload;
- ``speech.config`` once per connection; per turn (one utterance) a new ``X-RequestId`` and
  ``X-StreamId``, a ``speech.context`` and a RIFF header as the first audio message; audio in
  binary ``audio`` messages; an empty one ends the turn; ``telemetry`` answers ``turn.end``;
- results: ``speech.*`` and ``translation.*`` JSON, times in 100 ns ticks from the start of
  the turn's audio; spoken translations as binary ``translation.synthesis`` messages.
"""

from __future__ import annotations

import json
import logging
import platform
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from edgecap import __version__
from edgecap.captions.events import SynthesizedAudio
from edgecap.captions.tokens import Token, TokenKind, TokenUpdate
from edgecap.config.schema import AzureConfig
from edgecap.config.secrets import SecretValue
from edgecap.services.codec import (
    Handshake,
    Outgoing,
    Parsed,
    ProtocolError,
    Retry,
    ServiceError,
    ServiceEvent,
    ServiceNotice,
    TokenRequest,
)
from edgecap.services.service_text import finite as _finite
from edgecap.services.service_text import shorten as _shorten

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
TICKS_PER_MS = 10_000  # the service counts time in 100 ns ticks
MAX_AUDIO_BODY = 8192  # the service's limit for one audio message's payload
MAX_HEADER = 8192  # and for a binary message's header block

RECOGNITION_PATH = "/speech/recognition/{mode}/cognitiveservices/v1"
TRANSLATION_PATH = "/speech/translation/cognitiveservices/v1"
SYNTH_FORMAT = "audio/x-wav"  # a whole WAV file per message, RIFF header included
TOKEN_URL = "https://{region}.api.cognitive.microsoft.com/sts/v1.0/issueToken"
TOKEN_LIFETIME = 600.0  # an issued token is valid for 10 minutes
TOKEN_RENEW_BEFORE = 120.0  # a connection made with less than this left gets a new one

# The 44-byte header the SDK sends as a turn's first audio: PCM, mono, 16 kHz, 16 bit, with
# both sizes 0 (a stream of unknown length). Without it the service closes with 1007.
RIFF_HEADER = (
    b"RIFF"
    + struct.pack("<I", 0)
    + b"WAVEfmt "
    + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
    + b"data"
    + struct.pack("<I", 0)
)

# RecognitionStatus → what it means for the captions (§3a, JS SDK Enums.ts).
_NO_CAPTION = frozenset({"NoMatch", "InitialSilenceTimeout", "BabbleTimeout", "EndOfDictation"})
_STATUS_ERRORS: dict[str, tuple[str, Retry]] = {
    "Error": ("service_error", Retry.BACKOFF),  # the SDK retried it 4 times
    "TooManyRequests": ("too_many_requests", Retry.SLOW),
    "BadRequest": ("bad_request", Retry.FATAL),
    "Forbidden": ("forbidden", Retry.FATAL),
}

_HTTP_SLUGS: dict[int, str] = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    408: "request_timeout",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

# Close codes that mean our client broke the protocol: a retry may help (a fresh turn), but
# someone must look at it, so it is logged as an error every time.
_OUR_BUG_CLOSES: dict[int, str] = {
    1002: "protocol_error",  # missing headers, a bad or reused X-RequestId
    1003: "unsupported_data",  # a frame kind the service does not take
    1007: "invalid_payload",  # bad framing or RIFF header
}
_CLOSE_KINDS: dict[int, str] = {
    1008: "policy_violation",
    1011: "server_error",
    1012: "restarting",
    1013: "try_again_later",
    1014: "bad_gateway",
}

# [daemon] profanity → the service's own filter, which also covers the translations.
PROFANITY = {"mask": "masked", "remove": "removed", "off": "raw"}

# A result's translations: language (lowercased) → text, and why translating failed.
Translated = tuple[dict[str, str], str | None]

# RecognitionStatus values that mean speech was heard but gave no caption: a status note.
_NO_CAPTION_NOTES = {
    "NoMatch": "speech was heard but not recognised",
    "BabbleTimeout": "only noise was heard",
}

_EXCERPT = 80
_MESSAGE_MAX = 200


def _platform_context() -> dict[str, Any]:
    """What ``speech.config`` says about the client, in the SDK's shape (read once)."""
    uname = platform.uname()
    return {
        "system": {
            "version": __version__,
            "name": "edgecap",
            "build": f"{uname.system}-{uname.machine}",
            "lang": "Python",
        },
        "os": {"name": uname.version, "version": uname.release, "platform": uname.system},
    }


@dataclass
class _Turn:
    """One utterance on this connection, by its X-RequestId."""

    request_id: str
    stream_id: int
    offset_ms: int  # where its audio begins in the session's audio
    header_sent: bool = False
    received: dict[str, list[str]] = field(default_factory=dict)  # path → receipt times


class AzureCodec:
    """Azure Speech recognition and speech translation, as the Link's ``Codec``.

    ``keepalive_interval`` is None: the protocol has no keepalive and the SDK sends nothing
    in audio gaps (§3a). Silence would keep a connection open past the service's 180 s
    idle limit, but only inside a turn (audio outside one is refused), so it would turn
    every pause into billed audio that the service recognises; instead the link closes a
    quiet connection itself (``[link] connect = on_demand``, ``idle_close`` 60 s by
    default, well under 180 s) and renews long ones before ``session_max``, at a pause.
    With ``connect = warm`` the service's idle close (1000/1001) comes after 180 s quiet
    and ``closed`` answers it with ``Retry.ONCE``: a new connection at once, no speech lost
    (nothing was being said).
    """

    name = "azure"
    keepalive_interval: float | None = None
    slow_retry_min = 60.0  # 429: the documented backoff is 1-2-4-4 minutes
    audio_chunk_ms = 100  # 3200 B, as the SDK sends
    sends_finished = False  # the service ends turns, never sessions
    # turn.end is the last message of a turn (synthesis comes before it), so once every
    # turn end was answered there is nothing more to wait for but stragglers.
    finish_grace = 0.5

    def __init__(
        self,
        cfg: AzureConfig,
        *,
        profanity: str = "mask",
        replay_speed: float = 1.5,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.cfg = cfg
        # edgecap's mask | remove | off → the service's own filter
        self.profanity = PROFANITY[profanity]
        self.session_max: float = cfg.session_max
        self.replay_speed = replay_speed
        self.needs_key = cfg.auth != "none"  # a container on the LAN may take none
        self.token_lifetime = TOKEN_LIFETIME
        self.token_renew_before = TOKEN_RENEW_BEFORE
        self._clock = clock
        self._new_id = new_id
        self._system = _platform_context()
        self._voice_target = cfg.voice_target()
        self.reset()

    def __repr__(self) -> str:
        return f"AzureCodec(url={self.url()!r}, mode={self.cfg.mode!r})"

    # -- the URL ------------------------------------------------------------------------

    def path(self) -> str:
        if self.cfg.mode == "translation":
            return TRANSLATION_PATH
        return RECOGNITION_PATH.format(mode=self.cfg.recognition_mode)

    def query(self) -> list[tuple[str, str]]:
        """The query parameters in the SDK's (alphabetical) order."""
        cfg = self.cfg
        if cfg.mode == "translation":
            params = [("from", cfg.language), *(("to", t) for t in cfg.targets)]
            if self.profanity != "masked":  # the service's default; the SDK left it out
                params.append(("profanity", self.profanity))
            if cfg.voice:
                params += [("features", "texttospeech"), ("voice", cfg.voice)]
        else:
            params = [("language", cfg.language), ("profanity", self.profanity)]
            if cfg.format == "detailed":  # the Python SDK leaves the default out
                params += [
                    ("format", "detailed"),
                    ("wordLevelConfidence", "true"),
                    ("wordLevelTimestamps", "true"),
                ]
        return sorted(params, key=lambda p: p[0])  # stable: the to= stay in target order

    def url(self) -> str:
        cfg = self.cfg
        query = urlencode(self.query())
        if cfg.endpoint:
            parts = urlsplit(cfg.endpoint)
            joined = f"{parts.query}&{query}" if parts.query else query
            return parts._replace(query=joined, fragment="").geturl()
        if cfg.host:
            return f"{cfg.host.rstrip('/')}{self.path()}?{query}"
        if cfg.region:
            kind = "s2s" if cfg.mode == "translation" else "stt"
            return f"wss://{cfg.region}.{kind}.speech.microsoft.com{self.path()}?{query}"
        raise ValueError("Azure Speech needs region, endpoint or host in [azure]")

    # -- client → service ---------------------------------------------------------------

    def token_request(self, key: SecretValue | None) -> TokenRequest | None:
        """auth = token: the key is exchanged for a 10-minute token at the region's
        issueToken endpoint (or ``token_url``), renewed 2 minutes before it ends."""
        if self.cfg.auth != "token":
            return None
        url = self.cfg.token_url
        if not url:
            if not self.cfg.region:
                raise ValueError("Azure Speech auth = token needs region or token_url")
            url = TOKEN_URL.format(region=self.cfg.region)
        return TokenRequest(
            url,
            headers=(f"Ocp-Apim-Subscription-Key: {_key_value(key)}",),
            lifetime=self.token_lifetime,
            renew_before=self.token_renew_before,
        )

    def handshake(self, key: SecretValue | None, token: SecretValue | None = None) -> Handshake:
        """auth = key: ``Ocp-Apim-Subscription-Key``; token: ``Authorization: Bearer``
        alone (the SDK sent both when both were set; the token is what was asked for);
        none: no auth header (a container). ``X-ConnectionId`` always."""
        headers: list[str] = []
        if self.cfg.auth == "key":
            headers.append(f"Ocp-Apim-Subscription-Key: {_key_value(key)}")
        elif self.cfg.auth == "token":
            if token is None:
                raise ValueError("Azure Speech auth = token: no token for the handshake")
            value = token.reveal().strip()
            if not value or not value.isprintable() or any(c.isspace() for c in value):
                raise ValueError(f"the token from {token.origin} is empty or not printable")
            headers.append(f"Authorization: Bearer {value}")
        self._connection_id = self._new_id()
        self._connect_time = self._clock()
        headers.append(f"X-ConnectionId: {self._connection_id}")
        return Handshake(url=self.url(), headers=tuple(headers))

    def speech_config(self) -> dict[str, Any]:
        source = {
            "type": "Stream",
            "model": "",
            "samplerate": str(SAMPLE_RATE),
            "bitspersample": "16",
            "channelcount": "1",
        }
        return {"context": {**self._system, "audio": {"source": source}}}

    def start(self) -> list[Outgoing]:
        self._started_time = self._clock()
        head = [("Path", "speech.config"), ("Content-Type", "application/json")]
        return [Outgoing(self._text(head, self.speech_config()), "start")]

    def speech_context(self, continuation: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``speech.context`` body, keys in the SDK's order."""
        cfg = self.cfg
        body: dict[str, Any] = {}
        if cfg.mode == "translation":
            # On the v1 path language and targets come from the query; the SDK sent no
            # phraseDetection there (azure_translation_v1.jsonl).
            translation: dict[str, Any] = {
                "targetLanguages": list(cfg.targets),
                "output": {"includePassThroughResults": True},
            }
            if self._voice_target is not None:
                translation["onSuccess"] = {"action": "Synthesize"}
                translation["onPassthrough"] = {"action": "Synthesize"}
            body["translation"] = translation
            if self._voice_target is not None:
                body["synthesis"] = {
                    "synthesizedLanguages": [self._voice_target],
                    "defaultVoices": {self._voice_target: cfg.voice},
                }
            body["audio"] = {"streams": {"1": None}}
        else:
            body["phraseDetection"] = {
                "language": cfg.language,
                "enrichment": {"profanity": self.profanity},
            }
            body["audio"] = {"streams": {"1": None}}
            if cfg.format == "detailed":
                body["phraseOutput"] = {
                    "format": "Detailed",
                    "detailed": {"options": ["WordTimings", "WordConfidence"]},
                }
        if continuation is not None:
            body["continuation"] = continuation
        return body

    def begin_turn(self) -> list[Outgoing]:
        """A new request id and stream id, ``speech.context``, then the RIFF header."""
        if self._turn is not None:
            raise ValueError("a turn began inside another")
        request_id = self._new_id()
        if request_id in self._turns:
            raise ValueError("a request id was drawn twice")  # the service closes with 1002
        self._stream_id += 1
        turn = _Turn(request_id, self._stream_id, self._sent_bytes // BYTES_PER_MS)
        self._turns[request_id] = turn
        self._turn = turn
        continuation = None
        if self._service_tag is not None:
            ticks = turn.offset_ms * TICKS_PER_MS
            continuation = {
                "previousServiceTag": self._service_tag,
                "audio": {"streams": {"1": {"offset": str(ticks)}}},
            }
        head = [("Path", "speech.context"), ("X-RequestId", request_id)]
        context = Outgoing(self._text(head, self.speech_context(continuation)), "turn")
        return [context, self._audio_message(turn, RIFF_HEADER, riff=True)]

    def audio(self, pcm: bytes) -> list[Outgoing]:
        turn = self._turn
        if turn is None:
            raise ValueError("audio outside a turn")
        if not pcm:
            raise ValueError("empty audio chunk (Azure would take it as the end of the turn)")
        if len(pcm) % 2:
            raise ValueError(f"audio chunk of {len(pcm)} bytes is not whole s16le samples")
        self._sent_bytes += len(pcm)
        data = bytes(pcm)
        return [
            self._audio_message(turn, data[i : i + MAX_AUDIO_BODY])
            for i in range(0, len(data), MAX_AUDIO_BODY)
        ]

    def end_turn(self) -> list[Outgoing]:
        """The empty audio message: the service answers with the turn's last results and
        ``turn.end``."""
        turn, self._turn = self._turn, None
        if turn is None:
            raise ValueError("no turn to end")
        return [self._audio_message(turn, b"", what="end_turn")]

    def keepalive(self) -> Outgoing | None:
        return None

    def end_of_stream(self) -> list[Outgoing]:
        """Nothing: the protocol ends turns, not connections."""
        return []

    def reset(self) -> None:
        self._connection_id = ""
        self._connect_time: float | None = None
        self._started_time: float | None = None
        self._turn: _Turn | None = None
        self._turns: dict[str, _Turn] = {}
        self._stream_id = 0
        self._sent_bytes = 0  # PCM sent in this session (RIFF headers not counted)
        self._service_tag: str | None = None
        self._metrics_sent = False
        self._synth_format = SYNTH_FORMAT  # of the spoken translation being received

    # -- framing --------------------------------------------------------------------------

    def _timestamp(self) -> str:
        return _iso(self._clock())

    def _text(self, head: list[tuple[str, str]], body: dict[str, Any]) -> str:
        lines = [("X-Timestamp", self._timestamp()), *head]
        header = "".join(f"{name}:{value}\r\n" for name, value in lines)
        return header + "\r\n" + json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    def _audio_message(
        self, turn: _Turn, payload: bytes, *, riff: bool = False, what: str = "audio"
    ) -> Outgoing:
        lines = [("X-Timestamp", self._timestamp()), ("Path", "audio")]
        if riff:
            lines.append(("Content-Type", "audio/x-wav"))
        lines += [("X-RequestId", turn.request_id), ("X-StreamId", str(turn.stream_id))]
        header = "".join(f"{name}:{value}\r\n" for name, value in lines).encode("ascii")
        return Outgoing(struct.pack(">H", len(header)) + header + payload, what)

    # -- service → client ---------------------------------------------------------------

    def parse(self, message: str | bytes) -> Parsed:
        if isinstance(message, str):
            headers, body_text = _split_text(message)
            binary = None
        elif isinstance(message, bytes | bytearray):
            headers, binary = _split_binary(bytes(message))
            body_text = None
        else:
            raise ProtocolError(f"a message of type {type(message).__name__}")
        path = headers.get("path")
        if not path:
            raise ProtocolError("a message without Path")
        turn = self._turn_of(headers.get("x-requestid"))
        if turn is not None:
            turn.received.setdefault(path, []).append(self._timestamp())
        if binary is not None:
            return Parsed(events=tuple(self._binary(path, headers, binary)))
        body = _json_body(path, body_text or "")
        return self._text_message(path, body, turn)

    def _turn_of(self, request_id: str | None) -> _Turn | None:
        if request_id is None:  # the service always names it; if not, the latest turn
            return next(reversed(self._turns.values()), None)
        turn = self._turns.get(request_id.lower())
        if turn is None:
            raise ProtocolError(f"a message for request {_excerpt(request_id)}, not ours")
        return turn

    def _binary(self, path: str, headers: dict[str, str], payload: bytes) -> list[ServiceEvent]:
        if path not in ("translation.synthesis", "audio"):
            raise ProtocolError(f"a binary message with Path {_excerpt(path)}")
        language = self._voice_target or (self.cfg.targets[0] if self.cfg.targets else "")
        self._synth_format = headers.get("content-type") or SYNTH_FORMAT
        return [SynthesizedAudio(language, self._synth_format, payload, end=False)]

    def _text_message(self, path: str, body: dict[str, Any], turn: _Turn | None) -> Parsed:
        offset_ms = turn.offset_ms if turn is not None else 0
        if path == "turn.start":
            tag = _get(body, "context", dict, required=False) or {}
            service_tag = tag.get("serviceTag")
            if isinstance(service_tag, str) and service_tag:
                self._service_tag = service_tag
            return Parsed()
        if path in ("speech.startDetected", "speech.endDetected"):
            return Parsed()
        if path in ("speech.hypothesis", "speech.fragment"):
            return Parsed(events=(self._hypothesis(body, None, offset_ms),))
        if path == "speech.phrase":
            return Parsed(events=self._phrase(body, None, offset_ms))
        if path == "translation.hypothesis":
            return Parsed(events=(self._hypothesis(body, _translation(body), offset_ms),))
        if path == "translation.phrase":
            return Parsed(events=self._phrase(body, _translation(body), offset_ms))
        if path == "translation.response":
            return self._response(body, offset_ms)
        if path in ("translation.synthesis.end", "audio.end"):
            status = body.get("SynthesisStatus", body.get("Status"))
            if status not in (None, "Success"):
                log.warning(
                    "Azure could not speak a translation: %s %s",
                    _shorten(str(status)),
                    _shorten(str(body.get("FailureReason", ""))),
                )
            language = self._voice_target or (self.cfg.targets[0] if self.cfg.targets else "")
            end = SynthesizedAudio(language, self._synth_format, b"", end=True)
            return Parsed(events=(end,))
        if path == "turn.end":
            if turn is None:
                raise ProtocolError("turn.end without a turn")
            return Parsed(
                events=(TokenUpdate(finalized=True),),
                replies=(self._telemetry(turn),),
            )
        raise ProtocolError(f"unknown Path {_excerpt(path)}")

    def _telemetry(self, turn: _Turn) -> Outgoing:
        """The acknowledgement of a turn's end: what was received when (the service may
        drop a client that does not send it)."""
        metrics: list[dict[str, Any]] = []
        if not self._metrics_sent and self._connect_time is not None:
            self._metrics_sent = True
            end = self._started_time if self._started_time is not None else self._connect_time
            metrics.append(
                {
                    "Name": "Connection",
                    "Id": self._connection_id,
                    "Start": _iso(self._connect_time),
                    "End": _iso(end),
                }
            )
        body = {
            "ReceivedMessages": [{path: times} for path, times in turn.received.items()],
            "Metrics": metrics,
        }
        head = [
            ("Path", "telemetry"),
            ("Content-Type", "application/json; charset=utf-8"),
            ("X-RequestId", turn.request_id),
        ]
        self._turns.pop(turn.request_id, None)  # answered: later messages for it are stray
        return Outgoing(self._text(head, body), "telemetry")

    def _response(self, body: dict[str, Any], offset_ms: int) -> Parsed:
        """The universal-v2 form: ``{"SpeechPhrase"|"SpeechHypothesis": {…}, "Translations":
        […], "TranslationStatus": …}``, turned into the phrase or hypothesis it stands for."""
        translation = {
            "TranslationStatus": body.get("TranslationStatus", "Success"),
            "Translations": body.get("Translations", []),
            "FailureReason": body.get("FailureReason"),
        }
        translations = _translation({"Translation": translation})
        phrase = body.get("SpeechPhrase")
        if isinstance(phrase, dict):
            return Parsed(events=self._phrase(phrase, translations, offset_ms))
        hypothesis = body.get("SpeechHypothesis")
        if isinstance(hypothesis, dict):
            return Parsed(events=(self._hypothesis(hypothesis, translations, offset_ms),))
        raise ProtocolError("translation.response without SpeechPhrase or SpeechHypothesis")

    def _spoken_kind(self) -> TokenKind:
        return "original" if self.cfg.mode == "translation" else "none"

    def _hypothesis(
        self, body: dict[str, Any], translations: Translated | None, offset_ms: int
    ) -> TokenUpdate:
        text = _get(body, "Text", str)
        start, end = _times(body, offset_ms)
        tokens = (
            [
                Token(
                    text,
                    False,
                    self._spoken_kind(),
                    start,
                    end,
                    language=self.cfg.language,
                    speaker=_speaker(body),
                )
            ]
            if text
            else []
        )
        if translations is not None:
            tokens += self._translated(translations[0], final=False)
        return TokenUpdate(provisional=tuple(tokens))

    def _phrase(
        self, body: dict[str, Any], translations: Translated | None, offset_ms: int
    ) -> tuple[ServiceEvent, ...]:
        status = _get(body, "RecognitionStatus", str)
        if status in _STATUS_ERRORS:
            kind, retry = _STATUS_ERRORS[status]
            detail = body.get("FailureReason") or body.get("Error") or ""
            message = f"RecognitionStatus {status}" + (
                f": {_shorten(str(detail))}" if detail else ""
            )
            return (ServiceError(None, kind, message, retry),)
        start, end = _times(body, offset_ms)
        final_audio_ms = end if end is not None else None
        if status in _NO_CAPTION:
            # Nothing was said (or a dictation segment ended): clear the tail, no caption.
            update = TokenUpdate(final_audio_ms=final_audio_ms)
            note = _NO_CAPTION_NOTES.get(status)
            if note is None:
                return (update,)
            return (update, ServiceNotice(_slug(status), note))
        if status != "Success":
            raise ProtocolError(f"unknown RecognitionStatus {_excerpt(status)}")
        text, confidence = self._phrase_text(body)
        tokens = []
        if text:
            tokens.append(
                Token(
                    text,
                    True,
                    self._spoken_kind(),
                    start,
                    end,
                    language=self.cfg.language,
                    speaker=_speaker(body),
                    confidence=confidence,
                )
            )
        notices: list[ServiceEvent] = []
        if translations is not None:
            texts, failure = translations
            tokens += self._translated(texts, final=True)
            missing = [t for t in self.cfg.targets if not texts.get(t.lower())]
            if text and (failure or missing):
                # Shown, not dropped in silence: the line goes out with what did arrive.
                which = ", ".join(missing) if missing else "some languages"
                why = f": {failure}" if failure else ""
                notices.append(
                    ServiceNotice("translation_failed", f"no translation into {which}{why}")
                )
        return (TokenUpdate(final=tuple(tokens), final_audio_ms=final_audio_ms), *notices)

    def _phrase_text(self, body: dict[str, Any]) -> tuple[str, float | None]:
        nbest = body.get("NBest")
        if nbest is not None:
            if not isinstance(nbest, list):
                raise ProtocolError("NBest is not a list")
            if nbest:
                best = nbest[0]
                if not isinstance(best, dict):
                    raise ProtocolError("NBest[0] is not an object")
                display = best.get("Display")
                confidence = _finite(best.get("Confidence"))
                if isinstance(display, str):
                    return display, confidence
                text = body.get("DisplayText")
                if isinstance(text, str):
                    return text, confidence
                raise ProtocolError("NBest[0] without Display")
        for name in ("DisplayText", "Text"):
            text = body.get(name)
            if isinstance(text, str):
                return text, None
        raise ProtocolError("a phrase without DisplayText or Text")

    def _translated(self, translations: dict[str, str], *, final: bool) -> list[Token]:
        out = []
        for target in self.cfg.targets:  # in the configured order, named as configured
            text = translations.get(target.lower())
            if text:
                out.append(
                    Token(
                        text,
                        final,
                        "translation",
                        language=target,
                        source_language=self.cfg.language,
                    )
                )
        return out

    # -- errors ---------------------------------------------------------------------------

    def handshake_refused(self, status: int) -> ServiceError:
        kind = _HTTP_SLUGS.get(status, f"http_{status}")
        message = f"the service refused the connection with HTTP {status}"
        if status in (401, 403):
            return ServiceError(status, kind, message + " (check the key and region)", Retry.FATAL)
        if status in (400, 404):
            return ServiceError(status, kind, message + " (check the [azure] config)", Retry.FATAL)
        if status == 408:
            return ServiceError(status, kind, message, Retry.ONCE)
        if status == 429:
            return ServiceError(status, kind, message, Retry.SLOW)
        if 400 <= status < 500:
            return ServiceError(status, kind, message, Retry.FATAL)
        return ServiceError(status, kind, message, Retry.BACKOFF)

    def closed(self, code: int | None, reason: str, finished: bool) -> ServiceError | None:
        said = f": {_shorten(reason)}" if reason and reason.strip() else ""
        if finished and code in (None, 1000, 1001, 1005, 1006):
            return None
        if code is None or code in (1005, 1006):
            return ServiceError(
                code,
                "connection_lost",
                f"the connection ended without a close{said}",
                Retry.BACKOFF,
            )
        if code in (1000, 1001):
            # The 10-minute and 180 s idle limits end a connection like this: go on at once.
            return ServiceError(
                code, "closed", f"the service closed the connection{said}", Retry.ONCE
            )
        if code in _OUR_BUG_CLOSES:
            kind = _OUR_BUG_CLOSES[code]
            log.error(
                "Azure Speech closed the connection with %d (%s)%s: edgecap sent something "
                "the service does not accept; this is a bug, please report it",
                code,
                kind,
                said,
            )
            return ServiceError(
                code, kind, f"the service refused our messages{said}", Retry.BACKOFF
            )
        if code == 1013:
            return ServiceError(code, "try_again_later", f"the service is busy{said}", Retry.SLOW)
        kind = _CLOSE_KINDS.get(code, f"close_{code}")
        return ServiceError(code, kind, f"the service closed the connection{said}", Retry.BACKOFF)


def _key_value(key: SecretValue | None) -> str:
    """The key for a header; a CR/LF in a header value would smuggle extra headers into
    the request."""
    if key is None:
        raise ValueError("Azure Speech needs a resource key")
    value = key.reveal().strip()
    if not value or not value.isprintable():
        raise ValueError(f"the Azure Speech key from {key.origin} is empty or not printable")
    return value


# -- parsing helpers -------------------------------------------------------------------


def _headers(lines: list[str]) -> dict[str, str]:
    """``Name:value`` or ``Name: value`` lines → lowercased names, trimmed values."""
    out: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ProtocolError(f"a header line without a name: {_excerpt(line)}")
        out[name.strip().lower()] = value.strip()
    return out


def _split_text(message: str) -> tuple[dict[str, str], str]:
    head, sep, body = message.partition("\r\n\r\n")
    if not sep:
        raise ProtocolError(f"a text message without a header block: {_excerpt(message)}")
    return _headers(head.split("\r\n")), body


def _split_binary(message: bytes) -> tuple[dict[str, str], bytes]:
    if len(message) < 2:
        raise ProtocolError(f"a binary message of {len(message)} bytes")
    (size,) = struct.unpack(">H", message[:2])
    if size > len(message) - 2 or size > MAX_HEADER:
        raise ProtocolError(f"a binary header of {size} bytes in a message of {len(message)}")
    try:
        head = message[2 : 2 + size].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("a binary header that is not ASCII") from None
    return _headers(head.split("\r\n")), message[2 + size :]


def _json_body(path: str, text: str) -> dict[str, Any]:
    if not text.strip():
        return {}  # turn.end comes with an empty body
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(f"{path}: the body is not JSON: {_excerpt(text)}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{path}: the body is not a JSON object")
    return data


def _get(body: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError(f"{name} is missing or not a {kind.__name__}")
    return value


def _ticks(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    number = _finite(value)
    if number is None or number < 0:
        raise ProtocolError(f"{name} is not a non-negative number")
    return int(number)


def _times(body: dict[str, Any], offset_ms: int) -> tuple[int | None, int | None]:
    """Offset and Duration (ticks from the turn's start) → session milliseconds."""
    offset = _ticks(body, "Offset")
    duration = _ticks(body, "Duration")
    if offset is None:
        return None, None
    start = offset_ms + offset // TICKS_PER_MS
    end = None if duration is None else offset_ms + (offset + duration) // TICKS_PER_MS
    return start, end


def _speaker(body: dict[str, Any]) -> str | None:
    speaker = body.get("SpeakerId")
    return speaker if isinstance(speaker, str) and speaker else None


def _translation(body: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    """The ``Translation`` block → language (lowercased) → text, and why translating failed
    (None when it did not): what did arrive is kept, the failure is reported."""
    block = body.get("Translation")
    if block is None:
        return {}, None
    if not isinstance(block, dict):
        raise ProtocolError("Translation is not an object")
    status = block.get("TranslationStatus", "Success")
    failure = None
    if status != "Success":
        reason = block.get("FailureReason") or ""
        failure = _shorten(f"{status} {reason}".strip(), 120)
    items = block.get("Translations") or []
    if not isinstance(items, list):
        raise ProtocolError("Translations is not a list")
    out: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict):
            raise ProtocolError("a translation that is not an object")
        language, text = item.get("Language"), item.get("Text")
        if not isinstance(language, str) or not isinstance(text, str):
            raise ProtocolError("a translation without Language or Text")
        out[language.lower()] = text
    return out, failure


def _slug(name: str) -> str:
    """``BabbleTimeout`` → ``babble_timeout``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _iso(seconds: float) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as X-Timestamp wants it."""
    now = datetime.fromtimestamp(seconds, UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _excerpt(text: str) -> str:
    return repr(_shorten(text, _EXCERPT))
