-- A chunk's events compressed (LZ4 block, its length in front): a run's events repeat the same
-- ids and keys, so they take about a quarter of the bytes, and a burst writes that much less.
-- Rows written before this migration keep their JSON in `events`; new rows leave it empty.
ALTER TABLE run_event_chunks ADD COLUMN packed BYTEA;
