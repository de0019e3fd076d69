-- +goose Up
-- PostgreSQL's form of migrations/sqlite/00006_broker_address.sql: the same columns, BIGINT for
-- SQLite's INTEGER, DOUBLE PRECISION for REAL, stored generated columns.
-- broker_address: for the readdress fault, the broker's new address after
-- the heal, the only one it had then: a device that reconnected in the
-- cycle reached it. NULL for the other faults.
ALTER TABLE cycles ADD COLUMN broker_address TEXT;

-- +goose Down
ALTER TABLE cycles DROP COLUMN broker_address;
