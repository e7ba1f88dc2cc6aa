"""The config schema: one frozen dataclass per INI section, each key typed and documented.

The documented example ``config/edgecap.ini`` is generated from this module
(``edgecap config --defaults``) and a test keeps the two identical, so a key cannot exist
without its documentation. Cross-key rules of a section live in its ``problems()``.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecap.config.types import (
    Bool,
    ChannelValue,
    Choice,
    Duration,
    FieldType,
    Float,
    Int,
    IntChoice,
    LanguageCode,
    ListOf,
    Pair,
    PathValue,
    Secret,
    SecretRef,
    Str,
    Url,
)

SERVICES = ("soniox", "azure", "sarvam", "local")
# Services whose code has landed. The others are accepted by the schema (so a config written
# for a newer edgecap still parses) but refused by the cross-check with a clear message.
AVAILABLE_SERVICES = ("soniox", "local")


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

    def problems(self) -> list[tuple[str, str]]:
        if self.service not in AVAILABLE_SERVICES:
            return [
                (
                    "service",
                    f"'{self.service}' is not available in this version of edgecap "
                    f"(available: {', '.join(AVAILABLE_SERVICES)})",
                )
            ]
        return []


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
        Duration(min=1, max=3600), 30.0, "longest wait between reconnect attempts"
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

    def problems(self) -> list[tuple[str, str]]:
        return []


@dataclass(frozen=True)
class SarvamConfig:
    """Sarvam streaming speech-to-text and speech-to-English translation."""

    api_key: SecretRef = key(
        Secret(),
        SecretRef(("credential:sarvam_api_key", "env:SARVAM_API_KEY")),
        "where the API subscription key is read from (never the key itself)",
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
    soniox: SonioxConfig = field(default_factory=SonioxConfig)
    azure: AzureConfig = field(default_factory=AzureConfig)
    sarvam: SarvamConfig = field(default_factory=SarvamConfig)
    stdout: StdoutConfig = field(default_factory=StdoutConfig)
    log: LogConfig = field(default_factory=LogConfig)


# Sections reserved for parts that have not landed yet: accepted, but they take no keys.
RESERVED_SECTIONS = ("local", "hdmi", "console", "serial", "socket", "transcript")


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
