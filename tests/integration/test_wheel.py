"""The wheel a user installs carries the web assets.

An editable install finds them in the repository either way, and a build in the repository
reuses its ``*.egg-info`` (whose file list remembers earlier builds), so the wheel is built
from a clean copy of the repository's files, as from a fresh clone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "thumbline" / "web" / "static"


def clean_copy(to: Path) -> Path:
    """The repository's files (tracked, and new ones not ignored) copied to ``to``;
    symbolic links stay links."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree, not yet in git
        (to / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, to / name, follow_symlinks=False)
    return to


def build_wheel(source: Path, where: Path) -> Path:
    """thumbline's wheel, built from ``source`` into ``where``."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = where.glob("thumbline-*.whl")
    return wheel


def venv_with(wheel: Path, where: Path, *, extra: str = "", timeout: float = 900) -> Path:
    """A fresh virtualenv at ``where`` with ``wheel[extra]`` and its dependencies alone."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    install = subprocess.run(
        [str(where / "bin" / "pip"), "install", "-q", f"{wheel}{extra and f'[{extra}]'}"],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    return where


def test_the_wheel_carries_every_file_the_gateway_serves(tmp_path):
    wheel = build_wheel(clean_copy(tmp_path / "src"), tmp_path)
    shipped = set(zipfile.ZipFile(wheel).namelist())
    served = {str(p.relative_to(ROOT)) for p in STATIC.rglob("*") if p.is_file()}
    assert {
        "thumbline/web/static/docs.html",
        "thumbline/web/static/docs.js",
        "thumbline/web/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "thumbline/web/static/vendor/swagger-ui/LICENSE",
    } <= served
    assert sorted(served - shipped) == []
