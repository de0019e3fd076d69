-- +goose Up
-- broker_accept_peak: the most connections the broker accepted in any one
-- second from the heal to the cycle's end, from its own log; the cycle's,
-- on each device's row. NULL when none was seen.
ALTER TABLE cycles ADD COLUMN broker_accept_peak INTEGER;

-- +goose Down
ALTER TABLE cycles DROP COLUMN broker_accept_peak;
