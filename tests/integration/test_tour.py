"""The README's five-minute tour, typed into an 80-column terminal.

`thumbline up --demo` runs in a fresh directory as the Quickstart starts it; every
command of the tour's marked bash blocks (``<!-- tour: tests/integration/test_tour.py -->``)
runs as written through bash in a pseudo-terminal, in that directory, with
``.venv/bin`` on the PATH. The test replaces only what the README tells a person to
replace: a trace id from the inbox, the id `send trace` printed, the key `keys create`
printed, and the gateway's address from `thumbline up`'s banner. So that the spike's
alert fires in seconds rather than minutes, `thumbline up` runs with 2-second rate
windows and a rule over 20 seconds (the README's loadgen command is unchanged).

The tests run in order, as the tour's steps do.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.integration.readme import (
    Running,
    Terminal,
    commands,
    marked_blocks,
    thumbline_up,
    typed,
)
from thumbline.producers.loadgen import DEMO_MODELS

pytestmark = pytest.mark.slow  # the whole tour against `thumbline up --demo`: about two minutes

TOUR = [cmd for _, block in marked_blocks("tour: tests/integration/test_tour.py", "bash")
        for cmd in commands(block)]  # fmt: skip
README_TRACE = "lg-1795476412-33"
README_SENT_TRACE = "2ae00a75efc74e49975d01903043963b"
README_GATEWAY = "http://127.0.0.1:8788"
TOUR_RULES = """
[[rule]]
name = "tour-spike"
dimensions = "model"
window = 20
baseline = 60
min_total = 20
min_bad = 5
"""
SEEN: dict[str, str] = {}  # what earlier steps printed, which later steps type


def step(prefix: str) -> list[str]:
    """The tour's commands that start with ``prefix``, in order."""
    found = [cmd for cmd in TOUR if cmd.startswith(prefix)]
    assert found, f"the README's tour has no command starting with {prefix!r}"
    return found


def fits(screen: str) -> list[str]:
    """Lines wider than the terminal: none, when the output fits 80 columns."""
    return [ln for ln in screen.splitlines() if len(ln) > 80]


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory, clean_env) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("tour")
    rules = home / "rules.toml"
    rules.write_text(TOUR_RULES)
    env = {
        **clean_env,
        "THUMBLINE_RATE_WINDOW_SECONDS": "2",
        "THUMBLINE_RATE_SLIDING_SECONDS": "6",
        "THUMBLINE_RATE_LATENESS_SECONDS": "3",
        "THUMBLINE_ALERT_RULES": str(rules),
    }
    with thumbline_up(home, env, "--demo") as running:
        yield running


def type_(tour: Running, command: str, timeout: float = 120) -> str:
    return typed(command, env=tour.up.env, cwd=tour.cwd, timeout=timeout)


def inbox_rows(tour: Running, *args: str) -> list[dict]:
    screen = type_(tour, " ".join(["thumbline inbox --json", *args]))
    return [json.loads(ln) for ln in screen.splitlines() if ln.startswith("{")]


def test_the_inbox_shows_the_demos_feedback_within_seconds(tour: Running):
    deadline = time.monotonic() + 60
    joined: list[dict] = []
    while not joined and time.monotonic() < deadline:
        # a person takes a trace id whose row shows its trace's model (not one still
        # waiting for its trace, or an orphan: the demo sends some of each)
        joined = [r for r in inbox_rows(tour) if r["join_status"] == "joined"]
        time.sleep(1)
    assert joined, "the demo's feedback reached the inbox, joined with its traces"
    SEEN["trace"] = joined[0]["trace_id"]
    plain, *filtered = step("thumbline inbox")
    screen = type_(tour, plain)
    assert screen.splitlines()[0].split()[:3] == ["time", "trace", "label"], screen
    assert re.search(r"^\d+ feedback events?\b", screen, re.M), screen
    for command in filtered:  # the demo may have nothing for them yet; they run
        type_(tour, command)


