-- Users' threads, their runs, and each run's events as the user saw them.
-- Portable SQL: the same file runs on SQLite and Postgres. Times are Unix milliseconds.
CREATE TABLE threads (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    title TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX threads_by_user ON threads (user_id, created_ms, id);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    message TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    error_code TEXT,
    node TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    finished_ms BIGINT
);
CREATE INDEX runs_by_thread ON runs (thread_id, started_ms);
CREATE INDEX runs_by_status ON runs (status, node);

CREATE TABLE run_events (
    run_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    last_seen_ms BIGINT NOT NULL
);
