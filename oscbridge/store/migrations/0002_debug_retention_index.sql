-- Retention (oscbridge/store/retention.py) removes Mission Control debug traffic older than `debug_retention_days`,
-- oldest first, in small batches across every project: it needs the rows in order of their time alone (the
-- existing indexes lead with project, session or sender).
CREATE INDEX IF NOT EXISTS idx_mc_debug_created ON mission_control_debug (created_at);
