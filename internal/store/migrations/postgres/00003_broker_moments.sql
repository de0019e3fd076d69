-- +goose Up
-- PostgreSQL's form of migrations/sqlite/00003_broker_moments.sql: the same columns, BIGINT for
-- SQLite's INTEGER, DOUBLE PRECISION for REAL, stored generated columns.
-- The broker's own moments in each cycle, so that the test bed's delay is
-- shown as what it is instead of hiding inside recovery:
--   listening_at  the broker's first "listening" line after the fault (it restarted);
--   resumed_at    when it did not restart (pause, disconnect): the first
--                 client event it processed from the heal on;
--   held_until_at the network path last held a connection toward the
--                 broker (SYN sent, no answer) after it was back;
--   path_ms       ready_at minus whichever of listening_at and resumed_at is
--                 set: the network path's delay between the broker being
--                 back and the first answer through the device's path.
-- And where the broker ran: 'docker' or 'process', and for docker whether
-- its network namespace was held across restarts ('holder') or not
-- ('plain'). Runs before this version were plain Docker.
ALTER TABLE cycles ADD COLUMN listening_at BIGINT;
ALTER TABLE cycles ADD COLUMN resumed_at BIGINT;
ALTER TABLE cycles ADD COLUMN held_until_at BIGINT;
-- 1 when the run was interrupted during the cycle: its timeline is cut
-- short and it counts in no statistic and no loss.
ALTER TABLE cycles ADD COLUMN interrupted BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cycles ADD COLUMN path_ms DOUBLE PRECISION
    GENERATED ALWAYS AS ((ready_at - coalesce(listening_at, resumed_at)) / 1e6) STORED;
ALTER TABLE runs ADD COLUMN broker TEXT NOT NULL DEFAULT 'docker';
ALTER TABLE runs ADD COLUMN netns TEXT NOT NULL DEFAULT 'plain';

-- +goose Down
ALTER TABLE runs DROP COLUMN netns;
ALTER TABLE runs DROP COLUMN broker;
ALTER TABLE cycles DROP COLUMN path_ms;
ALTER TABLE cycles DROP COLUMN interrupted;
ALTER TABLE cycles DROP COLUMN held_until_at;
ALTER TABLE cycles DROP COLUMN resumed_at;
ALTER TABLE cycles DROP COLUMN listening_at;
