-- On SQLite this migration moves the administrators' audit lookups by email and by identity out of
-- audit_events into a lookup file of its own, filled in sorted bulk behind a watermark. PostgreSQL
-- keeps its two indexes (migration 000003): its ids may commit out of order, so a watermark could
-- skip an event. The migration exists here so that both trees hold the same migrations under the
-- same names; all it changes is the description of the two indexes it keeps (diesel refuses an
-- empty migration, and PostgreSQL a file of comments alone).
COMMENT ON INDEX audit_events_email_key IS
    'The administrators'' audit lookups by email (SQLite keeps them in its audit lookup file).';
COMMENT ON INDEX audit_events_identity IS
    'The administrators'' audit lookups by identity (SQLite keeps them in its audit lookup file).';
