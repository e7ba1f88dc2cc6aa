"""The Sarvam streaming codec: edgecap's side of ``wss://api.sarvam.ai/speech-to-text/ws``
(Saaras v3, every mode) and of the legacy ``/speech-to-text-translate/ws`` (Saaras v2.5).

Pure translation (see ``edgecap.services.codec``); the wire format is the one the official
SDK 0.1.39 was recorded sending and accepting (``../shared/protocol-traces/sarvam_*.jsonl``,
``../shared/PROTOCOLS.md`` §2):

- handshake: all settings in the query string, in the SDK's order (``language-code``,
  ``model``, ``mode`` on the v3 endpoint; ``sample_rate``, ``high_vad_sensitivity``,
  ``vad_signals``, ``flush_signal``, ``input_audio_codec`` on both), the key in the
  ``api-subscription-key`` header, once;
- from us, TEXT JSON only: the prompt message first (legacy endpoint, when configured); audio
  as ``{"audio": {"data": <base64 s16le>, "sample_rate": 16000, "encoding": "audio/wav"}}``
  with an integer sample rate; ``{"type": "flush"}`` at the end of every utterance; no
  end-of-stream message (the link closes with 1000);
- from the service: ``{"type": "data"|"events"|"error", "data": {…}}`` — one transcript
  per segment (the service's VAD or our flush), no partial results, no timestamps.

Turns, flushes and what confirms audio. Sarvam has no turns on the wire and no ids: a
``data`` message does not say which audio it covers. The codec keeps the pairing the link
needs itself:

- ``end_turn`` sends a flush (``flush_signal=true`` makes the service honour it) so the
  utterance's last words come at once instead of after the service's own end-of-speech
  silence; the next ``data`` message answers it (``finalized``: all audio before the
  flush is recognised). Flushes are answered in order. A flush with nothing to
  transcribe is taken to be answered too (an empty transcript): the docs do not say, and
  if the service stays silent instead, the turn end stays unanswered and a graceful end
  waits ``[link] finish_timeout`` and counts a failure (a test marks it, xfail).
- a ``data`` message with no flush waiting is a segment the service's VAD ended inside an
  utterance. It confirms audio up to where the service can at most have heard the
  segment end: the audio sent when its ``END_SPEECH`` arrived, less the silence the VAD
  needs to declare an end (1 s, 0.5 s with ``high_vad_sensitivity``). The speech it
  covers ended at least that silence before the event, so nothing it said is sent again
  after a cut. What lies between its end and that point is taken as heard: silence —
  unless audio was still on its way when the event came (the network's delay, a replay's
  burst), and a word the service had not yet heard began in it; a cut right then loses
  that word. Rare: edgecap's gate ends an utterance (and the flush the segment) after
  0.6 s of quiet, before the service's VAD would.

A long utterance gets a flush of its own on the way. Between ``START_SPEECH`` and the
end of a segment the service says nothing, and the link takes a service that hears audio
and answers nothing for ``[link] dead_after`` for dead — so 10 s of fluent talk without a
pause for the gate would cost a reconnect and a replay. Once ``flush_after`` seconds of
audio (half of ``dead_after``) went out with no word from the service, the codec flushes
inside the utterance, after the quietest 20 ms of the chunk at hand (the likeliest gap
between two words): the answer ends a caption line there and confirms that audio.

Why ``high_vad_sensitivity`` is off by default: edgecap's gate ends an utterance after
0.6 s of silence (``[gate] hangover``) and the flush ends the service's segment there; with
the service's 1 s end-of-speech the service rarely cuts an utterance on its own, so almost
every transcript answers a flush and confirms exactly.

VAD events (``START_SPEECH``/``END_SPEECH``) are bookkeeping here and no status: the
service's idea of speech is shown already by what edgecap does with it (the gate's speech
state, the caption that follows), and a notice for every phrase would be noise. They count
as answers for the link's dead-connection check. A flush answered with no words at all,
after no words since the previous answer, is a notice: speech went out and none came back.

Keepalive: the service closes a connection after 60 s without audio, and there is no ping
message; ``keepalive()`` sends 0.1 s of digital silence (``[sarvam] keepalive``, 20 s by
default). Chosen over closing and reconnecting at the next speech: a reconnect costs a TLS
and HTTP upgrade (about a second on a Pi over Wi-Fi) before the first words can go, while
the silence costs 0.5 % more audio — and ``[link] connect = on_demand`` still closes a quiet
connection after ``idle_close``. A close by the service (1000, its idle limit) is retried
at once (``Retry.ONCE``).
"""

from __future__ import annotations

