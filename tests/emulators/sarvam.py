"""A strict, local emulator of Sarvam's streaming speech-to-text API (PROTOCOLS.md §2).

Usage::

    with SarvamEmulator(tmp_path, api_key="k", idle_timeout=60.0) as emu:
        ws = websocket.create_connection(
            emu.url_for(V3_PATH, **{"language-code": "hi-IN", "model": "saaras:v3", ...}),
            header=["api-subscription-key: k"], sslopt={"ca_certs": emu.ca_file},
            suppress_origin=True)
        ws.send(audio_message(pcm)); ws.send('{"type": "flush"}')
        ...

It refuses what the service refuses, as §2 says (and, where the service's exact answer is
not known, as the SDK's types imply):

* at the upgrade: a path other than ``/speech-to-text/ws`` (Saaras v3) and the legacy
  ``/speech-to-text-translate/ws`` (Saaras v2.5) → 404; a missing, wrong or repeated
  ``api-subscription-key`` header → 403 (Sarvam's code for a bad key); a query string that
  the endpoint does not take → 400: an unknown parameter, ``model`` not of the endpoint,
  ``mode``/``language-code`` on the legacy endpoint, no ``language-code`` or a bad ``mode``
  on v3, ``sample_rate`` not ``16000``/``8000``, a flag not ``true``/``false``, no
  ``input_audio_codec`` (required for raw PCM) or an unknown one. Every value is a string
  on the wire: ``language-code`` is hyphenated (``language_code`` is unknown).
* on the connection — an error message ``{"type": "error", "data": {"error", "code":
  "invalid_request_error"}}``, then close 1011 (as in ``sarvam_error_msg.jsonl``): a binary
  frame; text that is not a JSON object; an audio message that is not exactly
  ``{"audio": {"data", "sample_rate", "encoding"}}``, whose ``sample_rate`` is not the
  integer of the query (a string ``"16000"`` is refused), whose ``encoding`` is not
  ``audio/wav``, whose ``data`` is not strict base64 of whole s16le samples, or that
  carries a RIFF/WAVE header although ``input_audio_codec=pcm_s16le`` was declared; a
  ``flush`` on a connection opened without ``flush_signal=true``; a ``config`` prompt
  message on the v3 endpoint (only the legacy endpoint takes one); audio faster than
  ``max_speed`` × real time beyond a burst of ``burst`` seconds (what a client replaying
  its buffer may do, and no more); any other message.

Every violation is recorded in ``Session.violations`` before the close goes out.

"Recognition" is a pure function of the audio, so a test knows every word: the session's
audio is cut into 20 ms units (640 bytes) from its first byte, and unit ``k`` yields the
word of :func:`~tests.emulators.soniox.word_for_unit` (about one unit in eight, never a
digital-silence unit) written in the language's script (:func:`native_word`), in Latin
letters (``translit``: :func:`latin_word`), or in English (``translate`` and the legacy
endpoint: :func:`english_word`); ``codemix`` writes every word whose digest is even in
English. Its VAD: the first unit that is not digital silence sends ``START_SPEECH``;
``vad_end_ms`` of digital silence (1000 ms, 500 ms with ``high_vad_sensitivity=true``) send
``END_SPEECH`` and the segment's ``data`` (every unit since the previous segment's end).
A ``flush`` ends the segment at once: ``END_SPEECH`` (when in speech) and ``data``; a flush
with no speech since the last segment is answered by a ``data`` with an empty transcript
(``empty_flush="answer"``), or by nothing (``"silent"``: what the service may do; it is
not documented). No partial results; ``language_code`` is the requested language
(``language_probability`` null), or with ``unknown`` (and on the legacy endpoint) the one
:func:`detected_language` finds, with its probability.

Limits: the connection is closed (``idle_close_code``, 1000) after ``idle_timeout`` seconds
without audio — silence counts, a flush does not. Faults are queued with
:meth:`SarvamEmulator.plan` (:class:`SessionPlan`). The server around the protocol (TLS,
threads, records' lock, ``close``) is ``server.py``'s.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, Unpack
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from .server import EmulatorServer, ServerOptions, SessionRecord, SessionRunner
from .soniox import BYTES_PER_MS, UNIT_BYTES, UNIT_MS, word_for_unit

V3_PATH = "/speech-to-text/ws"
LEGACY_PATH = "/speech-to-text-translate/ws"
PATHS = {V3_PATH: "v3", LEGACY_PATH: "legacy"}
V3_MODELS = frozenset({"saaras:v3", "saaras:v4"})
LEGACY_MODELS = frozenset({"saaras:v2.5"})
MODES = frozenset({"transcribe", "translate", "verbatim", "translit", "codemix"})
CODECS = frozenset({"wav", "pcm_s16le", "pcm_l16", "pcm_raw"})
FLAGS = ("high_vad_sensitivity", "vad_signals", "flush_signal")
VAD_TUNING = frozenset(
    {
        "positive_speech_threshold",
        "negative_speech_threshold",
        "min_speech_frames",
        "first_turn_min_speech_frames",
        "negative_frames_count",
        "negative_frames_window",
        "start_speech_volume_threshold",
        "interrupt_min_speech_frames",
        "pre_speech_pad_frames",
        "num_initial_ignored_frames",
    }
)
COMMON_PARAMS = frozenset({"model", "sample_rate", "input_audio_codec", *FLAGS}) | VAD_TUNING
V3_PARAMS = COMMON_PARAMS | {"language-code", "mode", "keyterms"}
ERROR_CLOSE = 1011  # what followed the error message in sarvam_error_msg.jsonl
PROCESSING_LATENCY = 0.01
DETECTABLE = ("hi-IN", "ta-IN", "bn-IN")

# -----------------------------------------------------------------------------------------
# What a test can predict

_CONSONANTS = {
    "deva": "कखगघचछजझटठडढतथदधनपफबभमयरलवशसह",
    "taml": "கஙசஞடணதநபமயரலவழளறன",
    "beng": "কখগঘচছজঝটঠডঢতথদধনপফবভমযরলশষসহ",
}
_VOWEL_SIGNS = {
    "deva": ("", "ा", "ि", "ी", "ु", "ू", "े", "ै", "ो", "ौ"),
    "taml": ("", "ா", "ி", "ீ", "ு", "ூ", "ெ", "ே", "ை", "ொ"),
    "beng": ("", "া", "ি", "ী", "ু", "ূ", "ে", "ৈ", "ো", "ৌ"),
}
_LATIN_CONSONANTS = ("k", "g", "ch", "j", "t", "d", "n", "p", "b", "m", "y", "r", "l", "v", "s")
_LATIN_VOWELS = ("a", "aa", "i", "ii", "u", "uu", "e", "ai", "o", "au")
_ENGLISH_CONSONANTS = "bcdfghklmnprstvw"
_ENGLISH_VOWELS = "aeiou"
_SCRIPTS = {"hi": "deva", "mr": "deva", "ne": "deva", "ta": "taml", "bn": "beng", "as": "beng"}


def _digest(word: str) -> bytes:
    """The 4 bytes behind a recognized word (``" w<8 hex>"``)."""
    return bytes.fromhex(word.strip().removeprefix("w"))


def script_of(language: str) -> str:
    """The script a language is written in here: ``deva``, ``taml``, ``beng`` or
    ``latn`` (English)."""
    base = language.split("-")[0].lower()
    return "latn" if base == "en" else _SCRIPTS.get(base, "deva")


def native_word(word: str, language: str) -> str:
    """A recognized word as the transcript writes it in ``language``'s script: two
    syllables (consonant and vowel sign) from the word's digest."""
    script = script_of(language)
    if script == "latn":
        return english_word(word)
    consonants, signs = _CONSONANTS[script], _VOWEL_SIGNS[script]
    return "".join(
        consonants[b % len(consonants)] + signs[(b // len(consonants)) % len(signs)]
        for b in _digest(word)[:2]
    )


def latin_word(word: str) -> str:
    """The word in Latin letters (``translit``): the same syllables romanized."""
    return "".join(
        _LATIN_CONSONANTS[b % len(_LATIN_CONSONANTS)]
        + _LATIN_VOWELS[(b // len(_LATIN_CONSONANTS)) % len(_LATIN_VOWELS)]
        for b in _digest(word)[:2]
    )


def english_word(word: str) -> str:
    """The word's English translation: three Latin syllables from its digest."""
    return "".join(
        _ENGLISH_CONSONANTS[b % 16] + _ENGLISH_VOWELS[(b // 16) % 5] for b in _digest(word)[:3]
    )


def detected_language(words: list[str]) -> tuple[str | None, float | None]:
    """What language detection says of a segment: by its first word (none without words),
    with a probability in [0.5, 0.99]."""
    if not words:
        return None, None
    digest = _digest(words[0])
    return DETECTABLE[digest[2] % len(DETECTABLE)], round(0.5 + (digest[3] % 50) / 100, 2)


def written(word: str, mode: str, language: str) -> str:
    """A word as a transcript of ``mode`` writes it (``language``: what was spoken)."""
    if mode == "translate":
        return english_word(word)
    if mode == "translit":
        return latin_word(word)
    if mode == "codemix" and _digest(word)[1] % 2 == 0:
        return english_word(word)
    return native_word(word, language)


def unit_words(pcm: bytes) -> list[tuple[int, str]]:
    """(unit, word) of every recognized word of ``pcm`` (cut from its first byte)."""
    out = []
    for k in range(len(pcm) // UNIT_BYTES):
        word = word_for_unit(pcm[k * UNIT_BYTES : (k + 1) * UNIT_BYTES])
        if word is not None:
            out.append((k, word))
    return out


def words_of(pcm: bytes) -> list[str]:
    """The recognized words of ``pcm`` (``" w<hex>"``), in order."""
    return [w for _, w in unit_words(pcm)]


def audio_message(pcm: bytes, sample_rate: Any = 16000, encoding: str = "audio/wav") -> str:
    """An audio message as the SDK writes it."""
    data = base64.b64encode(pcm).decode("ascii")
    return json.dumps({"audio": {"data": data, "sample_rate": sample_rate, "encoding": encoding}})


def sdk_query(
    path: str = V3_PATH, *, language: str = "hi-IN", mode: str = "transcribe", **more: str
) -> dict[str, str]:
    """The query the SDK sends for ``path`` (sarvam_stt_v3.jsonl, sarvam_sttt.jsonl)."""
    query: dict[str, str] = {}
    if path == V3_PATH:
        query.update({"language-code": language, "model": "saaras:v3", "mode": mode})
    else:
        query["model"] = "saaras:v2.5"
    query.update(
        sample_rate="16000",
        high_vad_sensitivity="false",
        vad_signals="true",
        flush_signal="true",
        input_audio_codec="pcm_s16le",
    )
    query.update(more)
    return query


def _iso_now() -> tuple[str, float]:
    now = time.time()
    return datetime.fromtimestamp(now, UTC).isoformat(), now


# -----------------------------------------------------------------------------------------
# Records and plans


@dataclass(frozen=True)
class SessionPlan:
    """A fault for one future connection (queued with :meth:`SarvamEmulator.plan`).

    ``refuse``: refuse the upgrade with that HTTP status (403 a key refused, 429 a rate
    limit, 503 …). ``error``: send an error message with that code (``insufficient_quota_
    error``, ``rate_limit_exceeded_error`` …) once ``error_after_ms`` of audio arrived (0:
    at the first audio message), then close with ``close_code``. ``drop_after_ms``: abort the
    TCP connection (RST). ``close_after_ms``: close with ``close_code`` and
    ``close_reason``. ``silent_after_ms``: stop answering (and stop the idle clock; frames
    are still read and recorded, so pings get pongs)."""

    refuse: int | None = None
    error: str | None = None
    error_after_ms: int = 0
    drop_after_ms: int | None = None
    close_after_ms: int | None = None
    silent_after_ms: int | None = None
    close_code: int = ERROR_CLOSE
    close_reason: str = "error"


@dataclass(frozen=True)
class Segment:
    """One transcript the emulator sent: the audio it covers (units ``[start, end)`` of the
    session), its words (``" w<hex>"``), the text sent, and what ended it."""

    start: int
    end: int
    audio: bytes
    words: tuple[str, ...]
    transcript: str
    language: str | None
    by: Literal["vad", "flush"]


@dataclass(eq=False, kw_only=True)
class Session(SessionRecord):
    """What happened on one accepted connection (besides the base record). ``endpoint`` is
    "v3" or "legacy"; ``query`` the query string (one value a name); ``audio`` every PCM
    byte received (keepalive silence included); ``frames`` ``(time.monotonic(), kind,
    text or byte length)`` of every client frame; ``messages`` the kind of each client
    message ("audio", "flush", "config") with its time; ``segments`` the transcripts
    sent; ``sent`` every server message; ``violations`` what the client did wrong (one at
    most: the emulator closes on it); ``limit`` "idle" when the idle limit closed it;
    ``fault`` the plan's fault once it fired."""

    endpoint: str
    query: dict[str, str]
    plan: SessionPlan | None
    audio: bytearray = field(default_factory=bytearray)
    frames: list[tuple[float, str, int | str]] = field(default_factory=list)
    messages: list[tuple[float, str]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    limit: str | None = None
    fault: str | None = None

    @property
    def audio_ms(self) -> int:
        return len(self.audio) // BYTES_PER_MS

    def flushes(self) -> int:
        return sum(1 for _, kind in self.messages if kind == "flush")


class SarvamEmulator(EmulatorServer[Session]):
    """A TLS WebSocket server on 127.0.0.1 that behaves like Sarvam's streaming STT.

    ``idle_timeout`` is the service's 60 s limit (audio resets it); ``vad_end_ms`` the
    silence its VAD needs to end a segment (halved with ``high_vad_sensitivity``);
    ``empty_flush`` how a flush with nothing to transcribe is answered; ``max_speed`` and
    ``burst`` the pace audio may arrive at (× real time, and seconds ahead)."""

    path = V3_PATH  # one of two: see _process_request
    label = "sarvam"

    def __init__(
        self,
        tmp_dir: str | Path,
        *,
        idle_timeout: float = 60.0,
        idle_close_code: int = 1000,
        vad_end_ms: int = 1000,
        empty_flush: Literal["answer", "silent"] = "answer",
        max_speed: float = 2.0,
        burst: float = 1.5,
        max_plans: int = 64,
        **options: Unpack[ServerOptions],
    ) -> None:
        self.idle_timeout = idle_timeout
        self.idle_close_code = idle_close_code
        self.vad_end_ms = vad_end_ms
        self.empty_flush = empty_flush
        self.max_speed = max_speed
        self.burst = burst
        self._max_plans = max_plans
        self._plans: deque[SessionPlan] = deque()
        super().__init__(tmp_dir, **options)

    @property
    def base_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    def url_for(self, path: str = V3_PATH, **query: str) -> str:
        """The URL of ``path`` with ``query`` (names as the wire has them)."""
        return f"{self.base_url}{path}?{urlencode(query)}"

    def plan(self, plan: SessionPlan) -> None:
        """Queue a fault plan for the next upgrade request to a served path (FIFO)."""
        with self._cond:
            if len(self._plans) >= self._max_plans:
                raise RuntimeError("too many queued plans")
            self._plans.append(plan)

    # -- the upgrade ----------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        """The base serves one exact target; Sarvam has two paths, each with a query. The
        same bookkeeping, the path compared without its query."""
        with self._cond:
            self._connections += 1
            self._threads.append(threading.current_thread())
            self._threads.append(conn.recv_events_thread)
            wrong_path = urlsplit(request.path).path not in PATHS
            if wrong_path:
                self._rejected.append(request.path)
            self._cond.notify_all()
        if wrong_path:
            return conn.respond(404, "Not Found\n")
        refusal = self._refusal(request)
        if refusal is not None:
            return conn.respond(*refusal)
        return None

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        with self._cond:
            if self._plans and self._plans[0].refuse is not None:
                status = self._plans.popleft().refuse
                return status, _error_body(status)
        if request.headers.get_all("api-subscription-key") != [self.api_key]:
            return 403, _error_body(403)
        split = urlsplit(request.path)
        problem = query_problem(PATHS[split.path], parse_qs(split.query, keep_blank_values=True))
        if problem:
            return 400, json.dumps({"error": {"message": problem, "code": "invalid_request_error"}})
        return None

    def _new_session(self, index: int, request: Request) -> Session:
        split = urlsplit(request.path)
        return Session(
            index=index,
            headers=list(request.headers.raw_items()),
            endpoint=PATHS[split.path],
            query={k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            plan=self._plans.popleft() if self._plans else None,
        )

    def _serve_session(self, conn: ServerConnection, session: Session) -> None:
        _SessionRunner(self, conn, session).run()


_ERROR_CODES = {
    403: ("invalid_api_key_error", "Invalid API key"),
    429: ("rate_limit_exceeded_error", "Rate limit exceeded"),
    503: ("internal_server_error", "Service unavailable"),
}


def _error_body(status: int) -> str:
    code, message = _ERROR_CODES.get(status, ("internal_server_error", "Refused"))
    return json.dumps({"error": {"message": message, "code": code}})


def query_problem(endpoint: str, query: dict[str, list[str]]) -> str | None:
    """Why the upgrade's query is refused (400), or None."""
    allowed = V3_PARAMS if endpoint == "v3" else COMMON_PARAMS
    unknown = sorted(set(query) - allowed)
    if unknown:
        return f"unknown query parameter(s): {', '.join(unknown)}"
    if any(len(values) != 1 for values in query.values()):
        return "a query parameter was given twice"
    one = {name: values[0] for name, values in query.items()}
    models = V3_MODELS if endpoint == "v3" else LEGACY_MODELS
    if one.get("model", "saaras:v3" if endpoint == "v3" else "saaras:v2.5") not in models:
        return f"model {one.get('model')!r} is not served on this endpoint"
    if endpoint == "v3":
        if not one.get("language-code"):
            return "language-code is required"
        if one.get("mode", "transcribe") not in MODES:
            return f"unknown mode {one['mode']!r}"
    if one.get("sample_rate", "16000") not in ("16000", "8000"):
        return "sample_rate must be 16000 or 8000"
    for flag in FLAGS:
        if one.get(flag, "false") not in ("true", "false"):
            return f"{flag} must be true or false"
    if "input_audio_codec" not in one:
        return "input_audio_codec is required for raw PCM"
    if one["input_audio_codec"] not in CODECS:
        return f"unknown input_audio_codec {one['input_audio_codec']!r}"
    return None


class _SessionRunner(SessionRunner[SarvamEmulator, Session]):
    """Runs the protocol of one connection in the library's handler thread."""

    def __init__(self, emu: SarvamEmulator, conn: ServerConnection, session: Session) -> None:
        super().__init__(emu, conn, session)
        query = session.query
        self.mode = "translate" if session.endpoint == "legacy" else query.get("mode", "transcribe")
        self.language = query.get("language-code", "unknown")
        self.sample_rate = int(query.get("sample_rate", "16000"))
        self.flush_signal = query.get("flush_signal") == "true"
        self.vad_signals = query.get("vad_signals") == "true"
        high = query.get("high_vad_sensitivity") == "true"
        self.vad_end_units = max(1, (emu.vad_end_ms // (2 if high else 1)) // UNIT_MS)
        self.last_audio = time.monotonic()
        self.silent = False
        self.tokens = emu.burst  # seconds of audio that may arrive now
        self.tokens_at: float | None = None
        self.units = 0  # units of the session's audio taken
        self.in_speech = False
        self.zero_run = 0
        self.segment_start = 0  # first unit not yet in a transcript

    def _converse(self) -> None:
        while True:
            message = self._receive()
            self._record(message)
            if self.silent:
                self._keep_silently(message)
                continue
            if isinstance(message, bytes):
                self._violation("binary frames are not accepted: send audio as base64 JSON")
            self._text(message)

    def _tick(self, now: float) -> float:
        if self.silent:
            return self.emu.poll_interval
        left = self.last_audio + self.emu.idle_timeout - now
        if left <= 0:
            with self._update():
                self.session.limit = "idle"
            self._close(self.emu.idle_close_code, "idle timeout")
        return left

    def _record(self, message: str | bytes) -> None:
        kind, what = ("binary", len(message)) if isinstance(message, bytes) else ("text", message)
        with self._update():
            self.session.frames.append((time.monotonic(), kind, what))

    def _keep_silently(self, message: str | bytes) -> None:
        """A silent service still takes the audio (for the records), and says nothing."""
        try:
            body = json.loads(message)["audio"]
            pcm = base64.b64decode(body["data"], validate=True)
        except (ValueError, TypeError, KeyError):
            return
        with self._update():
            self.session.audio += pcm

    # -- client messages ------------------------------------------------------------------

    def _text(self, message: str) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            self._violation("text messages must be JSON")
        if not isinstance(data, dict):
            self._violation("a message must be a JSON object")
        if set(data) == {"audio"}:
            self._audio(data["audio"])
        elif data == {"type": "flush"}:
            if not self.flush_signal:
                self._violation("flush needs flush_signal=true on the connection")
            self._message("flush")
            self._end_segment("flush")
        elif data.get("type") == "config" and set(data) == {"type", "prompt"}:
            if self.session.endpoint != "legacy":
                self._violation("config (prompt) messages are only taken by the translate endpoint")
            if not isinstance(data["prompt"], str):
                self._violation("prompt must be a string")
            self._message("config")
            with self._update():
                self.session.prompts.append(data["prompt"])
        else:
            self._violation(f"unsupported message: {message[:120]!r}")

    def _message(self, kind: str) -> None:
        with self._update():
            self.session.messages.append((time.monotonic(), kind))

    def _audio(self, body: Any) -> None:
        if not isinstance(body, dict) or set(body) != {"data", "sample_rate", "encoding"}:
            self._violation("audio must hold exactly data, sample_rate and encoding")
        rate = body["sample_rate"]
        if not isinstance(rate, int) or isinstance(rate, bool):
            self._violation(f"sample_rate must be an integer, not {rate!r}")
        if rate != self.sample_rate:
            self._violation(f"sample_rate {rate} differs from the connection's {self.sample_rate}")
        if body["encoding"] != "audio/wav":
            self._violation(f"unsupported encoding {body['encoding']!r}")
        data = body["data"]
        try:
            pcm = base64.b64decode(data, validate=True) if isinstance(data, str) else None
        except (binascii.Error, ValueError):
            pcm = None
        if not pcm:
            self._violation("audio data must be non-empty base64")
        if len(pcm) % 2:
            self._violation("Invalid audio format: not whole 16-bit samples")
        if pcm.startswith(b"RIFF") and self.session.query.get("input_audio_codec") == "pcm_s16le":
            self._violation("Invalid audio format: a WAV header in pcm_s16le audio")
        self._pace(len(pcm))
        self.last_audio = time.monotonic()
        self._message("audio")
        with self._update():
            self.session.audio += pcm
        self._apply_plan()
        if not self.silent:
            self._units()

    def _pace(self, size: int) -> None:
        """A token bucket: ``burst`` seconds at once, refilled at ``max_speed``."""
        now = time.monotonic()
        if self.tokens_at is not None:
            self.tokens = min(
                self.emu.burst, self.tokens + (now - self.tokens_at) * self.emu.max_speed
            )
        self.tokens_at = now
        seconds = size / (self.sample_rate * 2)
        if seconds > self.tokens + 1e-9:
            self._violation(f"audio sent faster than {self.emu.max_speed:g}x real time")
        self.tokens -= seconds

    # -- recognition ----------------------------------------------------------------------

    def _units(self) -> None:
        audio = self.session.audio
        while (self.units + 1) * UNIT_BYTES <= len(audio):
            unit = bytes(audio[self.units * UNIT_BYTES : (self.units + 1) * UNIT_BYTES])
            self.units += 1
            if any(unit):
                self.zero_run = 0
                if not self.in_speech:
                    self.in_speech = True
                    self._event("START_SPEECH")
            elif self.in_speech:
                self.zero_run += 1
                if self.zero_run >= self.vad_end_units:
                    self._end_segment("vad")

    def _end_segment(self, by: Literal["vad", "flush"]) -> None:
        had_speech = self.in_speech
        if had_speech:
            self.in_speech = False
            self.zero_run = 0
            self._event("END_SPEECH")
        elif by == "flush" and self.emu.empty_flush == "silent":
            return
        start, end = self.segment_start, self.units
        self.segment_start = end
        audio = bytes(self.session.audio[start * UNIT_BYTES : end * UNIT_BYTES])
        words = [w for _, w in unit_words(audio)]
        if self.language == "unknown" or self.session.endpoint == "legacy":
            language, probability = detected_language(words)
        else:
            language, probability = self.language, None
        spoken = language or "hi-IN"
        transcript = " ".join(written(w, self.mode, spoken) for w in words)
        data: dict[str, Any] = {"request_id": f"{uuid.uuid4().hex[:8]}_{len(self.session.sent)}"}
        data["transcript"] = transcript
        if self.session.endpoint == "v3":
            data.update(timestamps=None, diarized_transcript=None)
        data.update(
            language_code=language,
            language_probability=probability,
            metrics={
                "audio_duration": (end - start) * UNIT_MS / 1000,
                "processing_latency": PROCESSING_LATENCY,
            },
        )
        segment = Segment(start, end, audio, tuple(words), transcript, language, by)
        with self._update():
            self.session.segments.append(segment)
        self._send({"type": "data", "data": data})

    def _event(self, signal: str) -> None:
        if not self.vad_signals:
            return
        stamp, epoch = _iso_now()
        body = {"event_type": "vad", "signal_type": signal, "timestamp": stamp}
        self._send({"type": "events", "data": {**body, "occured_at": epoch}})

    # -- sending and endings --------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        with self._update():
            self.session.sent.append(message)
        self.conn.send(json.dumps(message, ensure_ascii=False))

    def _apply_plan(self) -> None:
        plan = self.session.plan
        if plan is None or self.session.fault is not None:
            return
        received = self.session.audio_ms
        if plan.drop_after_ms is not None and received >= plan.drop_after_ms:
            with self._update():
                self.session.fault = "drop"
            self._abort()
        if plan.silent_after_ms is not None and received >= plan.silent_after_ms:
            self.silent = True
            with self._update():
                self.session.fault = "silent"
            return
        if plan.close_after_ms is not None and received >= plan.close_after_ms:
            with self._update():
                self.session.fault = "close"
            self._close(plan.close_code, plan.close_reason)
        if plan.error is not None and received >= plan.error_after_ms:
            with self._update():
                self.session.fault = "error"
            self._error(plan.error, f"planned {plan.error}", plan.close_code)

    def _error(self, code: str, text: str, close_code: int = ERROR_CLOSE) -> NoReturn:
        self._send({"type": "error", "data": {"error": text, "code": code}})
        self._close(close_code, "error")

    def _violation(self, what: str) -> NoReturn:
        with self._update():
            self.session.violations.append(what)
        self._error("invalid_request_error", what)
