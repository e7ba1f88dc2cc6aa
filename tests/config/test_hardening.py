"""Issue 11: every input ends in a config (exit 0) or a list of errors (exit 78) — never a
traceback, another exit code, or a hang. Each case is one that crashed or hung before."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecap import cli
from edgecap.config import loader
from edgecap.config.loader import EX_CONFIG, MAX_FILE_BYTES, ConfigError, load
from edgecap.config.schema import LinkConfig
from edgecap.config.types import Duration


def check(*args: str) -> tuple[int, str]:
    """`edgecap check ARGS` in this process: (exit status, what it wrote on stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["check", *args])
    return code, err.getvalue()


def check_in_subprocess(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "edgecap", "check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def ini(tmp_path: Path, text: str | bytes, name: str = "e.ini") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[link]\nidle_close = " + "9" * 400 + "s\n",
            "link.idle_close: must be a duration, 1s to 24h, not a number of 400 digits",
        ),
        (
            "[link]\nca_file = ~nosuchuser-edgecap/ca.pem\n",
            "link.ca_file: names the home of an unknown user ('~nosuchuser-edgecap')",
        ),
        (
            "[link]\nca_file = /" + "c" * 300 + "\n",
            "link.ca_file: has a name of 300 bytes in it (at most 255)",
        ),
        (
            "[link]\nca_file = /" + "c/" * 2100 + "\n",
            "link.ca_file: is too long for a path",
        ),
        (
            "[local]\nmodel_path = /" + "m" * 300 + "\n",
            "local.model_path: has a name of 300 bytes in it (at most 255)",
        ),
        (
            "[daemon]\nservice = soniox\n[soniox]\napi_key = file:/tmp/a\x00b\n",
            "soniox.api_key: file: names must not contain control characters",
        ),
        ("[gate]\npreroll = 1e999s\n", "gate.preroll: must be a duration like"),
        ("[link]\nreplay_speed = 1e999\n", "link.replay_speed: is too large"),
    ],
    ids=["huge-duration", "tilde-user", "long-name", "long-path", "long-model", "nul", "e", "inf"],
)
def test_values_that_crashed_the_loader_are_config_errors(tmp_path, text, expected):
    code, err = check("-c", str(ini(tmp_path, text)))
    assert code == EX_CONFIG
    assert f"  {expected}" in err
    assert "Traceback" not in err


def test_an_empty_config_name_is_reported(tmp_path):
    code, err = check("-c", "")
    assert code == EX_CONFIG
    assert "'': no such config file (-c was given an empty file name)" in err
    good = ini(tmp_path, "[gate]\n")
    assert check("-c", "", "-c", str(good))[0] == EX_CONFIG


def test_root_as_config_is_a_directory():
    code, err = check("-c", "/")
    assert (code, err.splitlines()[1]) == (EX_CONFIG, "  /: is a directory, not a config file")


def test_dev_zero_is_refused_without_reading_it():
    """It was read until MemoryError (exit 1)."""
    proc = check_in_subprocess("-c", "/dev/zero")
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert "/dev/zero: is a character device, not a config file" in proc.stderr


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    """Opening it blocked forever (no writer ever comes)."""
    fifo = tmp_path / "edgecap.ini"
    os.mkfifo(fifo)
    proc = check_in_subprocess("-c", str(fifo), timeout=20)
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert f"{fifo}: is a FIFO, not a config file" in proc.stderr


def test_dropins_that_are_not_regular_files_are_reported(tmp_path):
    main = ini(tmp_path, "[gate]\naggressiveness = 1\n")
    dropins = tmp_path / "e.ini.d"
    dropins.mkdir()
    os.mkfifo(dropins / "10-fifo.ini")
    (dropins / "20-dir.ini").mkdir()
    (dropins / "30-broken.ini").symlink_to(tmp_path / "nowhere")
    (dropins / "40-zero.ini").symlink_to("/dev/zero")
    (dropins / "50-ok.ini").write_text("[gate]\naggressiveness = 2\n")
    with pytest.raises(ConfigError) as info:
        load([main], env={})
    assert info.value.errors == [
        f"{dropins}/10-fifo.ini: is a FIFO, not a config file (only regular files are read)",
        f"{dropins}/20-dir.ini: is a directory, not a config file",
        f"{dropins}/30-broken.ini: a broken link",
        f"{dropins}/40-zero.ini: is a character device, not a config file "
        "(only regular files are read)",
    ]


