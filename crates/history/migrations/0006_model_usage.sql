-- What each model call used, one row per call, for per-user budgets. `call_id` is the caller's
-- unique id of the call (e.g. `<run id>:<n>`): a call recorded twice, or by two nodes at once,
-- is stored once. `cost_micro_usd` is NULL for a model with no price. No foreign key to runs or
-- threads, and nothing that erases them (a run's or thread's deletion, retention) erases these
-- rows: a budget counts what was spent, whatever became of the conversation.
CREATE TABLE model_usage (
    call_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost_micro_usd BIGINT,
    at_ms BIGINT NOT NULL
);
CREATE INDEX model_usage_by_user ON model_usage (user_id, at_ms);
CREATE INDEX model_usage_by_run ON model_usage (run_id);
