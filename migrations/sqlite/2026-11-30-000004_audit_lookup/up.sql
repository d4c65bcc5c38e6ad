-- SQLite only: the administrators' audit lookups by email and by identity move from two indexes
-- on audit_events, which every decision updated at a random place (a page write per index per
-- event on the sign-in hot path), to audit_lookup, in a database file of its own beside this one
-- (see src/storage/mod.rs, attach_audit_lookup), which a background thread fills in sorted bulk
-- every few seconds without holding this database's write lock. Events after its watermark are
-- found by scanning them (src/storage/audit.rs). PostgreSQL keeps its two indexes: its ids may
-- commit out of order, so a watermark could skip an event there.
DROP INDEX audit_events_email_key;
DROP INDEX audit_events_identity;
