-- The alerts table is also the outbox of alert notifications: a state change is
-- stored with published = 0 before it goes to Kafka and the webhooks, and again
-- with published = 1 (a higher version) once Kafka has it. At start the rates
-- job publishes what is stored and unpublished, so a crash between storing and
-- sending cannot lose a firing alert. Rows from before are taken as published.
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS published UInt8 DEFAULT 1 COMMENT '0: stored, not yet sent to Kafka and the webhooks';
