-- Who gave the feedback, from the key that sent it: an ingest key made with
-- `thumbline keys create --annotator evaluator` writes evaluator feedback; the
-- default '' is an end users' key (a browser's), which cannot write anyone else's.
ALTER TABLE {db}.api_keys ADD COLUMN IF NOT EXISTS annotator LowCardinality(String) DEFAULT '' COMMENT 'who the feedback of this key comes from: empty for end users, else reviewer, evaluator or code' AFTER project;

-- An LLM judge against the end users, per trace and judge (the evaluator
-- feedback's name): one row per (project, trace, judge) that has both the
-- judge's verdict and an end user's good or bad label. Each side is its
-- newest row (by ts, then event_id). The judge's verdict is its label when
-- that is good or bad, else its score (at least 0.5: good); a row with
-- neither is left out. The user's label is the newest explicit good or bad
-- of any end user on the trace. Retracted rows, feedback still waiting for
-- its trace and feedback about no trace (a whole conversation) are left out.
CREATE OR REPLACE VIEW {db}.evaluator_agreement_pairs AS
SELECT project, trace_id, judge.name AS evaluator, judge.j_model AS model,
       judge.j_capability AS capability, judge.verdict AS judge_label,
       judge.j_score AS judge_score, user.u_label AS user_label, judge.j_ts AS judged_at,
       user.u_ts AS user_at, greatest(judge.j_ts, user.u_ts) AS ts,
       judge.verdict = user.u_label AS agree
FROM (
    SELECT project, trace_id, name,
           argMax((label, score, model, capability), (ts, event_id)) AS newest,
           tupleElement(newest, 1) AS j_label, tupleElement(newest, 2) AS j_score,
           tupleElement(newest, 3) AS j_model, tupleElement(newest, 4) AS j_capability,
           multiIf(j_label IN ('good', 'bad'), j_label, j_score IS NULL, '',
                   j_score >= 0.5, 'good', 'bad') AS verdict,
           max(ts) AS j_ts
    FROM {db}.feedback FINAL
    WHERE annotator = 'evaluator' AND retracted = 0 AND join_status != 'pending'
      AND trace_id != ''
    GROUP BY project, trace_id, name
) AS judge
INNER JOIN (
    SELECT project, trace_id, argMax(label, (ts, event_id)) AS u_label, max(ts) AS u_ts
    FROM {db}.feedback FINAL
    WHERE annotator = 'end_user' AND retracted = 0 AND join_status != 'pending'
      AND source = 'explicit' AND label IN ('good', 'bad') AND trace_id != ''
    GROUP BY project, trace_id
) AS user USING (project, trace_id)
WHERE judge.verdict != '';

-- Agreement per project, model, capability and judge: how many traces both
-- rated, the share where they agree, and each direction of disagreement.
-- The traces where they disagree, newest first:
--   SELECT * FROM evaluator_agreement_pairs WHERE NOT agree ORDER BY ts DESC
-- (or `thumbline agreement --disagreements`).
CREATE OR REPLACE VIEW {db}.evaluator_agreement AS
SELECT project, model, capability, evaluator, count() AS targets, countIf(agree) AS agreed,
       round(agreed / targets, 4) AS agreement,
       countIf(judge_label = 'good' AND user_label = 'bad') AS judge_good_user_bad,
       countIf(judge_label = 'bad' AND user_label = 'good') AS judge_bad_user_good,
       max(ts) AS last_at
FROM {db}.evaluator_agreement_pairs
GROUP BY project, model, capability, evaluator
ORDER BY project, agreement, targets DESC;
