import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecap.config.loader import EX_CONFIG, ConfigError, config_files, load
from edgecap.config.render import render_defaults, render_effective
from edgecap.config.schema import Config

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_missing_default_file_means_defaults(tmp_path):
    loaded = load(etc_dir=tmp_path, env={})
    assert loaded.config == Config()
    assert loaded.files == ()


def test_dropins_are_read_in_name_order_after_the_main_file(tmp_path):
    write(tmp_path / "edgecap.ini", "[gate]\naggressiveness = 1\nhangover = 1s\n")
    write(tmp_path / "edgecap.ini.d/20-b.ini", "[gate]\naggressiveness = 3\n")
    write(tmp_path / "edgecap.ini.d/10-a.ini", "[gate]\naggressiveness = 0\npreroll = 200ms\n")
    write(tmp_path / "edgecap.ini.d/notes.txt", "[nonsense\n")  # not *.ini: ignored
    loaded = load(etc_dir=tmp_path, env={})
    assert [p.name for p in loaded.files] == ["edgecap.ini", "10-a.ini", "20-b.ini"]
    gate = loaded.config.gate
    assert (gate.aggressiveness, gate.hangover, gate.preroll) == (3, 1.0, 0.2)
    assert loaded.origins[("gate", "aggressiveness")].endswith("20-b.ini:2")
    assert loaded.origins[("gate", "hangover")].endswith("edgecap.ini:3")


def test_explicit_files_replace_etc_and_bring_their_dropins(tmp_path):
    write(tmp_path / "etc/edgecap.ini", "[gate]\naggressiveness = 1\n")
    main = write(tmp_path / "my.ini", "[gate]\naggressiveness = 2\n")
    write(tmp_path / "my.ini.d/x.ini", "[gate]\nenabled = no\n")
    loaded = load([main], etc_dir=tmp_path / "etc", env={})
    assert loaded.config.gate.aggressiveness == 2
    assert loaded.config.gate.enabled is False


def test_overrides_win_over_files(tmp_path):
    main = write(tmp_path / "a.ini", "[audio]\nframe_ms = 30\n")
    loaded = load([main], ["audio.frame_ms=10"], env={})
    assert loaded.config.audio.frame_ms == 10
    assert loaded.origins[("audio", "frame_ms")] == "command line"


def test_relative_wav_path_is_taken_from_the_ini_directory(tmp_path):
    write(tmp_path / "cfg/sounds/a.wav", "x")
    main = write(tmp_path / "cfg/demo.ini", "[audio]\nsource = wav\nfile = sounds/a.wav\n")
    assert load([main], env={}).config.audio.file == tmp_path / "cfg/sounds/a.wav"


def test_every_error_is_reported_at_once(tmp_path):
    main = write(
        tmp_path / "bad.ini",
        "[audio]\nframe_ms = 25\ndevise = hw:1\nsource = wav\n"
        "[gate]\naggressiveness = 9\nhangover = 600\n"
        "[sonix]\nmodel = x\n"
        "[log]\nlevel = loud\n",
    )
    dropin = write(tmp_path / "bad.ini.d/a.ini", "[gate]\nenabled = perhaps\n")
    with pytest.raises(ConfigError) as info:
        load([main], ["daemon.servic=local", "nonsense"], env={})
    errors = info.value.errors
    expected = [
        f"audio.devise: unknown key; did you mean 'device'? ({main}:3)",
        f"[sonix]: unknown section; did you mean [soniox]? ({main}:8)",
        "daemon.servic: unknown key; did you mean 'service'? (command line)",
        "--set nonsense: expected section.key=value",
        f"audio.frame_ms: must be one of 10, 20, 30, not '25' ({main}:2)",
        f"gate.enabled: must be yes or no (true/false, on/off, 1/0), not 'perhaps' ({dropin}:2)",
        f"gate.aggressiveness: must be between 0 and 3, not 9 ({main}:6)",
        f"gate.hangover: needs a unit: write '600ms' or '600s' (units: ms, s, m, h) ({main}:7)",
        f"log.level: must be one of debug, info, warning, error, not 'loud' ({main}:11)",
    ]
    assert sorted(errors) == sorted(expected)


def test_rules_between_keys(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(overrides=["audio.source=wav"], etc_dir=tmp_path, env={})
    assert info.value.errors == [
        "audio.file: source = wav needs a file = /path/to/audio.wav (default)"
    ]


def test_unreadable_and_non_utf8_files(tmp_path):
    latin = tmp_path / "latin.ini"
    latin.write_bytes(b"[audio]\ndevice = caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load([latin, tmp_path / "missing.ini", tmp_path], env={})
    assert info.value.errors == [
        f"{latin}:2: not UTF-8 text (byte 20)",
        f"{tmp_path / 'missing.ini'}: no such config file",
        f"{tmp_path}: is a directory, not a config file",
    ]


def test_a_misspelt_key_gets_a_did_you_mean(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(overrides=["local.model=x"], etc_dir=tmp_path, env={})
    assert (
        info.value.errors[0]
        == "local.model: unknown key; did you mean 'model_path'? (command line)"
    )


def test_config_files_lists_dropins_only_for_existing_dirs(tmp_path):
    assert config_files(None, tmp_path) == [tmp_path / "edgecap.ini"]


def test_documented_example_is_generated_from_the_schema_and_loads_as_defaults():
    example = REPO / "config" / "edgecap.ini"
    assert example.read_text() == render_defaults(), (
        "config/edgecap.ini is out of date: run 'edgecap config --defaults > config/edgecap.ini'"
    )
    assert load([example], env={}).config == Config()


def test_every_key_is_documented_with_its_default():
    text = render_defaults()
    from dataclasses import fields

    from edgecap.config.schema import default_of, section_classes

    for name, cls in section_classes().items():
        assert f"\n[{name}]\n" in text
        for f in fields(cls):
            line = f"#{f.name} = {f.metadata['type'].format(default_of(f))}".rstrip()
            assert line in text, line
            assert f.metadata["doc"]


def test_effective_config_round_trips(tmp_path):
    main = write(tmp_path / "a.ini", "[gate]\nhangover = 1.5s\n[audio]\nchannel = 1\n")
    loaded = load([main], env={})
    text = render_effective(loaded)
    assert f"# {main}:2\nhangover = 1500ms\n" in text
    again = write(tmp_path / "b.ini", text)
    assert load([again], env={}).config == loaded.config


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edgecap", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def test_check_exits_78_and_lists_every_error(tmp_path):
    bad = write(tmp_path / "bad.ini", "[gate]\naggressiveness = 9\n[audoi]\n[log]\nlevel = x\n")
    proc = run_cli("check", "-c", str(bad))
    assert proc.returncode == EX_CONFIG
    assert proc.stderr.startswith("edgecap: 3 config errors:\n")
    assert "gate.aggressiveness" in proc.stderr
    assert "did you mean [audio]" in proc.stderr
    assert "log.level" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_with_a_broken_config_exits_78_without_starting(tmp_path):
    bad = write(tmp_path / "bad.ini", "[audio]\nsource = wav\n")
    proc = run_cli("run", "-c", str(bad))
    assert proc.returncode == EX_CONFIG
    assert "audio.file" in proc.stderr


def test_check_ok(tmp_path):
    good = write(tmp_path / "good.ini", "[gate]\naggressiveness = 3\n")
    proc = run_cli("check", "-c", str(good))
    assert proc.returncode == 0, proc.stderr
    assert f"config OK ({good})" in proc.stdout
