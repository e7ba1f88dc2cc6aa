"""The registry: every service the config can name is built from here, and only from here."""

from __future__ import annotations

import dataclasses
from dataclasses import fields

import pytest

from edgecap import cli
from edgecap.config.loader import EX_CONFIG
from edgecap.config.schema import AVAILABLE_SERVICES, SERVICES, Config, SonioxConfig
from edgecap.config.secrets import SecretValue
from edgecap.services import registry
from edgecap.services.registry import Capabilities, service


def test_the_registry_names_exactly_the_services_that_have_landed():
    assert set(registry.SERVICES) == set(AVAILABLE_SERVICES)
    assert set(registry.SERVICES) <= set(SERVICES)


def test_each_entry_has_its_config_section_and_cloud_services_a_key():
    sections = {f.name for f in fields(Config)}
    for entry in registry.SERVICES.values():
        assert entry.section in sections, entry.name
        settings = entry.settings(Config())
        assert hasattr(settings, "api_key") == entry.cloud, entry.name


def test_a_cloud_service_builds_its_codec_from_its_section_and_link():
    config = Config(soniox=SonioxConfig(model="stt-rt-v4"))
    codec = service("soniox").codec(config)
    assert codec.name == "soniox"
    assert codec.replay_speed == config.link.replay_speed
    assert '"model": "stt-rt-v4"' in codec.start()[0].payload


def test_the_offline_engine_has_no_codec():
    assert not service("local").cloud
    with pytest.raises(ValueError, match="in-process"):
        service("local").codec(Config())


@pytest.mark.parametrize(
    ("settings", "targets"),
    [
        ({}, ()),
        ({"translation": "one_way", "target_language": "de"}, ("de",)),
        ({"translation": "two_way", "language_a": "en", "language_b": "hi"}, ("en", "hi")),
    ],
)
def test_soniox_targets_follow_its_translation_setting(settings, targets):
    assert service("soniox").targets(SonioxConfig(**settings)) == targets


def test_unknown_service_names_the_known_ones():
    with pytest.raises(KeyError, match=r"known: .*soniox"):
        service("nosuch")


def _with_caps(name: str, **caps: object) -> registry.Service:
    entry = service(name)
    return dataclasses.replace(entry, capabilities=dataclasses.replace(entry.capabilities, **caps))


def test_problems_name_what_the_service_cannot_do():
    two_way = Config(soniox=SonioxConfig(translation="two_way", language_b="de"))
    assert service("soniox").problems(two_way) == []
    one_target = _with_caps("soniox", max_targets=1)
    assert one_target.problems(two_way) == [
        "soniox: 2 target languages configured; soniox translates to at most 1 at once"
    ]
    mute = _with_caps("soniox", translates=False)
    assert mute.problems(two_way) == ["soniox: soniox does not translate"]
    assert mute.problems(Config()) == []
    alone = dataclasses.replace(service("soniox"), translation_only=lambda section: True)
    assert alone.problems(Config()) == ["soniox: soniox cannot give translations alone"]
    assert (
        dataclasses.replace(
            alone, capabilities=Capabilities(True, True, 2, translation_only=True)
        ).problems(Config())
        == []
    )


