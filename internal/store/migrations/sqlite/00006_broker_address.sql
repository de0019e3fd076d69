-- +goose Up
-- broker_address: for the readdress fault, the broker's new address after
-- the heal, the only one it had then: a device that reconnected in the
-- cycle reached it. NULL for the other faults.
ALTER TABLE cycles ADD COLUMN broker_address TEXT;

-- +goose Down
ALTER TABLE cycles DROP COLUMN broker_address;
