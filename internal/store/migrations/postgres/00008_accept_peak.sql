-- +goose Up
-- PostgreSQL's form of migrations/sqlite/00008_accept_peak.sql: the same columns, BIGINT for
-- SQLite's INTEGER, DOUBLE PRECISION for REAL, stored generated columns.
-- broker_accept_peak: the most connections the broker accepted in any one
-- second from the heal to the cycle's end, from its own log; the cycle's,
-- on each device's row. NULL when none was seen.
ALTER TABLE cycles ADD COLUMN broker_accept_peak BIGINT;

-- +goose Down
ALTER TABLE cycles DROP COLUMN broker_accept_peak;
