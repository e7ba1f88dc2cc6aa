"""Every speech service edgecap knows, by the name ``[daemon] service`` gives it.

The daemon builds whatever is configured from here and nowhere else: a cloud service is a
codec the Link drives; the offline engine runs in-process. An entry says which config
section holds the service's settings, how its codec is made, which languages it translates
to under that config, and what it can do. Adding a service is one module in ``services/``,
one entry here and one section in ``config/schema.py`` (see ``docs/services.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgecap.config.schema import AzureConfig, Config, SarvamConfig, SonioxConfig
from edgecap.services.codec import Codec


@dataclass(frozen=True)
class Capabilities:
    """What a service can do at all (whatever the config asks of it)."""

    partials: bool  # provisional captions while someone speaks
    translates: bool  # gives translations of what was said
    max_targets: int  # target languages at once (0: none)
    translation_only: bool = False  # can give a translation without the transcript
    speaks: bool = False  # can synthesize the translation as speech


@dataclass(frozen=True)
class Service:
    name: str  # as in ``[daemon] service``
    section: str  # the config section with its settings (and ``api_key`` if cloud)
    capabilities: Capabilities
    # Builds the codec from the service's section and the whole config ([link], [daemon]
    # profanity); None: the offline engine, which runs in-process and needs no codec.
    make_codec: Callable[[Any, Config], Codec] | None
    # The translation target languages the config asks for, in display order (empty: none).
    targets: Callable[[Any], tuple[str, ...]] = lambda section: ()
    # The spoken languages the config expects (empty: any), for clients of the socket.
    languages: Callable[[Any], tuple[str, ...]] = lambda section: ()
    # The config asks for translation alone: lines carry no transcript.
    translation_only: Callable[[Any], bool] = lambda section: False
    # The config asks for spoken translations (SynthesizedAudio for [speaker]).
    speaks: Callable[[Any], bool] = lambda section: False
    # Things allowed but worth a word (``edgecap check`` prints them, the daemon logs them).
    cautions: Callable[[Any], list[str]] = lambda section: []

    @property
    def cloud(self) -> bool:
        return self.make_codec is not None

    def settings(self, config: Config) -> Any:
        """This service's config section."""
        return getattr(config, self.section)

    def problems(self, config: Config) -> list[str]:
        """What the config asks of this service that it cannot do, as config errors
        (``section.key: problem``); checked at start, by ``edgecap check`` and at reload."""
        settings = self.settings(config)
        caps = self.capabilities
        out = []
        targets = self.targets(settings)
        if targets and not caps.translates:
            out.append(f"{self.section}: {self.name} does not translate")
        elif len(targets) > caps.max_targets:
            out.append(
                f"{self.section}: {len(targets)} target languages configured; {self.name} "
                f"translates to at most {caps.max_targets} at once"
            )
        if self.translation_only(settings) and not caps.translation_only:
            out.append(f"{self.section}: {self.name} cannot give translations alone")
        speaker = config.speaker
        if (speaker.enabled or speaker.save_dir is not None) and not self.speaks(settings):
            how = "" if caps.speaks else f" ({self.name} cannot)"
            out.append(
                f"speaker: spoken translations are asked for, but [{self.section}] makes none{how}"
            )
        return out

    def warnings(self, config: Config) -> list[str]:
        """What the config does that works but deserves a warning (``section: text``)."""
        return [f"{self.section}: {text}" for text in self.cautions(self.settings(config))]

    def codec(self, config: Config) -> Codec:
        if self.make_codec is None:
            raise ValueError(f"{self.name} runs in-process: it has no codec")
        return self.make_codec(self.settings(config), config)


def _soniox_codec(section: SonioxConfig, config: Config) -> Codec:
    from edgecap.services.soniox import SonioxCodec

    return SonioxCodec(section, replay_speed=config.link.replay_speed)


def _azure_codec(section: AzureConfig, config: Config) -> Codec:
    from edgecap.services.azure import AzureCodec

    return AzureCodec(
        section, profanity=config.daemon.profanity, replay_speed=config.link.replay_speed
    )


def _sarvam_codec(section: SarvamConfig, config: Config) -> Codec:
    from edgecap.services.sarvam import SarvamCodec

    # a long utterance is flushed before the link would take the quiet service for dead
    return SarvamCodec(
        section, replay_speed=config.link.replay_speed, flush_after=config.link.dead_after / 2
    )


def _soniox_targets(section: SonioxConfig) -> tuple[str, ...]:
    if section.translation == "one_way":
        return (section.target_language,)
    if section.translation == "two_way":
        return (section.language_a, section.language_b)
    return ()


def _azure_cautions(section: AzureConfig) -> list[str]:
    if section.host and section.host.lower().startswith("ws://"):
        return [
            "host is ws:// — speech and captions cross the network unencrypted (fine on a "
            "trusted LAN to a container; use wss:// otherwise)"
        ]
    return []


SERVICES: dict[str, Service] = {
    service.name: service
    for service in (
        Service(
            name="soniox",
            section="soniox",
            capabilities=Capabilities(partials=True, translates=True, max_targets=2),
            make_codec=_soniox_codec,
            targets=_soniox_targets,
            languages=lambda section: tuple(section.language_hints),
        ),
        Service(
            name="azure",
            section="azure",
            capabilities=Capabilities(partials=True, translates=True, max_targets=10, speaks=True),
            make_codec=_azure_codec,
            targets=lambda section: section.targets if section.mode == "translation" else (),
            languages=lambda section: (section.language,),
            speaks=lambda section: section.voice_target() is not None,
            cautions=_azure_cautions,
        ),
        Service(
            name="sarvam",
            section="sarvam",
            # one target (English), given instead of the transcript in translate mode
            capabilities=Capabilities(
                partials=False, translates=True, max_targets=1, translation_only=True
            ),
            make_codec=_sarvam_codec,
            targets=lambda section: ("en",) if section.translates else (),
            languages=lambda section: () if section.language == "unknown" else (section.language,),
            translation_only=lambda section: section.translates,
        ),
        Service(
            name="local",
            section="local",
            capabilities=Capabilities(partials=True, translates=False, max_targets=0),
            make_codec=None,
        ),
    )
}


def service(name: str) -> Service:
    """The registered service ``name``; KeyError names the ones there are."""
    try:
        return SERVICES[name]
    except KeyError:
        raise KeyError(f"unknown service {name!r} (known: {', '.join(SERVICES)})") from None
