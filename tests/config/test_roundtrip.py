"""`edgecap config` prints a config that loads again to the same config (issue 11, item 6).

Two properties, with hypothesis:
- every valid value of every key (a value its type accepts: drawn as text in the shapes
  that type reads, and as odd text — `#`, `;`, `=`, quotes, unicode, spaces around, empty
  lists — parsed by the type) survives render_effective → load unchanged;
- every INI document that loads (values over continuation lines, quoted, with spaces
  around …) renders to text that loads to the same config.
Case counts are reported like the fuzz tests' (tests/config/fuzzcount.py).
"""

from __future__ import annotations

import dataclasses
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from edgecap.config import types as t
from edgecap.config.loader import ConfigError, LoadedConfig, load, services_in_use
from edgecap.config.render import render_effective
from edgecap.config.schema import Config, key_fields, section_classes
from edgecap.config.secrets import SecretNotFound, resolve
from tests.config.fuzzcount import count

REPO = Path(__file__).resolve().parents[2]
ENV = {"SONIOX_API_KEY": "sk-roundtrip-0123"}
BASE = REPO / "config"
KEYS = [
    (section, key, f.metadata["type"])
    for section, cls in section_classes().items()
    for key, f in key_fields(cls).items()
]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ODD_CHARS = [*"aZ09 _-.,:=#;\"'\\[]~*?", "\t", "é", "ß", "ह", "ि", "中", "😀", "\u200d", "\xa0"]
ODD_TEXT = st.text(alphabet=st.sampled_from([*ODD_CHARS, "/"]), max_size=24)
ODD_NAME = st.text(alphabet=st.sampled_from(ODD_CHARS), max_size=24)  # no "/"


def _number(lo: float | None, hi: float | None) -> st.SearchStrategy[Decimal]:
    lo = 0 if lo is None else lo
    hi = 10**6 if hi is None else hi
    return st.decimals(min_value=Decimal(repr(lo)), max_value=Decimal(repr(hi)), places=4)


def raw_for(type_: Any, odd: int = 1) -> st.SearchStrategy[str]:
    """Text in the shapes ``type_`` reads (mostly valid), or (one time in ``3 + odd``) odd
    text."""
    if isinstance(type_, t.Str):
        shaped = st.lists(ODD_TEXT, min_size=1, max_size=3).map("\n  ".join)
    elif isinstance(type_, t.Int):
        lo = -(10**6) if type_.min is None else type_.min
        hi = 10**6 if type_.max is None else type_.max
        shaped = st.integers(lo, hi).map(str)
    elif isinstance(type_, t.Float):
        shaped = st.one_of(
            st.floats(type_.min, type_.max, allow_nan=False).map(repr),
            _number(type_.min, type_.max).map(str),
        )
    elif isinstance(type_, t.Duration):
        shaped = st.builds(
            lambda n, unit: f"{n}{unit}",
            _number(0, type_.max or 10**5),
            st.sampled_from(["ms", "s", "sec", "m", "min", "h", " s", "S"]),
        )
    elif isinstance(type_, t.Bool):
        shaped = st.sampled_from(["yes", "No", "TRUE", "off", "1", "0"])
    elif isinstance(type_, t.Choice):
        shaped = st.sampled_from(type_.choices).map(lambda c: f" {c.upper()} ")
    elif isinstance(type_, t.IntChoice):
        shaped = st.sampled_from(type_.choices).map(str)
    elif isinstance(type_, t.PathValue):
        shaped = st.one_of(
            st.sampled_from(["", "-", "~", "edgecap.ini", "../config", str(BASE / "edgecap.ini")]),
            st.lists(ODD_NAME, max_size=3).map("/".join),
            st.lists(ODD_NAME, max_size=3).map(lambda p: "/" + "/".join(p)),
        )
    elif isinstance(type_, t.ListOf):
        shaped = st.builds(
            lambda items, sep: sep.join(items),
            st.lists(raw_for(type_.item, odd), max_size=4),
            st.sampled_from([", ", ",", "\n  ", ",\n  ", " "]),
        )
    elif isinstance(type_, t.Pair):
        shaped = st.builds(lambda a, b: f"{a} = {b}", ODD_TEXT, ODD_TEXT)
    elif isinstance(type_, t.LanguageCode):
        shaped = st.from_regex(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}", fullmatch=True)
    elif isinstance(type_, t.Url):
        shaped = st.builds(
            lambda scheme, host, rest: f"{scheme}://{host}{rest}",
            st.sampled_from(type_.schemes),
            st.from_regex(r"[a-z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True),
            st.sampled_from(["", "/", "/p?q=1#frag", "/a;b=c", "/%20"]),
        )
    elif isinstance(type_, t.Size):
        shaped = st.builds(
            lambda n, unit: f"{n}{unit}",
            st.integers(0, 2**31),
            st.sampled_from(["", "K", "m", "GiB", " kb"]),
        )
    elif isinstance(type_, t.FileMode):
        shaped = st.integers(0, 0o777).map(lambda m: f"{m:04o}")
    elif isinstance(type_, t.Color):
        shaped = st.builds(
            lambda prefix, rgb: prefix + rgb,
            st.sampled_from(["", "#"]),
            st.from_regex(r"[0-9a-fA-F]{6}", fullmatch=True),
        )
    elif isinstance(type_, t.ChannelValue):
        shaped = st.one_of(st.just("mix"), st.integers(0, 63).map(str))
    elif isinstance(type_, t.Secret):
        source = st.builds(
            lambda kind, name: f"{kind}:{name}",
            st.sampled_from(["credential", "file", "env"]),
            st.from_regex(r"[A-Za-z0-9_.#;=é-]{1,16}", fullmatch=True),
        )
        shaped = st.lists(source, max_size=3).map(" ".join)
    else:  # a type added later: odd text only, until it gets its shapes here
        shaped = ODD_TEXT
    return st.one_of(shaped, shaped, shaped, *[ODD_TEXT] * odd)


def _without_problems(config: Config) -> Config:
    """The config with each section that breaks a rule between keys (a path that must exist,
    a service not available here …) back at its defaults: the rules are tested elsewhere."""
    changes = {}
    for name in section_classes():
        section = getattr(config, name)
        if section.problems():
            changes[name] = type(section)()
    config = dataclasses.replace(config, **changes)
    for service in services_in_use(config):
        try:
            resolve(getattr(config, service).api_key, ENV)
        except SecretNotFound:
            config = dataclasses.replace(config, daemon=type(config.daemon)())
    return config


def _reloaded(text: str) -> Config:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "effective.ini"
        path.write_text(text)
        return load([path], env=ENV).config


@st.composite
def configs(draw) -> Config:
    """A config with some keys set to values their types accept."""
    sections: dict[str, dict[str, Any]] = {}
    for section, key, type_ in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=8)):
        raw = draw(raw_for(type_))
        try:
            value = type_.parse(raw, BASE)
        except ValueError:
            continue
        sections.setdefault(section, {})[key] = value
    config = Config()
    for section, values in sections.items():
        config = dataclasses.replace(
            config, **{section: dataclasses.replace(getattr(config, section), **values)}
        )
    return _without_problems(config)


