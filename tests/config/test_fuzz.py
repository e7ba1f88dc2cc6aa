"""Property-based fuzz of the config loader: whatever the file holds, the result is a config
or a ConfigError listing problems — never a traceback, never an empty error list."""

from dataclasses import fields
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecap.config.loader import ConfigError, load
from edgecap.config.schema import Config, section_classes

SECTIONS = [*section_classes(), "local", "hdmi", "audoi", "DEFAULT", ""]
KEYS = [
    *sorted({f.name for cls in section_classes().values() for f in fields(cls)}),
    "devise",
    "x",
    "Source",
]
VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "1",
            "-1",
            "yes",
            "no",
            "20",
            "30s",
            "500ms",
            "1e9",
            "mix",
            "-",
            "wav",
            "alsa",
            "env:X",
            "credential:k",
            "file:k",
            "local",
            "soniox",
            "nan",
            "inf",
            "9" * 40,
            '"q"',
        ]
    ),
    st.text(max_size=30),
)


def load_text(tmp_dir: Path, data: bytes):
    path = tmp_dir / "fuzz.ini"
    path.write_bytes(data)
    try:
        return load([path], env={})
    except ConfigError as exc:
        assert exc.errors, "a ConfigError must say what is wrong"
        assert all(isinstance(e, str) and e for e in exc.errors)
        return None


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(tmp_path, data):
    load_text(tmp_path, data)


@st.composite
def ini_documents(draw):
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        section = draw(st.sampled_from(SECTIONS))
        lines.append(draw(st.sampled_from([f"[{section}]", f"[{section}", f" [{section}] "])))
        for _ in range(draw(st.integers(0, 5))):
            key = draw(st.sampled_from(KEYS))
            value = draw(VALUES)
            sep = draw(st.sampled_from([" = ", "=", " : ", ""]))
            prefix = draw(st.sampled_from(["", "", "  ", "#", ";"]))
            lines.append(f"{prefix}{key}{sep}{value}")
    return "\n".join(lines)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=ini_documents())
def test_ini_shaped_documents_load_or_fail_cleanly(tmp_path, doc):
    loaded = load_text(tmp_path, doc.encode("utf-8", "surrogatepass"))
    if loaded is not None:
        assert isinstance(loaded.config, Config)
