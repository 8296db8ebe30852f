-- Who gave the feedback: end_user (the person who got the answer), reviewer,
-- evaluator (an LLM judge) or code. Rows stored before this version came from
-- end users, which is what the default says.
--
-- The rates and alerts count end-user feedback only (stream_jobs/bad_feedback_rates.py,
-- stream_jobs/rates_store.py), and so do the views below that count what users
-- said: a bad rate, thumbs up against down, users with repeated bad feedback (an
-- evaluator's row inherits the trace's user_id: counting it would blame the
-- user for a judge's verdict). The quality review, scores per trace (per score
-- name: a judge's scores have their own names) and implicit signals list every
-- annotator's rows.
ALTER TABLE {db}.feedback ADD COLUMN IF NOT EXISTS annotator LowCardinality(String) DEFAULT 'end_user' COMMENT 'who gave it: end_user, reviewer, evaluator (an LLM judge) or code' AFTER source;

-- A view keeps the columns it was created with: this one is made again to show annotator.
CREATE OR REPLACE VIEW {db}.feedback_latest AS SELECT * FROM {db}.feedback FINAL;

CREATE OR REPLACE VIEW {db}.users_repeated_bad AS
SELECT user_id, count() AS bad, uniqExact(trace_id) AS traces, max(ts) AS last_bad,
       groupArray(5)(comment) AS comments
FROM {db}.feedback FINAL
WHERE label = 'bad' AND user_id != '' AND ts >= now() - INTERVAL 30 DAY AND join_status != 'pending'
  AND annotator = 'end_user'
GROUP BY user_id
HAVING bad >= 3
ORDER BY bad DESC;

CREATE OR REPLACE VIEW {db}.thumbs_by_capability AS
SELECT capability, countIf(label = 'good') AS up, countIf(label = 'bad') AS down,
       round(countIf(label = 'bad') / count(), 4) AS down_rate
FROM {db}.feedback FINAL
WHERE kind = 'thumb' AND join_status != 'pending' AND annotator = 'end_user'
GROUP BY capability
ORDER BY down_rate DESC;

CREATE OR REPLACE VIEW {db}.bad_rate_by_model_hourly AS
SELECT toStartOfHour(ts) AS hour, project, model, count() AS feedback,
       countIf(label = 'bad') AS bad, round(countIf(label = 'bad') / count(), 4) AS bad_rate
FROM {db}.feedback FINAL
WHERE source = 'explicit' AND join_status != 'pending' AND annotator = 'end_user'
GROUP BY hour, project, model
ORDER BY hour DESC, bad_rate DESC;
