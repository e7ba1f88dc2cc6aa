"""Value types of config keys: each parses one INI string and says exactly what is wrong.

A type's ``parse`` returns the typed value or raises ``ValueError`` whose message is the
problem in words a Pi owner understands ("must be between 0 and 3, not 7"). It never echoes a
value that could be a secret (see ``SecretRef``). ``format`` turns a value back into INI text,
so that ``edgecap config`` prints something that loads again.

Whatever the text, ``parse`` raises nothing but ``ValueError``: huge numbers, unknown users in
``~user`` paths, over-long path names and control characters are all refused in words.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol


class FieldType(Protocol):
    def parse(self, raw: str, base_dir: Path) -> Any: ...

    def format(self, value: Any) -> str: ...

    def describe(self) -> str:
        """A short description of what is accepted, for the documented INI."""
        ...


# Characters that must not reach a terminal or an INI line raw: controls (a newline would split
# an error line, an escape would drive the terminal), format characters (bidi overrides),
# line/paragraph separators and lone surrogates (undecodable command-line bytes).
_UNPRINTABLE = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))
# The ones a value may not hold (format characters such as ZWJ belong to many scripts).
_FORBIDDEN_IN_VALUES = frozenset(("Cc", "Zl", "Zp", "Cs"))
PATH_MAX = 4096  # bytes, with the terminating NUL (Linux)
NAME_MAX = 255  # bytes of one path component


def escape_text(text: str) -> str:
    """``text`` with every unprintable character written as an escape (``\\x1b``, ``\\u202e``),
    so that an error about a value stays one harmless line on a terminal or in the journal."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if unicodedata.category(ch) in _UNPRINTABLE:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _short(raw: str, limit: int = 40) -> str:
    text = raw if len(raw) <= limit else raw[: limit - 1] + "…"
    return escape_text(text)


def _has_control(text: str, allowed: str = "") -> bool:
    return any(unicodedata.category(ch) in _FORBIDDEN_IN_VALUES for ch in text if ch not in allowed)


@dataclass(frozen=True)
class Str:
    """Text on one line; a value written over continuation lines is joined with spaces."""

    allow_empty: bool = True
    max_len: int = 4096

    def parse(self, raw: str, base_dir: Path) -> str:
        # Continuation lines (long free text) are joined with a space, as a paragraph: the
        # value stays one line, which `edgecap config` can always write back.
        value = " ".join(part.strip() for part in raw.split("\n") if part.strip())
        if not value and not self.allow_empty:
            raise ValueError("must not be empty")
        if len(value) > self.max_len:
            raise ValueError(f"is too long ({len(value)} characters, at most {self.max_len})")
        # A tab is harmless; any other control character is a mistake, or an attack on the
        # terminal that shows it.
        if _has_control(value, allowed="\t"):
            raise ValueError("must not contain control characters")
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
        if re.fullmatch(r"[+-]?\d{19,}", text, re.ASCII):
            allowed = _range_text(self.min, self.max)
            raise ValueError(f"must be a whole number{allowed}, not a number of {len(text)} digits")
        if not re.fullmatch(r"[+-]?\d{1,18}", text, re.ASCII):
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
        if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text, re.ASCII):
            raise ValueError(f"must be a number, not '{_short(text)}'")
        value = float(text)
        if not math.isfinite(value):
            raise ValueError("is too large")
        _check_range(value, self.min, self.max)
        return value

    def format(self, value: Any) -> str:
        # repr is the shortest text that reads back as exactly this float; :g would round
        return repr(float(value))

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
        if re.fullmatch(r"\d{1,9}", text, re.ASCII) and int(text) in self.choices:
            return int(text)
        allowed = ", ".join(str(c) for c in self.choices)
        raise ValueError(f"must be one of {allowed}, not '{_short(text)}'")

    def format(self, value: Any) -> str:
        return str(value)

    def describe(self) -> str:
        return " | ".join(str(c) for c in self.choices)


_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "sec": Decimal(1),
    "m": Decimal(60),
    "min": Decimal(60),
    "h": Decimal(3600),
}


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
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|sec|m|min|h)", text, re.ASCII)
        if match is None:
            if re.fullmatch(r"\d+(\.\d+)?", text, re.ASCII):
                raise ValueError(
                    f"needs a unit: write '{_short(text)}ms' or '{_short(text)}s' "
                    "(units: ms, s, m, h)"
                )
            raise ValueError(f"must be a duration like 500ms, 30s, 2m or 1h, not '{_short(text)}'")
        digits = len(match.group(1).partition(".")[0].lstrip("0"))
        if digits > 15:  # over 30,000 years: a typo, and a float would overflow soon after
            allowed = _range_text(self.min, self.max, fmt=format_duration)
            raise ValueError(f"must be a duration{allowed}, not a number of {digits} digits")
        # Decimal arithmetic: 0.1m is exactly 6 s, so that format_duration writes it back
        # as text that reads in as the same float.
        value = float(Decimal(match.group(1)) * _UNITS[match.group(2)])
        _check_range(value, self.min, self.max, fmt=format_duration)
        return value

    def format(self, value: Any) -> str:
        return format_duration(value)

    def describe(self) -> str:
        return "duration (ms, s, m, h)" + _range_text(self.min, self.max, fmt=format_duration)


