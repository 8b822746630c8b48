-- Named queries of the compliance console (ledger/console/).

-- == sessions ==

-- name: session_open
WITH gone AS (DELETE FROM console_sessions WHERE expires_at <= now())
INSERT INTO console_sessions (token_sha256, principal, role, key_sha256, csrf, expires_at)
SELECT %(token)s, p.name, p.role, p.key_sha256, %(csrf)s,
       now() + make_interval(secs => %(seconds)s)
  FROM principals p
 WHERE p.key_sha256 = %(key_sha256)s AND p.revoked_position IS NULL
RETURNING principal, role, csrf, expires_at

-- name: session_get
-- A session lives while it has not expired and the key it was opened with
-- is still the principal's live key.
SELECT s.principal, s.role, s.csrf, s.expires_at FROM console_sessions s
  JOIN principals p ON p.name = s.principal AND p.key_sha256 = s.key_sha256
                   AND p.role = s.role AND p.revoked_position IS NULL
 WHERE s.token_sha256 = %(token)s AND s.expires_at > now()

-- name: session_close
DELETE FROM console_sessions WHERE token_sha256 = %(token)s

-- == chain status ==

-- name: chain_status
SELECT h.position AS head, h.hash AS head_hash, w.position AS verified,
       w.verified_at, c.size AS checkpoint_size, c.signed_at AS checkpoint_at
  FROM ledger_head h
 CROSS JOIN verify_watermark w
  LEFT JOIN LATERAL (SELECT size, signed_at FROM checkpoints
                      ORDER BY size DESC LIMIT 1) c ON true
 WHERE h.id AND w.id

-- name: recorded_at
SELECT recorded_at FROM events WHERE position = %(position)s

-- == task search ==

-- name: task_search
-- Newest first, keyset on the submission position (it never changes). The
-- time range arrives as a range of positions (recorded_at never decreases
-- with position); the text is looked for, case-insensitively, in the task's
-- folded state: its payload, result, error, reasons and the officer's comment.
SELECT state, created_position FROM task_view
 WHERE created_position < %(before)s
   AND created_position >= %(lo)s AND created_position <= %(hi)s
   AND (%(status)s::text IS NULL OR status = %(status)s)
   AND (%(agent_name)s::text IS NULL OR agent_name = %(agent_name)s)
   AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s)
   AND (%(text)s::text IS NULL
        OR strpos(lower(convert_from(state, 'UTF8')), %(text)s) > 0)
 ORDER BY created_position DESC
 LIMIT %(limit)s

-- name: status_counts
-- Tasks by status from the counts view, for all agents (dimension 'agent'
-- counts every task once), or for one agent or one task type.
SELECT status, sum(n)::bigint FROM task_counts
 WHERE n <> 0
   AND ((%(agent_name)s::text IS NULL AND %(task_type)s::text IS NULL AND dimension = 'agent')
        OR (%(agent_name)s::text IS NOT NULL AND dimension = 'agent' AND key = %(agent_name)s)
        OR (%(agent_name)s::text IS NULL AND %(task_type)s::text IS NOT NULL
            AND dimension = 'task_type' AND key = %(task_type)s))
 GROUP BY status

-- name: tasks_in_range
-- The regulator's report for a time range: tasks submitted in a range of positions.
SELECT id FROM task_view
 WHERE created_position >= %(lo)s AND created_position <= %(hi)s
 ORDER BY created_position
 LIMIT %(limit)s
