"""`thumbline up --demo` tells its story through the real pipeline, 30 times faster.

The demo at ``--demo-speed 30`` sends 30 times the events a second and spikes
30 times sooner; with the base window, the sliding window and the default
rules' windows 30 times shorter as well, every window holds what it holds in
the real demo, and the default rules' thresholds apply unchanged. So this is
the alert a new user sees a few minutes into ``thumbline up --demo``, seen
through ``thumbline alerts``.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Up, run, start_up, stop, worker_env
from thumbline.producers.loadgen import DEMO_MODELS, DEMO_SPIKE
from thumbline.stream_jobs.spike_alerts import DEFAULT_RULES

pytestmark = pytest.mark.slow  # `up --demo` until its alert fires and resolves: a minute

SPEED = 30


def faster_rules(speed: float) -> str:
    """The default rules as TOML, with every duration ``speed`` times shorter."""
    lines = []
    for rule in DEFAULT_RULES:
        fields = rule.model_dump(exclude_none=True)
        for key in ("window", "baseline", "max_age", "cooldown"):
            fields[key] /= speed
        lines += ["[[rule]]", *(f"{key} = {json.dumps(value)}" for key, value in fields.items())]
    return "\n".join(lines) + "\n"


@pytest.fixture
async def demo_env(broker, clean_env, tmp_path) -> dict[str, str]:
    rules = tmp_path / "rules.toml"
    rules.write_text(faster_rules(SPEED))
    return await worker_env(
        broker, clean_env, tmp_path, "demo",
        THUMBLINE_RATE_WINDOW_SECONDS=str(60 // SPEED),
        THUMBLINE_RATE_SLIDING_SECONDS=str(300 // SPEED),
        THUMBLINE_RATE_LATENESS_SECONDS="1",
        THUMBLINE_ALERT_RULES=str(rules),
    )  # fmt: skip


@pytest.fixture
def demo(thumbline_bin, demo_env, tmp_path) -> Iterator[Up]:
    running = start_up(thumbline_bin, demo_env, tmp_path / "data", "--demo",
                       "--demo-speed", str(SPEED))  # fmt: skip
    yield running
    stop(running)


def alert_states(thumbline_bin: str, env: dict[str, str]) -> list[tuple[str, str, str]]:
    listed = run(thumbline_bin, env, "alerts", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    return sorted((r["rule"], r["model"], r["latest_state"]) for r in rows)


def test_the_demo_spikes_one_model_and_its_alert_fires_then_resolves(thumbline_bin, demo):
    """And it keeps its files in its data dir (Faust's among them), none in the working one."""
    model = DEMO_SPIKE.model  # a fresh data dir: the first demo spikes the default model
    seen: list[list[tuple[str, str, str]]] = []
    deadline = time.monotonic() + 120  # about 25 s of demo, after the stream's start
    while time.monotonic() < deadline:
        states = alert_states(thumbline_bin, demo.env)
        if not seen or states != seen[-1]:
            seen.append(states)
        if ("bad-rate-spike", model, "resolved") in states:
            break
        time.sleep(1)
    assert ("bad-rate-spike", model, "firing") in [s for states in seen for s in states]
    assert seen[-1] == [("bad-rate-spike", model, "resolved")], seen
    assert not {m for states in seen for _, m, _ in states} & (set(DEMO_MODELS) - {model})

    listed = run(thumbline_bin, demo.env, "alerts")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    at = next(i for i, ln in enumerate(lines) if "bad-rate-spike" in ln)
    dimensions = lines[at + 1]  # the alert's line, then its dimensions on a line of their own
    assert lines[at].startswith("resolved")
    assert f"model={model}" in dimensions and "project=shop" in dimensions
    words = " ".join(listed.stdout.split())
    assert (
        f"thumbline inbox --label bad --project shop --environment production --model {model}"
        in words
    )

    demo.proc.send_signal(signal.SIGTERM)
    printed, _ = demo.proc.communicate(timeout=30)
    assert demo.proc.returncode == 0
    group = f"{demo.env['THUMBLINE_TOPIC_PREFIX']}join"
    assert (demo.data_dir / "faust" / group).is_dir()
    assert not (Path.cwd() / f"{group}-data").exists()
    assert f"spike 0:03-0:07 on model {model} (70% bad): thumbline alerts" in printed


def test_demo_options_without_demo_are_refused(thumbline_bin, clean_env, tmp_path):
    env = {**clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data")}
    refused = run(thumbline_bin, env, "up", "--demo-speed", "30")
    assert refused.returncode == 2 and "go with --demo" in refused.stderr
    assert not (tmp_path / "data").exists()
