"""Loading the effective config: files and drop-ins, command-line overrides, all errors at once.

Order (later wins, key by key): the main file, then the drop-ins of its ``.d`` directory in
name order, then ``--set section.key=value`` overrides. Without ``-c`` the main file is
``/etc/edgecap/edgecap.ini``; when it is missing edgecap runs on its defaults. Every problem
found — syntax, unknown section or key (with did-you-mean), bad value, rules between keys,
a key that cannot be found — is collected and raised together as one ``ConfigError``.
"""

from __future__ import annotations

import os
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
from edgecap.config.secrets import SecretNotFound, SecretValue, resolve
from edgecap.config.types import SecretRef, did_you_mean

ETC_DIR = Path("/etc/edgecap")
MAIN_NAME = "edgecap.ini"
EX_CONFIG = 78  # sysexits.h: configuration error; the unit lists it in RestartPreventExitStatus
MAX_FILE_BYTES = 1024 * 1024
CLOUD_SERVICES = ("soniox", "azure", "sarvam")


class ConfigError(Exception):
    """Every problem of a config, one line each as ``section.key: problem (where)``."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    files: tuple[Path, ...]
    origins: Mapping[tuple[str, str], str]  # (section, key) -> "file:line" or "command line"
    secrets: Mapping[str, SecretValue]  # resolved keys of the services in use, by section


def config_files(explicit: Sequence[Path] | None = None, etc_dir: Path = ETC_DIR) -> list[Path]:
    """The files to read, in order. ``explicit`` are the ``-c`` files (each with its drop-ins)."""
    mains = list(explicit) if explicit else [etc_dir / MAIN_NAME]
    out: list[Path] = []
    for main in mains:
        out.append(main)
        dropin_dir = main.with_name(main.name + ".d")
        if dropin_dir.is_dir():
            out.extend(sorted(p for p in dropin_dir.glob("*.ini") if p.is_file()))
    return out


def load(
    explicit: Sequence[Path] | None = None,
    overrides: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    etc_dir: Path = ETC_DIR,
) -> LoadedConfig:
    env = os.environ if env is None else env
    errors: list[str] = []
    files = config_files(explicit, etc_dir)
    layers: list[tuple[IniFile, Path]] = []
    read: list[Path] = []
    for index, path in enumerate(files):
        is_default_main = not explicit and index == 0
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
        raise ConfigError(errors)
    return LoadedConfig(config, tuple(read), origins, secrets)


def _read_text(path: Path, errors: list[str], *, missing_ok: bool) -> str | None:
    try:
        if path.is_dir():
            errors.append(f"{path}: is a directory, not a config file")
            return None
        data = path.read_bytes()
    except FileNotFoundError:
        if not missing_ok:
            errors.append(f"{path}: no such config file")
        return None
    except OSError as exc:
        errors.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return None
    if len(data) > MAX_FILE_BYTES:
        errors.append(f"{path}: too large for a config file ({len(data)} bytes)")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        errors.append(f"{path}:{line}: not UTF-8 text (byte {exc.start})")
        return None


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
                hint = did_you_mean(section, known_sections)
                errors.append(f"[{section}]: unknown section{_hint_brackets(hint)} ({where})")
                continue
            allowed = key_fields(classes[section])
            for key, value in keys.items():
                if key not in allowed:
                    hint = did_you_mean(key, list(allowed))
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
            except ValueError as exc:
                section_ok = False
                failed.add((section, key))
                errors.append(f"{section}.{key}: {exc} ({origins[(section, key)]})")
        instance = cls(**parsed)
        if section_ok:
            for key, problem in instance.problems():
                where = origins.get((section, key), "default")
                errors.append(f"{section}.{key}: {problem} ({where})")
        sections[section] = instance
    return Config(**sections), failed


def services_in_use(config: Config) -> list[str]:
    """Cloud services whose keys must be found for this config to run."""
    return [config.daemon.service] if config.daemon.service in CLOUD_SERVICES else []


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
        try:
            out[service] = resolve(ref, env)
        except SecretNotFound as exc:
            where = origins.get((service, "api_key"), "default")
            errors.append(f"{service}.api_key: no key found: {exc} ({where})")
    return out


def _where(ini: IniFile, line: int) -> str:
    return f"{ini.name}:{line}" if line else ini.name


def _hint_brackets(hint: str) -> str:
    # did_you_mean gives "; did you mean 'audio'?"; sections read better as [audio].
    return hint.replace("'", "[", 1).replace("'", "]", 1) if hint else ""
