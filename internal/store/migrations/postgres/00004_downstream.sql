-- +goose Up
-- PostgreSQL's form of migrations/sqlite/00004_downstream.sql: the same columns, BIGINT for
-- SQLite's INTEGER, DOUBLE PRECISION for REAL, stored generated columns.
-- The downstream of each cycle: commands (cloud-to-device messages) sent
-- to the device, and whether it received them again after the broker was
-- back.
--   listens         1 when the device subscribes to its commands; an
--                   external client that never does has no downstream
--   resubscribed_at its first SUBSCRIBE to them from the heal on, as
--                   the broker saw it
--   commands_back_at the sender of commands had its connection back after
--                   the heal (NULL when it kept it)
--   first_c2d_at    the first command it received from the heal on
--   session         after it reconnected: 'resumed' when the broker had
--                   its session, 'new' when it had none
--   c2d_sent, c2d_received, c2d_lost, c2d_duplicated  counts of the cycle
--   downstream_ms   first_c2d_at - ready_at, or - commands_back_at when
--                   that is later (no command could be sent before)
ALTER TABLE cycles ADD COLUMN listens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cycles ADD COLUMN resubscribed_at BIGINT;
ALTER TABLE cycles ADD COLUMN commands_back_at BIGINT;
ALTER TABLE cycles ADD COLUMN first_c2d_at BIGINT;
ALTER TABLE cycles ADD COLUMN session TEXT;
ALTER TABLE cycles ADD COLUMN c2d_sent BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cycles ADD COLUMN c2d_received BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cycles ADD COLUMN c2d_lost BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cycles ADD COLUMN c2d_duplicated BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cycles ADD COLUMN downstream_ms DOUBLE PRECISION
    GENERATED ALWAYS AS (CASE WHEN listens = 1 AND ready_at IS NOT NULL THEN (first_c2d_at - greatest(ready_at, coalesce(commands_back_at, 0))) / 1e6 END) STORED;

-- +goose Down
ALTER TABLE cycles DROP COLUMN downstream_ms;
ALTER TABLE cycles DROP COLUMN c2d_duplicated;
ALTER TABLE cycles DROP COLUMN c2d_lost;
ALTER TABLE cycles DROP COLUMN c2d_received;
ALTER TABLE cycles DROP COLUMN c2d_sent;
ALTER TABLE cycles DROP COLUMN session;
ALTER TABLE cycles DROP COLUMN first_c2d_at;
ALTER TABLE cycles DROP COLUMN commands_back_at;
ALTER TABLE cycles DROP COLUMN resubscribed_at;
ALTER TABLE cycles DROP COLUMN listens;
