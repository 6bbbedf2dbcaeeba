-- A model-backed run's token usage (the `usage` of its `agent_completed`), as JSON.
ALTER TABLE runs ADD COLUMN usage TEXT;
