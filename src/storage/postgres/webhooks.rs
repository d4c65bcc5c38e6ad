//! PostgreSQL's claim of due webhook deliveries (see `crate::storage::webhooks`): rows another
//! instance is claiming are skipped, not waited for, so each delivery is attempted by one
//! instance at a time.

/// Binds: `$1` the claim's lapse, `$2` now, `$3` the most rows, `$4` the endpoints whose
/// deliveries may be claimed (an array of URLs).
pub const CLAIM_DUE: &str = "\
UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1, updated_at = $2 \
WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE status = 'pending' AND url = ANY ($4) AND next_attempt_at <= $2 \
             ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
RETURNING id, event_position, url, attempts";
