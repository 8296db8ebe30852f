-- Views for the questions analysts ask first. Each reads one row per event
-- (FINAL) and leaves retracted feedback out. {db} is the database.

-- The weekly quality review: bad feedback with a comment, last 7 days, newest first.
CREATE VIEW IF NOT EXISTS {db}.weekly_quality_review AS
SELECT ts, trace_id, project, environment, model, capability, user_id, comment, category, event_id
FROM {db}.feedback FINAL
WHERE label = 'bad' AND comment != '' AND ts >= now() - INTERVAL 7 DAY
ORDER BY ts DESC
LIMIT 20;

-- Users with repeated bad feedback in the last 30 days (outreach, churn risk).
CREATE VIEW IF NOT EXISTS {db}.users_repeated_bad AS
SELECT user_id, count() AS bad, uniqExact(trace_id) AS traces, max(ts) AS last_bad,
       groupArray(5)(comment) AS comments
FROM {db}.feedback FINAL
WHERE label = 'bad' AND user_id != '' AND ts >= now() - INTERVAL 30 DAY
GROUP BY user_id
HAVING bad >= 3
ORDER BY bad DESC;

-- Thumbs up against thumbs down per capability.
CREATE VIEW IF NOT EXISTS {db}.thumbs_by_capability AS
SELECT capability, countIf(label = 'good') AS up, countIf(label = 'bad') AS down,
       round(countIf(label = 'bad') / count(), 4) AS down_rate
FROM {db}.feedback FINAL
WHERE kind = 'thumb'
GROUP BY capability
ORDER BY down_rate DESC;

-- Average normalised score per trace and score name (several raters per trace).
CREATE VIEW IF NOT EXISTS {db}.scores_by_trace AS
SELECT trace_id, name, count() AS raters, round(avg(score), 4) AS mean_score,
       min(score) AS min_score, max(score) AS max_score
FROM {db}.feedback FINAL
WHERE score IS NOT NULL
GROUP BY trace_id, name;

-- Bad-feedback rate per model and hour.
CREATE VIEW IF NOT EXISTS {db}.bad_rate_by_model_hourly AS
SELECT toStartOfHour(ts) AS hour, project, model, count() AS feedback,
       countIf(label = 'bad') AS bad, round(countIf(label = 'bad') / count(), 4) AS bad_rate
FROM {db}.feedback FINAL
WHERE source = 'explicit'
GROUP BY hour, project, model
ORDER BY hour DESC, bad_rate DESC;

-- Implicit signals (copied, regenerated...) per model.
CREATE VIEW IF NOT EXISTS {db}.implicit_signals_by_model AS
SELECT project, model, name AS signal, count() AS events, uniqExact(user_id) AS users
FROM {db}.feedback FINAL
WHERE source = 'implicit'
GROUP BY project, model, signal
ORDER BY events DESC;
