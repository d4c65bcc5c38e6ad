-- The sign-in lookup (storage::links::find_active) reads an identity's active link and its customer
-- from this index alone (an index-only scan: no visit to the identity_links row once the table's
-- pages are all-visible), as on SQLite. `active` is a key column, not a partial-index predicate:
-- diesel binds `active = $3` as a parameter, and after five executions PostgreSQL runs the
-- prepared lookup with a generic plan, which cannot use an index `WHERE active` (EXPLAIN showed
-- the generic plan fall back to an index scan and a heap fetch with such an index). The index
-- keeps serving every other lookup by identity through its first two columns.
DROP INDEX identity_links_identity;
CREATE INDEX identity_links_identity ON identity_links (issuer, subject, active) INCLUDE (customer_id);
