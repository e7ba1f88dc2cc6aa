"""File names reach logs, status and errors escaped (runtime.escape): a name is chosen by
whoever made the file, and "a\\x1b[31mred.wav" must not recolour (or clear, or retitle) the
reader's terminal."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edgecap.audio.raw import RawSource
from edgecap.audio.source import SourceConfigError
from edgecap.audio.wav import WavSource
from tests.audio.signals import raw_wav_bytes, sine, write_wav

RED = "a\x1b[31mred.wav"
RED_SHOWN = "a\\x1b[31mred.wav"


def test_wav_name_log_lines_and_errors_are_escaped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edgecap.audio")
    good = write_wav(tmp_path / RED, sine(440, 16000, 0.1), 16000, data_size=10**6)
    src = WavSource(good, 20, realtime=False, loop=False)
    assert src.name == f"wav:{tmp_path}/{RED_SHOWN}"
    src.open()
    while src.read(1.0) is not None:
        pass
    src.close()
    logged = [r.getMessage() for r in caplog.records]
    assert any(f"opened wav:{tmp_path}/{RED_SHOWN}" in m for m in logged)
    assert any("reading to end of file" in m and RED_SHOWN in m for m in logged)
    bad = tmp_path / ("bad\x1b]0;pwned\x07" + RED)
    errors = []
    for content in (b"not audio", raw_wav_bytes(rate=1), b""):
        bad.write_bytes(content)
        with pytest.raises(SourceConfigError) as e:
            WavSource(bad, 20, realtime=False).open()
        errors.append(str(e.value))
    with pytest.raises(SourceConfigError) as e:
        WavSource(tmp_path / f"missing{RED}", 20, realtime=False).open()
    errors.append(str(e.value))
    with pytest.raises(SourceConfigError) as e:
        WavSource(good, 20, realtime=False, channel=3).open()
    errors.append(str(e.value))
    for text in [*logged, *errors]:
        assert text.isprintable(), text
    assert all(RED_SHOWN in m for m in errors), errors
    assert "bad\\x1b]0;pwned\\x07" in errors[0]


def test_raw_name_and_errors_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / f"{RED}\nFAKE log line\u202e.raw"  # a forged line, a bidi override
    np.zeros(640, "<i2").tofile(path)
    src = RawSource(path, 20)
    assert src.name == f"raw:{tmp_path}/{RED_SHOWN}\\x0aFAKE log line\\u202e.raw"
    for missing in (tmp_path / f"gone{RED}", tmp_path / f"dir{RED}"):
        if "dir" in missing.name:
            missing.mkdir()
        with pytest.raises(SourceConfigError) as e:
            RawSource(missing, 20).open()
        assert str(e.value).isprintable() and RED_SHOWN in str(e.value), e.value
