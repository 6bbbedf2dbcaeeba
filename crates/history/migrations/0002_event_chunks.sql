-- A run's events in chunks: one row per run per writer batch, holding that batch's events of
-- the run as a JSON array in emission order. A burst then writes a row per run, not per event.
DROP TABLE run_events;
CREATE TABLE run_event_chunks (
    run_id TEXT NOT NULL,
    chunk BIGINT NOT NULL,
    events TEXT NOT NULL,
    PRIMARY KEY (run_id, chunk)
);
