"""Loading the effective config: files and drop-ins, command-line overrides, all errors at once.

Order (later wins, key by key): the main file, then the drop-ins of its ``.d`` directory in
name order, then ``--set section.key=value`` overrides. Without ``-c`` the main file is
``/etc/edgecap/edgecap.ini``; when it is missing edgecap runs on its defaults. Every problem
found — syntax, unknown section or key (with did-you-mean), bad value, rules between keys,
a key that cannot be found — is collected and raised together as one ``ConfigError``.

Loading never raises anything else and never blocks: only regular files are opened (a FIFO,
``/dev/zero`` or a directory given as a config is refused before it is opened), at most
``MAX_FILE_BYTES`` of a file is read, and an exception nobody foresaw becomes an error line
too (naming the key when it is known), so that ``check``, ``run`` and a reload always end in a
config or in exit status 78 — never in a traceback that systemd would restart in a loop.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecap.config.ini import IniFile, Value, parse_ini
from edgecap.config.schema import (
    RESERVED_SECTIONS,
    Config,
    key_fields,
    section_classes,
)
from edgecap.config.secrets import SecretInvalid, SecretNotFound, SecretValue, resolve
from edgecap.config.types import SecretRef, did_you_mean, escape_text

log = logging.getLogger(__name__)

ETC_DIR = Path("/etc/edgecap")
MAIN_NAME = "edgecap.ini"
EX_CONFIG = 78  # sysexits.h: configuration error; the unit lists it in RestartPreventExitStatus
MAX_FILE_BYTES = 1024 * 1024
MAX_ERRORS = 100  # a file of garbage gives a screenful, not a million lines
CLOUD_SERVICES = ("soniox", "azure", "sarvam")


class ConfigError(Exception):
    """Every problem of a config, one line each as ``section.key: problem (where)``.

    Each line is one line: a control character quoted from a value or a file name is
    escaped (``\\x1b``), so nothing in an error can split it or drive a terminal.
    """

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = [escape_text(line) for line in errors]
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    files: tuple[Path, ...]
    origins: Mapping[tuple[str, str], str]  # (section, key) -> "file:line" or "command line"
    secrets: Mapping[str, SecretValue]  # resolved keys of the services in use, by section


def config_files(
    explicit: Sequence[str | os.PathLike[str]] | None = None,
    etc_dir: Path = ETC_DIR,
    errors: list[str] | None = None,
) -> list[Path]:
    """The files to read, in order. ``explicit`` are the ``-c`` files (each with its drop-ins).

    Every ``*.ini`` entry of a drop-in directory is listed, whatever it is: one that is not a
    regular file is reported when it is read rather than skipped in silence. A drop-in
    directory that cannot be listed is reported in ``errors``.
    """
    mains = [Path(p) for p in explicit] if explicit else [etc_dir / MAIN_NAME]
    out: list[Path] = []
    for main in mains:
        out.append(main)
        if not main.name:  # "/" or "": no drop-in directory to look for
            continue
        dropin_dir = main.with_name(main.name + ".d")
        try:
            with os.scandir(dropin_dir) as entries:
                names = sorted(e.name for e in entries if e.name.endswith(".ini"))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, ValueError) as exc:
            if errors is not None:
                errors.append(f"{dropin_dir}: drop-ins cannot be read ({_reason(exc)})")
            continue
        out.extend(dropin_dir / name for name in names)
    return out


def load(
    explicit: Sequence[str | os.PathLike[str]] | None = None,
    overrides: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    etc_dir: Path = ETC_DIR,
) -> LoadedConfig:
    """The effective config, or ConfigError with every problem — and never another exception.

    ``explicit`` are the ``-c`` files: names as given (an empty one is reported, not taken
    for the current directory)."""
    errors: list[str] = []
    try:
        loaded = _load(explicit, overrides, env, etc_dir, errors)
    except Exception as exc:
        # A loader bug must still end in a refused config: log the traceback for the bug
        # report (debug: not on the terminal of `edgecap check`), and say what happened.
        log.debug("unexpected failure while loading the config", exc_info=True)
        errors.append(f"config: could not be read: {_reason(exc)} (a bug in edgecap)")
        loaded = None
    if errors or loaded is None:
        raise ConfigError(_capped(errors))
    return loaded


def _load(
    explicit: Sequence[str | os.PathLike[str]] | None,
    overrides: Sequence[str],
    env: Mapping[str, str] | None,
    etc_dir: Path,
    errors: list[str],
) -> LoadedConfig | None:
    env = os.environ if env is None else env
    given = [p for p in explicit or () if os.fspath(p)]
    if explicit and len(given) < len(explicit):
        errors.append("'': no such config file (-c was given an empty file name)")
        if not given:
            return None
    files = config_files(given or None, etc_dir, errors)
    layers: list[tuple[IniFile, Path]] = []
    read: list[Path] = []
    for index, path in enumerate(files):
        is_default_main = not given and index == 0
        text = _read_text(path, errors, missing_ok=is_default_main)
        if text is None:
            continue
        ini = parse_ini(text, str(path))
        errors.extend(ini.errors)
        layers.append((ini, path.parent))
        read.append(path)
    layers.extend(_override_layers(overrides, errors))

    values, origins = _apply_layers(layers, errors)
    config, failed = _build(values, origins, errors)
    secrets = _resolve_secrets(config, origins, env, errors, failed)
    if errors:
        return None
    return LoadedConfig(config, tuple(read), origins, secrets)


def _capped(errors: list[str]) -> list[str]:
    if len(errors) <= MAX_ERRORS:
        return errors
    more = len(errors) - MAX_ERRORS
    return [*errors[:MAX_ERRORS], f"config: {more} more errors not shown (fix these first)"]


def _reason(exc: BaseException) -> str:
    """An exception in a few words, for an error line: the OS's reason when there is one."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    text = text if len(text) <= 120 else text[:119] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _read_text(path: Path, errors: list[str], *, missing_ok: bool) -> str | None:
    """The text of a config file, or None with the problem in ``errors``.

    Only a regular file is opened: ``stat`` first, so that a FIFO (whose open would wait for
    a writer forever) or a device (``/dev/zero`` never ends) is refused without touching it;
    the open is non-blocking and checked again in case the name was swapped in between; and
    no more than MAX_FILE_BYTES + 1 bytes are ever read."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            errors.append(_not_a_file(path, st.st_mode))
            return None
        if st.st_size > MAX_FILE_BYTES:
            errors.append(_too_large(path, st.st_size))
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                errors.append(_not_a_file(path, mode))
                return None
            data = _read_at_most(fd, MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        if not missing_ok:
            broken = os.path.islink(path)
            errors.append(f"{path}: {'a broken link' if broken else 'no such config file'}")
        return None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        errors.append(f"{path}: cannot be read ({_reason(exc)})")
        return None
    if len(data) > MAX_FILE_BYTES:  # it grew after the stat
        errors.append(_too_large(path, len(data)))
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        errors.append(f"{path}:{line}: not UTF-8 text (byte {exc.start})")
        return None


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _not_a_file(path: Path, mode: int) -> str:
    if stat.S_ISDIR(mode):
        return f"{path}: is a directory, not a config file"
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return f"{path}: is {kind}, not a config file (only regular files are read)"


def _too_large(path: Path, size: int) -> str:
    return f"{path}: too large for a config file ({size} bytes, at most {MAX_FILE_BYTES})"


def _override_layers(overrides: Sequence[str], errors: list[str]) -> list[tuple[IniFile, Path]]:
    ini = IniFile("command line")
    for item in overrides:
        name, sep, value = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not section or not key:
            errors.append(f"--set {name.strip() or '?'}: expected section.key=value")
            continue
        ini.sections.setdefault(section, {})[key.strip().lower()] = Value(value.strip(), 0)
    return [(ini, Path.cwd())] if ini.sections else []


def _apply_layers(
    layers: list[tuple[IniFile, Path]], errors: list[str]
) -> tuple[dict[tuple[str, str], tuple[str, Path]], dict[tuple[str, str], str]]:
    """Check names, and keep the last raw value of each known key with where it came from."""
    classes = section_classes()
    known_sections = [*classes, *RESERVED_SECTIONS]
    values: dict[tuple[str, str], tuple[str, Path]] = {}
    origins: dict[tuple[str, str], str] = {}
    for ini, base_dir in layers:
        for section, keys in ini.sections.items():
            where = _where(ini, ini.section_lines.get(section, 0))
            if section not in classes:
                if section in RESERVED_SECTIONS:
                    for key, value in keys.items():
                        errors.append(
                            f"{section}.{key}: [{section}] takes no keys in this version of "
                            f"edgecap ({_where(ini, value.line)})"
                        )
                    continue
                # past the shown errors, no hint: a file of garbage would spend seconds on them
                hint = did_you_mean(section, known_sections) if len(errors) < MAX_ERRORS else ""
                errors.append(f"[{section}]: unknown section{_hint_brackets(hint)} ({where})")
                continue
            allowed = key_fields(classes[section])
            for key, value in keys.items():
                if key not in allowed:
                    hint = did_you_mean(key, list(allowed)) if len(errors) < MAX_ERRORS else ""
                    errors.append(f"{section}.{key}: unknown key{hint} ({_where(ini, value.line)})")
                    continue
                values[(section, key)] = (value.text, base_dir)
                origins[(section, key)] = _where(ini, value.line)
    return values, origins


def _build(
    values: dict[tuple[str, str], tuple[str, Path]],
    origins: dict[tuple[str, str], str],
    errors: list[str],
) -> tuple[Config, set[tuple[str, str]]]:
    """Parse every value; returns the config (defaults where a value was bad) and the keys
    that failed."""
    sections: dict[str, Any] = {}
    failed: set[tuple[str, str]] = set()
    for section, cls in section_classes().items():
        parsed: dict[str, Any] = {}
        section_ok = True
        for key, f in key_fields(cls).items():
            if (section, key) not in values:
                continue
            raw, base_dir = values[(section, key)]
            try:
                parsed[key] = f.metadata["type"].parse(raw, base_dir)
            except Exception as exc:  # a type's parse should raise only ValueError
                section_ok = False
                failed.add((section, key))
                problem = str(exc) if isinstance(exc, ValueError) else _unexpected(exc)
                errors.append(
                    f"{section}.{key}: {problem}{_comment_hint(raw)} ({origins[(section, key)]})"
                )
        instance = cls(**parsed)
        if section_ok:
            try:
                problems = instance.problems()
            except Exception as exc:  # a rule that touches the filesystem may meet anything
                problems = [("", _unexpected(exc))]
            for key, problem in problems:
                where = origins.get((section, key), "default")
                errors.append(
                    f"{section}.{key}: {problem} ({where})" if key else f"[{section}]: {problem}"
                )
        sections[section] = instance
    return Config(**sections), failed


def _unexpected(exc: Exception) -> str:
    log.debug("unexpected failure while checking the config", exc_info=True)
    return f"could not be checked: {_reason(exc)}"


def _comment_hint(raw: str) -> str:
    """A refused value with `` #`` or `` ;`` inside was probably written with a comment after
    it, which this INI format does not have (only whole lines are comments): say so."""
    if " #" in raw or "\t#" in raw or " ;" in raw or "\t;" in raw:
        return " (only a whole line can be a comment: put the comment on its own line)"
    return ""


def services_in_use(config: Config) -> list[str]:
    """Cloud services whose keys must be found for this config to run (a section with
    ``auth = none``, a container on the LAN, takes none)."""
    name = config.daemon.service
    if name not in CLOUD_SERVICES:
        return []
    if getattr(getattr(config, name), "auth", "key") == "none":
        return []
    return [name]


def _resolve_secrets(
    config: Config,
    origins: Mapping[tuple[str, str], str],
    env: Mapping[str, str],
    errors: list[str],
    failed: set[tuple[str, str]],
) -> dict[str, SecretValue]:
    out: dict[str, SecretValue] = {}
    for service in services_in_use(config):
        if (service, "api_key") in failed:
            continue
        ref: SecretRef = getattr(config, service).api_key
        where = origins.get((service, "api_key"), "default")
        try:
            out[service] = resolve(ref, env)
        except SecretInvalid as exc:
            errors.append(f"{service}.api_key: {exc} ({where})")
        except SecretNotFound as exc:
            errors.append(f"{service}.api_key: no key found: {exc} ({where})")
    return out


def _where(ini: IniFile, line: int) -> str:
    return f"{ini.name}:{line}" if line else ini.name


def _hint_brackets(hint: str) -> str:
    # did_you_mean gives "; did you mean 'audio'?"; sections read better as [audio].
    return hint.replace("'", "[", 1).replace("'", "]", 1) if hint else ""
