"""The repository's own promises: the README's commands, CI, and the compose file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the Quickstart has a bash block"
    return [ln for ln in block.group(1).splitlines() if ln and not ln.startswith("#")]


def test_the_quickstart_is_exactly_two_commands():
    run, test = quickstart_commands()
    assert run.endswith("thumbline up --demo") and "pip install -e '.[embedded]'" in run
    assert "pytest" in test


def test_ci_runs_the_readmes_test_command_verbatim():
    _, test = quickstart_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines


def test_ci_finds_what_its_own_run_left_behind_and_nothing_else():
    """A developer's own `thumbline up` on the machine does not fail CI; a broker the
    tests of this run started and did not stop does."""
    broker_like = [sys.executable, "-c", "import time; time.sleep(60)", "tansu-v0.6 (a stand-in)"]
    ours = subprocess.Popen(broker_like, env={**os.environ, "CI_RUN_ID": "run-a"})
    theirs = subprocess.Popen(broker_like, env={**os.environ, "CI_RUN_ID": "run-b"})
    try:
        check = [str(ROOT / ".ci" / "leftovers")]
        found = subprocess.run([*check, "run-a"], capture_output=True, text=True, timeout=30)
        assert found.returncode == 1
        assert f" {ours.pid} " in found.stderr and f" {theirs.pid} " not in found.stderr
        clean = subprocess.run([*check, "run-c"], capture_output=True, text=True, timeout=30)
        assert (clean.returncode, clean.stderr) == (0, "")
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()


class TestComposeFile:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

    def test_images_are_pinned(self):
        for name, service in self.compose["services"].items():
            if "image" in service:
                image = service["image"]
                assert ":" in image and not image.endswith(":latest"), name

    def test_the_broker_refuses_to_create_topics_by_itself(self):
        # thumbline's migrate service creates each with its partition count (test_compose.py)
        kafka = self.compose["services"]["kafka"]["environment"]
        assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"

    def test_the_image_is_built_from_a_dockerfile_that_exists(self):
        build = self.compose["services"]["worker"]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
