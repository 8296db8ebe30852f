-- The question and the answer of a trace (issue 15): the prompt or the user's last
-- message, and the answer, each at most 16,000 characters (schemas/_base.py,
-- MAX_CONTENT_CHARS; longer text arrives cut, ending with the marker
-- '… [truncated by thumbline: N characters]'). Empty when the trace did not say,
-- for rows stored before this version, and everywhere with
-- THUMBLINE_CAPTURE_CONTENT=false. The join never holds them in memory: only
-- these rows do. No codec: the table's other columns use the default (LZ4) too.
ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS input String COMMENT 'the question: the prompt or the user''s last message (at most 16,000 characters)' AFTER attributes;
ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS output String COMMENT 'the answer (at most 16,000 characters)' AFTER input;

-- A view's * is expanded when it is created: make it again to show the new columns.
CREATE OR REPLACE VIEW {db}.traces_latest AS SELECT * FROM {db}.traces FINAL;
