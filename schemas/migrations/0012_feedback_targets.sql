-- Feedback on more than a trace, and one vote per person (issue 16).
--
-- target: what the feedback is about: 'trace' (trace_id), 'conversation'
-- (conversation_id, trace_id empty) or 'session' (session_id, trace_id empty).
-- Rows stored before this version are about a trace, which is what the default says.
ALTER TABLE {db}.feedback ADD COLUMN IF NOT EXISTS target LowCardinality(String) DEFAULT 'trace' COMMENT 'what the feedback is about: trace, conversation or session' AFTER trace_id;

-- With one vote per person, event_id is the vote's id (project, target, name, user_id)
-- and the id the client sent is kept here; empty otherwise.
ALTER TABLE {db}.feedback ADD COLUMN IF NOT EXISTS client_event_id String DEFAULT '' COMMENT 'the event_id the client sent, when event_id is a one-vote-per-person id' AFTER event_id;

ALTER TABLE {db}.feedback ADD INDEX IF NOT EXISTS ix_conversation conversation_id TYPE bloom_filter(0.01) GRANULARITY 4;

-- The join finds the latest trace of a conversation or session (the dimensions its
-- feedback inherits) by these columns, within a project.
ALTER TABLE {db}.traces ADD INDEX IF NOT EXISTS ix_conversation conversation_id TYPE bloom_filter(0.01) GRANULARITY 4;

ALTER TABLE {db}.traces ADD INDEX IF NOT EXISTS ix_session session_id TYPE bloom_filter(0.01) GRANULARITY 4;

-- A view keeps the columns it was created with: this one is made again to show them.
CREATE OR REPLACE VIEW {db}.feedback_latest AS SELECT * FROM {db}.feedback FINAL;
