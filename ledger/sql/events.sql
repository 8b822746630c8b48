-- name: append
-- The single append path (schema.sql's ledger_append): one batch, one
-- transaction. Parameters go in binary (psycopg's b placeholders): its text
-- dumper escapes every bytea of the arrays in Python, ~7 us an event; binary
-- is a fifth of that. The casts name the types the function takes, whatever widths psycopg
-- picks for ints or an array of only NULLs.
SELECT * FROM ledger_append(%b::text[], %b::bigint[], %b::text[], %b::text[],
                            %b::bytea[], %b::int[], %b::text[], %b::bytea[])

-- name: append_begin
-- The COPY path of a large batch (ledger/copy_append.py): lock and read, see schema.sql.
SELECT * FROM ledger_append_begin(%b::text[], %b::text[], %b::text[])

-- name: append_finish
-- ... and after its COPY: the batch's idempotency keys, the head moved, NOTIFY.
WITH keys AS (
    INSERT INTO idempotency_keys (actor, key, request_sha256, stream, first_position, last_position)
    SELECT * FROM unnest(%(actors)b::text[], %(keys)b::text[], %(digests)b::bytea[],
                         %(streams)b::text[], %(firsts)b::bigint[], %(lasts)b::bigint[])
), head AS (
    UPDATE ledger_head SET position = %(position)b, hash = %(hash)b, recorded_at = %(at)b WHERE id
)
SELECT pg_notify('ledger_events', %(position)b::text)

-- name: head
-- (not recorded_at: it is -infinity until the first append, which Python cannot load)
SELECT position, hash FROM ledger_head WHERE id

-- name: stream_events
SELECT canonical, hash FROM events WHERE stream = %(stream)s ORDER BY version

-- name: stream_events_upto_position
SELECT canonical, hash FROM events
 WHERE stream = %(stream)s AND position <= %(position)s ORDER BY version

-- name: stream_events_upto_time
SELECT canonical, hash FROM events
 WHERE stream = %(stream)s AND recorded_at <= %(at)s ORDER BY version

-- name: events_after
SELECT canonical, hash FROM events
 WHERE position > %(after)s ORDER BY position LIMIT %(limit)s

-- name: events_range
SELECT canonical, hash FROM events
 WHERE position BETWEEN %(from)s AND %(to)s ORDER BY position

-- name: verify_range
SELECT position, stream, version, type,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       prev_hash, hash, canonical FROM events
 WHERE position BETWEEN %(from)s AND %(to)s ORDER BY position

-- name: export_range
-- The export shows what the table holds: data and meta from the canonical
-- bytes, every other field from its column (store.export_row), so a column
-- changed behind the service's back shows in the bundle as a bad hash.
SELECT canonical, hash, position, stream, version, type,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       prev_hash FROM events
 WHERE position BETWEEN %(from)s AND %(to)s ORDER BY position

-- name: max_position
SELECT coalesce(max(position), 0) FROM events

-- name: event_hash_at
SELECT hash FROM events WHERE position = %(position)s

-- name: watermark
SELECT position, hash FROM verify_watermark WHERE id

-- name: watermark_sweep
SELECT position, hash, swept_to FROM verify_watermark WHERE id

-- name: move_watermark
-- schema.sql's ledger_verified: forward only, onto an event with that hash
SELECT ledger_verified(%(position)s, %(hash)s, %(swept_to)s)

-- name: principal_events
SELECT position, canonical FROM events
 WHERE type IN ('PrincipalKeyCreated', 'PrincipalKeyRevoked') ORDER BY position

-- name: principals_rows
SELECT name, role, key_sha256, created_position, revoked_position FROM principals ORDER BY name

-- name: idempotency_lookup
SELECT request_sha256, stream, first_position, last_position FROM idempotency_keys
 WHERE actor = %(actor)s AND key = %(key)s

-- name: principal_by_key
SELECT name, role FROM principals
 WHERE key_sha256 = %(key_sha256)s AND revoked_position IS NULL

-- name: principals_list
SELECT name, role, created_position, revoked_position FROM principals ORDER BY name

-- name: principal_state
-- The principal as it stands, with its stream's version (keys.PrincipalState).
SELECT p.role, p.revoked_position,
       (SELECT max(e.version) FROM events e WHERE e.stream = 'principal-' || p.name) AS version
  FROM principals p WHERE p.name = %(name)s
