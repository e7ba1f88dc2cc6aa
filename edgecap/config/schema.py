"""The config schema: one frozen dataclass per INI section, each key typed and documented.

The documented example ``config/edgecap.ini`` is generated from this module
(``edgecap config --defaults``) and a test keeps the two identical, so a key cannot exist
without its documentation. Cross-key rules of a section live in its ``problems()``.
"""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecap.config.types import (
    Bool,
    ChannelValue,
    Choice,
    Color,
    Duration,
    FieldType,
    FileMode,
    Float,
    Int,
    IntChoice,
    LanguageCode,
    ListOf,
    Pair,
    PathValue,
    Secret,
    SecretRef,
    Size,
    Str,
    Url,
    escape_text,
)

SERVICES = ("soniox", "azure", "sarvam", "local")
# Services whose code has landed. The others are accepted by the schema (so a config written
# for a newer edgecap still parses) but refused by the cross-check with a clear message.
AVAILABLE_SERVICES = ("soniox", "azure", "sarvam", "local")


def key(type_: FieldType, default: Any, doc: str) -> Any:
    """Declare a config key: its type, default and a one-line explanation."""
    return field(default=default, metadata={"type": type_, "doc": doc})


@dataclass(frozen=True)
class DaemonConfig:
    """What edgecap does with the speech it hears."""

    service: str = key(
        Choice(*SERVICES),
        "local",
        "speech service: soniox, azure or sarvam (cloud, needs a key), or local (on the box)",
    )
    fallback: str = key(
        Choice("none", "local"),
        "none",
        "local = while the cloud service is unreachable, the offline engine ([local]) captions",
    )
    fallback_after: float = key(
        Duration(min=0, max=600),
        10.0,
        "how long the service must be unreachable (or refusing) before the fallback takes over",
    )
    profanity: str = key(
        Choice("mask", "remove", "off"),
        "mask",
        "swear words in captions: mask = shown as ***; remove = left out; off = as spoken "
        "(the same for every service; docs/profanity.md says whose filter)",
    )
    profanity_words: Any = key(
        PathValue(),
        None,
        "a file of more words to mask or remove (one per line, any language; * at the end "
        "matches any ending)",
    )

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.service not in AVAILABLE_SERVICES:
            out.append(
                (
                    "service",
                    f"'{self.service}' is not available in this version of edgecap "
                    f"(available: {', '.join(AVAILABLE_SERVICES)})",
                )
            )
        if self.profanity_words is not None and not self.profanity_words.is_file():
            out.append(("profanity_words", f"no such file: {self.profanity_words}"))
        return out


@dataclass(frozen=True)
class AudioConfig:
    """Where the audio comes from."""

    source: str = key(
        Choice("alsa", "wav", "raw"),
        "alsa",
        "alsa = a microphone; wav = a WAV file; raw = s16le 16 kHz mono on standard input",
    )
    device: str = key(
        Str(),
        "default",
        "alsa: capture device by exact name, part of its name, or index (edgecap devices)",
    )
    rate: int = key(
        Int(min=0, max=384_000),
        0,
        "alsa: rate to open the device at; 0 = 16000 if the device can, else its own rate "
        "(resampled)",
    )
    channel: int | None = key(
        ChannelValue(), None, "alsa and wav: mix = average all channels, or the channel number"
    )
    frame_ms: int = key(IntChoice((10, 20, 30)), 20, "length of one audio frame in ms")
    file: Any = key(PathValue(), None, "wav: the WAV file to play (any rate, channels, depth)")
    realtime: bool = key(Bool(), True, "wav: pace the file in real time (no = as fast as possible)")
    loop: bool = key(Bool(), False, "wav: start again at the end instead of stopping")
    raw_input: Any = key(
        PathValue(allow_stdin=True), Path("-"), "raw: file or FIFO to read, - = standard input"
    )
    stall_timeout: float = key(
        Duration(min=0.2, max=60),
        2.0,
        "alsa: an open device that delivers no audio this long is closed and reopened",
    )
    retry_max: float = key(
        Duration(min=1, max=3600),
        30.0,
        "longest wait between attempts to reopen a missing or failed device",
    )

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.source == "wav" and self.file is None:
            out.append(("file", "source = wav needs a file = /path/to/audio.wav"))
        if self.source == "wav" and self.file is not None and not self.file.is_file():
            out.append(("file", f"no such file: {self.file}"))
        if self.source == "raw" and str(self.raw_input) != "-" and os.path.isdir(self.raw_input):
            out.append(("raw_input", "is a directory: name a file or a FIFO, or - for stdin"))
        if self.source == "alsa" and not self.device:
            out.append(("device", "source = alsa needs a device (or 'default')"))
        return out


