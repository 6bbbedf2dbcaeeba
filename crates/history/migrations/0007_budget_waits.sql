-- Runs that wait for their user's budget pause like runs that wait for approvals: their
-- continuation waits in `paused_runs` (with no approvals rows) until the budget allows their
-- next model call. `waiting_for` says which: approval | budget; `budget` is what the budget
-- said when the run paused (JSON: the budget, used, limit, resets_at), so a sweep resumes the
-- run once a new period begins or the limit is raised. The index serves that sweep.
ALTER TABLE paused_runs ADD COLUMN waiting_for TEXT NOT NULL DEFAULT 'approval';
ALTER TABLE paused_runs ADD COLUMN budget TEXT;
CREATE INDEX paused_runs_by_waiting ON paused_runs (waiting_for, user_id, run_id);
