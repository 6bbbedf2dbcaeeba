-- Tool-call approvals. A run that reaches a call needing a person's approval pauses: its
-- continuation waits in `paused_runs` (no task, no slot) and each waiting call in `approvals`,
-- until a decision on any node resumes it. `pause` numbers a run's pauses (1, 2, ...): an
-- approvals row belongs to the pause that last requested it; `position` keeps a run's calls in
-- the order they were requested, across its pauses.
CREATE TABLE paused_runs (
    run_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    message TEXT NOT NULL,
    input TEXT NOT NULL,
    state TEXT NOT NULL,
    paused_ms BIGINT NOT NULL,
    pause BIGINT NOT NULL
);

-- status: pending | decided | expired | cancelled. decision: the decision's name (`expired` for
-- an expired call), with its arguments (edit) and message (reject, respond). result: the tool's
-- result as JSON, once it ran.
CREATE TABLE approvals (
    run_id TEXT NOT NULL,
    tool_call_id TEXT NOT NULL,
    pause BIGINT NOT NULL,
    position BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    tool_name TEXT NOT NULL,
    arguments TEXT NOT NULL,
    requested_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    decision TEXT,
    decision_arguments TEXT,
    decision_message TEXT,
    decided_ms BIGINT,
    result TEXT,
    PRIMARY KEY (run_id, tool_call_id)
);
CREATE INDEX approvals_by_expiry ON approvals (status, expires_ms);
CREATE INDEX approvals_by_user ON approvals (user_id, status, requested_ms);
