"""Working config blocks for the common setups, shown at the end of ``config/edgecap.ini``
and in the README. A test loads every one (with a key in the environment) and checks it
against what its service can do, so an example that stops working fails the suite.

Each is a drop-in: written to ``/etc/edgecap/edgecap.ini.d/50-<name>.ini`` it overrides the
defaults key by key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    name: str  # a file name: /etc/edgecap/edgecap.ini.d/50-<name>.ini
    title: str  # one line for people
    text: str  # INI text; keys read from where the text says, never written in it


EXAMPLES: tuple[Example, ...] = (
    Example(
        "azure-captions",
        "Azure Speech: captions in the spoken language (English, US)",
        """\
[daemon]
service = azure
fallback = local

[azure]
region = westeurope
language = en-US
# the key: systemd credential azure_speech_key, else $AZURE_SPEECH_KEY
api_key = credential:azure_speech_key, env:AZURE_SPEECH_KEY
""",
    ),
    Example(
        "azure-translation",
        "Azure Speech: English speech with German and French translations, German spoken",
        """\
[daemon]
service = azure

[azure]
region = westeurope
mode = translation
language = en-US
targets = de, fr
voice = de-DE-KatjaNeural
# exchange the key for 10-minute tokens (the key itself never leaves the box again)
auth = token

[speaker]
enabled = yes
device = default

[hdmi]
translations = de, fr
""",
    ),
    Example(
        "azure-container",
        "Azure Speech container on the LAN (no cloud account on the box)",
        """\
[daemon]
service = azure

[azure]
# the container's address: ws:// is unencrypted (edgecap check warns), wss:// if it has TLS
host = ws://192.168.1.20:5000
auth = none
language = en-US
""",
    ),
)


EXAMPLES += (
    Example(
        "sarvam-hindi",
        "Sarvam: Hindi captions in Devanagari",
        """\
[daemon]
service = sarvam
fallback = local

[sarvam]
language = hi-IN
mode = transcribe
# the key: systemd credential sarvam_api_key, else $SARVAM_API_KEY
api_key = credential:sarvam_api_key, env:SARVAM_API_KEY
""",
    ),
    Example(
        "sarvam-hindi-english",
        "Sarvam: Hindi speech, English captions",
        """\
[daemon]
service = sarvam

[sarvam]
language = hi-IN
mode = translate
""",
    ),
)


def render_examples() -> str:
    """The examples as comment blocks for ``config/edgecap.ini``."""
    lines = [
        "",
        "",
        "# ---------------------------------------------------------------------------------",
        "# Examples: working blocks for common setups. Put one in",
        "# /etc/edgecap/edgecap.ini.d/50-NAME.ini (without the leading '# ').",
    ]
    for example in EXAMPLES:
        lines += ["#", f"# == {example.name}: {example.title}"]
        lines += [f"# {line}".rstrip() for line in example.text.splitlines()]
    return "\n".join(lines) + "\n"