@dataclass(frozen=True)
class GateConfig:
    """The speech gate (webrtcvad): only speech is sent on."""

    enabled: bool = key(Bool(), True, "no = send all audio, speech or not")
    aggressiveness: int = key(
        Int(min=0, max=3), 2, "0 = lets most sound through ... 3 = only clear speech"
    )
    preroll: float = key(
        Duration(min=0, max=2), 0.3, "audio from just before speech starts that is sent too"
    )
    hangover: float = key(
        Duration(min=0.06, max=10), 0.6, "pauses shorter than this do not end an utterance"
    )
    min_speech: float = key(
        Duration(min=0.03, max=2), 0.15, "speech shorter than this (a click, a cough) is ignored"
    )
    max_utterance: float = key(
        Duration(min=0, max=3600), 60.0, "an utterance longer than this is split; 0 = never"
    )

    def problems(self) -> list[tuple[str, str]]:
        return []


@dataclass(frozen=True)
class LinkConfig:
    """The connection to a cloud speech service (any of them): reconnects, buffering, TLS."""

    connect: str = key(
        Choice("on_demand", "warm"),
        "on_demand",
        "on_demand = connect when speech starts, close after idle_close of quiet (services "
        "bill connected time); warm = stay connected, keepalives while quiet",
    )
    idle_close: float = key(
        Duration(min=1, max=86400),
        60.0,
        "on_demand: close the session after this long without speech",
    )
    buffer: float = key(
        Duration(min=1, max=600),
        30.0,
        "speech kept while the service cannot be reached, replayed on reconnect; "
        "older speech is dropped and reported",
    )
    replay_speed: float = key(
        Float(min=1.0, max=10.0),
        1.5,
        "buffered speech is replayed at most this many times faster than real time",
    )
    retry_first: float = key(
        Duration(min=0.05, max=60), 1.0, "longest wait before the first reconnect attempt"
    )
    retry_max: float = key(
        Duration(min=1, max=3600),
        10.0,
        "longest wait between reconnect attempts (also the longest a return of the "
        "network goes unnoticed)",
    )
    fatal_retry: float = key(
        Duration(min=60, max=604800),
        3600.0,
        "after the service refused the key, account or config: wait this long before "
        "trying again (or until 'systemctl reload edgecap')",
    )
    connect_timeout: float = key(
        Duration(min=0.5, max=60), 5.0, "a connection attempt (TCP, TLS, upgrade) gives up"
    )
    dead_after: float = key(
        Duration(min=1, max=300),
        10.0,
        "a connection that answers nothing this long — not audio, not a ping — is dead",
    )
    finish_timeout: float = key(
        Duration(min=0.1, max=30),
        3.0,
        "at stop or session rollover: wait this long for the last captions",
    )
    ca_file: Any = key(
        PathValue(),
        None,
        "extra CA certificates (PEM) to trust, for an on-premises server; the system's "
        "CAs are always trusted too",
    )
    proxy: str | None = key(
        Url(("http",), optional=True), None, "HTTP proxy for the connection, http://host:port"
    )

    def problems(self) -> list[tuple[str, str]]:
        if self.ca_file is not None and not self.ca_file.is_file():
            return [("ca_file", f"no such file: {self.ca_file}")]
        return []


@dataclass(frozen=True)
class LocalConfig:
    """The offline engine on the box (no account, no network)."""

    engine: str = key(
        Choice("pocketsphinx", "vosk"),
        "pocketsphinx",
        "pocketsphinx (English model built in) or vosk (a model you installed: model_path)",
    )
    model_path: Any = key(
        PathValue(), None, "the model directory; empty = pocketsphinx's built-in en-US model"
    )
    partial_interval: float = key(
        Duration(min=0.1, max=5), 0.5, "a provisional caption at most this often while speaking"
    )

    def problems(self) -> list[tuple[str, str]]:
        import importlib.util

        out = []
        if self.model_path is not None and not self.model_path.is_dir():
            out.append(("model_path", f"no such directory: {self.model_path}"))
        if self.engine == "vosk":
            if self.model_path is None:
                out.append(("model_path", "engine = vosk needs the directory of a Vosk model"))
            if importlib.util.find_spec("vosk") is None:
                out.append(("engine", "vosk is not installed (pip install vosk)"))
        elif importlib.util.find_spec("pocketsphinx") is None:
            out.append(("engine", "pocketsphinx is not installed (pip install pocketsphinx)"))
        return out


