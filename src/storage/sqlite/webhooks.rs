//! SQLite's claim of due webhook deliveries (see `crate::storage::webhooks`): one statement, and
//! SQLite runs one writer at a time, so two instances on one file never claim the same row.

/// Binds: the claim's lapse, now, the most rows, the endpoints whose deliveries may be claimed
/// (a JSON array of URLs, read with SQLite's `json_each`).
pub const CLAIM_DUE: &str = "\
UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = ?1, updated_at = ?2 \
WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE status = 'pending' AND url IN (SELECT value FROM json_each(?4)) \
               AND next_attempt_at <= ?2 \
             ORDER BY next_attempt_at, id LIMIT ?3) \
RETURNING id, event_position, url, attempts";
