import logging
import os
import subprocess
import sys

import pytest

from edgecap.config.loader import ConfigError, load
from edgecap.config.render import render_effective
from edgecap.config.schema import AVAILABLE_SERVICES
from edgecap.config.secrets import MASK, SecretInvalid, SecretNotFound, SecretValue, resolve
from edgecap.config.types import SecretRef

KEY = "sk-test-7f3a9c2e51d04b8a"


def test_first_source_that_has_a_value_wins(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "soniox_api_key").write_text(KEY + "\n")
    ref = SecretRef(("credential:soniox_api_key", "env:SONIOX_API_KEY"))
    got = resolve(ref, {"CREDENTIALS_DIRECTORY": str(creds), "SONIOX_API_KEY": "other"})
    assert got.reveal() == KEY
    assert got.origin == "credential soniox_api_key"
    got = resolve(ref, {"SONIOX_API_KEY": "from-env"})
    assert (got.reveal(), got.origin) == ("from-env", "env SONIOX_API_KEY")


def test_key_file_must_not_be_readable_by_everyone(tmp_path):
    keyfile = tmp_path / "k"
    keyfile.write_text(KEY)
    keyfile.chmod(0o644)
    ref = SecretRef((f"file:{keyfile}",))
    with pytest.raises(SecretNotFound, match=r"readable by everyone \(mode 0644\); chmod 600"):
        resolve(ref, {})
    keyfile.chmod(0o600)
    assert resolve(ref, {}).reveal() == KEY


