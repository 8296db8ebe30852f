-- Monthly partitions for traces, dead letters, rate windows and alerts (issue 18), as
-- 0013 did for feedback: a part holds one month, so a read of recent rows skips older
-- months' parts, and a retention (THUMBLINE_RETENTION_*_DAYS, the TTL that every start
-- sets from thumbline/store.py RETENTION_COLUMNS) drops whole parts. Each table is
-- rebuilt the same way: the new table is created here, and the migration runner
-- (thumbline/store.py, REKEYED) copies the latest rows, checks the counts, swaps
-- (EXCHANGE TABLES) and drops the old one. Safe to run again after a crash at any step.
--
-- Each table is partitioned by the month of the column its retention counts from, so
-- ttl_only_drop_parts can drop a month's part when its newest row expires instead of
-- rewriting parts row by row; rows live until their month's last row expires, at most
-- a month beyond the setting. Whether every version of a row shares one partition
-- decides what reads may do (see each table):
--
-- traces: the month of received_at. Not part of a span's identity (project, trace_id,
-- span_id): a span sent again later is a newer version (version follows received_at)
-- and can sit in a later month than the one it replaces. Reads keep merging across
-- partitions (FINAL's default). The retention drops the older month first, so it never
-- leaves an older version in place of a newer one.
--
-- dead_letters: the month of at, when it was dead-lettered. A replay dead-letters the
-- same message (topic, partition, offset, batch_index) again with a later at, so two
-- copies can sit in two months; reads merge across partitions.
--
-- feedback_rates: the month of window_start, which is part of the identity (the sort
-- key): every version of a window is in one partition, so FINAL need not merge across
-- partitions here, and ClickHouse skips that merge on its own (the partition key's
-- columns are in the primary key: enable_automatic_decision_for_merging_across_
-- partitions_for_final, on by default). No read sets
-- do_not_merge_across_partitions_select_final: it adds nothing here and is wrong on
-- the other tables.
--
-- alerts: the month of at, when the state changed. Every stored version of one state
-- change (published 0, then 1) has the same at, but a state the detector emits twice
-- (two workers during a hand-over) has two, so reads merge across partitions. No
-- retention setting counts alerts: they are few, and an alert's history is kept.
CREATE TABLE IF NOT EXISTS {db}.traces__rekeyed
(
    trace_id String,
    span_id String,
    parent_span_id String,
    name String,
    project LowCardinality(String),
    environment LowCardinality(String),
    model LowCardinality(String),
    capability LowCardinality(String),
    step LowCardinality(String),
    user_id String,
    session_id String,
    conversation_id String,
    start_time Nullable(DateTime64(3, 'UTC')),
    end_time Nullable(DateTime64(3, 'UTC')),
    latency_ms Nullable(Float64),
    input_tokens Nullable(UInt64),
    output_tokens Nullable(UInt64),
    total_tokens Nullable(UInt64),
    cost_usd Nullable(Float64),
    status LowCardinality(String),
    error String,
    attributes String COMMENT 'JSON text: read with JSONExtract*',
    input String COMMENT 'the question: the prompt or the user''s last message (at most 16,000 characters)',
    output String COMMENT 'the answer (at most 16,000 characters)',
    received_at DateTime64(3, 'UTC'),
    version UInt64,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX ix_start start_time TYPE minmax GRANULARITY 1,
    INDEX ix_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX ix_conversation conversation_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX ix_session session_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(received_at)
ORDER BY (project, trace_id, span_id)
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.dead_letters__rekeyed
(
    topic LowCardinality(String),
    partition Int32,
    offset Int64,
    batch_index Int32 COMMENT 'position in a batch message; -1 for the whole message',
    reason LowCardinality(String),
    error String,
    raw String,
    key String,
    at DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (topic, partition, offset, batch_index)
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.feedback_rates__rekeyed
(
    project LowCardinality(String),
    environment LowCardinality(String),
    model LowCardinality(String),
    capability LowCardinality(String),
    window_seconds UInt32,
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    good UInt64,
    bad UInt64,
    neutral UInt64,
    total UInt64,
    with_comment UInt64,
    implicit UInt64,
    score_sum Float64,
    score_count UInt64,
    mean_score Nullable(Float64),
    bad_rate Float64,
    version UInt64,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (project, environment, model, capability, window_seconds, window_start)
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.alerts__rekeyed
(
    alert_id String,
    rule LowCardinality(String),
    state LowCardinality(String),
    project LowCardinality(String),
    environment LowCardinality(String),
    model LowCardinality(String),
    capability LowCardinality(String),
    window_seconds UInt32,
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    bad_rate Float64,
    baseline_rate Float64,
    bad UInt64,
    total UInt64,
    sample_trace_ids Array(String),
    sample_comments Array(String),
    inbox_command String,
    at DateTime64(3, 'UTC'),
    version UInt64,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    published UInt8 DEFAULT 1 COMMENT '0: stored, not yet sent to Kafka and the webhooks'
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(at)
ORDER BY (alert_id, state)
SETTINGS non_replicated_deduplication_window = 1000;

-- feedback is partitioned by the month of ts, its retention's column (0013): its
-- retention drops whole parts too.
ALTER TABLE {db}.feedback MODIFY SETTING ttl_only_drop_parts = 1;
