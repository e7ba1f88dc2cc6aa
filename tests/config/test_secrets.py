import logging
import os
import subprocess
import sys

import pytest

from edgecap.config.loader import ConfigError, load
from edgecap.config.render import render_effective
from edgecap.config.schema import AVAILABLE_SERVICES
from edgecap.config.secrets import MASK, SecretNotFound, SecretValue, resolve
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