@PROPERTY
@given(config=configs())
def test_every_valid_value_survives_render_and_load(config):
    count("roundtrip-values")
    event("defaults" if config == Config() else "changed")
    text = render_effective(LoadedConfig(config, (), {}, {}))
    assert _reloaded(text) == config


@st.composite
def documents(draw) -> str:
    """INI text that sets keys with values in the shapes a person writes them."""
    lines: list[str] = []
    by_section: dict[str, list[tuple[str, Any]]] = {}
    for section, key, type_ in draw(st.lists(st.sampled_from(KEYS), max_size=5, unique=True)):
        by_section.setdefault(section, []).append((key, type_))
    for section, keys in by_section.items():
        lines.append(f"[{section}]")
        for key, type_ in keys:
            raw = draw(st.one_of(raw_for(type_, odd=0), raw_for(type_, odd=0), raw_for(type_)))
            if draw(st.integers(0, 3)) == 0 and "\n" not in raw:
                raw = f'"{raw}"'
            pad = draw(st.sampled_from(["", " ", "  \t"]))
            first, *rest = raw.split("\n")
            lines.append(f"{key} ={pad}{first}{pad}")
            lines.extend(f"  {part.strip()}" for part in rest)
            if draw(st.booleans()):
                lines.append(
                    draw(st.sampled_from(["# a comment", "; another", "", "  # indented"]))
                )
    return "\n".join(lines) + "\n"


@PROPERTY
@given(doc=documents())
@example(doc='[azure]\nauth =" KEY "\n[daemon]\nprofanity_words ="edgecap.ini"\n')  # found by CI
def test_every_config_that_loads_renders_to_one_that_loads_the_same(doc):
    count("roundtrip-documents")
    # The document's directory stays while the rendered config is loaded again: a path key
    # may name a file beside the document (even the document itself, as a word list)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edgecap.ini"
        path.write_text(doc)
        try:
            loaded = load([path], env=ENV)
        except ConfigError:
            event("refused")
            return
        event("loaded")
        assert _reloaded(render_effective(loaded)) == loaded.config
