-- Monthly partitions for feedback (issue 18): a part holds one month of event time
-- (ts), so a read of recent feedback (the inbox's newest rows, a rates window, a
-- restart's replay) skips the parts of older months, and a retention drops whole
-- parts instead of rewriting them. ClickHouse cannot add a partition key to a table:
-- this creates the new table, and the migration runner (thumbline/store.py,
-- REKEYED) copies the latest rows, checks the counts, swaps (EXCHANGE TABLES) and
-- drops the old one, as 0005 did. Safe to run again after a crash at any step.
--
-- The event time is not the same in every version of an event: a person's changed
-- vote has the time of the later click, and a client may send an event id again with
-- another time. So two versions of one event can sit in two months' parts. Reads stay
-- exact because none of them deduplicates within a partition only: FINAL merges
-- across partitions (never set do_not_merge_across_partitions_select_final), and the
-- reads without FINAL (thumbline/inbox.py, stream_jobs/rates_store.py) find an
-- event's newest version by its identity over every partition. Merges never join two
-- partitions, so such an older version stays stored beside the newer one.
CREATE TABLE IF NOT EXISTS {db}.feedback__rekeyed
(
    event_id String,
    client_event_id String DEFAULT '' COMMENT 'the event_id the client sent, when event_id is a one-vote-per-person id',
    trace_id String,
    target LowCardinality(String) DEFAULT 'trace' COMMENT 'what the feedback is about: trace, conversation or session',
    span_id String,
    name LowCardinality(String),
    kind LowCardinality(String),
    value String COMMENT 'the value as text: up, 4.0, true, a text; empty for none',
    score Nullable(Float64) COMMENT 'normalised to [0, 1] where one makes sense',
    label LowCardinality(String),
    comment String,
    correction String,
    category LowCardinality(String),
    tags Array(LowCardinality(String)),
    source LowCardinality(String),
    annotator LowCardinality(String) DEFAULT 'end_user' COMMENT 'who gave it: end_user, reviewer, evaluator (an LLM judge) or code',
    user_id String,
    session_id String,
    conversation_id String,
    project LowCardinality(String),
    environment LowCardinality(String),
    model LowCardinality(String),
    capability LowCardinality(String),
    step LowCardinality(String),
    trace_name String,
    trace_status LowCardinality(String),
    latency_ms Nullable(Float64),
    total_tokens Nullable(UInt64),
    cost_usd Nullable(Float64),
    metadata String COMMENT 'JSON text ({} when empty): read with JSONExtract*',
    ts DateTime64(3, 'UTC') COMMENT 'event time',
    received_at DateTime64(3, 'UTC'),
    join_status LowCardinality(String) COMMENT 'pending (waiting for its trace), joined, orphan or corrected',
    retracted UInt8,
    score_config_version UInt64 DEFAULT 0 COMMENT 'the score config version that decided label and score; 0: none',
    version UInt64,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX ix_ts ts TYPE minmax GRANULARITY 1,
    INDEX ix_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX ix_user user_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX ix_session session_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX ix_label label TYPE set(256) GRANULARITY 4,
    INDEX ix_event event_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX ix_conversation conversation_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(version, retracted)
PARTITION BY toYYYYMM(ts)
ORDER BY (project, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
