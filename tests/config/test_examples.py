"""The example blocks (config/edgecap.ini's end, the README) are working configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecap.config.examples import EXAMPLES, render_examples
from edgecap.config.loader import load
from edgecap.services.registry import service

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_each_example_loads_and_its_service_can_do_it(tmp_path, example):
    ini = tmp_path / f"50-{example.name}.ini"
    ini.write_text(example.text)
    loaded = load(
        [ini], env={"AZURE_SPEECH_KEY": "k", "SONIOX_API_KEY": "k", "SARVAM_API_KEY": "k"}
    )
    config = loaded.config
    spec = service(config.daemon.service)
    assert spec.problems(config) == []
    if spec.cloud:
        assert spec.codec(config).name == config.daemon.service
    # every key it sets is one that changes a default (no dead lines in an example)
    assert loaded.origins, example.name
    for (section, key), where in loaded.origins.items():
        assert str(ini) in where, (section, key)


def test_the_examples_are_in_the_documented_config_and_the_readme():
    documented = (REPO / "config" / "edgecap.ini").read_text()
    assert documented.endswith(render_examples())
    readme = (REPO / "README.md").read_text()
    for example in EXAMPLES:
        assert f"```ini\n{example.text}```" in readme, f"README lacks the {example.name} block"


def test_the_container_example_warns_that_it_is_unencrypted():
    (container,) = [e for e in EXAMPLES if e.name == "azure-container"]
    assert "ws://" in container.text
