-- The stream writes rows as JSON lines that ClickHouse parses itself (see
-- stream_jobs/sink.py): the feedback value is stored as its text (up, 4.0, true,
-- the words of a text feedback), no longer JSON-quoted, and an empty metadata
-- or attributes object as {}.
ALTER TABLE {db}.feedback COMMENT COLUMN IF EXISTS value 'the value as text: up, 4.0, true, a text; empty for none';
ALTER TABLE {db}.feedback COMMENT COLUMN IF EXISTS metadata 'JSON text ({} when empty): read with JSONExtract*';
