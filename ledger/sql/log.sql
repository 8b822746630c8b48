-- name: tile
SELECT width, hashes FROM merkle_tiles WHERE level = %(level)s AND idx = %(idx)s

-- name: entry_hashes
SELECT hash FROM events WHERE position > %(after)s AND position <= %(upto)s ORDER BY position

-- name: cosignatures
SELECT line FROM checkpoint_cosignatures WHERE size = %(size)s ORDER BY witness

-- name: latest_cosigned
-- the latest checkpoint with at least %(quorum)s cosignatures
SELECT c.size, c.root, c.key_ids, c.note, c.signed_at, c.vkeys FROM checkpoints c
 WHERE (SELECT count(*) FROM checkpoint_cosignatures w WHERE w.size = c.size) >= %(quorum)s
 ORDER BY c.size DESC LIMIT 1

-- name: signing_keys
-- every key that signed a checkpoint, the sizes it signed from and to
SELECT k.vkey, min(c.size) AS from_size, max(c.size) AS to_size
  FROM checkpoints c CROSS JOIN LATERAL unnest(c.vkeys) AS k(vkey)
 GROUP BY k.vkey ORDER BY min(c.size), k.vkey

-- name: witness_statuses
SELECT witness, url, size, ok, error, checked_at FROM witness_status ORDER BY witness

-- name: witness_status
SELECT size FROM witness_status WHERE witness = %(witness)s

-- name: has_cosignature
SELECT 1 FROM checkpoint_cosignatures WHERE size = %(size)s AND witness = %(witness)s

-- name: put_cosignature
INSERT INTO checkpoint_cosignatures (size, witness, line, signed_time)
VALUES (%(size)s, %(witness)s, %(line)s, %(signed_time)s)
ON CONFLICT (size, witness) DO NOTHING

-- name: put_witness_status
INSERT INTO witness_status (witness, url, size, ok, error, checked_at)
VALUES (%(witness)s, %(url)s, %(size)s, %(ok)s, %(error)s, clock_timestamp())
ON CONFLICT (witness) DO UPDATE
   SET url = EXCLUDED.url, size = coalesce(EXCLUDED.size, witness_status.size),
       ok = EXCLUDED.ok, error = EXCLUDED.error, checked_at = EXCLUDED.checked_at

-- name: submitter_lock
SELECT pg_try_advisory_lock(%(key)s)

-- name: event_at
SELECT canonical, hash FROM events WHERE position = %(position)s
