-- The ledger's schema. Applied on every start, idempotently, under an
-- advisory lock (ledger/db.py). Invariants live here: grants, CHECKs,
-- unique (stream, version), triggers that refuse rewriting history.

-- The service's role: SELECT and INSERT on events, nothing more.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_service') THEN
        CREATE ROLE ledger_service NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another database on the same server created it first
END $$;

-- One stuck writer must not stall the ledger: a statement waits at most
-- lock_timeout for a lock, and a session idle inside a transaction is cut off.
-- Roles are shared by every database of the server, and the advisory lock
-- this file runs under is per database: set the role's defaults only when
-- they are missing, so ledgers in several databases can start together
-- (rewriting them every time failed with 'tuple concurrently updated').
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
         WHERE r.rolname = 'ledger_service' AND s.setdatabase = 0
           AND s.setconfig @> ARRAY['lock_timeout=5s', 'idle_in_transaction_session_timeout=15s']
    ) THEN
        ALTER ROLE ledger_service SET lock_timeout = '5s';
        ALTER ROLE ledger_service SET idle_in_transaction_session_timeout = '15s';
    END IF;
EXCEPTION WHEN internal_error THEN
    NULL;  -- another database's start is setting the same defaults right now
END $$;

-- The head of the chain: one row, moved forward by every append. Locking it
-- serialises appenders, so position order = commit order = chain order.
CREATE TABLE IF NOT EXISTS ledger_head (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    position    bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    hash        bytea       NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
                CHECK (length(hash) = 32),
    recorded_at timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO ledger_head (id) VALUES (true) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS events (
    position    bigint      PRIMARY KEY CHECK (position >= 1),
    -- <category>-<id>, the id at most 200 characters. Said with a length and
    -- '*', not '{0,199}': PostgreSQL's regex engine unrolls a bounded repeat
    -- into ~200 states and that one CHECK cost 27 µs an event.
    stream      text        NOT NULL CHECK (stream ~ '^[a-z][a-z0-9_]*-[A-Za-z0-9][A-Za-z0-9_.:-]*$'
                                            AND length(stream) - strpos(stream, '-') <= 200),
    version     bigint      NOT NULL CHECK (version >= 1),
    -- the same rule as '^[A-Z][A-Za-z0-9]{0,99}$' (the ledger's first form),
    -- which cost ~4 µs an event in every append for the same reason
    type        text        NOT NULL CHECK (type ~ '^[A-Z][A-Za-z0-9]*$' AND length(type) <= 100),
    recorded_at timestamptz NOT NULL,
    prev_hash   bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash        bytea       NOT NULL CHECK (length(hash) = 32),
    -- the exact RFC 8785 bytes the hash was computed over (every field but
    -- hash); reads and exports come from here, never from jsonb::text
    canonical   bytea       NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);
-- Read by type only for the few administrative types (the principals'
-- history at boot, the signing keys' announcements); every other read goes
-- by position or by stream. A partial index serves those lookups without an
-- entry per event in a third index, which cost ~2 µs of every append
-- (bench: COPY into the events table). Ledgers made with the full
-- (type, position) index drop it here.
CREATE INDEX IF NOT EXISTS events_admin_type_position_idx ON events (type, position)
    WHERE type IN ('PrincipalKeyCreated', 'PrincipalKeyRevoked', 'SigningKeyAnnounced');
DROP INDEX IF EXISTS events_type_position_idx;
-- A ledger made with the first form of the type CHECK takes the cheaper,
-- equivalent one (every stored type passes both; checked as it is added).
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_constraint
         WHERE conrelid = 'events'::regclass AND conname = 'events_type_check'
           AND pg_get_constraintdef(oid) LIKE '%{0,99}%'
    ) THEN
        ALTER TABLE events DROP CONSTRAINT events_type_check,
            ADD CONSTRAINT events_type_check
                CHECK (type ~ '^[A-Z][A-Za-z0-9]*$' AND length(type) <= 100);
    END IF;
END $$;

-- Queries that want jsonb derive it from the canonical bytes. jsonb cannot
-- hold U+0000, which JSON (and so the ledger) admits: the derived value
-- shows U+FFFD there instead of failing the query; the bytes keep it.
CREATE OR REPLACE FUNCTION ledger_jsonb(canonical bytea) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(t, '\u0000') = 0 THEN t::jsonb
                ELSE regexp_replace(t, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\ufffd', 'g')::jsonb
           END
      FROM convert_from(canonical, 'UTF8') AS t
$$;

CREATE OR REPLACE VIEW events_json AS
    SELECT position, stream, version, type, recorded_at,
           encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash,
           ledger_jsonb(canonical) AS body
      FROM events;

-- History is never rewritten: refused to everyone, superusers included,
-- and ENABLE ALWAYS so session_replication_role = replica cannot skip it.
-- One function refuses for every append-only table (events, checkpoints,
-- checkpoint_cosignatures); each trigger passes what the table keeps, and
-- may pass a hint.
CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%: % refused', TG_ARGV[0], TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = coalesce(TG_ARGV[1], TG_TABLE_NAME || ' is append-only');
END $$;

CREATE OR REPLACE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change(
        'events are immutable', 'the ledger is append-only; record a correcting event instead');
CREATE OR REPLACE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change(
        'events are immutable', 'the ledger is append-only; record a correcting event instead');
ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_delete;
ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_truncate;

-- The head only moves forward.
CREATE OR REPLACE FUNCTION ledger_head_forward_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.position < OLD.position OR NEW.recorded_at < OLD.recorded_at THEN
        RAISE EXCEPTION 'ledger head cannot move backwards (% -> %)', OLD.position, NEW.position
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER ledger_head_forward
    BEFORE UPDATE ON ledger_head
    FOR EACH ROW EXECUTE FUNCTION ledger_head_forward_only();
ALTER TABLE ledger_head ENABLE ALWAYS TRIGGER ledger_head_forward;

-- Idempotency keys: written in the same transaction as the command's events.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    actor           text        NOT NULL,
    key             text        NOT NULL,
    request_sha256  bytea       NOT NULL,
    stream          text        NOT NULL,
    first_position  bigint      NOT NULL,
    last_position   bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);

-- Principals: who may act as whom. Kept in step with the PrincipalKey* events
-- by a trigger in the appending transaction, so the chain is the source.
CREATE TABLE IF NOT EXISTS principals (
    name             text        PRIMARY KEY,
    role             text        NOT NULL CHECK (role IN ('agent', 'officer', 'auditor', 'admin')),
    key_sha256       bytea       NOT NULL UNIQUE,
    created_position bigint      NOT NULL,
    revoked_position bigint
);

-- SECURITY DEFINER: the trigger writes principals as the schema's owner; the
-- service's role itself may only read them (grants below), so who may do what
-- changes only by an event on the chain.
CREATE OR REPLACE FUNCTION principals_follow_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    d jsonb := ledger_jsonb(NEW.canonical) -> 'data';
BEGIN
    IF NEW.type = 'PrincipalKeyCreated' THEN
        INSERT INTO principals (name, role, key_sha256, created_position)
        VALUES (d ->> 'name', d ->> 'role', decode(d ->> 'key_sha256', 'hex'), NEW.position)
        ON CONFLICT (name) DO UPDATE
           SET role = EXCLUDED.role, key_sha256 = EXCLUDED.key_sha256,
               created_position = EXCLUDED.created_position, revoked_position = NULL;
    ELSIF NEW.type = 'PrincipalKeyRevoked' THEN
        UPDATE principals SET revoked_position = NEW.position WHERE name = d ->> 'name';
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER events_principals
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.type IN ('PrincipalKeyCreated', 'PrincipalKeyRevoked'))
    EXECUTE FUNCTION principals_follow_events();

-- What GET /audit/verify has already checked: it resumes from here.
CREATE TABLE IF NOT EXISTS verify_watermark (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    position    bigint      NOT NULL DEFAULT 0,
    hash        bytea       NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea,
    verified_at timestamptz
);
INSERT INTO verify_watermark (id) VALUES (true) ON CONFLICT DO NOTHING;
-- How far the rolling re-check of the verified range has come (each
-- incremental verification re-hashes a slice of what it verified before).
ALTER TABLE verify_watermark ADD COLUMN IF NOT EXISTS swept_to bigint NOT NULL DEFAULT 0;

-- The only way the watermark moves: forward, onto an event that is there
-- with that hash. SECURITY DEFINER, so the service's role needs no UPDATE on
-- the table (a bug or a stolen session cannot move it back or off the chain).
CREATE OR REPLACE FUNCTION ledger_verified(p_position bigint, p_hash bytea, p_swept_to bigint)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    moved boolean;
BEGIN
    UPDATE verify_watermark
       SET position = p_position, hash = p_hash, verified_at = now(),
           swept_to = least(greatest(p_swept_to, 0), p_position)
     WHERE id AND position <= p_position
       AND (p_position = 0
            OR EXISTS (SELECT 1 FROM events e WHERE e.position = p_position AND e.hash = p_hash));
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END $$;
REVOKE ALL ON FUNCTION ledger_verified(bigint, bytea, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_verified(bigint, bytea, bigint) TO ledger_service;

-- The single append path. One call = one transaction = one group commit:
-- lock the head, check each command's expected stream version and
-- idempotency key, chain its events, insert the batch's events in one
-- statement, move the head, NOTIFY. A refused command is skipped; the others
-- in the batch still commit.
--
-- p_bodies[i] is the RFC 8785 prefix '{"data":...,"meta":{...}' of event i,
-- computed by the caller; this function appends the remaining fields (all
-- ASCII, no escaping needed: the CHECKs on stream and type guarantee it) in
-- RFC 8785 key order and hashes the result.
--
-- The events of the whole batch go in with one INSERT at the end (one per
-- command cost ~40 us per command, most of a single-event command's time);
-- a command whose stream an earlier command of the batch wrote to first puts
-- the pending rows in, so it reads the stream's version as it now stands.
CREATE OR REPLACE FUNCTION ledger_append(
    p_streams    text[],    -- per command
    p_expected   bigint[],  -- per command: required current version, NULL for any
    p_idem_actor text[],    -- per command: idempotency key owner, NULL for none
    p_idem_key   text[],
    p_idem_hash  bytea[],
    p_counts     int[],     -- per command: how many events follow
    p_types      text[],    -- per event
    p_bodies     bytea[]    -- per event
) RETURNS TABLE (o_cmd int, o_outcome text, o_position bigint, o_version bigint,
                 o_hash bytea, o_prev_hash bytea, o_recorded_at text, o_detail bigint)
LANGUAGE plpgsql AS $$
DECLARE
    h_pos    bigint;
    h_hash   bytea;
    h_ts     timestamptz;
    ts       timestamptz;
    ts_text  text;
    c        int;
    e        int := 0;
    i        int;
    cur      bigint;
    canon    bytea;
    nh       bytea;
    prior    idempotency_keys%ROWTYPE;
    first_p  bigint;
    n_cmds   int := coalesce(array_length(p_streams, 1), 0);
    repeats  int[];            -- commands whose stream an earlier command names
    n        int := 0;         -- events chained, not inserted yet
    b_pos    bigint[] := '{}';
    b_stream text[]   := '{}';
    b_ver    bigint[] := '{}';
    b_type   text[]   := '{}';
    b_prev   bytea[]  := '{}';
    b_hash   bytea[]  := '{}';
    b_canon  bytea[]  := '{}';
    moved    boolean := false;
BEGIN
    SELECT h.position, h.hash, h.recorded_at INTO h_pos, h_hash, h_ts
      FROM ledger_head h WHERE h.id FOR UPDATE;
    ts := greatest(clock_timestamp(), h_ts);
    ts_text := to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    SELECT coalesce(array_agg(x.o), '{}') INTO repeats
      FROM (SELECT u.o, row_number() OVER (PARTITION BY u.s ORDER BY u.o) AS k
              FROM unnest(p_streams) WITH ORDINALITY AS u(s, o)) x
     WHERE x.k > 1;

    -- one pass more than there are commands: its only work is the last INSERT
    FOR c IN 1 .. n_cmds + 1 LOOP
        IF n > 0 AND (c > n_cmds OR c = ANY (repeats)) THEN
            INSERT INTO events (position, stream, version, type, recorded_at, prev_hash, hash, canonical)
            SELECT u.p, u.s, u.v, u.t, ts, u.pr, u.h, u.cn
              FROM unnest(b_pos, b_stream, b_ver, b_type, b_prev, b_hash, b_canon)
                   AS u(p, s, v, t, pr, h, cn);
            n := 0;
            b_pos := '{}'; b_stream := '{}'; b_ver := '{}'; b_type := '{}';
            b_prev := '{}'; b_hash := '{}'; b_canon := '{}';
        END IF;
        EXIT WHEN c > n_cmds;

        IF p_idem_key[c] IS NOT NULL THEN
            SELECT * INTO prior FROM idempotency_keys k
             WHERE k.actor = p_idem_actor[c] AND k.key = p_idem_key[c];
            IF FOUND THEN
                o_cmd := c;
                o_outcome := CASE WHEN prior.request_sha256 = p_idem_hash[c]
                                  THEN 'duplicate' ELSE 'idempotency_mismatch' END;
                o_position := prior.first_position; o_detail := prior.last_position;
                o_version := NULL; o_hash := NULL; o_prev_hash := NULL; o_recorded_at := NULL;
                RETURN NEXT;
                e := e + p_counts[c];
                CONTINUE;
            END IF;
        END IF;

        SELECT coalesce(max(ev.version), 0) INTO cur FROM events ev WHERE ev.stream = p_streams[c];
        IF p_expected[c] IS NOT NULL AND p_expected[c] <> cur THEN
            o_cmd := c; o_outcome := 'conflict'; o_detail := cur;
            o_position := NULL; o_version := NULL; o_hash := NULL; o_prev_hash := NULL; o_recorded_at := NULL;
            RETURN NEXT;
            e := e + p_counts[c];
            CONTINUE;
        END IF;

        first_p := h_pos + 1;
        FOR i IN 1 .. p_counts[c] LOOP
            e := e + 1;
            h_pos := h_pos + 1;
            cur := cur + 1;
            canon := p_bodies[e] || convert_to(
                ',"position":' || h_pos
                || ',"prev_hash":"' || encode(h_hash, 'hex')
                || '","recorded_at":"' || ts_text
                || '","stream":"' || p_streams[c]
                || '","type":"' || p_types[e]
                || '","version":' || cur || '}', 'UTF8');
            nh := sha256(canon);
            n := n + 1;
            b_pos[n] := h_pos;
            b_stream[n] := p_streams[c];
            b_ver[n] := cur;
            b_type[n] := p_types[e];
            b_prev[n] := h_hash;
            b_hash[n] := nh;
            b_canon[n] := canon;
            o_cmd := c; o_outcome := 'ok'; o_position := h_pos; o_version := cur;
            o_hash := nh; o_prev_hash := h_hash; o_recorded_at := ts_text; o_detail := NULL;
            RETURN NEXT;
            h_hash := nh;
            moved := true;
        END LOOP;

        -- written at once: a later command of this batch with the same key
        -- finds it (its events follow in this transaction's INSERT)
        IF p_idem_key[c] IS NOT NULL AND p_counts[c] > 0 THEN
            INSERT INTO idempotency_keys (actor, key, request_sha256, stream, first_position, last_position)
            VALUES (p_idem_actor[c], p_idem_key[c], p_idem_hash[c], p_streams[c], first_p, h_pos);
        END IF;
    END LOOP;

    IF moved THEN
        UPDATE ledger_head SET position = h_pos, hash = h_hash, recorded_at = ts WHERE id;
        PERFORM pg_notify('ledger_events', h_pos::text);
    END IF;
END $$;

-- The first step of a large batch's append (ledger/copy_append.py), in the
-- batch's transaction: lock the head exactly as ledger_append does and say
-- where the chain stands, the batch's timestamp (the same rule: never before
-- the head's), each named stream's version and each named idempotency key's
-- earlier use. The caller chains in Python, COPYs the rows into events and
-- moves the head before it commits; the lock is held until then.
CREATE OR REPLACE FUNCTION ledger_append_begin(
    p_streams    text[],
    p_idem_actor text[],
    p_idem_key   text[]
) RETURNS TABLE (o_kind text, o_stream text, o_key text, o_position bigint,
                 o_last bigint, o_hash bytea, o_text text)
LANGUAGE plpgsql AS $$
DECLARE
    h_ts timestamptz;
BEGIN
    SELECT h.position, h.hash, h.recorded_at INTO o_position, o_hash, h_ts
      FROM ledger_head h WHERE h.id FOR UPDATE;
    o_kind := 'head'; o_stream := NULL; o_key := NULL; o_last := NULL;
    o_text := to_char(greatest(clock_timestamp(), h_ts) AT TIME ZONE 'UTC',
                      'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    RETURN NEXT;
    RETURN QUERY
        SELECT 'stream', ev.stream, NULL::text, max(ev.version), NULL::bigint, NULL::bytea, NULL::text
          FROM events ev WHERE ev.stream = ANY (p_streams) GROUP BY ev.stream;
    RETURN QUERY
        SELECT 'idem', k.actor, k.key, k.first_position, k.last_position, k.request_sha256, NULL::text
          FROM idempotency_keys k
          JOIN unnest(p_idem_actor, p_idem_key) AS u(actor, key)
            ON k.actor = u.actor AND k.key = u.key;
END $$;

-- Grants: the service reads and appends; it never updates or deletes events.
REVOKE ALL ON events FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM ledger_service;
GRANT SELECT, INSERT ON events TO ledger_service;
GRANT SELECT ON events_json TO ledger_service;
GRANT SELECT, UPDATE ON ledger_head TO ledger_service;
GRANT SELECT, INSERT ON idempotency_keys TO ledger_service;
-- Who may do what follows the chain (the trigger above), and what was verified
-- moves only through ledger_verified: the service's role reads both tables.
REVOKE ALL ON principals, verify_watermark FROM PUBLIC;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON principals, verify_watermark FROM ledger_service;
GRANT SELECT ON principals, verify_watermark TO ledger_service;

-- ===================================================================
-- Sections below belong to the modules named; each keeps to its own.
-- ===================================================================

-- == tasks (ledger/tasks/, ledger/api/routes/tasks.py) ==

-- Leases of running tasks, kept in step with the task events by a trigger in
-- the appending transaction: the lease sweeper reads its few due rows through
-- an index instead of scanning the ledger. Only a list of candidates: the
-- decider re-checks each task's folded stream before requeueing it.
CREATE TABLE IF NOT EXISTS task_leases (
    stream           text             PRIMARY KEY,
    version          bigint           NOT NULL,
    lease_expires_at timestamptz,     -- NULL while the task awaits approval
    lease_seconds    double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS task_leases_expiry_idx
    ON task_leases (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

CREATE OR REPLACE FUNCTION task_leases_follow_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    expires timestamptz;
BEGIN
    IF NEW.type IN ('TaskClaimed', 'TaskLeaseRenewed') THEN
        expires := (convert_from(NEW.canonical, 'UTF8')::jsonb -> 'data' ->> 'lease_expires_at')::timestamptz;
        IF expires IS NOT NULL THEN
            INSERT INTO task_leases (stream, version, lease_expires_at, lease_seconds)
            VALUES (NEW.stream, NEW.version, expires,
                    extract(epoch FROM expires - NEW.recorded_at))
            ON CONFLICT (stream) DO UPDATE
               SET version = EXCLUDED.version, lease_expires_at = EXCLUDED.lease_expires_at,
                   lease_seconds = EXCLUDED.lease_seconds;
        END IF;
    ELSIF NEW.type = 'TaskApprovalRequested' THEN
        UPDATE task_leases SET version = NEW.version, lease_expires_at = NULL
         WHERE stream = NEW.stream;
    ELSIF NEW.type = 'TaskApproved' THEN
        -- the same length as the last lease, from the approval (ledger/tasks/decider.py)
        UPDATE task_leases
           SET version = NEW.version,
               lease_expires_at = NEW.recorded_at + lease_seconds * interval '1 second'
         WHERE stream = NEW.stream;
    ELSE  -- completed, failed, requeued, rejected, cancelled: no longer running
        DELETE FROM task_leases WHERE stream = NEW.stream;
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER events_task_leases
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.type IN ('TaskClaimed', 'TaskLeaseRenewed', 'TaskApprovalRequested',
                                    'TaskApproved', 'TaskCompleted', 'TaskFailed', 'TaskRequeued',
                                    'TaskRejected', 'TaskCancelled'))
    EXECUTE FUNCTION task_leases_follow_events();
GRANT SELECT, INSERT, UPDATE, DELETE ON task_leases TO ledger_service;

-- == projections (projections/) ==

-- Where each projection is: it has folded every event up to `position`,
-- whose event hash is `hash` (so a view can say "I am the ledger up to N, hash
-- H", and `ledger projections check` can hold it to that). Moved by the
-- runner in the same transaction as the view rows it wrote: exactly once.
-- `applied` counts the events applied in total (a double application shows).
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name        text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    position    bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    hash        bytea       NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
                CHECK (length(hash) = 32),
    applied     bigint      NOT NULL DEFAULT 0 CHECK (applied >= 0),
    updated_at  timestamptz,
    holder      text,       -- the runner that last took the lead (host:pid)
    rebuilt_at  timestamptz
);
-- a row per view from the start: GET /projections shows one no runner has led yet
INSERT INTO projection_checkpoints (name) VALUES ('tasks'), ('task_counts') ON CONFLICT DO NOTHING;

-- The task view (projections/task_view.py): one row per task, the state the
-- fold in ledger/tasks/decider.py gives, with the columns lists and the queue filter
-- and order by. Tables are made by a function taking the schema, so that
-- `ledger projections rebuild` can make fresh ones beside the live ones (with
-- the same index names) and swap them in.
CREATE OR REPLACE FUNCTION projection_tasks_tables(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %1$I.task_view (
            id               text    PRIMARY KEY,
            agent_name       text    NOT NULL,
            task_type        text    NOT NULL,
            status           text    NOT NULL,
            priority         integer NOT NULL,
            version          bigint  NOT NULL,
            position         bigint  NOT NULL,  -- of the task's last event
            created_position bigint  NOT NULL,  -- of its TaskSubmitted: the list order
            -- ledger.tasks.TaskState as JSON: jsonb would refuse U+0000 and rewrite numbers
            state            bytea   NOT NULL
        )$ddl$, target);
    EXECUTE format('CREATE UNIQUE INDEX IF NOT EXISTS task_view_created_idx ON %I.task_view (created_position)', target);
    EXECUTE format('CREATE INDEX IF NOT EXISTS task_view_status_idx ON %I.task_view (status, created_position)', target);
    EXECUTE format('CREATE INDEX IF NOT EXISTS task_view_agent_idx ON %I.task_view (agent_name, created_position)', target);
    EXECUTE format('CREATE INDEX IF NOT EXISTS task_view_type_idx ON %I.task_view (task_type, created_position)', target);
    -- the work queue: highest priority first, then the oldest
    EXECUTE format($ddl$CREATE INDEX IF NOT EXISTS task_view_queue_idx ON %I.task_view
                        (priority DESC, created_position) WHERE status = 'queued'$ddl$, target);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.task_view TO ledger_service', target);
END $$;

-- Task counts by status, per agent and per task type (projections/task_counts.py),
-- and each task's last status, which a move needs to know what to decrement.
CREATE OR REPLACE FUNCTION projection_task_counts_tables(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %1$I.task_counts (
            dimension text   NOT NULL CHECK (dimension IN ('agent', 'task_type')),
            key       text   NOT NULL,
            status    text   NOT NULL,
            n         bigint NOT NULL,  -- a move subtracts: no CHECK, an upsert checks the proposed row
            PRIMARY KEY (dimension, key, status)
        )$ddl$, target);
    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %1$I.task_counts_status (
            id         text PRIMARY KEY,
            agent_name text NOT NULL,
            task_type  text NOT NULL,
            status     text NOT NULL
        )$ddl$, target);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.task_counts, %I.task_counts_status TO ledger_service', target, target);
END $$;

SELECT projection_tasks_tables('public');
SELECT projection_task_counts_tables('public');

REVOKE ALL ON projection_checkpoints FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON projection_checkpoints TO ledger_service;


-- == proofs (ledger/proofs/) ==

-- The RFC 9162 tree over the event hashes (SPEC §5), kept off the append path
-- by one leader process (ledger/proofs/checkpointer.py). Stored as C2SP-style tiles of
-- height 8: tile (level L, idx N) holds the hashes of the perfect subtrees at
-- tree level 8L numbered 256N .. 256N + width - 1, concatenated; leaf hashes
-- are level 0. Nodes between tile levels are recomputed from at most 128
-- hashes of one tile, so any proof reads O(log n) tiles. A tile only grows.
CREATE TABLE IF NOT EXISTS merkle_tiles (
    level  smallint NOT NULL CHECK (level >= 0),
    idx    bigint   NOT NULL CHECK (idx >= 0),
    width  smallint NOT NULL CHECK (width BETWEEN 1 AND 256),
    hashes bytea    NOT NULL,
    PRIMARY KEY (level, idx),
    CHECK (length(hashes) = 32 * width)
);

-- How far the tree is built: leaves 0 .. size-1 are the events at positions
-- 1 .. size; last_hash is the event hash of the last leaf (the next event's
-- prev_hash must equal it, or the builder stops: history under the tree moved).
CREATE TABLE IF NOT EXISTS merkle_state (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    size       bigint      NOT NULL DEFAULT 0 CHECK (size >= 0),
    root       bytea       NOT NULL DEFAULT sha256(''::bytea) CHECK (length(root) = 32),
    last_hash  bytea       NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
               CHECK (length(last_hash) = 32),
    halted     text,
    updated_at timestamptz
);
INSERT INTO merkle_state (id) VALUES (true) ON CONFLICT DO NOTHING;

-- Every signed checkpoint, kept: the full C2SP signed note and what it says.
CREATE TABLE IF NOT EXISTS checkpoints (
    size      bigint      PRIMARY KEY CHECK (size >= 0),
    root      bytea       NOT NULL CHECK (length(root) = 32),
    key_ids   text[]      NOT NULL,
    vkeys     text[]      NOT NULL DEFAULT '{}',  -- the verifier keys that signed it
    note      text        NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS vkeys text[] NOT NULL DEFAULT '{}';

CREATE OR REPLACE TRIGGER checkpoints_no_update_delete
    BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change('checkpoints are kept forever');
CREATE OR REPLACE TRIGGER checkpoints_no_truncate
    BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change('checkpoints are kept forever');
ALTER TABLE checkpoints ENABLE ALWAYS TRIGGER checkpoints_no_update_delete;
ALTER TABLE checkpoints ENABLE ALWAYS TRIGGER checkpoints_no_truncate;

REVOKE ALL ON merkle_tiles, merkle_state, checkpoints FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON merkle_tiles TO ledger_service;
GRANT SELECT, UPDATE ON merkle_state TO ledger_service;
GRANT SELECT, INSERT ON checkpoints TO ledger_service;


-- == witnesses (ledger/witness/submitter.py; C2SP tlog-witness) ==

-- The cosignatures witnesses returned for a checkpoint: one signature line
-- each (C2SP tlog-cosignature), served appended to the checkpoint's note.
CREATE TABLE IF NOT EXISTS checkpoint_cosignatures (
    size        bigint      NOT NULL REFERENCES checkpoints (size),
    witness     text        NOT NULL,  -- the witness's verifier key
    line        text        NOT NULL,
    signed_time bigint      NOT NULL,  -- the cosignature's timestamp (POSIX seconds)
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (size, witness)
);

-- What the submitter knows of each witness: the size it last cosigned, and
-- whether the last attempt reached it (shown in /health).
CREATE TABLE IF NOT EXISTS witness_status (
    witness     text        PRIMARY KEY,  -- the witness's verifier key
    url         text        NOT NULL,
    size        bigint,                   -- the size it last cosigned, as it told us
    ok          boolean     NOT NULL DEFAULT false,
    error       text,
    checked_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION checkpoints_notify_signed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledger_checkpoint_signed', NEW.size::text);
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER checkpoints_signed_notify
    AFTER INSERT ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION checkpoints_notify_signed();

-- cosignatures are evidence, kept like the checkpoints they are on
CREATE OR REPLACE TRIGGER checkpoint_cosignatures_no_update_delete
    BEFORE UPDATE OR DELETE ON checkpoint_cosignatures
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change('cosignatures are kept forever');
CREATE OR REPLACE TRIGGER checkpoint_cosignatures_no_truncate
    BEFORE TRUNCATE ON checkpoint_cosignatures
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change('cosignatures are kept forever');
ALTER TABLE checkpoint_cosignatures ENABLE ALWAYS TRIGGER checkpoint_cosignatures_no_update_delete;
ALTER TABLE checkpoint_cosignatures ENABLE ALWAYS TRIGGER checkpoint_cosignatures_no_truncate;

-- the per-table refusals every trigger above used before ledger_refuse_change
DROP FUNCTION IF EXISTS events_refuse_change();
DROP FUNCTION IF EXISTS checkpoints_refuse_change();

REVOKE ALL ON checkpoint_cosignatures, witness_status FROM PUBLIC;
GRANT SELECT, INSERT ON checkpoint_cosignatures TO ledger_service;
GRANT SELECT, INSERT, UPDATE ON witness_status TO ledger_service;

-- == privacy (ledger/privacy/, docs/privacy.md) ==

-- Data keys of protected fields: one per (subject, task stream), wrapped by
-- the key-encryption key. Never in an event. Destroying a key (erasure,
-- expiry) sets `wrapped` to NULL, done only by the trigger below in the
-- transaction that appends the SubjectForgotten or RetentionExpired event,
-- so the key is gone exactly when the ledger says so. The row stays as a
-- tombstone: reads tell an erased field from one they may not see.
CREATE TABLE IF NOT EXISTS data_keys (
    key_id             text        PRIMARY KEY CHECK (key_id ~ '^dk-[0-9a-f]{32}$'),
    subject            text        NOT NULL,
    stream             text        NOT NULL,
    task_type          text        NOT NULL,
    kek_id             text        NOT NULL,
    wrapped            bytea       CHECK (wrapped IS NULL OR length(wrapped) = 40),
    created_at         timestamptz NOT NULL DEFAULT now(),
    destroyed_position bigint,
    destroyed_by       text,
    CONSTRAINT data_keys_subject_stream_key UNIQUE (subject, stream),
    CHECK ((wrapped IS NULL) = (destroyed_position IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS data_keys_stream_idx ON data_keys (stream);

-- A destroyed key stays destroyed, a live one changes only by being wrapped
-- again under a new KEK (`ledger privacy rotate-kek`), and no row goes.
CREATE OR REPLACE FUNCTION data_keys_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR OLD.wrapped IS NULL
       OR (NEW.wrapped IS NOT NULL AND NEW.kek_id = OLD.kek_id)
       OR (NEW.wrapped IS NULL AND NEW.kek_id <> OLD.kek_id)
       OR NEW.key_id <> OLD.key_id OR NEW.subject <> OLD.subject OR NEW.stream <> OLD.stream THEN
        RAISE EXCEPTION 'data keys are only ever destroyed: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER data_keys_only_destroyed
    BEFORE UPDATE OR DELETE ON data_keys
    FOR EACH ROW EXECUTE FUNCTION data_keys_guard();
ALTER TABLE data_keys ENABLE ALWAYS TRIGGER data_keys_only_destroyed;

-- The KEK in force (its id only): registered by the first service to seal a
-- value, moved by `ledger privacy rotate-kek` in the transaction that wraps
-- every live key again. A service holding another KEK makes no key.
CREATE TABLE IF NOT EXISTS privacy_kek (
    id     boolean PRIMARY KEY DEFAULT true CHECK (id),
    kek_id text    NOT NULL
);

-- Subjects forgotten (SubjectForgotten): no new key is ever made for them.
CREATE TABLE IF NOT EXISTS forgotten_subjects (
    subject  text   PRIMARY KEY,
    position bigint NOT NULL
);

-- Legal holds (LegalHoldPlaced / LegalHoldReleased on stream hold-<id>).
CREATE TABLE IF NOT EXISTS legal_holds (
    stream            text   PRIMARY KEY,
    scope             text   NOT NULL CHECK (scope IN ('task', 'subject', 'task_type')),
    target            text   NOT NULL,
    placed_position   bigint NOT NULL,
    released_position bigint
);
CREATE INDEX IF NOT EXISTS legal_holds_active_idx
    ON legal_holds (scope, target) WHERE released_position IS NULL;

-- The data key of (subject, stream): the one already made, else the one
-- offered. Serialised per subject with SubjectForgotten's trigger (the same
-- advisory lock), so no key is made for a subject while or after it is
-- forgotten: then o_key_id is NULL and o_forgotten the erasure's position.
-- A KEK other than the one in force makes nothing: o_kek_id names the one
-- in force and o_key_id is NULL (the caller reloads its KEK).
CREATE OR REPLACE FUNCTION privacy_data_key(
    p_subject text, p_stream text, p_task_type text, p_key_id text, p_kek_id text, p_wrapped bytea
) RETURNS TABLE (o_key_id text, o_kek_id text, o_wrapped bytea, o_destroyed bigint,
                 o_forgotten bigint)
LANGUAGE plpgsql AS $$
DECLARE
    in_force text;
BEGIN
    INSERT INTO privacy_kek (id, kek_id) VALUES (true, p_kek_id) ON CONFLICT DO NOTHING;
    SELECT k.kek_id INTO in_force FROM privacy_kek k WHERE k.id FOR SHARE;
    IF in_force <> p_kek_id THEN
        o_kek_id := in_force;
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('ledger-subject:' || p_subject, 0));
    SELECT f.position INTO o_forgotten FROM forgotten_subjects f WHERE f.subject = p_subject;
    IF FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO data_keys (key_id, subject, stream, task_type, kek_id, wrapped)
    VALUES (p_key_id, p_subject, p_stream, p_task_type, p_kek_id, p_wrapped)
    ON CONFLICT ON CONSTRAINT data_keys_subject_stream_key DO NOTHING;
    SELECT k.key_id, k.kek_id, k.wrapped, k.destroyed_position
      INTO o_key_id, o_kek_id, o_wrapped, o_destroyed
      FROM data_keys k WHERE k.subject = p_subject AND k.stream = p_stream;
    RETURN NEXT;
END $$;

-- The privacy events act in the appending transaction: erasure and expiry
-- destroy keys, holds are kept in legal_holds.
CREATE OR REPLACE FUNCTION privacy_follow_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d jsonb := ledger_jsonb(NEW.canonical) -> 'data';
BEGIN
    IF NEW.type = 'SubjectForgotten' AND NEW.stream LIKE 'erasure-%' THEN
        -- a hold placed while the erasure was decided still wins: holds and
        -- erasures are appended under the same head lock, one after the other
        IF EXISTS (SELECT 1 FROM legal_holds h
                    WHERE h.released_position IS NULL AND h.scope = 'subject'
                      AND h.target = d ->> 'subject') THEN
            RAISE EXCEPTION 'subject % is under legal hold', d ->> 'subject'
                USING ERRCODE = 'check_violation';
        END IF;
        PERFORM pg_advisory_xact_lock(hashtextextended('ledger-subject:' || (d ->> 'subject'), 0));
        INSERT INTO forgotten_subjects (subject, position)
        VALUES (d ->> 'subject', NEW.position) ON CONFLICT DO NOTHING;
        UPDATE data_keys SET wrapped = NULL, destroyed_position = NEW.position,
                             destroyed_by = NEW.type
         WHERE subject = d ->> 'subject' AND wrapped IS NOT NULL;
    ELSIF NEW.type = 'RetentionExpired' AND NEW.stream LIKE 'retention-%' THEN
        -- likewise a hold on one of the tasks, their subjects or their type
        IF EXISTS (SELECT 1 FROM legal_holds h
                    WHERE h.released_position IS NULL
                      AND ((h.scope = 'task_type' AND h.target = d ->> 'task_type')
                        OR (h.scope = 'task' AND h.target IN
                              (SELECT jsonb_array_elements_text(d -> 'tasks')))
                        OR (h.scope = 'subject' AND h.target IN
                              (SELECT k.subject FROM data_keys k WHERE k.key_id IN
                                 (SELECT jsonb_array_elements_text(d -> 'keys')))))) THEN
            RAISE EXCEPTION 'a legal hold covers what % would expire', NEW.stream
                USING ERRCODE = 'check_violation';
        END IF;
        UPDATE data_keys SET wrapped = NULL, destroyed_position = NEW.position,
                             destroyed_by = NEW.type
         WHERE key_id IN (SELECT jsonb_array_elements_text(d -> 'keys')) AND wrapped IS NOT NULL;
    ELSIF NEW.type = 'LegalHoldPlaced' AND NEW.stream LIKE 'hold-%' THEN
        INSERT INTO legal_holds (stream, scope, target, placed_position)
        VALUES (NEW.stream, d ->> 'scope', d ->> 'target', NEW.position)
        ON CONFLICT DO NOTHING;
    ELSIF NEW.type = 'LegalHoldReleased' AND NEW.stream LIKE 'hold-%' THEN
        UPDATE legal_holds SET released_position = NEW.position
         WHERE stream = NEW.stream AND released_position IS NULL;
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER events_privacy
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.type IN ('SubjectForgotten', 'RetentionExpired',
                                    'LegalHoldPlaced', 'LegalHoldReleased'))
    EXECUTE FUNCTION privacy_follow_events();

REVOKE ALL ON data_keys, forgotten_subjects, legal_holds, privacy_kek FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON privacy_kek TO ledger_service;
GRANT SELECT, INSERT, UPDATE ON data_keys TO ledger_service;
GRANT SELECT, INSERT ON forgotten_subjects TO ledger_service;
GRANT SELECT, INSERT, UPDATE ON legal_holds TO ledger_service;

-- == the console (ledger/console/) ==

-- Signed-in browser sessions. The cookie holds a random token; only its
-- SHA-256 is kept, with the key it was opened with (a key replaced or
-- revoked ends its sessions), the form token (CSRF) and when it expires.
CREATE TABLE IF NOT EXISTS console_sessions (
    token_sha256 bytea       PRIMARY KEY CHECK (length(token_sha256) = 32),
    principal    text        NOT NULL,
    role         text        NOT NULL,
    key_sha256   bytea       NOT NULL,
    csrf         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_expires_idx ON console_sessions (expires_at);
GRANT SELECT, INSERT, DELETE ON console_sessions TO ledger_service;
