-- name: data_key
-- The data key of (subject, stream): made now, or the one made before (schema.sql).
SELECT o_key_id, o_kek_id, o_wrapped, o_destroyed, o_forgotten
  FROM privacy_data_key(%(subject)s, %(stream)s, %(task_type)s, %(key_id)s, %(kek_id)s, %(wrapped)s)

-- name: keys_by_id
SELECT key_id, kek_id, wrapped, destroyed_position, destroyed_by
  FROM data_keys WHERE key_id = ANY(%(ids)s)

-- name: live_keys_of_subject
SELECT key_id, stream FROM data_keys
 WHERE subject = %(subject)s AND wrapped IS NOT NULL ORDER BY key_id

-- name: forgotten
SELECT position FROM forgotten_subjects WHERE subject = %(subject)s

-- name: active_holds
SELECT stream, scope, target, placed_position FROM legal_holds
 WHERE released_position IS NULL ORDER BY placed_position

-- name: holds_on
SELECT stream FROM legal_holds
 WHERE released_position IS NULL AND scope = %(scope)s AND target = ANY(%(targets)s)

-- name: retention_candidates
-- Streams of the given task types with live data keys, and their last event.
SELECT k.stream, k.task_type, array_agg(k.key_id ORDER BY k.key_id),
       array_agg(k.subject ORDER BY k.key_id), last.type,
       to_char(last.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       last.canonical
  FROM data_keys k
  CROSS JOIN LATERAL (SELECT e.type, e.recorded_at, e.canonical FROM events e
                       WHERE e.stream = k.stream ORDER BY e.version DESC LIMIT 1) last
 WHERE k.wrapped IS NOT NULL AND k.task_type = ANY(%(types)s)
   AND last.recorded_at <= %(cutoff)s
 GROUP BY k.stream, k.task_type, last.type, last.recorded_at, last.canonical
 ORDER BY last.recorded_at, k.stream

-- name: key_statuses
SELECT key_id, wrapped IS NULL, destroyed_position, destroyed_by
  FROM data_keys WHERE key_id = ANY(%(ids)s)

-- name: kek_in_force_for_update
SELECT kek_id FROM privacy_kek WHERE id FOR UPDATE

-- name: register_kek
INSERT INTO privacy_kek (id, kek_id) VALUES (true, %(kek_id)s)
    ON CONFLICT (id) DO UPDATE SET kek_id = EXCLUDED.kek_id

-- name: keys_under_kek
SELECT key_id, wrapped FROM data_keys
 WHERE kek_id = %(kek_id)s AND wrapped IS NOT NULL ORDER BY key_id FOR UPDATE

-- name: rewrap
UPDATE data_keys SET wrapped = %(wrapped)s, kek_id = %(kek_id)s WHERE key_id = %(key_id)s

-- name: keys_under_other_keks
SELECT count(*) FROM data_keys
 WHERE kek_id <> %(kek_id)s AND wrapped IS NOT NULL
