"""The wiring of [daemon] profanity: every caption board gets the one filter; a bad words
file is a config error at start, in check and at reload."""

from __future__ import annotations

import pytest

from edgecap import cli
from edgecap.captions.profanity import ProfanityFilter
from edgecap.config.loader import EX_CONFIG, ConfigError, load
from edgecap.daemon.supervisor import Daemon
from tests.daemon.test_supervisor import ScriptedSource, config


def test_every_caption_board_gets_the_one_filter(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("frak*\n", encoding="utf-8")
    daemon = Daemon(
        config(tmp_path, "daemon.profanity=remove", f"daemon.profanity_words={words}"),
        source=ScriptedSource([]),
    )
    assert daemon.board._profanity == ProfanityFilter("remove", ["frak*"])


def test_the_fallback_board_gets_it_too(tmp_path):
    sets = ["stdout.enabled=no", f"socket.path={tmp_path / 's.sock'}"]
    sets += ["daemon.service=soniox", "daemon.fallback=local"]
    loaded = load(overrides=sets, etc_dir=tmp_path, env={"SONIOX_API_KEY": "k"})
    daemon = Daemon(loaded, source=ScriptedSource([]))
    f = ProfanityFilter("mask")
    assert daemon.board._profanity == f
    assert daemon.fallback_worker.sink._profanity == f


def test_off_means_no_filter(tmp_path):
    daemon = Daemon(config(tmp_path, "daemon.profanity=off"), source=ScriptedSource([]))
    assert daemon.board._profanity is None


def test_a_bad_words_file_is_a_config_error(tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"daemon\.profanity_words: .*not UTF-8"):
        Daemon(config(tmp_path, f"daemon.profanity_words={words}"), source=ScriptedSource([]))
    code = cli.main(["check", "--set", f"daemon.profanity_words={words}"])
    assert code == EX_CONFIG
    assert "line 1: not UTF-8" in capsys.readouterr().err


def test_a_reload_reads_the_words_again_and_refuses_a_bad_file(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("frak\n", encoding="utf-8")
    sets = (f"daemon.profanity_words={words}",)
    daemon = Daemon(
        config(tmp_path, *sets), source=ScriptedSource([]), reloader=lambda: config(tmp_path, *sets)
    )
    first = daemon.board
    words.write_text("frak\nsmeg\n", encoding="utf-8")  # same file name, a new word
    daemon.reload()  # starts the new consumer
    try:
        assert daemon.board is not first
        assert daemon.board._profanity == ProfanityFilter("mask", ["frak", "smeg"])
        second = daemon.board
        words.write_bytes(b"\xff\n")
        daemon.reload()
        assert daemon.board is second
        assert daemon.status.snapshot().state_of("config") == "rejected"
    finally:
        daemon.consumer.hand_over()
        assert daemon.consumer.join(2.0)
