-- One index by identity instead of two. Every link, active or not, has one entry, keyed by
-- (issuer, subject, 0) while it is active and (issuer, subject, its id) once deactivated: the
-- key is unique, so an identity has at most one active link (what the partial unique index
-- identity_links_active_identity said), and its first two columns serve every lookup by
-- identity (what identity_links_identity did). The index is not covering: a lookup reads the
-- link's row for its customer (one more B-tree descent, on a sign-in the sign-in cache did not
-- answer); each new link writes one index entry fewer (BENCHMARKS.md, "Backfill").
DROP INDEX identity_links_active_identity;
DROP INDEX identity_links_identity;
CREATE UNIQUE INDEX identity_links_identity ON identity_links
    (issuer, subject, (CASE WHEN active THEN 0 ELSE id END));
