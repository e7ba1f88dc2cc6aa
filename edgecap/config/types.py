"""Value types of config keys: each parses one INI string and says exactly what is wrong.

A type's ``parse`` returns the typed value or raises ``ValueError`` whose message is the
problem in words a Pi owner understands ("must be between 0 and 3, not 7"). It never echoes a
value that could be a secret (see ``SecretRef``). ``format`` turns a value back into INI text,
so that ``edgecap config`` prints something that loads again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class FieldType(Protocol):
    def parse(self, raw: str, base_dir: Path) -> Any: ...

    def format(self, value: Any) -> str: ...

    def describe(self) -> str:
        """A short description of what is accepted, for the documented INI."""
        ...


def _short(raw: str, limit: int = 40) -> str:
    return raw if len(raw) <= limit else raw[: limit - 1] + "…"


@dataclass(frozen=True)
class Str:
    allow_empty: bool = True
    max_len: int = 4096

    def parse(self, raw: str, base_dir: Path) -> str:
        value = raw.strip()
        if not value and not self.allow_empty:
            raise ValueError("must not be empty")
        if len(value) > self.max_len:
            raise ValueError(f"is too long ({len(value)} characters, at most {self.max_len})")
        return value

    def format(self, value: Any) -> str:
        return str(value)

    def describe(self) -> str:
        return "text"


@dataclass(frozen=True)
class Int:
    min: int | None = None
    max: int | None = None

    def parse(self, raw: str, base_dir: Path) -> int:
        text = raw.strip().replace("_", "")
        if not re.fullmatch(r"[+-]?\d{1,18}", text):
            raise ValueError(f"must be a whole number, not '{_short(raw.strip())}'")
        value = int(text)
        _check_range(value, self.min, self.max)
        return value

    def format(self, value: Any) -> str:
        return str(value)

    def describe(self) -> str:
        return "whole number" + _range_text(self.min, self.max)


@dataclass(frozen=True)
class Float:
    min: float | None = None
    max: float | None = None

    def parse(self, raw: str, base_dir: Path) -> float:
        text = raw.strip()
        if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text):
            raise ValueError(f"must be a number, not '{_short(text)}'")
        value = float(text)
        _check_range(value, self.min, self.max)
        return value

    def format(self, value: Any) -> str:
        return f"{value:g}"

    def describe(self) -> str:
        return "number" + _range_text(self.min, self.max)


_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


@dataclass(frozen=True)
class Bool:
    def parse(self, raw: str, base_dir: Path) -> bool:
        text = raw.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(
            f"must be yes or no (true/false, on/off, 1/0), not '{_short(raw.strip())}'"
        )

    def format(self, value: Any) -> str:
        return "yes" if value else "no"

    def describe(self) -> str:
        return "yes or no"


@dataclass(frozen=True)
class Choice:
    choices: tuple[str, ...]

    def __init__(self, *choices: str) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def parse(self, raw: str, base_dir: Path) -> str:
        text = raw.strip().lower()
        if text in self.choices:
            return text
        hint = _did_you_mean(text, self.choices)
        raise ValueError(
            f"must be one of {', '.join(self.choices)}, not '{_short(raw.strip())}'{hint}"
        )

    def format(self, value: Any) -> str:
        return str(value)

    def describe(self) -> str:
        return " | ".join(self.choices)


@dataclass(frozen=True)
class IntChoice:
    choices: tuple[int, ...]

    def parse(self, raw: str, base_dir: Path) -> int:
        text = raw.strip()
        if text.isdigit() and int(text) in self.choices:
            return int(text)
        allowed = ", ".join(str(c) for c in self.choices)
        raise ValueError(f"must be one of {allowed}, not '{_short(text)}'")

    def format(self, value: Any) -> str:
        return str(value)

    def describe(self) -> str:
        return " | ".join(str(c) for c in self.choices)


_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Duration:
    """A time span with a unit (``500ms``, ``30s``, ``2m``, ``1h``, ``1.5s``); value in seconds.

    A bare number is refused on purpose: ``hangover = 600`` could mean 600 ms or 600 s.
    """

    min: float | None = None
    max: float | None = None

    def parse(self, raw: str, base_dir: Path) -> float:
        text = raw.strip().lower().replace(" ", "")
        if re.fullmatch(r"0+(\.0*)?", text):
            text = "0s"  # zero needs no unit: it is the same in every unit
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|sec|m|min|h)", text)
        if match is None:
            if re.fullmatch(r"\d+(\.\d+)?", text):
                raise ValueError(
                    f"needs a unit: write '{text}ms' or '{text}s' (units: ms, s, m, h)"
                )
            raise ValueError(f"must be a duration like 500ms, 30s, 2m or 1h, not '{_short(text)}'")
        value = float(match.group(1)) * _UNITS[match.group(2)]
        _check_range(value, self.min, self.max, fmt=format_duration)
        return value

    def format(self, value: Any) -> str:
        return format_duration(value)

    def describe(self) -> str:
        return "duration (ms, s, m, h)" + _range_text(self.min, self.max, fmt=format_duration)


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    if seconds < 1 or seconds != int(seconds):
        ms = seconds * 1000
        return f"{ms:g}ms" if ms == int(ms) else f"{seconds:g}s"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0 and seconds >= 120:
        return f"{int(seconds // 60)}m"
    return f"{int(seconds)}s"


@dataclass(frozen=True)
class PathValue:
    """A filesystem path; relative paths are taken from the directory of the INI file."""

    must_exist: bool = False
    allow_empty: bool = True
    allow_stdin: bool = False  # "-" means standard input

    def parse(self, raw: str, base_dir: Path) -> Path | None:
        text = raw.strip()
        if not text:
            if self.allow_empty:
                return None
            raise ValueError("must name a file")
        if text == "-" and self.allow_stdin:
            return Path("-")
        if "\x00" in text:
            raise ValueError("must be a path (it contains a NUL character)")
        path = Path(os.path.normpath(base_dir.absolute() / Path(text).expanduser()))
        if self.must_exist and not path.exists():
            raise ValueError(f"no such file: {path}")
        return path

    def format(self, value: Any) -> str:
        return "" if value is None else str(value)

    def describe(self) -> str:
        return "path" + (" or - for standard input" if self.allow_stdin else "")


@dataclass(frozen=True)
class ListOf:
    """Comma- or whitespace-separated values of one type."""

    item: FieldType
    max_items: int = 64
    commas_only: bool = False  # items may contain spaces ("Acme Cloud, Pi Zero")

    def parse(self, raw: str, base_dir: Path) -> tuple[Any, ...]:
        pattern = r"\s*,\s*" if self.commas_only else r"[,\s]+"
        parts = [p for p in re.split(pattern, raw.strip()) if p]
        if len(parts) > self.max_items:
            raise ValueError(f"has {len(parts)} items, at most {self.max_items}")
        out = []
        for part in parts:
            try:
                out.append(self.item.parse(part, base_dir))
            except ValueError as exc:
                raise ValueError(f"item '{_short(part)}' {exc}") from None
        return tuple(out)

    def format(self, value: Any) -> str:
        return ", ".join(self.item.format(v) for v in value)

    def describe(self) -> str:
        return f"list of {self.item.describe()}"


@dataclass(frozen=True)
class Pair:
    """``left=right``, e.g. a context entry ``domain=medicine`` or a term ``hello=hola``."""

    what: str = "key=value"

    def parse(self, raw: str, base_dir: Path) -> tuple[str, str]:
        left, sep, right = raw.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise ValueError(f"must be written {self.what}")
        return (left.strip(), right.strip())

    def format(self, value: Any) -> str:
        return f"{value[0]}={value[1]}"

    def describe(self) -> str:
        return self.what


_LANG_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")


@dataclass(frozen=True)
class LanguageCode:
    """An ISO 639 language code, optionally with a region or script: ``en``, ``pt-BR``."""

    def parse(self, raw: str, base_dir: Path) -> str:
        text = raw.strip()
        if not _LANG_RE.fullmatch(text):
            raise ValueError(
                f"must be a language code such as en, hi or pt-BR, not '{_short(text)}'"
            )
        return text

    def format(self, value: Any) -> str:
        return str(value)

    def describe(self) -> str:
        return "language code (en, hi, pt-BR …)"


@dataclass(frozen=True)
class Url:
    """An absolute URL with one of ``schemes``; credentials inside the URL are refused."""

    schemes: tuple[str, ...]
    optional: bool = False  # empty = none

    def parse(self, raw: str, base_dir: Path) -> str | None:
        from urllib.parse import urlsplit

        text = raw.strip()
        if not text and self.optional:
            return None
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if parts.scheme not in self.schemes or not parts.hostname:
            raise ValueError(f"must be a {' or '.join(s + '://' for s in self.schemes)} URL")
        if parts.username or parts.password:
            # Do not echo it: a password in a URL is a secret.
            raise ValueError("must not contain a user name or password")
        return text

    def format(self, value: Any) -> str:
        return "" if value is None else str(value)

    def describe(self) -> str:
        text = " or ".join(s + "://…" for s in self.schemes) + " URL"
        return text + (", or empty for none" if self.optional else "")


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}


def format_size(value: int) -> str:
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value and value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


@dataclass(frozen=True)
class Size:
    """A number of bytes: ``512``, ``64K``, ``10M``, ``1G`` (binary units)."""

    min: int | None = None
    max: int | None = None

    def parse(self, raw: str, base_dir: Path) -> int:
        text = raw.strip().lower().replace(" ", "")
        match = re.fullmatch(r"(\d+)([a-z]*)", text)
        if match is None or match.group(2) not in _SIZE_UNITS:
            raise ValueError(f"must be a size like 512K, 10M or 1G, not '{_short(raw.strip())}'")
        value = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
        _check_range(value, self.min, self.max, fmt=format_size)
        return value

    def format(self, value: Any) -> str:
        return format_size(value)

    def describe(self) -> str:
        return "size (K, M, G)" + _range_text(self.min, self.max, fmt=format_size)


@dataclass(frozen=True)
class FileMode:
    """Unix permission bits in octal, e.g. ``0660``."""

    def parse(self, raw: str, base_dir: Path) -> int:
        text = raw.strip()
        if not re.fullmatch(r"0?[0-7]{3}", text):
            raise ValueError(f"must be an octal mode like 0660, not '{_short(text)}'")
        return int(text, 8)

    def format(self, value: Any) -> str:
        return f"{value:04o}"

    def describe(self) -> str:
        return "octal mode"


@dataclass(frozen=True)
class Color:
    """Hex ``rrggbb`` (``ffcc00``; no ``#``, which starts a comment in INI); an (r, g, b)."""

    def parse(self, raw: str, base_dir: Path) -> tuple[int, int, int]:
        text = raw.strip()
        if not re.fullmatch(r"[0-9a-fA-F]{6}", text):
            raise ValueError(f"must be a hex colour like ffcc00, not '{_short(text)}'")
        return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))

    def format(self, value: Any) -> str:
        return "{:02x}{:02x}{:02x}".format(*value)

    def describe(self) -> str:
        return "hex colour rrggbb"


