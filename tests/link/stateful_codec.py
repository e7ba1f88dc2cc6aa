"""The codec of the fake stateful service (tests/emulators/stateful.py), written on the
codec contract v2 the way a real Azure Speech or Sarvam codec would be: per-turn state
(ids, where each turn's audio begins in the session, messages counted per turn), a reply
the protocol requires, two translations, spoken audio, and no "finished"."""

from __future__ import annotations

import json
import uuid
from typing import Any

from edgecap.captions.events import SynthesizedAudio
from edgecap.captions.tokens import Token, TokenUpdate
from edgecap.config.secrets import SecretValue
from edgecap.services.codec import (
    Handshake,
    Outgoing,
    Parsed,
    ProtocolError,
    Retry,
    ServiceError,
    ServiceEvent,
    TokenRequest,
)
from tests.emulators.stateful import SYNTH_FORMAT, frame, unframe

BYTES_PER_MS = 32
SOURCE = "en"

_ERROR_RETRY = {
    "protocol": Retry.FATAL,  # our bug: hammering will not fix it
    "unauthorized": Retry.FATAL,
    "unavailable": Retry.NOW,
    "rate_limited": Retry.SLOW,
}


class StatefulCodec:
    """The stateful service as the Link's ``Codec``."""

    name = "stateful"
    keepalive_interval: float | None = None  # none in this protocol (as Azure)
    session_max = 600.0
    slow_retry_min = 2.0
    audio_chunk_ms = 100
    sends_finished = False
    finish_grace = 0.3
    needs_key = True

    def __init__(
        self,
        url: str,
        *,
        targets: tuple[str, ...] = ("de", "fr"),
        voice: str | None = "de",
        replay_speed: float = 10.0,
    ) -> None:
        self.url = url
        self.targets = targets
        self.voice = voice
        self.replay_speed = replay_speed
        self.reset()

    # -- client → service ---------------------------------------------------------------

    def token_request(self, key: SecretValue | None) -> TokenRequest | None:
        return None

    def handshake(self, key: SecretValue | None, token: SecretValue | None = None) -> Handshake:
        if key is None:
            raise ValueError("the stateful service needs a key")
        return Handshake(self.url, headers=(f"X-Api-Key: {key.reveal()}",))

    def start(self) -> list[Outgoing]:
        config: dict[str, Any] = {
            "type": "session.start",
            "sample_rate": 16000,
            "targets": list(self.targets),
        }
        if self.voice is not None:
            config["voice"] = self.voice
        return [Outgoing(json.dumps(config), "start")]

    def begin_turn(self) -> list[Outgoing]:
        if self._turn is not None:
            raise ValueError("a turn began inside another")
        turn = uuid.uuid4().hex
        self._turn = turn
        self._offset_ms[turn] = self._sent_bytes // BYTES_PER_MS
        self._received[turn] = 0
        return [Outgoing(json.dumps({"type": "turn.start", "turn": turn}), "turn")]

    def audio(self, pcm: bytes) -> list[Outgoing]:
        if self._turn is None:
            raise ValueError("audio outside a turn")
        if not pcm or len(pcm) % 2:
            raise ValueError(f"audio of {len(pcm)} bytes")
        self._sent_bytes += len(pcm)
        return [Outgoing(frame(f"turn={self._turn}", pcm), "audio")]

    def end_turn(self) -> list[Outgoing]:
        turn, self._turn = self._turn, None
        if turn is None:
            raise ValueError("no turn to end")
        return [Outgoing(json.dumps({"type": "turn.end", "turn": turn}), "turn_end")]

    def keepalive(self) -> Outgoing | None:
        return None

    def end_of_stream(self) -> list[Outgoing]:
        return []  # the service has no such message: we close when it has answered

    def reset(self) -> None:
        self._turn: str | None = None
        self._sent_bytes = 0  # audio sent in this session
        self._offset_ms: dict[str, int] = {}  # turn → session ms where its audio begins
        self._received: dict[str, int] = {}  # turn → messages received for it

    # -- service → client ---------------------------------------------------------------

    def parse(self, message: str | bytes) -> Parsed:
        if isinstance(message, bytes):
            return Parsed(events=(self._synthesized(message),))
        try:
            data = json.loads(message)
        except ValueError:
            raise ProtocolError(f"not JSON: {message[:80]!r}") from None
        if not isinstance(data, dict):
            raise ProtocolError("not a JSON object")
        kind = data.get("type")
        if kind == "session.ready":
            return Parsed()
        if kind == "error":
            code = str(data.get("code"))
            retry = _ERROR_RETRY.get(code, Retry.BACKOFF)
            return Parsed(events=(ServiceError(None, code, str(data.get("message", "")), retry),))
        turn = self._count(data.get("turn"))
        if kind == "turn.started":
            return Parsed()
        if kind == "partial":
            return Parsed(events=(self._update(data, turn, final=False),))
        if kind == "final":
            return Parsed(events=(self._update(data, turn, final=True),))
        if kind == "synthesis.end":
            language = data.get("language")
            if not isinstance(language, str):
                raise ProtocolError("synthesis.end without a language")
            return Parsed(events=(SynthesizedAudio(language, SYNTH_FORMAT, b"", end=True),))
        if kind == "turn.end":
            telemetry = {"type": "telemetry", "turn": turn, "received": self._received[turn]}
            return Parsed(
                events=(TokenUpdate(finalized=True),),  # the answer to our end_turn
                replies=(Outgoing(json.dumps(telemetry), "telemetry"),),
            )
        raise ProtocolError(f"unknown message type {kind!r}")

    def handshake_refused(self, status: int) -> ServiceError:
        message = f"the service refused the connection with HTTP {status}"
        if status in (401, 403):
            return ServiceError(status, "unauthenticated", message, Retry.FATAL)
        if status == 429:
            return ServiceError(status, "rate_limited", message, Retry.SLOW)
        return ServiceError(status, f"http_{status}", message, Retry.BACKOFF)

    def closed(self, code: int | None, reason: str, finished: bool) -> ServiceError | None:
        if finished and code in (1000, 1001):
            return None
        if code is None or code == 1006:
            return ServiceError(code, "connection_lost", reason or "no close", Retry.BACKOFF)
        return ServiceError(code, f"close_{code}", reason, Retry.BACKOFF)

    # -- helpers ------------------------------------------------------------------------

    def _count(self, turn: object) -> str:
        """The turn a message is about (one of this session's); counted for telemetry."""
        if not isinstance(turn, str) or turn not in self._received:
            raise ProtocolError(f"a message about turn {turn!r}, not one of this session")
        self._received[turn] += 1
        return turn

    def _synthesized(self, message: bytes) -> ServiceEvent:
        try:
            fields, payload = unframe(message)
        except ValueError as exc:
            raise ProtocolError(f"binary message: {exc}") from None
        self._count(fields.get("turn"))
        language = fields.get("lang")
        if not language:
            raise ProtocolError("synthesized audio without a language")
        return SynthesizedAudio(language, SYNTH_FORMAT, payload, end=False)

    def _update(self, data: dict[str, Any], turn: str, *, final: bool) -> TokenUpdate:
        offset = self._offset_ms[turn]
        words = data.get("words")
        translations = data.get("translations")
        if not isinstance(words, list) or not isinstance(translations, dict):
            raise ProtocolError("a result without words or translations")
        tokens = [self._word(w, offset, final) for w in words]
        for language in self.targets:  # in the configured order
            text = translations.get(language)
            if not isinstance(text, str):
                raise ProtocolError(f"no translation into {language}")
            if text:
                tokens.append(
                    Token(
                        text,
                        final,
                        "translation",
                        language=language,
                        source_language=SOURCE,
                    )
                )
        if not final:
            return TokenUpdate(provisional=tuple(tokens))
        final_ms = data.get("final_ms")
        if not isinstance(final_ms, int) or final_ms < 0:
            raise ProtocolError("a final result without final_ms")
        return TokenUpdate(final=tuple(tokens), final_audio_ms=offset + final_ms)

    @staticmethod
    def _word(raw: Any, offset: int, final: bool) -> Token:
        if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
            raise ProtocolError("a word without text")
        start, end = raw.get("start_ms"), raw.get("end_ms")
        if not isinstance(start, int) or not isinstance(end, int):
            raise ProtocolError("a word without times")
        return Token(
            raw["text"],
            final,
            "original",
            start_ms=offset + start,
            end_ms=offset + end,
            language=SOURCE,
        )