SONIOX_URL = "wss://stt-rt.soniox.com/transcribe-websocket"


@dataclass(frozen=True)
class SonioxConfig:
    """Soniox real-time speech-to-text and translation."""

    api_key: SecretRef = key(
        Secret(),
        SecretRef(("credential:soniox_api_key", "env:SONIOX_API_KEY")),
        "where the API key is read from (never the key itself)",
    )
    url: str = key(Url(("wss",)), SONIOX_URL, "the real-time WebSocket endpoint")
    model: str = key(
        Str(allow_empty=False, max_len=100),
        "stt-rt-v5",
        "real-time model (stt-rt-v5; stt-rt-v4 is its alias)",
    )
    language_hints: tuple[str, ...] = key(
        ListOf(LanguageCode()), (), "languages expected in the room, e.g. en, hi (empty = any)"
    )
    language_hints_strict: bool = key(Bool(), False, "yes = only transcribe the hinted languages")
    language_identification: bool = key(
        Bool(), True, "tag each word with its language (shown beside the caption)"
    )
    diarization: bool = key(Bool(), False, "tell speakers apart (Speaker 1, Speaker 2 …)")
    endpoint_detection: bool = key(
        Bool(), True, "the service ends a caption line when a speaker finishes a sentence"
    )
    max_endpoint_delay: float = key(
        Duration(min=0, max=3),
        0.0,
        "endpoint detection: longest wait before a line is ended, 500ms-3s; 0 = service default",
    )
    context_general: tuple[tuple[str, str], ...] = key(
        ListOf(Pair("key=value"), commas_only=True),
        (),
        "what the talk is about, e.g. domain=medicine, topic=council meeting",
    )
    context_text: str = key(
        Str(max_len=10_000), "", "free text about the setting (names, agenda) to help recognition"
    )
    context_terms: tuple[str, ...] = key(
        ListOf(Str(allow_empty=False, max_len=200), max_items=1000, commas_only=True),
        (),
        "words and names to recognise, comma-separated",
    )
    translation: str = key(
        Choice("none", "one_way", "two_way"),
        "none",
        "none; one_way = translate everything to target_language; two_way = between "
        "language_a and language_b",
    )
    target_language: str = key(
        LanguageCode(), "en", "one_way: the language captions are translated to"
    )
    language_a: str = key(LanguageCode(), "en", "two_way: the first language")
    language_b: str = key(LanguageCode(), "es", "two_way: the second language")
    translation_terms: tuple[tuple[str, str], ...] = key(
        ListOf(Pair("source=target"), max_items=1000, commas_only=True),
        (),
        "fixed translations, e.g. Pi=Pi, council=consejo",
    )
    keepalive: float = key(
        Duration(min=1, max=19),
        5.0,
        "while nobody speaks, a keepalive is sent this often (the service closes after 20 s)",
    )
    session_max: float = key(
        Duration(min=1, max=18000),
        17400.0,
        "a session is renewed after this long, at a pause (the service ends it at 300 min)",
    )

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.max_endpoint_delay and not 0.5 <= self.max_endpoint_delay <= 3:
            out.append(("max_endpoint_delay", "must be 0 or between 500ms and 3s"))
        if self.translation == "two_way" and self.language_a == self.language_b:
            out.append(("language_b", "two_way translation needs two different languages"))
        return out


