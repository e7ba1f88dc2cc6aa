"""Property-based fuzz of the config loader and of `edgecap check` (issue 11, item 2).

Whatever the files hold — random bytes, the documented config with bytes flipped, huge
numbers, control characters, NULs, over-long lines, sections twice, drop-in directories
holding FIFOs, directories, broken links and devices — loading ends in a config or in a
ConfigError, and `edgecap check` in exit status 0 or 78 with one `section.key: problem` (or
`file: problem`) line per error: never a traceback, never another status, never a hang, and
each case in under a second. Most cases run `edgecap.cli.main` in this process; a few run a
real `python -m edgecap check`.

Case counts: every case is counted (tests/config/fuzzcount.py) and the totals are printed
in the terminal summary of the pytest run, one `config fuzz: N cases (...)` line.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgecap import cli
from edgecap.config.loader import EX_CONFIG, ConfigError, load
from edgecap.config.schema import Config, section_classes
from tests.config.fuzzcount import count

REPO = Path(__file__).resolve().parents[2]
DOCUMENTED = (REPO / "config" / "edgecap.ini").read_text()
# The documented config with every key set (uncommented), so that mutations hit values.
ACTIVE = re.sub(r"(?m)^#(?=[a-z_]+ = |\[)", "", DOCUMENTED).encode()
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CASE_SECONDS = 1.0

SECTIONS = [*section_classes(), "local", "hdmi", "audoi", "DEFAULT", ""]
KEYS = [
    *sorted({f.name for cls in section_classes().values() for f in fields(cls)}),
    "devise",
    "x",
    "Source",
]
NASTY = [
    "9" * 400 + "s",
    "9" * 400,
    "1e999",
    "~nosuchuser/x",
    "~",
    "/" + "a" * 300,
    "/" + "b/" * 2100,
    "file:/tmp/a\x00b",
    "credential:../x",
    "env:SONIOX_API_KEY",
    "a\x1b[2Jb",
    "\x00",
    "²",
    "١٢",
    "#5",
    " ; x",
    '"',
    '""',
    "\u2028",
    "\x85",
    "\r",
    "wss://a b/",
    "x" * 9000,
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
            *NASTY,
        ]
    ),
    st.text(max_size=30),
)
SECTION_NAMES = "|".join(re.escape(name) for name in section_classes())
ERROR_SHAPES = [
    re.compile(rf"({SECTION_NAMES})\.[a-z0-9_\-]+: \S"),  # section.key: problem
    re.compile(rf"({SECTION_NAMES}): \S"),  # section: problem (what the service cannot do)
    re.compile(r"\[[^\]]*\]: \S"),  # [section]: unknown section
    re.compile(r"--set .*: expected section\.key=value"),
    re.compile(r"'': no such config file"),
    re.compile(r"config: \d+ more errors not shown"),
]


def load_text(tmp_dir: Path, data: bytes):
    path = tmp_dir / "fuzz.ini"
    path.write_bytes(data)
    try:
        return load([path], env={})
    except ConfigError as exc:
        assert exc.errors, "a ConfigError must say what is wrong"
        assert all(isinstance(e, str) and e for e in exc.errors)
        return None


@FUZZ
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(tmp_path, data):
    count("arbitrary-bytes")
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


@FUZZ
@given(doc=ini_documents())
def test_ini_shaped_documents_load_or_fail_cleanly(tmp_path, doc):
    count("ini-shaped")
    loaded = load_text(tmp_path, doc.encode("utf-8", "surrogatepass"))
    if loaded is not None:
        assert isinstance(loaded.config, Config)


# --- mutations of the documented config, through `edgecap check` -------------------------


def _at(data: bytes, pos: int) -> int:
    return pos % (len(data) + 1)


MUTATIONS: dict[str, Callable[[bytes, int, bytes], bytes]] = {
    "flip": lambda d, p, x: (
        d[: _at(d, p)]
        + bytes([(d[_at(d, p)] ^ (x[0] | 1)) if _at(d, p) < len(d) else 0])
        + d[_at(d, p) + 1 :]
    ),
    "insert": lambda d, p, x: d[: _at(d, p)] + x + d[_at(d, p) :],
    "delete": lambda d, p, x: d[: _at(d, p)] + d[_at(d, p) + len(x) :],
    "truncate": lambda d, p, x: d[: _at(d, p)],
    "duplicate-section": lambda d, p, x: d + d[_at(d, p) : _at(d, p) + 600],
    "set-value": lambda d, p, x: re.sub(
        rb"(?m)^([a-z_]+ = ).*$", lambda m: m.group(1) + x, d, count=1 + p % 3
    ),
}
INSERTS = st.one_of(
    st.sampled_from([v.encode() for v in NASTY]),
    st.sampled_from([b"\x00", b"\x1b[31m", b"\r", b"\n", b"\n[gate]\n", b"\n  ", b"\xff\xfe"]),
    st.binary(min_size=1, max_size=12),
    st.integers(8000, 9000).map(lambda n: b"x" * n),  # a line over the limit, or just under
    st.integers(1, 500).map(lambda n: b"9" * n),
)


@st.composite
def mutated_documented_configs(draw) -> bytes:
    data = draw(st.sampled_from([ACTIVE, DOCUMENTED.encode()]))
    for _ in range(draw(st.integers(1, 5))):
        name = draw(st.sampled_from(sorted(MUTATIONS)))
        data = MUTATIONS[name](data, draw(st.integers(0, len(data))), draw(INSERTS))
    return data


OVERRIDES = st.lists(
    st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(["gate.hangover", "link.ca_file", "daemon.service", "x", "a.b.c"]),
        st.sampled_from(["30s", "~nosuchuser/x", "soniox", "", *NASTY[:8]]),
    ),
    max_size=2,
)


class CaseHung(BaseException):
    """Raised by SIGALRM in a case that blocks (a FIFO opened for reading waits for a writer
    forever): a BaseException, so that no `except Exception` in the code under test eats it."""


def _hung(signum: int, frame: object) -> None:
    raise CaseHung(f"the case still ran after {HANG_SECONDS} s")


HANG_SECONDS = 5


def run_check(args: list[str]) -> tuple[int, str, float]:
    """`edgecap check ARGS` in this process, interrupted (a failure) if it blocks."""
    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    started = time.monotonic()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["check", *args])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue(), time.monotonic() - started


def assert_clean_outcome(code: int, err: str, elapsed: float, files: list[Path]) -> None:
    event(f"exit status {code}")  # --hypothesis-show-statistics: how many loaded cleanly
    assert code in (0, EX_CONFIG), (code, err)
    assert "Traceback" not in err, err
    # The loader's last-resort guards must never be needed: each would be a bug found here.
    assert "a bug in edgecap" not in err and "could not be checked" not in err, err
    assert elapsed < CASE_SECONDS, f"{elapsed:.2f} s"
    if code == 0:
        return
    head, *lines = err.splitlines()
    assert re.fullmatch(r"edgecap: \d+ config errors?:", head), head
    assert lines
    for line in lines:
        assert line.startswith("  "), line
        text = line[2:]
        names_a_file = any(text.startswith(f"{f}:") for f in files)
        assert names_a_file or any(s.match(text) for s in ERROR_SHAPES), line


@settings(FUZZ, max_examples=200)
@given(data=mutated_documented_configs(), overrides=OVERRIDES)
def test_check_on_mutated_documented_config_exits_0_or_78(data, overrides):
    count("check-mutated-in-process")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edgecap.ini"
        path.write_bytes(data)
        args = ["-c", str(path)]
        for item in overrides:
            args += ["--set", item]
        code, err, elapsed = run_check(args)
    assert_clean_outcome(code, err, elapsed, [path])


# --- drop-in trees -----------------------------------------------------------------------

ENTRY_KINDS = [
    "file",
    "file",
    "file",
    "not-ini",
    "directory",
    "fifo",
    "broken-link",
    "link-to-dev-zero",
    "link-to-directory",
    "link-to-file",
    "socket-like-name",
]


def _make(path: Path, kind: str, content: bytes) -> None:
    if kind in ("file", "socket-like-name"):
        path.write_bytes(content)
    elif kind == "not-ini":
        path.with_suffix(".txt").write_bytes(content)
    elif kind == "directory":
        path.mkdir()
        (path / "inner.ini").write_bytes(content)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "broken-link":
        path.symlink_to(path.parent / "nowhere")
    elif kind == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "link-to-directory":
        path.symlink_to(path.parent)
    elif kind == "link-to-file":
        target = path.parent.parent / f"target-{path.name}"
        target.write_bytes(content)
        path.symlink_to(target)


DROPIN_NAMES = st.sampled_from(["10-a.ini", "20-b.ini", ".hidden.ini", "z.ini", "a b.ini"])
CONTENTS = st.one_of(mutated_documented_configs(), ini_documents().map(str.encode))


@st.composite
def dropin_trees(draw):
    main_kind = draw(st.sampled_from(["file"] * 8 + ["fifo", "directory", "link-to-dev-zero"]))
    main = draw(CONTENTS)
    entries = draw(
        st.lists(
            st.tuples(DROPIN_NAMES, st.sampled_from(ENTRY_KINDS), CONTENTS),
            max_size=4,
            unique_by=lambda e: e[0],
        )
    )
    dropins_kind = draw(st.sampled_from(["directory"] * 6 + ["file", "absent"]))
    return main_kind, main, dropins_kind, entries


def build_tree(root: Path, tree) -> tuple[Path, list[Path]]:
    main_kind, main, dropins_kind, entries = tree
    path = root / "etc" / "edgecap.ini"
    path.parent.mkdir()
    _make(path, main_kind, main)
    dropins = root / "etc" / "edgecap.ini.d"
    if dropins_kind == "file":
        dropins.write_bytes(b"[gate]\n")
    elif dropins_kind == "directory":
        dropins.mkdir()
        for name, kind, content in entries:
            _make(dropins / name, kind, content)
    names = [path, dropins, *(dropins / name for name, _, _ in entries)]
    return path, names


@settings(FUZZ, max_examples=150)  # each case builds a directory tree
@given(tree=dropin_trees())
def test_check_on_dropin_trees_exits_0_or_78(tree):
    count("check-dropin-trees-in-process")
    with tempfile.TemporaryDirectory() as tmp:
        main, files = build_tree(Path(tmp), tree)
        code, err, elapsed = run_check(["-c", str(main)])
    assert_clean_outcome(code, err, elapsed, files)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=dropin_trees())
def test_check_in_a_real_process_exits_0_or_78(tree):
    """The same through `python -m edgecap check`: the real exit status and stderr."""
    count("check-subprocess")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    with tempfile.TemporaryDirectory() as tmp:
        main, files = build_tree(Path(tmp), tree)
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "edgecap", "check", "-c", str(main)],
            capture_output=True,
            text=True,
            env=env,
            timeout=HANG_SECONDS + 5,
        )
        elapsed = time.monotonic() - started
    # The interpreter's own start is not the loader's time: allow it a few seconds.
    assert_clean_outcome(proc.returncode, proc.stderr, elapsed - 3 * CASE_SECONDS, files)
