-- +goose Up
-- The test bed's own cost over the cycle's window, from the fault's
-- injection to the cycle's end (mttr.BedCost); the cycle's, on each
-- device's row. CPU times are user + system nanoseconds. All NULL when the
-- window was not measured; bed_broker_ns also NULL when the broker's CPU
-- could not be read (an engine on another machine).
ALTER TABLE cycles ADD COLUMN bed_window_ns INTEGER;
ALTER TABLE cycles ADD COLUMN bed_tool_ns INTEGER;
ALTER TABLE cycles ADD COLUMN bed_broker_ns INTEGER;
ALTER TABLE cycles ADD COLUMN bed_clients_ns INTEGER;
ALTER TABLE cycles ADD COLUMN bed_host_ns INTEGER;
ALTER TABLE cycles ADD COLUMN bed_cores INTEGER;
-- bed_late_ns: the worst lateness of the tool's wake-up probe in the
-- window, the resolution of the cycle's timestamps.
ALTER TABLE cycles ADD COLUMN bed_late_ns INTEGER;

-- +goose Down
ALTER TABLE cycles DROP COLUMN bed_late_ns;
ALTER TABLE cycles DROP COLUMN bed_cores;
ALTER TABLE cycles DROP COLUMN bed_host_ns;
ALTER TABLE cycles DROP COLUMN bed_clients_ns;
ALTER TABLE cycles DROP COLUMN bed_broker_ns;
ALTER TABLE cycles DROP COLUMN bed_tool_ns;
ALTER TABLE cycles DROP COLUMN bed_window_ns;