@dataclass(frozen=True)
class AzureConfig:
    """Azure Speech: speech-to-text and speech translation."""

    api_key: SecretRef = key(
        Secret(),
        SecretRef(("credential:azure_speech_key", "env:AZURE_SPEECH_KEY")),
        "where the Speech resource key is read from (never the key itself)",
    )
    region: str = key(
        Str(max_len=50),
        "",
        "the Speech resource's region, e.g. westeurope (or set endpoint or host instead)",
    )
    endpoint: str | None = key(
        Url(("wss",), optional=True),
        None,
        "instead of region: the full WebSocket URL of the mode's path, as the Speech SDK's "
        "endpoint takes it",
    )
    host: str | None = key(
        Url(("wss", "ws"), optional=True),
        None,
        "instead of region: scheme://host:port of a Speech container on the LAN; the mode's "
        "path is appended (ws:// only here: unencrypted)",
    )
    auth: str = key(
        Choice("key", "token", "none"),
        "key",
        "key = send the resource key with every connection; token = exchange it for a "
        "10-minute token first (renewed); none = a container on the LAN that needs no key",
    )
    token_url: str | None = key(
        Url(("https",), optional=True),
        None,
        "auth = token: where tokens are issued (default: the region's issueToken endpoint)",
    )
    mode: str = key(
        Choice("recognition", "translation"),
        "recognition",
        "recognition = captions in the spoken language; translation = also into targets",
    )
    recognition_mode: str = key(
        Choice("interactive", "conversation", "dictation"),
        "conversation",
        "recognition: the service's model for short commands, conversation or dictation",
    )
    language: str = key(LanguageCode(), "en-US", "the spoken language, e.g. en-US, de-DE")
    format: str = key(
        Choice("simple", "detailed"),
        "simple",
        "recognition: detailed also returns each caption's confidence",
    )
    targets: tuple[str, ...] = key(
        ListOf(LanguageCode(), max_items=10),
        (),
        "translation: the languages captions are translated into, e.g. de, fr",
    )
    voice: str = key(
        Str(max_len=100),
        "",
        "translation: a voice that speaks the translation into its language, e.g. "
        "de-DE-KatjaNeural (empty = none)",
    )
    session_max: float = key(
        Duration(min=10, max=590),
        540.0,
        "a connection is renewed after this long, at a pause (the service ends it at 10 min)",
    )

    def voice_target(self) -> str | None:
        """The target language the voice speaks: the one its locale (``de-DE`` of
        ``de-DE-KatjaNeural``) starts with; None without a voice or a matching target."""
        if not self.voice:
            return None
        locale = self.voice.lower()
        for target in self.targets:
            if locale == target.lower() or locale.startswith(target.lower() + "-"):
                return target
        return None

    def problems(self) -> list[tuple[str, str]]:
        out = []
        where = [k for k in ("region", "endpoint", "host") if getattr(self, k)]
        if len(where) > 1:
            out.append((where[1], f"set only one of region, endpoint and host, not {where[0]} too"))
        if self.region and not re.fullmatch(r"[a-z0-9]+", self.region):
            out.append(("region", "must be a region name such as westeurope (letters, digits)"))
        if self.mode == "translation" and not self.targets:
            out.append(("targets", "translation needs at least one target language"))
        if self.mode != "translation" and self.targets:
            out.append(("targets", "only used with mode = translation"))
        if self.voice:
            if self.mode != "translation":
                out.append(("voice", "only used with mode = translation"))
            elif not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]+)+", self.voice):
                out.append(("voice", "must be a voice name such as de-DE-KatjaNeural"))
            elif self.voice_target() is None:
                out.append(("voice", "speaks none of the target languages"))
        if len({t.lower() for t in self.targets}) != len(self.targets):
            out.append(("targets", "a language is listed twice"))
        if self.auth == "token" and not (self.token_url or self.region):
            out.append(("token_url", "auth = token needs region or token_url"))
        if self.token_url and self.auth != "token":
            out.append(("token_url", "only used with auth = token"))
        if self.auth == "none" and not self.host:
            out.append(("auth", "none is only for a container on the LAN (host)"))
        return out


SARVAM_MODES = ("transcribe", "translate", "verbatim", "translit", "codemix")
SARVAM_LEGACY_MODEL = "saaras:v2.5"  # the legacy /speech-to-text-translate/ws endpoint
_SARVAM_LANGUAGE = re.compile(r"unknown|[a-z]{2,3}-[A-Z]{2}")