import array
import base64
import json
import logging
import sys
from collections import deque
from typing import Any
from urllib.parse import urlencode, urlsplit

from edgecap.captions.tokens import Token, TokenKind, TokenUpdate
from edgecap.config.schema import SarvamConfig
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
from edgecap.services.service_text import json_type as _json_type
from edgecap.services.service_text import shorten as _shorten

log = logging.getLogger(__name__)

V3_URL = "wss://api.sarvam.ai/speech-to-text/ws"
LEGACY_URL = "wss://api.sarvam.ai/speech-to-text-translate/ws"
SAMPLE_RATE = 16000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000  # 32: s16le mono
TRANSLATION_LANGUAGE = "en"  # the service translates into English only

# Byte for byte what SDK 0.1.39 sends (sarvam_sttt.jsonl): json.dumps' default separators.
FLUSH_MESSAGE = '{"type": "flush"}'
# The audio message around its base64 (see SarvamCodec.audio for why it is not json.dumps).
AUDIO_HEAD = '{"audio": {"data": "'
AUDIO_TAIL = f'", "sample_rate": {SAMPLE_RATE}, "encoding": "audio/wav"}}}}'
FRAME_BYTES = 20 * BYTES_PER_MS  # the gate's frames: a chunk is whole frames
KEEPALIVE_MS = 100
VAD_END_MS = 1000  # silence the service's VAD needs to end a segment …
VAD_END_MS_HIGH = 500  # … and with high_vad_sensitivity (docs: speech-to-text best practices)

# §2.6: the in-band error codes → what the link does about them.
_ERROR_RETRY: dict[str, Retry] = {
    "invalid_api_key_error": Retry.FATAL,
    "invalid_request_error": Retry.FATAL,  # our request is wrong: fix it, do not repeat it
    "unprocessable_entity_error": Retry.FATAL,
    "insufficient_quota_error": Retry.FATAL,  # until credits are added (and a reload)
    "rate_limit_exceeded_error": Retry.SLOW,
    "internal_server_error": Retry.BACKOFF,
    "gateway_timeout_error": Retry.ONCE,
    "billing_service_unavailable_error": Retry.BACKOFF,
}
_FATAL_HINTS: dict[str, str] = {
    "invalid_api_key_error": " (check the key)",
    "insufficient_quota_error": " (add credits, then reload)",
    "invalid_request_error": " (edgecap sent what the service refuses: please report it)",
    "unprocessable_entity_error": " (check the [sarvam] config)",
}

