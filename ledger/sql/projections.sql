-- Named queries of the projections (projections/, the task view routes).
-- View tables are named without a schema: `ledger projections rebuild` runs
-- the same statements with search_path set to the fresh tables' schema.

-- name: ensure_checkpoint
INSERT INTO projection_checkpoints (name) VALUES (%(name)s) ON CONFLICT DO NOTHING

-- name: try_lock
SELECT pg_try_advisory_lock(%(class)s, %(key)s)

-- name: take_lead
UPDATE projection_checkpoints SET holder = %(holder)s WHERE name = %(name)s

-- name: checkpoint_for_update
-- Taken first in every batch: a rebuild's swap takes it too, so the two
-- never interleave (and never deadlock on the view tables).
SELECT position, hash, applied FROM projection_checkpoints WHERE name = %(name)s FOR UPDATE

-- name: checkpoint
SELECT position, hash, applied FROM projection_checkpoints WHERE name = %(name)s

-- name: head
SELECT position, hash FROM ledger_head WHERE id

-- name: batch
-- Events after the checkpoint, up to a head read just before: every event at
-- or below a committed head is visible (see projections/runner.py).
SELECT position, canonical, hash FROM events
 WHERE position > %(after)s AND position <= %(upto)s AND type = ANY(%(types)b::text[])
 ORDER BY position
 LIMIT %(limit)s

-- name: move_checkpoint
UPDATE projection_checkpoints
   SET position = %(position)s, hash = %(hash)s, applied = applied + %(applied)s,
       updated_at = clock_timestamp()
 WHERE name = %(name)s AND position = %(old)s

-- name: notify
SELECT pg_notify('ledger_projections', %(payload)s)

-- name: swap_checkpoint
UPDATE projection_checkpoints
   SET position = %(position)s, hash = %(hash)s, applied = %(applied)s,
       updated_at = clock_timestamp(), rebuilt_at = clock_timestamp()
 WHERE name = %(name)s

-- name: status
-- GET /projections and `ledger projections list`: lag in events, and in
-- seconds as the age of the oldest event not yet folded.
SELECT c.name, c.position, c.hash, c.applied, c.updated_at, c.holder, c.rebuilt_at,
       h.position AS head,
       (SELECT extract(epoch FROM clock_timestamp() - e.recorded_at)::float8
          FROM events e WHERE e.position = c.position + 1) AS lag_seconds
  FROM projection_checkpoints c, ledger_head h
 WHERE h.id
 ORDER BY c.name

-- name: held_locks
-- advisory locks are per database: other ledgers on the server have their own
SELECT objid::bigint FROM pg_locks
 WHERE locktype = 'advisory' AND granted AND classid = %(class)s AND objsubid = 2
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())

-- name: event_hash
SELECT hash FROM events WHERE position = %(position)s

-- name: all_events
SELECT position, canonical, hash FROM events
 WHERE position <= %(upto)s AND type = ANY(%(types)b::text[])
 ORDER BY position

-- == the task view ==

-- name: task_states
SELECT id, state FROM task_view WHERE id = ANY(%(ids)b::text[])

-- name: task_upsert
INSERT INTO task_view AS t
       (id, agent_name, task_type, status, priority, version, position, created_position, state)
SELECT * FROM unnest(%(id)b::text[], %(agent_name)b::text[], %(task_type)b::text[],
                     %(status)b::text[], %(priority)b::int[], %(version)b::bigint[],
                     %(position)b::bigint[], %(created_position)b::bigint[], %(state)b::bytea[])
ON CONFLICT (id) DO UPDATE
   SET status = EXCLUDED.status, priority = EXCLUDED.priority, version = EXCLUDED.version,
       position = EXCLUDED.position, state = EXCLUDED.state

-- name: task_get
SELECT state FROM task_view WHERE id = %(id)s

-- name: task_list
-- Keyset pagination on the submission position, which never changes: a task
-- keeps its place while others are written, so pages neither repeat nor skip.
SELECT state, created_position FROM task_view
 WHERE created_position > %(after)s
   AND (%(status)s::text IS NULL OR status = %(status)s)
   AND (%(agent_name)s::text IS NULL OR agent_name = %(agent_name)s)
   AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s)
 ORDER BY created_position
 LIMIT %(limit)s

-- name: task_all
SELECT id, state, agent_name, task_type, status, priority, version, position, created_position
  FROM task_view

-- name: queue_candidates
-- The oldest queued tasks of the types asked, highest priority first; rows
-- another claim (or the runner) holds are skipped, not waited for. A row the
-- ledger has moved past (its stream has a later version than the view shows:
-- claimed or cancelled since) is no candidate: one index probe each, instead
-- of a refused append per stale row while the runner catches up.
SELECT v.id, v.version FROM task_view v
 WHERE v.status = 'queued'
   AND (%(types)s::text[] IS NULL OR v.task_type = ANY(%(types)s))
   AND v.id <> ALL(%(tried)s::text[])
   AND NOT EXISTS (SELECT 1 FROM events e
                    WHERE e.stream = 'task-' || v.id AND e.version > v.version)
 ORDER BY v.priority DESC, v.created_position
 LIMIT %(limit)s
   FOR UPDATE OF v SKIP LOCKED

-- name: queue_any_left
-- Whether queue_candidates would find a task but for the rows other claims
-- hold right now: if so the queue is not empty, only busy.
SELECT EXISTS (
    SELECT 1 FROM task_view v
     WHERE v.status = 'queued'
       AND (%(types)s::text[] IS NULL OR v.task_type = ANY(%(types)s))
       AND v.id <> ALL(%(tried)s::text[])
       AND NOT EXISTS (SELECT 1 FROM events e
                        WHERE e.stream = 'task-' || v.id AND e.version > v.version))

-- == task counts ==

-- name: counts_status
SELECT id, agent_name, task_type, status FROM task_counts_status WHERE id = ANY(%(ids)b::text[])

-- name: counts_status_upsert
INSERT INTO task_counts_status AS s (id, agent_name, task_type, status)
SELECT * FROM unnest(%(id)b::text[], %(agent_name)b::text[], %(task_type)b::text[],
                     %(status)b::text[])
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status

-- name: counts_add
INSERT INTO task_counts AS c (dimension, key, status, n)
SELECT * FROM unnest(%(dimension)b::text[], %(key)b::text[], %(status)b::text[], %(n)b::bigint[])
ON CONFLICT (dimension, key, status) DO UPDATE SET n = c.n + EXCLUDED.n

-- name: counts_all
SELECT dimension, key, status, n FROM task_counts WHERE n <> 0 ORDER BY dimension, key, status

-- name: counts_status_all
SELECT id, agent_name, task_type, status FROM task_counts_status

-- name: ledger_break
-- The first place, up to the view's checkpoint, where the events are not a
-- chain: a missing position, or an event whose prev_hash is not the hash of
-- the one before it (a swap, an edit, an insertion). projections/integrity.py
SELECT position, prev_position, prev_hash = before AS linked FROM (
    SELECT position, prev_hash,
           lag(position, 1, 0::bigint) OVER w AS prev_position,
           lag(hash, 1, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) OVER w AS before
      FROM events WHERE position <= %(upto)s
    WINDOW w AS (ORDER BY position)
) e
 WHERE position <> prev_position + 1 OR prev_hash <> before
 ORDER BY position LIMIT 1

-- name: last_position_upto
SELECT coalesce(max(position), 0) FROM events WHERE position <= %(upto)s
