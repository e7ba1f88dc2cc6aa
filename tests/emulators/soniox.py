"""A strict, local emulator of the Soniox real-time WebSocket API (PROTOCOLS.md §1).

Usage::

    with SonioxEmulator(tmp_path, api_key="k", idle_timeout=20.0, lag_ms=500) as emu:
        ws = websocket.create_connection(
            emu.url, header=["Authorization: Bearer k"],
            sslopt={"ca_certs": emu.ca_file}, suppress_origin=True)
        ...
        emu.wait_for(lambda: emu.sessions and emu.sessions[0].finished_sent, 2.0)

It is strict where the real service is (path, auth, start-message schema, frame kinds) so
that a client that passes here sends what the SDK sends. Its "recognition" is a pure
function of the audio so tests can predict every token:

* The session's audio is cut into 640-byte units (20 ms of 16 kHz s16le mono), counted
  from the session's first byte. Unit ``k`` yields the word :func:`word_for_unit` (about
  one unit in eight, never a digital-silence unit) spanning ``[20k, 20k+20)`` ms.
* A word is non-final while its end lies within the last ``lag_ms`` of the audio received;
  then it is sent once as final. Each result lists finals first, then the provisional
  tail (all current non-final words, re-sent every time).
* ``final_audio_proc_ms`` (F) never decreases: ``max(F, floor20(T - lag_ms))``; a
  ``finalize`` or the end of audio sets F = T (T = ms of audio received).
* Endpoint detection (``enable_endpoint_detection``): when a run of consecutive all-zero
  units reaches 25 (500 ms of digital silence) and at least one word was recognized since
  the previous ``<end>``, the emulator finalizes everything up to the end of that unit and
  emits a final ``<end>`` token after those finals (their translations come first).
* With ``translation`` configured, every original word that becomes final is followed (in
  the same message, after that group's originals) by a final translation token
  ``" t<hex>"`` without ``start_ms``/``end_ms``/``confidence``.
* An incomplete unit at the end of the stream (fewer than 640 bytes) never yields a word.

Faults are queued with :meth:`SonioxEmulator.plan` (one :class:`SessionPlan` per future
connection, FIFO). Every connection is recorded as a :class:`Session`. The server around
the protocol (TLS, its threads, the records' lock, ``close``) is ``server.py``'s.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Unpack

from websockets.http11 import Request
from websockets.sync.server import ServerConnection

from .server import EmulatorServer, ServerOptions, SessionRecord, SessionRunner

PATH = "/transcribe-websocket"
SAMPLE_RATE = 16000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000  # 32: s16le mono
UNIT_MS = 20
UNIT_BYTES = UNIT_MS * BYTES_PER_MS  # 640
ENDPOINT_SILENCE_UNITS = 25
CONFIDENCE = 0.9
DEFAULT_MODELS = frozenset({"stt-rt-v3", "stt-rt-v4", "stt-rt-v5"})
# endpoint_sensitivity is a v5 feature; stt-rt-v4 is an alias of v5 (PROTOCOLS.md §1.2).
ENDPOINT_SENSITIVITY_MODELS = frozenset({"stt-rt-v4", "stt-rt-v5"})

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthenticated",
    402: "organization_balance_exhausted",
    408: "request_timeout",
    429: "limit_exceeded",
    500: "internal_error",
    503: "service_unavailable",
}
ERROR_MESSAGES: dict[int, str] = {
    400: "Invalid request.",
    401: "Invalid API key.",
    402: "Organization balance exhausted.",
    408: "Request timeout.",
    429: "Request limit exceeded.",
    500: "Internal server error.",
    503: "Cannot continue request (code 11). Please restart the request.",
}

_EMULATOR_FORMAT = (
    "This emulator supports only audio_format 'pcm_s16le' with sample_rate 16000 and num_channels 1"
)
_RAW_FORMATS = frozenset(
    {
        "pcm_s8",
        "pcm_s16le",
        "pcm_s16be",
        "pcm_s24le",
        "pcm_s24be",
        "pcm_s32le",
        "pcm_s32be",
        "pcm_u8",
        "pcm_u16le",
        "pcm_u16be",
        "pcm_u24le",
        "pcm_u24be",
        "pcm_u32le",
        "pcm_u32be",
        "pcm_f32le",
        "pcm_f32be",
        "pcm_f64le",
        "pcm_f64be",
        "mulaw",
        "alaw",
    }
)
_CONTAINER_FORMATS = frozenset(
    {"auto", "aac", "aiff", "amr", "asf", "flac", "mp3", "ogg", "wav", "webm"}
)
_KNOWN_FIELDS = frozenset(
    {
        "api_key",
        "model",
        "audio_format",
        "sample_rate",
        "num_channels",
        "language_hints",
        "language_hints_strict",
        "context",
        "enable_speaker_diarization",
        "enable_language_identification",
        "enable_endpoint_detection",
        "max_endpoint_delay_ms",
        "endpoint_sensitivity",
        "endpoint_latency_adjustment_level",
        "translation",
        "client_reference_id",
    }
)
_BOOL_FIELDS = (
    "language_hints_strict",
    "enable_speaker_diarization",
    "enable_language_identification",
    "enable_endpoint_detection",
)


# ---------------------------------------------------------------------------------------
# Deterministic "recognition"


def _unit_digest(pcm: bytes) -> bytes:
    return hashlib.blake2b(pcm, digest_size=4).digest()


def word_for_unit(pcm640: bytes) -> str | None:
    """The word the emulator recognizes in one 20 ms unit, or None (about 7 units in 8)."""
    h = _unit_digest(pcm640)
    if h[0] % 8 == 0 and any(pcm640):
        return f" w{h.hex()}"
    return None


def speaker_for_unit(pcm640: bytes) -> str:
    """The speaker label of a unit's word (sent only with enable_speaker_diarization)."""
    return "2" if _unit_digest(pcm640)[1] % 4 == 0 else "1"


