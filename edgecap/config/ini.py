"""A small, strict INI reader that reports every problem with its line.

Why not configparser: it stops at the first duplicate key, keeps no line numbers for keys,
treats ``[DEFAULT]`` as magic, and its errors quote the offending line — which may be an API
key someone pasted in the wrong place. This reader collects all syntax problems, remembers
where each value came from, and never repeats a line's content in an error.

Syntax: ``[section]`` headers; ``key = value`` (key: letters, digits, ``_``, ``-``, case
folded to lower); a line whose first non-blank character is ``#`` or ``;`` is a comment; an
indented line continues the previous value (for lists and long text); one pair of double
quotes around a value is removed. Lines end at ``\n`` (a ``\r`` before it is dropped) and
nowhere else.

There are no comments after a value: ``title = Council meeting #5`` means what it says, and
a colour may be written ``#ffcc00``. (An inline-comment rule cuts such values silently; a
stray comment after a value is instead refused by the value's type, with a hint.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_KEY_RE = re.compile(r"[a-z0-9_][a-z0-9_\-]*")
_SECTION_RE = re.compile(r"[A-Za-z0-9_.\-]+")
MAX_LINE = 8192
MAX_ERRORS = 50  # per file: after that, only a count


@dataclass
class Value:
    text: str
    line: int


@dataclass
class IniFile:
    name: str
    sections: dict[str, dict[str, Value]] = field(default_factory=dict)
    section_lines: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def parse_ini(text: str, name: str) -> IniFile:
    out = IniFile(name)
    if text.startswith("\ufeff"):
        text = text[1:]
    section: str | None = None
    last: Value | None = None
    # Not splitlines(): it also breaks at \v, \f, \x1c-\x1e, \x85, \u2028 and \u2029,
    # which would number lines unlike any editor and cut values apart.
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if len(line) > MAX_LINE:
            out.errors.append(f"{name}:{lineno}: line is longer than {MAX_LINE} characters")
            last = None
            continue
        stripped = line.strip()
        if not stripped:
            last = None
            continue
        if stripped[0] in "#;":
            continue
        if line[0] in " \t" and last is not None:
            last.text = f"{last.text}\n{stripped}".strip()
            continue
        if stripped.startswith("["):
            last = None
            if not stripped.endswith("]"):
                out.errors.append(f"{name}:{lineno}: a section header must end with ']'")
                section = None
                continue
            sname = stripped[1:-1].strip()
            if not _SECTION_RE.fullmatch(sname):
                out.errors.append(
                    f"{name}:{lineno}: a section name has only letters, digits, '_', '-', '.'"
                )
                section = None
                continue
            section = sname
            out.sections.setdefault(section, {})
            out.section_lines.setdefault(section, lineno)
            continue
        if "=" not in stripped:
            # Do not quote the line: it may be a key pasted in the wrong place.
            out.errors.append(
                f"{name}:{lineno}: cannot read this line: expected 'key = value', "
                "'[section]' or a comment starting with #"
            )
            last = None
            continue
        raw_key, _, raw_value = stripped.partition("=")
        key = raw_key.strip().lower()
        if not _KEY_RE.fullmatch(key):
            out.errors.append(f"{name}:{lineno}: a key name has only letters, digits, '_' and '-'")
            last = None
            continue
        if section is None:
            out.errors.append(
                f"{name}:{lineno}: key '{key}' is outside any section; "
                "put a [section] header above it"
            )
            last = None
            continue
        keys = out.sections[section]
        if key in keys:
            out.errors.append(
                f"{name}:{lineno}: {section}.{key}: set twice in this file "
                f"(first on line {keys[key].line})"
            )
            last = None
            continue
        last = Value(_unquote(raw_value.strip()), lineno)
        keys[key] = last
    if len(out.errors) > MAX_ERRORS:
        more = len(out.errors) - MAX_ERRORS
        out.errors[MAX_ERRORS:] = [f"{name}: {more} more problems in this file not shown"]
    return out


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value