@dataclass(frozen=True)
class SarvamConfig:
    """Sarvam streaming speech-to-text and speech-to-English translation."""

    api_key: SecretRef = key(
        Secret(),
        SecretRef(("credential:sarvam_api_key", "env:SARVAM_API_KEY")),
        "where the API subscription key is read from (never the key itself)",
    )
    url: str | None = key(
        Url(("wss",), optional=True),
        None,
        "the full WebSocket URL, instead of the public endpoint of the model (empty = "
        "wss://api.sarvam.ai/speech-to-text/ws, or .../speech-to-text-translate/ws for "
        "saaras:v2.5)",
    )
    model: str = key(
        Choice("saaras:v3", SARVAM_LEGACY_MODEL),
        "saaras:v3",
        "saaras:v3 (any mode); saaras:v2.5 = the legacy endpoint, English translation only",
    )
    mode: str = key(
        Choice(*SARVAM_MODES),
        "transcribe",
        "transcribe = captions in the spoken language; translate = in English; verbatim = "
        "word for word; translit = in Latin letters; codemix = mixed scripts as spoken",
    )
    language: str = key(
        Str(allow_empty=False, max_len=20),
        "unknown",
        "the spoken language, e.g. hi-IN, ta-IN; unknown = the service detects it (saaras:v3 only)",
    )
    prompt: str = key(
        Str(max_len=2000),
        "",
        "saaras:v2.5: a few words about the talk to help translation, e.g. council meeting",
    )
    high_vad_sensitivity: bool = key(
        Bool(),
        False,
        "yes = the service ends a phrase after 0.5 s of silence instead of about 1 s (edgecap "
        "ends each utterance itself: leave it off)",
    )
    keepalive: float = key(
        Duration(min=1, max=55),
        20.0,
        "while nobody speaks, 0.1 s of silence is sent this often (the service closes a "
        "connection after 60 s without audio)",
    )
    session_max: float = key(
        Duration(min=10, max=86400),
        3600.0,
        "a connection is renewed after this long, at a pause (the service names no limit)",
    )

    @property
    def legacy(self) -> bool:
        """The legacy translate endpoint (saaras:v2.5): English translation, no mode."""
        return self.model == SARVAM_LEGACY_MODEL

    @property
    def translates(self) -> bool:
        """Captions are the English translation, not what was said."""
        return self.legacy or self.mode == "translate"

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not _SARVAM_LANGUAGE.fullmatch(self.language):
            out.append(("language", "must be unknown or a language code such as hi-IN"))
        if self.legacy:
            if self.mode != "translate":
                out.append(
                    ("mode", "saaras:v2.5 (the legacy endpoint) only translates: set translate")
                )
            if self.language != "unknown":
                out.append(("language", "saaras:v2.5 detects the language itself: leave unknown"))
        elif self.prompt:
            out.append(("prompt", "only saaras:v2.5 takes a prompt"))
        return out


@dataclass(frozen=True)
class SpeakerConfig:
    """Spoken translations (Azure with a voice): on a loudspeaker and/or as WAV files."""

    enabled: bool = key(Bool(), False, "play the spoken translation on an audio output device")
    device: str = key(
        Str(),
        "default",
        "ALSA playback device by exact name, part of its name, or index (edgecap devices)",
    )
    volume: float = key(Float(min=0.0, max=4.0), 1.0, "gain applied before playing (1 = as sent)")
    max_delay: float = key(
        Duration(min=1, max=600),
        20.0,
        "speech waiting to be played longer than this is skipped, whole utterances, oldest "
        "first (a speaker must not fall ever further behind the captions)",
    )
    save_dir: Any = key(
        PathValue(), None, "also save each spoken utterance as a WAV file here (empty = no)"
    )
    max_files: int = key(
        Int(min=1, max=1_000_000), 1000, "save_dir keeps this many files; the oldest go first"
    )

    def problems(self) -> list[tuple[str, str]]:
        if self.save_dir is not None and self.save_dir.exists() and not self.save_dir.is_dir():
            return [("save_dir", f"not a directory: {self.save_dir}")]
        return []


SHOW_CHOICES = Choice("both", "original", "translation")


@dataclass(frozen=True)
class SocketConfig:
    """Captions for other programs: JSON lines on a Unix socket (docs/socket-protocol.md)."""

    enabled: bool = key(Bool(), True, "serve captions on the socket")
    path: Any = key(PathValue(), Path("/run/edgecap/captions.sock"), "the socket's path")
    mode: int = key(FileMode(), 0o660, "permissions of the socket")
    group: str = key(Str(max_len=64), "", "group that owns the socket (empty = the service's)")
    history: int = key(Int(min=0, max=1000), 20, "final captions a new client gets first")
    client_buffer: int = key(
        Size(min=4096, max=64 * 1024**2),
        256 * 1024,
        "a client that falls this far behind is disconnected (after a notice)",
    )
    max_clients: int = key(Int(min=1, max=1000), 32, "clients at once; more are turned away")

    def problems(self) -> list[tuple[str, str]]:
        return []