def translation_of(word: str) -> str:
    """The translation token text of an original word: ``" w<hex>"`` -> ``" t<hex>"``."""
    return " t" + word.removeprefix(" w")


def expected_word_units(pcm: bytes) -> list[tuple[int, str]]:
    """(unit index, word) for every word a session fed exactly ``pcm`` produces."""
    out = []
    for k in range(len(pcm) // UNIT_BYTES):
        word = word_for_unit(pcm[k * UNIT_BYTES : (k + 1) * UNIT_BYTES])
        if word is not None:
            out.append((k, word))
    return out


def expected_words(pcm: bytes) -> list[str]:
    """The final words (in order) of a session fed ``pcm`` (then finalized or ended)."""
    return [word for _, word in expected_word_units(pcm)]


def noise_pcm(ms: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random s16le audio (never all-zero units): yields words."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(ms * BYTES_PER_MS))
    for k in range(0, len(data), UNIT_BYTES):
        data[k] |= 1  # make sure no unit is digital silence
    return bytes(data)


def silence_pcm(ms: int) -> bytes:
    """Digital silence: never yields words; 500 ms of it triggers ``<end>``."""
    return bytes(ms * BYTES_PER_MS)


# ---------------------------------------------------------------------------------------
# Start-message validation


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def _is_pair_list(value: object, keys: frozenset[str]) -> bool:
    return isinstance(value, list) and all(
        isinstance(x, dict) and set(x) == keys and all(isinstance(v, str) for v in x.values())
        for x in value
    )


def _context_problem(context: object) -> str | None:
    if not isinstance(context, dict):
        return "'context' must be an object."
    unknown = sorted(set(context) - {"general", "text", "terms", "translation_terms"})
    if unknown:
        return f"Unknown field(s) in 'context': {', '.join(unknown)}."
    if "general" in context and not _is_pair_list(context["general"], frozenset({"key", "value"})):
        return "'context.general' must be a list of {key, value} string objects."
    if "text" in context and not isinstance(context["text"], str):
        return "'context.text' must be a string."
    if "terms" in context and not _is_str_list(context["terms"]):
        return "'context.terms' must be a list of strings."
    if "translation_terms" in context and not _is_pair_list(
        context["translation_terms"], frozenset({"source", "target"})
    ):
        return "'context.translation_terms' must be a list of {source, target} string objects."
    return None


def _translation_problem(translation: object) -> str | None:
    if not isinstance(translation, dict):
        return "'translation' must be an object."
    kind = translation.get("type")
    if kind == "one_way":
        keys = {"type", "target_language"}
    elif kind == "two_way":
        keys = {"type", "language_a", "language_b"}
    else:
        return "'translation.type' must be 'one_way' or 'two_way'."
    if set(translation) != keys:
        return f"'translation' of type {kind} needs exactly the fields {sorted(keys)}."
    if not all(isinstance(translation[k], str) and translation[k] for k in keys):
        return "'translation' languages must be non-empty strings."
    return None


def config_problem(
    config: dict[str, Any], models: Iterable[str] = DEFAULT_MODELS
) -> tuple[str, str] | None:
    """Why a start message is refused: (error_type, error_message) for a 400, or None."""
    unknown = sorted(set(config) - _KNOWN_FIELDS)
    if unknown:
        return "invalid_request", f"Unknown field(s): {', '.join(unknown)}."
    if "model" not in config:
        return "invalid_request", "Missing required field 'model'."
    if not isinstance(config["model"], str):
        return "invalid_request", "'model' must be a string."
    if "api_key" in config and not isinstance(config["api_key"], str):
        return "invalid_request", "'api_key' must be a string."
    audio_format = config.get("audio_format", "auto")
    if not isinstance(audio_format, str):
        return "invalid_request", "'audio_format' must be a string."
    if audio_format not in _RAW_FORMATS | _CONTAINER_FORMATS:
        return "invalid_request", f"Unknown audio_format {audio_format!r}."
    for name in ("sample_rate", "num_channels"):
        if name in config and not _is_int(config[name]):
            return "invalid_request", f"'{name}' must be an integer."
    if audio_format in _RAW_FORMATS and not ("sample_rate" in config and "num_channels" in config):
        return "invalid_request", "Raw audio formats require 'sample_rate' and 'num_channels'."
    if (
        audio_format != "pcm_s16le"
        or config.get("sample_rate") != SAMPLE_RATE
        or config.get("num_channels") != 1
    ):
        got = (audio_format, config.get("sample_rate"), config.get("num_channels"))
        return "invalid_request", f"{_EMULATOR_FORMAT} (got {got})."
    if "language_hints" in config and not _is_str_list(config["language_hints"]):
        return "invalid_request", "'language_hints' must be a list of strings."
    for name in _BOOL_FIELDS:
        if name in config and not isinstance(config[name], bool):
            return "invalid_request", f"'{name}' must be a boolean."
    if "context" in config:
        problem = _context_problem(config["context"])
        if problem:
            return "invalid_request", problem
    if "max_endpoint_delay_ms" in config:
        value = config["max_endpoint_delay_ms"]
        if not _is_int(value) or not 500 <= value <= 3000:
            return "invalid_request", "'max_endpoint_delay_ms' must be an integer in 500..3000."
    if "endpoint_sensitivity" in config:
        value = config["endpoint_sensitivity"]
        if not _is_number(value) or not -1 <= value <= 1:
            return "invalid_request", "'endpoint_sensitivity' must be a number in -1..1."
    if "endpoint_latency_adjustment_level" in config:
        value = config["endpoint_latency_adjustment_level"]
        if not _is_int(value) or not 0 <= value <= 3:
            return "invalid_request", "'endpoint_latency_adjustment_level' must be 0..3."
    if "translation" in config:
        problem = _translation_problem(config["translation"])
        if problem:
            return "invalid_request", problem
    if "client_reference_id" in config:
        value = config["client_reference_id"]
        if not isinstance(value, str) or len(value) > 256:
            return "invalid_request", "'client_reference_id' must be a string of <= 256 chars."
    if config["model"] not in set(models):
        return "model_not_available", "Invalid model specified."
    if "endpoint_sensitivity" in config and config["model"] not in ENDPOINT_SENSITIVITY_MODELS:
        return "invalid_request", "'endpoint_sensitivity' is supported only by v5 models."
    return None


# ---------------------------------------------------------------------------------------
# Token bookkeeping (pure logic, no I/O)


@dataclass(frozen=True)
class _Word:
    unit: int
    text: str
    speaker: str

    @property
    def end_ms(self) -> int:
        return (self.unit + 1) * UNIT_MS


@dataclass(frozen=True)
class _Endpoint:
    end_ms: int


class _Transcriber:
    """Turns one session's audio into Soniox result messages (see the module docstring)."""

    def __init__(self, config: dict[str, Any], lag_ms: int) -> None:
        self.lag_ms = lag_ms
        self.diarize = bool(config.get("enable_speaker_diarization"))
        self.lang_id = bool(config.get("enable_language_identification"))
        self.endpoints = bool(config.get("enable_endpoint_detection"))
        translation = config.get("translation")
        hints = config.get("language_hints") or []
        self.translating = translation is not None
        self.target: str | None = None
        if translation is not None and translation["type"] == "two_way":
            self.source = translation["language_a"]
            self.target = translation["language_b"]
        else:
            self.source = hints[0] if hints else "en"
            if translation is not None:
                self.target = translation["target_language"]
        self.received = 0  # bytes
        self.final_ms = 0
        self._tail = bytearray()
        self._units = 0
        self._zero_run = 0
        self._words_since_endpoint = 0
        self._pending: deque[_Word | _Endpoint] = deque()

    @property
    def total_ms(self) -> int:
        return self.received // BYTES_PER_MS

    def feed(self, data: bytes) -> dict[str, Any]:
        """Take one audio message; return the result message to send."""
        self.received += len(data)
        self._tail += data
        while len(self._tail) >= UNIT_BYTES:
            unit = bytes(self._tail[:UNIT_BYTES])
            del self._tail[:UNIT_BYTES]
            self._add_unit(unit)
        lagged = max(0, self.total_ms - self.lag_ms) // UNIT_MS * UNIT_MS
        self.final_ms = max(self.final_ms, lagged)
        finals = self._pop_finals()
        provisional = [self._original(w, final=False) for w in self._pending if _is_word(w)]
        return self._result(finals + provisional)

    def finalize(self) -> dict[str, Any]:
        """Everything received becomes final, followed by ``<fin>``."""
        self.final_ms = max(self.final_ms, self.total_ms)
        tokens = [*self._pop_finals(), {"text": "<fin>", "is_final": True}]
        return self._result(tokens)

    def end(self) -> list[dict[str, Any]]:
        """End of audio: the last finals (if any), then the ``finished`` message."""
        self.final_ms = max(self.final_ms, self.total_ms)
        out = []
        finals = self._pop_finals()
        if finals:
            out.append(self._result(finals))
        out.append({**self._result([]), "finished": True})
        return out

    def _add_unit(self, unit: bytes) -> None:
        k = self._units
        self._units += 1
        if any(unit):
            self._zero_run = 0
        else:
            self._zero_run += 1
            if (
                self.endpoints
                and self._zero_run == ENDPOINT_SILENCE_UNITS
                and self._words_since_endpoint > 0
            ):
                self._pending.append(_Endpoint((k + 1) * UNIT_MS))
                self.final_ms = max(self.final_ms, (k + 1) * UNIT_MS)
                self._words_since_endpoint = 0
        word = word_for_unit(unit)
        if word is not None:
            self._pending.append(_Word(k, word, speaker_for_unit(unit)))
            self._words_since_endpoint += 1

    def _pop_finals(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        group: list[_Word] = []
        while self._pending and self._pending[0].end_ms <= self.final_ms:
            item = self._pending.popleft()
            if isinstance(item, _Word):
                group.append(item)
            else:
                out += self._final_group(group)
                group = []
                out.append({"text": "<end>", "is_final": True})
        out += self._final_group(group)
        return out

    def _final_group(self, words: list[_Word]) -> list[dict[str, Any]]:
        out = [self._original(w, final=True) for w in words]
        if self.translating:
            out += [self._translation(w) for w in words]
        return out

    def _original(self, word: _Word, *, final: bool) -> dict[str, Any]:
        token: dict[str, Any] = {
            "text": word.text,
            "start_ms": word.unit * UNIT_MS,
            "end_ms": word.end_ms,
            "confidence": CONFIDENCE,
            "is_final": final,
        }
        if self.diarize:
            token["speaker"] = word.speaker
        if self.lang_id:
            token["language"] = self.source
        if self.translating:
            token["translation_status"] = "original"
        return token

    def _translation(self, word: _Word) -> dict[str, Any]:
        token: dict[str, Any] = {
            "text": translation_of(word.text),
            "is_final": True,
            "language": self.target,
        }
        if self.diarize:
            token["speaker"] = word.speaker
        token["translation_status"] = "translation"
        token["source_language"] = self.source
        return token

    def _result(self, tokens: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "tokens": tokens,
            "final_audio_proc_ms": self.final_ms,
            "total_audio_proc_ms": self.total_ms,
        }


def _is_word(item: _Word | _Endpoint) -> bool:
    return isinstance(item, _Word)


# ---------------------------------------------------------------------------------------
# Records and plans


@dataclass(frozen=True)
class SessionPlan:
    """A fault for one future connection (queued with :meth:`SonioxEmulator.plan`).

    ``error``: send that error once ``error_after_ms`` of audio was received (0 = right
    after a valid start message), then close with ``close_code``. ``drop_after_ms``: abort
    the TCP connection (RST, no close frame). ``silent_after_ms``: stop answering and stop
    processing (frames are still read and recorded, so WebSocket pings still get pongs),
    with no idle timeout, until the client goes away or the emulator closes.
    ``unanswered_end``: the same from the client's first ``finalize`` or end of stream on
    (a service that never confirms the end: neither ``<fin>`` nor ``finished`` comes).
    ``error_type``/``error_message`` override the defaults for ``error``.

    Note on ``drop``: the RST is real on the wire (a raw read of the client's socket gets
    ECONNRESET), but through Python's ssl module with OpenSSL 3 the reset surfaces as a
    ragged EOF, so websocket-client raises ``WebSocketConnectionClosedException``
    ("Connection to remote host was lost.") rather than ``ConnectionResetError``.
    """

    error: int | None = None
    error_after_ms: int = 0
    drop_after_ms: int | None = None
    silent_after_ms: int | None = None
    unanswered_end: bool = False
    close_code: int = 1000
    error_type: str | None = None
    error_message: str | None = None


@dataclass(eq=False, kw_only=True)
class Session(SessionRecord):
    """What happened on one accepted WebSocket connection (besides what
    :class:`~tests.emulators.server.SessionRecord` records: ``index``, ``headers``,
    ``close_code``, ``client_close_code``, ``lost``, ``done``).

    Mutated by the emulator's connection thread under the emulator's lock; every record
    is updated *before* the matching bytes go on the wire, so whatever a client has seen
    is already recorded. Read it directly, or inside :meth:`SonioxEmulator.wait_for`.
    ``frames`` holds ``(time.monotonic(), "text" | "binary", text or byte length)``.
    ``fault`` is "error", "drop" or "silent" once a plan fired ("unanswered_end" once it
    did). ``after_end`` counts frames received after the end of audio (only those that had
    arrived when the emulator closed).
    """

    path: str
    origin_header: bool
    plan: SessionPlan | None
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    config: dict[str, Any] | None = None
    audio: bytearray = field(default_factory=bytearray)
    frames: list[tuple[float, str, int | str]] = field(default_factory=list)
    keepalive_times: list[float] = field(default_factory=list)
    finalize_times: list[float] = field(default_factory=list)
    end_received: bool = False
    after_end: int = 0
    error_sent: int | None = None
    finished_sent: bool = False
    max_lead_s: float = 0.0
    first_audio_at: float | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)
    final_words: list[str] = field(default_factory=list)
    fault: str | None = None

    @property
    def audio_ms(self) -> int:
        """Milliseconds of audio received."""
        return len(self.audio) // BYTES_PER_MS


class SonioxEmulator(EmulatorServer[Session]):
    """A TLS WebSocket server on 127.0.0.1 that behaves like Soniox's real-time API.

    Serving, ``sessions``, ``connections``, ``rejected_paths``, :meth:`wait_for` and
    :meth:`close` are :class:`~tests.emulators.server.EmulatorServer`'s, and so are the
    ``**options`` (``api_key``, ``tls``, ``ping_interval``, ``close_timeout``,
    ``open_timeout``, ``poll_interval``). The key goes in ``Authorization: Bearer`` or in
    the start message's ``api_key``; a wrong one is refused after the start message.
    ``idle_timeout`` is the 408 timeout (no audio and no keepalive); ``lag_ms`` how far
    behind the audio finals trail; ``models`` the models a start message may name.
    """

    path = PATH
    label = "soniox"

    def __init__(
        self,
        tmp_dir: str | Path,
        *,
        idle_timeout: float = 20.0,
        lag_ms: int = 500,
        models: Iterable[str] = DEFAULT_MODELS,
        max_plans: int = 64,
        **options: Unpack[ServerOptions],
    ) -> None:
        self.idle_timeout = idle_timeout
        self.lag_ms = lag_ms
        self.models = frozenset(models)
        self._max_plans = max_plans
        self._plans: deque[SessionPlan] = deque()
        super().__init__(tmp_dir, **options)

    @property
    def base_url(self) -> str:
        """``wss://127.0.0.1:PORT`` (for clients that append the path themselves)."""
        return f"wss://127.0.0.1:{self.port}"

    def plan(self, plan: SessionPlan) -> None:
        """Queue a fault plan for the next accepted WebSocket connection (FIFO; a 404
        does not consume one). Connections beyond the queued plans behave normally."""
        with self._cond:
            if len(self._plans) >= self._max_plans:
                raise RuntimeError("too many queued plans")
            self._plans.append(plan)

    def _new_session(self, index: int, request: Request) -> Session:
        return Session(
            index=index,
            path=request.path,
            headers=list(request.headers.raw_items()),
            origin_header="Origin" in request.headers,
            plan=self._plans.popleft() if self._plans else None,
        )

    def _serve_session(self, conn: ServerConnection, session: Session) -> None:
        _SessionRunner(self, conn, session).run()


class _SessionRunner(SessionRunner[SonioxEmulator, Session]):
    """Runs the protocol of one connection in the library's handler thread."""

    def __init__(self, emu: SonioxEmulator, conn: ServerConnection, session: Session) -> None:
        super().__init__(emu, conn, session)
        self.plan = session.plan
        self.silent = False
        self.transcriber: _Transcriber | None = None
        self.last_activity = time.monotonic()

    def _converse(self) -> None:
        self._start()
        while True:
            self._step(self._next_frame())

    # -- receiving ----------------------------------------------------------------------

    def _tick(self, now: float) -> float:
        """The 408: no audio and no keepalive for ``idle_timeout`` (not while silent)."""
        if self.silent:
            return self.emu.poll_interval
        idle_left = self.last_activity + self.emu.idle_timeout - now
        if idle_left <= 0:
            self._error(
                408,
                message=(
                    "No audio or keepalive received for more than "
                    f"{self.emu.idle_timeout:g} seconds."
                ),
            )
        return idle_left

    def _next_frame(self) -> str | bytes:
        frame = self._receive()
        self._record_frame(frame)
        return frame

    def _record_frame(self, frame: str | bytes) -> None:
        kind, what = ("binary", len(frame)) if isinstance(frame, bytes) else ("text", frame)
        with self._update():
            self.session.frames.append((time.monotonic(), kind, what))

    def _start(self) -> None:
        frame = self._next_frame()
        if isinstance(frame, bytes):
            self._error(400, message="The first message must be a text JSON start message.")
        try:
            config = json.loads(frame)
        except ValueError:
            self._error(400, message="The start message is not valid JSON.")
        if not isinstance(config, dict):
            self._error(400, message="The start message must be a JSON object.")
        with self._update():
            self.session.config = config
        self.last_activity = time.monotonic()
        self._authenticate(config)
        problem = config_problem(config, self.emu.models)
        if problem is not None:
            self._error(400, error_type=problem[0], message=problem[1])
        self.transcriber = _Transcriber(config, self.emu.lag_ms)
        self._apply_plan()

    def _authenticate(self, config: dict[str, Any]) -> None:
        values = self.conn.request.headers.get_all("Authorization") if self.conn.request else []
        if values and "api_key" in config:
            self._error(
                400,
                message="Send the API key either in the Authorization header or in the "
                "start message, not both.",
            )
        key: str | None = None
        if values:
            scheme, _, token = values[0].partition(" ")
            if len(values) == 1 and scheme.lower() == "bearer" and token.strip():
                key = token.strip()
        elif isinstance(config.get("api_key"), str):
            key = config["api_key"]
        else:
            self._error(401, message="Missing API key.")
        if key != self.emu.api_key:
            self._error(401, message="Invalid API key.")

    # -- the protocol after the start message -------------------------------------------

    def _step(self, frame: str | bytes) -> None:
        if self.silent:
            with self._update():
                if frame in ("", b""):
                    self.session.end_received = True
                elif isinstance(frame, bytes):
                    self.session.audio += frame
            return
        if self._ending(frame):
            return
        if frame in ("", b""):
            self._end()
        if isinstance(frame, bytes):
            self._audio(frame)
            return
        try:
            message = json.loads(frame)
        except ValueError:
            self._error(400, message="Text messages must be JSON control messages.")
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "keepalive" and set(message) == {"type"}:
            self.last_activity = time.monotonic()
            with self._update():
                self.session.keepalive_times.append(self.last_activity)
        elif (
            kind == "finalize"
            and set(message) <= {"type", "trailing_silence_ms"}
            and (
                "trailing_silence_ms" not in message
                or (_is_int(message["trailing_silence_ms"]) and message["trailing_silence_ms"] >= 0)
            )
        ):
            with self._update():
                self.session.finalize_times.append(time.monotonic())
            assert self.transcriber is not None
            self._send(self.transcriber.finalize())
        else:
            self._error(400, message=f"Unsupported control message: {frame[:200]!r}.")

    def _ending(self, frame: str | bytes) -> bool:
        """``unanswered_end``: the client asked for the end (finalize or end of stream); from
        here on the emulator listens and says nothing."""
        if self.plan is None or not self.plan.unanswered_end:
            return False
        if frame in ("", b""):
            kind = "end"
        elif isinstance(frame, str) and '"finalize"' in frame:
            kind = "finalize"
        else:
            return False
        self.silent = True
        with self._update():
            self.session.fault = "unanswered_end"
            if kind == "end":
                self.session.end_received = True
            else:
                self.session.finalize_times.append(time.monotonic())
        return True

    def _audio(self, data: bytes) -> None:
        if len(data) % 2:
            self._error(400, message="Audio messages must hold whole s16le samples (even size).")
        now = time.monotonic()
        self.last_activity = now
        with self._update():
            s = self.session
            s.audio += data
            if s.first_audio_at is None:
                s.first_audio_at = now
            lead = len(s.audio) / (BYTES_PER_MS * 1000) - (now - s.first_audio_at)
            s.max_lead_s = max(s.max_lead_s, lead)
        self._apply_plan()
        if self.silent:
            return
        assert self.transcriber is not None
        self._send(self.transcriber.feed(data))

    def _end(self) -> NoReturn:
        assert self.transcriber is not None
        with self._update():
            self.session.end_received = True
        for message in self.transcriber.end():
            self._send(message)
        # Tolerate (and count) frames the client already sent after the end, e.g. the
        # SDK's second "" from close(): they are read and ignored.
        while True:
            try:
                self._record_frame(self.conn.recv(timeout=0))
            except TimeoutError:
                break
            with self._update():
                self.session.after_end += 1
        self._close(1000)

    def _apply_plan(self) -> None:
        plan = self.plan
        if plan is None or self.silent:
            return
        received = self.session.audio_ms
        if plan.drop_after_ms is not None and received >= plan.drop_after_ms:
            self._drop()
        if plan.silent_after_ms is not None and received >= plan.silent_after_ms:
            self.silent = True
            with self._update():
                self.session.fault = "silent"
            return
        if plan.error is not None and received >= plan.error_after_ms:
            with self._update():
                self.session.fault = "error"
            self._error(
                plan.error,
                error_type=plan.error_type,
                message=plan.error_message,
                close_code=plan.close_code,
            )

    # -- sending and closing --------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        with self._update():
            self.session.sent.append(message)
            if message.get("finished"):
                self.session.finished_sent = True
            for token in message.get("tokens", ()):
                if token.get("is_final") and "start_ms" in token:
                    self.session.final_words.append(token["text"])
        self.conn.send(json.dumps(message))

    def _error(
        self,
        code: int,
        *,
        error_type: str | None = None,
        message: str | None = None,
        close_code: int = 1000,
    ) -> NoReturn:
        """Send an error message, close, and leave the handler (never returns)."""
        with self._update():
            self.session.error_sent = code
        self._send(
            {
                "error_code": code,
                "error_type": error_type or ERROR_TYPES.get(code, "error"),
                "error_message": message or ERROR_MESSAGES.get(code, "Error."),
                "request_id": self.session.request_id,
            }
        )
        self._close(close_code)

    def _drop(self) -> NoReturn:
        """Abort the TCP connection: RST (SO_LINGER 0), no close frame, no TLS alert."""
        with self._update():
            self.session.fault = "drop"
        self._abort()
