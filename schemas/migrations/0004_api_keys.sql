-- API keys of the HTTP gateway. Only a hash of each key's secret is stored;
-- a key is revoked by a newer version of its row with revoked = 1.
CREATE TABLE IF NOT EXISTS {db}.api_keys
(
    key_id     String COMMENT 'the public part of the key: tl_<key_id>_<secret>',
    secret_sha256 String COMMENT 'hex SHA-256 of the secret part',
    scope      LowCardinality(String) COMMENT 'ingest (write-only), read or admin',
    project    String COMMENT 'the one project the key may write and read; empty: all (admin)',
    name       String COMMENT 'what the key is for',
    created_at DateTime64(3, 'UTC'),
    revoked    UInt8 DEFAULT 0,
    revoked_at Nullable(DateTime64(3, 'UTC')),
    version    UInt64 COMMENT 'milliseconds: the newest row of a key wins'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_id;
