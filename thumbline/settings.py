"""Settings: one object, read from ``THUMBLINE_*`` environment variables.

Built once by the entrypoint (:func:`load_settings`) and passed down; nothing
reads the environment at import time.
"""

from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from thumbline.errors import ConfigError
from thumbline.schemas import Annotator, TimeBounds

ENV_PREFIX = "THUMBLINE_"
#: A key as ``thumbline keys create`` makes them (keys.py), with a secret of 32+ characters.
_BOOTSTRAP_KEY = re.compile(r"^tl_[0-9a-f]{16}_[A-Za-z0-9_\-]{32,100}$")


def _guessable(secret: str) -> bool:
    """Whether ``secret`` is too regular to be random: under 100 bits counted as its length
    times log2 of its distinct characters (``"A" * 43``, ``"abab..."``, ``"0123" * 10``)."""
    return len(secret) * math.log2(max(len(set(secret)), 1)) < 100


_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class Settings(BaseSettings):
    """Every knob of thumbline. Unset Kafka bootstrap means: start the embedded broker."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    data_dir: Path = Field(Path(".thumbline"), description="Embedded store, run file, logs.")

    kafka_bootstrap: str | None = Field(
        None, description="host:port[,host:port]; unset: start the embedded broker."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    clickhouse_url: SecretStr | None = Field(
        None,
        description="chdb:///abs/path or http(s)://user:pass@host:8123; unset: chDB in data_dir.",
    )
    clickhouse_database: str = Field(
        "thumbline", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The database of the tables."
    )
    clickhouse_reader_url: SecretStr | None = Field(
        None,
        description="http(s)://reader:pass@host:8123: a read-only ClickHouse user for the SQL "
        "that keys and the CLI send (SELECT on the database only, readonly=1, a profile with "
        "the limits); unset on a server: the main user with readonly=1, and a warning.",
    )  # fmt: skip

    clickhouse_cluster: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$",
        description="A cluster of the server's remote_servers: migrations create Replicated "
        "tables and Distributed tables over them ON CLUSTER; unset: one server.",
    )  # fmt: skip
    retention_feedback_days: int = Field(
        0,
        ge=0,
        le=36500,
        description="Feedback is deleted this many days after its event time; 0: kept.",
    )
    retention_traces_days: int = Field(
        0,
        ge=0,
        le=36500,
        description="Traces are deleted this long after their reception; 0: kept.",
    )
    retention_dead_letters_days: int = Field(
        0,
        ge=0,
        le=36500,
        description="Dead letters are deleted this long after they came; 0: kept.",
    )
    retention_rates_days: int = Field(
        0,
        ge=0,
        le=36500,
        description="Rate windows are deleted this long after they start; 0: kept.",
    )

    topic_prefix: str = Field(
        "thumbline.", pattern=r"^[A-Za-z0-9._\-]*$", max_length=200,
        description="Put before every topic name (thumbline.feedback...).",
    )  # fmt: skip
    partitions: int = Field(8, ge=1, le=256, description="Partitions of the join's topics.")
    stream_group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._\-]+$", max_length=200,
        description="The stream's consumer group (default <topic prefix>join): every worker "
        "of one pipeline shares it; another group reads the same topics from the start.",
    )  # fmt: skip
    replication_factor: int = Field(
        1, ge=1, le=16, description="Replicas of each topic thumbline creates."
    )

    join_grace_seconds: float = Field(
        600.0, gt=0, description="Wall time feedback waits for its trace before it is an orphan."
    )
    join_pending_row_seconds: float = Field(
        2.0, ge=0, le=3600,
        description="Feedback that waits longer than this for its trace is stored at once with "
        "join_status pending (the inbox shows it, marked), until it is joined or an orphan.",
    )  # fmt: skip
    one_vote_per_user: bool = Field(
        False,
        description="One vote per person for every feedback name: feedback with a user_id "
        "replaces that person's earlier feedback of the same name on the same target (trace, "
        "conversation or session), on every input path. Off: only for the names whose score "
        "config says one_vote_per_user.",
    )
    join_retention_seconds: float = Field(
        7 * 86400.0, gt=0, description="How long the join holds a trace's attributes in memory."
    )
    ingest_max_age_seconds: float = Field(
        7 * 86400.0, gt=0, le=10 * 365 * 86400,
        description="Events whose time (ts, start/end time) is older than this when received are "
        "refused: 422 at the gateway, dead letter ts_out_of_range in the stream.",
    )  # fmt: skip
    ingest_max_future_seconds: float = Field(
        3600.0, ge=0, le=7 * 86400,
        description="Events whose time is further than this ahead of their reception are refused.",
    )  # fmt: skip
    capture_content: bool = Field(
        True,
        description="Store each trace's input and output (the question and the answer, at most "
        "16,000 characters each). false: the stream stores them empty, whoever sent them, and "
        "the gateway drops them before they reach Kafka.",
    )
    join_max_pending: int = Field(
        1_000_000, ge=1, le=100_000_000,
        description="Most feedback events held waiting for their traces; past it the longest "
        "waiting is emitted as an orphan early (a late trace still corrects it).",
    )  # fmt: skip
    join_max_traces: int = Field(
        5_000_000, ge=1, le=1_000_000_000,
        description="Most traces the join holds in memory; past it the oldest are forgotten "
        "(the store has them: feedback for one is joined after a lookup).",
    )  # fmt: skip
    join_max_orphans: int = Field(
        1_000_000, ge=1, le=100_000_000,
        description="Most traces with orphans the join can still correct; past it the oldest "
        "are forgotten (a late trace no longer corrects them).",
    )  # fmt: skip
    stream_batch_size: int = Field(
        200, ge=1, le=100_000, description="Messages per micro-batch (of up to 1,000 events each)."
    )
    stream_batch_seconds: float = Field(0.05, gt=0, le=10, description="Longest wait for a batch.")
    stream_enabled: bool = Field(
        True,
        description="thumbline up also runs the stream. false: it runs the broker, the store "
        "and the gateway only, for `thumbline worker` processes to do the stream.",
    )
    stream_workers: int = Field(
        1, ge=1, le=64,
        description="Processes that run the join. 1: thumbline up alone; more: helper processes "
        "split the join's partitions with it (a second core's worth of throughput each).",
    )  # fmt: skip
    key_by_trace: bool = Field(
        True,
        description="Re-key input events by trace id in a plain-aiokafka stage before the join "
        "(stream_jobs/key_by_trace.py): producers that send one event per message are read "
        "thousands of messages per call instead of one by one. false: the join reads the input "
        "topics itself.",
    )
    key_by_trace_process: bool = Field(
        False,
        description="Run key_by_trace in a helper process of its own (a second core for "
        "producers that send one event per message) instead of inside thumbline up.",
    )
    otlp_topic: str = Field(
        "otlp_spans",
        max_length=249,
        description="The topic the OpenTelemetry Collector's Kafka exporter writes spans to "
        "(its default); key_by_trace reads it beside thumbline's own input (not read while "
        "key_by_trace is off). Empty: not read.",
    )
    otlp_encoding: Literal["otlp_proto", "otlp_json"] = Field(
        "otlp_proto", description="The Kafka exporter's encoding of otlp_topic."
    )
    otlp_project: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="The project of OpenTelemetry spans read from Kafka or sent to the gateway "
        "without a project-bound key. Absent: each span's service.name.",
    )
    sink_max_rows: int = Field(50_000, ge=1, le=1_000_000, description="Rows per insert, at most.")
    sink_max_seconds: float = Field(0.5, gt=0, le=60, description="Longest a row waits to insert.")

    rate_window_seconds: int = Field(
        60, ge=1, le=3600, description="The tumbling base window of the rates (event time)."
    )
    rate_sliding_seconds: str = Field(
        "300,3600", pattern=r"^\s*(\d+\s*(,\s*\d+\s*)*)?$",
        description="Sliding windows, comma-separated seconds, multiples of the base window.",
    )  # fmt: skip
    rate_lateness_seconds: float = Field(
        30.0, ge=0, le=3600, description="How long a window takes late feedback after it ends."
    )
    rate_reconcile_seconds: float = Field(
        300.0, ge=0, le=86400,
        description="Seconds (of watermark) after a window completes at which it is compared "
        "once with the feedback table and written again if they differ.",
    )  # fmt: skip
    rate_max_cells: int = Field(
        500_000, ge=100, le=100_000_000,
        description="Most (window, dimensions) counters the rates hold; rows past it are left "
        "out of the rates (thumbline_bound_hits_total{structure=\"rate_windows\"}).",
    )  # fmt: skip
    rate_max_events: int = Field(
        5_000_000, ge=100, le=1_000_000_000,
        description="Most events counted in open rate windows; rows past it are left out.",
    )  # fmt: skip
    rates_annotators: str = Field(
        "end_user",
        description="Whose feedback the rates and alerts count, comma-separated: end_user, "
        "reviewer, evaluator (an LLM judge), code.",
    )
    alert_max_tracks: int = Field(
        10_000, ge=10, le=10_000_000,
        description="Most alerts firing or cooling down at once; new spikes past it are not "
        "tracked.",
    )  # fmt: skip
    alert_rules: Path | None = Field(None, description="A TOML file of spike rules.")
    score_configs: Path | None = Field(
        None,
        description="A TOML ([[score]] tables) or JSON file of score configs, stored by "
        "thumbline up at start as new versions where they changed.",
    )
    score_configs_seconds: float = Field(
        5.0, gt=0, le=3600, description="How often the join reads the score configs again."
    )
    alert_webhook_urls: SecretStr | None = Field(
        None, description="Comma-separated URLs that get each alert (Slack-compatible JSON)."
    )

    metrics_host: str = Field("127.0.0.1", description="Where /metrics is served.")
    metrics_port: int = Field(9464, ge=0, le=65535, description="0: any free port.")
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at /metrics.")

    gateway_enabled: bool = Field(True, description="thumbline up also runs the HTTP gateway.")
    gateway_host: str = Field(
        "127.0.0.1", description="Where the gateway listens; beyond loopback it needs API keys."
    )
    gateway_port: int = Field(8788, ge=0, le=65535, description="0: any free port.")
    gateway_max_body_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024, description="Larger bodies get 413."
    )
    gateway_rate_limit: float = Field(
        0.0, ge=0, description="Events per second per API key (429 beyond); 0: no limit."
    )
    gateway_cors_origins: str = Field(
        "", description="Comma-separated browser origins allowed to call the gateway."
    )
    gateway_ack_timeout_seconds: float = Field(
        10.0, gt=0, le=300,
        description="How long the gateway waits for Kafka's acknowledgement before it answers 503.",
    )  # fmt: skip
    gateway_key_cache_seconds: float = Field(
        1.0, ge=0, le=60,
        description="The gateway reads the key table at most this often (a revocation takes at "
        "most this long on a standalone gateway; at once in thumbline up).",
    )  # fmt: skip

    bootstrap_admin_key: SecretStr | None = Field(
        None,
        description="An admin key (tl_<16 hex>_<32-100 characters>) that thumbline gateway and "
        "thumbline up store at start unless its key id is already in the table (a revocation "
        "stands): a deployment's first key, from a secret. Only its SHA-256 is stored.",
    )
    gateway_max_keys: int = Field(
        100_000, ge=1, le=10_000_000,
        description="Active API keys the gateway holds in memory, the newest; older ones are "
        "refused (counted in thumbline_bound_hits_total{structure=\"api_keys\"}).",
    )  # fmt: skip

    broker_port: int = Field(0, ge=0, le=65535, description="Embedded broker port; 0: any free.")
    broker_storage: Literal["durable", "memory"] = Field(
        "durable",
        description="The embedded broker's storage. durable: on a local SeaweedFS under data_dir "
        "(acknowledged events survive a crash); memory: lost when it stops (demos, benchmarks).",
    )
    broker_start_timeout_seconds: float = Field(
        60.0, gt=0, le=3600,
        description="How long thumbline up waits for the durable broker's storage to start.",
    )  # fmt: skip
    sql_host: str = Field(
        "127.0.0.1", description="Where the store owner serves SQL: a loopback address only."
    )
    sql_max_seconds: float = Field(
        30.0, gt=0, le=3600, description="Longest a query of the SQL sandbox runs (then 400)."
    )
    sql_max_result_rows: int = Field(
        1_000_000, ge=1, description="Most rows a query of the SQL sandbox returns."
    )
    sql_max_result_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Most bytes a query of the SQL sandbox returns."
    )
    sql_max_memory_bytes: int = Field(
        2 * 1024**3, ge=16 * 1024 * 1024,
        description="Most memory one query of the SQL sandbox may use.",
    )  # fmt: skip
    gateway_sql_workers: int = Field(
        2, ge=1, le=32,
        description="Threads (each with its store client) for POST /v1/sql; the inbox and trace "
        "reads have as many of their own, so a slow query never delays them.",
    )  # fmt: skip
    sql_port: int = Field(0, ge=0, le=65535, description="0: any free port.")
    sql_idle_seconds: float = Field(
        30.0, gt=0, le=3600,
        description="The SQL port closes a connection that sends no request for this long, or "
        "whose request head is not whole within it, or whose body stalls this long.",
    )  # fmt: skip
    sql_max_connections: int = Field(
        64, ge=4, le=4096,
        description="Connections the SQL port holds at once (one thread each); one more is "
        "answered 503 and closed.",
    )  # fmt: skip
    sql_writer_password: SecretStr | None = Field(
        None,
        description="The password of the store endpoint's writer user `thumbline` (ClickHouse's "
        "HTTP interface on the SQL port); unset: a new random one at each start, in run.json.",
    )
    sql_reader_password: SecretStr | None = Field(
        None,
        description="The password of the store endpoint's reader user `thumbline_reader` (the "
        "SQL sandbox); unset: a new random one at each start, in run.json.",
    )
    start_wait_seconds: float = Field(
        30.0, ge=0, le=3600,
        description="How long a command waits for a thumbline up that is starting.",
    )  # fmt: skip

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="DEBUG, INFO, WARNING or ERROR."
    )
    log_format: Literal["text", "json"] = Field("text", description="text or json (a line each).")

    fault_dir: Path | None = Field(
        None,
        description="Testing only: a folder of fault switches (README, Faults): while "
        "`store-down` exists in it, every store call of the process fails as a ClickHouse "
        "that does not answer would; `crash-join-<pid>` makes that process's join raise once.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("broker_storage", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        servers = [s.strip() for s in value.split(",") if s.strip()]
        for server in servers:
            if not _HOST_PORT.match(server):
                raise ValueError(f"{server!r} is not host:port (e.g. kafka:9092)")
        return ",".join(servers)

    @field_validator("clickhouse_url")
    @classmethod
    def _clickhouse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        scheme = urlsplit(url).scheme
        if scheme not in ("chdb", "http", "https"):
            raise ValueError(
                "must start with chdb:///path (embedded) or http(s)://host:8123 (a server)"
            )
        if scheme == "chdb" and not url.startswith("chdb:///"):
            raise ValueError("a chDB URL needs an absolute path: chdb:///var/lib/thumbline")
        return SecretStr(url)

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _bootstrap_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        key = value.get_secret_value().strip()
        if not _BOOTSTRAP_KEY.match(key) or _guessable(key.split("_", 2)[2]):
            raise ValueError(
                "must read tl_<16 lower-case hex>_<32 to 100 of A-Z a-z 0-9 _ ->, the secret "
                "random (not a repeated character or pattern); make one with "
                "python3 -c 'import secrets; "
                'print(f"tl_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}")\''
            )
        return SecretStr(value.get_secret_value().strip())

    @field_validator("sql_host")
    @classmethod
    def _endpoint_on_loopback(cls, value: str) -> str:
        # plain HTTP: its token and passwords would cross the network in clear
        host = value.strip()
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                "the store endpoint speaks plain HTTP, so it listens on loopback only "
                "(127.0.0.1, ::1 or localhost); workers on other machines use a ClickHouse "
                "server instead (README: Running in production)"
            )
        return host

    @field_validator("sql_writer_password", "sql_reader_password")
    @classmethod
    def _endpoint_password(cls, value: SecretStr | None) -> SecretStr | None:
        # the endpoint takes guesses as fast as they come, from any user of the machine
        if value is None or not value.get_secret_value():
            return None
        password = value.get_secret_value()
        if len(password) < 16 or len(set(password)) < 8:
            raise ValueError(
                "must be at least 16 characters, 8 of them different; unset, a random one is "
                "made at each start; make one with python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(24))'"
            )
        return value

    @field_validator("clickhouse_reader_url")
    @classmethod
    def _reader(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("must be http(s)://user:pass@host:8123 (a ClickHouse server user)")
        return SecretStr(url)

    @model_validator(mode="after")
    def _reader_needs_a_server(self) -> Settings:
        if self.clickhouse_reader_url is not None and self.store_is_chdb:
            raise ValueError(
                "clickhouse_reader_url: a reader user needs a ClickHouse server: set "
                "THUMBLINE_CLICKHOUSE_URL=http(s)://... too, or unset it for chDB"
            )
        return self

    @model_validator(mode="after")
    def _cluster_needs_a_server(self) -> Settings:
        if self.clickhouse_cluster is not None and self.store_is_chdb:
            raise ValueError(
                "clickhouse_cluster: a cluster needs ClickHouse servers: set "
                "THUMBLINE_CLICKHOUSE_URL=http(s)://... to one of them, or unset the cluster"
            )
        return self

    @model_validator(mode="after")
    def _windows(self) -> Settings:
        for size in self.sliding_windows:
            if size % self.rate_window_seconds:
                raise ValueError(
                    f"rate_sliding_seconds: {size} is not a multiple of "
                    f"THUMBLINE_RATE_WINDOW_SECONDS ({self.rate_window_seconds})"
                )
        for url in self.webhook_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError("alert_webhook_urls: each URL needs http:// or https://")
        return self

    @field_validator("rates_annotators")
    @classmethod
    def _annotators(cls, value: str) -> str:
        names = [x.strip() for x in value.split(",") if x.strip()]
        known = [a.value for a in Annotator]
        unknown = [x for x in names if x not in known]
        if unknown or not names:
            raise ValueError(
                f"takes one or more of {', '.join(known)}, comma-separated (e.g. "
                f"end_user,reviewer); {unknown[0] + ' is not one' if unknown else 'it is empty'}"
            )
        return ",".join(dict.fromkeys(names))

    @model_validator(mode="after")
    def _workers(self) -> Settings:
        if self.stream_workers > self.partitions:
            raise ValueError(
                f"stream_workers: {self.stream_workers} workers for {self.partitions} partitions "
                "would leave some idle; use at most THUMBLINE_PARTITIONS"
            )
        if self.otlp_topic and not self.key_by_trace and "otlp_topic" in self.model_fields_set:
            raise ValueError(
                "otlp_topic: OpenTelemetry spans on Kafka are read by key_by_trace, which is off; "
                "set THUMBLINE_KEY_BY_TRACE=true or THUMBLINE_OTLP_TOPIC= (empty)"
            )
        if self.key_by_trace_process and not self.key_by_trace:
            raise ValueError(
                "key_by_trace_process: key_by_trace is off; set THUMBLINE_KEY_BY_TRACE=true "
                "or drop THUMBLINE_KEY_BY_TRACE_PROCESS"
            )
        return self

    def to_json(self) -> bytes:
        """Every setting, secrets included, for a child process (send it over a pipe only)."""
        values = {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name, value in self
        }
        return orjson.dumps(values, default=str)

    @model_validator(mode="after")
    def _sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL"):
            if not (self.kafka_sasl_mechanism and self.kafka_sasl_username):
                raise ValueError(
                    "kafka_sasl_mechanism: SASL needs THUMBLINE_KAFKA_SASL_MECHANISM, "
                    "THUMBLINE_KAFKA_SASL_USERNAME and THUMBLINE_KAFKA_SASL_PASSWORD"
                )
            if self.kafka_sasl_password is None:
                raise ValueError("kafka_sasl_password: SASL needs THUMBLINE_KAFKA_SASL_PASSWORD")
        return self

    # Derived values -------------------------------------------------------

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def broker_dir(self) -> Path:
        """Where the durable embedded broker keeps its data (SeaweedFS's files, credentials)."""
        return self.data_dir / "broker"

    @property
    def store_url(self) -> str:
        """The ClickHouse URL, secrets included: never log it (see :attr:`store_display`)."""
        if self.clickhouse_url is not None:
            return self.clickhouse_url.get_secret_value()
        return f"chdb://{(self.data_dir / 'chdb').resolve()}"

    @property
    def retention_days(self) -> dict[str, int]:
        """Days each table keeps its rows, by table; 0: forever."""
        return {
            "feedback": self.retention_feedback_days,
            "traces": self.retention_traces_days,
            "dead_letters": self.retention_dead_letters_days,
            "feedback_rates": self.retention_rates_days,
        }

    @property
    def store_is_chdb(self) -> bool:
        return self.store_url.startswith("chdb://")

    @property
    def store_display(self) -> str:
        """The ClickHouse URL with any password masked, fit for logs and output."""
        parts = urlsplit(self.store_url)
        if parts.password:
            netloc = f"{parts.username}:***@{parts.hostname}" + (
                f":{parts.port}" if parts.port else ""
            )
            return urlunsplit(parts._replace(netloc=netloc))
        return self.store_url

    @property
    def reader_url(self) -> str | None:
        """The reader user's URL, secrets included: never log it."""
        if self.clickhouse_reader_url is None:
            return None
        return self.clickhouse_reader_url.get_secret_value()

    def mask(self, text: str) -> str:
        """``text`` with the store's and the reader's URLs replaced by their masked forms."""
        text = text.replace(self.store_url, self.store_display)
        if self.reader_url:
            parts = urlsplit(self.reader_url)
            text = text.replace(self.reader_url, f"{parts.scheme}://{parts.username}:***@...")
        for url in (self.store_url, self.reader_url):
            password = urlsplit(url).password if url else None
            if password:
                text = text.replace(password, "***")
        return text

    @property
    def sliding_windows(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.rate_sliding_seconds.split(",") if x.strip())

    @property
    def counted_annotators(self) -> tuple[str, ...]:
        """Whose feedback the rates count (THUMBLINE_RATES_ANNOTATORS)."""
        return tuple(self.rates_annotators.split(","))

    @property
    def webhook_urls(self) -> tuple[str, ...]:
        if self.alert_webhook_urls is None:
            return ()
        urls = self.alert_webhook_urls.get_secret_value().split(",")
        return tuple(u.strip() for u in urls if u.strip())

    @property
    def cors_origins(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.gateway_cors_origins.split(",") if o.strip())

    @property
    def time_bounds(self) -> TimeBounds:
        """How far an event's time may lie from its reception."""
        return TimeBounds(
            max_age=self.ingest_max_age_seconds, max_future=self.ingest_max_future_seconds
        )

    @property
    def run_file(self) -> Path:
        return self.data_dir / "run.json"

    def kafka_kwargs(self) -> dict[str, Any]:
        """Security options for every aiokafka client (producer, consumer, admin)."""
        kwargs: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None,
                certfile=str(self.kafka_ssl_certfile) if self.kafka_ssl_certfile else None,
                keyfile=str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
            )
        if self.kafka_security_protocol.startswith("SASL"):
            assert self.kafka_sasl_password is not None  # checked by _sasl  # noqa: S101
            kwargs.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password.get_secret_value(),
            )
        return kwargs


#: Settings whose value is never shown in an error.
_SECRETS = frozenset(
    name for name, info in Settings.model_fields.items() if "SecretStr" in str(info.annotation)
)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment, with ``overrides`` on top.

    Raises:
        ConfigError: naming each bad variable and what it accepts.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            message = err["msg"].removeprefix("Value error, ")
            field = str(err["loc"][0]) if err["loc"] else ""
            if not field and ": " in message:
                field, message = message.split(": ", 1)
            secret = field in _SECRETS or "password" in field or "url" in field
            shown = "" if secret else f" (got {err['input']!r})"
            if err["type"] == "model_type" or isinstance(err.get("input"), dict):
                shown = ""
            lines.append(f"{ENV_PREFIX}{field.upper()}: {message}{shown}")
        raise ConfigError("bad settings:\n  " + "\n  ".join(lines)) from None
