"""The README's examples run as pasted, against a real `thumbline up`.

Every ```python block of README.md and docs/*.md marked
``<!-- tested: tests/integration/test_readme_examples.py -->`` is saved to a file
and run as the text around it says: ``python feedback_example.py HOST:PORT``,
with the address from the ``Kafka`` line `thumbline up` prints. Nothing else of
the example is changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import run, sql_rows
from tests.integration.readme import Running, marked_blocks, thumbline_up

pytestmark = pytest.mark.slow  # `thumbline up` and the README examples as pasted: a minute

MARK = "tested: tests/integration/test_readme_examples.py"
PYTHON = marked_blocks(MARK, "python")


def test_the_readme_marks_its_python_example_for_this_test():
    assert any(page == "README.md" and "asyncio.run(main(" in code for page, code in PYTHON)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, clean_env) -> Iterator[Running]:
    with thumbline_up(tmp_path_factory.mktemp("readme-examples"), clean_env, "--memory") as up:
        yield up


@pytest.mark.parametrize(
    ("page", "code"), PYTHON, ids=[f"{p}:{i}" for i, (p, _) in enumerate(PYTHON)]
)
def test_a_python_example_runs_as_pasted_and_its_feedback_is_stored(
    page: str, code: str, running: Running, thumbline_bin: str, tmp_path: Path
):
    script = tmp_path / "feedback_example.py"
    script.write_text(code)
    bootstrap = running.line("Kafka")
    done = subprocess.run(
        [sys.executable, str(script), bootstrap],
        cwd=tmp_path, env=running.up.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"{page}: {done.stderr}"
    printed = re.search(r"trace (\w+): the thumbs-down is in thumbline\.feedback", done.stdout)
    assert printed, f"{page} printed {done.stdout!r}"
    trace_id = printed.group(1)

    # "thumbline trace <the printed id> then shows the trace with its nine pieces of feedback"
    env = {**running.up.env, "THUMBLINE_DATA_DIR": str(running.up.data_dir)}
    query = (
        "SELECT kind, model FROM thumbline.feedback FINAL "
        f"WHERE project = 'shop' AND trace_id = '{trace_id}'"
    )
    deadline = time.monotonic() + 60
    while True:
        feedback = sql_rows(thumbline_bin, env, query)
        if len(feedback) == 9 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(feedback) == 9, feedback
    assert {f["model"] for f in feedback} == {"gpt-4o"}, "joined with its trace"
    shown = run(thumbline_bin, {**env, "COLUMNS": "200"}, "trace", trace_id)
    assert shown.returncode == 0 and "gpt-4o" in shown.stdout and "Wrong city" in shown.stdout