_HTTP_SLUGS: dict[int, str] = {
    400: "bad_request",
    401: "unauthenticated",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    408: "request_timeout",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_CLOSE_KINDS: dict[int, str] = {
    1011: "server_error",
    1012: "restarting",
    1014: "bad_gateway",
}

_EXCERPT = 80
_MESSAGE_MAX = 200


def error_retry(code: str | None) -> Retry:
    """The retry class of an in-band error code (§2.6); an unknown one is retried with
    backoff, never in a tight loop."""
    return _ERROR_RETRY.get(code or "", Retry.BACKOFF)


class SarvamCodec:
    """Sarvam streaming speech-to-text (and translation into English), as the Link's
    ``Codec`` (see the module docstring for the protocol and the choices made)."""

    name = "sarvam"
    # 429: Sarvam names no wait; its limits count per minute and per account, so a retry
    # sooner than this would most likely be refused again.
    slow_retry_min = 30.0
    # 100–250 ms per message is the recommendation; the longer end halves the per-message
    # cost (JSON, base64 call, frame, TLS record) on a small board, and costs no latency a
    # caption shows: the service sends nothing before the end of a segment anyway.
    audio_chunk_ms = 200
    sends_finished = False  # the service never says it is done
    # Every flush has been answered when this counts: only a late VAD segment could follow.
    finish_grace = 0.5
    needs_key = True

    def __init__(
        self, cfg: SarvamConfig, *, replay_speed: float = 1.5, flush_after: float = 5.0
    ) -> None:
        """``flush_after``: seconds of audio sent with no message from the service before
        an utterance is flushed in the middle (half the link's ``dead_after``)."""
        self.cfg = cfg
        self.keepalive_interval: float | None = cfg.keepalive
        self.session_max: float = cfg.session_max
        self.replay_speed = replay_speed
        self.flush_after = flush_after
        self._vad_end_ms = VAD_END_MS_HIGH if cfg.high_vad_sensitivity else VAD_END_MS
        self._keepalive = Outgoing(_audio_message(bytes(KEEPALIVE_MS * BYTES_PER_MS)), "keepalive")
        self.reset()

    def __repr__(self) -> str:
        return f"SarvamCodec(url={self.url()!r}, mode={self.mode!r})"

    @property
    def mode(self) -> str:
        return "translate" if self.cfg.legacy else self.cfg.mode

    # -- the URL ------------------------------------------------------------------------

    def query(self) -> list[tuple[str, str]]:
        """The query parameters in the SDK's order; every value a string (§2.2)."""
        cfg = self.cfg
        params: list[tuple[str, str]] = []
        if not cfg.legacy:
            params += [("language-code", cfg.language), ("model", cfg.model), ("mode", cfg.mode)]
        else:
            params.append(("model", cfg.model))
        params += [
            ("sample_rate", str(SAMPLE_RATE)),
            ("high_vad_sensitivity", _flag(cfg.high_vad_sensitivity)),
            ("vad_signals", "true"),  # END_SPEECH places a segment's end (module docstring)
            ("flush_signal", "true"),  # without it the service ignores our flush
            ("input_audio_codec", "pcm_s16le"),  # required for raw PCM
        ]
        return params

    def url(self) -> str:
        query = urlencode(self.query())
        if self.cfg.url:
            parts = urlsplit(self.cfg.url)
            joined = f"{parts.query}&{query}" if parts.query else query
            return parts._replace(query=joined, fragment="").geturl()
        return f"{LEGACY_URL if self.cfg.legacy else V3_URL}?{query}"

    # -- client → service ---------------------------------------------------------------

    def token_request(self, key: SecretValue | None) -> TokenRequest | None:
        return None  # the key goes in the handshake itself

    def handshake(self, key: SecretValue | None, token: SecretValue | None = None) -> Handshake:
        """The key in ``api-subscription-key`` (lowercase, as the SDK sends it), once: the
        SDK's second ``Api-Subscription-Key`` when a key is also passed to connect() is a
        quirk not to copy."""
        if key is None:
            raise ValueError("Sarvam needs an API subscription key")
        value = key.reveal().strip()
        # A CR/LF in a header value would smuggle extra headers into the request.
        if not value or not value.isprintable():
            raise ValueError(f"the Sarvam API key from {key.origin} is empty or not printable")
        return Handshake(url=self.url(), headers=(f"api-subscription-key: {value}",))

    def start(self) -> list[Outgoing]:
        """The prompt message (legacy endpoint only; the v3 endpoint has none)."""
        if self.cfg.legacy and self.cfg.prompt:
            return [Outgoing(json.dumps({"type": "config", "prompt": self.cfg.prompt}), "start")]
        return []

    def begin_turn(self) -> list[Outgoing]:
        """Nothing on the wire: the service hears one stream and cuts it itself."""
        self._turn_sent = 0
        return []

    def audio(self, pcm: bytes) -> list[Outgoing]:
        """One message per chunk, base64 in JSON, the only audio transport Sarvam has.

        On a Pi this is the costliest thing the codec does (a third more bytes, and
        Python-level work per message), so it is done once per message, never per frame:
        ``base64.b64encode`` on the whole chunk (one C call), and the JSON text is the
        fixed head and tail around it. ``json.dumps`` would scan every base64 character
        again for escapes it never needs (base64 has none) and build the dict first."""
        if not pcm:
            raise ValueError("empty audio chunk")
        if len(pcm) % 2:
            raise ValueError(f"audio chunk of {len(pcm)} bytes is not whole s16le samples")
        if self._unheard + len(pcm) < self.flush_after * 1000 * BYTES_PER_MS:
            self._unheard += len(pcm)
            return [self._audio(pcm)]
        # Long without a word from the service: flush inside the utterance (module docstring).
        cut = _after_quietest_frame(pcm)
        out = [self._audio(pcm[:cut]), self._flush(turn_end=False)]
        if cut < len(pcm):
            out.append(self._audio(pcm[cut:]))
        self._unheard = len(pcm) - cut
        return out

    def _audio(self, pcm: bytes) -> Outgoing:
        self._sent += len(pcm)
        self._turn_sent += len(pcm)
        return Outgoing(_audio_message(pcm), "audio")

    def _flush(self, *, turn_end: bool) -> Outgoing:
        self._flushes.append((self._sent, turn_end))
        self._turn_sent = 0
        return Outgoing(FLUSH_MESSAGE, "finalize" if turn_end else "flush")

    def end_turn(self) -> list[Outgoing]:
        """The flush: the service finalizes what it holds into a ``data`` message, which
        answers it. A turn that sent no audio since its last flush has nothing to flush
        (and asks no answer)."""
        if not self._turn_sent:
            return []
        return [self._flush(turn_end=True)]

    def keepalive(self) -> Outgoing:
        """0.1 s of silence: the service's 60 s idle limit counts audio, and no other
        message exists for it (PROTOCOLS.md §2.5)."""
        return self._keepalive

    def end_of_stream(self) -> list[Outgoing]:
        """Nothing: the SDK just closes (1000) once its flush was answered."""
        return []

    def reset(self) -> None:
        self._sent = 0  # turn audio sent in this session, bytes (keepalives not counted)
        self._turn_sent = 0
        self._unheard = 0  # bytes sent since the service last said anything
        # each unanswered flush: where it was sent, and whether it ended a turn
        self._flushes: deque[tuple[int, bool]] = deque()
        self._segment_start = 0  # where audio not yet covered by a transcript begins
        self._end_at: int | None = None  # audio sent when the last END_SPEECH arrived
        self._words_since_answer = False

    # -- service → client ---------------------------------------------------------------

    def parse(self, message: str | bytes) -> Parsed:
        """Sarvam asks for no replies: only events."""
        self._unheard = 0
        if not isinstance(message, str):
            size = len(message) if isinstance(message, bytes | bytearray) else "?"
            raise ProtocolError(f"binary message ({size} bytes): Sarvam sends JSON text only")
        try:
            envelope = json.loads(message)
        except (ValueError, RecursionError):
            raise ProtocolError(f"not JSON: {_excerpt(message)}") from None
        if not isinstance(envelope, dict):
            raise ProtocolError(f"not a JSON object but {_json_type(envelope)}")
        kind = envelope.get("type")
        body = envelope.get("data")
        if kind == "error":
            return Parsed(events=(_error(body),))
        if not isinstance(body, dict):
            raise ProtocolError(f"{_excerpt(str(kind))} message whose data is {_json_type(body)}")
        if kind == "data":
            return Parsed(events=self._transcript(body))
        if kind == "events":
            self._vad_event(body)
            return Parsed()
        raise ProtocolError(f"unknown message type {_excerpt(str(kind))}")

    def _vad_event(self, body: dict[str, Any]) -> None:
        signal = body.get("signal_type")
        if signal is not None and not isinstance(signal, str):
            raise ProtocolError(f"signal_type is {_json_type(signal)}, not a string")
        if signal == "END_SPEECH":
            self._end_at = self._sent
        # START_SPEECH, and any event type a later API adds: nothing to do

    def _transcript(self, body: dict[str, Any]) -> tuple[ServiceEvent, ...]:
        text = body.get("transcript")
        if not isinstance(text, str):
            raise ProtocolError(f"a data message whose transcript is {_json_type(text)}")
        language = body.get("language_code")
        if language is not None and not isinstance(language, str):
            raise ProtocolError(f"language_code is {_json_type(language)}, not a string")
        probability = body.get("language_probability")
        if probability is not None and _finite(probability) is None:
            raise ProtocolError("language_probability is not a finite number")

        start = self._segment_start
        end_at, self._end_at = self._end_at, None
        turn_end = False
        covered: int | None
        if self._flushes:
            covered, turn_end = self._flushes.popleft()
        elif end_at is not None:
            # A segment the service's VAD ended: its speech ended at least the VAD's
            # silence before END_SPEECH came (module docstring).
            covered = max(start, end_at - self._vad_end_ms * BYTES_PER_MS)
        else:
            covered = None  # no idea where it ends: confirm nothing, the next answer will
        if covered is not None:
            self._segment_start = max(self._segment_start, covered)

        words = text.strip()
        events: list[ServiceEvent] = []
        tokens: tuple[Token, ...] = ()
        if words:
            self._words_since_answer = True
            sure = _finite(probability) if probability is not None else None
            tokens = (self._token(words, language or None, start, covered, sure),)
        events.append(
            TokenUpdate(
                final=tokens,
                endpoint=bool(tokens),  # a segment is a line of its own
                finalized=turn_end,  # the answer the link waits for after end_turn
                final_audio_ms=None if covered is None else covered // BYTES_PER_MS,
            )
        )
        if turn_end:
            if not self._words_since_answer:
                events.append(
                    ServiceNotice("no_match", "speech was sent but nothing was recognised")
                )
            self._words_since_answer = False
        return tuple(events)

    def _token(
        self,
        text: str,
        detected: str | None,
        start: int,
        end: int | None,
        sure: float | None = None,
    ) -> Token:
        """One final token for the whole segment. What was said carries its language (the
        detected one, else the configured one); a translation is English, from it."""
        spoken = detected or (None if self.cfg.language == "unknown" else self.cfg.language)
        start_ms = start // BYTES_PER_MS
        end_ms = None if end is None else end // BYTES_PER_MS
        # Translation-only lines are made of the translation: it carries the times too.
        kind: TokenKind = "translation" if self.cfg.translates else "none"
        if kind == "translation":
            return Token(
                text,
                True,
                kind,
                start_ms,
                end_ms,
                language=TRANSLATION_LANGUAGE,
                source_language=spoken,
                language_confidence=sure if detected else None,
            )
        return Token(
            text,
            True,
            kind,
            start_ms,
            end_ms,
            language=spoken,
            language_confidence=sure if detected else None,
        )

    # -- errors ---------------------------------------------------------------------------

    def handshake_refused(self, status: int) -> ServiceError:
        kind = _HTTP_SLUGS.get(status, f"http_{status}")
        message = f"the service refused the connection with HTTP {status}"
        if status in (401, 403):
            return ServiceError(status, kind, message + " (check the key)", Retry.FATAL)
        if status in (400, 404, 422):
            return ServiceError(status, kind, message + " (check the [sarvam] config)", Retry.FATAL)
        if status == 408:
            return ServiceError(status, kind, message, Retry.ONCE)
        if status == 429:
            return ServiceError(status, kind, message, Retry.SLOW)
        if 400 <= status < 500:
            return ServiceError(status, kind, message, Retry.FATAL)
        return ServiceError(status, kind, message, Retry.BACKOFF)

    def closed(self, code: int | None, reason: str, finished: bool) -> ServiceError | None:
        """Close codes are not documented for Sarvam (§2.6); the policy: a close at the
        end we asked for is normal, 1000/1001 otherwise is its idle limit or its end of a
        session (go on at once), 1008 is fatal, 1013 slow, anything else backs off."""
        said = f": {_shorten(reason)}" if reason and reason.strip() else ""
        if finished and code in (None, 1000, 1001, 1005, 1006):
            return None
        if code is None or code in (1005, 1006):
            said = f"the connection ended without a close{said}"
            return ServiceError(code, "connection_lost", said, Retry.BACKOFF)
        if code in (1000, 1001):
            return ServiceError(
                code, "closed", f"the service closed the connection{said}", Retry.ONCE
            )
        if code == 1008:
            return ServiceError(
                code, "policy_violation", f"the service refused the session{said}", Retry.FATAL
            )
        if code == 1013:
            return ServiceError(code, "try_again_later", f"the service is busy{said}", Retry.SLOW)
        kind = _CLOSE_KINDS.get(code, f"close_{code}")
        return ServiceError(code, kind, f"the service closed the connection{said}", Retry.BACKOFF)


def _audio_message(pcm: bytes) -> str:
    """The SDK's audio message for ``pcm``: base64 has no character JSON escapes, so the
    text around it is fixed."""
    return AUDIO_HEAD + base64.b64encode(pcm).decode("ascii") + AUDIO_TAIL


def _after_quietest_frame(pcm: bytes) -> int:
    """Where to cut a chunk for a flush inside an utterance: after its quietest 20 ms
    frame (the sum of absolute samples), on a frame boundary so that every piece is
    whole frames. Only run when a flush is due (once every few seconds)."""
    frames = len(pcm) // FRAME_BYTES
    if frames <= 1:
        return len(pcm)
    samples = array.array("h")
    samples.frombytes(pcm[: frames * FRAME_BYTES])
    if sys.byteorder == "big":
        samples.byteswap()
    step = FRAME_BYTES // 2
    energy = [sum(map(abs, samples[i * step : (i + 1) * step])) for i in range(frames)]
    quietest = min(range(frames), key=energy.__getitem__)
    return (quietest + 1) * FRAME_BYTES


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _error(body: Any) -> ServiceError:
    """An ``error`` message. One that says it is an error stays one, whatever its fields:
    losing it would hide why the session ended."""
    if not isinstance(body, dict):
        return ServiceError(None, "error", "", Retry.BACKOFF)
    code_raw, text_raw = body.get("code"), body.get("error")
    code = code_raw.strip() if isinstance(code_raw, str) and code_raw.strip() else None
    kind = _shorten(code, 60) if code else "error"
    message = _shorten(text_raw) if isinstance(text_raw, str) else ""
    retry = error_retry(code)
    if code == "invalid_request_error":
        log.error("Sarvam refused a message of edgecap's (%s): this is a bug", message)
    if retry is Retry.FATAL and code in _FATAL_HINTS:
        message += _FATAL_HINTS[code]
    return ServiceError(None, kind, message, retry)


def _excerpt(text: str) -> str:
    return repr(_shorten(text, _EXCERPT))
