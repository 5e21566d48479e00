-- Several bridges on one database (a studio): each bridge has an id; what is local to a machine is keyed by it.
--
-- The writer of a bridge sets the transaction setting `oscbridge.bridge_id` in every transaction it writes in
-- (oscbridge/store/writer.py), so rows it makes carry its id through the column defaults below, also when it
-- replays its spool. Rows written before this migration, or by hand in SQL, have none (NULL): a bridge takes
-- those plugin rows as its own (there was one bridge per database before bridge ids existed).

-- The bridge whose writer runs the current transaction, or NULL (a person in psql, a tool).
CREATE OR REPLACE FUNCTION oscbridge_current_bridge() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('oscbridge.bridge_id', true), '')::uuid
$$;

-- The bridges that have used this database: a registry for people and views (rows refer to a bridge by id
-- without a foreign key, so that a row replayed from a spool never waits for its bridge's row).
CREATE TABLE IF NOT EXISTS bridges (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    host       text,
    version    text,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- Sessions belong to a bridge: each bridge has its own active session per project (two bridges may work on one
-- project at once), and the history of a project says which bridge made each session's changes.
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS bridge_id uuid DEFAULT oscbridge_current_bridge();
DROP INDEX IF EXISTS sessions_one_active_per_project;
CREATE UNIQUE INDEX IF NOT EXISTS sessions_one_active_per_project_bridge
    ON sessions (project_id, bridge_id) NULLS NOT DISTINCT WHERE is_active;

-- Plugin instances and the port pool's quarantine are the machine's own: a port on one Mac is not a port on
-- another. Instance ids are the plugins' 128-bit random tempIDs and stay the key.
ALTER TABLE plugin_instances ADD COLUMN IF NOT EXISTS bridge_id uuid DEFAULT oscbridge_current_bridge();
DROP INDEX IF EXISTS plugin_instances_live_port;
CREATE UNIQUE INDEX IF NOT EXISTS plugin_instances_live_port_bridge
    ON plugin_instances (bridge_id, port) NULLS NOT DISTINCT WHERE state IN ('assigned', 'bound', 'identified');

ALTER TABLE port_quarantine ADD COLUMN IF NOT EXISTS bridge_id uuid DEFAULT oscbridge_current_bridge();
ALTER TABLE port_quarantine DROP CONSTRAINT IF EXISTS port_quarantine_pkey;
CREATE UNIQUE INDEX IF NOT EXISTS port_quarantine_bridge_port ON port_quarantine (bridge_id, port) NULLS NOT DISTINCT;

-- Each project's active sessions, one per bridge working on it, with the bridge's name.
DROP VIEW IF EXISTS active_sessions;
CREATE VIEW active_sessions AS
SELECT s.id AS session_id, s.project_id, p.name AS project_name, s.started_at,
       (SELECT count(*) FROM messages m WHERE m.session_id = s.id) AS message_count,
       (SELECT max(m.created_at) FROM messages m WHERE m.session_id = s.id) AS last_message_at,
       s.bridge_id, b.name AS bridge_name
FROM sessions s
JOIN projects p ON p.id = s.project_id
LEFT JOIN bridges b ON b.id = s.bridge_id
WHERE s.is_active;

-- Every mapping change of every project, newest first, with the bridge whose session made it.
CREATE OR REPLACE VIEW track_assignment_history AS
SELECT t.id, t.project_id, p.name AS project_name, t.track_number, t.track_name, t.plugin_id, t.assigned_at,
       t.retired_at, t.is_current, t.session_id, s.bridge_id, b.name AS bridge_name
FROM track_assignments t
JOIN projects p ON p.id = t.project_id
JOIN sessions s ON s.id = t.session_id
LEFT JOIN bridges b ON b.id = s.bridge_id;

-- start_session for SQL users: ends the caller's own active session of the project (the calling bridge's, or
-- the one made without a bridge), not the sessions other bridges are working in.
CREATE OR REPLACE FUNCTION start_session(p_project_id uuid, p_session_id uuid DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid := COALESCE(p_session_id, gen_random_uuid());
    v_bridge uuid := oscbridge_current_bridge();
BEGIN
    PERFORM 1 FROM projects WHERE id = p_project_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project % does not exist', p_project_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- greatest(): a session committed by a concurrent caller may have started after this transaction's now().
    UPDATE sessions SET is_active = false, ended_at = greatest(started_at, clock_timestamp())
    WHERE project_id = p_project_id AND is_active AND bridge_id IS NOT DISTINCT FROM v_bridge AND id <> v_id;
    INSERT INTO sessions (id, project_id, bridge_id) VALUES (v_id, p_project_id, v_bridge)
    ON CONFLICT (id) DO NOTHING;
    RETURN v_id;
END;
$$;

-- The name a project gets when a write needs it and its row is missing (its creation was refused, or the row
-- was deleted by hand): the writer recreates it rather than drop acknowledged writes (oscbridge/store/
-- core_ops.py repair_parents); the next session start that names the project gives it back its name.
CREATE OR REPLACE FUNCTION recovered_name(p_project_id uuid) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 'Recovered project ' || p_project_id::text
$$;
