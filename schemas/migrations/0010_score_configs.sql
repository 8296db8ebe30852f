-- Score configs: what the values of a feedback name mean (thumbline/score_configs.py,
-- schemas/score_configs.py). Every version of a config stays a row: the key holds
-- the version, so a change or a deletion (a row with deleted = 1) adds a row and
-- the rows stored under an earlier version can still be explained.
CREATE TABLE IF NOT EXISTS {db}.score_configs
(
    project    String COMMENT 'the project the config belongs to',
    name       String COMMENT 'the feedback name it defines',
    version    UInt64 COMMENT '1, 2, ... per (project, name); the newest row is the config',
    definition String COMMENT 'the config as JSON: kind, range, thresholds, categories...',
    created_at DateTime64(3, 'UTC'),
    deleted    UInt8 DEFAULT 0 COMMENT '1: the name has no config from this version on'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project, name, version);

-- The config version that decided a row's label and score; 0: derived without one.
ALTER TABLE {db}.feedback ADD COLUMN IF NOT EXISTS score_config_version UInt64 DEFAULT 0 COMMENT 'the score config version that decided label and score; 0: none' AFTER retracted;

-- A view keeps the columns it was created with: made again to show score_config_version.
CREATE OR REPLACE VIEW {db}.feedback_latest AS SELECT * FROM {db}.feedback FINAL;
