-- +goose Up
-- Which device client a run measured ('paho': ours; 'external': a process
-- observed from the broker's side), and how the Docker engine's clock
-- related to ours (engine minus ours, with half the measuring round trip
-- as its uncertainty). Broker-side times are on our clock.
ALTER TABLE runs ADD COLUMN client TEXT NOT NULL DEFAULT 'paho';
ALTER TABLE runs ADD COLUMN clock_offset_ms REAL;
ALTER TABLE runs ADD COLUMN clock_uncertainty_ms REAL;

-- +goose Down
ALTER TABLE runs DROP COLUMN clock_uncertainty_ms;
ALTER TABLE runs DROP COLUMN clock_offset_ms;
ALTER TABLE runs DROP COLUMN client;
