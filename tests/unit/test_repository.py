"""The repository's own promises: the README's commands, CI, and the compose file."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from thumbline.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the Quickstart has a bash block"
    return [ln for ln in block.group(1).splitlines() if ln and not ln.startswith("#")]


def test_the_quickstart_is_exactly_two_commands():
    run, test = quickstart_commands()
    assert run.endswith("thumbline up --demo") and "pip install -e ." in run
    assert "pytest" in test


def test_ci_runs_the_readmes_test_command_verbatim():
    _, test = quickstart_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines


class TestComposeFile:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

    def test_images_are_pinned(self):
        for name, service in self.compose["services"].items():
            if "image" in service:
                image = service["image"]
                assert ":" in image and not image.endswith(":latest"), name

    def test_thumbline_is_configured_with_valid_settings_for_the_servers(self):
        service = self.compose["services"]["thumbline"]
        env = {
            k: re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", str(v))
            for k, v in service["environment"].items()
        }
        settings = load_settings(
            **{k.removeprefix("THUMBLINE_").lower(): v for k, v in env.items()}
        )
        assert settings.kafka_bootstrap == "kafka:19092"
        assert settings.store_url.startswith("http://") and "clickhouse:8123" in settings.store_url
        assert set(service["depends_on"]) == {"kafka", "clickhouse"}

    def test_the_bootstrap_is_a_listener_kafka_advertises(self):
        kafka = self.compose["services"]["kafka"]["environment"]
        bootstrap = self.compose["services"]["thumbline"]["environment"][
            "THUMBLINE_KAFKA_BOOTSTRAP"
        ]
        assert f"//{bootstrap}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
        assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"

    def test_the_image_is_built_from_a_dockerfile_that_exists(self):
        build = self.compose["services"]["thumbline"]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