@dataclass(frozen=True)
class ChannelValue:
    """``mix`` (average all channels) or a channel number counted from 0."""

    def parse(self, raw: str, base_dir: Path) -> int | None:
        text = raw.strip().lower()
        if text == "mix":
            return None
        if text.isdigit() and int(text) < 64:
            return int(text)
        raise ValueError(f"must be 'mix' or a channel number 0-63, not '{_short(text)}'")

    def format(self, value: Any) -> str:
        return "mix" if value is None else str(value)

    def describe(self) -> str:
        return "mix | channel number from 0"


@dataclass(frozen=True)
class SecretRef:
    """Where a secret comes from — never the secret itself.

    Each item is ``credential:NAME`` (systemd ``LoadCredential=``, read from
    ``$CREDENTIALS_DIRECTORY/NAME``), ``file:PATH`` (a key file only the service can read) or
    ``env:VAR``; the first that yields a value wins. A literal key in the INI is refused
    (and never repeated in the error), because INI files get copied, pasted and shared.
    """

    sources: tuple[str, ...]


_SOURCE_RE = re.compile(r"(credential|file|env):(\S+)")


@dataclass(frozen=True)
class Secret:
    def parse(self, raw: str, base_dir: Path) -> SecretRef:
        parts = [p for p in re.split(r"[,\s]+", raw.strip()) if p]
        sources: list[str] = []
        for part in parts:
            match = _SOURCE_RE.fullmatch(part)
            if match is None:
                # Do not echo `part`: it may be the key itself.
                raise ValueError(
                    "a secret is never written in the config file: give where to read it, "
                    "as credential:NAME, file:/path/to/keyfile or env:VARIABLE"
                )
            kind, name = match.groups()
            if kind == "file" and not name.startswith("/"):
                name = os.path.normpath(base_dir.absolute() / name)
            sources.append(f"{kind}:{name}")
        return SecretRef(tuple(sources))

    def format(self, value: Any) -> str:
        return " ".join(value.sources)

    def describe(self) -> str:
        return "where to read a secret: credential:NAME, file:PATH, env:VAR (first found wins)"


def _check_range(value: float, lo: float | None, hi: float | None, fmt: Any = str) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if lo is not None and hi is not None:
            raise ValueError(f"must be between {fmt(lo)} and {fmt(hi)}, not {fmt(value)}")
        if lo is not None:
            raise ValueError(f"must be at least {fmt(lo)}, not {fmt(value)}")
        raise ValueError(f"must be at most {fmt(hi)}, not {fmt(value)}")


def _range_text(lo: float | None, hi: float | None, fmt: Any = str) -> str:
    if lo is not None and hi is not None:
        return f", {fmt(lo)} to {fmt(hi)}"
    if lo is not None:
        return f", at least {fmt(lo)}"
    if hi is not None:
        return f", at most {fmt(hi)}"
    return ""


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    import difflib

    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


did_you_mean = _did_you_mean
