"""`thumbline up`, `send` and `sql` as a user runs them: real subprocesses, real broker and chDB."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Up, consume, gone, run, start_up, stop, worker_env
from thumbline.schemas import migrations


@pytest.fixture
def env(clean_env, tmp_path) -> dict[str, str]:
    return {**clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data")}


@pytest.fixture
def up(thumbline_bin, env, tmp_path) -> Iterator[Up]:
    running = start_up(thumbline_bin, env, tmp_path / "data")
    yield running
    stop(running)


def test_up_prints_where_everything_is_and_that_the_broker_is_durable(up):
    up.proc.send_signal(signal.SIGTERM)
    printed, _ = up.proc.communicate(timeout=30)
    assert up.proc.returncode == 0
    assert up.info.broker_storage == "durable" and up.info.storage_pid is not None
    broker_dir = up.data_dir.resolve() / "broker"
    assert f"Kafka       {up.info.bootstrap}  (embedded Tansu, durable in {broker_dir})" in printed
    assert f"ClickHouse  chdb://{up.data_dir.resolve() / 'chdb'}" in printed
    assert f"SQL         {up.info.sql_url}/sql" in printed
    assert f"endpoint    {up.info.sql_url}/  (the store as a ClickHouse HTTP server" in printed
    assert up.info.store_writer_password and up.info.store_writer_password not in printed


def test_up_memory_keeps_messages_in_memory_and_says_so(thumbline_bin, env, tmp_path):
    up = start_up(thumbline_bin, env, tmp_path / "data", "--memory")
    try:
        up.proc.send_signal(signal.SIGTERM)
        printed, _ = up.proc.communicate(timeout=30)
        assert up.proc.returncode == 0
        assert "(embedded Tansu, in memory: lost when it stops)" in printed
        assert up.info.broker_storage == "memory" and up.info.storage_pid is None
        assert not (up.data_dir / "broker").exists()
        assert up.info.broker_pid is not None and gone(up.info.broker_pid)
    finally:
        stop(up)


def test_sql_answers_while_up_runs(thumbline_bin, up):
    result = run(
        thumbline_bin, up.env, "sql", "SELECT count() AS n FROM thumbline.feedback", "-f", "json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"n": 0}
    tables = ("feedback", "traces", "feedback_rates", "alerts", "dead_letters", "feedback_latest",
              "weekly_quality_review", "users_repeated_bad")  # fmt: skip
    every = " UNION ALL ".join(
        f"SELECT '{t}' AS name, count() AS n FROM thumbline.{t}" for t in tables
    )
    table = run(thumbline_bin, up.env, "sql", f"SELECT name FROM ({every}) ORDER BY name")
    assert table.returncode == 0, table.stderr
    listed = table.stdout.split()
    assert listed[0] == "name" and set(listed[1:]) == set(tables)
    system = run(thumbline_bin, up.env, "sql", "SELECT name FROM system.tables")
    assert system.returncode == 1 and "outside the thumbline database" in system.stderr


async def test_send_puts_valid_events_on_the_running_broker(thumbline_bin, up):
    trace = run(thumbline_bin, up.env, "send", "trace", "--project", "shop", "--model", "m1")
    assert trace.returncode == 0, trace.stderr
    trace_id = json.loads(trace.stdout)["trace_id"]
    sent = run(
        thumbline_bin,
        up.env,
        "send",
        "feedback",
        "--trace-id",
        trace_id,
        "--label",
        "bad",
        "--comment",
        "wrong answer",
        "--user-id",
        "u_42",
        "--tag",
        "thumbs-down",
    )
    assert sent.returncode == 0, sent.stderr
    messages = await consume(
        up.info.bootstrap, ["thumbline.feedback", "thumbline.traces"], events=2
    )
    events = {topic: batch[0] for topic, _, batch in messages}
    assert events["thumbline.traces"]["project"] == "shop"
    feedback = events["thumbline.feedback"]
    assert (feedback["trace_id"], feedback["label"], feedback["comment"], feedback["tags"]) == (
        trace_id,
        "bad",
        "wrong answer",
        ["thumbs-down"],
    )
    assert feedback["event_id"] == json.loads(sent.stdout)["event_id"]


def test_send_takes_the_whole_event_as_json_with_flags_on_top(thumbline_bin, up):
    sent = run(
        thumbline_bin,
        up.env,
        "send",
        "trace",
        "--json",
        '{"trace_id": "from-json", "project": "shop", "model": "old"}',
        "--model",
        "new",
    )
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["trace_id"] == "from-json"


async def test_send_refuses_invalid_events_with_the_field_and_sends_nothing(thumbline_bin, up):
    bad = run(
        thumbline_bin,
        up.env,
        "send",
        "feedback",
        "--trace-id",
        "t1",
        "--kind",
        "rating",
        "--value",
        "9",
    )
    assert bad.returncode == 2
    assert "value: 9 is outside the range [1, 5]" in bad.stderr and "nothing was sent" in bad.stderr
    worse = run(
        thumbline_bin, up.env, "send", "feedback", "--trace-id", "t1", "--json", '{"lable": "x"}'
    )
    assert worse.returncode == 2 and "lable: is not a field" in worse.stderr
    messages = await consume(up.info.bootstrap, ["thumbline.feedback"], events=1, timeout=3)
    assert messages == []


async def test_send_feedback_takes_the_trace_id_from_json_and_offers_rating_score_thumb(
    thumbline_bin, up
):
    def send(*args: str) -> dict:
        sent = run(thumbline_bin, up.env, "send", "feedback", *args)
        assert sent.returncode == 0, sent.stderr
        return json.loads(sent.stdout)

    assert send("--json", '{"trace_id": "t-json", "label": "good"}')["trace_id"] == "t-json"
    send("--trace-id", "t-rating", "--rating", "4")
    send("--trace-id", "t-score", "--score", "0.1")
    send("--trace-id", "t-thumb", "--thumb", "down")
    got = await consume(up.info.bootstrap, ["thumbline.feedback"], events=4)
    events = {e["trace_id"]: e for _, _, batch in got for e in batch}
    assert events["t-json"]["label"] == "good"
    shorthand = {t: (events[t]["kind"], events[t]["value"], events[t]["label"])
                 for t in ("t-rating", "t-score", "t-thumb")}  # fmt: skip
    assert shorthand == {
        "t-rating": ("rating", 4, "good"), "t-score": ("score", 0.1, "bad"),
        "t-thumb": ("thumb", "down", "bad"),
    }  # fmt: skip

    neither = run(thumbline_bin, up.env, "send", "feedback", "--json", '{"label": "good"}')
    assert neither.returncode == 2 and "Missing option" not in neither.stderr
    assert "--trace-id" in neither.stderr and '"trace_id" in --json' in neither.stderr
    too_high = run(thumbline_bin, up.env, "send", "feedback", "--trace-id", "t", "--rating", "9")
    assert too_high.returncode == 2 and "outside the range [1, 5]" in too_high.stderr
    both = run(thumbline_bin, up.env, "send", "feedback", "--trace-id", "t", "--rating", "4",
               "--thumb", "up")  # fmt: skip
    assert both.returncode == 2 and "one of --rating, --score, --thumb" in both.stderr
    clash = run(thumbline_bin, up.env, "send", "feedback", "--trace-id", "t", "--rating", "4",
                "--kind", "thumb")  # fmt: skip
    assert clash.returncode == 2 and "--rating is a rating" in clash.stderr


def test_sigterm_stops_everything(up):
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(30) == 0
    assert up.info.broker_pid is not None and gone(up.info.broker_pid)
    assert up.info.storage_pid is not None and gone(up.info.storage_pid)
    assert not (up.data_dir / "run.json").exists()


def test_kill_9_takes_the_broker_down_too_and_the_store_opens_again(thumbline_bin, up):
    os.kill(up.proc.pid, signal.SIGKILL)
    up.proc.wait(10)
    assert up.info.broker_pid is not None and gone(up.info.broker_pid)
    assert up.info.storage_pid is not None and gone(up.info.storage_pid)
    after = run(
        thumbline_bin, up.env, "sql", "SELECT count() AS n FROM thumbline.traces", "-f", "json"
    )
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == {"n": 0}


def test_a_second_up_on_the_same_data_dir_is_refused(thumbline_bin, up):
    second = run(thumbline_bin, up.env, "up")
    assert second.returncode == 2
    assert f"already running here (pid {up.proc.pid}" in second.stderr


def test_sql_without_a_running_up_opens_the_store_itself(thumbline_bin, env):
    migrated = run(thumbline_bin, env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "0001_initial: applied" in migrated.stdout
    result = run(
        thumbline_bin,
        env,
        "sql",
        "SELECT version FROM thumbline.schema_migrations FINAL ORDER BY version",
        "-f",
        "csv",
    )
    assert result.returncode == 0, result.stderr
    every = [str(m.version) for m in migrations.load()]
    assert result.stdout.splitlines() == ['"version"', *every]


def test_sql_refuses_writes_unless_asked_and_write_mode_only_inserts(thumbline_bin, up):
    insert = (
        "INSERT INTO thumbline.dead_letters (topic, partition, offset, batch_index, reason, "
        "error, raw, key, at) SELECT 't', 0, 0, -1, 'test', 'e', 'r', 'k', now64(3)"
    )
    refused = run(thumbline_bin, up.env, "sql", insert)
    assert refused.returncode == 1 and "an INSERT needs write mode (thumbline sql --write)" in (
        refused.stderr
    )
    assert run(thumbline_bin, up.env, "sql", "--write", insert).returncode == 0
    read = run(thumbline_bin, up.env, "sql", "SELECT count() AS n FROM thumbline.dead_letters "
               "WHERE reason = 'test'", "-f", "csv")  # fmt: skip
    assert read.stdout.splitlines() == ['"n"', "1"]
    ddl = run(thumbline_bin, up.env, "sql", "--write", "CREATE VIEW thumbline.v AS SELECT 1")
    assert ddl.returncode == 1 and "Create statements are not allowed" in ddl.stderr


def test_send_without_a_broker_says_what_to_do(thumbline_bin, env):
    result = run(thumbline_bin, env, "send", "feedback", "--trace-id", "t", "--label", "good")
    assert result.returncode == 1
    assert "start `thumbline up`" in result.stderr and "THUMBLINE_KAFKA_BOOTSTRAP" in result.stderr


def test_a_bad_setting_fails_at_start_naming_the_variable(thumbline_bin, env):
    result = run(thumbline_bin, {**env, "THUMBLINE_PARTITIONS": "zero"}, "up")
    assert result.returncode == 2
    assert "THUMBLINE_PARTITIONS" in result.stderr


def test_rates_and_alerts_list_the_stored_windows_and_alerts(thumbline_bin, env):
    assert run(thumbline_bin, env, "migrate").returncode == 0
    now = "now64(3) - INTERVAL 5 MINUTE"
    inserted = run(
        thumbline_bin, env, "sql", "--write",
        "INSERT INTO thumbline.feedback_rates (project, environment, model, capability, "
        "window_seconds, window_start, window_end, good, bad, neutral, total, with_comment, "
        f"implicit, bad_rate, version) SELECT 'shop', 'prod', 'm1', '*', 60, {now}, {now}, "
        "4, 6, 0, 10, 3, 1, 0.6, 1 UNION ALL SELECT 'shop', 'prod', 'm2', '*', 60, "
        f"{now}, {now}, 9, 1, 0, 10, 0, 0, 0.1, 1",
    )  # fmt: skip
    assert inserted.returncode == 0, inserted.stderr
    alert = run(
        thumbline_bin, env, "sql", "--write",
        "INSERT INTO thumbline.alerts (alert_id, rule, state, project, environment, model, "
        "capability, window_seconds, window_start, window_end, bad_rate, baseline_rate, bad, "
        "total, sample_trace_ids, sample_comments, inbox_command, at, version) SELECT "
        f"'a1', 'bad-rate-spike', 'firing', 'shop', 'prod', 'm1', '*', 300, {now}, {now}, "
        "0.6, 0.05, 6, 10, ['t1'], ['made up a refund policy'], "
        f"'thumbline inbox --label bad --project shop', {now}, 1",
    )  # fmt: skip
    assert alert.returncode == 0, alert.stderr

    listed = run(thumbline_bin, env, "rates", "--project", "shop")
    assert listed.returncode == 0, listed.stderr
    lines = [ln for ln in listed.stdout.splitlines() if "shop" in ln]
    assert len(lines) == 2 and "60%" in lines[0] and "m1" in lines[0]  # worst first
    as_json = run(thumbline_bin, env, "rates", "--model", "m2", "--json")
    assert [json.loads(ln)["model"] for ln in as_json.stdout.splitlines()] == ["m2"]

    firing = run(thumbline_bin, env, "alerts", "--state", "firing")
    assert firing.returncode == 0, firing.stderr
    assert "bad-rate-spike" in firing.stdout and "project=shop" in firing.stdout
    assert "made up a refund policy" in firing.stdout
    assert "thumbline inbox --label bad --project shop" in firing.stdout
    none = run(thumbline_bin, env, "alerts", "--state", "resolved")
    assert none.returncode == 0 and "0 alerts" in none.stderr
    bad = run(thumbline_bin, env, "alerts", "--state", "sleeping")
    assert bad.returncode == 2 and "firing or resolved" in bad.stderr


def test_up_serves_prometheus_metrics(thumbline_bin, up):
    import urllib.request

    assert up.info.metrics_url is not None
    with urllib.request.urlopen(up.info.metrics_url, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    for name in ("thumbline_events_consumed_total", "thumbline_freshness_seconds",
                 "thumbline_join_pending", "thumbline_alerts_firing"):  # fmt: skip
        assert name in text


async def test_loadgen_reports_what_kafka_took_with_the_labels_in_words(
    thumbline_bin, broker, clean_env, tmp_path
):
    env = await worker_env(broker, clean_env, tmp_path, "loadgen")
    sent = run(thumbline_bin, env, "loadgen", "--count", "300", "--rate", "1000", "--seed", "3")
    assert sent.returncode == 0, sent.stderr
    report = " ".join(sent.stdout.split())  # rich wraps at 80 columns
    assert re.search(r"^sent 300 feedback .*; labels: bad \d+, good \d+, neutral \d+$", report)
    assert "{" not in report
