-- SQLite only: the sign-in lookup (storage::links::find_active) reads an identity's active flag
-- and customer from this index alone, without a visit to the identity_links row. It was one of
-- the three B-tree descents of every sign-in (BENCHMARKS.md, 2026-12-01).
DROP INDEX identity_links_identity;
CREATE INDEX identity_links_identity ON identity_links (issuer, subject, active, customer_id);
