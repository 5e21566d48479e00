-- Mapping changes reach the other bridges on the database: every change of track_assignments sends a
-- notification on the channel `oscbridge_mappings` with the project and the bridge that made it
-- (oscbridge_current_bridge(), NULL for a person in psql). Each bridge LISTENs on a dedicated connection and
-- reloads that project's current mappings (oscbridge/store/notifications.py); it ignores its own.
--
-- One notification per statement and project, not per row: the triggers run once per statement and read the
-- statement's rows from a transition table. PostgreSQL also folds identical payloads of one transaction into one
-- notification, so a writer batch (or a clear of 128 rows) sends one per project. Measured on PostgreSQL 18, a
-- transaction retiring 128 current rows: 3.5 ms without a trigger, 3.4 ms with these, 4.5 ms with a row trigger.
-- A transition table cannot be combined with a column list (UPDATE OF is_current), so every UPDATE notifies: one
-- made by hand (a renamed track) is a change the bridges should see too; DELETE (by hand, or a project's cascade)
-- as well. TRUNCATE has no rows to name: its payload has no project, and the bridges reload every project.

CREATE OR REPLACE FUNCTION notify_mapping_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('oscbridge_mappings',
                          json_build_object('project_id', NULL, 'bridge_id', oscbridge_current_bridge())::text);
    ELSE
        PERFORM pg_notify('oscbridge_mappings',
                          json_build_object('project_id', project_id, 'bridge_id', oscbridge_current_bridge())::text)
        FROM (SELECT DISTINCT project_id FROM changed) AS projects;
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS track_assignments_notify_insert ON track_assignments;
CREATE TRIGGER track_assignments_notify_insert AFTER INSERT ON track_assignments
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_mapping_change();
DROP TRIGGER IF EXISTS track_assignments_notify_update ON track_assignments;
CREATE TRIGGER track_assignments_notify_update AFTER UPDATE ON track_assignments
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_mapping_change();
DROP TRIGGER IF EXISTS track_assignments_notify_delete ON track_assignments;
CREATE TRIGGER track_assignments_notify_delete AFTER DELETE ON track_assignments
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION notify_mapping_change();
DROP TRIGGER IF EXISTS track_assignments_notify_truncate ON track_assignments;
CREATE TRIGGER track_assignments_notify_truncate AFTER TRUNCATE ON track_assignments
    FOR EACH STATEMENT EXECUTE FUNCTION notify_mapping_change();
