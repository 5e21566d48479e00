-- oscbridge database schema.
--
-- Idempotent: every statement can run again on a database that already has it (the daemon applies this file
-- at every start, inside one transaction under an advisory lock; docker-compose applies it once at first
-- start through /docker-entrypoint-initdb.d). It records its version in schema_version, so a later version of
-- this file can upgrade an existing database with ALTER ... IF NOT EXISTS statements and a new version row.
--
-- Compared with the original Chatty Channels schema (see shared/reference/original-storage-audit.md) it fixes:
--   * S1  the partial index with a subquery (cannot exist in PostgreSQL) is gone; messages(session_id, ...) is a
--         plain index instead.
--   * S2  recent_messages has no global LIMIT and is not limited to active sessions: filter and limit outside.
--   * S3  get_conversation_context merges duplicates deterministically, orders by time, caps its result and
--         handles a NULL query vector.
--   * S4  get_or_create_project is one INSERT ... ON CONFLICT; names are unique among non-deleted projects only.
--   * S5  start_session locks the project row and a partial unique index allows one active session per project.
--   * S6  one current track assignment per (project, track number) and per (project, plugin id); composite
--         foreign keys keep a row's session inside its project; vocabulary columns have CHECKs; booleans and
--         timestamps that always have a value are NOT NULL.
--   * S7  the foreign key from sessions to projects is declared once.
--   * S8  context_snapshots rejects an empty message list (cardinality, not array_length).
--   * S10 redundant and low-value indexes are not created; every child table has an index leading with
--         session_id.
--   * S11 no trigger updates a parent row on every message insert (the message count is derived in a view).
--   * S12 a schema_version table; the embedding model is recorded per message.
-- Ids are made by the bridge (uuid), so a write replayed after a crash is recognised and never duplicated.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    description text NOT NULL
);

-- ---------------------------------------------------------------------------------------------------------
-- Projects and sessions
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS projects (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name               text NOT NULL CONSTRAINT projects_name_length CHECK (char_length(name) BETWEEN 1 AND 255),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    last_opened_at     timestamptz,
    logic_project_path text,
    track_count        integer CHECK (track_count IS NULL OR track_count >= 0),
    sample_rate        integer CHECK (sample_rate IS NULL OR sample_rate > 0),
    deleted_at         timestamptz
);
-- A name is unique among live projects; a soft-deleted project does not block its name (audit S4).
CREATE UNIQUE INDEX IF NOT EXISTS projects_live_name_key ON projects (name) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_projects_last_opened ON projects (last_opened_at DESC NULLS LAST);

CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS projects_touch_updated_at ON projects;
CREATE TRIGGER projects_touch_updated_at BEFORE UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE IF NOT EXISTS sessions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz,
    is_active  boolean NOT NULL DEFAULT true,
    CONSTRAINT sessions_id_project_key UNIQUE (id, project_id),
    CONSTRAINT sessions_ended_after_start CHECK (ended_at IS NULL OR ended_at >= started_at)
);
-- One active session per project (audit S5).
CREATE UNIQUE INDEX IF NOT EXISTS sessions_one_active_per_project ON sessions (project_id) WHERE is_active;
CREATE INDEX IF NOT EXISTS idx_sessions_project ON sessions (project_id, started_at DESC);

