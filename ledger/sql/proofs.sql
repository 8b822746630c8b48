-- name: state
SELECT size, root, last_hash, halted FROM merkle_state WHERE id

-- name: save_state
UPDATE merkle_state
   SET size = %(size)s, root = %(root)s, last_hash = %(last_hash)s, updated_at = now()
 WHERE id AND size = %(old_size)s

-- name: halt
UPDATE merkle_state SET halted = %(reason)s, updated_at = now() WHERE id

-- name: leaves_after
SELECT position, prev_hash, hash FROM events
 WHERE position > %(after)s ORDER BY position LIMIT %(limit)s

-- name: tiles
SELECT t.level, t.idx, t.width, t.hashes
  FROM merkle_tiles t
  JOIN unnest(%(levels)s::smallint[], %(idxs)s::bigint[]) AS want(level, idx)
    ON t.level = want.level AND t.idx = want.idx

-- name: put_tile
INSERT INTO merkle_tiles (level, idx, width, hashes)
VALUES (%(level)s, %(idx)s, %(width)s, %(hashes)s)
ON CONFLICT (level, idx) DO UPDATE SET width = EXCLUDED.width, hashes = EXCLUDED.hashes
 WHERE merkle_tiles.width < EXCLUDED.width
   AND substr(EXCLUDED.hashes, 1, length(merkle_tiles.hashes)) = merkle_tiles.hashes

-- name: leader_lock
SELECT pg_try_advisory_lock(%(key)s)

-- name: latest_checkpoint
SELECT size, root, key_ids, note, signed_at, vkeys FROM checkpoints ORDER BY size DESC LIMIT 1

-- name: checkpoints_after
SELECT size, root, key_ids, note, signed_at, vkeys FROM checkpoints
 WHERE size > %(after)s ORDER BY size LIMIT %(limit)s

-- name: insert_checkpoint
INSERT INTO checkpoints (size, root, key_ids, vkeys, note)
VALUES (%(size)s, %(root)s, %(key_ids)s, %(vkeys)s, %(note)s)
ON CONFLICT (size) DO NOTHING

-- name: key_announcements
SELECT canonical, hash FROM events WHERE type = 'SigningKeyAnnounced' ORDER BY position

-- name: want_checkpoint
SELECT pg_notify('ledger_checkpoint_wanted', '')
