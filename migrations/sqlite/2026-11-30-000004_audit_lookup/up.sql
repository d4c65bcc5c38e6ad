-- SQLite only: the administrators' audit lookups by email and by identity move from two indexes
-- on audit_events, which every decision updated at a random place (one page write per index
-- per event on the sign-in hot path), to audit_lookup, which the audit writer fills in sorted
-- bulk every few seconds. Events newer than audit_lookup_state.indexed_through are found by
-- scanning them (src/storage/audit.rs). PostgreSQL keeps its two indexes: its ids may commit out
-- of order, so a watermark could skip an event there.
DROP INDEX audit_events_email_key;
DROP INDEX audit_events_identity;

CREATE TABLE audit_lookup (
    -- 'e:' || email_key, or 'i:' || issuer || char(10) || subject
    lookup_key TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (lookup_key, event_id)
) WITHOUT ROWID;

CREATE TABLE audit_lookup_state (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    -- Every event with an id up to this one is in audit_lookup.
    indexed_through INTEGER NOT NULL
);

INSERT INTO audit_lookup (lookup_key, event_id)
    SELECT 'e:' || email_key, id FROM audit_events WHERE email_key IS NOT NULL
    UNION ALL
    SELECT 'i:' || issuer || char(10) || subject, id FROM audit_events
        WHERE issuer IS NOT NULL AND subject IS NOT NULL;

INSERT INTO audit_lookup_state (singleton, indexed_through)
    VALUES (1, coalesce((SELECT max(id) FROM audit_events), 0));
