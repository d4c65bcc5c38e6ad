DROP INDEX identity_links_identity;
CREATE UNIQUE INDEX identity_links_active_identity ON identity_links (issuer, subject) WHERE active;
CREATE INDEX identity_links_identity ON identity_links (issuer, subject, active) INCLUDE (customer_id);
