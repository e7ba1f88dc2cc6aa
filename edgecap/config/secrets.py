"""Reading service keys from where the config says, and keeping them out of every output.

A resolved key is a ``SecretValue``: its ``str()`` and ``repr()`` are masked, so a key that
ends up in a log call or an f-string by mistake prints as ``********``. Only ``reveal()``
gives the key, and only the codec that puts it on the wire calls it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgecap.config.types import SecretRef

MASK = "********"
MAX_SECRET_BYTES = 16 * 1024


@dataclass(frozen=True)
class SecretValue:
    origin: str  # e.g. "env SONIOX_API_KEY" — where it came from, never what it is
    _value: str

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"SecretValue(from {self.origin}: {MASK})"

    def __format__(self, spec: str) -> str:
        return MASK


class SecretNotFound(Exception):
    """No source of a SecretRef yielded a value; the message lists what was tried."""


class SecretInvalid(SecretNotFound):
    """A source yielded a value that cannot be a key (control characters, spaces inside).

    A subclass of SecretNotFound, so that every caller that handles a missing key handles a
    broken one too: the key is not usable either way. The message never holds the value.
    """


def check_key(value: str, origin: str) -> None:
    """Refuse a key that would break the protocol it is sent in: a CR/LF in a header value
    splits the header (``k\\r\\nX: 1``), a space or a non-ASCII character is never part of a
    service key. Found at load, it is a config error; found on the wire, a crash."""
    if any(not ch.isprintable() or ch.isspace() for ch in value):
        raise SecretInvalid(
            f"the key contains control characters or spaces (read from {origin}); "
            "write the key alone, on one line"
        )
    if not value.isascii():
        raise SecretInvalid(
            f"the key contains characters that are not ASCII (read from {origin}); "
            "copy the key again from the service's console"
        )


def resolve(ref: SecretRef, env: Mapping[str, str] | None = None) -> SecretValue:
    """Return the first value found among ``ref.sources``.

    Raises SecretNotFound with every attempt described (never a value). A key file readable
    by everyone, or writable by anyone but its owner, is refused: the point of a key file is
    that only the service can read it, and that nobody else can swap the key. The first value
    found must be a plausible key (``check_key``), else SecretInvalid: a broken key is
    reported, not skipped in favour of the next source.
    """
    env = os.environ if env is None else env
    tried: list[str] = []
    for source in ref.sources:
        kind, _, name = source.partition(":")
        if kind == "env":
            value = env.get(name, "").strip()
            if value:
                check_key(value, f"env {name}")
                return SecretValue(f"env {name}", value)
            tried.append(f"environment variable {name} is not set")
        elif kind == "credential":
            cred_dir = env.get("CREDENTIALS_DIRECTORY")
            if not cred_dir:
                tried.append(f"credential {name}: no systemd credentials (CREDENTIALS_DIRECTORY)")
                continue
            value = _read_file(Path(cred_dir) / name, tried, f"credential {name}", check_mode=False)
            if value:
                check_key(value, f"credential {name}")
                return SecretValue(f"credential {name}", value)
        elif kind == "file":
            value = _read_file(Path(name), tried, f"key file {name}", check_mode=True)
            if value:
                check_key(value, f"file {name}")
                return SecretValue(f"file {name}", value)
    if not ref.sources:
        raise SecretNotFound("no source given (credential:NAME, file:PATH or env:VAR)")
    raise SecretNotFound("; ".join(tried))


def _read_file(path: Path, tried: list[str], label: str, *, check_mode: bool) -> str | None:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            tried.append(f"{label} is not a regular file")
            return None
        loose = _loose_permissions(st.st_mode) if check_mode else ""
        if loose:
            tried.append(f"{label} is {loose} (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
            return None
        if st.st_size > MAX_SECRET_BYTES:
            tried.append(f"{label} is too large to be a key ({st.st_size} bytes)")
            return None
        data = path.read_bytes()
    except FileNotFoundError:
        tried.append(f"{label} does not exist")
        return None
    except OSError as exc:
        tried.append(f"{label} cannot be read ({exc.strerror})")
        return None
    except ValueError:  # a NUL in the name: the config types refuse it, but never crash
        tried.append(f"{label} cannot be read (not a valid file name)")
        return None
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        tried.append(f"{label} is not UTF-8 text")
        return None
    if not value:
        tried.append(f"{label} is empty")
        return None
    return value


def _loose_permissions(mode: int) -> str:
    """What is wrong with a key file's mode, in words; empty when only its owner (and perhaps
    its group, for reading) has access."""
    problems = []
    if mode & stat.S_IROTH:
        problems.append("readable by everyone")
    if mode & stat.S_IWOTH:
        problems.append("writable by everyone")
    if mode & stat.S_IWGRP:
        problems.append("writable by its group")
    return " and ".join(problems)