def format_duration(seconds: float) -> str:
    """Seconds as duration text that ``Duration.parse`` reads back as exactly ``seconds``."""
    if not math.isfinite(seconds):
        return f"{seconds}s"  # never parsed back (refused), but never an exception either
    if seconds == 0:
        return "0s"
    exact = Decimal(repr(float(seconds)))  # the shortest decimal that is this float
    if exact != exact.to_integral_value():
        ms = exact * 1000
        if ms == ms.to_integral_value():
            return f"{_plain(ms)}ms"
        return f"{_plain(exact)}s"
    whole = int(exact)
    if whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole % 60 == 0 and whole >= 120:
        return f"{whole // 60}m"
    return f"{whole}s"


def _plain(number: Decimal) -> str:
    """A decimal without exponent or trailing zeros: 300, 1.5, 0.0001."""
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


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
        if _has_control(text):
            # Named (escaped), so that the owner can find the file with the odd name.
            raise ValueError(f"must be a path without control characters, not {escape_text(text)}")
        given = Path(text)
        if text.startswith("~"):
            try:
                given = given.expanduser()
            except RuntimeError:  # ~nosuchuser, or no home directory at all
                user = text[1:].partition("/")[0]
                raise ValueError(
                    f"names the home of an unknown user ('~{_short(user)}')"
                    if user
                    else "starts with ~ but there is no home directory"
                ) from None
        path = Path(os.path.normpath(base_dir.absolute() / given))
        _check_path_length(path)
        if self.must_exist and not path.exists():
            raise ValueError(f"no such file: {path}")
        return path

    def format(self, value: Any) -> str:
        return "" if value is None else str(value)

    def describe(self) -> str:
        return "path" + (" or - for standard input" if self.allow_stdin else "")


def _check_path_length(path: Path) -> None:
    """Refuse what the kernel would refuse with ENAMETOOLONG, before anything stats it."""
    data = os.fsencode(path)
    if len(data) >= PATH_MAX:
        raise ValueError(f"is too long for a path ({len(data)} bytes, at most {PATH_MAX - 1})")
    longest = max(len(part) for part in data.split(b"/"))
    if longest > NAME_MAX:
        raise ValueError(f"has a name of {longest} bytes in it (at most {NAME_MAX})")


@dataclass(frozen=True)
class ListOf:
    """Comma- or whitespace-separated values of one type. With ``commas_only`` an item may
    hold spaces, and a line end (continuation lines) separates items as a comma does."""

    item: FieldType
    max_items: int = 64
    commas_only: bool = False  # items may contain spaces ("Acme Cloud, Pi Zero")

    def parse(self, raw: str, base_dir: Path) -> tuple[Any, ...]:
        pattern = r"\s*[,\n]\s*" if self.commas_only else r"[,\s]+"
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
        if any(ch.isspace() for ch in text) or _has_control(text):
            raise ValueError("is not a valid URL (it contains spaces or control characters)")
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
        match = re.fullmatch(r"(\d+)([a-z]*)", text, re.ASCII)
        if match is None or match.group(2) not in _SIZE_UNITS:
            raise ValueError(f"must be a size like 512K, 10M or 1G, not '{_short(raw.strip())}'")
        digits = len(match.group(1).lstrip("0"))
        if digits > 15:
            allowed = _range_text(self.min, self.max, fmt=format_size)
            raise ValueError(f"must be a size{allowed}, not a number of {digits} digits")
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
    """Hex ``rrggbb`` (``ffcc00``, or ``#ffcc00``: only a whole line is a comment); an
    (r, g, b)."""

    def parse(self, raw: str, base_dir: Path) -> tuple[int, int, int]:
        text = raw.strip()
        text = text[1:] if text.startswith("#") else text
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
        if re.fullmatch(r"\d{1,2}", text, re.ASCII) and int(text) < 64:
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
            if _has_control(name):
                raise ValueError(f"{kind}: names must not contain control characters")
            if kind == "credential" and ("/" in name or name in (".", "..")):
                raise ValueError("a credential name is a plain name, without '/'")
            if kind == "file":
                if not name.startswith("/"):
                    name = os.path.normpath(base_dir.absolute() / name)
                _check_path_length(Path(name))
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