def test_a_file_over_the_size_cap_is_refused(tmp_path):
    big = ini(tmp_path, b"#\n" * (MAX_FILE_BYTES // 2) + b"#")
    with pytest.raises(ConfigError) as info:
        load([big], env={})
    assert info.value.errors == [
        f"{big}: too large for a config file ({MAX_FILE_BYTES + 1} bytes, at most {MAX_FILE_BYTES})"
    ]
    ini(tmp_path, b"#\n" * (MAX_FILE_BYTES // 2))  # at the cap: read
    assert load([big], env={}).files == (big,)


def test_invalid_utf8_names_its_line(tmp_path):
    path = ini(tmp_path, b"[audio]\n\ndevice = \xff\xfe\n")
    code, err = check("-c", str(path))
    assert code == EX_CONFIG
    assert f"  {path}:3: not UTF-8 text (byte 18)" in err


def _check_as_nobody(path: Path) -> tuple[int, str]:
    """`check -c path` in a forked child that runs as nobody (root reads any file)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            code, err = check("-c", str(path))
            os.write(write_end, err.encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        err = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def test_an_unreadable_file_is_a_config_error(tmp_path):
    tmp_path.chmod(0o755)
    path = ini(tmp_path, "[gate]\n")
    path.chmod(0)
    code, err = _check_as_nobody(path)
    assert code == EX_CONFIG
    assert f"  {path}: cannot be read (Permission denied)" in err


def test_an_unlistable_dropin_directory_is_a_config_error(tmp_path):
    tmp_path.chmod(0o755)
    path = ini(tmp_path, "[gate]\n")
    path.chmod(0o644)
    dropins = tmp_path / "e.ini.d"
    dropins.mkdir(mode=0o700)
    (dropins / "x.ini").write_text("[gate]\n")
    code, err = _check_as_nobody(path)
    assert code == EX_CONFIG
    assert f"  {dropins}: drop-ins cannot be read (Permission denied)" in err


def test_an_unforeseen_exception_in_a_type_names_its_key(tmp_path, monkeypatch):
    def explode(self, raw, base_dir):
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(Duration, "parse", explode)
    path = ini(tmp_path, "[link]\nidle_close = 5s\n")
    code, err = check("-c", str(path))
    assert code == EX_CONFIG
    assert (
        "link.idle_close: could not be checked: OverflowError: cannot convert float infinity "
        f"to integer ({path}:2)"
    ) in err


def test_an_unforeseen_exception_in_a_rule_names_its_section(tmp_path, monkeypatch):
    def explode(self):
        raise PermissionError(13, "Permission denied", "/root/ca.pem")

    monkeypatch.setattr(LinkConfig, "problems", explode)
    code, err = check("-c", str(ini(tmp_path, "[link]\n")))
    assert code == EX_CONFIG
    assert "  [link]: could not be checked: Permission denied" in err


def test_any_other_exception_while_loading_is_a_config_error(tmp_path, monkeypatch, caplog):
    def explode(text, name):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(loader, "parse_ini", explode)
    with caplog.at_level("DEBUG", logger="edgecap.config.loader"):
        code, err = check("-c", str(ini(tmp_path, "[link]\n")))
    assert code == EX_CONFIG
    assert (
        "  config: could not be read: RecursionError: maximum recursion depth exceeded "
        "(a bug in edgecap)"
    ) in err
    assert "Traceback" not in err
    assert "RecursionError" in caplog.text  # the traceback is logged, at debug level


def test_a_comment_after_a_value_gets_a_hint(tmp_path):
    path = ini(tmp_path, "[stdout]\nformat = json   # for the logger\n")
    with pytest.raises(ConfigError) as info:
        load([path], env={})
    assert info.value.errors[0].endswith(
        f"(only a whole line can be a comment: put the comment on its own line) ({path}:2)"
    )


def test_a_value_with_a_hash_is_kept_whole(tmp_path):
    """Issue 11 (6): `title = Council meeting #5` was cut at ' #'."""
    path = ini(
        tmp_path,
        "[soniox]\ncontext_text = Council meeting #5 ; agenda\n"
        "context_terms = Ana #1, Bo ;2\n[hdmi]\ncolor = #ffcc00\n",
    )
    config = load([path], env={}).config
    assert config.soniox.context_text == "Council meeting #5 ; agenda"
    assert config.soniox.context_terms == ("Ana #1", "Bo ;2")
    assert config.hdmi.color == (255, 204, 0)


def test_errors_are_one_line_each_with_controls_escaped(tmp_path):
    name = "evil\x1b[2J\nforged.ini"
    path = ini(tmp_path, "[audio]\nsource = \x1b]0;x\x07\n", name=name)
    with pytest.raises(ConfigError) as info:
        load([path], env={})
    (line,) = info.value.errors
    assert "\n" not in line and "\x1b" not in line and "\x07" not in line
    assert "evil\\x1b[2J\\x0aforged.ini:2" in line


def test_a_garbage_file_gives_a_bounded_list_of_errors(tmp_path):
    path = ini(tmp_path, "".join(f"[s{i}]\n" for i in range(5000)))
    with pytest.raises(ConfigError) as info:
        load([path], env={})
    errors = info.value.errors
    assert len(errors) == loader.MAX_ERRORS + 1
    assert errors[-1] == "config: 4900 more errors not shown (fix these first)"


def test_a_link_to_a_device_is_refused(tmp_path):
    """What counts is what the link points to: /dev/null is no config file."""
    link = tmp_path / "e.ini"
    link.symlink_to("/dev/null")
    assert stat.S_ISCHR(os.stat(link).st_mode)
    with pytest.raises(ConfigError, match="is a character device"):
        load([link], env={})


def test_a_megabyte_of_unknown_names_is_refused_within_a_second(tmp_path):
    """A did-you-mean for each of 100,000 unknown sections took seconds; only the shown
    errors get one."""
    lines = "".join(f"[s{i}]\nk{i} = 1\n" for i in range(60_000))
    path = ini(tmp_path, lines[: MAX_FILE_BYTES - 100].rsplit("\n", 1)[0] + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load([path], env={})
    assert time.monotonic() - started < 1.0
    assert len(info.value.errors) == loader.MAX_ERRORS + 1