def parse_listen(text: str) -> tuple[str, int]:
    """``[web] listen`` as (address, port): ``0.0.0.0:8080``, ``192.168.1.20:8080``,
    ``[::]:8080``; a bare ``:8080`` is every IPv4 interface. Raises ValueError in words."""
    import ipaddress

    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        raise ValueError(f"must be address:port, e.g. 0.0.0.0:8080, not '{escape_text(text)}'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError("only an IPv6 address goes in brackets, e.g. [::]:8080")
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets, e.g. [::]:8080")
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"the address must be an IP address of this box (or 0.0.0.0 for all), "
            f"not '{escape_text(host)}'"
        ) from None
    return host, int(port)


@dataclass(frozen=True)
class WebConfig:
    """Captions on every phone in the room: a web page on the LAN, and /metrics (docs/web.md)."""

    enabled: bool = key(Bool(), False, "serve the caption page (and /metrics)")
    listen: str = key(
        Str(allow_empty=False, max_len=60),
        "0.0.0.0:8080",
        "address:port to serve on: 0.0.0.0:8080 = every network of the box (the room's "
        "wifi); 192.168.1.20:8080 = that address only; [::]:8080 = IPv6 and IPv4",
    )
    url: str = key(
        Str(max_len=300),
        "",
        "the address viewers open and the QR code shows, e.g. http://room1.local:8080/ "
        "(empty = made from listen and this box's address on the LAN)",
    )
    title: str = key(Str(allow_empty=False, max_len=120), "Live captions", "the page's title")
    languages: tuple[str, ...] = key(
        ListOf(LanguageCode()),
        (),
        "translations viewers may choose, in this order (empty = every language the service "
        "translates into); the transcript can always be chosen",
    )
    history: int = key(Int(min=0, max=500), 50, "finished lines a viewer is shown on joining")
    max_clients: int = key(
        Int(min=1, max=1000), 100, "viewers at once; one more is shown a 'page full' notice"
    )
    access_code: SecretRef = key(
        Secret(),
        SecretRef(()),
        "where an access code for the page is read (credential:NAME, file:PATH, env:VAR; "
        "empty = no code): viewers type it once, the QR code carries it",
    )
    metrics: bool = key(Bool(), True, "also serve /metrics (Prometheus) for monitoring")
    metrics_listen: str = key(
        Str(max_len=60),
        "",
        "address:port for /metrics alone, e.g. 10.0.0.5:9101 on a management network "
        "(empty = beside the page, on listen)",
    )
    show_qr: bool = key(
        Bool(), True, "the HDMI screen shows the page's address as a QR code in its status area"
    )

    def problems(self) -> list[tuple[str, str]]:
        out = []
        for name in ("listen", "metrics_listen"):
            value = getattr(self, name)
            if name == "metrics_listen" and not value:
                continue
            try:
                parse_listen(value)
            except ValueError as exc:
                out.append((name, str(exc)))
        if self.metrics_listen and self.metrics_listen.strip() == self.listen.strip():
            out.append(("metrics_listen", "is the same as listen: leave it empty for that"))
        if self.url:
            from urllib.parse import urlsplit

            try:
                parts = urlsplit(self.url)
                parts.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError:
                parts = None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                out.append(("url", "must be an http:// or https:// address"))
        return out


