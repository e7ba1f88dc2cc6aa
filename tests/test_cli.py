"""The `edgecap` command's own duties (the subcommands' work is tested with their parts)."""

from __future__ import annotations

from edgecap import cli
from edgecap.config.loader import EX_CONFIG


def test_config_errors_show_the_users_text_escaped(tmp_path, capsys):
    """A value with terminal escapes is shown escaped in the error, never raw."""
    bad = tmp_path / "a\x1b[2J\x1b]0;owned\x07b.wav"
    code = cli.main(["check", "--set", "audio.source=wav", "--set", f"audio.file={bad}"])
    err = capsys.readouterr().err
    assert code == EX_CONFIG
    assert "audio.file" in err
    assert "\x1b" not in err and "\x07" not in err
    assert r"a\x1b[2J\x1b]0;owned\x07b.wav" in err
