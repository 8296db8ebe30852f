-- Feedback waiting for its trace is stored at once with join_status = 'pending'
-- (a version below the joined or orphan row that replaces it), so the inbox can
-- show it. The views count and list outcomes only, as they did before: a pending
-- row has no trace attributes yet (no model, no capability from its trace), so it
-- is left out until it is joined or becomes an orphan. feedback_latest keeps
-- showing the latest row of every event, pending ones included.
ALTER TABLE {db}.feedback COMMENT COLUMN IF EXISTS join_status 'pending (waiting for its trace), joined, orphan or corrected';

CREATE OR REPLACE VIEW {db}.weekly_quality_review AS
SELECT ts, trace_id, project, environment, model, capability, user_id, comment, category, event_id
FROM {db}.feedback FINAL
WHERE label = 'bad' AND comment != '' AND ts >= now() - INTERVAL 7 DAY AND join_status != 'pending'
ORDER BY ts DESC
LIMIT 20;

CREATE OR REPLACE VIEW {db}.users_repeated_bad AS
SELECT user_id, count() AS bad, uniqExact(trace_id) AS traces, max(ts) AS last_bad,
       groupArray(5)(comment) AS comments
FROM {db}.feedback FINAL
WHERE label = 'bad' AND user_id != '' AND ts >= now() - INTERVAL 30 DAY AND join_status != 'pending'
GROUP BY user_id
HAVING bad >= 3
ORDER BY bad DESC;

CREATE OR REPLACE VIEW {db}.thumbs_by_capability AS
SELECT capability, countIf(label = 'good') AS up, countIf(label = 'bad') AS down,
       round(countIf(label = 'bad') / count(), 4) AS down_rate
FROM {db}.feedback FINAL
WHERE kind = 'thumb' AND join_status != 'pending'
GROUP BY capability
ORDER BY down_rate DESC;

CREATE OR REPLACE VIEW {db}.scores_by_trace AS
SELECT trace_id, name, count() AS raters, round(avg(score), 4) AS mean_score,
       min(score) AS min_score, max(score) AS max_score
FROM {db}.feedback FINAL
WHERE score IS NOT NULL AND join_status != 'pending'
GROUP BY trace_id, name;

CREATE OR REPLACE VIEW {db}.bad_rate_by_model_hourly AS
SELECT toStartOfHour(ts) AS hour, project, model, count() AS feedback,
       countIf(label = 'bad') AS bad, round(countIf(label = 'bad') / count(), 4) AS bad_rate
FROM {db}.feedback FINAL
WHERE source = 'explicit' AND join_status != 'pending'
GROUP BY hour, project, model
ORDER BY hour DESC, bad_rate DESC;

CREATE OR REPLACE VIEW {db}.implicit_signals_by_model AS
SELECT project, model, name AS signal, count() AS events, uniqExact(user_id) AS users
FROM {db}.feedback FINAL
WHERE source = 'implicit' AND join_status != 'pending'
GROUP BY project, model, signal
ORDER BY events DESC;
