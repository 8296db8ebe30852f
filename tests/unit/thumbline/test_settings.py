"""Settings: one object from THUMBLINE_* variables; bad values fail naming the variable."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from thumbline.errors import ConfigError
from thumbline.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("THUMBLINE_"):
            monkeypatch.delenv(key)


def test_defaults_are_the_embedded_pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.embedded_broker and s.kafka_bootstrap is None
    assert s.store_url == f"chdb://{tmp_path / '.thumbline' / 'chdb'}"
    assert (s.topic_prefix, s.partitions, s.clickhouse_database) == ("thumbline.", 8, "thumbline")


def test_the_embedded_broker_is_durable_unless_memory_is_asked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings().broker_storage == "durable"
    assert load_settings().broker_dir == Path(".thumbline") / "broker"
    monkeypatch.setenv("THUMBLINE_BROKER_STORAGE", " Memory ")
    assert load_settings().broker_storage == "memory"
    monkeypatch.setenv("THUMBLINE_BROKER_STORAGE", "disk")
    with pytest.raises(ConfigError, match="THUMBLINE_BROKER_STORAGE: .*'durable' or 'memory'"):
        load_settings()


def test_values_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("THUMBLINE_KAFKA_BOOTSTRAP", "kafka-1:9092, kafka-2:9092")
    monkeypatch.setenv("THUMBLINE_PARTITIONS", "16")
    monkeypatch.setenv("THUMBLINE_CLICKHOUSE_URL", "http://default:s3cret@clickhouse:8123")
    s = load_settings()
    assert s.kafka_bootstrap == "kafka-1:9092,kafka-2:9092" and not s.embedded_broker
    assert s.partitions == 16 and not s.store_is_chdb


@pytest.mark.parametrize(
    ("var", "value", "words"),
    [
        (
            "THUMBLINE_KAFKA_BOOTSTRAP",
            "kafka",
            "THUMBLINE_KAFKA_BOOTSTRAP: 'kafka' is not host:port",
        ),
        (
            "THUMBLINE_PARTITIONS",
            "0",
            "THUMBLINE_PARTITIONS: Input should be greater than or equal to 1",
        ),
        ("THUMBLINE_PARTITIONS", "many", "THUMBLINE_PARTITIONS"),
        (
            "THUMBLINE_CLICKHOUSE_URL",
            "postgres://x",
            "THUMBLINE_CLICKHOUSE_URL: must start with chdb:///",
        ),
        ("THUMBLINE_CLICKHOUSE_URL", "chdb://relative", "needs an absolute path"),
        ("THUMBLINE_CLICKHOUSE_DATABASE", "drop table;", "THUMBLINE_CLICKHOUSE_DATABASE"),
        ("THUMBLINE_LOG_LEVEL", "loud", "THUMBLINE_LOG_LEVEL"),
        ("THUMBLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL", "THUMBLINE_KAFKA_SASL_MECHANISM"),
        ("THUMBLINE_STREAM_WORKERS", "9", "THUMBLINE_STREAM_WORKERS: 9 workers for 8 partitions"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch, var, value, words):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert words in str(info.value)


def test_key_by_trace_in_its_own_process_needs_key_by_trace(monkeypatch):
    monkeypatch.setenv("THUMBLINE_KEY_BY_TRACE_PROCESS", "true")
    assert load_settings().key_by_trace_process
    monkeypatch.setenv("THUMBLINE_KEY_BY_TRACE", "false")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "THUMBLINE_KEY_BY_TRACE_PROCESS: key_by_trace is off" in str(info.value)


def test_secrets_never_appear_in_errors_or_display(monkeypatch):
    monkeypatch.setenv("THUMBLINE_CLICKHOUSE_URL", "http://default:s3cret@clickhouse:8123")
    monkeypatch.setenv("THUMBLINE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("THUMBLINE_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("THUMBLINE_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("THUMBLINE_KAFKA_SASL_PASSWORD", "hunter2")
    s = load_settings()
    assert s.store_display == "http://default:***@clickhouse:8123"
    assert "s3cret" not in repr(s) and "hunter2" not in repr(s)
    assert s.kafka_kwargs()["sasl_plain_password"] == "hunter2"
    monkeypatch.setenv("THUMBLINE_PARTITIONS", "-1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "s3cret" not in str(info.value) and "hunter2" not in str(info.value)


def test_overrides_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("THUMBLINE_DATA_DIR", "/tmp/a")
    assert load_settings(data_dir=Path("/tmp/b")).data_dir == Path("/tmp/b")


def test_a_child_process_gets_every_setting_secrets_included(monkeypatch):
    monkeypatch.setenv("THUMBLINE_CLICKHOUSE_URL", "http://u:secret@ch:8123")
    monkeypatch.setenv("THUMBLINE_STREAM_WORKERS", "2")
    settings = load_settings()
    assert load_settings(**orjson.loads(settings.to_json())) == settings


def test_the_sql_sandbox_has_limits_and_an_optional_reader_user(monkeypatch):
    s = load_settings()
    assert (s.sql_max_seconds, s.sql_max_result_rows, s.gateway_sql_workers) == (30, 1_000_000, 2)
    assert s.reader_url is None
    monkeypatch.setenv("THUMBLINE_CLICKHOUSE_URL", "http://thumbline:main-pw@clickhouse:8123")
    monkeypatch.setenv("THUMBLINE_CLICKHOUSE_READER_URL", "http://reader:reader-pw@clickhouse:8123")
    monkeypatch.setenv("THUMBLINE_SQL_MAX_SECONDS", "5")
    s = load_settings()
    assert s.reader_url == "http://reader:reader-pw@clickhouse:8123" and s.sql_max_seconds == 5
    masked = s.mask(f"failed at {s.reader_url} and {s.store_url}: reader-pw main-pw")
    assert "reader-pw" not in masked and "main-pw" not in masked


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"THUMBLINE_CLICKHOUSE_READER_URL": "http://r:p@ch:8123"}, "needs a ClickHouse server"),
        ({"THUMBLINE_CLICKHOUSE_READER_URL": "chdb:///x"}, "must be http(s)://user:pass@host"),
        ({"THUMBLINE_SQL_MAX_SECONDS": "0"}, "THUMBLINE_SQL_MAX_SECONDS"),
        ({"THUMBLINE_SQL_MAX_MEMORY_BYTES": "1000"}, "THUMBLINE_SQL_MAX_MEMORY_BYTES"),
        ({"THUMBLINE_GATEWAY_SQL_WORKERS": "0"}, "THUMBLINE_GATEWAY_SQL_WORKERS"),
    ],
)
def test_bad_sandbox_settings_fail_naming_the_variable(monkeypatch, env, words):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_settings()


def test_an_otlp_topic_asked_for_needs_key_by_trace_which_reads_it(monkeypatch):
    monkeypatch.setenv("THUMBLINE_KEY_BY_TRACE", "false")
    assert load_settings().otlp_topic == "otlp_spans"  # the default: simply not read
    monkeypatch.setenv("THUMBLINE_OTLP_TOPIC", "spans")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "THUMBLINE_OTLP_TOPIC" in str(info.value) and "THUMBLINE_KEY_BY_TRACE=true" in str(
        info.value
    )
    monkeypatch.setenv("THUMBLINE_OTLP_TOPIC", "")
    assert load_settings().otlp_topic == ""


def test_the_question_and_the_answer_are_captured_unless_turned_off(monkeypatch):
    assert load_settings().capture_content is True
    monkeypatch.setenv("THUMBLINE_CAPTURE_CONTENT", "false")
    assert load_settings().capture_content is False
    monkeypatch.setenv("THUMBLINE_CAPTURE_CONTENT", "sometimes")
    with pytest.raises(ConfigError, match="THUMBLINE_CAPTURE_CONTENT"):
        load_settings()


def test_the_rates_count_end_users_unless_told_which_annotators_to_count(monkeypatch):
    assert load_settings().counted_annotators == ("end_user",)
    monkeypatch.setenv("THUMBLINE_RATES_ANNOTATORS", " end_user, reviewer,reviewer ")
    assert load_settings().counted_annotators == ("end_user", "reviewer")
    monkeypatch.setenv("THUMBLINE_RATES_ANNOTATORS", "end_user,judge")
    with pytest.raises(ConfigError, match="THUMBLINE_RATES_ANNOTATORS: takes one or more of "
                       "end_user, reviewer, evaluator, code.*judge is not one"):  # fmt: skip
        load_settings()
    monkeypatch.setenv("THUMBLINE_RATES_ANNOTATORS", " , ")
    with pytest.raises(ConfigError, match="it is empty"):
        load_settings()


BOOTSTRAP_KEY = "tl_0123456789abcdef_Qm7Zr2Xk9Lp4Vw8Tn3Hc6Jd1Fy5Gb0Ss-Ue_Oa2Ri4Pq"


def test_a_bootstrap_admin_key_is_a_secret_in_the_key_format(monkeypatch):
    monkeypatch.setenv("THUMBLINE_BOOTSTRAP_ADMIN_KEY", BOOTSTRAP_KEY)
    s = load_settings()
    assert s.bootstrap_admin_key is not None
    assert s.bootstrap_admin_key.get_secret_value() == BOOTSTRAP_KEY
    assert BOOTSTRAP_KEY not in repr(s)
    monkeypatch.setenv("THUMBLINE_BOOTSTRAP_ADMIN_KEY", "")
    assert load_settings().bootstrap_admin_key is None


@pytest.mark.parametrize(
    "value",
    [
        "hunter2-not-a-key",  # not the format
        "tl_0123456789abcdef_short",  # a secret too short to be a real key's
        "tl_0123456789ABCDEF_" + "A" * 43,  # key ids are lower-case hex
        "tl_0123456789abcdef_" + "A" * 43 + "'; DROP TABLE x --",
        "tl_0123456789abcdef_" + "A" * 101,  # longer than any key
        "tl_0123456789abcdef_" + "A" * 43,  # the format, but one guess finds it
        "tl_0123456789abcdef_" + "ab" * 30,  # two characters: 60 bits at most
        "tl_0123456789abcdef_" + "0123" * 10,  # a pattern, not a random secret
    ],
)
def test_a_malformed_bootstrap_admin_key_fails_saying_how_to_make_one_and_not_echoing_it(
    monkeypatch, value
):
    monkeypatch.setenv("THUMBLINE_BOOTSTRAP_ADMIN_KEY", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "THUMBLINE_BOOTSTRAP_ADMIN_KEY" in message and "secrets.token_urlsafe" in message
    assert value not in message


@pytest.mark.parametrize("name", ["sql_writer_password", "sql_reader_password"])
@pytest.mark.parametrize("value", ["x", "thumbline", "w-pass-7f3a", "a" * 40, "abababababababab"])
def test_a_store_endpoint_password_that_is_short_or_repetitive_is_refused(monkeypatch, name, value):
    # The endpoint takes password guesses as fast as they come, from any local user.
    monkeypatch.setenv(f"THUMBLINE_{name.upper()}", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"THUMBLINE_{name.upper()}" in str(info.value) and "16" in str(info.value)
    assert value not in str(info.value)


def test_a_store_endpoint_password_of_16_varied_characters_is_taken(monkeypatch):
    monkeypatch.setenv("THUMBLINE_SQL_READER_PASSWORD", "Xq7-mP2v_Lr9sT4w")
    password = load_settings().sql_reader_password
    assert password is not None and password.get_secret_value() == "Xq7-mP2v_Lr9sT4w"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "store.internal"])  # noqa: S104
def test_the_store_endpoint_beyond_loopback_is_refused(monkeypatch, host):
    # It speaks plain HTTP: the token and the passwords would cross the network in clear.
    monkeypatch.setenv("THUMBLINE_SQL_HOST", host)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "THUMBLINE_SQL_HOST" in message and "loopback" in message
    assert "ClickHouse server" in message  # what to do instead


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_the_store_endpoint_on_loopback_is_taken(monkeypatch, host):
    monkeypatch.setenv("THUMBLINE_SQL_HOST", host)
    assert load_settings().sql_host == host