@dataclass(frozen=True)
class HdmiConfig:
    """Captions on an attached screen through the Linux framebuffer."""

    enabled: bool = key(Bool(), False, "draw captions on the framebuffer")
    device: Any = key(PathValue(), Path("/dev/fb0"), "the framebuffer device")
    sysfs: Any = key(
        PathValue(),
        Path("/sys/class/graphics"),
        "where the framebuffer's geometry is read (virtual_size, bits_per_pixel, stride)",
    )
    width: int = key(Int(min=0, max=8192), 0, "screen width in pixels; 0 = from sysfs")
    height: int = key(Int(min=0, max=8192), 0, "screen height in pixels; 0 = from sysfs")
    bpp: int = key(IntChoice((0, 16, 32)), 0, "bits per pixel (16 = RGB565, 32); 0 = from sysfs")
    stride: int = key(Int(min=0, max=65536), 0, "bytes per row; 0 = from sysfs or width × bpp")
    layout: str = key(
        Choice("rollup", "fullscreen"),
        "rollup",
        "rollup = the last lines at the bottom of the screen; fullscreen = the whole screen",
    )
    lines: int = key(Int(min=1, max=20), 3, "rollup: caption lines shown")
    show: str = key(
        SHOW_CHOICES,
        "both",
        "both = each line with its translations below; original; translation = translations only",
    )
    translations: tuple[str, ...] = key(
        ListOf(LanguageCode()),
        (),
        "languages shown under each line, in this order, e.g. de, hi; empty = the line's "
        "translations in target order, at most two",
    )
    fonts: tuple[str, ...] = key(
        ListOf(Str(allow_empty=False, max_len=300), commas_only=True),
        (
            "DejaVuSans.ttf",
            "Lohit-Devanagari.ttf",
            "NotoSansCJK-Regular.ttc",
            "NotoSansArabic-Regular.ttf",
        ),
        "font files or names, tried in order for each character (fallback chain)",
    )
    font_size: int = key(Int(min=0, max=400), 0, "text height in pixels; 0 = scaled to the screen")
    color: Any = key(Color(), (255, 255, 255), "final text")
    provisional_color: Any = key(Color(), (160, 160, 160), "text that may still change")
    translation_color: Any = key(
        ListOf(Color(), max_items=8),
        ((255, 214, 102), (125, 200, 255)),
        "translations: a colour for each place under the line, in order (the last repeats)",
    )
    background: Any = key(Color(), (0, 0, 0), "background")
    max_fps: int = key(
        Int(min=1, max=60),
        8,
        "most screen updates per second (a reader follows no more; each costs CPU)",
    )
    dim_after: float = key(
        Duration(min=0, max=86400),
        300.0,
        "dim the captions after this long without speech; 0 = never",
    )
    blank_after: float = key(
        Duration(min=0, max=86400),
        1800.0,
        "blank the screen after this long without speech; 0 = never",
    )

    def problems(self) -> list[tuple[str, str]]:
        if not self.translation_color:
            return [("translation_color", "needs at least one colour")]
        return []


@dataclass(frozen=True)
class ConsoleConfig:
    """Captions on a text console (a Pi without a desktop) or any terminal."""

    enabled: bool = key(Bool(), False, "write captions to the console")
    tty: Any = key(PathValue(), Path("/dev/tty1"), "the terminal device")
    lines: int = key(Int(min=1, max=50), 3, "caption lines shown at the bottom")
    show: str = key(SHOW_CHOICES, "both", "both, original or translation (translations only)")
    translations: tuple[str, ...] = key(
        ListOf(LanguageCode()),
        (),
        "languages shown under each line, in this order; empty = all of the line's",
    )

    def problems(self) -> list[tuple[str, str]]:
        return []


@dataclass(frozen=True)
class SerialConfig:
    """Captions to a serial display or a broadcast caption encoder."""

    enabled: bool = key(Bool(), False, "send captions to a serial device or TCP port")
    transport: str = key(
        Choice("device", "tcp"), "device", "device = a serial port; tcp = host:port (telnet, iCap)"
    )
    device: Any = key(PathValue(), Path("/dev/ttyUSB0"), "device: the serial port")
    host: str = key(Str(max_len=255), "", "tcp: the encoder's host name or address")
    port: int = key(Int(min=0, max=65535), 0, "tcp: the TCP port")
    baud: int = key(
        IntChoice((1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)), 9600, "device: baud rate"
    )
    data_bits: int = key(IntChoice((7, 8)), 8, "device: data bits")
    parity: str = key(Choice("none", "even", "odd"), "none", "device: parity")
    stop_bits: int = key(IntChoice((1, 2)), 1, "device: stop bits")
    profile: str = key(
        Choice("lines", "serlcd", "matrix-orbital", "encoder"),
        "lines",
        "lines = finals as CRLF lines; serlcd, matrix-orbital = character LCDs; "
        "encoder = a caption encoder's real-time roll-up mode (EEG, Evertz, Link, Ultech)",
    )
    show: str = key(
        Choice("original", "translation"), "original", "which text is sent: one per line"
    )
    translations: tuple[str, ...] = key(
        ListOf(LanguageCode()),
        (),
        "show = translation: the language sent (the first listed); empty = the line's first",
    )
    provisional: bool = key(
        Bool(), False, "lines: also send provisional text, rewritten in place with CR"
    )
    rows: int = key(Int(min=1, max=4), 2, "LCD: rows")
    cols: int = key(Int(min=8, max=40), 16, "LCD: columns")
    channel: str = key(Choice("cc1", "cc2", "cc3", "cc4"), "cc1", "encoder: caption channel")
    roll_rows: int = key(IntChoice((2, 3, 4)), 3, "encoder: rows of the roll-up")
    base_row: int = key(Int(min=2, max=15), 15, "encoder: lowest row of the roll-up")
    chars_per_second: int = key(
        Int(min=10, max=1000), 60, "encoder: pace (CEA-608 carries about 60 characters a second)"
    )
    uppercase: bool = key(Bool(), False, "encoder: send captions in capitals")
    idle_release: float = key(
        Duration(min=1, max=3600),
        30.0,
        "encoder: leave real-time mode (Ctrl-C) after this long without captions",
    )

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.enabled and self.transport == "tcp" and (not self.host or not self.port):
            out.append(("host", "transport = tcp needs host and port"))
        if self.profile == "encoder" and self.base_row < self.roll_rows:
            out.append(("base_row", f"must be at least roll_rows ({self.roll_rows})"))
        return out


