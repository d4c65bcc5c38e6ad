-- One index by identity instead of two. Every link, active or not, has one entry, keyed by
-- (issuer, subject, 0) while it is active and (issuer, subject, its id) once deactivated: the
-- key is unique, so an identity has at most one active link (what the partial unique index
-- identity_links_active_identity said), and its first two columns serve every lookup by
-- identity (what identity_links_identity did). `active` and `customer_id` are included, so the
-- sign-in lookup stays an index-only scan, with the generic plan too (the reason migration
-- 000005 made `active` a column of the index rather than a predicate). Each new link writes one
-- index entry fewer (BENCHMARKS.md, "Backfill").
DROP INDEX identity_links_active_identity;
DROP INDEX identity_links_identity;
CREATE UNIQUE INDEX identity_links_identity ON identity_links
    (issuer, subject, (CASE WHEN active THEN 0 ELSE id END)) INCLUDE (active, customer_id);
