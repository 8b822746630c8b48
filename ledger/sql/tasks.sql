-- name: lapsed_leases
-- Running tasks whose lease lapsed by %(now)s: candidates only, the decider
-- confirms each on the folded stream before anything is written.
SELECT stream, version FROM task_leases
 WHERE lease_expires_at <= %(now)s
 ORDER BY lease_expires_at
 LIMIT %(limit)s
