"""Config back to INI text: the effective config (``edgecap config``) and the documented
defaults (``config/edgecap.ini``, generated so that documentation and schema cannot drift).

The effective config loads again to the same config (a property test keeps it so): where a
value was set is a comment on the line above it (this INI has no comments after a value),
a value that is itself in double quotes gets a pair of quotes more (the reader removes one
pair), and a line break in a value (no type yields one today: text joins its continuation
lines) would be written as a continuation line.
"""

from __future__ import annotations

import textwrap
from dataclasses import fields

from edgecap.config.examples import render_examples
from edgecap.config.loader import LoadedConfig
from edgecap.config.schema import RESERVED_SECTIONS, Config, default_of, section_classes
from edgecap.config.secrets import MASK
from edgecap.config.types import escape_text

HEADER = """\
# edgecap configuration.
#
# This file lists every key with its default value and what it does. Lines starting with
# '#' or ';' are comments: remove the '#' in front of a key to change it. Only a whole line
# is a comment: in 'title = Council meeting #5' the '#5' is part of the value. Files in
# /etc/edgecap/edgecap.ini.d/*.ini are read after this one, in name order, and override it
# key by key. Check a config with 'edgecap check', see the effective values with
# 'edgecap config'.
#
# Durations take a unit: 500ms, 30s, 2m, 1h. Booleans: yes/no, true/false, on/off.
# Service keys are never written here: give where edgecap reads them
# (credential:NAME for systemd's LoadCredential=, file:/path, env:VARIABLE).
"""

RESERVED_NOTE = "(keys for this section arrive with the part that uses it)"


def render_defaults() -> str:
    """The documented example config: every key, commented out, at its default."""
    parts = [HEADER]
    for name, cls in section_classes().items():
        parts.append("")
        parts.append(f"[{name}]")
        parts.append(f"# {cls.__doc__.strip()}")
        for f in fields(cls):
            ftype = f.metadata["type"]
            parts.append("")
            for line in textwrap.wrap(f.metadata["doc"], width=92):
                parts.append(f"# {line}")
            parts.append(f"# ({ftype.describe()})")
            parts.append(f"#{f.name} = {ftype.format(default_of(f))}".rstrip())
    for name in RESERVED_SECTIONS:
        parts.append("")
        parts.append(f"#[{name}]")
        parts.append(f"# {RESERVED_NOTE}")
    return "\n".join(parts) + "\n" + render_examples()


def render_effective(loaded: LoadedConfig) -> str:
    """Every key with its effective value; where it was set, as a comment; keys masked."""
    config: Config = loaded.config
    files = ", ".join(str(p) for p in loaded.files) or "none (built-in defaults)"
    parts = [escape_text(f"# effective edgecap config; files read: {files}")]
    for name in section_classes():
        section = getattr(config, name)
        parts.append("")
        parts.append(f"[{name}]")
        for f in fields(section):
            value = f.metadata["type"].format(getattr(section, f.name))
            where = loaded.origins.get((name, f.name), "default")
            comment = f"# {where}"
            if name in loaded.secrets and f.name == "api_key":
                comment += f"; key {MASK} read from {loaded.secrets[name].origin}"
            parts.append(escape_text(comment))  # a file name may hold a line break
            parts.append(f"{f.name} = {ini_value(value)}".rstrip(" "))
    return "\n".join(parts) + "\n"


def ini_value(text: str) -> str:
    """``text`` as the INI reader will read it back: one more pair of quotes around a value
    in quotes, and each further line indented (a continuation line)."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = f'"{text}"'
    return "\n    ".join(text.split("\n"))
