-- The unique index on active identities is partial (WHERE active), and a query that binds
-- active = ? as a parameter cannot use it: SQLite (and PostgreSQL's generic plans) then scan the
-- table. This plain index serves every lookup of an identity.
CREATE INDEX identity_links_identity ON identity_links (issuer, subject);
