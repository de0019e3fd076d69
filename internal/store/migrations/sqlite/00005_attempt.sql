-- +goose Up
-- attempt_at: when the device began the reconnect attempt that got it
-- back. Earlier than ready_at, it was begun during the fault and was still
-- open when the broker was back: the device waited on it (a SYN dropped
-- by a blackhole waits for its retransmission or its connect timeout).
-- NULL when unknown (an external client, seen from the broker).
ALTER TABLE cycles ADD COLUMN attempt_at INTEGER;
-- puback_median_ns: the median time from publishing to PUBACK of the
-- cycle's acknowledged messages: what the path costs a message (a slow
-- link, a latency fault). NULL when none was acknowledged or the client
-- is external.
ALTER TABLE cycles ADD COLUMN puback_median_ns INTEGER;

-- +goose Down
ALTER TABLE cycles DROP COLUMN puback_median_ns;
ALTER TABLE cycles DROP COLUMN attempt_at;
