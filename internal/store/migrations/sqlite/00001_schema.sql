-- +goose Up
-- Times are Unix nanoseconds; NULL means the event did not happen.
-- Durations in milliseconds are derived from them, never stored on their own.
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    status          TEXT    NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'completed', 'interrupted', 'failed', 'abandoned')),
    error           TEXT,
    label           TEXT    NOT NULL DEFAULT '',
    fault           TEXT    NOT NULL,
    keep_alive_ms   INTEGER NOT NULL,
    keep_dead_ms    INTEGER NOT NULL,
    keep_running_ms INTEGER NOT NULL,
    devices         INTEGER NOT NULL,
    cycles_planned  INTEGER NOT NULL,
    config_json     TEXT    NOT NULL,
    tool_version    TEXT    NOT NULL,
    engine_version  TEXT    NOT NULL,
    image_id        TEXT    NOT NULL,
    host            TEXT    NOT NULL,
    machine         TEXT    NOT NULL DEFAULT '',
    pid             INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_label ON runs (label);
CREATE INDEX runs_scenario ON runs (fault, keep_dead_ms, devices, started_at);

CREATE TABLE cycles (
    run_id             INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    cycle              INTEGER NOT NULL,
    device             TEXT    NOT NULL,
    fault_at           INTEGER,
    lost_at            INTEGER,
    healed_at          INTEGER,
    ready_at           INTEGER,
    reconnected_at     INTEGER,
    first_ack_at       INTEGER,
    last_ack_before_at INTEGER,
    recovery_ms        REAL GENERATED ALWAYS AS ((first_ack_at - ready_at) / 1e6) VIRTUAL,
    detection_ms       REAL GENERATED ALWAYS AS ((lost_at - fault_at) / 1e6) VIRTUAL,
    outage_ms          REAL GENERATED ALWAYS AS ((first_ack_at - last_ack_before_at) / 1e6) VIRTUAL,
    reconnect_attempts INTEGER NOT NULL DEFAULT 0,
    published          INTEGER NOT NULL DEFAULT 0,
    acknowledged       INTEGER NOT NULL DEFAULT 0,
    delivered          INTEGER NOT NULL DEFAULT 0,
    lost               INTEGER NOT NULL DEFAULT 0,
    duplicated         INTEGER NOT NULL DEFAULT 0,
    error              TEXT,
    PRIMARY KEY (run_id, cycle, device)
) WITHOUT ROWID;

-- +goose Down
DROP TABLE cycles;
DROP TABLE runs;