-- ---------------------------------------------------------------------------------------------------------
-- LLM messages with embeddings
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS messages (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id       uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    session_id       uuid NOT NULL,
    role             text NOT NULL
        CONSTRAINT messages_role_check CHECK (role IN ('user', 'assistant', 'system', 'producer', 'agent')),
    content          text NOT NULL CONSTRAINT messages_content_not_empty CHECK (char_length(content) > 0),
    embedding        vector(768),
    embedding_model  text,
    embedded_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    token_count      integer CHECK (token_count IS NULL OR token_count >= 0),
    model            text,
    is_key_decision  boolean NOT NULL DEFAULT false,
    decision_summary text,
    -- Keyword search. The text is cut at 200 kB so that a huge message still fits a tsvector (1 MB limit).
    content_tsv      tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, left(content, 200000))) STORED,
    CONSTRAINT messages_session_in_project FOREIGN KEY (session_id, project_id)
        REFERENCES sessions (id, project_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_messages_project_created ON messages (project_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_messages_session_created ON messages (session_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_messages_key_decisions ON messages (project_id, created_at DESC) WHERE is_key_decision;
-- The embedding worker's queue: messages still to be embedded (embedding_model NULL = saved with embed 0).
CREATE INDEX IF NOT EXISTS idx_messages_embed_pending ON messages (created_at)
    WHERE embedding IS NULL AND embedding_model IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_messages_embedding ON messages USING hnsw (embedding vector_cosine_ops);
CREATE INDEX IF NOT EXISTS idx_messages_content_tsv ON messages USING gin (content_tsv);

-- ---------------------------------------------------------------------------------------------------------
-- Mission Control: producer/user conversation and the debug log
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS mission_control_conversations (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    session_id   uuid NOT NULL,
    message_id   uuid REFERENCES messages (id) ON DELETE SET NULL,
    role         text NOT NULL CONSTRAINT mc_conv_role_check CHECK (role IN ('user', 'producer')),
    content      text NOT NULL CONSTRAINT mc_conv_content_not_empty CHECK (char_length(content) > 0),
    display_type text NOT NULL DEFAULT 'chat'
        CONSTRAINT mc_conv_display_type_check CHECK (display_type IN ('chat', 'action', 'status')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT mc_conv_session_in_project FOREIGN KEY (session_id, project_id)
        REFERENCES sessions (id, project_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_mc_conv_project_created ON mission_control_conversations (project_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_mc_conv_session ON mission_control_conversations (session_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_mc_conv_message ON mission_control_conversations (message_id) WHERE message_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS mission_control_debug (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id        uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    session_id        uuid NOT NULL,
    sender            text NOT NULL CHECK (char_length(sender) BETWEEN 1 AND 100),
    receiver          text CHECK (receiver IS NULL OR char_length(receiver) BETWEEN 1 AND 100), -- NULL = broadcast
    message_type      text NOT NULL CONSTRAINT mc_debug_type_check
        CHECK (message_type IN ('command', 'response', 'status', 'error', 'log', 'event', 'osc_in', 'osc_out')),
    content           text NOT NULL,
    payload           jsonb,
    severity          text NOT NULL DEFAULT 'info'
        CONSTRAINT mc_debug_severity_check CHECK (severity IN ('debug', 'info', 'warning', 'error')),
    -- Pairs a response with its request. Not a foreign key: rows arrive in batches and a reply may be
    -- written in the same batch as, or before, the row it answers.
    parent_message_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT mc_debug_session_in_project FOREIGN KEY (session_id, project_id)
        REFERENCES sessions (id, project_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_mc_debug_project_created ON mission_control_debug (project_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_mc_debug_session ON mission_control_debug (session_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_mc_debug_sender ON mission_control_debug (sender, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_mc_debug_parent ON mission_control_debug (parent_message_id)
    WHERE parent_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_mc_debug_payload ON mission_control_debug USING gin (payload jsonb_path_ops);

-- ---------------------------------------------------------------------------------------------------------
-- Track assignments: which TRn sits on which Logic track, per project, with history
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS track_assignments (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    session_id   uuid NOT NULL, -- the session in which this assignment was made (history)
    track_number integer NOT NULL CONSTRAINT track_assignments_track_num_positive CHECK (track_number > 0),
    track_name   text NOT NULL CHECK (char_length(track_name) <= 255),
    plugin_id    text NOT NULL CONSTRAINT track_assignments_plugin_id_format
        CHECK (plugin_id LIKE 'TR%' AND char_length(plugin_id) <= 50),
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    verified_at  timestamptz,
    is_current   boolean NOT NULL DEFAULT true,
    retired_at   timestamptz,
    CONSTRAINT track_assignments_session_in_project FOREIGN KEY (session_id, project_id)
        REFERENCES sessions (id, project_id) ON DELETE CASCADE
);
-- A mapping belongs to the project and carries over to its next session: one current row per track number and
-- one per plugin id within a project.
CREATE UNIQUE INDEX IF NOT EXISTS track_assignments_current_track
    ON track_assignments (project_id, track_number) WHERE is_current;
CREATE UNIQUE INDEX IF NOT EXISTS track_assignments_current_plugin
    ON track_assignments (project_id, plugin_id) WHERE is_current;
CREATE INDEX IF NOT EXISTS idx_track_assignments_session ON track_assignments (session_id);
CREATE INDEX IF NOT EXISTS idx_track_assignments_history ON track_assignments (project_id, assigned_at DESC);

-- ---------------------------------------------------------------------------------------------------------
-- Context snapshots
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS context_snapshots (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    session_id  uuid NOT NULL,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    message_ids uuid[] NOT NULL CONSTRAINT context_snapshots_has_messages CHECK (cardinality(message_ids) > 0),
    track_state jsonb,
    CONSTRAINT context_snapshots_session_in_project FOREIGN KEY (session_id, project_id)
        REFERENCES sessions (id, project_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_context_snapshots_project ON context_snapshots (project_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_context_snapshots_session ON context_snapshots (session_id);

-- ---------------------------------------------------------------------------------------------------------
-- Live plugin instances and the port pool (the bridge's own state; survives a restart of the bridge)
-- ---------------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS plugin_instances (
    instance_id   text PRIMARY KEY CHECK (char_length(instance_id) BETWEEN 1 AND 64), -- the plugin's tempID
    port          integer CHECK (port IS NULL OR port BETWEEN 1 AND 65535),
    state         text NOT NULL CONSTRAINT plugin_instances_state_check
        CHECK (state IN ('requesting', 'assigned', 'bound', 'identified', 'failed', 'gone')),
    plugin_id     text CHECK (plugin_id IS NULL OR plugin_id LIKE 'TR%'),
    sender_host   text,
    sender_port   integer CHECK (sender_port IS NULL OR sender_port BETWEEN 0 AND 65535),
    response_port integer CHECK (response_port IS NULL OR response_port BETWEEN 0 AND 65535),
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- A port belongs to at most one live instance.
CREATE UNIQUE INDEX IF NOT EXISTS plugin_instances_live_port
    ON plugin_instances (port) WHERE state IN ('assigned', 'bound', 'identified');
CREATE INDEX IF NOT EXISTS idx_plugin_instances_plugin ON plugin_instances (plugin_id) WHERE plugin_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS port_quarantine (
    port          integer PRIMARY KEY CHECK (port BETWEEN 1 AND 65535),
    reason        text NOT NULL,
    since         timestamptz NOT NULL DEFAULT now(),
    until         timestamptz NOT NULL
);

-- ---------------------------------------------------------------------------------------------------------
-- Views (explicit column lists, so columns added later do not change them silently)
-- ---------------------------------------------------------------------------------------------------------

-- All messages with their project name and session start. No LIMIT and no active-session filter inside the
-- view: callers filter by project and limit (audit S2).
CREATE OR REPLACE VIEW recent_messages AS
SELECT m.id, m.project_id, m.session_id, m.role, m.content, m.created_at, m.model, m.is_key_decision,
       m.decision_summary, m.embedding IS NOT NULL AS has_embedding,
       p.name AS project_name, s.started_at AS session_started_at, s.is_active AS session_is_active
FROM messages m
JOIN projects p ON p.id = m.project_id
JOIN sessions s ON s.id = m.session_id;

CREATE OR REPLACE VIEW active_sessions AS
SELECT s.id AS session_id, s.project_id, p.name AS project_name, s.started_at,
       (SELECT count(*) FROM messages m WHERE m.session_id = s.id) AS message_count,
       (SELECT max(m.created_at) FROM messages m WHERE m.session_id = s.id) AS last_message_at
FROM sessions s
JOIN projects p ON p.id = s.project_id
WHERE s.is_active;

CREATE OR REPLACE VIEW current_track_assignments AS
SELECT t.id, t.project_id, p.name AS project_name, t.session_id, t.track_number, t.track_name, t.plugin_id,
       t.assigned_at, t.verified_at
FROM track_assignments t
JOIN projects p ON p.id = t.project_id
WHERE t.is_current;

CREATE OR REPLACE VIEW mission_control_complete AS
SELECT c.id, c.project_id, c.session_id, 'conversation'::text AS source_type, c.role AS sender,
       NULL::text AS receiver, c.display_type AS message_type, c.content, NULL::jsonb AS payload,
       'info'::text AS severity, c.created_at
FROM mission_control_conversations c
UNION ALL
SELECT d.id, d.project_id, d.session_id, 'debug'::text, d.sender, d.receiver, d.message_type, d.content,
       d.payload, d.severity, d.created_at
FROM mission_control_debug d;

-- ---------------------------------------------------------------------------------------------------------
-- Functions
-- ---------------------------------------------------------------------------------------------------------

-- Race-free get-or-create (audit S4): concurrent callers all get the one live project of that name.
CREATE OR REPLACE FUNCTION get_or_create_project(p_name text, p_logic_project_path text DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
BEGIN
    INSERT INTO projects (name, logic_project_path, last_opened_at)
    VALUES (p_name, NULLIF(p_logic_project_path, ''), now())
    ON CONFLICT (name) WHERE deleted_at IS NULL
    DO UPDATE SET last_opened_at = now(),
                  logic_project_path = COALESCE(EXCLUDED.logic_project_path, projects.logic_project_path)
    RETURNING id INTO v_id;
    RETURN v_id;
END;
$$;

-- Ends the project's active session and starts a new one. The project row lock serialises concurrent callers
-- and the partial unique index backs it up (audit S5).
CREATE OR REPLACE FUNCTION start_session(p_project_id uuid, p_session_id uuid DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid := COALESCE(p_session_id, gen_random_uuid());
BEGIN
    PERFORM 1 FROM projects WHERE id = p_project_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project % does not exist', p_project_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- greatest(): a session committed by a concurrent caller may have started after this transaction's now().
    UPDATE sessions SET is_active = false, ended_at = greatest(started_at, clock_timestamp())
    WHERE project_id = p_project_id AND is_active AND id <> v_id;
    INSERT INTO sessions (id, project_id) VALUES (v_id, p_project_id)
    ON CONFLICT (id) DO NOTHING;
    RETURN v_id;
END;
$$;

-- The original hybrid context (semantic + recent + key decisions), fixed (audit S3): one row per message with
-- its flags merged, the best similarity kept, ordered by time (oldest first, ready for a prompt), capped at
-- p_limit, and no semantic part when the query vector is NULL.
CREATE OR REPLACE FUNCTION get_conversation_context(
    p_project_id uuid,
    p_query_embedding vector(768),
    p_limit integer DEFAULT 20,
    p_recent integer DEFAULT 10,
    p_decision_days integer DEFAULT 7,
    p_decision_limit integer DEFAULT 5
)
RETURNS TABLE (message_id uuid, content text, role text, created_at timestamptz, similarity double precision,
               is_recent boolean, is_key_decision boolean)
LANGUAGE sql STABLE AS $$
    WITH semantic AS (
        SELECT m.id, 1 - (m.embedding <=> p_query_embedding) AS similarity
        FROM messages m
        WHERE p_query_embedding IS NOT NULL AND m.project_id = p_project_id AND m.embedding IS NOT NULL
        ORDER BY m.embedding <=> p_query_embedding, m.id
        LIMIT greatest(p_limit / 2, 1)
    ),
    recent AS (
        SELECT m.id FROM messages m
        WHERE m.project_id = p_project_id
        ORDER BY m.created_at DESC, m.id DESC
        LIMIT p_recent
    ),
    decisions AS (
        SELECT m.id FROM messages m
        WHERE m.project_id = p_project_id AND m.is_key_decision
          AND m.created_at >= now() - make_interval(days => p_decision_days)
        ORDER BY m.created_at DESC, m.id DESC
        LIMIT p_decision_limit
    ),
    merged AS (
        SELECT id, max(similarity) AS similarity, bool_or(is_recent) AS is_recent
        FROM (
            SELECT id, similarity, false AS is_recent FROM semantic
            UNION ALL SELECT id, NULL, true FROM recent
            UNION ALL SELECT id, NULL, false FROM decisions
        ) u
        GROUP BY id
    ),
    capped AS (
        -- Keep the most relevant when over the cap: decisions and recent first, then by similarity.
        SELECT mg.id, mg.similarity, mg.is_recent, m.is_key_decision, m.created_at
        FROM merged mg JOIN messages m ON m.id = mg.id
        ORDER BY m.is_key_decision DESC, mg.is_recent DESC, mg.similarity DESC NULLS LAST, m.created_at DESC, m.id
        LIMIT p_limit
    )
    SELECT c.id, m.content, m.role, m.created_at, COALESCE(c.similarity, 0.0), c.is_recent, c.is_key_decision
    FROM capped c JOIN messages m ON m.id = c.id
    ORDER BY m.created_at, m.id;
$$;

INSERT INTO schema_version (version, description)
VALUES (1, 'oscbridge initial schema: projects, sessions, messages, mission control, track assignments, '
           'snapshots, plugin instances, port quarantine')
ON CONFLICT (version) DO NOTHING;
