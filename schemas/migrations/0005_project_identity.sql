-- Tenant isolation: the project is part of every identity. ClickHouse cannot
-- change a table's ORDER BY, so the feedback and traces tables are rebuilt:
-- these statements create the new tables, and the migration runner
-- (thumbline/store.py, REKEYED) then copies each old table's latest rows into
-- its new one, checks the counts, swaps the two (EXCHANGE TABLES, atomic) and
-- drops the old one. Every step is safe to run again after a crash.
--
-- Rows of feedback stored without a project (orphans before this version)
-- move to the project 'default', where feedback without a project now goes.

-- feedback: one row per (project, event_id).
CREATE TABLE IF NOT EXISTS {db}.feedback__rekeyed
(
    event_id        String,
    trace_id        String,
    span_id         String,
    name            LowCardinality(String),
    kind            LowCardinality(String),
    value           String COMMENT 'the value as text: up, 4.0, true, a text; empty for none',
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
    metadata        String COMMENT 'JSON text ({} when empty): read with JSONExtract*',
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
    INDEX ix_event event_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(version, retracted)
ORDER BY (project, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- traces: one row per (project, trace_id, span_id).
CREATE TABLE IF NOT EXISTS {db}.traces__rekeyed
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
    INDEX ix_start start_time TYPE minmax GRANULARITY 1,
    INDEX ix_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project, trace_id, span_id)
SETTINGS non_replicated_deduplication_window = 1000;