def test_not_found_lists_every_attempt_and_no_value(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    ref = SecretRef(("credential:x", f"file:{empty}", f"file:{tmp_path}/nope", "env:NOPE"))
    with pytest.raises(SecretNotFound) as info:
        resolve(ref, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    msg = str(info.value)
    assert "credential x does not exist" in msg
    assert f"key file {empty} is empty" in msg
    assert f"key file {tmp_path}/nope does not exist" in msg
    assert "environment variable NOPE is not set" in msg


def test_secret_value_is_masked_everywhere(caplog):
    value = SecretValue("env X", KEY)
    assert str(value) == MASK
    assert KEY not in repr(value)
    assert f"{value}" == MASK
    assert KEY not in "{} {!r}".format(value, value)  # noqa: UP032
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("key is %s / %r", value, value)
    assert KEY not in caplog.text


@pytest.mark.skipif("soniox" not in AVAILABLE_SERVICES, reason="soniox has not landed yet")
def test_effective_config_masks_the_key(tmp_path):  # pragma: no cover - enabled with soniox
    loaded = load(
        overrides=["daemon.service=soniox"], etc_dir=tmp_path, env={"SONIOX_API_KEY": KEY}
    )
    text = render_effective(loaded)
    assert KEY not in text
    assert "read from env SONIOX_API_KEY" in text


def test_unused_services_need_no_key(tmp_path):
    loaded = load(etc_dir=tmp_path, env={})
    assert loaded.secrets == {}


def test_config_command_never_prints_a_key_given_inline(tmp_path):
    ini = tmp_path / "leak.ini"
    ini.write_text(f"[soniox]\napi_key = {KEY}\n[azure]\n{KEY}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edgecap", "config", "-c", str(ini)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SONIOX_API_KEY": KEY},
    )
    assert proc.returncode == 78
    assert KEY not in proc.stdout + proc.stderr
    assert "soniox.api_key: a secret is never written in the config file" in proc.stderr


def test_inline_key_error_through_load(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(overrides=[f"azure.api_key={KEY}"], etc_dir=tmp_path, env={})
    assert KEY not in str(info.value)


BAD_KEYS = ["k\r\nX: 1", "sk-abc def", "sk\tabc", "sk\x1b[2Jabc", "sk\x00abc", "ѕk-cyrillic"]


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_a_key_with_control_characters_or_spaces_is_a_config_error(tmp_path, bad):
    """Issue 11 (3): it passed `check`, then the link worker died on it at `run` (exit 70)."""
    with pytest.raises(ConfigError) as info:
        load(overrides=["daemon.service=soniox"], etc_dir=tmp_path, env={"SONIOX_API_KEY": bad})
    (line,) = info.value.errors
    if bad.isascii():
        assert line.startswith("soniox.api_key: the key contains control characters or spaces")
    else:
        assert line.startswith("soniox.api_key: the key contains characters that are not ASCII")
    assert "read from env SONIOX_API_KEY" in line
    assert bad not in line and bad.strip() not in str(info.value)


def test_a_bad_key_from_a_key_file_or_credential_is_a_config_error(tmp_path):
    keyfile = tmp_path / "k"
    keyfile.write_bytes(b"sk-abc\r\nX-Injected: 1\n")
    keyfile.chmod(0o600)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "soniox_api_key").write_text("sk abc\n")
    for sources, env, origin in [
        (f"file:{keyfile}", {}, f"file {keyfile}"),
        ("credential:soniox_api_key", {"CREDENTIALS_DIRECTORY": str(creds)}, "credential"),
    ]:
        with pytest.raises(ConfigError) as info:
            load(
                overrides=["daemon.service=soniox", f"soniox.api_key={sources}"],
                etc_dir=tmp_path,
                env=env,
            )
        (line,) = info.value.errors
        assert line.startswith("soniox.api_key: the key contains control characters or spaces")
        assert origin in line


def test_a_bad_key_is_not_skipped_for_the_next_source(tmp_path):
    ref = SecretRef(("env:A", "env:B"))
    with pytest.raises(SecretInvalid):
        resolve(ref, {"A": "bad key", "B": KEY})


def test_a_broken_key_is_also_a_missing_one_for_callers_that_handle_that():
    """The supervisor reads the key again at each reconnection and handles SecretNotFound."""
    with pytest.raises(SecretNotFound):
        resolve(SecretRef(("env:A",)), {"A": "a\nb"})


def test_a_trailing_newline_in_a_key_file_is_fine(tmp_path):
    keyfile = tmp_path / "k"
    keyfile.write_text(f"{KEY}\r\n")
    keyfile.chmod(0o600)
    assert resolve(SecretRef((f"file:{keyfile}",)), {}).reveal() == KEY
    assert resolve(SecretRef(("env:K",)), {"K": f" {KEY}\n"}).reveal() == KEY


@pytest.mark.parametrize(
    ("mode", "what"),
    [
        (0o622, "writable by everyone and writable by its group"),
        (0o602, "writable by everyone"),
        (0o620, "writable by its group"),
        (0o606, "readable by everyone and writable by everyone"),
    ],
)
def test_a_key_file_others_can_write_is_refused(tmp_path, mode, what):
    """Issue 11 (6): a world- or group-writable key file was accepted: anyone could swap
    the key (and see what the service did with it)."""
    keyfile = tmp_path / "k"
    keyfile.write_text(KEY)
    keyfile.chmod(mode)
    with pytest.raises(SecretNotFound) as info:
        resolve(SecretRef((f"file:{keyfile}",)), {})
    assert str(info.value) == f"key file {keyfile} is {what} (mode {mode:04o}); chmod 600 it"


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440])
def test_a_key_file_its_owner_and_group_can_read_is_accepted(tmp_path, mode):
    keyfile = tmp_path / "k"
    keyfile.write_text(KEY)
    keyfile.chmod(mode)
    assert resolve(SecretRef((f"file:{keyfile}",)), {}).reveal() == KEY


def test_a_key_file_path_with_a_nul_is_a_config_error_not_a_crash(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(
            overrides=["daemon.service=soniox", "soniox.api_key=file:/tmp/a\x00b"],
            etc_dir=tmp_path,
            env={},
        )
    assert info.value.errors == [
        "soniox.api_key: file: names must not contain control characters (command line)"
    ]
    with pytest.raises(SecretNotFound, match="not a valid file name"):
        resolve(SecretRef(("file:/tmp/a\x00b",)), {})
