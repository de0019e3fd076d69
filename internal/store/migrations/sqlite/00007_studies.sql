-- +goose Up
-- A study is one run of every combination of the faults, keep-deads and
-- fleet sizes it was given, in an order drawn from its seed. plan_json
-- holds the combinations in that order and the settings they share;
-- resuming a study checks them.
CREATE TABLE studies (
    id         INTEGER PRIMARY KEY,
    label      TEXT    NOT NULL UNIQUE,
    seed       INTEGER NOT NULL,
    plan_json  TEXT    NOT NULL,
    started_at INTEGER NOT NULL
);
-- study_id, study_position: the study a run belongs to and its place in
-- the study's order (1-based); NULL for runs outside a study.
ALTER TABLE runs ADD COLUMN study_id INTEGER REFERENCES studies(id);
ALTER TABLE runs ADD COLUMN study_position INTEGER;
CREATE INDEX runs_study ON runs (study_id, study_position);

-- +goose Down
DROP INDEX runs_study;
ALTER TABLE runs DROP COLUMN study_position;
ALTER TABLE runs DROP COLUMN study_id;
DROP TABLE studies;