def test_trace_shows_the_trace_and_its_feedback(tour: Running):
    (command,) = [c for c in step("thumbline trace") if README_TRACE in c]
    screen = type_(tour, command.replace(README_TRACE, SEEN["trace"]))
    assert f"trace {SEEN['trace']}" in screen, screen
    assert "feedback" in screen and "joined" in screen, screen
    (sql,) = step("thumbline sql")
    assert any(model in type_(tour, sql) for model in DEMO_MODELS)


def test_send_prints_the_new_trace_and_where_kafka_stored_the_feedback(tour: Running):
    (send_trace,) = step("thumbline send trace")
    sent = json.loads(type_(tour, send_trace).strip().splitlines()[-1])
    assert sent["topic"] == "thumbline.traces" and sent["trace_id"], sent
    SEEN["sent"] = sent["trace_id"]

    (send_feedback,) = step("thumbline send feedback")
    screen = type_(tour, send_feedback.replace(README_SENT_TRACE, SEEN["sent"]))
    delivery = json.loads(screen.strip().splitlines()[-1])
    assert delivery["topic"] == "thumbline.feedback" and delivery["trace_id"] == SEEN["sent"]
    assert isinstance(delivery["partition"], int) and isinstance(delivery["offset"], int)

    # ...and a moment later it is in the inbox, joined with its trace's model
    deadline = time.monotonic() + 60
    while not (mine := inbox_rows(tour, "--project my-app")) and time.monotonic() < deadline:
        time.sleep(1)
    assert [(r["trace_id"], r["label"], r["model"]) for r in mine] == [
        (SEEN["sent"], "bad", "gpt-4o")
    ]
    # at 80 columns the comment is cut (ids never are); --json has all of it
    assert "Wrong answ" in type_(tour, "thumbline inbox --project my-app")
    assert "Paris" in inbox_rows(tour, "--project my-app")[0]["comment"]


@pytest.mark.timeout(600)
def test_a_spike_sent_with_loadgen_fires_an_alert_that_alerts_shows(tour: Running):
    (loadgen,) = step("thumbline loadgen")
    (alerts,) = step("thumbline alerts")
    load = Terminal(loadgen, env=tour.up.env, cwd=tour.cwd)
    try:
        deadline = time.monotonic() + 480
        while "firing" not in (screen := type_(tour, alerts)) and time.monotonic() < deadline:
            assert load.proc.poll() in (None, 0), load.screen
            time.sleep(3)
    finally:
        load.interrupt()  # Ctrl-C, once the alert is there
        with contextlib.suppress(subprocess.TimeoutExpired):
            load.proc.wait(30)
        load.close()
    assert "firing" in screen and "model-1" in screen, screen
    SEEN["alerts"] = screen


def test_the_gateway_accepts_a_post_with_the_new_key(tour: Running):
    (create,) = step("thumbline keys create")
    screen = type_(tour, create)
    key = re.search(r"\btl_\w+_[\w-]+", screen)
    assert key, screen
    (curl,) = step("curl")
    gateway = tour.line("gateway").removesuffix("/v1/feedback")
    command = (
        curl.replace("tl_...", key.group(0))
        .replace(README_GATEWAY, gateway)
        .replace(README_SENT_TRACE, SEEN["sent"])
    )
    answer = json.loads(type_(tour, command).strip().splitlines()[-1])
    assert answer["accepted"] == 1 and answer["results"][0]["status"] == "accepted", answer
    without_key = type_(tour, command.replace(key.group(0), "tl_none_none") + " -w ' %{http_code}'")
    assert without_key.strip().endswith("401"), without_key


def test_at_80_columns_the_inbox_and_alerts_fit_one_row_a_line_and_keep_ids_whole(
    tour: Running,
):
    inbox = type_(tour, "thumbline inbox --project my-app")
    assert not fits(inbox), inbox
    assert SEEN["sent"] in inbox, f"the trace id {SEEN['sent']} is split:\n{inbox}"
    alerts = SEEN["alerts"]
    # a suggested command is never broken: one line, whole, to copy (the terminal wraps it)
    assert [ln for ln in fits(alerts) if not ln.lstrip().startswith("thumbline ")] == [], alerts
    suggested = re.search(r"thumbline inbox [^\n]*--model model-1[^\n]*--from", alerts)
    assert suggested, f"the suggested inbox command is split:\n{alerts}"