@dataclass(frozen=True)
class TranscriptConfig:
    """Transcripts on disk: JSON Lines, WebVTT and SRT."""

    enabled: bool = key(Bool(), False, "write transcripts")
    directory: Any = key(
        PathValue(), Path("/var/lib/edgecap/transcripts"), "where transcript files are written"
    )
    formats: tuple[str, ...] = key(
        ListOf(Choice("jsonl", "vtt", "srt")), ("jsonl", "vtt", "srt"), "file formats written"
    )
    split: str = key(Choice("day", "session"), "day", "a new set of files each day, or each run")
    max_size: int = key(
        Size(min=64 * 1024, max=1024**3), 50 * 1024**2, "a file larger than this is rotated"
    )
    keep: int = key(Int(min=1, max=10_000), 90, "sets of files kept; older ones are deleted")
    translations: tuple[str, ...] = key(
        ListOf(LanguageCode()),
        (),
        "translations written with each line, in this order (empty = all, in the order "
        "of the service's target languages)",
    )

    def problems(self) -> list[tuple[str, str]]:
        return []


@dataclass(frozen=True)
class StdoutConfig:
    """What `edgecap run` writes on standard output."""

    enabled: str = key(
        Choice("auto", "yes", "no"),
        "auto",
        "auto = yes, except when standard output goes to the journal (under systemd)",
    )
    format: str = key(Choice("text", "json"), "text", "text for people, json = one object a line")
    translations: tuple[str, ...] = key(
        ListOf(LanguageCode()),
        (),
        "languages printed under each line (and in JSON), in this order; empty = all",
    )

    def problems(self) -> list[tuple[str, str]]:
        return []


@dataclass(frozen=True)
class LogConfig:
    """Logging: the journal under systemd, standard error otherwise."""

    level: str = key(
        Choice("debug", "info", "warning", "error"), "info", "least severe level logged"
    )
    target: str = key(
        Choice("auto", "journal", "stderr"),
        "auto",
        "auto = the journal when started by systemd, else standard error",
    )
    repeat_interval: float = key(
        Duration(min=0, max=86400),
        60.0,
        "the same message is logged at most once per interval (then a count); 0 = no limit",
    )

    def problems(self) -> list[tuple[str, str]]:
        return []


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    soniox: SonioxConfig = field(default_factory=SonioxConfig)
    azure: AzureConfig = field(default_factory=AzureConfig)
    sarvam: SarvamConfig = field(default_factory=SarvamConfig)
    socket: SocketConfig = field(default_factory=SocketConfig)
    hdmi: HdmiConfig = field(default_factory=HdmiConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    serial: SerialConfig = field(default_factory=SerialConfig)
    transcript: TranscriptConfig = field(default_factory=TranscriptConfig)
    stdout: StdoutConfig = field(default_factory=StdoutConfig)
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    web: WebConfig = field(default_factory=WebConfig)
    log: LogConfig = field(default_factory=LogConfig)


# Sections reserved for parts that have not landed yet: accepted, but they take no keys.
RESERVED_SECTIONS: tuple[str, ...] = ()


def section_classes() -> dict[str, type]:
    return {f.name: f.default_factory for f in fields(Config)}  # type: ignore[misc]


def key_fields(section_cls: type) -> dict[str, Any]:
    """The dataclass fields of one section, by key name."""
    return {f.name: f for f in fields(section_cls)}


def default_of(f: Any) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()


SECRET_KEYS = {
    (name, fname)
    for name, cls in section_classes().items()
    for fname, f in key_fields(cls).items()
    if isinstance(f.metadata["type"], Secret)
}
