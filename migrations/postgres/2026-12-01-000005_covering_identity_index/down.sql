DROP INDEX identity_links_identity;
CREATE INDEX identity_links_identity ON identity_links (issuer, subject);
