-- Thumbline's tables. {db} is the database (default: thumbline).
--
-- Every table is a ReplacingMergeTree keyed on the identity of what it stores,
-- never on event time or on fields the join may still fill in: a re-delivered
-- row collapses into the earlier one and a re-emitted row (higher version)
-- replaces it, whenever and wherever it is sent again. Query with FINAL (or the
-- *_latest views) to see one row per key.

-- Enriched feedback: one row per event_id. ORDER BY event_id alone keeps the
-- dedup key exact (an orphan row has no project yet; its corrected version does).
-- The inbox filters (time, project, label, user, session, trace) are served by
-- skipping indexes instead of the sort key.
CREATE TABLE IF NOT EXISTS {db}.feedback
(
    event_id        String,
    trace_id        String,
    span_id         String,
    name            LowCardinality(String),
    kind            LowCardinality(String),
    value           String COMMENT 'the value as JSON text: "up", 4, true, "text"; empty for none',
    score           Nullable(Float64) COMMENT 'normalised to [0, 1] where one makes sense',
    label           LowCardinality(String),
    comment         String,
    correction      String,
    category        LowCardinality(String),
    tags            Array(LowCardinality(String)),
    source          LowCardinality(String),
    user_id         String,
    session_id      String,
    conversation_id String,
    project         LowCardinality(String),
    environment     LowCardinality(String),
    model           LowCardinality(String),
    capability      LowCardinality(String),
    step            LowCardinality(String),
    trace_name      String,
    trace_status    LowCardinality(String),
    latency_ms      Nullable(Float64),
    total_tokens    Nullable(UInt64),
    cost_usd        Nullable(Float64),
    metadata        String COMMENT 'JSON text: read with JSONExtract*',
    ts              DateTime64(3, 'UTC') COMMENT 'event time',
    received_at     DateTime64(3, 'UTC'),
    join_status     LowCardinality(String) COMMENT 'joined, orphan or corrected',
    retracted       UInt8,
    version         UInt64,
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX ix_ts ts TYPE minmax GRANULARITY 1,
    INDEX ix_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX ix_user user_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX ix_session session_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX ix_label label TYPE set(256) GRANULARITY 4,
    INDEX ix_project project TYPE set(1024) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(version, retracted)
ORDER BY event_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Traces: one row per span (span_id '' for a whole-trace event).
CREATE TABLE IF NOT EXISTS {db}.traces
(
    trace_id        String,
    span_id         String,
    parent_span_id  String,
    name            String,
    project         LowCardinality(String),
    environment     LowCardinality(String),
    model           LowCardinality(String),
    capability      LowCardinality(String),
    step            LowCardinality(String),
    user_id         String,
    session_id      String,
    conversation_id String,
    start_time      Nullable(DateTime64(3, 'UTC')),
    end_time        Nullable(DateTime64(3, 'UTC')),
    latency_ms      Nullable(Float64),
    input_tokens    Nullable(UInt64),
    output_tokens   Nullable(UInt64),
    total_tokens    Nullable(UInt64),
    cost_usd        Nullable(Float64),
    status          LowCardinality(String),
    error           String,
    attributes      String COMMENT 'JSON text: read with JSONExtract*',
    received_at     DateTime64(3, 'UTC'),
    version         UInt64,
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX ix_start start_time TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (trace_id, span_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Rate windows: one row per (dimensions, window size, window start).
CREATE TABLE IF NOT EXISTS {db}.feedback_rates
(
    project         LowCardinality(String),
    environment     LowCardinality(String),
    model           LowCardinality(String),
    capability      LowCardinality(String),
    window_seconds  UInt32,
    window_start    DateTime64(3, 'UTC'),
    window_end      DateTime64(3, 'UTC'),
    good            UInt64,
    bad             UInt64,
    neutral         UInt64,
    total           UInt64,
    with_comment    UInt64,
    implicit        UInt64,
    score_sum       Float64,
    score_count     UInt64,
    mean_score      Nullable(Float64),
    bad_rate        Float64,
    version         UInt64,
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project, environment, model, capability, window_seconds, window_start)
SETTINGS non_replicated_deduplication_window = 1000;

-- Alerts: one row per alert and state (firing, resolved).
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id         String,
    rule             LowCardinality(String),
    state            LowCardinality(String),
    project          LowCardinality(String),
    environment      LowCardinality(String),
    model            LowCardinality(String),
    capability       LowCardinality(String),
    window_seconds   UInt32,
    window_start     DateTime64(3, 'UTC'),
    window_end       DateTime64(3, 'UTC'),
    bad_rate         Float64,
    baseline_rate    Float64,
    bad              UInt64,
    total            UInt64,
    sample_trace_ids Array(String),
    sample_comments  Array(String),
    inbox_command    String,
    at               DateTime64(3, 'UTC'),
    version          UInt64,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (alert_id, state)
SETTINGS non_replicated_deduplication_window = 1000;

-- Dead letters: one row per offending message (or batch item), keyed by where it was read.
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    topic           LowCardinality(String),
    partition       Int32,
    offset          Int64,
    batch_index     Int32 COMMENT 'position in a batch message; -1 for the whole message',
    reason          LowCardinality(String),
    error           String,
    raw             String,
    key             String,
    at              DateTime64(3, 'UTC'),
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset, batch_index)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per key, as analysts want to read them.
CREATE VIEW IF NOT EXISTS {db}.feedback_latest AS SELECT * FROM {db}.feedback FINAL;
CREATE VIEW IF NOT EXISTS {db}.traces_latest AS SELECT * FROM {db}.traces FINAL;