def test_check_refuses_what_the_service_cannot_do(tmp_path, monkeypatch, capsys):
    ini = tmp_path / "edgecap.ini"
    ini.write_text("[daemon]\nservice = soniox\n[soniox]\ntranslation = two_way\nlanguage_b = de\n")
    monkeypatch.setenv("SONIOX_API_KEY", "k")
    assert cli.main(["check", "-c", str(ini)]) == 0
    monkeypatch.setitem(registry.SERVICES, "soniox", _with_caps("soniox", max_targets=1))
    assert cli.main(["check", "-c", str(ini)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "1 config error" in err
    assert "soniox: 2 target languages configured" in err


def test_azure_targets_speech_and_languages_follow_its_mode():
    from edgecap.config.schema import AzureConfig

    azure = service("azure")
    stt = AzureConfig(region="westeurope", language="de-DE")
    assert azure.targets(stt) == () and azure.languages(stt) == ("de-DE",)
    assert not azure.speaks(stt)
    tr = AzureConfig(region="westeurope", mode="translation", targets=("fr", "de"))
    assert azure.targets(tr) == ("fr", "de") and not azure.speaks(tr)
    voiced = dataclasses.replace(tr, voice="de-DE-KatjaNeural")
    assert azure.speaks(voiced)
    codec = azure.codec(Config(azure=voiced))
    assert codec.name == "azure" and "voice=de-DE-KatjaNeural" in codec.url()


def test_a_speaker_without_a_speaking_service_is_a_config_error(tmp_path, monkeypatch, capsys):
    ini = tmp_path / "edgecap.ini"
    base = "[daemon]\nservice = azure\n[azure]\nregion = westeurope\nmode = translation\n"
    ini.write_text(base + "targets = de\n[speaker]\nenabled = yes\n")
    monkeypatch.setenv("AZURE_SPEECH_KEY", "k")
    assert cli.main(["check", "-c", str(ini)]) == EX_CONFIG
    assert "speaker: spoken translations are asked for, but [azure] makes none" in (
        capsys.readouterr().err
    )
    ini.write_text(base + "targets = de\nvoice = de-DE-KatjaNeural\n[speaker]\nenabled = yes\n")
    assert cli.main(["check", "-c", str(ini)]) == 0
    # a service that cannot speak at all says so
    ini.write_text("[daemon]\nservice = local\n[speaker]\nsave_dir = /tmp/x\n")
    assert cli.main(["check", "-c", str(ini)]) == EX_CONFIG
    assert "(local cannot)" in capsys.readouterr().err


def test_check_warns_of_an_unencrypted_container_host(tmp_path, monkeypatch, capsys):
    ini = tmp_path / "edgecap.ini"
    monkeypatch.setenv("AZURE_SPEECH_KEY", "k")
    ini.write_text("[daemon]\nservice = azure\n[azure]\nhost = ws://10.0.0.5:5000\n")
    assert cli.main(["check", "-c", str(ini)]) == 0
    err = capsys.readouterr().err
    assert "warning: azure: host is ws://" in err and "unencrypted" in err
    ini.write_text("[daemon]\nservice = azure\n[azure]\nhost = wss://10.0.0.5:5000\n")
    assert cli.main(["check", "-c", str(ini)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_sarvam_translates_to_english_alone_in_translate_mode():
    from edgecap.config.schema import LinkConfig, SarvamConfig

    sarvam = service("sarvam")
    assert sarvam.cloud and not sarvam.capabilities.partials
    stt = SarvamConfig(language="hi-IN")
    assert sarvam.targets(stt) == () and not sarvam.translation_only(stt)
    assert sarvam.languages(stt) == ("hi-IN",)
    assert sarvam.languages(SarvamConfig()) == ()  # unknown: the service detects it
    for translating in (SarvamConfig(mode="translate"), SarvamConfig(model="saaras:v2.5")):
        assert sarvam.targets(translating) == ("en",) and sarvam.translation_only(translating)
    config = Config(sarvam=SarvamConfig(mode="translate"), link=LinkConfig(dead_after=8.0))
    assert sarvam.problems(config) == []
    codec = sarvam.codec(config)
    assert codec.name == "sarvam" and codec.replay_speed == config.link.replay_speed
    assert codec.flush_after == 4.0  # a long utterance is flushed before dead_after
    assert "mode=translate" in codec.handshake(SecretValue("t", "k")).url


def test_check_accepts_sarvam_and_names_what_its_config_cannot_do(tmp_path, monkeypatch, capsys):
    ini = tmp_path / "edgecap.ini"
    monkeypatch.setenv("SARVAM_API_KEY", "k")
    ini.write_text("[daemon]\nservice = sarvam\n[sarvam]\nlanguage = hi-IN\nmode = translate\n")
    assert cli.main(["check", "-c", str(ini)]) == 0
    ini.write_text("[daemon]\nservice = sarvam\n[sarvam]\nmodel = saaras:v2.5\n")
    assert cli.main(["check", "-c", str(ini)]) == EX_CONFIG
    assert "sarvam.mode: saaras:v2.5 (the legacy endpoint) only translates" in (
        capsys.readouterr().err
    )
