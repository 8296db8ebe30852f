"""What the README's tests share: its marked code blocks, `thumbline up` as a person
starts it (in a directory, reading its banner), and a pseudo-terminal to run commands in.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.conftest import Up, stop
from thumbline import runfile

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-B]")


def marked_blocks(mark: str, lang: str) -> list[tuple[str, str]]:
    """(page, code) of every ```lang block right after the line ``<!-- mark -->``."""
    found = []
    pattern = re.compile(rf"^<!-- {re.escape(mark)} -->\n```{lang}\n(.*?)^```", re.S | re.M)
    for page in PAGES:
        for block in pattern.finditer(page.read_text()):
            found.append((page.relative_to(ROOT).as_posix(), block.group(1)))
    return found


def commands(block: str) -> list[str]:
    """The shell commands of a bash block: comment lines dropped, continuations joined."""
    joined = block.replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]


@dataclass
class Running:
    up: Up
    cwd: Path
    banner: str

    def line(self, label: str) -> str:
        """The address on the banner's line for ``label`` (``Kafka``, ``gateway``...)."""
        found = re.search(rf"^\s*{label}\s+(\S+)", self.banner, re.M)
        assert found, f"no {label} line in thumbline up's output:\n{self.banner}"
        return found.group(1)


@contextmanager
def thumbline_up(cwd: Path, env: dict[str, str], *args: str) -> Iterator[Running]:
    """`thumbline up` started in ``cwd`` as the Quickstart does; stopped on exit."""
    out, err = cwd / "up.out", cwd / "up.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [str(BIN / "thumbline"), "up", *args], cwd=cwd, env=env, stdout=stdout, stderr=stderr
        )
    up = Up(proc, None, env, cwd / ".thumbline")  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C" not in out.read_text():
            assert proc.poll() is None, f"thumbline up exited: {err.read_text()}"
            assert time.monotonic() < deadline, f"thumbline up did not start: {err.read_text()}"
            time.sleep(0.2)
        info = runfile.read(up.data_dir / "run.json")
        assert info is not None, "thumbline up printed its banner but wrote no run file"
        up.info = info
        yield Running(up, cwd, out.read_text())
    finally:
        if up.info is None:
            proc.kill()
            proc.wait()
        else:
            stop(up)


def terminal_env(env: dict[str, str]) -> dict[str, str]:
    """A person's shell: the venv's bin first on PATH, a terminal, no forced width."""
    clean = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    return {**clean, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "TERM": "xterm-256color"}


class Terminal:
    """One shell command in a pseudo-terminal of ``columns`` columns, as typed by a person."""

    def __init__(self, command: str, *, env: dict[str, str], cwd: Path, columns: int = 80):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        self.command = command
        self.proc = subprocess.Popen(
            ["bash", "-c", command], stdin=slave, stdout=slave, stderr=slave,
            env=terminal_env(env), cwd=cwd, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self._master = master
        self._raw = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: the last writer closed
                break
            if not chunk:
                break
            self._raw += chunk

    @property
    def screen(self) -> str:
        """What the terminal showed so far: escapes removed, one string per printed line."""
        text = ANSI.sub("", self._raw.decode(errors="replace"))
        lines = [ln.rsplit("\r", 1)[-1] for ln in text.replace("\r\n", "\n").split("\n")]
        return "\n".join(lines)

    def wait(self, timeout: float = 120) -> str:
        """Wait for the command to end; its screen. Fails if it exits with an error."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"{self.command!r} still ran after {timeout}s") from None
        self._finish()
        assert self.proc.returncode == 0, (
            f"{self.command!r} exited {self.proc.returncode}:\n{self.screen}"
        )
        return self.screen

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the command's process group, as the terminal sends it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)

    def close(self) -> None:
        """Kill what still runs (the test's own cleanup, not a person's Ctrl-C)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._finish()

    def _finish(self) -> None:
        self._reader.join(10)
        if self._master >= 0:
            os.close(self._master)
            self._master = -1


def typed(command: str, *, env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    """Run ``command`` in an 80-column terminal to its end; the screen."""
    return Terminal(command, env=env, cwd=cwd).wait(timeout)
