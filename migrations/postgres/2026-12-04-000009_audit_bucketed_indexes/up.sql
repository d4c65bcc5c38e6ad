-- The audit lookups' hashed indexes of migration 000007, each led by the event's bucket of
-- 65,536 ids (`id >> 16`). Keyed by the hash alone, every append wrote at a random place of an
-- index as large as the whole log: once the two outgrew the database's buffer cache (about
-- 3,000,000 events with the default 128 MB), each event cost the append about 7 µs of database
-- CPU and the sign-ins' 99th percentile rose from about 6 ms to 12-30 ms (BENCHMARKS.md,
-- 2026-12-04). Led by the bucket, appends write only into the newest bucket's part of each
-- index (about 2 MB), whatever the size of the log; a lookup probes each bucket once
-- (storage::postgres::audit::IN_EVERY_BUCKET: 153 probes at 10,000,000 events, in one index
-- scan).
DROP INDEX audit_events_email_hash;
DROP INDEX audit_events_subject_hash;
CREATE INDEX audit_events_email_bucket ON audit_events ((id >> 16), hashtextextended(email_key, 0));
CREATE INDEX audit_events_subject_bucket ON audit_events ((id >> 16), hashtextextended(subject, 0));
